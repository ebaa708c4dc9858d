//! The kernel IPVS client against the real kernel of the test VM.
//!
//! The host test boots the VM once and runs this very test binary inside
//! it, selecting the `in_vm_*` tests (ignored on the host, where there is
//! no IPVS). They run one at a time and each starts from a flushed table.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::net::SocketAddr;

use rvs_ipvs::{IpvsClient, convert};
use rvs_ipvs_proto::{CmdAttr, IpvsCmd, IpvsMessage, Nested, SvcAttr};
use rvs_model::admin::{Admin, AdminError, Op, OpKind, errno};
use rvs_model::{
    Destination, ForwardMethod, Netmask, Scheduler, Service, ServiceFlags, ServiceKey, Timeouts,
};
use rvs_testrig::{Vm, VmJob, fixtures};

#[test]
fn kernel_client_passes_its_checks_in_the_real_kernel() {
    let Some(vm) = Vm::or_skip("kernel_client_passes_its_checks_in_the_real_kernel") else {
        return;
    };
    let exe = std::env::current_exe().unwrap();
    let job = VmJob::new("self --ignored --test-threads 1 --nocapture in_vm_\n")
        .binary("self", exe)
        .env("RVS_IN_VM", "1");
    let out = vm.run(&job).unwrap();
    assert!(out.success(), "in-VM tests failed:\n{}", out.output);
    let summary = out
        .output
        .lines()
        .find(|l| l.starts_with("test result:"))
        .unwrap_or("");
    assert!(summary.contains(" 0 failed"), "{}", out.output);
    let passed: usize = summary
        .split_whitespace()
        .nth(3)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(passed >= 8, "expected every in-VM test to run: {summary}");
    // `RVS_WRITE_FIXTURES=1` refreshes the codec's kernel-captured fixtures.
    if std::env::var_os("RVS_WRITE_FIXTURES").is_some() {
        let messages: Vec<Vec<u8>> = out
            .output
            .lines()
            .filter_map(|l| l.split("capture ").nth(1))
            .map(|hex| fixtures::from_hex(hex.trim()).unwrap())
            .collect();
        fixtures::write_hex(
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../ipvs-proto/tests/fixtures/kernel-replies.hex"
            ),
            &format!(
                "Replies of the IPVS generic netlink family of Linux {} (x86-64) to\n\
                 rvs-ipvs's requests, one netlink message per line, as IpvsClient::start_capture\n\
                 received them in the test VM: in_vm_kernel_replies_re_emit_identically in\n\
                 crates/ipvs/tests/kernel_vm.rs, written with RVS_WRITE_FIXTURES=1.",
                vm.kernel_release()
            ),
            &messages,
        )
        .unwrap();
    }
}

