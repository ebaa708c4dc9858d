//! Rebalancing long-lived connections after a scale-up, per dataplane,
//! with real clients (issue 13).
//!
//! `cargo bench -p rvs-ebpf --bench rebalance` (the eBPF half needs root,
//! cgroup v2, bpffs and Linux ≥ 6.5; it is left out, saying why, when
//! they are missing). Each round runs, for the userspace dataplane (on
//! loopback) and then for the eBPF dataplane (in the rig's namespaces),
//! with HTTP/1.1 and then HTTP/2 clients, one virtual service with the
//! `idle` policy and one with it off side by side: 2 keep-alive real
//! servers each, scaled to 4 after 10 s, under 40 clients per service
//! (urllib3, or hyper-h2 with each request a stream of one connection;
//! one process and connection each, a request every 100–500 ms, no
//! retries) for 45 s; about 200 s a round. Printed per round
//! and as medians over the rounds: the time from the scale-up until the
//! requests of a 5 s window are even within ±20 % (the goal: ≤ 30 s),
//! failed requests as the clients saw them (the goal: 0), connections
//! closed, and the requests per real server in the last 10 s.
//!
//! `RVS_BENCH_ROUNDS` (default 3) sets the rounds. The requests per real
//! server in 2.5 s windows are appended to `RVS_BENCH_OUT` (default
//! `target/bench/rebalance.csv`); `cargo run -p rvs-benchplot --
//! --rebalance-csv FILE` draws them (`docs/bench/rebalance_http*.png`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr,
    missing_docs
)]

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../../userspace/tests/common/rebalance.rs"]
mod userspace_scenario;

use std::net::SocketAddr;

use common::rebalance::{self as scenario, RUN_SECS, SCALE_AT, WINDOW};
use rvs_testrig::keepalive::{self, Http, Requests};

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
    /// Requests per real server in each `STEP`-long window.
    windows: Vec<(f64, [u32; 4])>,
    /// The first failed requests as the clients reported them.
    failures: Vec<String>,
}

/// The windows of the CSV the figures are drawn from.
const STEP: f64 = 2.5;

impl Row {
    fn of(r: &Requests, closed: u64) -> Row {
        let windows = (0..)
            .map(|i| f64::from(i) * STEP)
            .take_while(|&t| t + STEP <= RUN_SECS)
            .map(|t| (t, r.per_backend(t, t + STEP)))
            .collect();
        Row {
            requests: r.ok.len() + r.failed.len(),
            failed: r.failed.len(),
            closed,
            even_after: r.even_after(SCALE_AT, WINDOW, RUN_SECS - SCALE_AT, 0.2),
            late: r.per_backend(RUN_SECS - 10.0, RUN_SECS),
            windows,
            failures: r.failed.iter().take(5).cloned().collect(),
        }
    }

    /// Its CSV lines (`dataplane,http,policy,round,from_s,rs0..rs3`).
    fn csv(&self, name: &str, policy: &str, round: usize) -> String {
        let (dataplane, http) = name.split_once(" | ").unwrap_or((name, ""));
        self.windows
            .iter()
            .map(|(t, n)| {
                format!(
                    "{dataplane},{http},{policy},{round},{t},{},{},{},{}\n",
                    n[0], n[1], n[2], n[3]
                )
            })
            .collect()
    }
}

/// Appends `text` to the CSV at `RVS_BENCH_OUT` (default
/// `target/bench/rebalance.csv`), with its header when new.
fn append_csv(text: &str) {
    use std::io::Write as _;
    let path = std::env::var("RVS_BENCH_OUT").unwrap_or_else(|_| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../target/bench/rebalance.csv"
        )
        .to_owned()
    });
    let path = std::path::Path::new(&path);
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let new = !path.exists();
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path);
    let written = file.and_then(|mut f| {
        if new {
            f.write_all(b"dataplane,http,policy,round,from_s,rs0,rs1,rs2,rs3\n")?;
        }
        f.write_all(text.as_bytes())
    });
    if let Err(e) = written {
        eprintln!("rebalance bench: writing {}: {e}", path.display());
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
fn userspace_round(http: Http) -> (Row, Row) {
    let o = userspace_scenario::run(http);
    let off = o
        .statuses
        .iter()
        .map(|s| s.service)
        .find(|k| *k != o.idle_service);
    (
        Row::of(&o.idle, o.closed(&o.idle_service)),
        Row::of(&o.control, off.map_or(0, |k| o.closed(&k))),
    )
}

/// The eBPF dataplane, in a fresh rig; `Err`: why it cannot run here.
fn ebpf_round(http: Http) -> Result<(Row, Row), String> {
    // The rig's own skip rule would fail the bench under
    // RVS_REQUIRE_PRIVILEGED; a bench only reports.
    let rig = common::Rig::or_skip("rebalance bench").ok_or("no root, cgroup v2 or bpffs")?;
    let outcome = scenario::run(&rig, http).map_err(|e| e.to_string())?;
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

fn print_row(name: &str, policy: &str, row: &Row) {
    let even = row
        .even_after
        .map_or_else(|| "never".to_owned(), |s| format!("{s:.1} s"));
    println!(
        "| {name} | {policy} | {} | {} | {} | {even} | {:?} |",
        row.requests, row.failed, row.closed, row.late
    );
    for line in &row.failures {
        eprintln!("rebalance bench: {name} {policy}: failed: {line}");
    }
}

fn main() {
    let protocols: Vec<Http> = [Http::V1, Http::V2]
        .into_iter()
        .filter(|&http| match keepalive::python(http) {
            Ok(_) => true,
            Err(why) => {
                eprintln!("rebalance bench: {http} left out: {why}");
                false
            }
        })
        .collect();
    let rounds: usize = std::env::var("RVS_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let mut results: Vec<(String, Vec<(Row, Row)>)> = Vec::new();
    let mut ebpf_missing = None;
    println!(
        "| dataplane | clients | policy | requests | failed | closed | even (±20 %) after the scale-up | requests per real server, last 10 s |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let mut rows: Vec<(String, (Row, Row))> = Vec::new();
    for round in 1..=rounds {
        for &http in &protocols {
            eprintln!("round {round}/{rounds}: userspace, {http}");
            rows.push((format!("userspace | {http}"), userspace_round(http)));
            if ebpf_missing.is_none() {
                eprintln!("round {round}/{rounds}: ebpf, {http}");
                match ebpf_round(http) {
                    Ok(pair) => rows.push((format!("ebpf | {http}"), pair)),
                    Err(why) => {
                        eprintln!("the eBPF dataplane is left out: {why}");
                        ebpf_missing = Some(why);
                    }
                }
            }
            for (name, pair) in rows.drain(..) {
                print_row(&name, "idle", &pair.0);
                print_row(&name, "off", &pair.1);
                append_csv(&(pair.0.csv(&name, "idle", round) + &pair.1.csv(&name, "off", round)));
                match results.iter_mut().find(|(n, _)| *n == name) {
                    Some((_, pairs)) => pairs.push(pair),
                    None => results.push((name, vec![pair])),
                }
            }
        }
    }
    println!(
        "\nMedians over {rounds} rounds (goals: even within 30 s of the scale-up, 0 failed requests; the control stays skewed):"
    );
    println!(
        "| dataplane | clients | policy | failed (sum) | closed (median) | even after (median) | rounds even within 30 s |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (name, pairs) in &results {
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
                "| {name} | {policy} | {failed} | {closed:.0} | {even} | {within}/{} |",
                rows.len()
            );
        }
    }
}
