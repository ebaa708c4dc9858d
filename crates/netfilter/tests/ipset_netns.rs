//! ipset against the host kernel, inside throw-away network namespaces:
//! our client creates kube-proxy's sets, the real `ipset` CLI lists them
//! in kube-proxy's formats; dumps the kernel sends re-emit byte for byte;
//! updates touch only what differs.
//!
//! Skips without root (fails instead with `RVS_REQUIRE_PRIVILEGED=1`).
//! `RVS_RECORD_FIXTURES=1` rewrites `tests/fixtures/ipset_list_dump.hex`.

#![allow(clippy::unwrap_used)] // test code

mod common;

use std::collections::BTreeSet;

use common::{cli_field, cli_members, sh};
use rvs_netfilter::ipset::message::{emit_buffer, parse_buffer};
use rvs_netfilter::ipset::sync::sync_set;
use rvs_netfilter::ipset::{
    Entry, Family, IpsetClient, IpsetError, KubeSet, KubeSets, Op, SetSpec, SetType,
};
use rvs_testrig::Netns;

fn entry(set: KubeSet, s: &str) -> Entry {
    Entry::parse(set.set_type(), s).unwrap()
}

fn sample(family: Family) -> KubeSets {
    let mut sets = KubeSets::new(family);
    let v4 = family == Family::Inet;
    let (vip, ep, lb, node, cidr) = if v4 {
        (
            "10.96.0.10",
            "10.244.1.5",
            "192.0.2.10",
            "172.18.0.2",
            "203.0.113.0/24",
        )
    } else {
        (
            "fd00:96::a",
            "fd00:244::5",
            "2001:db8::10",
            "fc00:18::2",
            "2001:db8:1::/64",
        )
    };
    let mut add = |set: KubeSet, s: String| sets.insert(set, entry(set, &s));
    add(KubeSet::ClusterIp, format!("{vip},tcp:53"));
    add(KubeSet::ClusterIp, format!("{vip},udp:53"));
    add(KubeSet::LoopBack, format!("{ep},tcp:8080,{ep}"));
    add(KubeSet::ExternalIp, format!("{lb},tcp:80"));
    add(KubeSet::LoadBalancer, format!("{lb},tcp:443"));
    add(KubeSet::LoadBalancerFw, format!("{lb},tcp:443"));
    add(KubeSet::LoadBalancerLocal, format!("{lb},tcp:443"));
    add(
        KubeSet::LoadBalancerSourceCidr,
        format!("{lb},tcp:443,{cidr}"),
    );
    add(KubeSet::LoadBalancerSourceIp, format!("{lb},tcp:443,{lb}"));
    add(KubeSet::NodePortTcp, "30080".into());
    add(KubeSet::NodePortLocalTcp, "30080".into());
    add(KubeSet::NodePortUdp, "30053".into());
    add(KubeSet::NodePortSctp, format!("{node},sctp:30099"));
    add(KubeSet::HealthCheckNodePort, "32000".into());
    add(KubeSet::IpvsIps, vip.to_owned());
    sets
}

