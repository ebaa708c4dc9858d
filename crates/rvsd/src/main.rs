//! `rvsd`: the userspace IPVS dataplane as a daemon.
//!
//! It runs the userspace dataplane (`rvs-userspace`) in the foreground,
//! exposes it on an admin socket for `rvsadm --target unix:PATH`, logs to
//! stderr and, on SIGTERM or SIGINT, stops accepting, gives open
//! connections a grace period and removes its socket.
//!
//! The admin socket is mode 0600 (or 0660 for `--admin-socket-group`);
//! only a stale socket of rvsd's user at that path is replaced (see
//! `rvs_admin`). rvsd refuses to start while another userspace dataplane
//! (rvsd or `rvs-proxy --dataplane userspace`) runs in its network
//! namespace, naming it (see `rvs_userspace::InstanceLock`).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use rvs_admin::{BindOptions, Server, SharedAdmin, SocketGroup};
use rvs_userspace::{DEFAULT_INSTANCE_LOCK, Dataplane, Options};

/// rvsd: IPVS semantics in userspace, programmed with `rvsadm`.
#[derive(Debug, Parser)]
#[command(name = "rvsd", version)]
struct Cli {
    /// The admin socket to create (`rvsadm --target unix:PATH`).
    #[arg(long, value_name = "PATH")]
    admin_socket: PathBuf,

    /// Also let this group (a name or a numeric gid) use the admin
    /// socket: mode 0660 instead of 0600.
    #[arg(long, value_name = "NAME|GID")]
    admin_socket_group: Option<SocketGroup>,

    /// The per-network-namespace lock that keeps a second userspace
    /// dataplane from starting. Only change it to run several dataplanes
    /// in one namespace on purpose (tests do): they then share the
    /// traffic of the virtual addresses they have in common.
    #[arg(long, value_name = "NAME", default_value = DEFAULT_INSTANCE_LOCK)]
    instance_lock: String,

    /// Forwarding worker threads (0: one per CPU).
    #[arg(long, default_value_t = 0)]
    workers: usize,

    /// How long open connections may finish after SIGTERM.
    #[arg(long, default_value = "5", value_name = "SECONDS")]
    grace: u64,

    /// More logging (-v debug, -vv trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
}

fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// Waits for SIGTERM or SIGINT.
fn wait_for_signal() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the signal runtime")?;
    runtime.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("watching SIGTERM")?;
        let mut int = signal(SignalKind::interrupt()).context("watching SIGINT")?;
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: stopping"),
            _ = int.recv() => tracing::info!("SIGINT: stopping"),
        }
        Ok(())
    })
}

fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    // The lock first: a second rvsd must not touch the first one's socket.
    let dataplane = Dataplane::start(Options {
        workers: cli.workers,
        instance_lock: Some(cli.instance_lock.clone()),
        ..Options::default()
    })?;
    let listener = rvs_admin::bind_with(
        &cli.admin_socket,
        &BindOptions {
            group: cli.admin_socket_group.clone(),
        },
    )?;
    let admin: SharedAdmin = Arc::new(Mutex::new(dataplane.admin()));
    let server = Server::new(listener, admin)
        .context("starting the admin server")?
        .spawn()
        .context("starting the admin server thread")?;
    tracing::info!(socket = %cli.admin_socket.display(), "rvsd ready");
    let waited = wait_for_signal();
    // Also removes the socket file, unless someone replaced it.
    if let Err(e) = server.stop() {
        tracing::warn!(error = %e, "admin server stopped with an error");
    }
    dataplane.shutdown(Duration::from_secs(cli.grace));
    waited
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "rvsd: {e:#}");
            ExitCode::FAILURE
        }
    }
}