fn in_vm() -> IpvsClient {
    assert_eq!(
        std::env::var("RVS_IN_VM").as_deref(),
        Ok("1"),
        "run me in the VM"
    );
    let mut client = IpvsClient::connect().unwrap();
    client.apply(&Op::Flush).unwrap();
    client
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn ipvsadm(args: &[&str]) -> String {
    let out = std::process::Command::new("ipvsadm")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ipvsadm {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
#[ignore = "runs inside the test VM"]
fn in_vm_family_and_info() {
    let mut client = in_vm();
    let family = rvs_ipvs::resolve_ipvs_family().unwrap();
    assert_eq!(client.family_id(), family.id);
    let info = client.info().unwrap();
    assert_eq!(info.version, 0x01_02_01, "IPVS 1.2.1");
    assert_eq!(info.conn_table_size, 4096);
    match rvs_ipvs::resolve_family("RVS-NOSUCH") {
        Err(rvs_ipvs::GenlError::FamilyNotFound { name }) => assert_eq!(name, "RVS-NOSUCH"),
        other => panic!("expected FamilyNotFound, got {other:?}"),
    }
}

#[test]
#[ignore = "runs inside the test VM"]
fn in_vm_services_round_trip_and_ipvsadm_agrees() {
    let mut client = in_vm();
    let tcp = ServiceKey::tcp(sa("10.96.0.10:80"));
    let mut persistent = Service::new(tcp, Scheduler::WeightedRoundRobin).persistent(600);
    persistent.netmask = Netmask(0xffff_ff00);
    let udp6 = ServiceKey::udp(sa("[fd00::53]:53"));
    let mut mh = Service::new(udp6, Scheduler::Maglev);
    mh.flags = mh
        .flags
        .with(ServiceFlags::SCHED1, true)
        .with(ServiceFlags::SCHED2, true);
    let fw = Service::new(
        ServiceKey::Fwmark {
            mark: 7,
            ipv6: false,
        },
        Scheduler::SourceHashing,
    );
    for svc in [&persistent, &mh, &fw] {
        client.apply(&Op::AddService(svc.clone())).unwrap();
    }
    let mut d1 = Destination::masquerade(sa("10.0.2.2:8080"));
    d1.weight = 3;
    d1.upper_threshold = 100;
    d1.lower_threshold = 10;
    let mut d2 = Destination::masquerade(sa("10.0.3.2:8080"));
    d2.forward = ForwardMethod::DirectRoute;
    d2.weight = 0;
    client.apply(&Op::AddDestination(tcp, d1.clone())).unwrap();
    client.apply(&Op::AddDestination(tcp, d2.clone())).unwrap();

    let listed = client.services().unwrap();
    assert_eq!(listed.len(), 3);
    for want in [&persistent, &mh, &fw] {
        let got = listed.iter().find(|s| s.service.key == want.key).unwrap();
        let mut want = want.clone();
        want.flags = want.flags.with(ServiceFlags::HASHED, true); // the kernel adds it
        assert_eq!(got.service, want);
    }
    assert_eq!(client.service(&tcp).unwrap().service.timeout, 600);
    let dests = client.destinations(&tcp).unwrap();
    let mut got: Vec<_> = dests.iter().map(|d| d.destination.clone()).collect();
    got.sort_by_key(|d| d.addr);
    assert_eq!(got, vec![d1, d2]);

    // ipvsadm reads the same state back.
    let saved = ipvsadm(&["-S", "-n"]);
    assert!(
        saved.contains("-A -t 10.96.0.10:80 -s wrr -p 600 -M 255.255.255.0"),
        "{saved}"
    );
    assert!(
        saved.contains("-a -t 10.96.0.10:80 -r 10.0.2.2:8080 -m -w 3\n"),
        "{saved}"
    );
    assert!(
        saved.contains("-a -t 10.96.0.10:80 -r 10.0.3.2:8080 -g -w 0"),
        "{saved}"
    );
    assert!(
        saved.contains("-A -u [fd00::53]:53 -s mh -b mh-fallback,mh-port"),
        "{saved}"
    );
    assert!(saved.contains("-A -f 7 -s sh"), "{saved}");
    // -S leaves thresholds out; the threshold listing shows them.
    let thresholds = ipvsadm(&["-L", "-n", "--thresholds"]);
    let line = thresholds
        .lines()
        .find(|l| l.contains("10.0.2.2:8080"))
        .unwrap_or_default();
    assert_eq!(
        line.split_whitespace().collect::<Vec<_>>()[2..4],
        ["100", "10"],
        "{thresholds}"
    );

    // Edits and deletes.
    client
        .apply(&Op::EditService(Service::new(tcp, Scheduler::RoundRobin)))
        .unwrap();
    assert_eq!(
        client.service(&tcp).unwrap().service.scheduler,
        Scheduler::RoundRobin
    );
    client
        .apply(&Op::DeleteDestination(tcp, sa("10.0.3.2:8080")))
        .unwrap();
    assert_eq!(client.destinations(&tcp).unwrap().len(), 1);
    client.apply(&Op::DeleteService(udp6)).unwrap();
    assert_eq!(client.services().unwrap().len(), 2);
    client.apply(&Op::Flush).unwrap();
    assert!(client.services().unwrap().is_empty());
}

#[test]
#[ignore = "runs inside the test VM"]
fn in_vm_refusals_carry_the_kernel_errno() {
    let mut client = in_vm();
    let key = ServiceKey::tcp(sa("10.96.0.1:443"));
    let err = client.apply(&Op::DeleteService(key)).unwrap_err();
    assert_eq!(err.errno(), Some(errno::ESRCH), "{err}");
    client
        .apply(&Op::AddService(Service::new(key, Scheduler::RoundRobin)))
        .unwrap();
    let err = client
        .apply(&Op::AddService(Service::new(key, Scheduler::RoundRobin)))
        .unwrap_err();
    assert_eq!(err.errno(), Some(errno::EEXIST), "{err}");
    let err = client
        .apply(&Op::DeleteDestination(key, sa("10.0.0.9:1")))
        .unwrap_err();
    assert_eq!(err.errno(), Some(errno::ENOENT), "{err}");
    let err = client
        .service(&ServiceKey::tcp(sa("10.96.0.2:1")))
        .unwrap_err();
    assert_eq!(err.errno(), Some(errno::ESRCH), "{err}");
    // Refusals name the service and real server, and the errno by name.
    let err = client
        .apply(&Op::AddDestination(
            ServiceKey::tcp(sa("10.96.0.3:80")),
            Destination::masquerade(sa("10.0.2.2:8080")),
        ))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "add destination TCP 10.96.0.3:80 -> 10.0.2.2:8080: \
         refused by the dataplane: ESRCH (errno 3)"
    );
    let results = client.apply_batch(&[Op::DeleteService(ServiceKey::tcp(sa("10.96.0.4:80")))]);
    assert!(
        matches!(&results[0], Err(AdminError::Refused { service: Some(k), .. })
            if *k == ServiceKey::tcp(sa("10.96.0.4:80"))),
        "{results:?}"
    );
}

/// A virtual server of a protocol the model has no variant for, made with
/// a raw request (ipvsadm cannot make one): the dump leaves it out and
/// keeps the rest, and the raw dump still shows it.
#[test]
#[ignore = "runs inside the test VM"]
fn in_vm_a_service_of_a_foreign_protocol_is_left_out() {
    let mut client = in_vm();
    let mine = ServiceKey::tcp(sa("10.96.0.10:80"));
    client
        .apply(&Op::AddService(Service::new(mine, Scheduler::RoundRobin)))
        .unwrap();
    // IPPROTO_ESP (50): IPVS has a protocol handler for it.
    let mut esp = convert::service_attrs(&Service::new(
        ServiceKey::udp(sa("10.96.0.20:0")),
        Scheduler::RoundRobin,
    ));
    for attr in &mut esp {
        if let SvcAttr::Protocol(p) = attr {
            *p = 50;
        }
    }
    let raw = IpvsMessage::new(
        IpvsCmd::NewService,
        vec![CmdAttr::Service(Nested::new(esp))],
    );
    client.request(OpKind::AddService, raw).unwrap();
    let all = client
        .dump(
            OpKind::GetServices,
            IpvsMessage::new(IpvsCmd::GetService, vec![]),
        )
        .unwrap();
    assert_eq!(all.len(), 2, "the kernel has both");
    let listed = client.services().unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].service.key, mine);
    // Asking again warns no more, and still works.
    assert_eq!(client.services().unwrap().len(), 1);
    let shown = ipvsadm(&["-L", "-n"]);
    assert!(shown.contains("10.96.0.10:80"), "{shown}");
    client.apply(&Op::Flush).unwrap();
}

