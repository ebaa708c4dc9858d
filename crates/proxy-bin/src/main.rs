//! `rvs-proxy`: kube-proxy's IPVS mode, in Rust.
//!
//! This binary only wires: it parses the command line (and `--config`),
//! builds one tokio runtime, connects a source (a manifests directory or
//! the API server) to a dataplane (the kernel's IPVS with `kube-ipvs0`,
//! ipsets, iptables rules and sysctls from `rvs-node`, or the userspace
//! dataplane in this process) and runs `rvs-proxy`'s sync loop until
//! SIGTERM or SIGINT, then drains. The work is done by the libraries.

mod cli;
mod config;
mod dataplane;
mod options;

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use rvs_proxy::source::{ApiOptions, Source};

use crate::cli::Dataplane;

/// How long the runtime's tasks get to finish at exit.
const DRAIN: Duration = Duration::from_secs(2);

fn init_logging(verbosity: u8) {
    let level = match verbosity {
        0 | 1 => "info",
        2 | 3 => "debug",
        _ => "trace",
    };
    // kube's client logs an error for every failed connection attempt and
    // dumps 403s; the API source logs each such failure once, classified
    // (what to fix, that the last view is kept), so below -v=4 kube's own
    // lines are left out. RUST_LOG overrides all of it.
    let default = if verbosity >= 4 {
        level.to_owned()
    } else {
        format!("{level},kube_client=off,kube_runtime=off")
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// Sets `stop` on SIGTERM or SIGINT.
async fn watch_signals(stop: Arc<AtomicBool>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(term), Ok(int)) => (term, int),
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!(error = %e, "cannot watch SIGTERM and SIGINT");
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping"),
        _ = int.recv() => tracing::info!("SIGINT: stopping"),
    }
    stop.store(true, Ordering::Relaxed);
}

fn run() -> anyhow::Result<()> {
    let (cli, ignored) = config::parse_args()?;
    init_logging(cli.verbosity);
    for what in ignored {
        tracing::warn!("{what}");
    }
    if cli.proxy_mode != "ipvs" {
        bail!(
            "--proxy-mode={}: rvs-proxy implements only the ipvs mode",
            cli.proxy_mode
        );
    }
    let config = cli.proxy_config()?;
    if let Some(path) = &cli.write_config_to {
        // As kube-proxy: everything checked first, then written, then exit.
        cli.node_options()?;
        cli.observe_options()?;
        cli.timeouts()?;
        let text = rvs_proxy::config_file::render(&config::to_file(&cli)?);
        std::fs::write(path, text)
            .with_context(|| format!("--write-config-to {}", path.display()))?;
        tracing::info!(file = %path.display(), "wrote the configuration");
        return Ok(());
    }
    // One runtime for everything asynchronous: API watchers, metrics and
    // health servers, rtnetlink, signals. The sync loop runs on this
    // thread and blocks on it where it must.
    let workers = match cli.dataplane {
        // The userspace dataplane forwards on this runtime's threads.
        Dataplane::Userspace => rvs_userspace::worker_count(cli.workers),
        Dataplane::Kernel | Dataplane::Ebpf | Dataplane::KernelEbpf => 2,
    };
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.worker_threads(workers).thread_name("rvs-proxy-rt");
    if cli.dataplane == Dataplane::Userspace {
        builder.global_queue_interval(rvs_userspace::GLOBAL_QUEUE_INTERVAL);
    }
    let runtime = builder
        .enable_all()
        .build()
        .context("starting the runtime")?;
    // Neither needs a source, as in kube-proxy (its --cleanup runs before
    // it reads its kubeconfig).
    if cli.cleanup || cli.init_only {
        let result = dataplane::without_source(&cli, config, runtime.handle());
        runtime.shutdown_timeout(DRAIN);
        return result;
    }
    let stop = Arc::new(AtomicBool::new(false));
    runtime.spawn(watch_signals(Arc::clone(&stop)));
    let proxy_name = config.service_proxy_name.as_deref();
    let mut source = match &cli.manifests {
        Some(dir) => Source::manifests(dir, &config.node_name, proxy_name),
        None => {
            let api = ApiOptions {
                kubeconfig: cli.kubeconfig.clone(),
                master: cli.master.clone(),
            };
            Source::api(&api, &config.node_name, proxy_name, runtime.handle())?
        }
    };
    let parts = dataplane::Parts {
        cli: &cli,
        config,
        source: &mut source,
        runtime: runtime.handle(),
        stop: &stop,
    };
    let result = match cli.dataplane {
        Dataplane::Kernel | Dataplane::KernelEbpf => dataplane::kernel(parts),
        Dataplane::Userspace => dataplane::userspace(parts),
        Dataplane::Ebpf => dataplane::ebpf(parts),
    };
    runtime.shutdown_timeout(DRAIN);
    result
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
