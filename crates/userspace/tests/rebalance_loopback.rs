//! Long-lived connections rebalanced after a scale-up, with real clients
//! (issue 13): 40 keep-alive HTTP/1.1 clients of Python's urllib3 (one
//! process and pooled connection each, a request every 100–500 ms, no retries, so a
//! failed request is one the client sees) on a userspace virtual service
//! with 2 real servers, scaled to 4 after 10 s. With the `idle` policy the
//! requests are even within ±20 % within 30 s of the scale-up, with no
//! failed request; with the policy off (the control, run side by side)
//! the new real servers get nothing.
//!
//! Loopback only (127.0.0.1); each run ends after 45 s of client time.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // test code

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use rvs_model::admin::{Admin as _, Op};
use rvs_model::{Destination, Protocol, Scheduler, Service, ServiceKey};
use rvs_rebalance::Policy;
use rvs_userspace::{Dataplane, Options};

const CLIENTS: usize = 40;
const SCALE_AT: f64 = 10.0;
const RUN_SECS: f64 = 45.0;
const WINDOW: f64 = 5.0;

/// Each client, a process of its own (as real clients are; threads behind
/// one interpreter lock would stall between urllib3's check that its
/// pooled connection is alive and the request it then sends): a urllib3
/// pool of one connection, a request, a pause of 100–500 ms; one line per
/// request: `SECONDS ok BACKEND` or `SECONDS fail ERROR`.
const CLIENTS_PY: &str = r#"
import multiprocessing, random, sys, time
import urllib3
host, port, clients, duration = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
def client(args):
    i, start = args
    rng = random.Random(i)
    pool = urllib3.HTTPConnectionPool(host, port, maxsize=1, block=True, retries=False, timeout=5.0)
    lines = []
    while True:
        t = time.time() - start
        if t >= duration:
            break
        try:
            r = pool.request("GET", "/", retries=False)
            lines.append("%.3f ok %s" % (t, r.data.decode().strip()))
        except Exception as e:
            lines.append("%.3f fail %s" % (t, type(e).__name__))
        time.sleep(rng.uniform(0.1, 0.5))
    return lines
if __name__ == "__main__":
    start = time.time()
    with multiprocessing.get_context("fork").Pool(clients) as p:
        for lines in p.map(client, [(i, start) for i in range(clients)]):
            print("\n".join(lines))
"#;

/// An HTTP/1.1 keep-alive server answering every request with `id`.
fn backend(id: usize) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            std::thread::spawn(move || serve(conn, id));
        }
    });
    addr
}

