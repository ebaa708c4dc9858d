//! Golden tests: expected texts derived from ipvsadm 1.31's printf
//! formats (generated independently with C printf semantics), fed with
//! hand-written model values.

use std::net::SocketAddr;

use rvs_model::{
    Connection, Daemon, DaemonState, Destination, DestinationStatus, ForwardMethod, Info, Netmask,
    Scheduler, Service, ServiceFlags, ServiceKey, ServiceStatus, Stats, Timeouts, Tunnel,
    TunnelFlags, TunnelType,
};

use super::*;
use crate::cli::fmt;
use crate::names::tests::names;

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn stats5(v: [u64; 5], r: [u64; 5]) -> Stats {
    Stats {
        conns: v[0],
        inpkts: v[1],
        outpkts: v[2],
        inbytes: v[3],
        outbytes: v[4],
        cps: r[0],
        inpps: r[1],
        outpps: r[2],
        inbps: r[3],
        outbps: r[4],
    }
}

#[allow(clippy::too_many_arguments)]
fn dest(
    addr: &str,
    forward: ForwardMethod,
    weight: i32,
    active: u32,
    inactive: u32,
    persistent: u32,
    thresholds: (u32, u32),
    stats: Stats,
) -> DestinationStatus {
    DestinationStatus {
        destination: Destination {
            addr: sa(addr),
            forward,
            weight,
            upper_threshold: thresholds.0,
            lower_threshold: thresholds.1,
            tunnel: Tunnel::default(),
        },
        active_conns: active,
        inactive_conns: inactive,
        persistent_conns: persistent,
        stats,
    }
}

fn tunnel(mut d: DestinationStatus, kind: TunnelType, port: u16, flags: u16) -> DestinationStatus {
    d.destination.tunnel = Tunnel {
        kind,
        port,
        flags: TunnelFlags(flags),
    };
    d
}

fn svc(key: ServiceKey, sched: Scheduler) -> Service {
    Service::new(key, sched)
}

/// The fixture: services (deliberately unsorted) with their destinations.
pub(crate) fn fixture() -> Vec<(ServiceStatus, Vec<DestinationStatus>)> {
    let zero = Stats::default();
    let s1 = ServiceStatus {
        service: svc(ServiceKey::tcp(sa("10.0.0.1:80")), Scheduler::RoundRobin),
        stats: stats5(
            [123_456_789, 5, 0, 1_500_000_000, 250_000_000_000_000],
            [1, 2, 3, 4000, 123_456_789_012],
        ),
    };
    let d1 = vec![
        tunnel(
            dest(
                "10.1.0.6:80",
                ForwardMethod::Tunnel,
                1,
                0,
                0,
                0,
                (0, 0),
                zero,
            ),
            TunnelType::Gue,
            6080,
            TunnelFlags::CSUM,
        ),
        dest(
            "10.1.0.2:8080",
            ForwardMethod::Masquerade,
            1,
            1,
            2,
            4,
            (100, 10),
            stats5([7, 8, 9, 100_000_000, 99_999_999], [1, 1, 1, 1, 1]),
        ),
        dest(
            "10.1.0.1:80",
            ForwardMethod::DirectRoute,
            3,
            5,
            2,
            0,
            (0, 0),
            stats5([10, 20, 30, 40, 50], [0; 5]),
        ),
    ];
    let mut s3 = svc(
        ServiceKey::tcp(sa("10.0.0.3:443")),
        Scheduler::SourceHashing,
    )
    .persistent(600);
    s3.flags = s3
        .flags
        .with(ServiceFlags::SCHED1 | ServiceFlags::SCHED2, true);
    s3.netmask = Netmask(0xffff_ff00);
    let mut s2 = svc(
        ServiceKey::udp(sa("10.0.0.2:53")),
        Scheduler::WeightedLeastConnection,
    );
    s2.flags = s2.flags.with(ServiceFlags::ONEPACKET, true);
    let s6 = svc(
        ServiceKey::tcp(sa("[fd00::10]:80")),
        Scheduler::ShortestExpectedDelay,
    );
    let d6 = vec![
        dest(
            "[fd00::1]:8080",
            ForwardMethod::Masquerade,
            2,
            0,
            0,
            0,
            (0, 0),
            zero,
        ),
        tunnel(
            dest(
                "10.1.0.7:80",
                ForwardMethod::Tunnel,
                1,
                0,
                0,
                0,
                (0, 0),
                zero,
            ),
            TunnelType::Gre,
            0,
            TunnelFlags::REMCSUM,
        ),
    ];
    let f7 = svc(
        ServiceKey::Fwmark {
            mark: 7,
            ipv6: false,
        },
        Scheduler::LeastConnection,
    );
    let mut f8 = svc(
        ServiceKey::Fwmark {
            mark: 8,
            ipv6: true,
        },
        Scheduler::DestinationHashing,
    )
    .persistent(30);
    f8.netmask = Netmask(64);
    f8.pe_name = Some("sip".into());
    let st = |service: Service| ServiceStatus {
        service,
        stats: zero,
    };
    vec![
        (
            st(f8),
            vec![tunnel(
                dest(
                    "[fd00::5]:0",
                    ForwardMethod::Tunnel,
                    1,
                    0,
                    0,
                    0,
                    (0, 0),
                    zero,
                ),
                TunnelType::Ipip,
                0,
                0,
            )],
        ),
        (st(s6), d6),
        (st(s2), vec![]),
        (
            st(f7),
            vec![dest(
                "10.1.0.5:0",
                ForwardMethod::DirectRoute,
                1,
                0,
                0,
                0,
                (0, 0),
                zero,
            )],
        ),
        (s1, d1),
        (st(s3), vec![]),
    ]
}

