//! The kernel node side's logic with fake set, rule and conntrack
//! backends: what a full and a partial sync write, the applied-rules
//! cache, a failure turning the next sync into a full one, sysctls (the
//! conntrack ones too) retried on full syncs, and the stale UDP conntrack
//! cleanup run when UDP endpoints changed. The real kernel paths are
//! covered by the netns and VM tests.

#![allow(clippy::unwrap_used)] // test code

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::Path;
use std::rc::Rc;

use rvs_model::Protocol;
use rvs_netfilter::ipset::{Entry, Family, IpsetError, Op, SetSpec, sync::SyncReport};
use rvs_netfilter::iptables::{IptablesError, LocalDetect, RuleSet, RulesConfig};
use rvs_node::conntrack::{ConntrackBackend, ConntrackError, Flow, IPPROTO_UDP, Tuple5};
use rvs_node::sysctl::{ConntrackOptions, Roots};
use rvs_node::{Host, KernelSide, NetfilterOptions, NodeOptions, RuleBackend, SetBackend};
use rvs_proxy::ProxyConfig;
use rvs_proxy::cluster::{
    ClusterState, EndpointInfo, NodeInfo, ObjectName, ServiceInfo, ServicePort, SliceInfo,
    SlicePort,
};
use rvs_proxy::ipsets::IpFamily;
use rvs_proxy::run::NodeSide;

/// What the fakes saw, and whether they fail.
#[derive(Debug, Default)]
struct Kernel {
    /// Members of every set, as the fake kernel holds them.
    sets: BTreeMap<String, BTreeSet<Entry>>,
    /// Full set syncs, batches, rule applies (with `ensure_jumps`).
    set_syncs: usize,
    batches: Vec<usize>,
    applies: Vec<(Family, bool)>,
    fail_batch: bool,
    fail_apply: bool,
    /// The conntrack table, and how often it was listed.
    flows: Vec<Flow>,
    lists: usize,
    fail_conntrack: bool,
}

#[derive(Clone, Default)]
struct Fake(Rc<RefCell<Kernel>>);

impl SetBackend for Fake {
    fn sync_set(
        &mut self,
        spec: &SetSpec,
        desired: &BTreeSet<Entry>,
    ) -> Result<SyncReport, IpsetError> {
        let mut k = self.0.borrow_mut();
        k.set_syncs += 1;
        let before = k
            .sets
            .insert(spec.name.clone(), desired.clone())
            .unwrap_or_default();
        Ok(SyncReport {
            added: desired.difference(&before).count(),
            deleted: before.difference(desired).count(),
            ..SyncReport::default()
        })
    }

