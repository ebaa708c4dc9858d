//! The socket LB against a direct connection and the userspace forwarder.
//!
//! `cargo bench -p rvs-ebpf --bench socket_lb` (root, host kernel with
//! BPF and cgroup v2; skips otherwise). A client namespace and a backend
//! namespace joined by a veth pair; client processes in a child cgroup
//! (with the programs attached) or in a plain one (direct and userspace).
//! At 1, 1k, 10k and 20k Services, interleaved rounds of new TCP
//! connections to the LAST service: `connect()` latency, and `connect()`
//! to the backend's first answer (what the userspace forwarder, which
//! accepts locally and connects onwards, really costs). Medians of the
//! per-round p50 and p99. Then: 20k Services loaded in one batch, and one
//! endpoint change (from `apply_batch` returning, the next connection
//! must see it). Goals are printed, not asserted.
//!
//! `RVS_BENCH_ROUNDS` (default 5) and `RVS_BENCH_CONNS` (default 1000)
//! size the rounds.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr,
    missing_docs
)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rvs_ebpf::{Options, SocketLb};
use rvs_model::admin::{Admin, Op};
use rvs_model::{Destination, Scheduler, Service, ServiceKey};
use rvs_testrig::Netns;
use rvs_testrig::backend::Backend;
use rvs_testrig::cgroup::{Attempt, BpfFs, Cgroup, Client, ClientReport, ClientSpec, Mode};

const SIZES: [usize; 4] = [1, 1_000, 10_000, 20_000];

fn env_or(name: &str, default: u32) -> u32 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn ebpf_vip(i: usize) -> SocketAddr {
    SocketAddr::from(([10, 96, (i / 250) as u8, (i % 250 + 1) as u8], 80))
}

fn user_vip(i: usize) -> SocketAddr {
    SocketAddr::from(([10, 97, 0, 1], 20_000 + i as u16))
}

fn backend() -> SocketAddr {
    "10.77.0.2:8080".parse().unwrap()
}

fn service_ops(vip: SocketAddr, to: SocketAddr) -> [Op; 2] {
    let key = ServiceKey::tcp(vip);
    [
        Op::AddService(Service::new(key, Scheduler::RoundRobin)),
        Op::AddDestination(key, Destination::masquerade(to)),
    ]
}

fn apply_all(admin: &mut dyn Admin, ops: &[Op]) {
    for (op, r) in ops.iter().zip(admin.apply_batch(ops)) {
        if let Err(e) = r {
            panic!("{op:?}: {e}");
        }
    }
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i] as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// p50 and p99 of one round, in µs.
fn summary(report: &ClientReport) -> (f64, f64, usize) {
    let mut nanos: Vec<u64> = report
        .attempts
        .iter()
        .filter_map(|a| match a {
            Attempt::Ok { nanos, .. } => Some(*nanos),
            Attempt::Err(_) => None,
        })
        .collect();
    nanos.sort_unstable();
    (
        percentile(&nanos, 0.5) / 1000.0,
        percentile(&nanos, 0.99) / 1000.0,
        report.errors().len(),
    )
}

#[derive(Default)]
struct Series {
    p50: Vec<f64>,
    p99: Vec<f64>,
    errors: usize,
}

impl Series {
    fn add(&mut self, report: &ClientReport) {
        let (p50, p99, errors) = summary(report);
        self.p50.push(p50);
        self.p99.push(p99);
        self.errors += errors;
    }

    fn p50(&self) -> f64 {
        median(self.p50.clone())
    }

    fn p99(&self) -> f64 {
        median(self.p99.clone())
    }
}

fn main() {
    rvs_testrig::cgroup::serve_client_role();
    if let Err(why) = run() {
        eprintln!("SKIP socket_lb bench: {why}");
    }
}

