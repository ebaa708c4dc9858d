//! Rebalancing long-lived connections after a scale-up, per dataplane,
//! with real clients (issue 13).
//!
//! `cargo bench -p rvs-ebpf --bench rebalance` (the eBPF half needs root,
//! cgroup v2, bpffs and Linux ≥ 6.5; it is left out, saying why, when
//! they are missing). Each round runs, for the userspace dataplane (on
//! loopback) and then for the eBPF dataplane (in the rig's namespaces),
//! one virtual service with the `idle` policy and one with it off side by
//! side: 2 keep-alive real servers each, scaled to 4 after 10 s, under 40
//! urllib3 clients per service (one process and pooled connection each,
//! a request every 100–500 ms, no retries) for 45 s. Printed per round
//! and as medians over the rounds: the time from the scale-up until the
//! requests of a 5 s window are even within ±20 % (the goal: ≤ 30 s),
//! failed requests as the clients saw them (the goal: 0), connections
//! closed, and the requests per real server in the last 10 s.
//!
//! `RVS_BENCH_ROUNDS` (default 3) sets the rounds.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr,
    missing_docs
)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use common::rebalance::{self as scenario, CLIENTS, RUN_SECS, SCALE_AT, WINDOW};
use rvs_model::admin::{Admin as _, Op};
use rvs_model::{Destination, Protocol, Scheduler, Service, ServiceKey};
use rvs_rebalance::Policy;
use rvs_testrig::keepalive::{self, Requests};

/// One service's run, reduced.
#[derive(Clone, Debug)]
struct Row {
    requests: usize,
    failed: usize,
    closed: u64,
    /// Seconds from the scale-up to even (±20 %); `None`: not within the
    /// run.
    even_after: Option<f64>,
    late: [u32; 4],
}

impl Row {
    fn of(r: &Requests, closed: u64) -> Row {
        Row {
            requests: r.ok.len() + r.failed.len(),
            failed: r.failed.len(),
            closed,
            even_after: r.even_after(SCALE_AT, WINDOW, RUN_SECS - SCALE_AT, 0.2),
            late: r.per_backend(RUN_SECS - 10.0, RUN_SECS),
        }
    }
}

fn closed_of(statuses: &[rvs_model::admin::RebalanceStatus], vip: SocketAddr) -> u64 {
    statuses
        .iter()
        .filter(|s| s.service == scenario::service(vip))
        .flat_map(|s| s.closed.iter().map(|&(_, n)| n))
        .sum()
}

/// The userspace dataplane: both services on one dataplane, on loopback.
fn userspace_round() -> (Row, Row) {
    let dp = rvs_userspace::Dataplane::start(rvs_userspace::Options {
        workers: 1,
        instance_lock: None,
        ..rvs_userspace::Options::default()
    })
    .unwrap();
    let mut admin = dp.admin();
    let mut setup = |policy: Policy| {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let vip = SocketAddr::from(([127, 0, 0, 1], port));
        let key = ServiceKey::Addr {
            protocol: Protocol::Tcp,
            addr: vip,
        };
        let dests: Vec<Destination> = (0..4)
            .map(|id| {
                let l = TcpListener::bind("127.0.0.1:0").unwrap();
                let addr = l.local_addr().unwrap();
                keepalive::http_backend(l, id);
                Destination::masquerade(addr)
            })
            .collect();
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
    let clients =
        |vip: SocketAddr| keepalive::clients_command("127.0.0.1", vip.port(), CLIENTS, RUN_SECS);
    let (idle, control) = std::thread::scope(|scope| {
        let control = scope.spawn(|| {
            keepalive::run_scaled(clients(off_vip), SCALE_AT, || scale(off_key, &off_dests))
        });
        let idle =
            keepalive::run_scaled(clients(idle_vip), SCALE_AT, || scale(idle_key, &idle_dests));
        (idle.unwrap(), control.join().unwrap().unwrap())
    });
    let statuses = dp.sched().rebalancing().statuses();
    dp.shutdown(Duration::from_millis(200));
    (
        Row::of(&idle, closed_of(&statuses, idle_vip)),
        Row::of(&control, closed_of(&statuses, off_vip)),
    )
}

/// The eBPF dataplane, in a fresh rig; `Err`: why it cannot run here.
fn ebpf_round() -> Result<(Row, Row), String> {
    // The rig's own skip rule would fail the bench under
    // RVS_REQUIRE_PRIVILEGED; a bench only reports.
    let rig = common::Rig::or_skip("rebalance bench").ok_or("no root, cgroup v2 or bpffs")?;
    let outcome = scenario::run(&rig).map_err(|e| e.to_string())?;
    let idle_vip: SocketAddr = scenario::IDLE_VIP.parse().unwrap();
    let off_vip: SocketAddr = scenario::OFF_VIP.parse().unwrap();
    Ok((
        Row::of(&outcome.idle, closed_of(&outcome.statuses, idle_vip)),
        Row::of(&outcome.control, closed_of(&outcome.statuses, off_vip)),
    ))
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[v.len() / 2])
}