#[test]
fn kube_proxy_sets_show_in_kube_proxy_formats_and_update_in_place() {
    let Some(netns) = Netns::or_skip("kube_proxy_sets_show_in_kube_proxy_formats") else {
        return;
    };
    for family in [Family::Inet, Family::Inet6] {
        let desired = sample(family);
        let plan = desired.plan(131072);
        let reports = netns
            .enter(move || {
                let mut client = IpsetClient::open().unwrap();
                plan.iter()
                    .map(|(spec, members)| sync_set(&mut client, spec, members).unwrap())
                    .collect::<Vec<_>>()
            })
            .unwrap();
        assert!(reports.iter().all(|r| r.created), "{reports:?}");

        for set in KubeSet::ALL {
            let name = set.name(family);
            let listing = sh(&netns, &format!("ipset list {name}"));
            assert_eq!(
                cli_field(&listing, "Type"),
                set.set_type().name(),
                "{listing}"
            );
            assert_eq!(
                cli_field(&listing, "Revision"),
                set.set_type().revision().to_string()
            );
            let header = cli_field(&listing, "Header");
            if set.set_type().is_hash() {
                let want = format!("family {} hashsize 1024 maxelem 131072 ", family.name());
                assert!(header.starts_with(&want), "{name}: {header}");
            } else {
                assert_eq!(header, "range 0-65535", "{name}");
            }
            let want: Vec<String> = {
                let mut v: Vec<String> = desired.get(set).map(Entry::to_string).collect();
                v.sort();
                v
            };
            assert_eq!(cli_members(&listing), want, "{name}: {listing}");
        }
        // kube-proxy's own entry strings, as its ipset restore writes them.
        let v4 = family == Family::Inet;
        let cluster = sh(
            &netns,
            &format!("ipset list {}", KubeSet::ClusterIp.name(family)),
        );
        let want = if v4 {
            "10.96.0.10,tcp:53"
        } else {
            "fd00:96::a,tcp:53"
        };
        assert!(cli_members(&cluster).contains(&want.to_owned()));

        // Update in place: one member out, one in, the rest untouched.
        let mut changed = desired.clone();
        let cluster_ip = KubeSet::ClusterIp;
        let old = changed.get(cluster_ip).next().copied().unwrap();
        changed.entries.get_mut(&cluster_ip).unwrap().remove(&old);
        let vip = if v4 {
            "10.96.0.11,tcp:80"
        } else {
            "fd00:96::b,tcp:80"
        };
        changed.insert(cluster_ip, entry(cluster_ip, vip));
        let plan = changed.plan(131072);
        let reports = netns
            .enter(move || {
                let mut client = IpsetClient::open().unwrap();
                plan.iter()
                    .map(|(spec, members)| {
                        (
                            spec.name.clone(),
                            sync_set(&mut client, spec, members).unwrap(),
                        )
                    })
                    .collect::<Vec<_>>()
            })
            .unwrap();
        for (name, report) in &reports {
            let changes = report.added + report.deleted;
            if *name == cluster_ip.name(family) {
                assert_eq!((report.added, report.deleted), (1, 1), "{name}");
            } else {
                assert_eq!(changes, 0, "{name}: {report:?}");
            }
            assert!(!report.created && !report.rebuilt);
        }
        let listing = sh(&netns, &format!("ipset list {}", cluster_ip.name(family)));
        assert!(cli_members(&listing).contains(&vip.to_owned()), "{listing}");
        assert!(
            !cli_members(&listing).contains(&old.to_string()),
            "{listing}"
        );
    }
}

#[test]
fn maxelem_change_rebuilds_and_swaps_keeping_references() {
    let Some(netns) = Netns::or_skip("maxelem_change_rebuilds_and_swaps") else {
        return;
    };
    let set = KubeSet::ClusterIp;
    let members: BTreeSet<Entry> = [entry(set, "10.96.0.1,tcp:443")].into();
    let first = set.spec(Family::Inet, 65536);
    let second = set.spec(Family::Inet, 1000);
    // A rule referencing the set: swap keeps it valid, destroy could not.
    let m = members.clone();
    netns
        .enter(move || {
            let mut client = IpsetClient::open().unwrap();
            sync_set(&mut client, &first, &m).unwrap();
        })
        .unwrap();
    sh(
        &netns,
        "iptables-legacy -A INPUT -m set --match-set KUBE-CLUSTER-IP dst,dst -j ACCEPT",
    );
    let report = netns
        .enter(move || {
            let mut client = IpsetClient::open().unwrap();
            sync_set(&mut client, &second, &members).unwrap()
        })
        .unwrap();
    assert!(report.rebuilt, "{report:?}");
    let listing = sh(&netns, "ipset list KUBE-CLUSTER-IP");
    assert!(
        cli_field(&listing, "Header").contains("maxelem 1000"),
        "{listing}"
    );
    assert_eq!(cli_field(&listing, "References"), "1");
    assert_eq!(cli_members(&listing), vec!["10.96.0.1,tcp:443".to_owned()]);
    assert_eq!(sh(&netns, "ipset list -n"), "KUBE-CLUSTER-IP\n");
}

