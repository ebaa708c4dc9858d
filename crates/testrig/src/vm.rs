//! Booting the test VM and running one job in it.
//!
//! A job is a shell script plus the host binaries it needs. The rig appends
//! a small cpio archive holding them (under `/rvs`) to the cached base
//! initramfs, boots `qemu-system-x86_64 -accel tcg` with no NIC, and reads
//! the serial console until the init script reports the script's exit code
//! between marker lines (see `assets/init.sh`). [`Vm::start`] lets the
//! test act on the host while the job runs (waiting for lines on the
//! console), [`Vm::run`] just waits.
//!
//! A job may opt into one forward from the guest to a host port on
//! 127.0.0.1 ([`VmJob::forward_to_host`]): the VM then gets a virtio NIC
//! on qemu's user-mode network with `restrict=on` — nothing else leaves
//! the VM — and a `guestfwd` that runs `busybox nc 127.0.0.1 PORT` on the
//! host for every connection the guest opens to the forwarded address.
//! The guest script configures the NIC (see [`GUEST_NET_SETUP`]).

use std::io::Read;
use std::net::SocketAddrV4;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::cpio::Archive;
use crate::image::{self, HostCopier, Image};
use crate::{RigError, host};

const BEGIN: &str = "@@RVS-BEGIN@@";
const END_PREFIX: &str = "@@RVS-END rc=";

/// The guest's address on qemu's user-mode network.
pub const GUEST_ADDR: &str = "10.0.2.15/24";

/// Shell lines that bring the guest's NIC up on qemu's user-mode network
/// (static: 10.0.2.15/24 on `eth0`, no default route), for jobs with
/// [`VmJob::forward_to_host`]. iproute2 by its full path: busybox has an
/// `ip` applet too.
pub const GUEST_NET_SETUP: &str = "/usr/sbin/ip link set eth0 up\n\
/usr/sbin/ip addr add 10.0.2.15/24 dev eth0\n";

/// A prepared VM: kernel, base image and qemu. Cheap to share; every
/// [`Vm::run`] boots a fresh machine.
#[derive(Clone, Debug)]
pub struct Vm {
    image: Image,
    qemu: PathBuf,
}

/// One script to run in a fresh VM, with the files it needs.
#[derive(Clone, Debug)]
pub struct VmJob {
    script: String,
    binaries: Vec<(String, PathBuf)>,
    files: Vec<(String, Vec<u8>)>,
    env: Vec<(String, String)>,
    timeout: Duration,
    memory_mib: u32,
    forward: Option<(SocketAddrV4, u16)>,
    kernel_args: Vec<String>,
}

/// What a job printed and how it ended.
#[derive(Clone, Debug)]
pub struct VmOutput {
    /// The script's exit code.
    pub exit_code: i32,
    /// What the script printed (stdout and stderr, in order).
    pub output: String,
    /// Everything on the serial console, boot messages included.
    pub console: String,
    /// Wall time from starting qemu to its exit.
    pub elapsed: Duration,
}

impl Vm {
    /// Prepares the VM: checks for qemu and builds (or reuses) the image.
    pub fn new() -> Result<Vm, RigError> {
        let qemu = host::which("qemu-system-x86_64").ok_or_else(|| {
            RigError::Unavailable(
                "qemu-system-x86_64 not found: install Debian's qemu-system-x86".into(),
            )
        })?;
        let image = image::prepare()?;
        Ok(Vm { image, qemu })
    }

    /// Prepares the VM, or reports a skip for `test` (a failure when
    /// `RVS_REQUIRE_PRIVILEGED=1`) and returns `None`.
    pub fn or_skip(test: &str) -> Option<Vm> {
        match Vm::new() {
            Ok(vm) => Some(vm),
            Err(err) => {
                crate::skip(test, &err);
                None
            }
        }
    }

    /// The guest kernel's release string.
    pub fn kernel_release(&self) -> &str {
        &self.image.kernel.release
    }

    /// Boots a fresh VM, runs `job` and returns its output.
    ///
    /// A script that fails is not an error here: check
    /// [`VmOutput::exit_code`] or call [`VmOutput::assert_success`].
    pub fn run(&self, job: &VmJob) -> Result<VmOutput, RigError> {
        self.start(job)?.wait()
    }