/// A client in another network namespace sees and changes that
/// namespace's IPVS only; a client can also be built on a socket the
/// caller opened.
#[test]
#[ignore = "runs inside the test VM"]
fn in_vm_clients_in_another_namespace_and_on_a_given_socket() {
    let mut here = in_vm();
    let netns = "rvs-ipvs-test";
    let ip = |args: &[&str]| {
        let status = std::process::Command::new("ip")
            .args(args)
            .status()
            .unwrap();
        assert!(status.success(), "ip {args:?}");
    };
    ip(&["netns", "add", netns]);
    let path = format!("/run/netns/{netns}");
    let mut there = IpvsClient::connect_in_netns(&path).unwrap();
    there
        .set_receive_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let key = ServiceKey::tcp(sa("10.96.0.30:80"));
    there
        .apply(&Op::AddService(Service::new(key, Scheduler::RoundRobin)))
        .unwrap();
    assert_eq!(there.services().unwrap().len(), 1);
    assert!(here.services().unwrap().is_empty());
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", netns, "ipvsadm", "-S", "-n"])
        .output()
        .unwrap();
    let saved = String::from_utf8_lossy(&out.stdout);
    assert!(saved.contains("-A -t 10.96.0.30:80 -s rr"), "{saved}");
    drop(there);
    ip(&["netns", "del", netns]);

    let socket = netlink_sys::Socket::new(netlink_sys::protocols::NETLINK_GENERIC).unwrap();
    let mut given = IpvsClient::from_socket(socket).unwrap();
    assert_eq!(given.family_id(), here.family_id());
    assert!(given.services().unwrap().is_empty());
}

