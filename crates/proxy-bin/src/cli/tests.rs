//! The command line parses kube-proxy's flags and values.

use rvs_model::Scheduler;

use super::*;

#[test]
fn go_durations_parse() {
    assert_eq!(parse_go_duration("30s"), Ok(Duration::from_secs(30)));
    assert_eq!(parse_go_duration("1m30s"), Ok(Duration::from_secs(90)));
    assert_eq!(parse_go_duration("250ms"), Ok(Duration::from_millis(250)));
    assert_eq!(parse_go_duration("0"), Ok(Duration::ZERO));
    assert!(parse_go_duration("30").is_err());
    assert!(parse_go_duration("5 minutes").is_err());
    assert!(parse_go_duration("").is_err());
}

#[test]
fn kube_proxy_flags_parse() {
    let cli = Cli::try_parse_from([
        "rvs-proxy",
        "--proxy-mode=ipvs",
        "--ipvs-scheduler=wlc",
        "--ipvs-sync-period=1m",
        "--ipvs-exclude-cidrs=10.0.0.0/8,fd00::/8",
        "--hostname-override=node-a",
        "--v=2",
    ])
    .unwrap();
    assert_eq!(
        cli.proxy_config().unwrap().scheduler,
        Scheduler::WeightedLeastConnection
    );
    assert_eq!(cli.ipvs_sync_period, Duration::from_secs(60));
    assert_eq!(cli.ipvs_exclude_cidrs.len(), 2);
    assert_eq!(cli.verbosity, 2);
    let bad = Cli::try_parse_from(["rvs-proxy", "--ipvs-exclude-cidrs=10.0.0.0"]).unwrap_err();
    assert!(bad.to_string().contains("is not a CIDR"), "{bad}");
    let cli = Cli::try_parse_from(["rvs-proxy", "--ipvs-scheduler=fastest"]).unwrap();
    assert!(
        cli.proxy_config()
            .unwrap_err()
            .to_string()
            .contains("unknown IPVS scheduler \"fastest\"")
    );
}

#[test]
fn netfilter_flags_parse() {
    let cli = Cli::try_parse_from(["rvs-proxy"]).unwrap();
    assert_eq!(cli.iptables_masquerade_bit, 14);
    assert_eq!(cli.ipset_maxelem, 65536);
    assert!(!cli.masquerade_all && !cli.ipvs_strict_arp);
    assert_eq!(
        cli.node_options()
            .map(|o| o.netfilter.local_detect)
            .unwrap(),
        [LocalDetect::None, LocalDetect::None]
    );
    let cli = Cli::try_parse_from([
        "rvs-proxy",
        "--masquerade-all",
        "--cluster-cidr=10.244.0.0/16,fd00:244::/56",
        "--iptables-masquerade-bit=3",
        "--ipvs-strict-arp",
        "--ipset-maxelem=1000000",
        "--iptables-backend=legacy",
    ])
    .unwrap();
    assert!(cli.masquerade_all && cli.ipvs_strict_arp);
    assert_eq!(cli.iptables_masquerade_bit, 3);
    assert_eq!(cli.ipset_maxelem, 1_000_000);
    assert_eq!(cli.backend(), Backend::Legacy);
    assert_eq!(
        cli.node_options()
            .map(|o| o.netfilter.local_detect)
            .unwrap(),
        [
            LocalDetect::Cidr("10.244.0.0/16".parse().unwrap()),
            LocalDetect::Cidr("fd00:244::/56".parse().unwrap())
        ]
    );
    assert!(Cli::try_parse_from(["rvs-proxy", "--iptables-masquerade-bit=32"]).is_err());
    assert!(Cli::try_parse_from(["rvs-proxy", "--ipset-maxelem=0"]).is_err());
    let two_v4 =
        Cli::try_parse_from(["rvs-proxy", "--cluster-cidr=10.0.0.0/8,10.1.0.0/16"]).unwrap();
    assert!(
        two_v4
            .node_options()
            .map(|o| o.netfilter.local_detect)
            .is_err()
    );
    let bridge = Cli::try_parse_from([
        "rvs-proxy",
        "--detect-local-mode=BridgeInterface",
        "--pod-bridge-interface=cbr0",
    ])
    .unwrap();
    assert_eq!(
        bridge
            .node_options()
            .map(|o| o.netfilter.local_detect)
            .unwrap()[1],
        LocalDetect::BridgeInterface("cbr0".into())
    );
    let missing =
        Cli::try_parse_from(["rvs-proxy", "--detect-local-mode=InterfaceNamePrefix"]).unwrap();
    assert!(
        missing
            .node_options()
            .map(|o| o.netfilter.local_detect)
            .is_err()
    );
}

#[test]
fn timeouts_are_set_only_when_asked() {
    let cli = Cli::try_parse_from(["rvs-proxy"]).unwrap();
    assert_eq!(cli.timeouts().unwrap(), None);
    let cli = Cli::try_parse_from([
        "rvs-proxy",
        "--ipvs-tcpfin-timeout=1m",
        "--ipvs-udp-timeout=5s",
    ])
    .unwrap();
    assert_eq!(
        cli.timeouts().unwrap(),
        Some(Timeouts {
            tcp: 0,
            tcp_fin: 60,
            udp: 5
        })
    );
    let long = Cli::try_parse_from(["rvs-proxy", "--ipvs-tcp-timeout=2000000h"]).unwrap();
    assert!(
        long.timeouts()
            .unwrap_err()
            .to_string()
            .contains("--ipvs-tcp-timeout")
    );
}
