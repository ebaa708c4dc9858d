//! Maglev (`mh`) and source hashing (`sh`) on the host kernel: the same
//! server set gives the same table and the same choice per client in two
//! independent loaders (two "nodes"), whatever order the servers came in,
//! and the choice is the one `rvs_ebpf::sched` computes.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed expect is a failed test

mod common;

use std::net::{IpAddr, SocketAddr};

use common::{Rig, apply};
use rvs_ebpf::sched;
use rvs_model::admin::Op;
use rvs_model::{Destination, Scheduler, Service, ServiceKey};
use rvs_testrig::cgroup::{BpfFs, Cgroup, Client, ClientSpec, Mode};

/// The client side: the test binary re-run inside the cgroup.
#[test]
fn client_role() {
    rvs_testrig::cgroup::serve_client_role();
}

fn vip() -> SocketAddr {
    "10.96.0.10:80".parse().unwrap()
}

fn dest(host: u8) -> Destination {
    Destination::masquerade(SocketAddr::from(([10, 77, 0, host], 8080)))
}

#[test]
fn maglev_chooses_the_same_server_on_two_nodes() {
    let Some(rig) = Rig::or_skip("maglev_chooses_the_same_server_on_two_nodes") else {
        return;
    };
    let _b: Vec<_> = (2..7)
        .map(|h| rig.tcp_backend(h, &format!("b{h}")))
        .collect();
    let key = ServiceKey::tcp(vip());
    // Node A adds the servers in one order...
    let mut a = rig.attach();
    let mut ops = vec![Op::AddService(Service::new(key, Scheduler::Maglev))];
    ops.extend((2..7).map(|h| Op::AddDestination(key, dest(h))));
    apply(&mut a, &ops);
    // ...node B (its own cgroup and pins) in another.
    let cgroup_b = Cgroup::new().unwrap();
    let fs_b = BpfFs::new().unwrap();
    let mut opts_b = rig.options();
    opts_b.cgroup = cgroup_b.path().to_owned();
    opts_b.pin_dir = fs_b.path().join("rvs");
    let mut b = rvs_ebpf::SocketLb::attach(opts_b).unwrap();
    let mut ops = vec![Op::AddService(Service::new(key, Scheduler::Maglev))];
    ops.extend([4, 6, 2, 5, 3].map(|h| Op::AddDestination(key, dest(h))));
    apply(&mut b, &ops);
    let table = a.selection_table(&key).unwrap();
    assert_eq!(table.len(), 4093);
    assert_eq!(Some(table.clone()), b.selection_table(&key));
    // Clients with their own source address: the same server through
    // either node, and the one the table says.
    for src in 11..20u8 {
        let ip: IpAddr = format!("10.77.0.{src}").parse().unwrap();
        let mut spec = ClientSpec::new(Mode::Tcp, vip(), 3);
        spec.bind = Some(ip);
        let via_a = rig.run(&spec);
        let via_b = Client::run(&cgroup_b, Some(&rig.client), &common::CLIENT_ARGS, &spec).unwrap();
        assert_eq!(via_a.counts().len(), 1, "{via_a:?}");
        assert_eq!(via_a.replies(), via_b.replies(), "source {ip}");
        let slot = sched::hsiphash_u32(sched::fold(ip), sched::MH_KEY1) % 4093;
        let expected = table[slot as usize].unwrap();
        assert_eq!(
            via_a.replies()[0],
            format!("b{}", expected.ip().to_string().rsplit('.').next().unwrap())
        );
    }
    a.detach().unwrap();
    b.detach().unwrap();
}

#[test]
fn sh_hashes_the_bound_source_as_the_kernel_does() {
    let Some(rig) = Rig::or_skip("sh_hashes_the_bound_source_as_the_kernel_does") else {
        return;
    };
    let _b: Vec<_> = (2..5)
        .map(|h| rig.tcp_backend(h, &format!("b{h}")))
        .collect();
    let key = ServiceKey::tcp(vip());
    let mut lb = rig.attach();
    let mut ops = vec![Op::AddService(Service::new(key, Scheduler::SourceHashing))];
    ops.extend((2..5).map(|h| Op::AddDestination(key, dest(h))));
    apply(&mut lb, &ops);
    let table = lb.selection_table(&key).unwrap();
    for src in 11..20u8 {
        let ip: IpAddr = format!("10.77.0.{src}").parse().unwrap();
        let mut spec = ClientSpec::new(Mode::Tcp, vip(), 2);
        spec.bind = Some(ip);
        let report = rig.run(&spec);
        let bucket = sched::hash_32(sched::fold(ip), 8) as usize;
        let expected = table[bucket].unwrap();
        let name = format!("b{}", expected.ip().to_string().rsplit('.').next().unwrap());
        assert_eq!(report.replies(), [name.as_str(), name.as_str()], "{ip}");
    }
    lb.detach().unwrap();
}

#[test]
fn mh_fallback_probes_past_a_quiesced_server_as_the_kernel_does() {
    let Some(rig) = Rig::or_skip("mh_fallback_probes_past_a_quiesced_server_as_the_kernel_does")
    else {
        return;
    };
    let _b: Vec<_> = (2..5)
        .map(|h| rig.tcp_backend(h, &format!("b{h}")))
        .collect();
    let key = ServiceKey::tcp(vip());
    let mut lb = rig.attach();
    let mut svc = Service::new(key, Scheduler::Maglev);
    svc.flags = svc.flags.with(rvs_model::ServiceFlags::SCHED1, true); // mh-fallback
    let mut ops = vec![Op::AddService(svc)];
    ops.extend((2..5).map(|h| Op::AddDestination(key, dest(h))));
    apply(&mut lb, &ops);
    let mut quiet = dest(3);
    quiet.weight = 0;
    apply(&mut lb, &[Op::EditDestination(key, quiet)]);
    // The table is built from last weights: b3 keeps its slots.
    let table = lb.selection_table(&key).unwrap();
    let members: Vec<sched::Member> = (2..5u8)
        .map(|h| sched::Member {
            addr: dest(h).addr,
            weight: i32::from(h != 3),
            last_weight: 1,
        })
        .collect();
    let index: Vec<Option<usize>> = table
        .iter()
        .map(|s| s.and_then(|a| members.iter().position(|m| m.addr == a)))
        .collect();
    let mut fell_back = 0;
    for src in 11..20u8 {
        let ip: IpAddr = format!("10.77.0.{src}").parse().unwrap();
        let mut spec = ClientSpec::new(Mode::Tcp, vip(), 1);
        spec.bind = Some(ip);
        let report = rig.run(&spec);
        let base = sched::fold(ip);
        let direct = sched::mh_lookup(&index, &members, base, false);
        let expected = sched::mh_lookup(&index, &members, base, true).unwrap();
        fell_back += usize::from(direct.is_none());
        let name = format!(
            "b{}",
            members[expected]
                .addr
                .ip()
                .to_string()
                .rsplit('.')
                .next()
                .unwrap()
        );
        assert_eq!(report.replies(), [name.as_str()], "{ip}");
    }
    assert!(fell_back > 0, "some source hashed onto b3");
    lb.detach().unwrap();
}
