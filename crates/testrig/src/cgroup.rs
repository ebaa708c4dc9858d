//! Child cgroups, private bpffs mounts and client processes inside them,
//! for tests of eBPF programs attached to a cgroup.
//!
//! A test never attaches to the machine's root cgroup or to any cgroup
//! it did not make: [`Cgroup::new`] creates `rvs-test-<pid>-<n>` under
//! the cgroup v2 mount (`/sys/fs/cgroup/unified` on a hybrid host,
//! `/sys/fs/cgroup` on a pure v2 one) and removes it on drop, killing
//! what still runs in it, even when the test panics; cgroups left by
//! killed test processes are removed the next time one is created.
//! [`BpfFs`] mounts a private bpffs on a temporary directory for pinned
//! maps and links, and unmounts it on drop (which unpins, and so
//! detaches, everything in it).
//!
//! Sockets belong to the cgroup of the process that creates them, so
//! clients run as processes: the test binary re-runs itself
//! ([`Client::spawn`]) with [`CLIENT_ENV`] set, moved into the cgroup
//! (and a network namespace) before it starts, and the test's entry point
//! hands over to [`serve_client_role`], which runs the client, prints one
//! line per attempt and exits. Every client loop is bounded in count and
//! time.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::{Netns, RigError, host};

const PREFIX: &str = "rvs-test-";

/// The cgroup v2 mount: the hybrid layout's `unified` first.
pub fn cgroup2_root() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mut found: Vec<PathBuf> = mounts
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let fstype = right.split_whitespace().next()?;
            let mount_point = left.split_whitespace().nth(4)?;
            (fstype == "cgroup2").then(|| PathBuf::from(mount_point))
        })
        .collect();
    found.sort_by_key(|p| !p.ends_with("unified"));
    found.into_iter().next()
}

/// A cgroup v2 directory owned by the current test.
#[derive(Debug)]
pub struct Cgroup {
    path: PathBuf,
}