/// Renders the fixture as `list_all` does (title, sorted services).
fn render(format: u32) -> String {
    let names = names();
    let mut entries = fixture();
    let mut idx: Vec<usize> = (0..entries.len()).collect();
    glibc_msort(&mut idx, |a, b| {
        cmp_services(&entries[*a].0, &entries[*b].0)
    });
    let sorted: Vec<_> = idx.into_iter().map(|i| entries[i].clone()).collect();
    entries = sorted;
    let mut out = title(format);
    for (s, d) in &entries {
        service_entry(&mut out, s, d, format, &names);
    }
    out
}

const EXPECT_DEF: &str = "Prot LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\nTCP  10.0.0.1:80 rr\n  -> 10.1.0.1:80                  Route   3      5          2         \n  -> 10.1.0.2:8080                Masq    1      1          2         \n  -> 10.1.0.6:80                  Tunnel  1      0          0         \nTCP  10.0.0.3:443 sh (sh-fallback,sh-port) persistent 600 mask 255.255.255.0\nUDP  10.0.0.2:53 wlc ops\nTCP  [fd00::10]:80 sed\n  -> [fd00::1]:8080               Masq    2      0          0         \n  -> 10.1.0.7:80                  Tunnel  1      0          0         \nFWM  7 lc\n  -> 10.1.0.5:0                   Route   1      0          0         \nFWM  8 IPv6 dh persistent 30 mask 64 pe sip\n  -> [fd00::5]:0                  Tunnel  1      0          0         \n";
const EXPECT_STATS: &str = "Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes\n  -> RemoteAddress:Port\nTCP  10.0.0.1:80                   123456K        5        0    1500M     250T\n  -> 10.1.0.1:80                        10       20       30       40       50\n  -> 10.1.0.2:8080                       7        8        9  100000K 99999999\n  -> 10.1.0.6:80                         0        0        0        0        0\nTCP  10.0.0.3:443                        0        0        0        0        0\nUDP  10.0.0.2:53                         0        0        0        0        0\nTCP  [fd00::10]:80                       0        0        0        0        0\n  -> [fd00::1]:8080                      0        0        0        0        0\n  -> 10.1.0.7:80                         0        0        0        0        0\nFWM  7                                   0        0        0        0        0\n  -> 10.1.0.5:0                          0        0        0        0        0\nFWM  8 IPv6                              0        0        0        0        0\n  -> [fd00::5]:0                         0        0        0        0        0\n";
const EXPECT_EXACT: &str = "Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes\n  -> RemoteAddress:Port\nTCP  10.0.0.1:80                  123456789        5        0 1500000000 250000000000000\n  -> 10.1.0.1:80                        10       20       30       40       50\n  -> 10.1.0.2:8080                       7        8        9 100000000 99999999\n  -> 10.1.0.6:80                         0        0        0        0        0\nTCP  10.0.0.3:443                        0        0        0        0        0\nUDP  10.0.0.2:53                         0        0        0        0        0\nTCP  [fd00::10]:80                       0        0        0        0        0\n  -> [fd00::1]:8080                      0        0        0        0        0\n  -> 10.1.0.7:80                         0        0        0        0        0\nFWM  7                                   0        0        0        0        0\n  -> 10.1.0.5:0                          0        0        0        0        0\nFWM  8 IPv6                              0        0        0        0        0\n  -> [fd00::5]:0                         0        0        0        0        0\n";
const EXPECT_RATE: &str = "Prot LocalAddress:Port                 CPS    InPPS   OutPPS    InBPS   OutBPS\n  -> RemoteAddress:Port\nTCP  10.0.0.1:80                         1        2        3     4000     123G\n  -> 10.1.0.1:80                         0        0        0        0        0\n  -> 10.1.0.2:8080                       1        1        1        1        1\n  -> 10.1.0.6:80                         0        0        0        0        0\nTCP  10.0.0.3:443                        0        0        0        0        0\nUDP  10.0.0.2:53                         0        0        0        0        0\nTCP  [fd00::10]:80                       0        0        0        0        0\n  -> [fd00::1]:8080                      0        0        0        0        0\n  -> 10.1.0.7:80                         0        0        0        0        0\nFWM  7                                   0        0        0        0        0\n  -> 10.1.0.5:0                          0        0        0        0        0\nFWM  8 IPv6                              0        0        0        0        0\n  -> [fd00::5]:0                         0        0        0        0        0\n";
const EXPECT_THR: &str = "Prot LocalAddress:Port            Uthreshold Lthreshold ActiveConn InActConn \n  -> RemoteAddress:Port\nTCP  10.0.0.1:80 rr\n  -> 10.1.0.1:80                  0          0          5          2         \n  -> 10.1.0.2:8080                100        10         1          2         \n  -> 10.1.0.6:80                  0          0          0          0         \nTCP  10.0.0.3:443 sh (sh-fallback,sh-port) persistent 600 mask 255.255.255.0\nUDP  10.0.0.2:53 wlc ops\nTCP  [fd00::10]:80 sed\n  -> [fd00::1]:8080               0          0          0          0         \n  -> 10.1.0.7:80                  0          0          0          0         \nFWM  7 lc\n  -> 10.1.0.5:0                   0          0          0          0         \nFWM  8 IPv6 dh persistent 30 mask 64 pe sip\n  -> [fd00::5]:0                  0          0          0          0         \n";
const EXPECT_PC: &str = "Prot LocalAddress:Port            Weight    PersistConn ActiveConn InActConn \n  -> RemoteAddress:Port\nTCP  10.0.0.1:80 rr\n  -> 10.1.0.1:80                  3         0           5          2         \n  -> 10.1.0.2:8080                1         4           1          2         \n  -> 10.1.0.6:80                  1         0           0          0         \nTCP  10.0.0.3:443 sh (sh-fallback,sh-port) persistent 600 mask 255.255.255.0\nUDP  10.0.0.2:53 wlc ops\nTCP  [fd00::10]:80 sed\n  -> [fd00::1]:8080               2         0           0          0         \n  -> 10.1.0.7:80                  1         0           0          0         \nFWM  7 lc\n  -> 10.1.0.5:0                   1         0           0          0         \nFWM  8 IPv6 dh persistent 30 mask 64 pe sip\n  -> [fd00::5]:0                  1         0           0          0         \n";
const EXPECT_TUN: &str = "Prot LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port           Forward TunnelInfo    Weight ActiveConn InActConn\nTCP  10.0.0.1:80 rr\n  -> 10.1.0.1:80                  Route   n/a           3      5          2         \n  -> 10.1.0.2:8080                Masq    n/a           1      1          2         \n  -> 10.1.0.6:80                  Tunnel  gue:6080:+c   1      0          0         \nTCP  10.0.0.3:443 sh (sh-fallback,sh-port) persistent 600 mask 255.255.255.0\nUDP  10.0.0.2:53 wlc ops\nTCP  [fd00::10]:80 sed\n  -> [fd00::1]:8080               Masq    n/a           2      0          0         \n  -> 10.1.0.7:80                  Tunnel  gre:r+c       1      0          0         \nFWM  7 lc\n  -> 10.1.0.5:0                   Route   n/a           1      0          0         \nFWM  8 IPv6 dh persistent 30 mask 64 pe sip\n  -> [fd00::5]:0                  Tunnel  ipip          1      0          0         \n";
const EXPECT_RULE: &str = "-A -t 10.0.0.1:80 -s rr\n-a -t 10.0.0.1:80 -r 10.1.0.1:80 -g -w 3\n-a -t 10.0.0.1:80 -r 10.1.0.2:8080 -m -w 1\n-a -t 10.0.0.1:80 -r 10.1.0.6:80 -i -w 1 --tun-type gue --tun-port 6080 --tun-csum\n-A -t 10.0.0.3:443 -s sh -p 600 -M 255.255.255.0 -b sh-fallback,sh-port\n-A -u 10.0.0.2:53 -s wlc -o\n-A -t [fd00::10]:80 -s sed\n-a -t [fd00::10]:80 -r [fd00::1]:8080 -m -w 2\n-a -t [fd00::10]:80 -r 10.1.0.7:80 -i -w 1 --tun-type gre --tun-remcsum\n-A -f 7 -s lc\n-a -f 7 -r 10.1.0.5:0 -g -w 1\n-A -f 8 -6 -s dh -p 30 -M 64 --pe sip\n-a -f 8 -6 -r [fd00::5]:0 -i -w 1 --tun-type ipip\n";