    fn batch(&mut self, ops: &[Op]) -> Result<Vec<Result<(), IpsetError>>, IpsetError> {
        let mut k = self.0.borrow_mut();
        if k.fail_batch {
            return Err(IpsetError::Unexpected("simulated".into()));
        }
        k.batches.push(ops.len());
        for op in ops {
            match op {
                Op::Add { set, entry, .. } => {
                    k.sets.entry(set.clone()).or_default().insert(*entry);
                }
                Op::Del { set, entry, .. } => {
                    k.sets.entry(set.clone()).or_default().remove(entry);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        Ok(ops.iter().map(|_| Ok(())).collect())
    }
}

impl RuleBackend for Fake {
    fn apply(
        &mut self,
        family: Family,
        _rules: &RuleSet,
        ensure_jumps: bool,
    ) -> Result<(), IptablesError> {
        let mut k = self.0.borrow_mut();
        k.applies.push((family, ensure_jumps));
        if k.fail_apply {
            return Err(IptablesError::Config {
                field: "simulated",
                reason: "refused".into(),
            });
        }
        Ok(())
    }
}

impl ConntrackBackend for Fake {
    fn list(&mut self, _family: IpFamily) -> Result<Vec<Flow>, ConntrackError> {
        let mut k = self.0.borrow_mut();
        k.lists += 1;
        if k.fail_conntrack {
            return Err(ConntrackError::Kernel {
                op: "dump conntrack entries",
                errno: 1,
            });
        }
        Ok(k.flows.clone())
    }

    fn delete(&mut self, flows: &[Flow]) -> Result<usize, ConntrackError> {
        let mut k = self.0.borrow_mut();
        let before = k.flows.len();
        k.flows.retain(|f| !flows.contains(f));
        Ok(before - k.flows.len())
    }
}

fn name(s: &str) -> ObjectName {
    ObjectName::new("default", s)
}

/// Services `s0..n` on 10.96.0.x:80; those in `node_port` have node port
/// 3000x; each has one endpoint.
fn cluster(n: u8, node_port: &[u8]) -> ClusterState {
    let mut c = ClusterState {
        node: Some(NodeInfo {
            name: "node-a".into(),
            addresses: vec!["192.168.1.10".parse().unwrap()],
            ..NodeInfo::default()
        }),
        ..ClusterState::default()
    };
    for i in 0..n {
        let svc = format!("s{i}");
        let port = ServicePort {
            name: "http".into(),
            protocol: Protocol::Tcp,
            port: 80,
            node_port: node_port.contains(&i).then_some(30000 + u16::from(i)),
        };
        let vip = IpAddr::from([10, 96, 0, i + 1]);
        c.services.insert(
            name(&svc),
            ServiceInfo::new(name(&svc), vec![vip], vec![port]),
        );
        c.slices.insert(
            name(&format!("{svc}-1")),
            SliceInfo {
                service: name(&svc),
                ports: vec![SlicePort {
                    name: "http".into(),
                    protocol: Protocol::Tcp,
                    port: 8080,
                }],
                endpoints: vec![EndpointInfo::ready(IpAddr::from([10, 244, 0, i + 1]))],
            },
        );
    }
    c
}

/// A node side on fakes, with the IPVS sysctls only.
fn side(fake: &Fake, sysctl_root: &Path) -> KernelSide<Fake, Fake, Fake> {
    let no_conntrack = ConntrackOptions {
        max_per_core: 0,
        tcp_established_timeout: std::time::Duration::ZERO,
        tcp_close_wait_timeout: std::time::Duration::ZERO,
        ..ConntrackOptions::default()
    };
    side_with(fake, sysctl_root, no_conntrack)
}

fn side_with(
    fake: &Fake,
    root: &Path,
    conntrack: ConntrackOptions,
) -> KernelSide<Fake, Fake, Fake> {
    let options = NodeOptions {
        netfilter: NetfilterOptions {
            maxelem: 65536,
            rules: RulesConfig::default(),
            local_detect: [LocalDetect::None, LocalDetect::None],
            families: vec![IpFamily::V4],
        },
        backend: rvs_netfilter::iptables::Backend::System,
        strict_arp: false,
        conntrack,
        sysctl_roots: Roots {
            proc_sys: root.to_owned(),
            sys: root.join("sys"),
        },
    };
    let host = Host {
        release: "6.1.0".into(),
        cpus: 8,
    };
    KernelSide::with_backends(options, fake.clone(), fake.clone(), fake.clone(), &host)
}

fn config() -> ProxyConfig {
    ProxyConfig {
        node_name: "node-a".into(),
        ..ProxyConfig::default()
    }
}

fn changed(names: &[&str]) -> BTreeSet<ObjectName> {
    names.iter().map(|n| name(n)).collect()
}

fn members(fake: &Fake, set: &str) -> usize {
    fake.0.borrow().sets.get(set).map_or(0, BTreeSet::len)
}

#[test]
fn a_full_sync_writes_every_set_and_the_rules_with_their_jumps() {
    let fake = Fake::default();
    let root = tempdir("full");
    let mut side = side(&fake, root.path());
    let report = side.after_sync(&cluster(3, &[0]), &config(), None);
    assert_eq!(report.failures, 0);
    let k = fake.0.borrow();
    assert_eq!(k.set_syncs, rvs_netfilter::ipset::KubeSet::ALL.len());
    assert_eq!(k.applies, [(Family::Inet, true)]);
    drop(k);
    assert_eq!(members(&fake, "KUBE-CLUSTER-IP"), 3);
    assert_eq!(members(&fake, "KUBE-NODE-PORT-TCP"), 1);
}

#[test]
fn a_partial_sync_sends_only_the_changed_members_and_reuses_the_rules() {
    let fake = Fake::default();
    let root = tempdir("partial");
    let mut side = side(&fake, root.path());
    side.after_sync(&cluster(3, &[]), &config(), None);
    // A fourth Service: its members are added in one batch; no set
    // changes emptiness, so the rules last applied stand.
    let report = side.after_sync(&cluster(4, &[]), &config(), Some(&changed(&["s3"])));
    assert_eq!(report.failures, 0);
    assert_eq!(report.restores, 0);
    let k = fake.0.borrow();
    assert_eq!(
        k.set_syncs,
        rvs_netfilter::ipset::KubeSet::ALL.len(),
        "no full rewrite"
    );
    // Its cluster IP, in KUBE-CLUSTER-IP and KUBE-IPVS-IPS.
    assert_eq!(k.batches, [2]);
    assert_eq!(k.applies.len(), 1, "rules not re-applied");
    drop(k);
    assert_eq!(members(&fake, "KUBE-CLUSTER-IP"), 4);
    assert_eq!(members(&fake, "KUBE-IPVS-IPS"), 4);
    // A node port appears where there was none: the node-port set stops
    // being empty, so our chains are rewritten (without the jumps).
    side.after_sync(&cluster(4, &[3]), &config(), Some(&changed(&["s3"])));
    let k = fake.0.borrow();
    assert_eq!(k.applies, [(Family::Inet, true), (Family::Inet, false)]);
    drop(k);
    // Nothing changed: nothing written.
    side.after_sync(&cluster(4, &[3]), &config(), Some(&BTreeSet::new()));
    assert_eq!(fake.0.borrow().batches.len(), 2);
}

#[test]
fn a_failure_makes_the_next_sync_a_full_one() {
    let fake = Fake::default();
    let root = tempdir("failure");
    let mut side = side(&fake, root.path());
    side.after_sync(&cluster(2, &[]), &config(), None);
    // The batch fails: counted, and the next (partial) sync is full.
    fake.0.borrow_mut().fail_batch = true;
    let report = side.after_sync(&cluster(3, &[]), &config(), Some(&changed(&["s2"])));
    assert_eq!(report.failures, 1);
    fake.0.borrow_mut().fail_batch = false;
    let syncs_before = fake.0.borrow().set_syncs;
    let report = side.after_sync(&cluster(3, &[]), &config(), Some(&BTreeSet::new()));
    assert_eq!(report.failures, 0);
    let k = fake.0.borrow();
    assert_eq!(
        k.set_syncs - syncs_before,
        rvs_netfilter::ipset::KubeSet::ALL.len()
    );
    assert_eq!(
        k.applies.last(),
        Some(&(Family::Inet, true)),
        "jumps ensured again"
    );
    drop(k);
    assert_eq!(members(&fake, "KUBE-CLUSTER-IP"), 3);
    // A refused restore forgets the applied rules: the next sync is full
    // and restores them with the jumps.
    fake.0.borrow_mut().fail_apply = true;
    let report = side.after_sync(&cluster(3, &[0]), &config(), Some(&changed(&["s0"])));
    assert_eq!(report.failures, 1);
    fake.0.borrow_mut().fail_apply = false;
    side.after_sync(&cluster(3, &[0]), &config(), Some(&BTreeSet::new()));
    assert_eq!(fake.0.borrow().applies.last(), Some(&(Family::Inet, true)));
}

#[test]
fn sysctls_that_could_not_be_set_are_retried_on_full_syncs_only() {
    let fake = Fake::default();
    let root = tempdir("sysctl");
    let mut side = side(&fake, root.path());
    // No vs directory yet: every IPVS sysctl fails.
    std::fs::create_dir_all(root.join("net/ipv4")).unwrap();
    std::fs::write(root.join("net/ipv4/ip_forward"), "0\n").unwrap();
    assert_eq!(side.ensure_sysctls(), 3);
    assert_eq!(
        std::fs::read_to_string(root.join("net/ipv4/ip_forward")).unwrap(),
        "1\n"
    );
    std::fs::create_dir_all(root.join("net/ipv4/vs")).unwrap();
    for f in [
        "conntrack",
        "expire_nodest_conn",
        "expire_quiescent_template",
    ] {
        std::fs::write(root.join("net/ipv4/vs").join(f), "0\n").unwrap();
    }
    // A partial sync leaves them; a full one sets them.
    side.after_sync(&cluster(1, &[]), &config(), Some(&BTreeSet::new()));
    assert_eq!(
        std::fs::read_to_string(root.join("net/ipv4/vs/conntrack")).unwrap(),
        "0\n"
    );
    let report = side.after_sync(&cluster(1, &[]), &config(), None);
    assert_eq!(report.failures, 0);
    assert_eq!(
        std::fs::read_to_string(root.join("net/ipv4/vs/conntrack")).unwrap(),
        "1\n"
    );
}

#[test]
fn conntrack_sysctls_come_first_and_raise_the_table_only() {
    let fake = Fake::default();
    let root = tempdir("conntrack-sysctl");
    let side = side_with(&fake, root.path(), ConntrackOptions::default());
    let paths: Vec<&str> = side.sysctls().iter().map(|s| s.path).collect();
    assert_eq!(
        paths[..5],
        [
            "net/netfilter/nf_conntrack_max",
            "module/nf_conntrack/parameters/hashsize",
            "net/netfilter/nf_conntrack_tcp_timeout_established",
            "net/netfilter/nf_conntrack_tcp_timeout_close_wait",
            "net/ipv4/vs/conntrack",
        ]
    );
    let mut side = side;
    let nf = root.join("net/netfilter");
    std::fs::create_dir_all(&nf).unwrap();
    std::fs::create_dir_all(root.join("sys/module/nf_conntrack/parameters")).unwrap();
    std::fs::write(nf.join("nf_conntrack_max"), "1048576\n").unwrap();
    std::fs::write(nf.join("nf_conntrack_tcp_timeout_established"), "432000\n").unwrap();
    std::fs::write(nf.join("nf_conntrack_tcp_timeout_close_wait"), "60\n").unwrap();
    std::fs::write(
        root.join("sys/module/nf_conntrack/parameters/hashsize"),
        "16384\n",
    )
    .unwrap();
    // The four IPVS ones fail (no net/ipv4 here); the conntrack ones are
    // set.
    assert_eq!(side.ensure_sysctls(), 4);
    let read = |p: &Path| std::fs::read_to_string(p).unwrap();
    // 32768 × 8 CPUs is below the 1048576 already there: left.
    assert_eq!(read(&nf.join("nf_conntrack_max")), "1048576\n");
    assert_eq!(
        read(&root.join("sys/module/nf_conntrack/parameters/hashsize")),
        "65536\n"
    );
    assert_eq!(
        read(&nf.join("nf_conntrack_tcp_timeout_established")),
        "86400\n"
    );
    assert_eq!(
        read(&nf.join("nf_conntrack_tcp_timeout_close_wait")),
        "3600\n"
    );
}

fn udp_flow(client: &str, to: &str, reply_from: &str) -> Flow {
    let client = client.parse().unwrap();
    Flow {
        original: Tuple5 {
            protocol: IPPROTO_UDP,
            src: client,
            dst: to.parse().unwrap(),
        },
        reply: Tuple5 {
            protocol: IPPROTO_UDP,
            src: reply_from.parse().unwrap(),
            dst: client,
        },
        zone: 0,
    }
}

/// `dns`: UDP 53 on 10.96.0.53, endpoints `eps` at port 5353.
fn with_dns(mut c: ClusterState, eps: &[&str]) -> ClusterState {
    let dns = name("dns");
    c.services.insert(
        dns.clone(),
        ServiceInfo::new(
            dns.clone(),
            vec!["10.96.0.53".parse().unwrap()],
            vec![ServicePort {
                name: "dns".into(),
                protocol: Protocol::Udp,
                port: 53,
                node_port: None,
            }],
        ),
    );
    c.slices.insert(
        name("dns-1"),
        SliceInfo {
            service: dns,
            ports: vec![SlicePort {
                name: "dns".into(),
                protocol: Protocol::Udp,
                port: 5353,
            }],
            endpoints: eps
                .iter()
                .map(|e| EndpointInfo::ready(e.parse().unwrap()))
                .collect(),
        },
    );
    c
}

#[test]
fn stale_udp_entries_are_cleared_when_udp_endpoints_change() {
    let fake = Fake::default();
    let root = tempdir("conntrack-clean");
    let mut side = side(&fake, root.path());
    let old = udp_flow("10.0.0.5:40000", "10.96.0.53:53", "10.244.0.1:5353");
    let new = udp_flow("10.0.0.6:40000", "10.96.0.53:53", "10.244.0.2:5353");
    fake.0.borrow_mut().flows = vec![old, new];
    // The first sync: every endpoint is new; both endpoints serve.
    let report = side.after_sync(
        &with_dns(cluster(1, &[]), &["10.244.0.1", "10.244.0.2"]),
        &config(),
        None,
    );
    assert_eq!(fake.0.borrow().lists, 1);
    // Reported for the conntrack reconciler's metrics, as kube-proxy
    // observes every cleanup that ran.
    assert_eq!(report.conntrack_cleanups.len(), 1);
    assert_eq!(report.conntrack_cleanups[0].family, IpFamily::V4);
    assert_eq!(report.conntrack_cleanups[0].deleted, 0);
    assert_eq!(fake.0.borrow().flows.len(), 2);
    // A TCP Service changes: no cleanup.
    let c = with_dns(cluster(2, &[]), &["10.244.0.1", "10.244.0.2"]);
    let report = side.after_sync(&c, &config(), Some(&changed(&["s1"])));
    assert_eq!(fake.0.borrow().lists, 1);
    assert!(report.conntrack_cleanups.is_empty());
    // A full sync without endpoint changes: none either.
    side.after_sync(&c, &config(), None);
    assert_eq!(fake.0.borrow().lists, 1);
    // 10.244.0.1 goes: its entry is deleted, the other kept.
    let c = with_dns(cluster(2, &[]), &["10.244.0.2"]);
    let report = side.after_sync(&c, &config(), Some(&changed(&["dns"])));
    assert_eq!(report.failures, 0);
    assert_eq!(fake.0.borrow().lists, 2);
    assert_eq!(fake.0.borrow().flows, [new]);
    assert_eq!(report.conntrack_cleanups.len(), 1);
    assert_eq!(report.conntrack_cleanups[0].deleted, 1);
}

#[test]
fn a_failed_cleanup_is_retried_at_the_next_full_sync() {
    let fake = Fake::default();
    let root = tempdir("conntrack-retry");
    let mut side = side(&fake, root.path());
    let old = udp_flow("10.0.0.5:40000", "10.96.0.53:53", "10.244.0.1:5353");
    fake.0.borrow_mut().flows = vec![old];
    side.after_sync(&with_dns(cluster(1, &[]), &["10.244.0.1"]), &config(), None);
    fake.0.borrow_mut().fail_conntrack = true;
    let c = with_dns(cluster(1, &[]), &["10.244.0.2"]);
    let report = side.after_sync(&c, &config(), Some(&changed(&["dns"])));
    // Logged, as kube-proxy does; not a failed sync.
    assert_eq!(report.failures, 0);
    fake.0.borrow_mut().fail_conntrack = false;
    side.after_sync(&c, &config(), Some(&BTreeSet::new()));
    assert_eq!(fake.0.borrow().flows, [old], "partial syncs do not retry");
    side.after_sync(&c, &config(), None);
    assert!(fake.0.borrow().flows.is_empty());
}

/// A private directory standing in for `/proc/sys`, removed on drop.
fn tempdir(name: &str) -> rvs_testrig::TempDir {
    rvs_testrig::TempDir::new(&format!("node-{name}")).unwrap()
}