    /// Boots a fresh VM for `job` and returns while it runs; the console
    /// is read meanwhile. Dropping the [`RunningVm`] kills qemu.
    pub fn start(&self, job: &VmJob) -> Result<RunningVm, RigError> {
        static RUNS: AtomicU32 = AtomicU32::new(0);
        let runs = crate::cache_dir().join("runs");
        std::fs::create_dir_all(&runs)
            .map_err(RigError::io(format!("create {}", runs.display())))?;
        let initrd = runs.join(format!(
            "initrd-{}-{}.cpio",
            std::process::id(),
            RUNS.fetch_add(1, Ordering::Relaxed)
        ));
        let cleanup = RemoveOnDrop(initrd.clone());
        self.write_initrd(job, &initrd)?;
        boot(&self.qemu, &self.image.kernel.vmlinuz, cleanup, job)
    }

    fn write_initrd(&self, job: &VmJob, path: &Path) -> Result<(), RigError> {
        use std::io::Write;
        let mut overlay = Archive::default();
        let mut copier = HostCopier::default();
        overlay.file("rvs/test.sh", 0o755, job.script.as_bytes());
        let mut env = String::new();
        for (key, value) in &job.env {
            env.push_str(&format!(
                "export {key}='{}'\n",
                value.replace('\'', "'\\''")
            ));
        }
        overlay.file("rvs/env", 0o644, env.as_bytes());
        for (name, path) in &job.binaries {
            copier.add_file_as(&mut overlay, path, &format!("rvs/bin/{name}"))?;
        }
        for (dest, data) in &job.files {
            overlay.file(dest, 0o644, data);
        }
        let mut base = std::fs::File::open(&self.image.initramfs).map_err(RigError::io(
            format!("open {}", self.image.initramfs.display()),
        ))?;
        let mut out = std::fs::File::create(path)
            .map_err(RigError::io(format!("create {}", path.display())))?;
        std::io::copy(&mut base, &mut out)
            .map_err(RigError::io(format!("write {}", path.display())))?;
        overlay
            .finish(&mut out)
            .and_then(|()| out.flush())
            .map_err(RigError::io(format!("write {}", path.display())))
    }
}

impl VmJob {
    /// A job running `script` with busybox `sh` (errors do not stop it
    /// unless it says `set -e`).
    pub fn new(script: impl Into<String>) -> VmJob {
        VmJob {
            script: script.into(),
            binaries: Vec::new(),
            files: Vec::new(),
            env: Vec::new(),
            timeout: Duration::from_secs(180),
            memory_mib: 1024,
            forward: None,
            kernel_args: Vec::new(),
        }
    }

    /// Gives the guest a NIC whose only way out is one forward: TCP
    /// connections to `guest` (an address in qemu's 10.0.2.0/24 other than
    /// the guest's own, e.g. `10.0.2.100:443`) reach `127.0.0.1:host_port`
    /// on the host. The script must bring the NIC up first
    /// ([`GUEST_NET_SETUP`]). Needs `busybox` on the host (the image does
    /// too), which relays each connection.
    pub fn forward_to_host(mut self, guest: SocketAddrV4, host_port: u16) -> VmJob {
        self.forward = Some((guest, host_port));
        self
    }

    /// Copies the host executable `path` to `/rvs/bin/NAME` (on the
    /// script's `PATH`), with its shared libraries.
    pub fn binary(mut self, name: &str, path: impl Into<PathBuf>) -> VmJob {
        self.binaries.push((name.to_owned(), path.into()));
        self
    }

    /// Places `data` at `dest` (a path relative to the VM's root).
    pub fn file(mut self, dest: &str, data: impl Into<Vec<u8>>) -> VmJob {
        self.files
            .push((dest.trim_start_matches('/').to_owned(), data.into()));
        self
    }

    /// Places the manifest files of end-to-end scenario `scenario` (see
    /// [`crate::fixtures::manifests`]) in the guest directory `dir`, where
    /// the script points `rvs-proxy --manifests`.
    pub fn manifests(mut self, scenario: &str, dir: &str) -> Result<VmJob, RigError> {
        for (name, text) in crate::fixtures::manifests(scenario)? {
            self = self.file(&format!("{}/{name}", dir.trim_end_matches('/')), text);
        }
        Ok(self)
    }