#[test]
fn flush_swap_destroy_and_kernel_errors_name_the_set() {
    let Some(netns) = Netns::or_skip("flush_swap_destroy_and_kernel_errors") else {
        return;
    };
    let results = netns
        .enter(|| {
            let mut c = IpsetClient::open().unwrap();
            let a = SetSpec::new("A", SetType::HashIp, Family::Inet);
            let b = SetSpec::new("B", SetType::HashIp, Family::Inet);
            let ip = |s: &str| Entry::parse(SetType::HashIp, s).unwrap();
            c.apply(&[
                Op::Create {
                    spec: a.clone(),
                    exist_ok: false,
                },
                Op::Create {
                    spec: b,
                    exist_ok: false,
                },
                Op::Add {
                    set: "A".into(),
                    entry: ip("10.0.0.1"),
                    comment: None,
                    exist_ok: false,
                },
                Op::Add {
                    set: "B".into(),
                    entry: ip("10.0.0.2"),
                    comment: None,
                    exist_ok: false,
                },
                Op::Swap("A".into(), "B".into()),
            ])
            .unwrap();
            let a_members = c.get("A").unwrap().unwrap().members;
            // Per-op results from one batch: duplicates and missing sets fail
            // individually, naming set and member.
            let batch = c
                .batch(&[
                    Op::Add {
                        set: "A".into(),
                        entry: ip("10.0.0.2"),
                        comment: None,
                        exist_ok: false,
                    },
                    Op::Add {
                        set: "A".into(),
                        entry: ip("10.0.0.2"),
                        comment: None,
                        exist_ok: true,
                    },
                    Op::Add {
                        set: "NOPE".into(),
                        entry: ip("10.0.0.3"),
                        comment: None,
                        exist_ok: true,
                    },
                    Op::Del {
                        set: "A".into(),
                        entry: ip("10.9.9.9"),
                        missing_ok: true,
                    },
                    Op::Add {
                        set: "A".into(),
                        entry: ip("fd00::1"),
                        comment: None,
                        exist_ok: true,
                    },
                    Op::Create {
                        spec: SetSpec::new("A", SetType::HashIpPort, Family::Inet),
                        exist_ok: true,
                    },
                ])
                .unwrap();
            c.apply(&[Op::Flush("A".into())]).unwrap();
            let flushed = c.get("A").unwrap().unwrap().members.len();
            c.apply(&[Op::Destroy("A".into()), Op::Destroy("B".into())])
                .unwrap();
            let gone = c.get("A").unwrap();
            // Destroying a missing set is acknowledged by current kernels;
            // flushing one is not.
            c.destroy_if_exists("A").unwrap();
            let missing = c.apply(&[Op::Flush("A".into())]).unwrap_err();
            (a_members, batch, flushed, gone, missing)
        })
        .unwrap();
    let (a_members, batch, flushed, gone, missing) = results;
    assert_eq!(a_members[0].entry.to_string(), "10.0.0.2");
    let msgs: Vec<String> = batch
        .iter()
        .map(|r| {
            r.as_ref()
                .err()
                .map(ToString::to_string)
                .unwrap_or_default()
        })
        .collect();
    assert!(
        msgs[0].contains("ipset A: add 10.0.0.2") && msgs[0].contains("already"),
        "{msgs:?}"
    );
    assert_eq!(msgs[1], "");
    assert!(
        msgs[2].contains("ipset NOPE") && msgs[2].contains("does not exist"),
        "{msgs:?}"
    );
    assert_eq!(msgs[3], "");
    assert!(msgs[4].contains("ipset A: add fd00::1"), "{msgs:?}");
    assert!(msgs[5].contains("ipset A: create"), "{msgs:?}");
    assert_eq!(flushed, 0);
    assert!(gone.is_none());
    assert!(matches!(missing, IpsetError::Kernel { code: 2, .. }));
}

