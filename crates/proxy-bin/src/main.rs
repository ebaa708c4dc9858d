//! `rvs-proxy`: kube-proxy's IPVS mode, in Rust.
//!
//! This binary wires the pieces of the `rvs-proxy` library to a source
//! (a manifests directory or the API server) and a dataplane (the
//! kernel's IPVS plus `kube-ipvs0`, or the userspace dataplane in this
//! process, optionally exposed on an admin socket), and runs the sync
//! loop: a sync when the source changes (no more often than
//! `--ipvs-min-sync-period`), a full sync every `--ipvs-sync-period`, a
//! quicker re-check while real servers drain, and retries with backoff
//! after failures. `--dry-run` prints the plan; `--cleanup` removes what
//! the proxy owns and nothing else. On the kernel dataplane each sync is
//! followed by kube-proxy's ipsets and iptables rules ([`netfilter`]),
//! and kube-proxy's sysctls are set at start ([`sysctl`]).

#![forbid(unsafe_code)]

mod cli;
mod config;
mod kernel;
mod netfilter;
mod observe;
mod source;
mod sysctl;

use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rvs_ipvs::IpvsClient;
use rvs_model::admin::Admin;
use rvs_proxy::sync::{AddressBinder, NoBinder, Syncer, describe};
use rvs_proxy::{ClusterState, ProxyConfig};

use crate::cli::{Cli, Dataplane};
use crate::netfilter::{Netfilter, NetfilterOptions, NetfilterReport};
use crate::observe::Observer;
use crate::source::Source;

/// How often a draining real server is re-checked.
const DRAIN_CHECK: Duration = Duration::from_secs(1);
/// How long one wait for a source change lasts before timers are checked.
const WAIT_SLICE: Duration = Duration::from_millis(200);

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

/// What the kernel dataplane programs besides IPVS and kube-ipvs0.
#[derive(Debug)]
struct KernelSide {
    netfilter: Netfilter,
    sysctls: Vec<sysctl::Sysctl>,
    /// Setting a sysctl failed: full syncs try again.
    sysctls_failed: bool,
}

impl KernelSide {
    fn new(cli: &Cli) -> anyhow::Result<KernelSide> {
        let local_detect = cli.local_detect()?;
        let options = NetfilterOptions {
            maxelem: cli.ipset_maxelem,
            rules: rvs_netfilter::iptables::RulesConfig {
                masquerade_all: cli.masquerade_all,
                masquerade_bit: cli.iptables_masquerade_bit,
                ..rvs_netfilter::iptables::RulesConfig::default()
            },
            local_detect,
            backend: cli.backend(),
            families: netfilter::kernel_families(),
        };
        Ok(KernelSide {
            netfilter: Netfilter::new(options),
            sysctls: sysctl::kube_proxy_sysctls(&sysctl::kernel_release(), cli.ipvs_strict_arp),
            sysctls_failed: false,
        })
    }

    fn ensure_sysctls(&mut self) -> usize {
        let (_, failed) = sysctl::ensure(std::path::Path::new("/proc/sys"), &self.sysctls);
        self.sysctls_failed = failed > 0;
        failed
    }

    /// After an IPVS sync: the sets and rules, in the same scope.
    fn after_sync(
        &mut self,
        cluster: &ClusterState,
        config: &ProxyConfig,
        changed: Option<&std::collections::BTreeSet<rvs_proxy::cluster::ObjectName>>,
    ) -> NetfilterReport {
        let mut report = self.netfilter.sync(cluster, config, changed);
        if changed.is_none() && self.sysctls_failed {
            report.failures += self.ensure_sysctls();
        }
        report
    }
}

