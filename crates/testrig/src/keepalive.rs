//! Long-lived keep-alive HTTP/1.1 clients and servers for the
//! rebalancing tests and bench (issue 13).
//!
//! This module owns the real clients — Python's urllib3, one process and
//! one pooled connection each, no retries, a request every 100–500 ms, so
//! a failed request is one the client sees ([`CLIENTS_PY`],
//! [`clients_command`]) — the keep-alive servers that answer with their
//! number ([`http_backend`]), and the reading of the clients' output
//! ([`Requests`]): requests per backend over time, failures, and when the
//! spread first became even.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{TcpListener, TcpStream};
use std::process::Command;

/// The clients, as `python3 -c CLIENTS_PY HOST PORT CLIENTS SECONDS`:
/// each a process of its own (threads behind one interpreter lock would
/// stall between urllib3's check that its pooled connection is alive and
/// the request it then sends), a urllib3 pool of one connection, a
/// request, a pause of 100–500 ms; one line per request, `SECONDS ok
/// BACKEND` or `SECONDS fail ERROR`.
pub const CLIENTS_PY: &str = r#"
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
            lines.append("%.3f fail %s %s" % (t, type(e).__name__, " ".join(str(e).split())[:100]))
        time.sleep(rng.uniform(0.1, 0.5))
    return lines
if __name__ == "__main__":
    start = time.time()
    with multiprocessing.get_context("fork").Pool(clients) as p:
        for lines in p.map(client, [(i, start) for i in range(clients)]):
            print("\n".join(lines))
"#;

/// The HTTP version the clients and servers speak.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Http {
    /// HTTP/1.1 keep-alive: urllib3 clients ([`CLIENTS_PY`]), servers in
    /// this process ([`http_backend`]).
    V1,
    /// HTTP/2 over cleartext with prior knowledge, gRPC-style (many
    /// requests as streams of one connection): hyper-h2 clients
    /// ([`H2_CLIENTS_PY`]) and servers ([`H2_SERVER_PY`], a process each).
    V2,
}

impl Http {
    /// The Python modules its clients and servers need.
    fn modules(self) -> &'static str {
        match self {
            Http::V1 => "urllib3",
            Http::V2 => "h2",
        }
    }

    /// The clients' program text.
    fn clients(self) -> &'static str {
        match self {
            Http::V1 => CLIENTS_PY,
            Http::V2 => H2_CLIENTS_PY,
        }
    }
}

impl std::fmt::Display for Http {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Http::V1 => "HTTP/1.1",
            Http::V2 => "HTTP/2",
        })
    }
}

