//! Wiring one dataplane to the source and running the chosen mode:
//! `--dry-run` (print the plan) or the sync loop; and, without a source,
//! `--cleanup` (remove what rvs owns) and `--init-only`.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use rvs_ebpf::SocketLb;
use rvs_ipvs::IpvsClient;
use rvs_model::admin::{Admin, Op};
use rvs_netfilter::iptables::DetectLocalMode;
use rvs_node::{KernelSide, KubeIpvs0};
use rvs_proxy::ProxyConfig;
use rvs_proxy::cluster::ClusterState;
use rvs_proxy::observe::{Observer, RebalanceReport};
use rvs_proxy::rebalance::{NotCarriedOut, RebalanceSide, RebalanceTarget};
use rvs_proxy::run::{ExtraDataplane, NodeSide, Runner, SyncObserver, SystemClock};
use rvs_proxy::source::Source;
use rvs_proxy::sync::{AddressBinder, NoBinder, Syncer, describe};
use tokio::runtime::Handle;

use crate::cli::{Cli, Dataplane};

/// How long `--dry-run` waits for the source's first view.
const FIRST_VIEW: Duration = Duration::from_secs(60);
/// How long `--detect-local-mode=NodeCIDR` waits for the Node's pod CIDR
/// at start (kube-proxy's `podCIDRsTimeout`).
const POD_CIDR_WAIT: Duration = Duration::from_secs(300);

/// What every mode needs.
pub(crate) struct Parts<'a> {
    pub(crate) cli: &'a Cli,
    pub(crate) config: ProxyConfig,
    pub(crate) source: &'a mut Source,
    pub(crate) runtime: &'a Handle,
    pub(crate) stop: &'a AtomicBool,
}

/// The kernel's IPVS, `kube-ipvs0`, and kube-proxy's sets, rules and
/// sysctls; with `kernel,ebpf` also the socket-level load balancer, synced
/// right after IPVS in the same scope.
pub(crate) fn kernel(parts: Parts<'_>) -> anyhow::Result<()> {
    let cli = parts.cli;
    let with_ebpf = cli.dataplane == Dataplane::KernelEbpf;
    if cli.admin_socket.is_some() && !with_ebpf {
        bail!(
            "--admin-socket serves the userspace and eBPF dataplanes; read the kernel's with rvsadm directly"
        );
    }
    if with_ebpf {
        EbpfRebalance::check(cli)?;
    } else {
        refuse_rebalance(cli)?;
    }
    let admin = IpvsClient::connect()
        .context("connecting to the kernel's IPVS (is the ip_vs module loaded?)")?;
    let binder = KubeIpvs0::new(parts.runtime).context("opening rtnetlink")?;
    let mut side = KernelSide::new(cli.node_options()?);
    let mut syncer = Syncer::new(admin, binder, parts.config.clone());
    if !cli.dry_run {
        side.ensure_sysctls();
    }
    if cli.detect_local_mode == DetectLocalMode::NodeCidr && !cli.dry_run {
        // As kube-proxy: wait for the pod CIDR at start (it then exits
        // when it changes; rvs-proxy re-renders the rules instead).
        let node = &parts.config.node_name;
        let has_cidr = |c: &ClusterState| c.node.as_ref().is_some_and(|n| !n.pod_cidrs.is_empty());
        if parts.source.wait_for(POD_CIDR_WAIT, has_cidr)?.is_none() {
            bail!(
                "--detect-local-mode=NodeCIDR: timeout waiting for PodCIDR allocation on node {node:?}"
            );
        }
    }
    if with_ebpf && !cli.dry_run {
        let lb = socket_lb(cli)?;
        let server = serve_admin(cli, lb.clone())?;
        let extra = ExtraDataplane {
            syncer: Syncer::new(lb.clone(), NoBinder::default(), parts.config.clone()),
        };
        // Connections made on the node go through the socket LB, which
        // rebalances them; IPVS's, from elsewhere, are not closed.
        let rebalance = EbpfRebalance::start(&lb, cli);
        let side = (side, RebalanceSide::new(rebalance.clone()));
        // The socket LB first: its maps are ready milliseconds after IPVS,
        // not after the ipsets and iptables rules.
        let result = rebalance.run_beside(parts.stop, || {
            drive(
                parts,
                &mut syncer,
                Some(&mut (extra, side)),
                Some(Box::new(rebalance.clone())),
            )
        });
        stop_admin(server);
        result?;
    } else {
        let mut side = (side, RebalanceSide::new(NotCarriedOut::new("kernel")));
        drive(parts, &mut syncer, Some(&mut side), None)?;
    }
    if !cli.dry_run {
        tracing::info!("stopped; the kernel keeps its state for the next start to adopt");
    }
    Ok(())
}

