//! The rule set loaded into fresh network namespaces with both iptables
//! backends (legacy and nft) and both families: rules load next to a
//! foreign chain, `iptables-save` shows them, a second apply changes
//! nothing, a VIP port that is no service is rejected while a service
//! port is not, and `--cleanup` removes our chains and jumps but leaves
//! the foreign chain intact (after which the ipsets can be destroyed).
//!
//! The KUBE-IPVS-OUT-FILTER DROP rules use `-m ipvs`, which needs the
//! kernel's IPVS; the host has none, so they are covered by the golden
//! tests only.

#![allow(clippy::unwrap_used)] // test code

mod common;

use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use common::sh;
use rvs_netfilter::ipset::kube::destroy_all;
use rvs_netfilter::ipset::sync::sync_set;
use rvs_netfilter::ipset::{Entry, Family, IpsetClient, KubeSet, KubeSets};
use rvs_netfilter::iptables::{Backend, Iptables, LocalDetect, RulesConfig, Table, render};
use rvs_testrig::Netns;

fn sets(family: Family) -> (KubeSets, IpAddr) {
    let mut s = KubeSets::new(family);
    let (vip, ep, lb, node, cidr) = match family {
        Family::Inet => (
            "10.96.0.10",
            "10.244.1.5",
            "192.0.2.10",
            "172.18.0.2",
            "203.0.113.0/24",
        ),
        Family::Inet6 => (
            "fd00:96::a",
            "fd00:244::5",
            "2001:db8::10",
            "fc00:18::2",
            "2001:db8:1::/64",
        ),
    };
    let mut add =
        |set: KubeSet, e: String| s.insert(set, Entry::parse(set.set_type(), &e).unwrap());
    add(KubeSet::ClusterIp, format!("{vip},tcp:53"));
    add(KubeSet::LoopBack, format!("{ep},tcp:8080,{ep}"));
    add(KubeSet::ExternalIp, format!("{lb},tcp:80"));
    add(KubeSet::ExternalIpLocal, format!("{lb},tcp:81"));
    add(KubeSet::LoadBalancer, format!("{lb},tcp:443"));
    add(KubeSet::LoadBalancerFw, format!("{lb},tcp:443"));
    add(KubeSet::LoadBalancerLocal, format!("{lb},tcp:443"));
    add(
        KubeSet::LoadBalancerSourceCidr,
        format!("{lb},tcp:443,{cidr}"),
    );
    add(KubeSet::LoadBalancerSourceIp, format!("{lb},tcp:443,{lb}"));
    add(KubeSet::NodePortTcp, "30080".into());
    add(KubeSet::NodePortLocalTcp, "30081".into());
    add(KubeSet::NodePortUdp, "30053".into());
    add(KubeSet::NodePortLocalUdp, "30054".into());
    add(KubeSet::NodePortSctp, format!("{node},sctp:30099"));
    add(KubeSet::NodePortLocalSctp, format!("{node},sctp:30098"));
    add(KubeSet::HealthCheckNodePort, "32000".into());
    add(KubeSet::IpvsIps, vip.to_owned());
    (s, vip.parse().unwrap())
}

/// `iptables-save` of both tables without comments and counters.
fn saved(netns: &Netns, ipt: &Iptables) -> String {
    let ipt = ipt.clone();
    let text = netns
        .enter(move || {
            Table::ALL
                .iter()
                .map(|t| ipt.save(*t).unwrap())
                .collect::<String>()
        })
        .unwrap();
    let _ = netns;
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| match l.rsplit_once(" [") {
            Some((head, _)) if l.starts_with(':') => format!("{head} [0:0]"),
            _ => l.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn rules_in<'a>(save: &'a str, chain: &str) -> Vec<&'a str> {
    let prefix = format!("-A {chain} ");
    save.lines().filter(|l| l.starts_with(&prefix)).collect()
}

fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    TcpStream::connect_timeout(&addr, Duration::from_secs(2))
}

