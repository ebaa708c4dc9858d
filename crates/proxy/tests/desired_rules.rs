//! Table-driven checks of the desired-state rules against kube-proxy's
//! documented IPVS-mode behaviour, one manifest set per rule.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::net::SocketAddr;

use rvs_model::{Protocol, Scheduler, ServiceKey};
use rvs_proxy::desired::VipKind;
use rvs_proxy::source::manifests::{Manifests, parse_into};
use rvs_proxy::{ClusterState, Desired, ProxyConfig, desired_state};

const NODE: &str = r#"
kind: Node
metadata:
  name: node-a
  labels: {topology.kubernetes.io/zone: zone-a}
status:
  addresses:
  - {type: InternalIP, address: 192.168.1.10}
  - {type: Hostname, address: node-a}
"#;

fn desired(yaml: &str) -> Desired {
    desired_with(
        yaml,
        &ProxyConfig {
            node_name: "node-a".into(),
            ..ProxyConfig::default()
        },
    )
}

fn desired_with(yaml: &str, config: &ProxyConfig) -> Desired {
    let mut m = Manifests::default();
    let mut errors = Vec::new();
    parse_into(
        &format!("{NODE}\n---\n{yaml}"),
        "test.yaml",
        &mut m,
        &mut errors,
    );
    assert!(errors.is_empty(), "{errors:?}");
    let (cluster, errors) = ClusterState::build(
        &m.services,
        &m.slices,
        &m.nodes,
        &config.node_name,
        config.service_proxy_name.as_deref(),
    );
    assert!(errors.is_empty(), "{errors:?}");
    desired_state(&cluster, config)
}

fn tcp(addr: &str) -> ServiceKey {
    ServiceKey::tcp(addr.parse().unwrap())
}

fn dests(d: &Desired, key: &ServiceKey) -> Vec<String> {
    d.services[key]
        .destinations
        .keys()
        .map(SocketAddr::to_string)
        .collect()
}

fn slice(name: &str, svc: &str, port: u16, endpoints: &str) -> String {
    format!(
        "kind: EndpointSlice\nmetadata: {{name: {name}, namespace: default, labels: {{kubernetes.io/service-name: {svc}}}}}\naddressType: IPv4\nports: [{{name: http, port: {port}, protocol: TCP}}]\nendpoints:\n{endpoints}"
    )
}

const WEB: &str = "kind: Service\nmetadata: {name: web, namespace: default}\nspec:\n  clusterIP: 10.96.0.10\n  ports: [{name: http, port: 80, targetPort: 8080}]\n";

#[test]
fn cluster_ip_gets_a_virtual_server_with_ready_endpoints_masqueraded_weight_1() {
    let eps = "- {addresses: [10.244.1.5], conditions: {ready: true}}\n- {addresses: [10.244.2.6]}\n- {addresses: [10.244.3.7], conditions: {ready: false}}\n";
    let d = desired(&format!("{WEB}---\n{}", slice("web-1", "web", 8080, eps)));
    let key = tcp("10.96.0.10:80");
    let svc = &d.services[&key];
    assert_eq!(svc.service.scheduler, Scheduler::RoundRobin);
    assert!(!svc.service.is_persistent());
    assert_eq!(svc.kind, VipKind::ClusterIp);
    assert_eq!(dests(&d, &key), ["10.244.1.5:8080", "10.244.2.6:8080"]);
    for dest in svc.destinations.values() {
        assert_eq!(
            (dest.weight, dest.forward),
            (1, rvs_model::ForwardMethod::Masquerade)
        );
    }
    assert!(d.addresses.contains(&"10.96.0.10".parse().unwrap()));
    assert_eq!(d.services.len(), 1);
}

#[test]
fn without_ready_endpoints_serving_terminating_ones_are_used() {
    let eps = "- {addresses: [10.244.1.5], conditions: {ready: false, serving: true, terminating: true}}\n- {addresses: [10.244.2.6], conditions: {ready: false, serving: false, terminating: true}}\n";
    let d = desired(&format!("{WEB}---\n{}", slice("web-1", "web", 8080, eps)));
    assert_eq!(dests(&d, &tcp("10.96.0.10:80")), ["10.244.1.5:8080"]);
    // ...but not while any endpoint is ready.
    let eps2 = format!("{eps}- {{addresses: [10.244.3.7], conditions: {{ready: true}}}}\n");
    let d = desired(&format!("{WEB}---\n{}", slice("web-1", "web", 8080, &eps2)));
    assert_eq!(dests(&d, &tcp("10.96.0.10:80")), ["10.244.3.7:8080"]);
}

