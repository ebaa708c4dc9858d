//! The rebalancing scenario on the eBPF dataplane, shared by
//! `tests/rebalance_netns.rs` and `benches/rebalance.rs`: two virtual
//! services side by side on one socket LB, one with the `idle` policy and
//! one with it off (the control), each with 2 keep-alive real servers
//! scaled to 4 at `SCALE_AT` under 40 keep-alive clients (urllib3 for
//! HTTP/1.1, hyper-h2 for HTTP/2) in the rig's cgroup and client
//! namespace.

#![allow(dead_code, unreachable_pub, clippy::expect_used, clippy::unwrap_used)] // test code

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rvs_ebpf::rebalance::SocketRebalancer;
use rvs_model::admin::{Op, RebalanceStatus};
use rvs_model::{Destination, Protocol, Scheduler, Service, ServiceKey};
use rvs_rebalance::Policy;
use rvs_testrig::keepalive::{self, Http, Requests};

use super::{Rig, apply};

pub const CLIENTS: usize = 40;
pub const SCALE_AT: f64 = 10.0;
pub const RUN_SECS: f64 = 45.0;
pub const WINDOW: f64 = 5.0;

/// The virtual service with the policy on, and the control's.
pub const IDLE_VIP: &str = "10.96.0.10:80";
pub const OFF_VIP: &str = "10.96.0.11:80";

/// What one run of the scenario saw.
pub struct Outcome {
    /// The HTTP/2 servers, if any (stopped when dropped).
    pub servers: Vec<keepalive::H2Server>,
    /// The clients of the service with the `idle` policy.
    pub idle: Requests,
    /// The control's clients.
    pub control: Requests,
    /// What the dataplane reports (`rvsadm --rebalancing`).
    pub statuses: Vec<RebalanceStatus>,
}

impl Outcome {
    /// Sockets closed to rebalance, over all services.
    pub fn closed(&self) -> u64 {
        self.statuses
            .iter()
            .flat_map(|s| s.closed.iter().map(|&(_, n)| n))
            .sum()
    }
}

pub fn service(vip: SocketAddr) -> ServiceKey {
    ServiceKey::Addr {
        protocol: Protocol::Tcp,
        addr: vip,
    }
}

/// Keep-alive servers `id` 0..4 on 10.77.0.`first + id` (in the rig's
/// backend namespace): HTTP/1.1 on port 8080, threads that live as long
/// as the test process; HTTP/2 on port 8082, processes kept in `servers`.
fn backends(
    rig: &Rig,
    http: Http,
    first: u8,
    servers: &mut Vec<keepalive::H2Server>,
) -> Vec<Destination> {
    (0..4u8)
        .map(|id| {
            let host = first + id;
            let addr: SocketAddr = match http {
                Http::V1 => format!("10.77.0.{host}:8080"),
                Http::V2 => format!("10.77.0.{host}:8082"),
            }
            .parse()
            .unwrap();
            match http {
                Http::V1 => {
                    let listener = rig
                        .server
                        .enter(|| TcpListener::bind(addr))
                        .expect("enter")
                        .expect("bind");
                    keepalive::http_backend(listener, usize::from(id));
                }
                Http::V2 => servers.push(
                    keepalive::H2Server::start(Some(rig.server.name()), addr, usize::from(id))
                        .expect("HTTP/2 server"),
                ),
            }
            Destination::masquerade(addr)
        })
        .collect()
}

/// One run on a fresh socket LB of `rig`; `Err` when this kernel cannot
/// rebalance (no `bpf_sock_destroy`).
pub fn run(rig: &Rig, http: Http) -> Result<Outcome, rvs_ebpf::EbpfError> {
    let lb = Arc::new(Mutex::new(rig.attach()));
    let idle_vip: SocketAddr = IDLE_VIP.parse().unwrap();
    let off_vip: SocketAddr = OFF_VIP.parse().unwrap();
    let mut servers = Vec::new();
    let idle_dests = backends(rig, http, 2, &mut servers);
    let off_dests = backends(rig, http, 6, &mut servers);
    {
        let mut lb = lb.lock().unwrap();
        for (vip, dests) in [(idle_vip, &idle_dests), (off_vip, &off_dests)] {
            let key = service(vip);
            let mut ops = vec![Op::AddService(Service::new(key, Scheduler::RoundRobin))];
            ops.extend(
                dests[..2]
                    .iter()
                    .map(|d| Op::AddDestination(key, d.clone())),
            );
            apply(&mut lb, &ops);
        }
        lb.rebalancing()
            .set((Protocol::Tcp, idle_vip), Some(Policy::IDLE));
    }
    // The programs load at the first tick.
    let mut rebalancer = SocketRebalancer::new(&rig.options());
    rebalancer.tick(Instant::now(), &lb)?;
    assert!(rebalancer.active());
    let stop = Arc::new(AtomicBool::new(false));
    let ticker = {
        let (lb, stop) = (Arc::clone(&lb), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let next = rebalancer.tick(Instant::now(), &lb).unwrap();
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
        })
    };
    let python = keepalive::python(http).expect("python3 for the clients");
    let clients = |vip: SocketAddr| {
        let mut cmd = rig
            .cgroup
            .command(Some(&rig.client), std::path::Path::new(&python));
        cmd.args(keepalive::clients_args_for(
            http,
            &vip.ip().to_string(),
            vip.port(),
            CLIENTS,
            RUN_SECS,
        ));
        cmd
    };
    let scale = |vip: SocketAddr, dests: &[Destination]| {
        let key = service(vip);
        let ops: Vec<Op> = dests[2..]
            .iter()
            .map(|d| Op::AddDestination(key, d.clone()))
            .collect();
        apply(&mut lb.lock().unwrap(), &ops);
    };
    let (idle, control) = std::thread::scope(|scope| {
        let control = scope.spawn(|| {
            keepalive::run_scaled(clients(off_vip), SCALE_AT, || scale(off_vip, &off_dests))
        });
        let idle = keepalive::run_scaled(clients(idle_vip), SCALE_AT, || {
            scale(idle_vip, &idle_dests);
        });
        (idle, control.join())
    });
    let idle = idle.expect("idle clients");
    let control = control.unwrap().expect("control clients");
    stop.store(true, Ordering::Relaxed);
    ticker.join().unwrap();
    let mut lb = lb.lock().unwrap();
    let statuses = lb.rebalancing().statuses();
    Ok(Outcome {
        servers,
        idle,
        control,
        statuses,
    })
}