#[test]
fn large_batches_go_in_few_sendmsgs_and_list_back() {
    let Some(netns) = Netns::or_skip("large_batches_go_in_few_sendmsgs") else {
        return;
    };
    let count = netns
        .enter(|| {
            let mut c = IpsetClient::open().unwrap();
            let spec = KubeSet::ClusterIp.spec(Family::Inet, 65536);
            let members: BTreeSet<Entry> = (0..20_000u32)
                .map(|i| {
                    let ip = std::net::Ipv4Addr::from(0x0a60_0000 + i);
                    Entry::IpPort(ip.into(), rvs_netfilter::ipset::Proto::TCP, 80)
                })
                .collect();
            sync_set(&mut c, &spec, &members).unwrap();
            let listed = c.get(&spec.name).unwrap().unwrap();
            assert_eq!(
                listed
                    .members
                    .iter()
                    .map(|m| m.entry)
                    .collect::<BTreeSet<_>>(),
                members
            );
            listed.members.len()
        })
        .unwrap();
    assert_eq!(count, 20_000);
    let cli = sh(&netns, "ipset list KUBE-CLUSTER-IP | grep -c ,tcp:80");
    assert_eq!(cli.trim(), "20000");
}

/// Sets made by the ipset CLI, as the kernel dumps them to us.
const CLI_SETUP: &str = "
ipset create A hash:ip,port family inet hashsize 1024 maxelem 65536
ipset create B hash:ip,port,ip family inet6 hashsize 1024 maxelem 65536
ipset create C hash:ip,port,net family inet hashsize 1024 maxelem 65536
ipset create D hash:ip family inet hashsize 1024 maxelem 65536
ipset create E hash:net family inet
ipset create F bitmap:port range 0-65535
ipset create G hash:ip,port comment
ipset add A 10.0.0.1,tcp:80
ipset add A 10.0.0.2,udp:53
ipset add B fd00::1,udp:53,fd00::2
ipset add C 1.2.3.4,tcp:80,10.0.0.0/8
ipset add C 1.2.3.4,tcp:81,10.0.0.1
ipset add D 10.1.1.1
ipset add E 10.0.0.0/16
ipset add F 30080
ipset add F 30081
ipset add G 1.1.1.1,sctp:5 comment \"hi there\"
";

#[test]
fn kernel_dumps_of_cli_made_sets_parse_and_re_emit_identically() {
    let Some(netns) = Netns::or_skip("kernel_dumps_of_cli_made_sets") else {
        return;
    };
    sh(&netns, CLI_SETUP);
    let (recorded, sets) = netns
        .enter(|| {
            let mut c = IpsetClient::open().unwrap();
            c.record();
            let sets = c.list(None).unwrap();
            (c.take_recorded(), sets)
        })
        .unwrap();
    for buf in &recorded {
        let parsed = parse_buffer(buf).unwrap();
        assert_eq!(&emit_buffer(&parsed), buf);
    }
    // Our typed members are what the CLI lists.
    for set in &sets {
        let listing = sh(&netns, &format!("ipset list {}", set.name));
        let mut ours: Vec<String> = set
            .members
            .iter()
            .map(|m| match &m.comment {
                Some(c) => format!("{} comment \"{c}\"", m.entry),
                None => m.entry.to_string(),
            })
            .collect();
        ours.sort();
        assert_eq!(ours, cli_members(&listing), "{}", set.name);
        assert_eq!(cli_field(&listing, "Revision"), set.revision.to_string());
    }
    assert_eq!(sets.len(), 7);
    if std::env::var("RVS_RECORD_FIXTURES").as_deref() == Ok("1") {
        rvs_testrig::fixtures::write_hex(
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/fixtures/ipset_list_dump.hex"
            ),
            "`ipset list` dump replies from Linux (host kernel, fresh netns) for the sets\n\
             made by CLI_SETUP in tests/ipset_netns.rs; one received buffer per line, hex.",
            &recorded,
        )
        .unwrap();
    }
}
