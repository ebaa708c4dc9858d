//! `rvs-proxy`: kube-proxy's IPVS mode, in Rust.
//!
//! This binary wires the pieces of the `rvs-proxy` library to a source
//! (a manifests directory; the API-server source is to come) and a
//! dataplane (the kernel's IPVS plus `kube-ipvs0`), and runs the sync
//! loop: a sync when the source changes (no more often than
//! `--ipvs-min-sync-period`), a full sync every `--ipvs-sync-period`, a
//! quicker re-check while real servers drain, and retries with backoff
//! after failures. `--dry-run` prints the plan; `--cleanup` removes what
//! the proxy owns and nothing else.

#![forbid(unsafe_code)]

mod cli;
mod kernel;

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use rvs_ipvs::IpvsClient;
use rvs_model::admin::Admin;
use rvs_proxy::source::manifests;
use rvs_proxy::sync::{AddressBinder, Syncer, describe};
use rvs_proxy::{ClusterState, ProxyConfig};

use crate::cli::{Cli, Dataplane};

/// How often a draining real server is re-checked.
const DRAIN_CHECK: Duration = Duration::from_secs(1);
/// How often the manifests directory is polled for changes.
const WATCH_INTERVAL: Duration = Duration::from_millis(200);

fn init_logging(verbosity: u8) {
    let level = match verbosity {
        0 | 1 => "info",
        2 | 3 => "debug",
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

fn node_name(cli: &Cli) -> String {
    cli.hostname_override.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_default()
    })
}

fn load(dir: &Path, config: &ProxyConfig) -> anyhow::Result<ClusterState> {
    let (objects, errors) = manifests::load_dir(dir)?;
    for e in &errors {
        tracing::warn!(error = %e, "skipping a manifest document");
    }
    let (cluster, errors) = ClusterState::build(
        &objects.services,
        &objects.slices,
        &objects.nodes,
        &config.node_name,
        config.service_proxy_name.as_deref(),
    );
    for e in &errors {
        tracing::warn!(error = %e, "skipping an object");
    }
    if cluster.node.is_none() {
        tracing::warn!(node = %config.node_name, "no Node object for this node: NodePorts and local endpoints are not known");
    }
    Ok(cluster)
}

fn run_loop<A: Admin, B: AddressBinder>(
    cli: &Cli,
    dir: &Path,
    syncer: &mut Syncer<A, B>,
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    let mut last_fingerprint = None;
    let mut last_sync: Option<Instant> = None;
    let mut next_full = Instant::now();
    let mut backoff = Duration::from_millis(500);
    let mut retry_at: Option<Instant> = None;
    let mut draining = false;
    while !stop.load(Ordering::Relaxed) {
        let fingerprint = manifests::fingerprint(dir).ok();
        let changed = fingerprint != last_fingerprint;
        let now = Instant::now();
        let min_ok = last_sync.is_none_or(|t| now.duration_since(t) >= cli.ipvs_min_sync_period);
        let due = changed
            || now >= next_full
            || retry_at.is_some_and(|t| now >= t)
            || (draining && last_sync.is_some_and(|t| now.duration_since(t) >= DRAIN_CHECK));
        if due && min_ok {
            last_fingerprint = fingerprint;
            last_sync = Some(now);
            next_full = now + cli.ipvs_sync_period;
            let load_start = Instant::now();
            let outcome = load(dir, &syncer.config).and_then(|cluster| {
                let load_ms = load_start.elapsed().as_millis() as u64;
                tracing::debug!(load_ms, "loaded manifests");
                Ok((load_ms, syncer.sync(&cluster)?))
            });
            match outcome {
                Ok((load_ms, report)) => {
                    tracing::info!(
                        load_ms,
                        plan_ms = report.plan_time.as_millis() as u64,
                        bind_ms = report.bind_time.as_millis() as u64,
                        apply_ms = report.apply_time.as_millis() as u64,
                        services = report.services,
                        applied = report.applied,
                        failed = report.failed,
                        addresses = report.addresses_changed,
                        draining = report.draining,
                        elapsed_ms = report.elapsed.as_millis() as u64,
                        "synced"
                    );
                    draining = report.draining > 0;
                    if report.failed + report.address_failures > 0 {
                        retry_at = Some(now + backoff);
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                    } else {
                        retry_at = None;
                        backoff = Duration::from_millis(500);
                    }
                    if cli.once {
                        return Ok(());
                    }
                }
                Err(e) => {
                    tracing::error!(
                        error = format!("{e:#}"),
                        retry_in_ms = backoff.as_millis() as u64,
                        "sync failed"
                    );
                    if cli.once {
                        return Err(e);
                    }
                    retry_at = Some(now + backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
        std::thread::sleep(WATCH_INTERVAL);
    }
    tracing::info!("stopping; the dataplane keeps its state for the next start to adopt");
    Ok(())
}

fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging(cli.verbosity);
    if cli.proxy_mode != "ipvs" {
        bail!(
            "--proxy-mode={}: rvs-proxy implements only the ipvs mode",
            cli.proxy_mode
        );
    }
    let config = ProxyConfig {
        node_name: node_name(&cli),
        scheduler: cli.scheduler()?,
        exclude_cidrs: cli.ipvs_exclude_cidrs.clone(),
        nodeport_addresses: cli.nodeport_addresses.clone(),
        service_proxy_name: cli.service_proxy_name.clone(),
        sync_period: cli.ipvs_sync_period,
        min_sync_period: cli.ipvs_min_sync_period,
    };
    let Some(dir) = cli.manifests.clone() else {
        bail!("no source: pass --manifests DIR (the Kubernetes API source is not built yet)");
    };
    if cli.dataplane == Dataplane::Userspace {
        bail!("--dataplane=userspace is not built yet; use --dataplane=kernel");
    }
    let admin = IpvsClient::connect()
        .context("connecting to the kernel's IPVS (is the ip_vs module loaded?)")?;
    let binder = kernel::KubeIpvs0::new().context("opening rtnetlink")?;
    let mut syncer = Syncer {
        admin,
        binder,
        config,
    };

    if cli.dry_run {
        let cluster = load(&dir, &syncer.config)?;
        let (_, plan, _) = syncer.plan(&cluster)?;
        let mut out = std::io::stdout().lock();
        out.write_all(describe(&plan.ops).as_bytes())
            .context("write the plan")?;
        return Ok(());
    }
    if cli.cleanup {
        let cluster = load(&dir, &syncer.config).unwrap_or_default();
        let report = syncer.cleanup(&cluster)?;
        syncer
            .binder
            .remove_device()
            .context("removing kube-ipvs0")?;
        tracing::info!(
            deleted = report.applied,
            failed = report.failed,
            "cleaned up"
        );
        return Ok(());
    }
    let stop = Arc::new(AtomicBool::new(false));
    spawn_signal_watch(Arc::clone(&stop))?;
    run_loop(&cli, &dir, &mut syncer, &stop)
}

/// Sets `stop` on SIGTERM or SIGINT.
fn spawn_signal_watch(stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("signal runtime")?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            runtime.block_on(async move {
                use tokio::signal::unix::{SignalKind, signal};
                let (Ok(mut term), Ok(mut int)) = (
                    signal(SignalKind::terminate()),
                    signal(SignalKind::interrupt()),
                ) else {
                    return;
                };
                tokio::select! {
                    _ = term.recv() => {},
                    _ = int.recv() => {},
                }
                stop.store(true, Ordering::Relaxed);
            });
        })
        .context("spawn the signal thread")?;
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "rvs-proxy: {e:#}");
            ExitCode::FAILURE
        }
    }
}
