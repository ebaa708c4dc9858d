//! The rendered rule set compared, line for line, with the rules
//! kube-proxy's IPVS mode (1.30+, `writeIptablesRules`) writes for the
//! same sets and options. The expected texts are written out by hand
//! from kube-proxy's rule table; order matters (it is iptables order).

#![allow(clippy::unwrap_used)] // test code

use rvs_netfilter::ipset::{Entry, Family, KubeSet, KubeSets};
use rvs_netfilter::iptables::restore::{cleanup_text, jump_fixups};
use rvs_netfilter::iptables::{LocalDetect, RulesConfig, Table, render};

fn sets_with_everything() -> KubeSets {
    let mut s = KubeSets::new(Family::Inet);
    for set in KubeSet::ALL {
        let e = match set.set_type() {
            rvs_netfilter::ipset::SetType::BitmapPort => "30080",
            rvs_netfilter::ipset::SetType::HashIp => "10.96.0.1",
            rvs_netfilter::ipset::SetType::HashIpPortIp => "10.244.0.5,tcp:80,10.244.0.5",
            rvs_netfilter::ipset::SetType::HashIpPortNet => "192.0.2.1,tcp:80,203.0.113.0/24",
            _ => "10.96.0.1,tcp:80",
        };
        s.insert(set, Entry::parse(set.set_type(), e).unwrap());
    }
    s.lb_no_node_access
        .insert(Entry::parse(KubeSet::LoadBalancer.set_type(), "192.0.2.1,tcp:80").unwrap());
    s
}

const NAT_FULL: &str = r#"*nat
:KUBE-SERVICES - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-NODE-PORT - [0:0]
:KUBE-LOAD-BALANCER - [0:0]
:KUBE-MARK-MASQ - [0:0]
-A KUBE-SERVICES -s 127.0.0.0/8 -j RETURN
-A KUBE-POSTROUTING -m comment --comment "Kubernetes endpoints dst ip:port, source ip for solving hairpin purpose" -m set --match-set KUBE-LOOP-BACK dst,dst,src -j MASQUERADE
-A KUBE-SERVICES -m comment --comment "Kubernetes service lb portal" -m set --match-set KUBE-LOAD-BALANCER dst,dst -j KUBE-LOAD-BALANCER
-A KUBE-LOAD-BALANCER -m comment --comment "Kubernetes service load balancer ip + port with externalTrafficPolicy=local" -m set --match-set KUBE-LOAD-BALANCER-LOCAL dst,dst -j RETURN
-A KUBE-NODE-PORT -p tcp -m comment --comment "Kubernetes nodeport TCP port with externalTrafficPolicy=local" -m set --match-set KUBE-NODE-PORT-LOCAL-TCP dst -j RETURN
-A KUBE-NODE-PORT -p tcp -m comment --comment "Kubernetes nodeport TCP port for masquerade purpose" -m set --match-set KUBE-NODE-PORT-TCP dst -j KUBE-MARK-MASQ
-A KUBE-NODE-PORT -p udp -m comment --comment "Kubernetes nodeport UDP port with externalTrafficPolicy=local" -m set --match-set KUBE-NODE-PORT-LOCAL-UDP dst -j RETURN
-A KUBE-NODE-PORT -p udp -m comment --comment "Kubernetes nodeport UDP port for masquerade purpose" -m set --match-set KUBE-NODE-PORT-UDP dst -j KUBE-MARK-MASQ
-A KUBE-NODE-PORT -p sctp -m comment --comment "Kubernetes nodeport SCTP port with externalTrafficPolicy=local with type 'hash ip:port'" -m set --match-set KUBE-NODE-PORT-LOCAL-SCTP-HASH dst,dst -j RETURN
-A KUBE-NODE-PORT -p sctp -m comment --comment "Kubernetes nodeport SCTP port for masquerade purpose with type 'hash ip:port'" -m set --match-set KUBE-NODE-PORT-SCTP-HASH dst,dst -j KUBE-MARK-MASQ
-A KUBE-SERVICES -m comment --comment "Kubernetes service cluster ip + port for masquerade purpose" -m set --match-set KUBE-CLUSTER-IP dst,dst ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ
-A KUBE-SERVICES -m comment --comment "Kubernetes service external ip + port for masquerade and filter purpose" -m set --match-set KUBE-EXTERNAL-IP dst,dst -j KUBE-MARK-MASQ
-A KUBE-SERVICES -m comment --comment "Kubernetes service external ip + port for masquerade and filter purpose" -m set --match-set KUBE-EXTERNAL-IP dst,dst -m physdev ! --physdev-is-in -m addrtype ! --src-type LOCAL -j ACCEPT
-A KUBE-SERVICES -m comment --comment "Kubernetes service external ip + port for masquerade and filter purpose" -m set --match-set KUBE-EXTERNAL-IP dst,dst -m addrtype --dst-type LOCAL -j ACCEPT
-A KUBE-SERVICES -m comment --comment "Kubernetes service external ip + port with externalTrafficPolicy=local" -m set --match-set KUBE-EXTERNAL-IP-LOCAL dst,dst -m physdev ! --physdev-is-in -m addrtype ! --src-type LOCAL -j ACCEPT
-A KUBE-SERVICES -m comment --comment "Kubernetes service external ip + port with externalTrafficPolicy=local" -m set --match-set KUBE-EXTERNAL-IP-LOCAL dst,dst -m addrtype --dst-type LOCAL -j ACCEPT
-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODE-PORT
-A KUBE-LOAD-BALANCER -j KUBE-MARK-MASQ
-A KUBE-SERVICES -m set --match-set KUBE-CLUSTER-IP dst,dst -j ACCEPT
-A KUBE-SERVICES -m set --match-set KUBE-LOAD-BALANCER dst,dst -j ACCEPT
-A KUBE-POSTROUTING -m mark ! --mark 0x00004000/0x00004000 -j RETURN
-A KUBE-POSTROUTING -j MARK --xor-mark 0x00004000
-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully
-A KUBE-MARK-MASQ -j MARK --or-mark 0x00004000
COMMIT
"#;