impl Cgroup {
    /// Creates a fresh child of the cgroup v2 root. Needs root.
    pub fn new() -> Result<Cgroup, RigError> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        if !host::is_root() {
            return Err(RigError::Unavailable("cgroups need root".into()));
        }
        let root = cgroup2_root()
            .ok_or_else(|| RigError::Unavailable("no cgroup v2 mount on this host".into()))?;
        remove_stale(&root);
        let path = root.join(format!(
            "{PREFIX}{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir(&path)
            .map_err(RigError::io(format!("create cgroup {}", path.display())))?;
        Ok(Cgroup { path })
    }

    /// Creates a cgroup, or reports a skip for `test` (a failure when
    /// `RVS_REQUIRE_PRIVILEGED=1`) and returns `None`.
    pub fn or_skip(test: &str) -> Option<Cgroup> {
        match Cgroup::new() {
            Ok(cgroup) => Some(cgroup),
            Err(err) => {
                crate::skip(test, &err);
                None
            }
        }
    }

    /// The cgroup's directory (what programs attach to).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Moves process `pid` (all its threads) into the cgroup.
    pub fn add(&self, pid: u32) -> Result<(), RigError> {
        let procs = self.path.join("cgroup.procs");
        std::fs::write(&procs, pid.to_string())
            .map_err(RigError::io(format!("move {pid} into {}", procs.display())))
    }

    /// The processes in the cgroup.
    pub fn pids(&self) -> Vec<u32> {
        pids_in(&self.path)
    }

    /// A command that runs `program` inside the cgroup (and inside
    /// `netns`, if given) from its first instruction: a shell moves
    /// itself in, then execs it.
    pub fn command(&self, netns: Option<&Netns>, program: &Path) -> Command {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg("echo $$ > \"$0\" && exec \"$@\"")
            .arg(self.path.join("cgroup.procs"));
        if let Some(netns) = netns {
            cmd.args(["ip", "netns", "exec", netns.name()]);
        }
        cmd.arg(program);
        cmd
    }
}

fn pids_in(path: &Path) -> Vec<u32> {
    std::fs::read_to_string(path.join("cgroup.procs"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Kills what runs in the cgroup at `path` and removes it, within ~2 s.
fn remove(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        for pid in pids_in(path) {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).output();
        }
        if std::fs::remove_dir(path).is_ok() || !path.exists() || Instant::now() >= deadline {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        remove(&self.path);
    }
}

/// Removes test cgroups whose creating process no longer exists.
fn remove_stale(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            remove(&entry.path());
        }
    }
}

/// A private bpffs mounted on a temporary directory; unmounted (and the
/// directory removed) on drop.
#[derive(Debug)]
pub struct BpfFs {
    path: PathBuf,
}

impl BpfFs {
    /// Mounts a fresh bpffs. Needs root and `mount`.
    pub fn new() -> Result<BpfFs, RigError> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        if !host::is_root() {
            return Err(RigError::Unavailable("mounting a bpffs needs root".into()));
        }
        let path = std::env::temp_dir().join(format!(
            "rvs-bpffs-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path)
            .map_err(RigError::io(format!("create {}", path.display())))?;
        let fs = BpfFs { path };
        host::run(
            Command::new("mount")
                .args(["-t", "bpf", "bpf"])
                .arg(&fs.path),
            "mount a private bpffs",
        )?;
        Ok(fs)
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for BpfFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.path).output();
        let _ = std::fs::remove_dir(&self.path);
    }
}

/// The environment variable that makes a test binary a client.
pub const CLIENT_ENV: &str = "RVS_CGROUP_CLIENT";
const LINE_PREFIX: &str = "RVS-CLIENT ";

/// What a client process does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// TCP: connect, send a line, read the backend's one-line answer;
    /// the time reported runs from `connect()` to the answer.
    Tcp,
    /// TCP: connect only (the time reported is `connect()`'s), then
    /// close with a reset (no TIME_WAIT piles up over many samples).
    TcpConnect,
    /// UDP: `connect()`, send, receive.
    UdpConnected,
    /// UDP: `sendto()` and `recvfrom()` on an unconnected socket.
    Udp,
}

impl Mode {
    fn name(&self) -> &'static str {
        match self {
            Mode::Tcp => "tcp",
            Mode::TcpConnect => "tcp-connect",
            Mode::UdpConnected => "udp-connected",
            Mode::Udp => "udp",
        }
    }

    fn parse(s: &str) -> Option<Mode> {
        [Mode::Tcp, Mode::TcpConnect, Mode::UdpConnected, Mode::Udp]
            .into_iter()
            .find(|m| m.name() == s)
    }
}

/// One client run: `count` attempts at `target`, stopping early after
/// `within`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientSpec {
    /// What each attempt does.
    pub mode: Mode,
    /// The address connected to (a virtual service).
    pub target: SocketAddr,
    /// How many attempts, at most.
    pub count: u32,
    /// Stop after this long even if attempts remain.
    pub within: Duration,
    /// Bind every socket to this source address (port 0) first.
    pub bind: Option<IpAddr>,
    /// Pause between attempts.
    pub pace: Duration,
    /// Use one socket for every attempt (UDP only).
    pub one_socket: bool,
}

impl ClientSpec {
    /// `count` attempts of `mode` at `target`, within 20 s, unbound.
    pub fn new(mode: Mode, target: SocketAddr, count: u32) -> ClientSpec {
        ClientSpec {
            mode,
            target,
            count,
            within: Duration::from_secs(20),
            bind: None,
            pace: Duration::ZERO,
            one_socket: false,
        }
    }

    fn encode(&self) -> String {
        format!(
            "{} {} {} {} {} {} {}",
            self.mode.name(),
            self.target,
            self.count,
            self.within.as_millis(),
            self.bind.map_or("-".to_owned(), |b| b.to_string()),
            self.pace.as_micros(),
            u8::from(self.one_socket),
        )
    }