fn serve(conn: TcpStream, id: usize) {
    let mut out = conn.try_clone().unwrap();
    let mut reader = BufReader::new(conn);
    let body = format!("{id}\n");
    loop {
        // A request: lines up to the blank one (GET has no body).
        let mut saw_any = false;
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if line == "\r\n" || line == "\n" {
                break;
            }
            saw_any = true;
        }
        if !saw_any {
            continue;
        }
        let reply = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n\r\n{body}",
            body.len()
        );
        if out.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn python_ok() -> Result<(), String> {
    let out = Command::new("python3")
        .args(["-c", "import urllib3"])
        .output()
        .map_err(|e| format!("no python3: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err("python3 has no urllib3 (Debian: python3-urllib3)".into())
    }
}

struct Run {
    /// (seconds, backend) of each answered request.
    ok: Vec<(f64, usize)>,
    failed: Vec<String>,
}

impl Run {
    fn per_backend(&self, from: f64, to: f64) -> [u32; 4] {
        let mut n = [0; 4];
        for &(t, b) in &self.ok {
            if t >= from && t < to {
                n[b] += 1;
            }
        }
        n
    }
}

fn even_within(n: &[u32; 4], tol: f64) -> bool {
    let mean = n.iter().sum::<u32>() as f64 / 4.0;
    mean > 0.0 && n.iter().all(|&r| (r as f64 - mean).abs() <= tol * mean)
}

/// One run: a dataplane with `policy` for the service, 2 backends, 2
/// more at `SCALE_AT`, the clients for `RUN_SECS`.
fn run(policy: Policy, backends: [SocketAddr; 4]) -> Run {
    let dp = Dataplane::start(Options {
        workers: 1,
        instance_lock: None,
        ..Options::default()
    })
    .unwrap();
    let vip: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let key = ServiceKey::Addr {
        protocol: Protocol::Tcp,
        addr: vip,
    };
    let mut admin = dp.admin();
    admin
        .apply(&Op::AddService(Service::new(key, Scheduler::RoundRobin)))
        .unwrap();
    for b in &backends[..2] {
        admin
            .apply(&Op::AddDestination(key, Destination::masquerade(*b)))
            .unwrap();
    }
    dp.sched()
        .rebalancing()
        .set(Protocol::Tcp, vip, Some(policy));
    rvs_testrig::eventually("the listener", Duration::from_secs(10), || {
        TcpStream::connect(vip).is_ok()
    });
    let started = Instant::now();
    let clients = std::thread::spawn(move || {
        Command::new("python3")
            .args([
                "-c",
                CLIENTS_PY,
                "127.0.0.1",
                &vip.port().to_string(),
                &CLIENTS.to_string(),
                &RUN_SECS.to_string(),
            ])
            .output()
            .unwrap()
    });
    std::thread::sleep(Duration::from_secs_f64(SCALE_AT).saturating_sub(started.elapsed()));
    for b in &backends[2..] {
        admin
            .apply(&Op::AddDestination(key, Destination::masquerade(*b)))
            .unwrap();
    }
    let out = clients.join().unwrap();
    assert!(
        out.status.success(),
        "clients: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let closed: u64 = dp
        .sched()
        .rebalancing()
        .statuses()
        .iter()
        .flat_map(|s| s.closed.iter().map(|&(_, n)| n))
        .sum();
    dp.shutdown(Duration::from_millis(200));
    let mut run = Run {
        ok: Vec::new(),
        failed: Vec::new(),
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let mut parts = line.split_whitespace();
        let t: f64 = parts.next().unwrap().parse().unwrap();
        match (parts.next(), parts.next()) {
            (Some("ok"), Some(b)) => run.ok.push((t, b.parse().unwrap())),
            _ => run.failed.push(line.to_owned()),
        }
    }
    println!(
        "policy {policy}: {} requests, {} failed, {closed} connections closed to rebalance",
        run.ok.len(),
        run.failed.len()
    );
    let mut t = 0.0;
    while t < RUN_SECS {
        println!(
            "  {t:>4.0}–{:<4.0} s: requests per backend {:?}",
            t + WINDOW,
            run.per_backend(t, t + WINDOW)
        );
        t += WINDOW;
    }
    run
}

#[test]
fn idle_connections_are_rebalanced_after_a_scale_up_without_a_failed_request() {
    if let Err(why) = python_ok() {
        rvs_testrig::skip("rebalance_loopback", &why);
        return;
    }
    let backends = [backend(0), backend(1), backend(2), backend(3)];
    let control = std::thread::spawn(move || run(Policy::OFF, backends));
    let idle = run(Policy::IDLE, backends);
    let control = control.join().unwrap();

    // The control: the skew stays, the new real servers get nothing.
    let late = control.per_backend(RUN_SECS - 10.0, RUN_SECS);
    assert_eq!(&late[2..], [0, 0], "control, last 10 s: {late:?}");
    assert!(control.failed.is_empty(), "{:?}", control.failed);

    // Rebalanced: even within ±20 % in some 5 s window ending within 30 s
    // of the scale-up, and still at the end; no request failed.
    assert!(idle.failed.is_empty(), "failed requests: {:?}", idle.failed);
    let balanced = (0..)
        .map(|i| SCALE_AT + f64::from(i) * 0.5)
        .take_while(|from| from + WINDOW <= SCALE_AT + 30.0)
        .find(|&from| even_within(&idle.per_backend(from, from + WINDOW), 0.2));
    let Some(from) = balanced else {
        panic!("never even within 30 s of the scale-up");
    };
    println!(
        "even (±20 %, {WINDOW} s window) {:.1} s after the scale-up",
        from + WINDOW - SCALE_AT
    );
    let end = idle.per_backend(RUN_SECS - 10.0, RUN_SECS);
    assert!(even_within(&end, 0.2), "last 10 s: {end:?}");
}