/// The socket-level load balancer alone: every process of `--cgroup`
/// reaches cluster, external and load-balancer IPs; nothing serves node
/// ports for traffic from outside the node.
pub(crate) fn ebpf(parts: Parts<'_>) -> anyhow::Result<()> {
    let cli = parts.cli;
    tracing::warn!(
        "--dataplane ebpf balances connections made on this node only: node ports are not served to traffic from outside (use --dataplane kernel,ebpf for that)"
    );
    EbpfRebalance::check(cli)?;
    let lb = socket_lb(cli)?;
    let server = serve_admin(cli, lb.clone())?;
    let rebalance = EbpfRebalance::start(&lb, cli);
    let mut syncer = Syncer::new(lb, NoBinder::default(), parts.config.clone());
    let mut side = RebalanceSide::new(rebalance.clone());
    let result = rebalance.run_beside(parts.stop, || {
        drive(
            parts,
            &mut syncer,
            Some(&mut side),
            Some(Box::new(rebalance.clone())),
        )
    });
    stop_admin(server);
    result?;
    tracing::info!("stopped; the programs stay attached for the next start to adopt");
    Ok(())
}

/// `--rebalance` other than `off` where the dataplane cannot carry it
/// out: refused, not silently ignored.
fn refuse_rebalance(cli: &Cli) -> anyhow::Result<()> {
    if !cli.rebalance.is_off() {
        bail!(
            "--rebalance={}: the kernel's IPVS cannot close a connection it forwards (it keeps no \
             per-connection idle state in its API and rvs does not forge resets); use --dataplane \
             kernel,ebpf, whose socket-level load balancer rebalances the connections made on the \
             node, or --dataplane userspace",
            cli.rebalance
        );
    }
    Ok(())
}

/// The userspace dataplane's rebalancing, as the proxy's sync sets it
/// and the metrics read it.
#[derive(Debug)]
struct UserspaceRebalance(rvs_userspace::sched::Sched);

impl RebalanceReport for UserspaceRebalance {
    fn statuses(&self) -> Vec<rvs_observe::RebalanceStatus> {
        self.0.rebalancing().statuses()
    }
}

impl RebalanceTarget for UserspaceRebalance {
    fn set(
        &self,
        protocol: rvs_model::Protocol,
        vip: std::net::SocketAddr,
        policy: Option<rvs_rebalance::Policy>,
    ) {
        self.0.rebalancing().set(protocol, vip, policy);
    }
}

/// The eBPF dataplane's rebalancing, as the proxy's sync sets it and the
/// metrics read it; its ticks run on a thread beside the sync loop.
#[derive(Clone, Debug)]
struct EbpfRebalance(Arc<Mutex<SocketLb>>);

/// How long the ticks pause after an error (a kernel without
/// `bpf_sock_destroy`), so it is logged at most this often.
const REBALANCE_RETRY: Duration = Duration::from_secs(60);

impl EbpfRebalance {
    /// Refuses a default policy this kernel cannot carry out (an
    /// annotated Service's is reported when its first tick fails).
    fn check(cli: &Cli) -> anyhow::Result<()> {
        if !cli.rebalance.is_off() {
            rvs_ebpf::rebalance::supported()
                .with_context(|| format!("--rebalance={}", cli.rebalance))?;
        }
        Ok(())
    }

    fn start(lb: &Arc<Mutex<SocketLb>>, cli: &Cli) -> EbpfRebalance {
        let me = EbpfRebalance(lb.clone());
        me.lock().rebalancing().set_default(cli.rebalance);
        if !cli.rebalance.is_off() {
            tracing::info!(policy = %cli.rebalance, "rebalancing long-lived connections by default");
        }
        me
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SocketLb> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs `f` with the ticks on a thread beside it until `f` returns
    /// (or panics).
    fn run_beside<T>(&self, stop: &AtomicBool, f: impl FnOnce() -> T) -> T {
        /// Stops the ticks however `f` ends.
        struct Done<'a>(&'a AtomicBool);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Relaxed);
            }
        }
        let done = AtomicBool::new(false);
        std::thread::scope(|scope| {
            scope.spawn(|| self.ticks(stop, &done));
            let _done = Done(&done);
            f()
        })
    }

    fn ticks(&self, stop: &AtomicBool, done: &AtomicBool) {
        let mut rebalancer = rvs_ebpf::rebalance::SocketRebalancer::new(self.lock().options());
        let mut failing = false;
        while !stop.load(Ordering::Relaxed) && !done.load(Ordering::Relaxed) {
            let now = std::time::Instant::now();
            let result = rebalancer.tick(now, &self.0);
            let next = match result {
                Ok(next) => {
                    if failing {
                        tracing::info!("rebalancing resumed");
                        failing = false;
                    }
                    next
                }
                Err(e) => {
                    if !failing {
                        tracing::error!(error = %e, retry_in = ?REBALANCE_RETRY, "rebalancing long-lived connections failed");
                        failing = true;
                    }
                    now + REBALANCE_RETRY
                }
            };
            // Sleep in short steps so a stop is seen promptly.
            while !stop.load(Ordering::Relaxed) && !done.load(Ordering::Relaxed) {
                let left = next.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() {
                    break;
                }
                std::thread::sleep(left.min(Duration::from_millis(200)));
            }
        }
    }
}