#[test]
fn default_listing() {
    assert_eq!(render(fmt::NUMERIC), EXPECT_DEF);
}

#[test]
fn stats_listing_abbreviates_large_numbers() {
    assert_eq!(render(fmt::NUMERIC | fmt::STATS), EXPECT_STATS);
}

#[test]
fn exact_stats_listing() {
    assert_eq!(render(fmt::NUMERIC | fmt::STATS | fmt::EXACT), EXPECT_EXACT);
}

#[test]
fn rate_listing() {
    assert_eq!(render(fmt::NUMERIC | fmt::RATE), EXPECT_RATE);
}

#[test]
fn thresholds_listing() {
    assert_eq!(render(fmt::NUMERIC | fmt::THRESHOLDS), EXPECT_THR);
}

#[test]
fn persistent_conn_listing() {
    assert_eq!(render(fmt::NUMERIC | fmt::PERSISTENTCONN), EXPECT_PC);
}

#[test]
fn tun_info_listing() {
    assert_eq!(render(fmt::NUMERIC | fmt::TUN_INFO), EXPECT_TUN);
}

#[test]
fn save_format() {
    assert_eq!(render(fmt::NUMERIC | fmt::RULE), EXPECT_RULE);
}

#[test]
fn stats_wins_over_rate_and_thresholds() {
    assert_eq!(
        render(fmt::NUMERIC | fmt::STATS | fmt::RATE | fmt::THRESHOLDS),
        EXPECT_STATS
    );
}