#[test]
#[ignore = "runs inside the test VM"]
fn in_vm_batches_report_each_failure_in_place() {
    let mut client = in_vm();
    let mut ops = Vec::new();
    for i in 0..1500u32 {
        let key = ServiceKey::tcp(SocketAddr::from((
            [10, 100, (i / 250) as u8, (i % 250) as u8],
            80,
        )));
        ops.push(Op::AddService(Service::new(key, Scheduler::RoundRobin)));
        ops.push(Op::AddDestination(
            key,
            Destination::masquerade(sa("10.0.2.2:80")),
        ));
    }
    // Three failures at known places: a duplicate service, a destination
    // for a missing service, and a duplicate destination.
    let dup = ops[0].clone();
    ops.insert(700, dup);
    ops.insert(
        1300,
        Op::AddDestination(
            ServiceKey::tcp(sa("10.200.0.1:1")),
            Destination::masquerade(sa("10.0.2.2:80")),
        ),
    );
    let dup_dest = ops[1].clone();
    ops.push(dup_dest);
    let results = client.apply_batch(&ops);
    assert_eq!(results.len(), ops.len());
    let failures: Vec<(usize, Option<i32>)> = results
        .iter()
        .enumerate()
        .filter_map(|(i, r)| r.as_ref().err().map(|e| (i, e.errno())))
        .collect();
    assert_eq!(
        failures,
        vec![
            (700, Some(errno::EEXIST)),
            (1300, Some(errno::ESRCH)),
            (ops.len() - 1, Some(errno::EEXIST))
        ]
    );
    assert_eq!(client.services().unwrap().len(), 1500);
}

#[test]
#[ignore = "runs inside the test VM"]
fn in_vm_timeouts_zero_and_daemons() {
    let mut client = in_vm();
    let before = client.timeouts().unwrap();
    assert_eq!(
        before,
        Timeouts {
            tcp: 900,
            tcp_fin: 120,
            udp: 300
        }
    );
    client
        .apply(&Op::SetTimeouts(Timeouts {
            tcp: 3600,
            tcp_fin: 0,
            udp: 60,
        }))
        .unwrap();
    assert_eq!(
        client.timeouts().unwrap(),
        Timeouts {
            tcp: 3600,
            tcp_fin: 120,
            udp: 60
        }
    );
    client.apply(&Op::SetTimeouts(before)).unwrap();
    assert!(client.daemons().unwrap().is_empty());
    client.apply(&Op::Zero(None)).unwrap();
    assert!(client.connections().unwrap().is_empty());
}

/// Every datagram the kernel sends back parses and re-emits to the same
/// bytes, and the capture is printed for the codec's fixture files.
#[test]
#[ignore = "runs inside the test VM"]
fn in_vm_kernel_replies_re_emit_identically() {
    use netlink_packet_core::NetlinkMessage;
    use netlink_packet_generic::GenlMessage;
    let mut client = in_vm();
    let key = ServiceKey::tcp(sa("10.96.0.10:80"));
    let mut svc = Service::new(key, Scheduler::WeightedLeastConnection).persistent(300);
    svc.pe_name = None;
    client.apply(&Op::AddService(svc)).unwrap();
    client
        .apply(&Op::AddDestination(
            key,
            Destination::masquerade(sa("10.0.2.2:8080")),
        ))
        .unwrap();
    let v6 = ServiceKey::udp(sa("[fd00::53]:53"));
    client
        .apply(&Op::AddService(Service::new(v6, Scheduler::Maglev)))
        .unwrap();
    client.start_capture();
    client.info().unwrap();
    client.services().unwrap();
    client.destinations(&key).unwrap();
    client.timeouts().unwrap();
    let _ = client.apply(&Op::DeleteService(ServiceKey::tcp(sa("10.9.9.9:9"))));
    let capture = client.take_capture();
    assert!(capture.len() >= 5);
    let mut messages = 0;
    for datagram in &capture {
        let mut rest = datagram.as_slice();
        while rest.len() >= 16 {
            let len = u32::from_ne_bytes(rest[..4].try_into().unwrap()) as usize;
            let bytes = &rest[..len];
            let msg = NetlinkMessage::<GenlMessage<IpvsMessage>>::deserialize(bytes).unwrap();
            let mut again = vec![0; msg.buffer_len()];
            msg.serialize(&mut again);
            assert_eq!(again, bytes, "re-emission differs for {msg:?}");
            println!("capture {}", fixtures::to_hex(bytes));
            messages += 1;
            rest = &rest[(len + 3) & !3..];
        }
    }
    assert!(messages >= 6, "{messages}");
}