#[test]
fn headless_external_name_and_other_proxies_services_are_ignored() {
    let yaml = "kind: Service\nmetadata: {name: h, namespace: default}\nspec: {clusterIP: None, ports: [{port: 80}]}\n---\n\
        kind: Service\nmetadata: {name: e, namespace: default}\nspec: {type: ExternalName, externalName: example.invalid}\n---\n\
        kind: Service\nmetadata: {name: o, namespace: default, labels: {service.kubernetes.io/service-proxy-name: other}}\nspec: {clusterIP: 10.96.0.20, ports: [{port: 80}]}\n";
    assert!(desired(yaml).services.is_empty());
    // With --service-proxy-name=other, only the labelled one is ours.
    let config = ProxyConfig {
        node_name: "node-a".into(),
        service_proxy_name: Some("other".into()),
        ..Default::default()
    };
    let d = desired_with(yaml, &config);
    assert_eq!(
        d.services.keys().collect::<Vec<_>>(),
        [&tcp("10.96.0.20:80")]
    );
}

#[test]
fn the_headless_label_drops_endpoint_slices_not_services() {
    // kube-proxy v1.37 selects Services by the proxy-name label and
    // `spec.clusterIP!=None`, and EndpointSlices by the headless label.
    let svc = "kind: Service\nmetadata: {name: lh, namespace: default, labels: {service.kubernetes.io/headless: ''}}\nspec: {clusterIP: 10.96.0.21, ports: [{name: http, port: 80}]}\n";
    let eps = "- {addresses: [10.244.1.5]}\n";
    let d = desired(&format!("{svc}---\n{}", slice("lh-1", "lh", 8080, eps)));
    assert_eq!(dests(&d, &tcp("10.96.0.21:80")), ["10.244.1.5:8080"]);
    let labelled = slice("lh-1", "lh", 8080, eps).replace(
        "kubernetes.io/service-name: lh",
        "kubernetes.io/service-name: lh, service.kubernetes.io/headless: ''",
    );
    assert_ne!(
        labelled,
        slice("lh-1", "lh", 8080, eps),
        "the label went in"
    );
    let d = desired(&format!("{svc}---\n{labelled}"));
    assert!(dests(&d, &tcp("10.96.0.21:80")).is_empty());
}

#[test]
fn node_port_external_ip_and_load_balancer_get_virtual_servers() {
    let yaml = "kind: Service\nmetadata: {name: lb, namespace: default}\nspec:\n  type: LoadBalancer\n  clusterIP: 10.96.0.30\n  externalIPs: [203.0.113.5]\n  ports: [{name: http, port: 80, nodePort: 30080}]\nstatus:\n  loadBalancer: {ingress: [{ip: 198.51.100.7}, {ip: 198.51.100.8, ipMode: Proxy}]}\n";
    let eps = "- {addresses: [10.244.1.5]}\n";
    let d = desired(&format!("{yaml}---\n{}", slice("lb-1", "lb", 8080, eps)));
    let mut keys: Vec<(String, VipKind)> = d
        .services
        .iter()
        .map(|(k, v)| (k.to_string(), v.kind))
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            ("TCP 10.96.0.30:80".to_owned(), VipKind::ClusterIp),
            ("TCP 192.168.1.10:30080".to_owned(), VipKind::NodePort),
            ("TCP 198.51.100.7:80".to_owned(), VipKind::LoadBalancer),
            ("TCP 203.0.113.5:80".to_owned(), VipKind::ExternalIp),
        ]
    );
    // The node address is not bound to kube-ipvs0; the others are.
    let bound: Vec<String> = d.addresses.iter().map(ToString::to_string).collect();
    assert_eq!(bound, ["10.96.0.30", "198.51.100.7", "203.0.113.5"]);
    // --nodeport-addresses can exclude the node address.
    let config = ProxyConfig {
        node_name: "node-a".into(),
        nodeport_addresses: vec!["10.0.0.0/8".parse().unwrap()],
        ..Default::default()
    };
    let d = desired_with(
        &format!("{yaml}---\n{}", slice("lb-1", "lb", 8080, eps)),
        &config,
    );
    assert!(!d.services.contains_key(&tcp("192.168.1.10:30080")));
}