#[test]
fn nosort_keeps_the_dataplane_order() {
    let names = names();
    let (s, d) = fixture().remove(4);
    let mut out = String::new();
    service_entry(&mut out, &s, &d, fmt::NUMERIC | fmt::NOSORT, &names);
    assert_eq!(
        out,
        "TCP  10.0.0.1:80 rr\n  -> 10.1.0.6:80                  Tunnel  1      0          0         \n  -> 10.1.0.2:8080                Masq    1      1          2         \n  -> 10.1.0.1:80                  Route   3      5          2         \n"
    );
}

#[test]
fn names_replace_addresses_and_ports_and_are_truncated() {
    let names = names();
    let mut s = fixture().remove(4);
    s.1.truncate(2);
    s.1.push(dest(
        "10.0.0.3:443",
        ForwardMethod::Masquerade,
        1,
        0,
        0,
        0,
        (0, 0),
        Stats::default(),
    ));
    let mut out = String::new();
    service_entry(&mut out, &s.0, &s.1, 0, &names);
    // 10.1.0.2 is backend-2, 80/tcp is http, 10.1.0.6 has no name,
    // 10.0.0.3 has a long name: 28 bytes are kept. Each name is padded
    // to 28 columns ("%-28s") and followed by one blank.
    assert_eq!(
        out,
        concat!(
            "TCP  10.0.0.1:http rr\n",
            "  -> a-very-long-host-name-for-tr Masq    1      0          0         \n",
            "  -> backend-2:8080               Masq    1      1          2         \n",
            "  -> 10.1.0.6:http                Tunnel  1      0          0         \n",
        )
    );
    let long = ServiceStatus {
        service: svc(ServiceKey::tcp(sa("10.0.0.3:80")), Scheduler::RoundRobin),
        stats: Stats::default(),
    };
    let mut out = String::new();
    service_entry(&mut out, &long, &[], 0, &names);
    assert_eq!(out, "TCP  a-very-long-host-name-for-tr rr\n");
    let mut out = String::new();
    service_entry(&mut out, &long, &[], fmt::RULE, &names);
    assert_eq!(
        out,
        "-A -t a-very-long-host-name-for-truncation.example.org:http -s rr\n"
    );
}