/// A Python 3 that has what `http` needs: `python3` on the path, or
/// Debian's own (where `apt` puts `python3-h2` when the path's is another
/// installation); `Err`: why there is none.
pub fn python(http: Http) -> Result<String, String> {
    let module = http.modules();
    for candidate in ["python3", "/usr/bin/python3"] {
        let ok = Command::new(candidate)
            .args(["-c", &format!("import {module}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return Ok(candidate.to_owned());
        }
    }
    Err(format!(
        "no python3 with {module} (Debian: python3-{})",
        if module == "h2" { "h2" } else { "urllib3" }
    ))
}

/// Whether `python3` with urllib3 is here (`Err`: why not).
pub fn python_urllib3() -> Result<(), String> {
    python(Http::V1).map(|_| ())
}

/// The arguments after `python3` that run `clients` HTTP/1.1 clients
/// against `host:port` for `seconds`.
pub fn clients_args(host: &str, port: u16, clients: usize, seconds: f64) -> Vec<String> {
    clients_args_for(Http::V1, host, port, clients, seconds)
}

/// The arguments after `python3` that run `clients` clients of `http`
/// against `host:port` for `seconds`.
pub fn clients_args_for(
    http: Http,
    host: &str,
    port: u16,
    clients: usize,
    seconds: f64,
) -> Vec<String> {
    vec![
        "-c".into(),
        http.clients().into(),
        host.into(),
        port.to_string(),
        clients.to_string(),
        seconds.to_string(),
    ]
}

/// `python3` running the HTTP/1.1 clients (see [`clients_args`]).
pub fn clients_command(host: &str, port: u16, clients: usize, seconds: f64) -> Command {
    let python = python(Http::V1).unwrap_or_else(|_| "python3".into());
    let mut cmd = Command::new(python);
    cmd.args(clients_args(host, port, clients, seconds));
    cmd
}

/// The HTTP/2 clients, as `python3 -c H2_CLIENTS_PY HOST PORT CLIENTS
/// SECONDS`: as [`CLIENTS_PY`] (a process each, one connection, a request
/// every 100–500 ms, the same output lines), with each request a stream
/// of the client's one HTTP/2 connection. Before reusing the connection
/// a client checks that it is not readable — closed or reset — as
/// urllib3 and gRPC's channels do, and opens a new one if it is; a
/// request that fails on it is a failure, not retried.
pub const H2_CLIENTS_PY: &str = r#"
import multiprocessing, random, select, socket, sys, time
import h2.connection, h2.events
host, port, clients, duration = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
def dropped(sock):
    return bool(select.select([sock], [], [], 0)[0])
def client(args):
    i, start = args
    rng = random.Random(i)
    sock, conn, lines = None, None, []
    while True:
        t = time.time() - start
        if t >= duration:
            break
        try:
            if sock is not None and dropped(sock):
                sock.close()
                sock = None
            if sock is None:
                sock = socket.create_connection((host, port), timeout=5.0)
                conn = h2.connection.H2Connection()
                conn.initiate_connection()
                sock.sendall(conn.data_to_send())
            sid = conn.get_next_available_stream_id()
            conn.send_headers(sid, [(":method", "GET"), (":path", "/"), (":scheme", "http"), (":authority", host)], end_stream=True)
            sock.sendall(conn.data_to_send())
            body, done = b"", False
            while not done:
                data = sock.recv(65535)
                if not data:
                    raise ConnectionError("closed")
                for ev in conn.receive_data(data):
                    if isinstance(ev, h2.events.DataReceived):
                        body += ev.data
                        conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                    elif isinstance(ev, h2.events.StreamEnded) and ev.stream_id == sid:
                        done = True
                    elif isinstance(ev, (h2.events.StreamReset, h2.events.ConnectionTerminated)):
                        raise ConnectionError(type(ev).__name__)
                out = conn.data_to_send()
                if out:
                    sock.sendall(out)
            lines.append("%.3f ok %s" % (t, body.decode().strip()))
        except Exception as e:
            lines.append("%.3f fail %s %s" % (t, type(e).__name__, " ".join(str(e).split())[:100]))
            if sock is not None:
                sock.close()
            sock = None
        time.sleep(rng.uniform(0.1, 0.5))
    return lines
if __name__ == "__main__":
    start = time.time()
    with multiprocessing.get_context("fork").Pool(clients) as p:
        for lines in p.map(client, [(i, start) for i in range(clients)]):
            print("\n".join(lines))
"#;

/// An HTTP/2 server (cleartext, prior knowledge), as `python3 -c
/// H2_SERVER_PY ADDRESS PORT ID`: a thread per connection, every request
/// answered with `ID`; prints `ready` once listening.
pub const H2_SERVER_PY: &str = r#"
import socket, sys, threading
import h2.config, h2.connection, h2.events
addr, port, ident = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def serve(sock):
    conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=False))
    conn.initiate_connection()
    try:
        sock.sendall(conn.data_to_send())
        while True:
            data = sock.recv(65535)
            if not data:
                break
            for ev in conn.receive_data(data):
                if isinstance(ev, h2.events.RequestReceived):
                    body = (ident + "\n").encode()
                    conn.send_headers(ev.stream_id, [(":status", "200"), ("content-length", str(len(body)))])
                    conn.send_data(ev.stream_id, body, end_stream=True)
                elif isinstance(ev, h2.events.DataReceived):
                    conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            out = conn.data_to_send()
            if out:
                sock.sendall(out)
    except OSError:
        pass
    sock.close()