#[test]
fn client_ip_affinity_makes_the_service_persistent() {
    let yaml = "kind: Service\nmetadata: {name: s, namespace: default}\nspec:\n  clusterIP: 10.96.0.40\n  sessionAffinity: ClientIP\n  ports: [{port: 80}]\n---\n\
        kind: Service\nmetadata: {name: t, namespace: default}\nspec:\n  clusterIP: 10.96.0.41\n  sessionAffinity: ClientIP\n  sessionAffinityConfig: {clientIP: {timeoutSeconds: 60}}\n  ports: [{port: 80}]\n";
    let d = desired(yaml);
    let s = &d.services[&tcp("10.96.0.40:80")].service;
    assert!(s.is_persistent());
    assert_eq!(s.timeout, 10800);
    assert_eq!(s.netmask, rvs_model::Netmask(0xffff_ffff));
    assert_eq!(d.services[&tcp("10.96.0.41:80")].service.timeout, 60);
}

#[test]
fn traffic_policy_local_keeps_only_this_nodes_endpoints() {
    let yaml = "kind: Service\nmetadata: {name: l, namespace: default}\nspec:\n  type: NodePort\n  clusterIP: 10.96.0.50\n  externalTrafficPolicy: Local\n  ports: [{name: http, port: 80, nodePort: 30050}]\n";
    let eps = "- {addresses: [10.244.1.5], nodeName: node-a}\n- {addresses: [10.244.2.6], nodeName: node-b}\n";
    let d = desired(&format!("{yaml}---\n{}", slice("l-1", "l", 8080, eps)));
    assert_eq!(
        dests(&d, &tcp("10.96.0.50:80")),
        ["10.244.1.5:8080", "10.244.2.6:8080"]
    );
    assert_eq!(dests(&d, &tcp("192.168.1.10:30050")), ["10.244.1.5:8080"]);
    let itp = yaml.replace("externalTrafficPolicy", "internalTrafficPolicy");
    let d = desired(&format!("{itp}---\n{}", slice("l-1", "l", 8080, eps)));
    assert_eq!(dests(&d, &tcp("10.96.0.50:80")), ["10.244.1.5:8080"]);
    assert_eq!(
        dests(&d, &tcp("192.168.1.10:30050")),
        ["10.244.1.5:8080", "10.244.2.6:8080"]
    );
}

#[test]
fn zone_hints_narrow_the_cluster_set_only_when_every_endpoint_has_them() {
    let hinted = "- {addresses: [10.244.1.5], hints: {forZones: [{name: zone-a}]}}\n- {addresses: [10.244.2.6], hints: {forZones: [{name: zone-b}]}}\n";
    let d = desired(&format!(
        "{WEB}---\n{}",
        slice("web-1", "web", 8080, hinted)
    ));
    assert_eq!(dests(&d, &tcp("10.96.0.10:80")), ["10.244.1.5:8080"]);
    let partly = "- {addresses: [10.244.1.5], hints: {forZones: [{name: zone-a}]}}\n- {addresses: [10.244.2.6]}\n";
    let d = desired(&format!(
        "{WEB}---\n{}",
        slice("web-1", "web", 8080, partly)
    ));
    assert_eq!(dests(&d, &tcp("10.96.0.10:80")).len(), 2);
}

