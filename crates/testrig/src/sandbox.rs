//! Running one test in private namespaces, without root.
//!
//! This module owns [`Sandbox`]: the calling test re-runs itself (the same
//! test binary, `--exact` its name) under `unshare` in a fresh user
//! namespace (where it is root), with its own network, PID and mount
//! namespaces. Inside, loopback is up and the test may route whole ranges
//! to it (`ip route add local CIDR dev lo`), so servers bind any address
//! there, and nothing it sends leaves the namespace.
//!
//! Why: the API server refuses loopback addresses in EndpointSlices and
//! Service `externalIPs` ("may not be in the loopback range"), so a
//! userspace-dataplane test against a real API server needs backends and
//! cluster IPs outside 127.0.0.0/8 — which, in a private network
//! namespace, are as local as 127.0.0.1, and need no root.
//!
//! Everything the test starts inside dies with it: the inner test is PID 1
//! of its PID namespace (the kernel kills the rest of the namespace when
//! it exits), and `unshare --kill-child` kills it when the outer test
//! stops waiting (a timeout, or the outer test being killed).

use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::{RigError, host};

/// Set in the inner run to the test's name.
const INSIDE: &str = "RVS_SANDBOX_TEST";

/// How the sandbox is set up and run.
#[derive(Clone, Debug)]
pub struct SandboxOptions {
    local_routes: Vec<String>,
    env: Vec<(String, String)>,
    timeout: Duration,
}

impl Default for SandboxOptions {
    fn default() -> SandboxOptions {
        SandboxOptions {
            local_routes: Vec::new(),
            env: Vec::new(),
            timeout: Duration::from_secs(300),
        }
    }
}

impl SandboxOptions {
    /// Routes `cidr` to loopback as local (`ip route add local CIDR dev
    /// lo`): every address in it can be bound and reached, like
    /// 127.0.0.0/8.
    pub fn local_route(mut self, cidr: &str) -> SandboxOptions {
        self.local_routes.push(cidr.to_owned());
        self
    }

    /// Passes an environment variable to the inner run (the outer
    /// environment is inherited too).
    pub fn env(mut self, key: &str, value: &str) -> SandboxOptions {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// How long the inner run may take before it is killed and the test
    /// fails.
    pub fn timeout(mut self, timeout: Duration) -> SandboxOptions {
        self.timeout = timeout;
        self
    }
}

/// Proof that the current process runs inside the sandbox.
#[derive(Debug)]
pub struct Sandbox {
    _inside: (),
}

impl Sandbox {
    /// Runs `test` (the name libtest knows it by, as `--exact` takes it)
    /// inside a sandbox.
    ///
    /// Called at the start of the test. In the outer run it starts the
    /// inner run, waits for it, passes its output on, panics if it failed
    /// and returns `None` (the test function then returns). Inside, it
    /// sets the namespace up and returns `Some`: the test goes on there.
    /// Also returns `None` after reporting a skip (a failure when
    /// `RVS_REQUIRE_PRIVILEGED=1`) when user namespaces are unavailable.
    pub fn enter(test: &str, options: &SandboxOptions) -> Option<Sandbox> {
        if std::env::var(INSIDE).is_ok_and(|t| t == test) {
            if let Err(e) = setup(options) {
                panic!("{test}: setting the sandbox up: {e}");
            }
            return Some(Sandbox { _inside: () });
        }
        if let Err(e) = available() {
            crate::skip(test, &e);
            return None;
        }
        match run_inside(test, options) {
            Ok(output) => {
                #[allow(clippy::print_stderr)]
                {
                    eprintln!("--- {test}, inside its sandbox ---\n{output}");
                }
            }
            Err(e) => panic!("{test}: {e}"),
        }
        None
    }
}

/// Whether `unshare` can make the namespaces here.
fn available() -> Result<(), RigError> {
    for tool in ["unshare", "ip"] {
        if host::which(tool).is_none() {
            return Err(RigError::Unavailable(format!(
                "`{tool}` not found (util-linux, iproute2)"
            )));
        }
    }
    host::run(
        Command::new("unshare").args(["--user", "--map-root-user", "--net", "true"]),
        "probe for unprivileged user and network namespaces",
    )
    .map_err(|e| RigError::Unavailable(format!("cannot create a user namespace: {e}")))?;
    Ok(())
}

/// Inside: loopback up, the local routes in place.
fn setup(options: &SandboxOptions) -> Result<(), RigError> {
    host::run(
        Command::new("ip").args(["link", "set", "lo", "up"]),
        "bring loopback up",
    )?;
    for cidr in &options.local_routes {
        host::run(
            Command::new("ip").args(["route", "add", "local", cidr, "dev", "lo"]),
            &format!("route {cidr} to loopback"),
        )?;
    }
    Ok(())
}

/// Kills the inner run (and with it its PID namespace) unless it ended.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// Runs the test inside and returns its output; `Err` when it failed.
///
/// The inner run gets a temporary directory of its own (`TMPDIR`): it is
/// PID 1 like every other sandboxed test, so names made from its PID
/// would collide. The directory is removed after a successful run and
/// kept (and named in the error) after a failed one.
fn run_inside(test: &str, options: &SandboxOptions) -> Result<String, RigError> {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let exe = std::env::current_exe().map_err(RigError::io("find the test binary"))?;
    let dir = std::env::temp_dir().join(format!(
        "rvs-sandbox-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(RigError::io(format!("create {}", dir.display())))?;
    let mut cleanup = RemoveOnDrop(Some(dir.clone()));
    let log_path = dir.join("output.log");
    let log = std::fs::File::create(&log_path)
        .map_err(RigError::io(format!("create {}", log_path.display())))?;
    let log_err = log
        .try_clone()
        .map_err(RigError::io(format!("open {}", log_path.display())))?;
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--user",
        "--map-root-user",
        "--net",
        "--pid",
        "--mount",
        "--fork",
        "--kill-child",
        "--mount-proc",
        "--",
    ])
    .arg(&exe)
    .args([test, "--exact", "--nocapture", "--test-threads=1"])
    .env(INSIDE, test)
    .env("TMPDIR", &dir)
    .stdin(Stdio::null())
    .stdout(log)
    .stderr(log_err);
    for (key, value) in &options.env {
        cmd.env(key, value);
    }
    let line = host::describe(&cmd);
    let mut child = KillOnDrop(
        cmd.spawn()
            .map_err(RigError::io(format!("start `{line}`")))?,
    );
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child
            .0
            .try_wait()
            .map_err(RigError::io("wait for the sandbox"))?
        {
            break Some(status);
        }
        if started.elapsed() > options.timeout {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    drop(child);
    let mut output = String::new();
    std::fs::File::open(&log_path)
        .and_then(|mut f| f.read_to_string(&mut output))
        .map_err(RigError::io(format!("read {}", log_path.display())))?;
    let failed = match status {
        // libtest exits 0 also when the filter matched nothing.
        Some(status) if status.success() && !output.contains("running 0 tests") => {
            return Ok(output);
        }
        Some(status) if status.success() => {
            format!("ran no test: is {test:?} the test's full name?")
        }
        Some(status) => format!("failed inside its sandbox ({status})"),
        None => format!(
            "killed inside its sandbox after {} s",
            options.timeout.as_secs()
        ),
    };
    cleanup.0 = None;
    Err(RigError::Unexpected(format!(
        "{failed}; its files are kept in {}:\n{output}",
        dir.display()
    )))
}

/// Removes a directory when dropped, unless told to keep it.
struct RemoveOnDrop(Option<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(dir) = &self.0 {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
