//! The rig the eBPF tests share: a child cgroup, a private bpffs, a
//! client namespace and a backend namespace joined by a veth pair
//! (client 10.77.0.1 and .11–.19; backends on 10.77.0.2–.9 and
//! fd77::2–9), and client processes run inside the cgroup and the client
//! namespace.

#![allow(dead_code, unreachable_pub, clippy::expect_used)] // test code

pub mod rebalance;

use std::net::SocketAddr;
use std::path::PathBuf;

use rvs_ebpf::{Options, SocketLb};
use rvs_model::admin::{Admin, Op};
use rvs_testrig::Netns;
use rvs_testrig::backend::Backend;
use rvs_testrig::cgroup::{BpfFs, Cgroup, Client, ClientReport, ClientSpec};

/// The arguments that make the test binary run `client_role` only.
pub const CLIENT_ARGS: [&str; 3] = ["--exact", "client_role", "--nocapture"];

pub struct Rig {
    pub cgroup: Cgroup,
    pub bpffs: BpfFs,
    pub client: Netns,
    pub server: Netns,
}

impl Rig {
    /// The rig, or a skip (a failure under RVS_REQUIRE_PRIVILEGED=1).
    pub fn or_skip(test: &str) -> Option<Rig> {
        if !rvs_ebpf::programs_built() {
            rvs_testrig::skip(test, &"rvs-ebpf was built without clang: no eBPF programs");
            return None;
        }
        let cgroup = Cgroup::or_skip(test)?;
        let bpffs = match BpfFs::new() {
            Ok(fs) => fs,
            Err(err) => {
                rvs_testrig::skip(test, &err);
                return None;
            }
        };
        let client = Netns::or_skip(test)?;
        let server = Netns::or_skip(test)?;
        client
            .link(&server, "10.77.0.1/24", "10.77.0.2/24")
            .expect("veth");
        for i in 11..20 {
            client
                .run(
                    "ip",
                    &["addr", "add", &format!("10.77.0.{i}/24"), "dev", "veth0"],
                )
                .expect("client address");
        }
        for i in 3..10 {
            server
                .run(
                    "ip",
                    &["addr", "add", &format!("10.77.0.{i}/24"), "dev", "veth0"],
                )
                .expect("server address");
        }
        client
            .run(
                "ip",
                &["addr", "add", "fd77::1/64", "dev", "veth0", "nodad"],
            )
            .expect("client v6");
        for i in 2..10 {
            server
                .run(
                    "ip",
                    &[
                        "addr",
                        "add",
                        &format!("fd77::{i}/64"),
                        "dev",
                        "veth0",
                        "nodad",
                    ],
                )
                .expect("server v6");
        }
        Some(Rig {
            cgroup,
            bpffs,
            client,
            server,
        })
    }

    pub fn pin_dir(&self) -> PathBuf {
        self.bpffs.path().join("rvs")
    }

    /// Small maps: the tests need few entries.
    pub fn options(&self) -> Options {
        let mut opts = Options::new(self.cgroup.path(), self.pin_dir());
        opts.max_services = 64;
        opts.max_backends = 256;
        opts.max_slots = 16_384;
        opts.max_affinity = 1024;
        opts.max_flows = 4096;
        opts
    }

    pub fn attach(&self) -> SocketLb {
        SocketLb::attach(self.options()).expect("attach the socket LB")
    }

    /// TCP backend `name` on 10.77.0.`host`:8080 in the server namespace.
    pub fn tcp_backend(&self, host: u8, name: &str) -> Backend {
        let addr: SocketAddr = format!("10.77.0.{host}:8080").parse().expect("addr");
        self.server
            .enter(|| Backend::tcp(addr, name))
            .expect("enter")
            .expect("backend")
    }

    /// UDP backend `name` on 10.77.0.`host`:5353.
    pub fn udp_backend(&self, host: u8, name: &str) -> Backend {
        let addr: SocketAddr = format!("10.77.0.{host}:5353").parse().expect("addr");
        self.server
            .enter(|| Backend::udp(addr, name))
            .expect("enter")
            .expect("backend")
    }

    /// Runs a client in the cgroup and the client namespace.
    pub fn run(&self, spec: &ClientSpec) -> ClientReport {
        Client::run(&self.cgroup, Some(&self.client), &CLIENT_ARGS, spec).expect("client")
    }

    pub fn spawn(&self, spec: &ClientSpec) -> Client {
        Client::spawn(&self.cgroup, Some(&self.client), &CLIENT_ARGS, spec).expect("client")
    }
}

/// Applies `ops`, panicking on any refusal.
pub fn apply(lb: &mut SocketLb, ops: &[Op]) {
    for (op, result) in ops.iter().zip(lb.apply_batch(ops)) {
        if let Err(err) = result {
            panic!("{op:?}: {err}");
        }
    }
}