#[test]
fn multi_port_udp_ipv6_and_scheduler_annotation() {
    let yaml = "kind: Service\nmetadata: {name: dns, namespace: kube-system, annotations: {rvs.dev/ipvs-scheduler: mh}}\nspec:\n  clusterIPs: [10.96.0.53, 'fd00::53']\n  ports: [{name: dns, port: 53, protocol: UDP}, {name: dns-tcp, port: 53, protocol: TCP}]\n---\n\
        kind: EndpointSlice\nmetadata: {name: dns-v4, namespace: kube-system, labels: {kubernetes.io/service-name: dns}}\naddressType: IPv4\nports: [{name: dns, port: 5353, protocol: UDP}, {name: dns-tcp, port: 5353, protocol: TCP}]\nendpoints: [{addresses: [10.244.1.9]}]\n---\n\
        kind: EndpointSlice\nmetadata: {name: dns-v6, namespace: kube-system, labels: {kubernetes.io/service-name: dns}}\naddressType: IPv6\nports: [{name: dns, port: 5353, protocol: UDP}]\nendpoints: [{addresses: ['fd00:244::9']}]\n";
    let d = desired(yaml);
    let udp4 = ServiceKey::Addr {
        protocol: Protocol::Udp,
        addr: "10.96.0.53:53".parse().unwrap(),
    };
    let udp6 = ServiceKey::Addr {
        protocol: Protocol::Udp,
        addr: "[fd00::53]:53".parse().unwrap(),
    };
    assert_eq!(dests(&d, &udp4), ["10.244.1.9:5353"]);
    assert_eq!(dests(&d, &udp6), ["[fd00:244::9]:5353"]);
    assert_eq!(dests(&d, &tcp("10.96.0.53:53")), ["10.244.1.9:5353"]);
    assert!(dests(&d, &tcp("[fd00::53]:53")).is_empty());
    assert!(
        d.services
            .values()
            .all(|s| s.service.scheduler == Scheduler::Maglev)
    );
    assert_eq!(d.services.len(), 4);
    // kube-proxy's --ipvs-scheduler=mh also sets mh-port
    // (IP_VS_SVC_F_SCHED_MH_PORT, `-b mh-port`); an annotated mh too.
    assert!(d.services.values().all(|s| {
        s.service.flags.has(rvs_model::ServiceFlags::SCHED2)
            && !s.service.flags.has(rvs_model::ServiceFlags::SCHED1)
    }));
}

#[test]
fn the_mh_scheduler_gets_the_mh_port_flag_and_others_none() {
    let mh = ProxyConfig {
        node_name: "node-a".into(),
        scheduler: Scheduler::Maglev,
        ..ProxyConfig::default()
    };
    let d = desired_with(WEB, &mh);
    let s = &d.services[&tcp("10.96.0.10:80")].service;
    assert_eq!(
        s.flags,
        rvs_model::ServiceFlags(rvs_model::ServiceFlags::SCHED2)
    );
    let d = desired(WEB);
    assert_eq!(
        d.services[&tcp("10.96.0.10:80")].service.flags,
        rvs_model::ServiceFlags::default()
    );
}

#[test]
fn invalid_objects_are_reported_by_name_and_field() {
    let yaml = format!(
        "{NODE}\n---\nkind: Service\nmetadata: {{name: bad, namespace: default}}\nspec: {{clusterIP: 10.96.0.300, ports: [{{port: 80}}]}}\n---\n{WEB}"
    );
    let mut m = Manifests::default();
    let mut errors = Vec::new();
    parse_into(&yaml, "t.yaml", &mut m, &mut errors);
    let (cluster, errors) = ClusterState::build(&m.services, &m.slices, &m.nodes, "node-a", None);
    assert_eq!(errors.len(), 1);
    assert_eq!(
        errors[0].to_string(),
        "Service default/bad: spec.clusterIPs[0]: \"10.96.0.300\" is not an IP address"
    );
    assert_eq!(cluster.services.len(), 1, "the valid Service still syncs");
}

/// The README's example manifests parse cleanly and yield what the
/// README says: web on its cluster IP and node port, dns with affinity.
#[test]
fn the_example_manifests_load_and_plan() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/manifests");
    let mut cache = rvs_proxy::source::manifests::DirCache::new("demo-node", None);
    let loaded = cache.load(std::path::Path::new(dir)).unwrap();
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    let cluster = loaded.state.clone();
    let config = ProxyConfig {
        node_name: "demo-node".into(),
        ..ProxyConfig::default()
    };
    let d = desired_state(&cluster, &config);
    let keys: Vec<String> = d.services.keys().map(ToString::to_string).collect();
    assert_eq!(
        keys,
        [
            "TCP 127.0.0.1:30080",
            "TCP 127.0.10.1:8080",
            "UDP 127.0.10.53:5353"
        ]
    );
    assert_eq!(
        dests(&d, &tcp("127.0.10.1:8080")),
        ["127.0.20.1:18080", "127.0.20.2:18080"]
    );
    let dns = ServiceKey::Addr {
        protocol: Protocol::Udp,
        addr: "127.0.10.53:5353".parse().unwrap(),
    };
    assert!(d.services[&dns].service.is_persistent());
}

