//! The per-Service ipset tracker against the whole-view function: over
//! random sequences of Service changes, applying each partial update's
//! adds and dels to a model of the kernel's sets gives exactly the
//! members `desired_ipsets` computes, members shared by two Services
//! survive while either holds them, and the "rules input" flag fires
//! whenever a set's emptiness or the no-node-access list changes.

#![allow(clippy::unwrap_used)] // test code

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use proptest::prelude::*;
use rvs_model::Protocol;
use rvs_proxy::cluster::{
    EndpointInfo, NodeInfo, ObjectName, ServiceInfo, ServicePort, SliceInfo, SlicePort,
};
use rvs_proxy::ipsets::{IpFamily, IpsetEntries, IpsetTracker, desired_ipsets};
use rvs_proxy::source::manifests::{Manifests, parse_into};
use rvs_proxy::{ClusterState, ProxyConfig};

fn name(i: u8) -> ObjectName {
    ObjectName {
        namespace: "default".into(),
        name: format!("s{i}"),
    }
}

/// One Service's shape: (exists, variant bits).
type Spec = (bool, u8);

/// Services whose members overlap on purpose: external IPs and load
/// balancer IPs are shared between neighbours, node ports collide.
fn cluster(spec: &[Spec]) -> ClusterState {
    let mut c = ClusterState {
        node: Some(NodeInfo {
            name: "node-a".into(),
            addresses: vec![
                "192.168.1.10".parse().unwrap(),
                "fd00:1::10".parse().unwrap(),
            ],
            ..NodeInfo::default()
        }),
        ..ClusterState::default()
    };
    for (i, (exists, bits)) in spec.iter().enumerate() {
        let i = i as u8;
        if !exists {
            continue;
        }
        let shared = i / 2;
        let mut cluster_ips = vec![IpAddr::from([10, 96, 0, i + 1])];
        if bits & 1 != 0 {
            cluster_ips.push(format!("fd00:96::{}", i + 1).parse().unwrap());
        }
        let lb: IpAddr = if bits & 2 != 0 {
            IpAddr::from([192, 0, 2, shared])
        } else {
            format!("2001:db8::{shared}").parse().unwrap()
        };
        c.services.insert(
            name(i),
            ServiceInfo {
                name: name(i),
                cluster_ips,
                external_ips: if bits & 4 != 0 {
                    vec![IpAddr::from([198, 51, 100, shared])]
                } else {
                    vec![]
                },
                load_balancer_ips: if bits & 8 != 0 { vec![lb] } else { vec![] },
                ports: vec![ServicePort {
                    name: "http".into(),
                    protocol: if bits & 16 != 0 {
                        Protocol::Udp
                    } else {
                        Protocol::Tcp
                    },
                    port: 80,
                    node_port: (bits & 32 != 0).then_some(30000 + u16::from(shared)),
                }],
                affinity_timeout: None,
                external_local: bits & 64 != 0,
                internal_local: false,
                scheduler: None,
                rebalance: None,
                topology_aware: false,
                source_ranges: if bits & 128 != 0 {
                    vec![
                        "203.0.113.0/24".parse().unwrap(),
                        "2001:db8:1::/48".parse().unwrap(),
                    ]
                } else {
                    vec![]
                },
                health_check_node_port: (bits & 64 != 0).then_some(32000 + u16::from(i)),
            },
        );
        c.slices.insert(
            ObjectName {
                namespace: "default".into(),
                name: format!("s{i}-1"),
            },
            SliceInfo {
                service: name(i),
                ports: vec![SlicePort {
                    name: "http".into(),
                    protocol: if bits & 16 != 0 {
                        Protocol::Udp
                    } else {
                        Protocol::Tcp
                    },
                    port: 8080,
                }],
                endpoints: (0..2u8)
                    .map(|e| EndpointInfo {
                        addr: IpAddr::from([10, 244, i, e + 1]),
                        ready: true,
                        serving: true,
                        terminating: false,
                        node_name: Some(if e == 0 { "node-a" } else { "node-b" }.into()),
                        zone_hints: None,
                        node_hints: None,
                    })
                    .collect(),
            },
        );
    }
    c
}

