//! Test rigs that let rvs be tested against real kernels.
//!
//! * [`vm`]: boots Debian's cloud kernel (which ships `ip_vs`) under
//!   `qemu-system-x86_64 -accel tcg` with a busybox initramfs holding the
//!   binaries under test, runs a shell script inside and hands its output
//!   and exit code back through the serial console.
//! * [`backend`]: named TCP/UDP servers on loopback addresses for
//!   userspace end-to-end tests.
//! * [`cgroup`]: child cgroups (v2) created and removed by the test, a
//!   private bpffs, and client processes run inside them, for eBPF
//!   programs attached to a cgroup.
//! * [`keepalive`]: keep-alive HTTP clients (urllib3, one process each)
//!   and servers, and the reading of what the clients saw, for the
//!   rebalancing tests.
//! * [`netns`]: fresh network namespaces on the host kernel (for ipset,
//!   iptables and nftables tests), removed even when a test fails.
//! * [`sim`]: a simulated clock and the userspace IPVS core as an
//!   `Admin` dataplane, for sync-loop tests without sleeping or a kernel.
//! * [`fixtures`]: test data kept as files (hex dumps of kernel messages,
//!   the end-to-end scenarios' Kubernetes manifests).
//! * [`process`]: daemons under test, killed when the test ends and
//!   stopped with SIGTERM within a bound; [`tempdir`]: private
//!   directories removed on drop; [`eventually`]: bounded polling.
//! * [`control_plane`]: a real etcd and kube-apiserver on 127.0.0.1
//!   ([`ControlPlane`], from `scripts/control-plane.sh`), with `kubectl`,
//!   API server stop/start (an outage), etcd compaction, and kubeconfigs
//!   for tokens or other server addresses; taken down when dropped.
//! * [`proxy_bench`]: scale benches of a proxy under test (kube-proxy or
//!   rvs-proxy) in the VM against a [`ControlPlane`]: synthetic clusters
//!   created in bulk, completion polling in the guest, `/proc` sampling.
//! * [`relay`]: a loopback TCP relay a test cuts and restores, to
//!   disconnect a client (rvs-proxy) from the API server while both run.
//! * [`sandbox`]: re-runs a test in a fresh user, network, PID and mount
//!   namespace (no root needed), where whole ranges can be routed to
//!   loopback: for backends the API server would refuse on 127.0.0.0/8.
//!
//! A test against the API server, in outline (`K8S_BIN` or a Go
//! toolchain is needed, else it skips):
//!
//! ```no_run
//! use rvs_testrig::ControlPlane;
//!
//! let Some(plane) = ControlPlane::or_skip("my_test") else { return };
//! plane.apply("apiVersion: v1\nkind: Namespace\nmetadata: {name: demo}\n").unwrap();
//! let names = plane.kubectl(&["get", "namespaces", "-o", "name"]).unwrap();
//! assert!(names.contains("namespace/demo"));
//! plane.stop_apiserver().unwrap(); // an outage: etcd keeps the data
//! plane.start_apiserver().unwrap(); // same port, same certificates
//! plane.compact_etcd().unwrap(); // old resourceVersions are gone
//! // Dropping `plane` takes etcd and kube-apiserver down.
//! ```
//!
//! Tests that cannot get a rig (no root, no qemu, no kernel package) skip
//! with a message, unless `RVS_REQUIRE_PRIVILEGED=1` is set, in which case
//! a skip is a failure: see [`skip`].

pub mod backend;
pub mod cgroup;
pub mod control_plane;
mod cpio;
pub mod fixtures;
mod host;
pub mod image;
pub mod keepalive;
pub mod kernel;
pub mod latency;
pub mod netns;
pub mod process;
pub mod proxy_bench;
pub mod relay;
pub mod sandbox;
pub mod sim;
pub mod tempdir;
pub mod vm;

use std::path::PathBuf;

pub use control_plane::ControlPlane;
pub use netns::Netns;
pub use process::Daemon;
pub use relay::Relay;
pub use sandbox::{Sandbox, SandboxOptions};
pub use tempdir::TempDir;
pub use vm::{RunningVm, Vm, VmJob, VmOutput};

/// Errors of the rigs. Every variant says what was being done.
#[derive(Debug, thiserror::Error)]
pub enum RigError {
    /// A file-system or process operation failed.
    #[error("{context}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A helper command ran but failed.
    #[error("{context}: `{command}` failed ({status}): {stderr}")]
    Command {
        /// What was being done.
        context: String,
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// The end of what it wrote to stderr.
        stderr: String,
    },
    /// Something the rig needs is not available on this host.
    #[error("{0}")]
    Unavailable(String),
    /// A helper or server answered something the rig did not expect.
    #[error("{0}")]
    Unexpected(String),
    /// The VM did not report a verdict in time.
    #[error("VM run timed out after {seconds} s; console so far:\n{console}")]
    Timeout {
        /// The timeout that expired.
        seconds: u64,
        /// Everything the VM printed.
        console: String,
    },
    /// Something the test waits for did not happen in time.
    #[error("timed out after {within:?} waiting for {what}")]
    Deadline {
        /// What was awaited.
        what: String,
        /// How long.
        within: std::time::Duration,
    },
    /// A fixture file is malformed.
    #[error("{0}")]
    Fixture(String),
    /// The VM stopped without reporting a verdict.
    #[error("VM stopped without a verdict ({status}); console:\n{console}")]
    NoVerdict {
        /// How qemu exited.
        status: String,
        /// Everything the VM printed.
        console: String,
    },
}

impl RigError {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> RigError {
        let context = context.into();
        move |source| RigError::Io { context, source }
    }
}

/// `true` when `RVS_REQUIRE_PRIVILEGED=1`: rig-dependent tests must run.
pub fn privileged_required() -> bool {
    std::env::var("RVS_REQUIRE_PRIVILEGED").is_ok_and(|v| v == "1")
}

/// Reports that a test cannot run here.
///
/// Prints a skip message and returns, so the caller can `return`; panics
/// instead when [`privileged_required`] is set, because then a skip would
/// hide a missing rig.
pub fn skip(test: &str, reason: &dyn std::fmt::Display) {
    if privileged_required() {
        panic!("{test}: RVS_REQUIRE_PRIVILEGED=1 but the test cannot run: {reason}");
    }
    #[allow(clippy::print_stderr)]
    {
        eprintln!("SKIP {test}: {reason} (set RVS_REQUIRE_PRIVILEGED=1 to make this a failure)");
    }
}

/// Polls `check` every 20 ms until it holds; panics naming `what` when
/// `within` has passed first. For tests waiting on something that
/// happens in the background (a listener coming up, a sync landing).
pub fn eventually(what: &str, within: std::time::Duration, mut check: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + within;
    while !check() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {within:?} waiting: {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Directory where the rigs cache downloads and built images.
///
/// `RVS_RIG_CACHE` overrides it; the default is `target/rvs-rig` of this
/// workspace, so `cargo clean` removes it and git ignores it.
pub fn cache_dir() -> PathBuf {
    match std::env::var_os("RVS_RIG_CACHE") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/rvs-rig")),
    }
}