/// kube-proxy's IPVS `syncEndpoint` with no local endpoint falls back to
/// the cluster endpoints (kubernetes#97081), for every virtual server of
/// a `Local` policy; an `internalTrafficPolicy: Local` Service nobody
/// reaches from outside never computes cluster endpoints
/// (`UsesClusterEndpoints`), so its cluster IP stays empty.
#[test]
fn local_policies_without_a_local_endpoint_fall_back_as_kube_proxy() {
    let remote = "- {addresses: [10.244.2.6], nodeName: node-b}\n- {addresses: [10.244.3.7], nodeName: node-c, conditions: {ready: false}}\n";
    let lb = "kind: Service\nmetadata: {name: l, namespace: default}\nspec:\n  type: LoadBalancer\n  clusterIP: 10.96.0.50\n  externalIPs: [203.0.113.50]\n  externalTrafficPolicy: Local\n  ports: [{name: http, port: 80, nodePort: 30050}]\nstatus: {loadBalancer: {ingress: [{ip: 198.51.100.50}]}}\n";
    let d = desired(&format!("{lb}---\n{}", slice("l-1", "l", 8080, remote)));
    for key in [
        "10.96.0.50:80",
        "192.168.1.10:30050",
        "198.51.100.50:80",
        "203.0.113.50:80",
    ] {
        assert_eq!(dests(&d, &tcp(key)), ["10.244.2.6:8080"], "{key}");
    }
    // A local serving-terminating endpoint is a local endpoint: no
    // fallback then.
    let local_terminating = format!(
        "{remote}- {{addresses: [10.244.1.9], nodeName: node-a, conditions: {{ready: false, serving: true, terminating: true}}}}\n"
    );
    let d = desired(&format!(
        "{lb}---\n{}",
        slice("l-1", "l", 8080, &local_terminating)
    ));
    assert_eq!(dests(&d, &tcp("192.168.1.10:30050")), ["10.244.1.9:8080"]);
    assert_eq!(dests(&d, &tcp("10.96.0.50:80")), ["10.244.2.6:8080"]);

    // internalTrafficPolicy: Local on a ClusterIP Service: no cluster
    // endpoints are computed, so no fallback.
    let itp = "kind: Service\nmetadata: {name: i, namespace: default}\nspec:\n  clusterIP: 10.96.0.51\n  internalTrafficPolicy: Local\n  ports: [{name: http, port: 80}]\n";
    let d = desired(&format!("{itp}---\n{}", slice("i-1", "i", 8080, remote)));
    assert!(dests(&d, &tcp("10.96.0.51:80")).is_empty());
    // ...but with a node port the Service uses cluster endpoints, and its
    // cluster IP falls back to them.
    let itp_np = "kind: Service\nmetadata: {name: i, namespace: default}\nspec:\n  type: NodePort\n  clusterIP: 10.96.0.51\n  internalTrafficPolicy: Local\n  ports: [{name: http, port: 80, nodePort: 30051}]\n";
    let d = desired(&format!("{itp_np}---\n{}", slice("i-1", "i", 8080, remote)));
    assert_eq!(dests(&d, &tcp("10.96.0.51:80")), ["10.244.2.6:8080"]);
    assert_eq!(dests(&d, &tcp("192.168.1.10:30051")), ["10.244.2.6:8080"]);
}