const FILTER_FULL: &str = r#"*filter
:KUBE-FORWARD - [0:0]
:KUBE-NODE-PORT - [0:0]
:KUBE-PROXY-FIREWALL - [0:0]
:KUBE-SOURCE-RANGES-FIREWALL - [0:0]
:KUBE-IPVS-FILTER - [0:0]
:KUBE-IPVS-OUT-FILTER - [0:0]
-A KUBE-PROXY-FIREWALL -m comment --comment "Kubernetes service load balancer ip + port for load balancer with sourceRange" -m set --match-set KUBE-LOAD-BALANCER-FW dst,dst -j KUBE-SOURCE-RANGES-FIREWALL
-A KUBE-SOURCE-RANGES-FIREWALL -m comment --comment "Kubernetes service load balancer ip + port + source cidr for packet filter purpose" -m set --match-set KUBE-LOAD-BALANCER-SOURCE-CIDR dst,dst,src -j RETURN
-A KUBE-SOURCE-RANGES-FIREWALL -m comment --comment "Kubernetes service load balancer ip + port + source IP for packet filter purpose" -m set --match-set KUBE-LOAD-BALANCER-SOURCE-IP dst,dst,src -j RETURN
-A KUBE-SOURCE-RANGES-FIREWALL -j DROP
-A KUBE-IPVS-OUT-FILTER -s 192.0.2.1 -m ipvs --vaddr 192.0.2.1 --vproto tcp --vport 80 -j DROP
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x00004000/0x00004000 -j ACCEPT
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A KUBE-NODE-PORT -m comment --comment "Kubernetes health check node port" -m set --match-set KUBE-HEALTH-CHECK-NODE-PORT dst -j ACCEPT
-A KUBE-IPVS-FILTER -m set --match-set KUBE-LOAD-BALANCER dst,dst -j RETURN
-A KUBE-IPVS-FILTER -m set --match-set KUBE-CLUSTER-IP dst,dst -j RETURN
-A KUBE-IPVS-FILTER -m set --match-set KUBE-EXTERNAL-IP dst,dst -j RETURN
-A KUBE-IPVS-FILTER -m set --match-set KUBE-EXTERNAL-IP-LOCAL dst,dst -j RETURN
-A KUBE-IPVS-FILTER -m set --match-set KUBE-HEALTH-CHECK-NODE-PORT dst -j RETURN
-A KUBE-IPVS-FILTER -m conntrack --ctstate NEW -m set --match-set KUBE-IPVS-IPS dst -j REJECT
COMMIT
"#;

#[test]
fn everything_on_matches_kube_proxy_line_for_line() {
    let cfg = RulesConfig {
        local_detect: LocalDetect::Cidr("10.244.0.0/16".parse().unwrap()),
        ..RulesConfig::default()
    };
    let rules = render(&sets_with_everything(), &cfg).unwrap();
    assert_eq!(rules.restore_text(Table::Nat, &[]), NAT_FULL);
    assert_eq!(rules.restore_text(Table::Filter, &[]), FILTER_FULL);
}