fn print_row(dataplane: &str, policy: &str, row: &Row) {
    let even = row
        .even_after
        .map_or_else(|| "never".to_owned(), |s| format!("{s:.1} s"));
    println!(
        "| {dataplane} | {policy} | {} | {} | {} | {even} | {:?} |",
        row.requests, row.failed, row.closed, row.late
    );
}

fn main() {
    if let Err(why) = keepalive::python_urllib3() {
        eprintln!("rebalance bench: skipped: {why}");
        return;
    }
    let rounds: usize = std::env::var("RVS_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let mut results: Vec<(&str, Vec<(Row, Row)>)> =
        vec![("userspace", Vec::new()), ("ebpf", Vec::new())];
    let mut ebpf_missing = None;
    println!(
        "| dataplane | policy | requests | failed | closed | even (±20 %) after the scale-up | requests per real server, last 10 s |"
    );
    println!("|---|---|---|---|---|---|---|");
    for round in 1..=rounds {
        eprintln!("round {round}/{rounds}: userspace");
        let pair = userspace_round();
        print_row("userspace", "idle", &pair.0);
        print_row("userspace", "off", &pair.1);
        results[0].1.push(pair);
        if ebpf_missing.is_none() {
            eprintln!("round {round}/{rounds}: ebpf");
            match ebpf_round() {
                Ok(pair) => {
                    print_row("ebpf", "idle", &pair.0);
                    print_row("ebpf", "off", &pair.1);
                    results[1].1.push(pair);
                }
                Err(why) => {
                    eprintln!("the eBPF dataplane is left out: {why}");
                    ebpf_missing = Some(why);
                }
            }
        }
    }
    println!(
        "\nMedians over {rounds} rounds (goals: even within 30 s of the scale-up, 0 failed requests; the control stays skewed):"
    );
    println!(
        "| dataplane | policy | failed (sum) | closed (median) | even after (median) | rounds even within 30 s |"
    );
    println!("|---|---|---|---|---|---|");
    for (dataplane, pairs) in &results {
        if pairs.is_empty() {
            continue;
        }
        for (policy, pick) in [("idle", 0), ("off", 1)] {
            let rows: Vec<&Row> = pairs
                .iter()
                .map(|p| if pick == 0 { &p.0 } else { &p.1 })
                .collect();
            let failed: usize = rows.iter().map(|r| r.failed).sum();
            let closed = median(rows.iter().map(|r| r.closed as f64).collect()).unwrap_or(0.0);
            let evens: Vec<f64> = rows.iter().filter_map(|r| r.even_after).collect();
            let within = evens.iter().filter(|&&s| s <= 30.0).count();
            let even = median(evens).map_or_else(|| "never".to_owned(), |s| format!("{s:.1} s"));
            println!(
                "| {dataplane} | {policy} | {failed} | {closed:.0} | {even} | {within}/{} |",
                rows.len()
            );
        }
    }
}