    /// Exports an environment variable to the script.
    pub fn env(mut self, key: &str, value: &str) -> VmJob {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Sets how long the whole boot-run-poweroff may take.
    pub fn timeout(mut self, timeout: Duration) -> VmJob {
        self.timeout = timeout;
        self
    }

    /// Sets the guest's memory.
    pub fn memory_mib(mut self, memory_mib: u32) -> VmJob {
        self.memory_mib = memory_mib;
        self
    }

    /// Adds a kernel command-line argument, e.g. `ipv6.disable=1` for a
    /// guest without IPv6.
    pub fn kernel_arg(mut self, arg: &str) -> VmJob {
        self.kernel_args.push(arg.to_owned());
        self
    }
}

impl VmOutput {
    /// `true` when the script exited with 0.
    pub fn success(&self) -> bool {
        self.exit_code == 0
    }

    /// The lines of [`VmOutput::output`] after the line `== NAME`, up to
    /// the next line starting with `== `: scripts mark the parts of their
    /// output that way.
    pub fn section(&self, name: &str) -> Vec<&str> {
        section(&self.output, name)
    }

    /// Panics with the script's output and the console when the script
    /// failed; returns `self` otherwise.
    pub fn assert_success(self) -> VmOutput {
        assert!(
            self.success(),
            "VM script exited with {}\n--- output ---\n{}\n--- console ---\n{}",
            self.exit_code,
            self.output,
            self.console
        );
        self
    }

    /// [`VmOutput::assert_success`], and panics too when the output has
    /// an `ERROR` log line (of the daemons the script ran): what every
    /// end-to-end script expects.
    pub fn assert_clean(self) -> VmOutput {
        let out = self.assert_success();
        assert!(
            !out.output.contains(" ERROR "),
            "an ERROR line in the output:\n{}",
            out.output
        );
        out
    }
}

/// A VM running a job; killed when dropped.
#[derive(Debug)]
pub struct RunningVm {
    child: Child,
    console: Arc<Mutex<Vec<u8>>>,
    readers: Vec<JoinHandle<()>>,
    started: Instant,
    timeout: Duration,
    _initrd: RemoveOnDrop,
}

/// The `-nic` option: none, or user-mode networking restricted to the
/// job's one forward.
fn nic_option(forward: Option<(SocketAddrV4, u16)>) -> Result<String, RigError> {
    let Some((guest, host_port)) = forward else {
        return Ok("none".to_owned());
    };
    let busybox = host::which("busybox").ok_or_else(|| {
        RigError::Unavailable("busybox not found: install Debian's busybox-static".into())
    })?;
    // qemu runs the command (split like a shell would, no shell) for
    // every connection, with stdin and stdout on it. A comma in an option
    // value is written twice.
    let command = format!("{} nc 127.0.0.1 {host_port}", busybox.display()).replace(',', ",,");
    Ok(format!(
        "user,model=virtio-net-pci,restrict=on,guestfwd=tcp:{}:{}-cmd:{command}",
        guest.ip(),
        guest.port(),
    ))
}

fn boot(
    qemu: &Path,
    kernel: &Path,
    initrd: RemoveOnDrop,
    job: &VmJob,
) -> Result<RunningVm, RigError> {
    let started = Instant::now();
    let nic = nic_option(job.forward)?;
    let mut cmd = Command::new(qemu);
    cmd.args([
        "-accel",
        "tcg",
        "-cpu",
        "max",
        "-smp",
        "1",
        "-nodefaults",
        "-display",
        "none",
    ])
    .args(["-nic", &nic, "-serial", "stdio", "-no-reboot"])
    .args(["-m", &job.memory_mib.to_string()])
    .arg("-kernel")
    .arg(kernel)
    .arg("-initrd")
    .arg(&initrd.0)
    .arg("-append")
    .arg(
        std::iter::once("console=ttyS0 rdinit=/init panic=-1 quiet loglevel=1 printk.devkmsg=off")
            .chain(job.kernel_args.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(" "),
    )
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let line = host::describe(&cmd);
    let mut child = cmd
        .spawn()
        .map_err(RigError::io(format!("start `{line}`")))?;

    let console = Arc::new(Mutex::new(Vec::<u8>::new()));
    let mut readers = Vec::new();
    for stream in [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let console = Arc::clone(&console);
        readers.push(std::thread::spawn(move || {
            let mut stream = stream;
            let mut chunk = [0u8; 8192];
            while let Ok(n) = stream.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                if let Ok(mut buf) = console.lock() {
                    buf.extend_from_slice(&chunk[..n]);
                }
            }
        }));
    }
    Ok(RunningVm {
        child,
        console,
        readers,
        started,
        timeout: job.timeout,
        _initrd: initrd,
    })
}

impl RunningVm {
    /// Everything on the serial console so far.
    pub fn console(&self) -> String {
        let raw = self
            .console
            .lock()
            .map(|buf| buf.clone())
            .unwrap_or_default();
        String::from_utf8_lossy(&raw).replace('\r', "")
    }