#[test]
fn ipv6_names_are_bracketed_and_not_truncated() {
    let names = names();
    let s = ServiceStatus {
        service: svc(ServiceKey::udp(sa("[fd00::2]:53")), Scheduler::RoundRobin),
        stats: Stats::default(),
    };
    let d = vec![dest(
        "[::1]:53",
        ForwardMethod::Masquerade,
        1,
        0,
        0,
        0,
        (0, 0),
        Stats::default(),
    )];
    let mut out = String::new();
    service_entry(&mut out, &s, &d, 0, &names);
    assert_eq!(
        out,
        "UDP  [web6]:domain rr\n  -> [localhost]:domain           Masq    1      0          0         \n"
    );
}

#[test]
fn header_timeouts_and_daemons() {
    assert_eq!(
        header(&Info {
            version: 0x0001_0201,
            conn_table_size: 4096
        }),
        "IP Virtual Server version 1.2.1 (size=4096)\n"
    );
    assert_eq!(
        timeouts(&Timeouts {
            tcp: 900,
            tcp_fin: 120,
            udp: 300
        }),
        "Timeout (tcp tcpfin udp): 900 120 300\n"
    );
    let list = vec![
        Daemon {
            state: DaemonState::Master,
            mcast_ifn: "eth0".into(),
            syncid: 0,
            sync_maxlen: 1472,
            mcast_group: Some("224.0.0.81".parse().unwrap()),
            mcast_port: 8848,
            mcast_ttl: 1,
        },
        Daemon {
            state: DaemonState::Backup,
            mcast_ifn: "eth1".into(),
            syncid: 9,
            sync_maxlen: 0,
            mcast_group: None,
            mcast_port: 0,
            mcast_ttl: 0,
        },
    ];
    assert_eq!(
        daemons(&list),
        "master sync daemon (mcast=eth0, syncid=0, maxlen=1472, group=224.0.0.81, port=8848, ttl=1)\nbackup sync daemon (mcast=eth1, syncid=9)\n"
    );
    assert_eq!(daemons(&[]), "");
}

#[test]
fn connection_listing() {
    let names = names();
    let conns = vec![
        Connection {
            protocol: "TCP".into(),
            client: sa("10.0.9.2:50000"),
            virtual_addr: sa("10.0.0.1:80"),
            destination: sa("10.1.0.2:80"),
            state: "ESTABLISHED".into(),
            expires: 899,
            pe: None,
        },
        Connection {
            protocol: "UDP".into(),
            client: sa("[fd00::9]:5060"),
            virtual_addr: sa("[fd00::10]:5060"),
            destination: sa("[fd00::1]:5060"),
            state: "UDP".into(),
            expires: 6005,
            pe: Some(("sip".into(), "call-1".into())),
        },
    ];
    assert_eq!(
        connections(&conns, fmt::NUMERIC, &names),
        "IPVS connection entries\npro expire state       source             virtual            destination\n\
TCP 14:59  ESTABLISHED 10.0.9.2:50000     10.0.0.1:80        10.1.0.2:80\n\
UDP 100:05 UDP         [fd00::9]:5060     [fd00::10]:5060    [fd00::1]:5060\n"
    );
    assert_eq!(
        connections(&conns, fmt::NUMERIC | fmt::PERSISTENTCONN, &names),
        "IPVS connection entries\npro expire state       source             virtual            destination        pe name          pe_data\n\
TCP 14:59  ESTABLISHED 10.0.9.2:50000     10.0.0.1:80        10.1.0.2:80\n\
UDP 100:05 UDP         [fd00::9]:5060     [fd00::10]:5060    [fd00::1]:5060   sip                call-1\n"
    );
    assert_eq!(
        connections(&conns[..1], 0, &names),
        "IPVS connection entries\npro expire state       source             virtual            destination\n\
TCP 14:59  ESTABLISHED 10.0.9.2:50000     10.0.0.1:http      backend-2:http\n"
    );
}

