//! Parser tests: accepted command lines and ipvsadm's exact refusals
//! (messages and exit codes checked against ipvsadm 1.31 in the VM).

use std::net::SocketAddr;

use super::*;
use crate::names::tests::names;

fn argv(line: &str) -> Vec<String> {
    std::iter::once("ipvsadm")
        .chain(line.split_whitespace())
        .map(String::from)
        .collect()
}

fn ok(line: &str) -> Command {
    match parse(&argv(line), &names()) {
        Ok(inv) => inv.command,
        Err(e) => panic!("`{line}` refused: {e:?}"),
    }
}

fn err(line: &str) -> (String, u8) {
    match parse(&argv(line), &names()) {
        Ok(inv) => panic!("`{line}` accepted: {inv:?}"),
        Err(e) => (e.stderr_text("ipvsadm"), e.exit_code()),
    }
}

fn op(line: &str) -> Op {
    match ok(line) {
        Command::Change(Change::Op(op)) => op,
        other => panic!("`{line}` is not a change: {other:?}"),
    }
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn add_service_defaults_to_wlc_and_no_persistence() {
    let Op::AddService(s) = op("-A -t 10.0.0.1:80") else {
        panic!()
    };
    assert_eq!(s.key, ServiceKey::tcp(sa("10.0.0.1:80")));
    assert_eq!(s.scheduler, Scheduler::WeightedLeastConnection);
    assert!(!s.is_persistent());
    assert_eq!(s.netmask, Netmask(u32::MAX));
    assert_eq!(s.pe_name, None);
}

#[test]
fn persistence_takes_an_optional_timeout() {
    let timeout = |line: &str| match op(line) {
        Op::AddService(s) | Op::EditService(s) => (s.is_persistent(), s.timeout),
        other => panic!("{other:?}"),
    };
    assert_eq!(timeout("-A -t 10.0.0.1:80 -p"), (true, 360));
    assert_eq!(timeout("-A -t 10.0.0.1:80 -p -s rr"), (true, 360));
    assert_eq!(timeout("-A -t 10.0.0.1:80 -p 10"), (true, 10));
    assert_eq!(timeout("-A -t 10.0.0.1:80 -p10"), (true, 10));
    assert_eq!(timeout("-E -t 10.0.0.1:80 --persistent=20"), (true, 20));
    assert_eq!(
        err("-A -t 10.0.0.1:80 -p abc"),
        ("invalid timeout value `abc' specified\n".into(), 2)
    );
    assert_eq!(
        err("-A -t 10.0.0.1:80 -p 0"),
        ("invalid timeout value `0' specified\n".into(), 2)
    );
}

#[test]
fn combined_short_options_and_listing_variants() {
    assert_eq!(
        ok("-Ln"),
        Command::List {
            what: List::All,
            format: fmt::NUMERIC
        }
    );
    assert_eq!(
        ok("-lnc"),
        Command::List {
            what: List::Connections,
            format: fmt::NUMERIC
        }
    );
    assert_eq!(
        ok("-L -n --stats --exact --nosort --sort"),
        Command::List {
            what: List::All,
            format: fmt::NUMERIC | fmt::STATS | fmt::EXACT | fmt::NOSORT
        }
    );
    assert_eq!(
        ok("-S -n"),
        Command::List {
            what: List::All,
            format: fmt::NUMERIC | fmt::RULE
        }
    );
    assert_eq!(
        ok("-L --timeout"),
        Command::List {
            what: List::Timeout,
            format: 0
        }
    );
    assert_eq!(
        ok("-L -t 10.0.0.1:80 --thresholds"),
        Command::List {
            what: List::Service(ServiceKey::tcp(sa("10.0.0.1:80"))),
            format: fmt::THRESHOLDS
        }
    );
    assert_eq!(ok("-h"), Command::Help);
    assert_eq!(ok("--version"), Command::Version);
    assert_eq!(ok("-R"), Command::Restore);
}

#[test]
fn names_resolve_from_the_files() {
    assert_eq!(
        op("-D -t localhost:http"),
        Op::DeleteService(ServiceKey::tcp(sa("127.0.0.1:80")))
    );
    assert_eq!(
        op("-D -u web1:domain"),
        Op::DeleteService(ServiceKey::udp(sa("10.0.0.2:53")))
    );
    // www is an alias of http for tcp only.
    assert_eq!(
        err("-D -u web1:www"),
        (
            "illegal virtual server address[:port] specified\n".into(),
            2
        )
    );
}

#[test]
fn address_forms_follow_parse_service() {
    assert_eq!(
        op("-D -t [fd00::1]:443"),
        Op::DeleteService(ServiceKey::tcp(sa("[fd00::1]:443")))
    );
    // glibc inet_aton forms.
    assert_eq!(
        op("-D -t 10.1:80"),
        Op::DeleteService(ServiceKey::tcp(sa("10.0.0.1:80")))
    );
    // A bracketed IPv4 address loses its port, as in ipvsadm.
    assert_eq!(
        err("-A -t [1.2.3.4]:80"),
        ("Zero port specified for non-persistent service\n".into(), 2)
    );
    for bad in [
        "-A -t 1.2.3.4:",
        "-A -t 80",
        "-A -t [::1]",
        "-A -t nosuchhost:80",
        "-A -t 1.2.3.4:99999",
    ] {
        assert_eq!(
            err(bad),
            (
                "illegal virtual server address[:port] specified\n".into(),
                2
            ),
            "{bad}"
        );
    }
    // An unbracketed IPv6 address has no port.
    assert_eq!(
        op("-D -t fd00::1:80"),
        Op::DeleteService(ServiceKey::tcp(sa("[fd00::1:80]:0")))
    );
}

#[test]
fn destinations_default_to_direct_routing_weight_one() {
    let Op::AddDestination(key, d) = op("-a -t 10.0.0.1:80 -r 10.1.0.1") else {
        panic!()
    };
    assert_eq!(key, ServiceKey::tcp(sa("10.0.0.1:80")));
    assert_eq!(d.addr, sa("10.1.0.1:80"));
    assert_eq!(d.forward, ForwardMethod::DirectRoute);
    assert_eq!(d.weight, 1);
    // Direct routing and tunnels use the service port.
    let Op::AddDestination(_, d) = op("-a -t 10.0.0.1:80 -r 10.1.0.1:8080 -g") else {
        panic!()
    };
    assert_eq!(d.addr, sa("10.1.0.1:80"));
    let Op::EditDestination(_, d) = op("-e -t 10.0.0.1:80 -r 10.1.0.1:8080 -m -w 0 -x 10 -y 5")
    else {
        panic!()
    };
    assert_eq!(
        (
            d.addr,
            d.forward,
            d.weight,
            d.upper_threshold,
            d.lower_threshold
        ),
        (sa("10.1.0.1:8080"), ForwardMethod::Masquerade, 0, 10, 5)
    );
    // Debian's ipvsadm takes weights up to INT_MAX.
    let Op::AddDestination(_, d) = op("-a -t 10.0.0.1:80 -r 10.1.0.1 -w 70000") else {
        panic!()
    };
    assert_eq!(d.weight, 70000);
    assert_eq!(
        err("-a -t 10.0.0.1:80 -r 10.1.0.1 -w -1"),
        ("illegal weight specified\n".into(), 2)
    );
    assert_eq!(
        op("-d -f 7 -r 10.1.0.1"),
        Op::DeleteDestination(
            ServiceKey::Fwmark {
                mark: 7,
                ipv6: false
            },
            sa("10.1.0.1:0")
        )
    );
}

#[test]
fn tunnel_options() {
    let Op::AddDestination(_, d) =
        op("-a -t 10.0.0.1:80 -r 10.1.0.1 -i --tun-type gue --tun-port 6080 --tun-csum")
    else {
        panic!()
    };
    assert_eq!(d.forward, ForwardMethod::Tunnel);
    assert_eq!(
        d.tunnel,
        Tunnel {
            kind: TunnelType::Gue,
            port: 6080,
            flags: TunnelFlags(TunnelFlags::CSUM)
        }
    );
    assert_eq!(
        err("-a -t 10.0.0.1:80 -r 10.1.0.1 -m --tun-type gue"),
        ("Tunnel options conflict with forward method\n".into(), 2)
    );
    assert_eq!(
        err("-a -t 10.0.0.1:80 -r 10.1.0.1 -i --tun-type gue"),
        (
            "You need to supply the 'tun-port' option for the 'gue' tunnel type\n".into(),
            2
        )
    );
    assert_eq!(
        err("-a -t 10.0.0.1:80 -r 10.1.0.1 -i --tun-type gre --tun-remcsum"),
        (
            "Illegal 'tun-remcsum' option with the 'gre' tunnel type\n".into(),
            2
        )
    );
    assert_eq!(
        err("-a -t 10.0.0.1:80 -r 10.1.0.1 -i --tun-type gue --tun-port 1 --tun-csum --tun-nocsum"),
        (
            "The option 'tun-csum' conflicts with the 'tun-nocsum' option in the 'gue' tunnel type\n"
                .into(),
            2
        )
    );
    assert_eq!(
        err("-a -t 10.0.0.1:80 -r 10.1.0.1 -i --tun-type vxlan"),
        ("illegal tunnel type specified\n".into(), 2)
    );
    assert_eq!(
        err("-a -t 10.0.0.1:80 -r fd00::1 -m"),
        (
            "Different address family is allowed only for tunneling servers\n".into(),
            2
        )
    );
    // A bracketed address needs a port: parse_service refuses it first.
    assert_eq!(
        err("-a -t 10.0.0.1:80 -r [fd00::1] -m"),
        ("illegal real server address[:port] specified\n".into(), 2)
    );
}

#[test]
fn fwmark_ipv6_and_netmasks() {
    let Op::AddService(s) = op("-A -f 8 -6 -s dh -p 30 -M 64") else {
        panic!()
    };
    assert_eq!(
        s.key,
        ServiceKey::Fwmark {
            mark: 8,
            ipv6: true
        }
    );
    assert_eq!(s.netmask, Netmask(64));
    let Op::AddService(s) = op("-A -t 10.0.0.1:80 -p -M 255.255.255.0") else {
        panic!()
    };
    assert_eq!(s.netmask, Netmask(0xffff_ff00));
    // -M before an IPv6 service is read as IPv4, then reset to 128.
    let Op::AddService(s) = op("-A -M 64 -t [fd00::1]:80 -p") else {
        panic!()
    };
    assert_eq!(s.netmask, Netmask(128));
    assert_eq!(err("-A -6 -f 1"), ("-6 used before -f\n\n".into(), 2));
    assert_eq!(
        err("-A -t [fd00::1]:80 -p -M 129"),
        ("illegal ipv6 netmask specified\n".into(), 2)
    );
    assert_eq!(
        err("-A -t 10.0.0.1:80 -p -M nonsense"),
        (
            "illegal virtual server persistent mask specified\n".into(),
            2
        )
    );
    assert_eq!(
        err("-A -f 0"),
        ("invalid fwmark value `0' specified\n".into(), 2)
    );
}

#[test]
fn scheduler_flags() {
    let Op::AddService(s) = op("-A -t 10.0.0.1:80 -s sh -b sh-fallback,sh-port") else {
        panic!()
    };
    assert_eq!(s.flags.0, ServiceFlags::SCHED1 | ServiceFlags::SCHED2);
    assert_eq!(
        err("-A -t 10.0.0.1:80 -b sh-port"),
        ("incompatible scheduler flag `sh-port'\n".into(), 2)
    );
    assert_eq!(
        err("-A -t 10.0.0.1:80 -b fast"),
        ("invalid scheduler flag `fast'\n".into(), 2)
    );
    let Op::AddService(s) = op("-A -t 10.0.0.1:80 -b flag-1,,flag-3") else {
        panic!()
    };
    assert_eq!(s.flags.0, ServiceFlags::SCHED1 | ServiceFlags::SCHED3);
}

#[test]
fn unknown_schedulers_are_left_to_the_dataplane() {
    assert_eq!(
        ok("-A -t 10.0.0.1:80 -s bogus"),
        Command::Change(Change::UnknownScheduler {
            edit: false,
            key: ServiceKey::tcp(sa("10.0.0.1:80"))
        })
    );
    // Known to the model even where the kernel lacks it.
    assert!(matches!(
        op("-E -t 10.0.0.1:80 -s twos"),
        Op::EditService(_)
    ));
}

#[test]
fn other_commands() {
    assert_eq!(op("-C"), Op::Flush);
    assert_eq!(op("-Z"), Op::Zero(None));
    assert_eq!(
        op("-Z -t 10.0.0.1:80"),
        Op::Zero(Some(ServiceKey::tcp(sa("10.0.0.1:80"))))
    );
    assert_eq!(
        op("--set 100 20 30"),
        Op::SetTimeouts(Timeouts {
            tcp: 100,
            tcp_fin: 20,
            udp: 30
        })
    );
    assert_eq!(
        op("--stop-daemon backup"),
        Op::StopDaemon(DaemonState::Backup)
    );
    let Op::StartDaemon(d) = op(
        "--start-daemon master --syncid 7 --mcast-group 239.1.1.1 --mcast-port 9000 --mcast-ttl 3 --sync-maxlen 1000",
    ) else {
        panic!()
    };
    assert_eq!(d.mcast_ifn, "eth0");
    assert_eq!(
        (
            d.syncid,
            d.mcast_group,
            d.mcast_port,
            d.mcast_ttl,
            d.sync_maxlen
        ),
        (7, Some("239.1.1.1".parse().unwrap()), 9000, 3, 1000)
    );
}

#[test]
fn refusals_match_ipvsadm() {
    let try_help = "Try `ipvsadm -h' or 'ipvsadm --help' for more information.\n";
    let cases: &[(&str, &str, u8)] = &[
        ("-Lq", "-Lq: unknown option\n", 255),
        ("-L -q", "-q: unknown option\n", 255),
        ("-L --bogus=3", "--bogus=3: unknown option\n", 255),
        ("--bogus", try_help, 255),
        ("-L -A", "invalid option `-A'\n", 2),
        ("-LA", "invalid option `-LA'\n", 2),
        (
            "-A",
            "You need to supply the 'service-address' option for the 'add-service' command\n",
            2,
        ),
        ("-A -t", "-t: missing argument\n", 255),
        (
            "-L --numeric=1",
            "--numeric=1: option does not take an argument\n",
            255,
        ),
        ("--lis", try_help, 255),
        ("-L --num", "--num: unknown option\n", 255),
        ("-n -L", try_help, 255),
        ("foo", try_help, 255),
        ("-L foo", "unexpected argument foo\n", 2),
        ("-L -- -n", "unexpected argument -n\n", 2),
        ("-L -", "unexpected argument -\n", 2),
        (
            "-A -u 1.2.3.4:80 -o -o",
            "multiple 'ops' options specified\n",
            2,
        ),
        (
            "-A -t 1.2.3.4:80 -o",
            "One-Packet Scheduling is only for UDP virtual services\n",
            2,
        ),
        (
            "-A -t 1.2.3.4 -s rr",
            "Zero port specified for non-persistent service\n",
            2,
        ),
        (
            "-A -t 1.2.3.4:80 -u 1.2.3.4:80",
            "multiple 'service-address' options specified\n",
            2,
        ),
        (
            "-a -t 1.2.3.4:80 -r 1.1.1.1 -g -m",
            "multiple 'forwarding-method' options specified\n",
            2,
        ),
        (
            "-D -t 1.2.3.4:80 -s rr",
            "Illegal 'scheduler' option with the 'delete-service' command\n",
            2,
        ),
        (
            "-a -t 1.2.3.4:80",
            "You need to supply the 'real-server' option for the 'add-server' command\n",
            2,
        ),
        (
            "-L -c -t 1.2.3.4:80",
            "The option 'service-address' conflicts with the 'connection' option in the 'list' command\n",
            2,
        ),
        (
            "-L -c --stats",
            "options conflicts in the list command\n",
            2,
        ),
        (
            "-L --timeout --persistent-conn",
            "options conflicts in the list command\n",
            2,
        ),
        (
            "-C -n",
            "Illegal 'numeric' option with the 'flush' command\n",
            2,
        ),
        (
            "-R -n",
            "Illegal 'numeric' option with the 'restore' command\n",
            2,
        ),
        (
            "-S --stats",
            "Illegal 'stats' option with the 'save' command\n",
            2,
        ),
        ("--set 1 2", "--set option requires 3 timeout values\n", 2),
        ("--set 1 2 x", "invalid timeout value `x' specified\n", 2),
        ("--set 1 2 3 4", "unexpected argument 4\n", 2),
        (
            "--start-daemon foo",
            "illegal start-daemon parameter specified\n",
            2,
        ),
        ("--stop-daemon foo", "illegal start_daemon specified\n", 2),
        (
            "--start-daemon master --mcast-group 10.0.0.1",
            "invalid IPv4 mcast-group `10.0.0.1'\n",
            2,
        ),
        (
            "--start-daemon master --mcast-group fd00::1",
            "invalid IPv6 mcast-group `fd00::1'\n",
            2,
        ),
        (
            "--start-daemon master --syncid 256",
            "illegal syncid specified\n",
            2,
        ),
        ("-L --start-daemon master", "invalid option `master'\n", 2),
        ("-L -h", "invalid option `-h'\n", 2),
    ];
    for (line, text, code) in cases {
        assert_eq!(err(line), ((*text).to_owned(), *code), "`{line}`");
    }
}

#[test]
fn target_is_an_extension_anywhere() {
    let inv = parse(&argv("--target unix:/run/x.sock -Ln"), &names()).unwrap();
    assert_eq!(inv.target.as_deref(), Some("unix:/run/x.sock"));
    let inv = parse(&argv("-Ln --target=unix:/run/y.sock"), &names()).unwrap();
    assert_eq!(inv.target.as_deref(), Some("unix:/run/y.sock"));
    assert_eq!(
        inv.command,
        Command::List {
            what: List::All,
            format: fmt::NUMERIC
        }
    );
}