/// No services yet, no --cluster-cidr, IPv6: only the fixed rules.
const NAT_EMPTY_V6: &str = r#"*nat
:KUBE-SERVICES - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-NODE-PORT - [0:0]
:KUBE-LOAD-BALANCER - [0:0]
:KUBE-MARK-MASQ - [0:0]
-A KUBE-SERVICES -s ::1/128 -j RETURN
-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODE-PORT
-A KUBE-LOAD-BALANCER -j KUBE-MARK-MASQ
-A KUBE-POSTROUTING -m mark ! --mark 0x00004000/0x00004000 -j RETURN
-A KUBE-POSTROUTING -j MARK --xor-mark 0x00004000
-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully
-A KUBE-MARK-MASQ -j MARK --or-mark 0x00004000
COMMIT
"#;

const FILTER_EMPTY_V6: &str = r#"*filter
:KUBE-FORWARD - [0:0]
:KUBE-NODE-PORT - [0:0]
:KUBE-PROXY-FIREWALL - [0:0]
:KUBE-SOURCE-RANGES-FIREWALL - [0:0]
:KUBE-IPVS-FILTER - [0:0]
:KUBE-IPVS-OUT-FILTER - [0:0]
-A KUBE-SOURCE-RANGES-FIREWALL -j DROP
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x00004000/0x00004000 -j ACCEPT
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A KUBE-NODE-PORT -m comment --comment "Kubernetes health check node port" -m set --match-set KUBE-6-HEALTH-CHECK-NODE-PORT dst -j ACCEPT
-A KUBE-IPVS-FILTER -m set --match-set KUBE-6-LOAD-BALANCER dst,dst -j RETURN
-A KUBE-IPVS-FILTER -m set --match-set KUBE-6-CLUSTER-IP dst,dst -j RETURN
-A KUBE-IPVS-FILTER -m set --match-set KUBE-6-EXTERNAL-IP dst,dst -j RETURN
-A KUBE-IPVS-FILTER -m set --match-set KUBE-6-EXTERNAL-IP-LOCAL dst,dst -j RETURN
-A KUBE-IPVS-FILTER -m set --match-set KUBE-6-HEALTH-CHECK-NODE-PORT dst -j RETURN
-A KUBE-IPVS-FILTER -m conntrack --ctstate NEW -m set --match-set KUBE-6-IPVS-IPS dst -j REJECT
COMMIT
"#;

#[test]
fn no_services_ipv6_writes_only_the_fixed_rules() {
    let rules = render(&KubeSets::new(Family::Inet6), &RulesConfig::default()).unwrap();
    assert_eq!(rules.restore_text(Table::Nat, &[]), NAT_EMPTY_V6);
    assert_eq!(rules.restore_text(Table::Filter, &[]), FILTER_EMPTY_V6);
}

fn cluster_ip_rule(cfg: &RulesConfig) -> String {
    let mut sets = KubeSets::new(Family::Inet);
    sets.insert(
        KubeSet::ClusterIp,
        Entry::parse(KubeSet::ClusterIp.set_type(), "10.96.0.1,tcp:443").unwrap(),
    );
    let rules = render(&sets, cfg).unwrap();
    rules
        .nat
        .rules
        .iter()
        .find(|r| r.contains("KUBE-CLUSTER-IP") && r.ends_with("KUBE-MARK-MASQ"))
        .unwrap()
        .clone()
}

#[test]
fn cluster_ip_masquerade_follows_masquerade_all_and_local_detection() {
    let prefix = "-A KUBE-SERVICES -m comment --comment \"Kubernetes service cluster ip + port for masquerade purpose\" -m set --match-set KUBE-CLUSTER-IP";
    let cases = [
        (
            RulesConfig {
                masquerade_all: true,
                ..RulesConfig::default()
            },
            " dst,dst -j KUBE-MARK-MASQ",
        ),
        (RulesConfig::default(), " src,dst -j KUBE-MARK-MASQ"),
        (
            RulesConfig {
                local_detect: LocalDetect::BridgeInterface("cbr0".into()),
                ..RulesConfig::default()
            },
            " dst,dst ! -i cbr0 -j KUBE-MARK-MASQ",
        ),
        (
            RulesConfig {
                local_detect: LocalDetect::InterfaceNamePrefix("veth".into()),
                ..RulesConfig::default()
            },
            " dst,dst ! -i veth+ -j KUBE-MARK-MASQ",
        ),
    ];
    for (cfg, suffix) in cases {
        assert_eq!(
            cluster_ip_rule(&cfg),
            format!("{prefix}{suffix}"),
            "{cfg:?}"
        );
    }
}