#[test]
fn service_order_reproduces_libipvs_wrapping_comparison() {
    // 10.x minus 200.x wraps to a positive int, so libipvs's comparison
    // says 10.0.0.1 > 200.1.1.1 while 10.0.0.1 < 100.0.0.1 < 200.1.1.1:
    // not a total order, and the result depends on the sort algorithm.
    // glibc's merge sort splits [10, 200, 100] into [10] and [200, 100],
    // sorts the right half to [100, 200], then merges: 10 < 100 is taken
    // first, so 10.0.0.1, 100.0.0.1, 200.1.1.1.
    let mk = |a: &str| ServiceStatus {
        service: svc(ServiceKey::tcp(sa(a)), Scheduler::RoundRobin),
        stats: Stats::default(),
    };
    let list = [mk("10.0.0.1:80"), mk("200.1.1.1:80"), mk("100.0.0.1:80")];
    let mut idx: Vec<usize> = (0..3).collect();
    glibc_msort(&mut idx, |a, b| cmp_services(&list[*a], &list[*b]));
    assert_eq!(idx, vec![0, 2, 1]);
    // In another input order the wrap shows: [200, 10] merge-sorts to
    // 10 after 200.
    let mut idx: Vec<usize> = vec![1, 0];
    glibc_msort(&mut idx, |a, b| cmp_services(&list[*a], &list[*b]));
    assert_eq!(idx, vec![1, 0]);
    assert!(cmp_services(&list[0], &list[1]) > 0);
    assert!(cmp_services(&list[0], &list[2]) < 0);
}

#[test]
fn glibc_merge_sort_is_stable_and_takes_the_left_run_on_ties() {
    let mut v = vec![(1, 'a'), (0, 'b'), (1, 'c'), (0, 'd'), (2, 'e')];
    glibc_msort(&mut v, |a, b| a.0 - b.0);
    assert_eq!(v, vec![(0, 'b'), (0, 'd'), (1, 'a'), (1, 'c'), (2, 'e')]);
}

#[test]
fn sched_flags_without_a_name_print_empty_parentheses() {
    let names = names();
    let mut s = svc(ServiceKey::tcp(sa("10.0.0.1:80")), Scheduler::SourceHashing);
    s.flags = ServiceFlags(ServiceFlags::SCHED3);
    let st = ServiceStatus {
        service: s,
        stats: Stats::default(),
    };
    let mut out = String::new();
    service_entry(&mut out, &st, &[], fmt::NUMERIC, &names);
    assert_eq!(out, "TCP  10.0.0.1:80 sh ()\n");
    let mut out = String::new();
    service_entry(&mut out, &st, &[], fmt::NUMERIC | fmt::RULE, &names);
    assert_eq!(out, "-A -t 10.0.0.1:80 -s sh -b \n");
}

#[test]
fn a_scheduler_rvs_does_not_know_is_shown_by_the_kernels_name() {
    let names = names();
    let fastest = Scheduler::from_kernel_name("fastest").unwrap();
    let mut service = svc(ServiceKey::tcp(sa("10.0.0.9:80")), fastest);
    service.flags = service.flags.with(ServiceFlags::SCHED1, true);
    let status = ServiceStatus {
        service,
        stats: Stats::default(),
    };
    let mut out = String::new();
    service_entry(&mut out, &status, &[], fmt::NUMERIC, &names);
    assert_eq!(out, "TCP  10.0.0.9:80 fastest (flag-1)\n");
    let mut out = String::new();
    service_entry(&mut out, &status, &[], fmt::NUMERIC | fmt::RULE, &names);
    assert_eq!(out, "-A -t 10.0.0.9:80 -s fastest -b flag-1\n");
}

#[test]
fn daemon_states_are_read_by_their_bits() {
    let daemon = |state| Daemon {
        state,
        mcast_ifn: "eth0".into(),
        syncid: 1,
        sync_maxlen: 0,
        mcast_group: None,
        mcast_port: 0,
        mcast_ttl: 0,
    };
    assert_eq!(
        daemons(&[daemon(DaemonState::Other(5)), daemon(DaemonState::Other(8))]),
        "master sync daemon (mcast=eth0, syncid=1)\n"
    );
}

#[test]
fn rebalancing_listing() {
    let list = vec![rvs_model::admin::RebalanceStatus {
        service: ServiceKey::Addr {
            protocol: Protocol::Tcp,
            addr: sa("10.96.0.10:80"),
        },
        skew: 0.125,
        closed: vec![(sa("10.77.0.2:8080"), 17), (sa("10.77.0.3:8080"), 3)],
    }];
    assert_eq!(
        rebalancing(&list),
        "Prot LocalAddress:Port                  Skew\n  -> RemoteAddress:Port               Closed\n\
         TCP  10.96.0.10:80                      0.12\n\
         \x20 -> 10.77.0.2:8080                        17\n\
         \x20 -> 10.77.0.3:8080                         3\n"
    );
    assert_eq!(rebalancing(&[]).lines().count(), 2);
}