type Model = BTreeMap<&'static str, BTreeSet<String>>;

fn apply(model: &mut Model, delta: &rvs_proxy::ipsets::IpsetDelta) {
    for (set, m) in &delta.del {
        let members = model.get_mut(set).unwrap();
        assert!(members.remove(m), "del of a missing member {set} {m}");
        if members.is_empty() {
            model.remove(set);
        }
    }
    for (set, m) in &delta.add {
        assert!(
            model.entry(set).or_default().insert(m.clone()),
            "add of a present member {set} {m}"
        );
    }
}

fn shape(e: &IpsetEntries) -> (BTreeSet<&'static str>, BTreeSet<String>) {
    (
        e.sets.keys().copied().collect(),
        e.lb_no_node_access.clone(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]
    #[test]
    fn partial_updates_track_the_whole_view(
        start in proptest::collection::vec((any::<bool>(), any::<u8>()), 6),
        steps in proptest::collection::vec((0usize..6, any::<bool>(), any::<u8>()), 1..16),
        v6 in any::<bool>(),
    ) {
        let family = if v6 { IpFamily::V6 } else { IpFamily::V4 };
        let config = ProxyConfig { node_name: "node-a".into(), ..ProxyConfig::default() };
        let mut spec = start;
        let c = cluster(&spec);
        let mut tracker = IpsetTracker::build(&c, &config, family);
        let mut model: Model = tracker.entries().sets;
        prop_assert_eq!(tracker.entries(), desired_ipsets(&c, &config, family));
        for (i, exists, bits) in steps {
            let before = shape(&tracker.entries());
            spec[i] = (exists, bits);
            let c = cluster(&spec);
            let changed = BTreeSet::from([name(i as u8)]);
            let delta = tracker.update_services(&c, &config, Some(&changed));
            apply(&mut model, &delta);
            let want = desired_ipsets(&c, &config, family);
            prop_assert_eq!(&model, &want.sets);
            prop_assert_eq!(&tracker.entries(), &want);
            prop_assert_eq!(delta.rules_input_changed, shape(&want) != before);
        }
    }
}

/// `loadBalancerSourceRanges` and `healthCheckNodePort` come through the
/// manifests source into the cluster view and the sets.
#[test]
fn source_ranges_and_health_check_ports_from_manifests() {
    let yaml = r#"
kind: Node
metadata: {name: node-a}
status:
  addresses: [{type: InternalIP, address: 192.168.1.10}]
---
kind: Service
metadata: {name: lb, namespace: default}
spec:
  type: LoadBalancer
  clusterIP: 10.96.0.20
  externalTrafficPolicy: Local
  healthCheckNodePort: 32100
  loadBalancerSourceRanges: [' 203.0.113.0/24', 192.168.1.0/24]
  ports: [{port: 443, nodePort: 30443}]
status:
  loadBalancer:
    ingress: [{ip: 192.0.2.50}]
---
kind: Service
metadata: {name: np, namespace: default}
spec:
  type: NodePort
  clusterIP: 10.96.0.21
  externalTrafficPolicy: Local
  healthCheckNodePort: 32101
  loadBalancerSourceRanges: [203.0.113.0/24]
  ports: [{port: 80, nodePort: 30080}]
"#;
    let mut m = Manifests::default();
    let mut errors = Vec::new();
    parse_into(yaml, "test.yaml", &mut m, &mut errors);
    assert!(errors.is_empty(), "{errors:?}");
    let (c, errors) = ClusterState::build(&m.services, &m.slices, &m.nodes, "node-a", None);
    assert!(errors.is_empty(), "{errors:?}");
    let lb = &c.services[&ObjectName {
        namespace: "default".into(),
        name: "lb".into(),
    }];
    assert_eq!(
        lb.source_ranges,
        vec![
            "203.0.113.0/24".parse::<ipnet::IpNet>().unwrap(),
            "192.168.1.0/24".parse().unwrap()
        ]
    );
    assert_eq!(lb.health_check_node_port, Some(32100));
    // Not a LoadBalancer: neither field applies (kube-proxy ignores them).
    let np = &c.services[&ObjectName {
        namespace: "default".into(),
        name: "np".into(),
    }];
    assert!(np.source_ranges.is_empty());
    assert_eq!(np.health_check_node_port, None);

    let config = ProxyConfig {
        node_name: "node-a".into(),
        ..ProxyConfig::default()
    };
    let sets = desired_ipsets(&c, &config, IpFamily::V4);
    assert_eq!(
        sets.get("KUBE-LOAD-BALANCER-SOURCE-CIDR"),
        [
            "192.0.2.50,tcp:443,192.168.1.0/24",
            "192.0.2.50,tcp:443,203.0.113.0/24"
        ]
    );
    // The node is inside a range: it may reach the load balancer.
    assert_eq!(
        sets.get("KUBE-LOAD-BALANCER-SOURCE-IP"),
        ["192.0.2.50,tcp:443,192.0.2.50"]
    );
    assert_eq!(sets.get("KUBE-HEALTH-CHECK-NODE-PORT"), ["32100"]);

    let bad = r#"
kind: Service
metadata: {name: bad, namespace: default}
spec:
  type: LoadBalancer
  clusterIP: 10.96.0.22
  loadBalancerSourceRanges: [10.0.0.0/33]
  ports: [{port: 80}]
"#;
    let mut m = Manifests::default();
    let mut parse_errors = Vec::new();
    parse_into(bad, "bad.yaml", &mut m, &mut parse_errors);
    assert!(parse_errors.is_empty(), "{parse_errors:?}");
    // kube-proxy (`MapCIDRsByIPFamily`) skips a range that does not
    // parse and keeps the Service: so does rvs, with a warning.
    let (c, errors) = ClusterState::build(&m.services, &m.slices, &m.nodes, "node-a", None);
    assert!(errors.is_empty(), "{errors:?}");
    let bad = &c.services[&rvs_proxy::cluster::ObjectName::new("default", "bad")];
    assert!(bad.source_ranges.is_empty());
    let mut warnings = Vec::new();
    rvs_proxy::cluster::service_info_with(&m.services[0], None, &mut warnings)
        .unwrap()
        .unwrap();
    assert_eq!(warnings.len(), 1);
    assert_eq!(warnings[0].field, "spec.loadBalancerSourceRanges[0]");
}

/// The API server's JSON (what the watchers decode) carries both fields
/// the same way.
#[test]
fn source_ranges_and_health_check_ports_from_api_json() {
    let svc: k8s_openapi::api::core::v1::Service = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "lb", "namespace": "prod", "resourceVersion": "7"},
        "spec": {
            "type": "LoadBalancer",
            "clusterIP": "10.96.0.30",
            "clusterIPs": ["10.96.0.30", "fd00:96::30"],
            "externalTrafficPolicy": "Local",
            "healthCheckNodePort": 31999,
            "loadBalancerSourceRanges": ["198.51.100.0/24", "2001:db8::/32"],
            "ports": [{"port": 443, "nodePort": 30443, "protocol": "TCP"}]
        },
        "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.60"}]}}
    }))
    .unwrap();
    let (c, errors) = ClusterState::build(&[svc], &[], &[], "node-a", None);
    assert!(errors.is_empty(), "{errors:?}");
    let info = c.services.values().next().unwrap();
    assert_eq!(info.health_check_node_port, Some(31999));
    assert_eq!(info.source_ranges.len(), 2);
    let config = ProxyConfig::default();
    let v6 = desired_ipsets(&c, &config, IpFamily::V6);
    // No IPv6 load-balancer IP: the IPv6 range has nothing to fence.
    assert!(v6.get("KUBE-LOAD-BALANCER-SOURCE-CIDR").is_empty());
    let v4 = desired_ipsets(&c, &config, IpFamily::V4);
    assert_eq!(
        v4.get("KUBE-LOAD-BALANCER-SOURCE-CIDR"),
        ["192.0.2.60,tcp:443,198.51.100.0/24"]
    );
    // No node address: the node cannot be inside a range.
    assert_eq!(v4.lb_no_node_access.len(), 1);
}