srv = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET)
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((addr, port))
srv.listen(256)
print("ready", flush=True)
while True:
    c, _ = srv.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

/// An HTTP/2 server process ([`H2_SERVER_PY`]), killed when dropped.
#[derive(Debug)]
pub struct H2Server {
    child: std::process::Child,
}

impl H2Server {
    /// Starts one on `addr` answering with `id`, inside the network
    /// namespace `netns` if given (`ip netns exec`), and waits until it
    /// listens.
    pub fn start(
        netns: Option<&str>,
        addr: std::net::SocketAddr,
        id: usize,
    ) -> std::io::Result<H2Server> {
        let python = python(Http::V2).map_err(std::io::Error::other)?;
        let mut cmd = match netns {
            Some(name) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", name, &python]);
                c
            }
            None => Command::new(&python),
        };
        cmd.args([
            "-c",
            H2_SERVER_PY,
            &addr.ip().to_string(),
            &addr.port().to_string(),
            &id.to_string(),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
        let mut child = cmd.spawn()?;
        let stdout = child.stdout.take();
        // Killed on drop from here on, even on an error below.
        let server = H2Server { child };
        let Some(stdout) = stdout else {
            return Err(std::io::Error::other("no stdout"));
        };
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        if line.trim() != "ready" {
            return Err(std::io::Error::other(format!(
                "the HTTP/2 server on {addr} did not start"
            )));
        }
        Ok(server)
    }
}

impl Drop for H2Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the clients of `clients` (a [`clients_command`], perhaps inside a
/// cgroup and namespace), calls `scale` `scale_at` seconds after they
/// start, and returns what they saw (`Err`: they could not run, with
/// their stderr).
pub fn run_scaled(
    mut clients: Command,
    scale_at: f64,
    scale: impl FnOnce(),
) -> Result<Requests, String> {
    let started = std::time::Instant::now();
    let clients = std::thread::spawn(move || clients.output());
    std::thread::sleep(
        std::time::Duration::from_secs_f64(scale_at).saturating_sub(started.elapsed()),
    );
    scale();
    let out = clients
        .join()
        .map_err(|_| "the clients' thread panicked".to_owned())?
        .map_err(|e| format!("python3: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "clients failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(Requests::parse(&String::from_utf8_lossy(&out.stdout)))
}

/// Serves keep-alive HTTP/1.1 on `listener` from a thread, answering
/// every request with `id`.
pub fn http_backend(listener: TcpListener, id: usize) {
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            std::thread::spawn(move || serve(conn, id));
        }
    });
}

fn serve(conn: TcpStream, id: usize) {
    let Ok(mut out) = conn.try_clone() else {
        return;
    };
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

/// What the clients saw.
#[derive(Clone, Debug, Default)]
pub struct Requests {
    /// (seconds since the clients started, backend) of each answered
    /// request.
    pub ok: Vec<(f64, usize)>,
    /// Each failed request's line.
    pub failed: Vec<String>,
}

impl Requests {
    /// Reads the clients' output ([`CLIENTS_PY`]'s lines).
    pub fn parse(stdout: &str) -> Requests {
        let mut run = Requests::default();
        for line in stdout.lines() {
            let mut parts = line.split_whitespace();
            let t = parts.next().and_then(|t| t.parse::<f64>().ok());
            match (t, parts.next(), parts.next().and_then(|b| b.parse().ok())) {
                (Some(t), Some("ok"), Some(b)) => run.ok.push((t, b)),
                _ => run.failed.push(line.to_owned()),
            }
        }
        run
    }

    /// Requests answered by each of `N` backends in `[from, to)`.
    pub fn per_backend<const N: usize>(&self, from: f64, to: f64) -> [u32; N] {
        let mut n = [0; N];
        for &(t, b) in &self.ok {
            if t >= from && t < to && b < N {
                n[b] += 1;
            }
        }
        n
    }

    /// The seconds after `scale_at` at which some `window`-long span
    /// (starting every 0.5 s) ending within `within` s of it was first
    /// even within `tolerance` over 4 backends.
    pub fn even_after(
        &self,
        scale_at: f64,
        window: f64,
        within: f64,
        tolerance: f64,
    ) -> Option<f64> {
        (0..)
            .map(|i| scale_at + f64::from(i) * 0.5)
            .take_while(|from| from + window <= scale_at + within)
            .find(|&from| even_within(&self.per_backend::<4>(from, from + window), tolerance))
            .map(|from| from + window - scale_at)
    }

    /// The requests per backend in `window`-long spans, as lines.
    pub fn summary(&self, label: &str, run_secs: f64, window: f64) -> String {
        use std::fmt::Write as _;
        let mut out = format!(
            "{label}: {} requests, {} failed\n",
            self.ok.len(),
            self.failed.len()
        );
        let mut t = 0.0;
        while t < run_secs {
            let _ = writeln!(
                out,
                "  {t:>4.0}–{:<4.0} s: requests per backend {:?}",
                t + window,
                self.per_backend::<4>(t, t + window)
            );
            t += window;
        }
        out
    }
}

/// Whether every count is within `tolerance` of their mean (and there
/// are some).
pub fn even_within(n: &[u32], tolerance: f64) -> bool {
    if n.is_empty() {
        return false;
    }
    let mean = f64::from(n.iter().sum::<u32>()) / n.len() as f64;
    mean > 0.0
        && n.iter()
            .all(|&r| (f64::from(r) - mean).abs() <= tolerance * mean)
}

/// Checks a rebalancing run against its goals (issue 13), printing both
/// summaries first: the control (policy off, run beside it) keeps its
/// skew, the new real servers 3 and 4 getting nothing in the last 10 s;
/// with the policy, requests are even within ±20 % in some `window`
/// ending within 30 s of `scale_at`, and still in the last 10 s; no
/// request failed on either. `closed` names what was closed, for the
/// summary ("12 sockets"). Panics on a missed goal.
#[allow(clippy::print_stdout)] // a test's report
pub fn check_rebalanced(
    http: Http,
    closed: &str,
    idle: &Requests,
    control: &Requests,
    (run_secs, scale_at, window): (f64, f64, f64),
) {
    print!(
        "{}",
        idle.summary(
            &format!("{http}, policy idle, {closed} closed to rebalance"),
            run_secs,
            window,
        )
    );
    print!(
        "{}",
        control.summary(&format!("{http}, policy off"), run_secs, window)
    );

    // The control: the skew stays, the new real servers get nothing.
    let late: [u32; 4] = control.per_backend(run_secs - 10.0, run_secs);
    assert_eq!(&late[2..], [0, 0], "{http} control, last 10 s: {late:?}");
    assert!(control.failed.is_empty(), "{http}: {:?}", control.failed);

    // Rebalanced: even within ±20 % within 30 s of the scale-up, and
    // still at the end; no request failed.
    assert!(
        idle.failed.is_empty(),
        "{http} failed requests: {:?}",
        idle.failed
    );
    let Some(after) = idle.even_after(scale_at, window, 30.0, 0.2) else {
        panic!("{http}: never even within 30 s of the scale-up");
    };
    println!("{http}: even (±20 %, {window} s window) {after:.1} s after the scale-up");
    let end: [u32; 4] = idle.per_backend(run_secs - 10.0, run_secs);
    assert!(even_within(&end, 0.2), "{http}, last 10 s: {end:?}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_lines_are_read_and_spans_judged() {
        let r = Requests::parse(
            "0.100 ok 0\n0.200 ok 1\n11.0 ok 2\n11.5 ok 3\n12.0 fail ProtocolError\n",
        );
        assert_eq!(r.ok.len(), 4);
        assert_eq!(r.failed, vec!["12.0 fail ProtocolError".to_owned()]);
        assert_eq!(r.per_backend::<4>(0.0, 1.0), [1, 1, 0, 0]);
        assert!(!even_within(&[1, 1, 0, 0], 0.2));
        assert!(even_within(&[10, 11, 9, 10], 0.2));
        assert!(!even_within(&[0, 0], 0.2));
    }
}