/// kube-proxy runs one proxier per family: a single-stack Service has
/// nothing in the other family, neither on node addresses nor on
/// external or load-balancer IPs of that family.
#[test]
fn a_single_stack_service_gets_no_virtual_servers_of_the_other_family() {
    let dual_node = "kind: Node\nmetadata: {name: node-a}\nstatus:\n  addresses:\n  - {type: InternalIP, address: 192.168.1.10}\n  - {type: InternalIP, address: 'fd00:1::10'}\n";
    let yaml = format!(
        "{dual_node}---\nkind: Service\nmetadata: {{name: v4, namespace: default}}\nspec:\n  type: LoadBalancer\n  clusterIPs: [10.96.0.60]\n  externalIPs: [203.0.113.60, '2001:db8::60']\n  ports: [{{name: http, port: 80, nodePort: 30060}}]\nstatus: {{loadBalancer: {{ingress: [{{ip: 198.51.100.60}}, {{ip: '2001:db8:1::60'}}]}}}}\n"
    );
    let mut m = Manifests::default();
    let mut errors = Vec::new();
    parse_into(&yaml, "t.yaml", &mut m, &mut errors);
    assert!(errors.is_empty(), "{errors:?}");
    let (cluster, errors) = ClusterState::build(&m.services, &m.slices, &m.nodes, "node-a", None);
    assert!(errors.is_empty(), "{errors:?}");
    let config = ProxyConfig {
        node_name: "node-a".into(),
        ..ProxyConfig::default()
    };
    let d = desired_state(&cluster, &config);
    let mut keys: Vec<String> = d.services.keys().map(ToString::to_string).collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "TCP 10.96.0.60:80",
            "TCP 192.168.1.10:30060",
            "TCP 198.51.100.60:80",
            "TCP 203.0.113.60:80",
        ]
    );
    let bound: Vec<String> = d.addresses.iter().map(ToString::to_string).collect();
    assert_eq!(bound, ["10.96.0.60", "198.51.100.60", "203.0.113.60"]);
}

/// An endpoint listed in two slices (moving between them, or a new pod
/// reusing a terminating pod's IP) counts once; kube-proxy keeps the
/// non-terminating copy whatever the order of the slices.
#[test]
fn a_duplicate_endpoint_counts_once_and_the_non_terminating_copy_wins() {
    let terminating = "- {addresses: [10.244.1.5], conditions: {ready: false, serving: false, terminating: true}}\n";
    let running = "- {addresses: [10.244.1.5], conditions: {ready: true}}\n";
    for (a, b) in [(terminating, running), (running, terminating)] {
        let d = desired(&format!(
            "{WEB}---\n{}---\n{}",
            slice("web-a", "web", 8080, a),
            slice("web-b", "web", 8080, b)
        ));
        assert_eq!(dests(&d, &tcp("10.96.0.10:80")), ["10.244.1.5:8080"]);
    }
    // Two terminating copies: the first stays (neither replaces it), and
    // an unset `serving` counts as serving.
    let t1 = "- {addresses: [10.244.1.5], conditions: {ready: false, terminating: true}}\n";
    let t2 = "- {addresses: [10.244.1.5], conditions: {ready: false, serving: false, terminating: true}}\n";
    let d = desired(&format!(
        "{WEB}---\n{}---\n{}",
        slice("web-a", "web", 8080, t1),
        slice("web-b", "web", 8080, t2)
    ));
    assert_eq!(dests(&d, &tcp("10.96.0.10:80")), ["10.244.1.5:8080"]);
}

#[test]
fn empty_hint_lists_are_no_hints() {
    let eps = "- {addresses: [10.244.1.5], hints: {forZones: [{name: zone-a}]}}\n- {addresses: [10.244.2.6], hints: {forZones: []}}\n";
    let d = desired(&format!("{WEB}---\n{}", slice("web-1", "web", 8080, eps)));
    assert_eq!(dests(&d, &tcp("10.96.0.10:80")).len(), 2);
    // forNodes hints count (PreferSameTrafficDistribution is GA in
    // v1.37: kube-proxy's --help lists no such gate).
    let eps = "- {addresses: [10.244.1.5], hints: {forNodes: [{name: node-a}]}}\n- {addresses: [10.244.2.6], hints: {forNodes: [{name: node-b}]}}\n";
    let d = desired(&format!("{WEB}---\n{}", slice("web-1", "web", 8080, eps)));
    assert_eq!(dests(&d, &tcp("10.96.0.10:80")), ["10.244.1.5:8080"]);
}