fn run() -> Result<(), String> {
    if !rvs_ebpf::programs_built() {
        return Err("built without clang: no eBPF programs".into());
    }
    let rounds = env_or("RVS_BENCH_ROUNDS", 5);
    let conns = env_or("RVS_BENCH_CONNS", 1000);
    let lb_cgroup = Cgroup::new().map_err(|e| e.to_string())?;
    let plain_cgroup = Cgroup::new().map_err(|e| e.to_string())?;
    let fs = BpfFs::new().map_err(|e| e.to_string())?;
    let client = Netns::new().map_err(|e| e.to_string())?;
    let server = Netns::new().map_err(|e| e.to_string())?;
    client
        .link(&server, "10.77.0.1/24", "10.77.0.2/24")
        .map_err(|e| e.to_string())?;
    server
        .run("ip", &["addr", "add", "10.77.0.3/24", "dev", "veth0"])
        .map_err(|e| e.to_string())?;
    client
        .run("ip", &["addr", "add", "10.97.0.1/32", "dev", "lo"])
        .map_err(|e| e.to_string())?;
    let _b2 = server
        .enter(|| Backend::tcp(backend(), "b2"))
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let _b3 = server
        .enter(|| Backend::tcp("10.77.0.3:8080".parse().unwrap(), "b3"))
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;

    // The userspace dataplane holds a listener per Service: it runs only
    // at sizes the open-file limit leaves room for (with 4k to spare).
    let fd_limit = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map_or(1024, |(_, hard)| hard);
    let mut opts = Options::new(lb_cgroup.path(), fs.path().join("rvs"));
    opts.max_services = 32_768;
    opts.max_backends = 65_536;
    opts.max_slots = 131_072;
    let mut lb = SocketLb::attach(opts.clone()).map_err(|e| e.to_string())?;
    let user = client
        .enter(|| {
            rvs_userspace::Dataplane::start(rvs_userspace::Options {
                workers: 1,
                instance_lock: Some("rvs-ebpf-bench".into()),
                ..rvs_userspace::Options::default()
            })
        })
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let mut user_admin = user.admin();

    let spec = |mode: Mode, target: SocketAddr| {
        let mut s = ClientSpec::new(mode, target, conns);
        s.within = Duration::from_secs(30);
        s
    };
    let run_in = |cgroup: &Cgroup, spec: &ClientSpec| -> ClientReport {
        Client::run(cgroup, Some(&client), &[], spec).expect("client")
    };

    println!(
        "socket LB bench: {rounds} interleaved rounds of {conns} new TCP connections to the last Service; \
         medians of per-round p50/p99, µs"
    );
    println!();
    println!(
        "| Services | target | connect() p50 | p99 | ratio p50 vs direct | connect→answer p50 | p99 | ratio | errors |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut loaded = 0;
    let mut at_20k = (f64::NAN, f64::NAN);
    for &n in &SIZES {
        let ops: Vec<Op> = (loaded..n)
            .flat_map(|i| service_ops(ebpf_vip(i), backend()))
            .collect();
        apply_all(&mut lb, &ops);
        let with_user = (n as u64) + 4096 <= fd_limit;
        if with_user {
            let ops: Vec<Op> = (loaded..n)
                .flat_map(|i| service_ops(user_vip(i), backend()))
                .collect();
            apply_all(&mut user_admin, &ops);
        } else {
            apply_all(&mut user_admin, &[Op::Flush]);
        }
        loaded = n;
        let last = n - 1;
        // The userspace listeners come up in the background.
        let probe = ClientSpec {
            count: 1,
            ..spec(Mode::Tcp, user_vip(last))
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while with_user && !run_in(&plain_cgroup, &probe).errors().is_empty() {
            if Instant::now() > deadline {
                return Err(format!(
                    "userspace listener for {} never came up",
                    user_vip(last)
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let mut targets: Vec<(&str, &Cgroup, SocketAddr)> = vec![
            ("direct", &plain_cgroup, backend()),
            ("socket LB", &lb_cgroup, ebpf_vip(last)),
        ];
        if with_user {
            targets.push(("userspace", &plain_cgroup, user_vip(last)));
        }
        let mut connect: Vec<Series> = (0..3).map(|_| Series::default()).collect();
        let mut answer: Vec<Series> = (0..3).map(|_| Series::default()).collect();
        for _ in 0..rounds {
            for (i, (_, cgroup, target)) in targets.iter().enumerate() {
                connect[i].add(&run_in(cgroup, &spec(Mode::TcpConnect, *target)));
                answer[i].add(&run_in(cgroup, &spec(Mode::Tcp, *target)));
            }
        }
        let (d50, da50) = (connect[0].p50(), answer[0].p50());
        for (i, (name, _, _)) in targets.iter().enumerate() {
            let (c, a) = (&connect[i], &answer[i]);
            println!(
                "| {n} | {name} | {:.1} | {:.1} | {:.2}× | {:.1} | {:.1} | {:.2}× | {} |",
                c.p50(),
                c.p99(),
                c.p50() / d50,
                a.p50(),
                a.p99(),
                a.p50() / da50,
                c.errors + a.errors
            );
        }
        if !with_user {
            println!(
                "| {n} | userspace | n/a: {n} listeners exceed the open-file limit ({fd_limit}) | | | | | | |"
            );
        }
        if n == 20_000 {
            at_20k = (connect[1].p50() / d50, answer[1].p50() / da50);
        }
    }
    drop(user_admin);
    user.shutdown(Duration::from_secs(2));

    // 20k Services in one batch, into fresh maps (a node's first start).
    lb.detach().map_err(|e| e.to_string())?;
    let mut lb = SocketLb::attach(opts.clone()).map_err(|e| e.to_string())?;
    let ops: Vec<Op> = (0..20_000)
        .flat_map(|i| service_ops(ebpf_vip(i), backend()))
        .collect();
    let t = Instant::now();
    apply_all(&mut lb, &ops);
    let load = t.elapsed();
    // The planning alone (no syscalls), and the writes it produced.
    let limits = rvs_ebpf::plan::Limits {
        max_services: opts.max_services,
        max_backends: opts.max_backends,
        max_slots: opts.max_slots,
        maglev_size: opts.maglev_size,
        wrr_limit: opts.wrr_limit,
    };
    let t = Instant::now();
    let mut table = rvs_ebpf::plan::Table::new(limits);
    for op in &ops {
        table.apply(op).map_err(|e| e.to_string())?;
    }
    let writes = table.commit().len();
    let plan = t.elapsed();

    // One endpoint change at a time on the last Service, under a client
    // that connects all along: every connection that starts after
    // apply_batch returned must reach the new server.
    let key = ServiceKey::tcp(ebpf_vip(19_999));
    let b3: SocketAddr = "10.77.0.3:8080".parse().unwrap();
    apply_all(
        &mut lb,
        &[Op::AddDestination(
            key,
            Destination {
                weight: 0,
                ..Destination::masquerade(b3)
            },
        )],
    );
    let mut loop_spec = ClientSpec::new(Mode::Tcp, ebpf_vip(19_999), 20_000);
    loop_spec.within = Duration::from_secs(3);
    loop_spec.pace = Duration::from_micros(100);
    let looping = Client::spawn(&lb_cgroup, Some(&client), &[], &loop_spec).expect("client");
    std::thread::sleep(Duration::from_millis(200));
    let mut changes: Vec<(u64, u64, &str)> = Vec::new();
    let mut apply_us: Vec<u64> = Vec::new();
    for k in 0..40 {
        let (on, off, name) = if k % 2 == 0 {
            (b3, backend(), "b3")
        } else {
            (backend(), b3, "b2")
        };
        let w = |addr: SocketAddr, weight| Destination {
            weight,
            ..Destination::masquerade(addr)
        };
        let ops = [
            Op::EditDestination(key, w(on, 1)),
            Op::EditDestination(key, w(off, 0)),
        ];
        let called = rvs_testrig::cgroup::now_us();
        let t = Instant::now();
        apply_all(&mut lb, &ops);
        apply_us.push(u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX));
        changes.push((called, rvs_testrig::cgroup::now_us(), name));
        std::thread::sleep(Duration::from_millis(50));
    }
    let report = looping.wait().expect("client loop");
    let (mut checked, mut stale) = (0, 0);
    for a in &report.attempts {
        let Attempt::Ok {
            reply, start_us, ..
        } = a
        else {
            continue;
        };
        // The change whose apply returned before this attempt started,
        // with the next one not yet called.
        let Some(i) = changes.iter().rposition(|c| c.1 <= *start_us) else {
            continue;
        };
        if changes.get(i + 1).is_some_and(|next| next.0 <= *start_us) {
            continue;
        }
        checked += 1;
        if reply != changes[i].2 {
            stale += 1;
        }
    }
    apply_us.sort_unstable();
    println!();
    println!(
        "20k Services (1 real server each) loaded in one apply_batch: {:.3} s, of which planning {:.3} s and {writes} map writes (goal ≤ 0.1 s: {})",
        load.as_secs_f64(),
        plan.as_secs_f64(),
        if load.as_secs_f64() <= 0.1 {
            "met"
        } else {
            "NOT met"
        }
    );
    let change_p50 = percentile(&apply_us, 0.5);
    let change_max = apply_us.last().copied().unwrap_or(0);
    println!(
        "one endpoint change (2 weight edits in one batch) at 20k Services: apply_batch p50 {change_p50:.0} µs, max {change_max} µs; \
         {checked} connections started after a change returned, {stale} reached the old server, {} failed (goal ≤ 1 ms: {})",
        report.errors().len(),
        if change_max <= 1000 && stale == 0 {
            "met"
        } else {
            "NOT met"
        }
    );
    println!(
        "p50 connect() through the socket LB at 20k Services: {:.2}× direct (goal ≤ 1.05×: {}); connect→answer {:.2}×",
        at_20k.0,
        if at_20k.0 <= 1.05 { "met" } else { "NOT met" },
        at_20k.1
    );
    println!(
        "anchor (../shared/reference/anchors.md): eBPF connect4 socket LB 10.1 µs vs 10.4 µs direct, flat to 20k; loaded in 0.07 s"
    );
    lb.detach().map_err(|e| e.to_string())?;
    Ok(())
}