fn run_loop<A: Admin, B: AddressBinder>(
    cli: &Cli,
    source: &mut Source,
    syncer: &mut Syncer<A, B>,
    kernel_side: &mut Option<KernelSide>,
    mut observer: Option<&mut Observer>,
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    let mut last_sync: Option<Instant> = None;
    let mut next_full = Instant::now();
    let mut backoff = Duration::from_millis(500);
    let mut retry_at: Option<Instant> = None;
    let mut draining = false;
    let mut changed = true;
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        let min_ok = last_sync.is_none_or(|t| now.duration_since(t) >= cli.ipvs_min_sync_period);
        let due = changed
            || now >= next_full
            || retry_at.is_some_and(|t| now >= t)
            || (draining && last_sync.is_some_and(|t| now.duration_since(t) >= DRAIN_CHECK));
        if due && min_ok {
            // A pending change goes first, as a partial sync: a full sync
            // (timer or retry) still due runs on the next pass, so a
            // change never waits behind a read of every virtual server.
            let full = !(changed && last_sync.is_some())
                && (now >= next_full || retry_at.is_some_and(|t| now >= t));
            let load_start = Instant::now();
            let outcome = source
                .load(&syncer.config)
                .and_then(|cluster| match cluster {
                    None => Ok(None),
                    Some((cluster, changes)) => {
                        let load_ms = load_start.elapsed().as_millis() as u64;
                        // Timers and retries read the whole dataplane;
                        // source changes touch only what changed.
                        let report = if full {
                            syncer.sync(cluster)?
                        } else {
                            syncer.sync_changes(cluster, &changes)?
                        };
                        let nf = kernel_side
                            .as_mut()
                            .map(|k| k.after_sync(cluster, &syncer.config, report.changed.as_ref()))
                            .unwrap_or_default();
                        Ok(Some((load_ms, report, nf, cluster)))
                    }
                });
            changed = false;
            match outcome {
                Ok(None) => tracing::debug!("waiting for the first complete list before syncing"),
                Ok(Some((load_ms, report, nf, cluster))) => {
                    if let Some(o) = observer.as_deref_mut() {
                        o.synced(
                            full,
                            now.elapsed(),
                            Some(&report),
                            nf.failures,
                            Some(cluster),
                        );
                        o.netfilter_failed(nf.failures);
                    }
                    last_sync = Some(now);
                    if full {
                        next_full = now + cli.ipvs_sync_period;
                    }
                    tracing::info!(
                        full,
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
                        set_members = nf.members_changed,
                        restores = nf.restores,
                        netfilter_failures = nf.failures,
                        ipset_ms = nf.ipset_time.as_millis() as u64,
                        iptables_ms = nf.iptables_time.as_millis() as u64,
                        "synced"
                    );
                    draining = report.draining > 0;
                    if report.failed + report.address_failures + nf.failures > 0 {
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
                    if let Some(o) = observer.as_deref_mut() {
                        o.synced(full, now.elapsed(), None, 0, None);
                    }
                    last_sync = Some(now);
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
        if source.wait_change(WAIT_SLICE) {
            changed = true;
            if let Some(o) = observer.as_deref_mut() {
                o.queued();
            }
        }
        // Counters read every virtual server: never between a change and
        // its sync.
        if !changed && let Some(o) = observer.as_deref_mut() {
            o.poll_counters(&mut syncer.admin);
        }
    }
    Ok(())
}

fn run() -> anyhow::Result<()> {
    let (cli, ignored) = config::parse_args()?;
    init_logging(cli.verbosity);
    for field in ignored {
        tracing::warn!(%field, "--config: field accepted but not implemented by rvs-proxy");
    }
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
    let mut source = match &cli.manifests {
        Some(dir) => Source::Manifests {
            dir: dir.clone(),
            seen: None,
            cache: rvs_proxy::source::manifests::DirCache::new(
                &config.node_name,
                config.service_proxy_name.as_deref(),
            ),
            watch: source::watch(dir),
        },
        None => source::api(cli.kubeconfig.as_deref(), cli.master.as_deref(), &config)?,
    };
    match cli.dataplane {
        Dataplane::Kernel => {
            if cli.admin_socket.is_some() {
                bail!(
                    "--admin-socket serves the userspace dataplane; read the kernel's with rvsadm directly"
                );
            }
            let admin = IpvsClient::connect()
                .context("connecting to the kernel's IPVS (is the ip_vs module loaded?)")?;
            let binder = kernel::KubeIpvs0::new().context("opening rtnetlink")?;
            let side = KernelSide::new(&cli)?;
            drive(
                &cli,
                &mut source,
                Syncer::new(admin, binder, config),
                Some(side),
                |binder| binder.remove_device().context("removing kube-ipvs0"),
            )
        }
        Dataplane::Userspace => {
            if cli.cleanup {
                tracing::info!(
                    "the userspace dataplane keeps no state beyond its process: nothing to clean up"
                );
                return Ok(());
            }
            let dataplane = rvs_userspace::Dataplane::start(rvs_userspace::Options {
                workers: cli.workers,
                ..rvs_userspace::Options::default()
            })?;
            let server = match &cli.admin_socket {
                None => None,
                Some(path) => {
                    let listener = rvs_admin::bind(path)
                        .with_context(|| format!("creating the admin socket {}", path.display()))?;
                    let shared: rvs_admin::SharedAdmin = Arc::new(Mutex::new(dataplane.admin()));
                    let server = rvs_admin::Server::new(listener, shared)
                        .and_then(rvs_admin::Server::spawn)
                        .context("starting the admin server")?;
                    tracing::info!(socket = %path.display(), "admin socket ready");
                    Some((server, path.clone()))
                }
            };
            let admin = dataplane.admin();
            let result = if cli.bind_addresses {
                let binder = kernel::KubeIpvs0::new().context("opening rtnetlink")?;
                drive(
                    &cli,
                    &mut source,
                    Syncer::new(admin, binder, config),
                    None,
                    |_| Ok(()),
                )
            } else {
                drive(
                    &cli,
                    &mut source,
                    Syncer::new(admin, NoBinder::default(), config),
                    None,
                    |_| Ok(()),
                )
            };
            if let Some((server, path)) = server {
                if let Err(e) = server.stop() {
                    tracing::warn!(error = %e, "admin server stopped with an error");
                }
                let _ = std::fs::remove_file(path);
            }
            dataplane.shutdown(Duration::from_secs(2));
            result
        }
    }
}

/// Runs the chosen mode (plan, cleanup or the sync loop) on a dataplane.
fn drive<A: Admin, B: AddressBinder>(
    cli: &Cli,
    source: &mut Source,
    mut syncer: Syncer<A, B>,
    mut kernel_side: Option<KernelSide>,
    remove_device: impl FnOnce(&mut B) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    if cli.dry_run {
        let cluster = wait_for_view(source, &syncer.config)?;
        let (_, plan, _) = syncer.plan(&cluster)?;
        let mut out = std::io::stdout().lock();
        out.write_all(describe(&plan.ops).as_bytes())
            .context("write the plan")?;
        return Ok(());
    }
    if cli.cleanup {
        let cluster = wait_for_view(source, &syncer.config).unwrap_or_default();
        let report = syncer.cleanup(&cluster)?;
        remove_device(&mut syncer.binder)?;
        // Rules before sets: the kernel keeps sets that rules reference.
        let nf_failures = if kernel_side.is_some() {
            netfilter::cleanup(cli.backend(), &netfilter::kernel_families())
        } else {
            0
        };
        tracing::info!(
            deleted = report.applied,
            failed = report.failed,
            netfilter_failures = nf_failures,
            "cleaned up"
        );
        if report.failed + nf_failures > 0 {
            bail!(
                "cleanup incomplete: {} IPVS deletions and {nf_failures} netfilter steps failed (see the log)",
                report.failed
            );
        }
        return Ok(());
    }
    if let Some(side) = kernel_side.as_mut() {
        side.ensure_sysctls();
    }
    if let Some(timeouts) = cli.timeouts()? {
        syncer
            .admin
            .apply(&rvs_model::admin::Op::SetTimeouts(timeouts))
            .context("setting the IPVS timeouts (--ipvs-tcp-timeout, --ipvs-tcpfin-timeout, --ipvs-udp-timeout)")?;
        tracing::info!(
            tcp = timeouts.tcp,
            tcpfin = timeouts.tcp_fin,
            udp = timeouts.udp,
            "IPVS timeouts set"
        );
    }
    let stop = Arc::new(AtomicBool::new(false));
    spawn_signal_watch(Arc::clone(&stop))?;
    let mut observer = if cli.once {
        None
    } else {
        Some(Observer::start(cli)?)
    };
    let result = run_loop(
        cli,
        source,
        &mut syncer,
        &mut kernel_side,
        observer.as_mut(),
        &stop,
    );
    if let Some(o) = observer {
        o.stop();
    }
    if kernel_side.is_some() {
        tracing::info!("stopped; the kernel keeps its state for the next start to adopt");
    } else {
        tracing::info!("stopped");
    }
    result
}

/// The first complete view (the API source needs its initial lists).
fn wait_for_view(source: &mut Source, config: &ProxyConfig) -> anyhow::Result<ClusterState> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some((cluster, _)) = source.load(config)? {
            return Ok(cluster.clone());
        }
        if Instant::now() > deadline {
            bail!("the source gave no complete view within 60 s");
        }
        source.wait_change(WAIT_SLICE);
    }
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