    fn decode(s: &str) -> Option<ClientSpec> {
        let f: Vec<&str> = s.split_whitespace().collect();
        Some(ClientSpec {
            mode: Mode::parse(f.first()?)?,
            target: f.get(1)?.parse().ok()?,
            count: f.get(2)?.parse().ok()?,
            within: Duration::from_millis(f.get(3)?.parse().ok()?),
            bind: match *f.get(4)? {
                "-" => None,
                ip => Some(ip.parse().ok()?),
            },
            pace: Duration::from_micros(f.get(5)?.parse().ok()?),
            one_socket: *f.get(6)? == "1",
        })
    }
}

/// One attempt's outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attempt {
    /// It worked: the backend's answer (empty for [`Mode::TcpConnect`]),
    /// the peer the socket reported (`getpeername`, or the reply's
    /// source for unconnected UDP), and how long it took.
    Ok {
        /// What the backend answered.
        reply: String,
        /// The address the application saw as its peer.
        peer: SocketAddr,
        /// Its duration in nanoseconds: see [`Mode`].
        nanos: u64,
        /// When it started, in microseconds since the Unix epoch (to
        /// compare with events in the test process).
        start_us: u64,
    },
    /// It failed, with the error's text.
    Err(String),
}

/// Everything a client process reported.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientReport {
    /// One entry per attempt, in order.
    pub attempts: Vec<Attempt>,
}

impl ClientReport {
    /// The answers of the successful attempts.
    pub fn replies(&self) -> Vec<&str> {
        self.attempts
            .iter()
            .filter_map(|a| match a {
                Attempt::Ok { reply, .. } => Some(reply.as_str()),
                Attempt::Err(_) => None,
            })
            .collect()
    }

    /// The errors of the failed attempts.
    pub fn errors(&self) -> Vec<&str> {
        self.attempts
            .iter()
            .filter_map(|a| match a {
                Attempt::Err(e) => Some(e.as_str()),
                Attempt::Ok { .. } => None,
            })
            .collect()
    }

    /// How many successful attempts each answer got.
    pub fn counts(&self) -> std::collections::BTreeMap<String, usize> {
        let mut out = std::collections::BTreeMap::new();
        for r in self.replies() {
            *out.entry(r.to_owned()).or_default() += 1;
        }
        out
    }
}

/// A running client process.
#[derive(Debug)]
pub struct Client {
    child: Child,
    deadline: Instant,
    reader: Option<std::thread::JoinHandle<String>>,
}

impl Client {
    /// Starts the current executable as a client in `cgroup` (and
    /// `netns`), with `args` (a test binary: `--exact NAME --nocapture`
    /// naming the test that calls [`serve_client_role`]; a bench: none).
    pub fn spawn(
        cgroup: &Cgroup,
        netns: Option<&Netns>,
        args: &[&str],
        spec: &ClientSpec,
    ) -> Result<Client, RigError> {
        let exe = std::env::current_exe().map_err(RigError::io("find the test binary"))?;
        let mut cmd = cgroup.command(netns, &exe);
        cmd.args(args)
            .env(CLIENT_ENV, spec.encode())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd
            .spawn()
            .map_err(RigError::io("start a client process"))?;
        let reader = child.stdout.take().map(|mut out| {
            std::thread::spawn(move || {
                let mut text = String::new();
                let _ = out.read_to_string(&mut text);
                text
            })
        });
        Ok(Client {
            child,
            deadline: Instant::now() + spec.within + Duration::from_secs(10),
            reader,
        })
    }