    /// Waits until the console shows a line equal to `line` (the script
    /// printing a marker), for at most `timeout`. Fails when qemu exits
    /// first, or on timeout, with the console so far.
    pub fn wait_for_line(&mut self, line: &str, timeout: Duration) -> Result<(), RigError> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.console().lines().any(|l| l == line) {
                return Ok(());
            }
            if let Some(status) = self
                .child
                .try_wait()
                .map_err(RigError::io("wait for qemu"))?
            {
                return Err(RigError::NoVerdict {
                    status: format!("{status}, before the line {line:?}"),
                    console: self.console(),
                });
            }
            if Instant::now() >= deadline {
                return Err(RigError::Timeout {
                    seconds: timeout.as_secs(),
                    console: self.console(),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for the job to end (within the job's timeout, counted from
    /// the boot) and returns its output.
    pub fn wait(mut self) -> Result<VmOutput, RigError> {
        let status = loop {
            if let Some(status) = self
                .child
                .try_wait()
                .map_err(RigError::io("wait for qemu"))?
            {
                break Some(status);
            }
            if self.started.elapsed() > self.timeout {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        for reader in std::mem::take(&mut self.readers) {
            let _ = reader.join();
        }
        let console = self.console();
        let elapsed = self.started.elapsed();
        let Some(status) = status else {
            return Err(RigError::Timeout {
                seconds: self.timeout.as_secs(),
                console,
            });
        };
        match parse_verdict(&console) {
            Some((exit_code, output)) => Ok(VmOutput {
                exit_code,
                output,
                console,
                elapsed,
            }),
            None => Err(RigError::NoVerdict {
                status: status.to_string(),
                console,
            }),
        }
    }
}

impl Drop for RunningVm {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        for reader in std::mem::take(&mut self.readers) {
            let _ = reader.join();
        }
    }
}

/// See [`VmOutput::section`].
fn section<'a>(output: &'a str, name: &str) -> Vec<&'a str> {
    let marker = format!("== {name}");
    output
        .lines()
        .skip_while(|line| *line != marker)
        .skip(1)
        .take_while(|line| !line.starts_with("== "))
        .collect()
}

/// Finds the script's output and exit code between the marker lines.
fn parse_verdict(console: &str) -> Option<(i32, String)> {
    let start = console.find(BEGIN)? + BEGIN.len();
    let rest = console
        .get(start..)?
        .strip_prefix('\n')
        .unwrap_or(console.get(start..)?);
    let end = rest.find(END_PREFIX)?;
    let output = rest.get(..end)?.to_owned();
    let code = rest.get(end + END_PREFIX.len()..)?;
    let code = code.split("@@").next()?.trim().parse().ok()?;
    Some((code, output))
}

#[derive(Debug)]
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdict_is_read_between_the_markers() {
        let console =
            "boot noise\n@@RVS-BEGIN@@\nline 1\nline 2\n@@RVS-END rc=3@@\n@@RVS-DMESG@@\n";
        assert_eq!(
            parse_verdict(console),
            Some((3, "line 1\nline 2\n".to_owned()))
        );
    }

    #[test]
    fn sections_run_from_their_marker_to_the_next() {
        let output = "noise\n== plan\na\nb\n== sync\n== traffic\nc\n";
        assert_eq!(section(output, "plan"), ["a", "b"]);
        assert!(section(output, "sync").is_empty());
        assert_eq!(section(output, "traffic"), ["c"]);
        assert!(section(output, "missing").is_empty());
        assert!(section(output, "pla").is_empty(), "whole names only");
    }

    #[test]
    fn no_end_marker_means_no_verdict() {
        assert_eq!(parse_verdict("@@RVS-BEGIN@@\nstill running\n"), None);
        assert_eq!(parse_verdict("kernel panic\n"), None);
    }
}
