//! The rebalancing scenario on the userspace dataplane, shared by
//! `tests/rebalance_loopback.rs` and rvs-ebpf's `benches/rebalance.rs`:
//! one dataplane on loopback with two virtual services side by side, one
//! with the `idle` policy and one with it off (the control), each with 2
//! keep-alive real servers scaled to 4 at `SCALE_AT` under 40 clients
//! (urllib3 for HTTP/1.1, hyper-h2 for HTTP/2).

#![allow(dead_code, unreachable_pub, clippy::expect_used, clippy::unwrap_used)] // test code

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use rvs_model::admin::{Admin as _, Op, RebalanceStatus};
use rvs_model::{Destination, Protocol, Scheduler, Service, ServiceKey};
use rvs_rebalance::Policy;
use rvs_testrig::keepalive::{self, Http, Requests};
use rvs_userspace::{Dataplane, Options};

pub const CLIENTS: usize = 40;
pub const SCALE_AT: f64 = 10.0;
pub const RUN_SECS: f64 = 45.0;
pub const WINDOW: f64 = 5.0;

/// What one run saw.
pub struct Outcome {
    /// The clients of the service with the `idle` policy.
    pub idle: Requests,
    /// The control's clients.
    pub control: Requests,
    /// The idle service's key.
    pub idle_service: ServiceKey,
    /// What the dataplane reports (`rvsadm --rebalancing`).
    pub statuses: Vec<RebalanceStatus>,
}

impl Outcome {
    /// Connections closed to rebalance the service `key`.
    pub fn closed(&self, key: &ServiceKey) -> u64 {
        self.statuses
            .iter()
            .filter(|s| s.service == *key)
            .flat_map(|s| s.closed.iter().map(|&(_, n)| n))
            .sum()
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One run of both services on a fresh dataplane.
pub fn run(http: Http) -> Outcome {
    let dp = Dataplane::start(Options {
        workers: 1,
        instance_lock: None,
        ..Options::default()
    })
    .unwrap();
    let mut servers = Vec::new();
    let mut setup = |policy: Policy| {
        let vip = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let key = ServiceKey::Addr {
            protocol: Protocol::Tcp,
            addr: vip,
        };
        let dests: Vec<Destination> = (0..4)
            .map(|id| {
                let addr = match http {
                    Http::V1 => {
                        let l = TcpListener::bind("127.0.0.1:0").unwrap();
                        let addr = l.local_addr().unwrap();
                        keepalive::http_backend(l, id);
                        addr
                    }
                    Http::V2 => {
                        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
                        servers.push(keepalive::H2Server::start(None, addr, id).unwrap());
                        addr
                    }
                };
                Destination::masquerade(addr)
            })
            .collect();
        let mut admin = dp.admin();
        admin
            .apply(&Op::AddService(Service::new(key, Scheduler::RoundRobin)))
            .unwrap();
        for d in &dests[..2] {
            admin.apply(&Op::AddDestination(key, d.clone())).unwrap();
        }
        dp.sched()
            .rebalancing()
            .set(Protocol::Tcp, vip, Some(policy));
        rvs_testrig::eventually("the listener", Duration::from_secs(10), || {
            TcpStream::connect(vip).is_ok()
        });
        (vip, key, dests)
    };
    let (idle_vip, idle_key, idle_dests) = setup(Policy::IDLE);
    let (off_vip, off_key, off_dests) = setup(Policy::OFF);
    let scale = |key: ServiceKey, dests: &[Destination]| {
        let mut admin = dp.admin();
        for d in &dests[2..] {
            admin.apply(&Op::AddDestination(key, d.clone())).unwrap();
        }
    };
    let python = keepalive::python(http).expect("python3 for the clients");
    let clients = |vip: SocketAddr| {
        let mut cmd = std::process::Command::new(&python);
        cmd.args(keepalive::clients_args_for(
            http,
            "127.0.0.1",
            vip.port(),
            CLIENTS,
            RUN_SECS,
        ));
        cmd
    };
    let (idle, control) = std::thread::scope(|scope| {
        let control = scope.spawn(|| {
            keepalive::run_scaled(clients(off_vip), SCALE_AT, || scale(off_key, &off_dests))
        });
        let idle =
            keepalive::run_scaled(clients(idle_vip), SCALE_AT, || scale(idle_key, &idle_dests));
        (idle, control.join())
    });
    let statuses = dp.sched().rebalancing().statuses();
    dp.shutdown(Duration::from_millis(200));
    drop(servers);
    Outcome {
        idle: idle.expect("idle clients"),
        control: control.unwrap().expect("control clients"),
        idle_service: idle_key,
        statuses,
    }
}