impl RebalanceReport for EbpfRebalance {
    fn statuses(&self) -> Vec<rvs_observe::RebalanceStatus> {
        self.lock().rebalancing().statuses()
    }
}

impl RebalanceTarget for EbpfRebalance {
    fn set(
        &self,
        protocol: rvs_model::Protocol,
        vip: std::net::SocketAddr,
        policy: Option<rvs_rebalance::Policy>,
    ) {
        self.lock().rebalancing().set((protocol, vip), policy);
    }
}

/// Attaches (or adopts) the socket-level load balancer.
fn socket_lb(cli: &Cli) -> anyhow::Result<Arc<Mutex<SocketLb>>> {
    let cgroup = match &cli.cgroup {
        Some(path) => path.clone(),
        None => {
            rvs_ebpf::cgroup2_root().context("no cgroup v2 hierarchy is mounted: give --cgroup")?
        }
    };
    let options = rvs_ebpf::Options::new(&cgroup, &cli.bpf_pin_dir);
    let lb = SocketLb::attach(options).with_context(|| {
        format!(
            "attaching the socket-level load balancer to {}",
            cgroup.display()
        )
    })?;
    tracing::info!(cgroup = %cgroup.display(), pins = %cli.bpf_pin_dir.display(), "socket-level load balancer attached");
    Ok(Arc::new(Mutex::new(lb)))
}

/// The admin socket, if asked for, serving `admin`.
fn serve_admin(
    cli: &Cli,
    admin: rvs_admin::SharedAdmin,
) -> anyhow::Result<Option<rvs_admin::RunningServer>> {
    let Some(path) = &cli.admin_socket else {
        return Ok(None);
    };
    let bind = rvs_admin::BindOptions {
        group: cli.admin_socket_group.clone(),
    };
    let listener = rvs_admin::bind_with(path, &bind)?;
    let server = rvs_admin::Server::new(listener, admin)
        .and_then(rvs_admin::Server::spawn)
        .context("starting the admin server")?;
    tracing::info!(socket = %path.display(), "admin socket ready");
    Ok(Some(server))
}

/// Stops the admin server; it removes its socket file (if it is still the
/// one it made).
fn stop_admin(server: Option<rvs_admin::RunningServer>) {
    if let Some(server) = server
        && let Err(e) = server.stop()
    {
        tracing::warn!(error = %e, "admin server stopped with an error");
    }
}

/// The userspace dataplane in this process, optionally on an admin
/// socket, optionally with addresses bound to `kube-ipvs0`.
pub(crate) fn userspace(parts: Parts<'_>) -> anyhow::Result<()> {
    let cli = parts.cli;
    let options = rvs_userspace::Options {
        workers: cli.workers,
        instance_lock: Some(cli.instance_lock.clone()),
        ..rvs_userspace::Options::default()
    };
    // Forwarding runs on the process's runtime, sized for it in main.
    let dataplane = rvs_userspace::Dataplane::start_on(parts.runtime, options)?;
    let server = serve_admin(cli, Arc::new(Mutex::new(dataplane.admin())))?;
    let admin = dataplane.admin();
    let config = parts.config.clone();
    dataplane.sched().rebalancing().set_default(cli.rebalance);
    if !cli.rebalance.is_off() {
        tracing::info!(policy = %cli.rebalance, "rebalancing long-lived connections by default");
    }
    let mut side = RebalanceSide::new(UserspaceRebalance(dataplane.sched().clone()));
    let report = || -> Option<Box<dyn RebalanceReport>> {
        Some(Box::new(UserspaceRebalance(dataplane.sched().clone())))
    };
    let result = if cli.bind_addresses {
        let binder = KubeIpvs0::new(parts.runtime).context("opening rtnetlink")?;
        let syncer = &mut Syncer::new(admin, binder, config);
        drive(parts, syncer, Some(&mut side), report())
    } else {
        let binder = NoBinder::default();
        let syncer = &mut Syncer::new(admin, binder, config);
        drive(parts, syncer, Some(&mut side), report())
    };
    stop_admin(server);
    dataplane.shutdown(Duration::from_secs(2));
    if result.is_ok() && !cli.dry_run {
        tracing::info!("stopped");
    }
    result
}