    /// Waits for the client to finish (killing it past its time) and
    /// returns its report.
    pub fn wait(mut self) -> Result<ClientReport, RigError> {
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) if status.success() => break,
                Ok(Some(status)) => {
                    return Err(RigError::Unexpected(format!("client exited with {status}")));
                }
                Ok(None) if Instant::now() >= self.deadline => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return Err(RigError::Deadline {
                        what: "a client process to finish".into(),
                        within: Duration::ZERO,
                    });
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                Err(e) => return Err(RigError::io("wait for a client")(e)),
            }
        }
        let text = self
            .reader
            .take()
            .and_then(|r| r.join().ok())
            .unwrap_or_default();
        let attempts = text
            .lines()
            .filter_map(|l| l.strip_prefix(LINE_PREFIX))
            .map(parse_attempt)
            .collect();
        Ok(ClientReport { attempts })
    }

    /// Runs a client to its end: [`Client::spawn`] then [`Client::wait`].
    pub fn run(
        cgroup: &Cgroup,
        netns: Option<&Netns>,
        args: &[&str],
        spec: &ClientSpec,
    ) -> Result<ClientReport, RigError> {
        Client::spawn(cgroup, netns, args, spec)?.wait()
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn parse_attempt(line: &str) -> Attempt {
    let mut f = line.splitn(5, ' ');
    match (f.next(), f.next(), f.next(), f.next(), f.next()) {
        (Some("ok"), Some(nanos), Some(start), Some(peer), reply) => {
            match (nanos.parse(), start.parse(), peer.parse()) {
                (Ok(nanos), Ok(start_us), Ok(peer)) => Attempt::Ok {
                    reply: reply.unwrap_or_default().to_owned(),
                    peer,
                    nanos,
                    start_us,
                },
                _ => Attempt::Err(format!("unreadable line {line:?}")),
            }
        }
        _ => Attempt::Err(line.strip_prefix("err ").unwrap_or(line).to_owned()),
    }
}

/// The client side of [`Client::spawn`]: when [`CLIENT_ENV`] is set,
/// runs the client it describes, prints its report on stdout and exits
/// the process; otherwise returns at once. Call it first thing in the
/// test that [`Client::spawn`]'s arguments name (or in a bench's `main`).
pub fn serve_client_role() {
    let Ok(spec) = std::env::var(CLIENT_ENV) else {
        return;
    };
    let Some(spec) = ClientSpec::decode(&spec) else {
        std::process::exit(2);
    };
    let lines = run_client(&spec);
    let mut out = std::io::stdout().lock();
    for line in lines {
        let _ = writeln!(out, "{LINE_PREFIX}{line}");
    }
    let _ = out.flush();
    std::process::exit(0);
}

const IO_TIMEOUT: Duration = Duration::from_secs(2);

fn run_client(spec: &ClientSpec) -> Vec<String> {
    let start = Instant::now();
    let mut lines = Vec::new();
    let mut shared: Option<UdpSocket> = None;
    for _ in 0..spec.count {
        if start.elapsed() >= spec.within {
            break;
        }
        let start_us = now_us();
        let line = match attempt(spec, &mut shared) {
            Ok((nanos, peer, reply)) => format!("ok {nanos} {start_us} {peer} {reply}"),
            Err(e) => format!("err {e}"),
        };
        lines.push(line);
        if !spec.pace.is_zero() {
            std::thread::sleep(spec.pace);
        }
    }
    lines
}

/// Microseconds since the Unix epoch.
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

fn bind_addr(spec: &ClientSpec) -> SocketAddr {
    let ip = spec.bind.unwrap_or(match spec.target {
        SocketAddr::V4(_) => IpAddr::from([0, 0, 0, 0]),
        SocketAddr::V6(_) => IpAddr::from([0u16; 8]),
    });
    SocketAddr::new(ip, 0)
}

fn tcp_connect(spec: &ClientSpec) -> std::io::Result<(TcpStream, u64)> {
    let t = Instant::now();
    let stream = match spec.bind {
        None => TcpStream::connect_timeout(&spec.target, IO_TIMEOUT)?,
        Some(_) => {
            // Bind before connect: std has no call for it.
            use nix::sys::socket::{AddressFamily, SockFlag, SockType, SockaddrStorage};
            use std::os::fd::AsRawFd;
            let family = if spec.target.is_ipv4() {
                AddressFamily::Inet
            } else {
                AddressFamily::Inet6
            };
            let fd = nix::sys::socket::socket(family, SockType::Stream, SockFlag::empty(), None)?;
            nix::sys::socket::bind(fd.as_raw_fd(), &SockaddrStorage::from(bind_addr(spec)))?;
            nix::sys::socket::connect(fd.as_raw_fd(), &SockaddrStorage::from(spec.target))?;
            TcpStream::from(fd)
        }
    };
    let nanos = u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX);
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    Ok((stream, nanos))
}