fn exercise(backend: Backend, family: Family) {
    let test = format!("iptables {backend:?} {family:?}");
    let Some(netns) = Netns::or_skip(&test) else {
        return;
    };
    let ipt = Iptables::new(backend, family);
    let tool = match (backend, family) {
        (Backend::Legacy, Family::Inet) => "iptables-legacy",
        (Backend::Legacy, Family::Inet6) => "ip6tables-legacy",
        (_, Family::Inet) => "iptables-nft",
        (_, Family::Inet6) => "ip6tables-nft",
    };
    let (desired, vip) = sets(family);
    // The VIP as kube-proxy binds it to kube-ipvs0; the host kernel has
    // no dummy driver, so it goes on lo here.
    let prefix = if family == Family::Inet { 32 } else { 128 };
    sh(
        &netns,
        &format!(
            "ip addr add {vip}/{prefix} dev lo
             {tool} -N FOREIGN && {tool} -A FOREIGN -p tcp --dport 2222 -j ACCEPT && {tool} -A INPUT -j FOREIGN
             {tool} -t nat -N FOREIGN-NAT && {tool} -t nat -A FOREIGN-NAT -p tcp --dport 2222 -j RETURN
             {tool} -t nat -A PREROUTING -j FOREIGN-NAT"
        ),
    );
    let before = saved(&netns, &ipt);

    // Sets first (the rules name them), then one restore per table.
    let cfg = RulesConfig {
        local_detect: LocalDetect::Cidr(if family == Family::Inet {
            "10.244.0.0/16".parse().unwrap()
        } else {
            "fd00:244::/64".parse().unwrap()
        }),
        ..RulesConfig::default()
    };
    let rules = render(&desired, &cfg).unwrap();
    let (r, i, d) = (rules.clone(), ipt.clone(), desired.clone());
    netns
        .enter(move || {
            let mut client = IpsetClient::open().unwrap();
            for (spec, members) in d.plan(65536) {
                sync_set(&mut client, &spec, &members).unwrap();
            }
            i.apply(&r).unwrap();
        })
        .unwrap();
    let first = saved(&netns, &ipt);
    for table in Table::ALL {
        for chain in &rules.table(table).chains {
            let want = rules
                .table(table)
                .rules
                .iter()
                .filter(|l| l.starts_with(&format!("-A {chain} ")))
                .count();
            let section: String = first
                .split(&format!("*{}", table.name()))
                .nth(1)
                .unwrap()
                .split("COMMIT")
                .next()
                .unwrap()
                .to_owned();
            assert!(
                section.contains(&format!(":{chain} - [0:0]")),
                "{test}: {chain}\n{first}"
            );
            assert_eq!(
                rules_in(&section, chain).len(),
                want,
                "{test}: {chain}\n{first}"
            );
        }
    }
    assert!(first.contains("--match-set KUBE-") || first.contains("--match-set KUBE-6-"));
    assert!(
        first.contains(&format!(
            "-A KUBE-IPVS-FILTER -m conntrack --ctstate NEW -m set --match-set {} dst -j REJECT",
            KubeSet::IpvsIps.name(family)
        )),
        "{test}\n{first}"
    );
    // Our jumps come first in the built-in chains, each exactly once, in
    // kube-proxy's order; the foreign jump follows.
    let input = rules_in(&first, "INPUT");
    let targets: Vec<&str> = input
        .iter()
        .map(|l| l.rsplit(' ').next().unwrap())
        .collect();
    assert_eq!(
        targets,
        [
            "KUBE-IPVS-FILTER",
            "KUBE-PROXY-FIREWALL",
            "KUBE-NODE-PORT",
            "FOREIGN"
        ],
        "{test}\n{first}"
    );
    assert_eq!(rules_in(&first, "PREROUTING").len(), 2, "{first}");
    assert_eq!(rules_in(&first, "OUTPUT").len(), 2, "{first}"); // nat + filter

    // A second apply changes nothing.
    let (r, i) = (rules.clone(), ipt.clone());
    netns.enter(move || i.apply(&r).unwrap()).unwrap();
    assert_eq!(
        saved(&netns, &ipt),
        first,
        "{test}: second apply changed the tables"
    );

    // REJECT of non-service ports on VIPs (kube-proxy #72236): a
    // listener on a VIP port that is no service is refused, a service
    // port is reachable.
    let (refused, served) = netns
        .enter(move || {
            let other = TcpListener::bind(SocketAddr::new(vip, 9999)).unwrap();
            let service = TcpListener::bind(SocketAddr::new(vip, 53)).unwrap();
            let refused = connect(other.local_addr().unwrap()).map(drop);
            let served = connect(service.local_addr().unwrap()).map(drop);
            (refused, served)
        })
        .unwrap();
    assert_eq!(
        refused.unwrap_err().kind(),
        std::io::ErrorKind::ConnectionRefused,
        "{test}"
    );
    served.unwrap();

    // Cleanup: our jumps and chains go, the foreign ones stay as they
    // were; then nothing references the sets any more.
    let i = ipt.clone();
    let kept = netns.enter(move || i.cleanup().unwrap()).unwrap();
    assert!(kept.is_empty(), "{kept:?}");
    let after = saved(&netns, &ipt);
    assert!(!after.contains("KUBE-"), "{test}\n{after}");
    assert_eq!(after, before, "{test}: cleanup changed foreign rules");
    netns
        .enter(move || {
            let mut client = IpsetClient::open().unwrap();
            client
                .apply(&[rvs_netfilter::ipset::Op::Create {
                    spec: rvs_netfilter::ipset::SetSpec::new(
                        "FOREIGN-SET",
                        rvs_netfilter::ipset::SetType::HashIp,
                        family,
                    ),
                    exist_ok: false,
                }])
                .unwrap();
            destroy_all(&mut client, family).unwrap();
            let left: Vec<String> = client
                .list(None)
                .unwrap()
                .into_iter()
                .map(|s| s.name)
                .collect();
            assert_eq!(left, ["FOREIGN-SET"]);
        })
        .unwrap();
}

#[test]
fn legacy_ipv4() {
    exercise(Backend::Legacy, Family::Inet);
}

#[test]
fn legacy_ipv6() {
    exercise(Backend::Legacy, Family::Inet6);
}

#[test]
fn nft_ipv4() {
    exercise(Backend::Nft, Family::Inet);
}

#[test]
fn nft_ipv6() {
    exercise(Backend::Nft, Family::Inet6);
}