/// `--cleanup` and `--init-only`, which need no source. `--cleanup`
/// removes the virtual servers rvs owns as the node alone shows them
/// (see [`rvs_proxy::sync::cleanup_owns`]), `kube-ipvs0`, then our
/// iptables chains and jumps and our ipsets; `--init-only` sets the
/// sysctls. The userspace dataplane keeps no state beyond its process.
pub(crate) fn without_source(
    cli: &Cli,
    config: ProxyConfig,
    runtime: &Handle,
) -> anyhow::Result<()> {
    if cli.dataplane == Dataplane::Userspace {
        tracing::info!("the userspace dataplane keeps no state beyond its process: nothing to do");
        return Ok(());
    }
    if cli.init_only {
        let failed = KernelSide::new(cli.node_options()?).ensure_sysctls();
        if failed > 0 {
            bail!("--init-only: {failed} sysctls could not be set (see the log)");
        }
        tracing::info!("system initialized and --init-only given: exiting");
        return Ok(());
    }
    if matches!(cli.dataplane, Dataplane::Ebpf | Dataplane::KernelEbpf)
        && SocketLb::remove_pins(&cli.bpf_pin_dir).context("removing the eBPF dataplane")?
    {
        tracing::info!(pins = %cli.bpf_pin_dir.display(), "socket-level load balancer detached");
    }
    if cli.dataplane == Dataplane::Ebpf {
        return Ok(());
    }
    let binder = KubeIpvs0::new(runtime).context("opening rtnetlink")?;
    // Without ip_vs there are no virtual servers (kube-proxy skips IPVS
    // then too); the rest may still be there.
    let admin = IpvsClient::connect()
        .inspect_err(
            |e| tracing::info!(error = %e, "no IPVS in this kernel: no virtual servers to remove"),
        )
        .ok();
    let report = rvs_node::cleanup(admin, binder, config, cli.backend())?;
    tracing::info!(
        deleted = report.ipvs.applied,
        failed = report.ipvs.failed,
        netfilter_failures = report.netfilter_failures,
        "cleaned up"
    );
    if report.failed() {
        bail!(
            "cleanup incomplete: some IPVS deletions, unbindings or netfilter steps failed (see the log)"
        );
    }
    Ok(())
}

/// `--dry-run`, or the sync loop until a stop signal.
fn drive<A: Admin, B: AddressBinder>(
    parts: Parts<'_>,
    syncer: &mut Syncer<A, B>,
    node: Option<&mut (dyn NodeSide + 'static)>,
    rebalance: Option<Box<dyn RebalanceReport>>,
) -> anyhow::Result<()> {
    let cli = parts.cli;
    if cli.dry_run {
        let Some(cluster) = parts.source.first_view(FIRST_VIEW)? else {
            bail!("the source gave no complete view within {FIRST_VIEW:?}");
        };
        let (_, plan, _) = syncer.plan(&cluster)?;
        let mut out = std::io::stdout().lock();
        out.write_all(describe(&plan.ops).as_bytes())
            .context("write the plan")?;
        return Ok(());
    }
    if let Some(timeouts) = cli.timeouts()? {
        syncer
            .admin
            .apply(&Op::SetTimeouts(timeouts))
            .context("setting the IPVS timeouts (--ipvs-tcp-timeout, --ipvs-tcpfin-timeout, --ipvs-udp-timeout)")?;
        tracing::info!(
            tcp = timeouts.tcp,
            tcpfin = timeouts.tcp_fin,
            udp = timeouts.udp,
            "IPVS timeouts set"
        );
    }
    let mut observer = if cli.once {
        None
    } else {
        Some(Observer::start(&cli.observe_options()?, parts.runtime)?)
    };
    if let (Some(o), Some(r)) = (observer.as_mut(), rebalance) {
        o.read_rebalancing(r);
    }
    let mut options = cli.run_options();
    if observer.is_none() {
        options.schedule.counters_every = None;
    }
    let result = Runner {
        syncer,
        source: parts.source,
        node,
        observer: observer
            .as_mut()
            .map(|o| o as &mut (dyn SyncObserver + 'static)),
        clock: &SystemClock,
        options,
    }
    .run(parts.stop);
    if let Some(o) = observer {
        o.stop();
    }
    Ok(result?)
}