fn attempt(
    spec: &ClientSpec,
    shared: &mut Option<UdpSocket>,
) -> std::io::Result<(u64, SocketAddr, String)> {
    match spec.mode {
        Mode::Tcp => {
            let t = Instant::now();
            let (mut stream, _) = tcp_connect(spec)?;
            let peer = stream.peer_addr()?;
            stream.write_all(b"who\n")?;
            let mut reply = String::new();
            BufReader::new(&stream).read_line(&mut reply)?;
            let nanos = u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX);
            Ok((nanos, peer, reply.trim().to_owned()))
        }
        Mode::TcpConnect => {
            let (stream, nanos) = tcp_connect(spec)?;
            let peer = stream.peer_addr()?;
            nix::sys::socket::setsockopt(
                &stream,
                nix::sys::socket::sockopt::Linger,
                &nix::libc::linger {
                    l_onoff: 1,
                    l_linger: 0,
                },
            )?;
            Ok((nanos, peer, String::new()))
        }
        Mode::UdpConnected => {
            let socket = UdpSocket::bind(bind_addr(spec))?;
            socket.set_read_timeout(Some(IO_TIMEOUT))?;
            let t = Instant::now();
            socket.connect(spec.target)?;
            let nanos = u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX);
            socket.send(b"who\n")?;
            let mut buf = [0u8; 512];
            let n = socket.recv(&mut buf)?;
            let peer = socket.peer_addr()?;
            let reply = String::from_utf8_lossy(&buf[..n]).trim().to_owned();
            Ok((nanos, peer, reply))
        }
        Mode::Udp => {
            let socket = match shared.take() {
                Some(s) => s,
                None => {
                    let s = UdpSocket::bind(bind_addr(spec))?;
                    s.set_read_timeout(Some(IO_TIMEOUT))?;
                    s
                }
            };
            let t = Instant::now();
            socket.send_to(b"who\n", spec.target)?;
            let nanos = u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX);
            let mut buf = [0u8; 512];
            let (n, from) = socket.recv_from(&mut buf)?;
            let reply = String::from_utf8_lossy(&buf[..n]).trim().to_owned();
            if spec.one_socket {
                *shared = Some(socket);
            }
            Ok((nanos, from, reply))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_round_trip() {
        let mut spec = ClientSpec::new(Mode::Udp, "10.96.0.1:53".parse().unwrap(), 7);
        spec.bind = Some("10.77.0.1".parse().unwrap());
        spec.pace = Duration::from_millis(3);
        spec.one_socket = true;
        assert_eq!(ClientSpec::decode(&spec.encode()), Some(spec));
    }

    #[test]
    fn attempts_parse() {
        assert_eq!(
            parse_attempt("ok 12 1700000000000000 10.96.0.1:80 backend one"),
            Attempt::Ok {
                reply: "backend one".into(),
                peer: "10.96.0.1:80".parse().unwrap(),
                nanos: 12,
                start_us: 1_700_000_000_000_000,
            }
        );
        assert_eq!(
            parse_attempt("err connection refused"),
            Attempt::Err("connection refused".into())
        );
    }
}