#[test]
fn masquerade_bit_and_random_fully_shape_the_marks() {
    let cfg = RulesConfig {
        masquerade_bit: 0,
        random_fully: false,
        ..RulesConfig::default()
    };
    let rules = render(&KubeSets::new(Family::Inet), &cfg).unwrap();
    let nat = rules.restore_text(Table::Nat, &[]);
    assert!(
        nat.contains("-A KUBE-MARK-MASQ -j MARK --or-mark 0x00000001\n"),
        "{nat}"
    );
    assert!(nat.contains("-j MASQUERADE\n"), "{nat}");
    let cfg = RulesConfig {
        masquerade_bit: 31,
        ..RulesConfig::default()
    };
    let nat = render(&KubeSets::new(Family::Inet), &cfg)
        .unwrap()
        .restore_text(Table::Nat, &[]);
    assert!(nat.contains("--or-mark 0x80000000\n"), "{nat}");
}

#[test]
fn bad_options_are_errors_naming_the_option() {
    let cfg = RulesConfig {
        masquerade_bit: 32,
        ..RulesConfig::default()
    };
    let err = render(&KubeSets::new(Family::Inet), &cfg)
        .unwrap_err()
        .to_string();
    assert!(err.contains("masquerade_bit"), "{err}");
    let cfg = RulesConfig {
        local_detect: LocalDetect::Cidr("10.0.0.0/8".parse().unwrap()),
        ..RulesConfig::default()
    };
    let err = render(&KubeSets::new(Family::Inet6), &cfg)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("local_detect") && err.contains("inet6"),
        "{err}"
    );
    let cfg = RulesConfig {
        local_detect: LocalDetect::BridgeInterface("a name with spaces".into()),
        ..RulesConfig::default()
    };
    assert!(render(&KubeSets::new(Family::Inet), &cfg).is_err());
}

const SAVE: &str = "# Generated by iptables-save
*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:FOREIGN - [0:0]
:KUBE-FORWARD - [0:0]
:KUBE-NODE-PORT - [0:0]
-A INPUT -m comment --comment \"kubernetes health check rules\" -j KUBE-NODE-PORT
-A INPUT -m comment --comment \"kubernetes health check rules\" -j KUBE-NODE-PORT
-A INPUT -j FOREIGN
-A FORWARD -m comment --comment \"kubernetes forwarding rules\" -j KUBE-FORWARD
-A FOREIGN -j ACCEPT
-A FOREIGN -j KUBE-FORWARD
COMMIT
";

#[test]
fn jump_fixups_insert_missing_jumps_and_drop_duplicates() {
    assert_eq!(
        jump_fixups(SAVE, Table::Filter),
        vec![
            "-D INPUT -m comment --comment \"kubernetes health check rules\" -j KUBE-NODE-PORT",
            "-I INPUT 1 -m comment --comment \"kube-proxy firewall rules\" -j KUBE-PROXY-FIREWALL",
            "-I FORWARD 1 -m comment --comment \"kube-proxy firewall rules\" -j KUBE-PROXY-FIREWALL",
            "-I INPUT 1 -m comment --comment \"kubernetes ipvs access filter\" -j KUBE-IPVS-FILTER",
            "-I OUTPUT 1 -m comment --comment \"kubernetes ipvs access filter\" -j KUBE-IPVS-OUT-FILTER",
        ]
    );
    assert_eq!(jump_fixups(SAVE, Table::Nat).len(), 3);
}

#[test]
fn cleanup_removes_only_our_jumps_and_chains() {
    let cleanup = cleanup_text(SAVE, Table::Filter);
    // FOREIGN jumps to KUBE-FORWARD: FOREIGN is left as it is, so
    // KUBE-FORWARD is flushed but kept.
    assert_eq!(cleanup.kept, vec!["KUBE-FORWARD".to_owned()]);
    assert_eq!(
        cleanup.text.unwrap(),
        "*filter
:KUBE-FORWARD - [0:0]
:KUBE-NODE-PORT - [0:0]
-D INPUT -m comment --comment \"kubernetes health check rules\" -j KUBE-NODE-PORT
-D INPUT -m comment --comment \"kubernetes health check rules\" -j KUBE-NODE-PORT
-D FORWARD -m comment --comment \"kubernetes forwarding rules\" -j KUBE-FORWARD
-X KUBE-NODE-PORT
COMMIT
"
    );
    assert_eq!(cleanup_text(SAVE, Table::Nat).text, None);
}
