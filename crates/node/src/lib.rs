//! What `rvs-proxy` programs on the node besides IPVS, as kube-proxy's
//! IPVS mode does:
//!
//! * [`kube_ipvs0`]: the `kube-ipvs0` dummy device and the virtual
//!   addresses bound to it (an [`rvs_proxy::sync::AddressBinder`]);
//! * [`netfilter`]: kube-proxy's ipsets and iptables rules, synced after
//!   each IPVS sync in the same scope, behind set and rule backends;
//! * [`sysctl`]: the sysctls (conntrack's and IPVS's) kube-proxy sets at
//!   start;
//! * [`conntrack`]: the stale UDP conntrack entries kube-proxy deletes
//!   after a sync in which UDP endpoints changed.
//!
//! [`KernelSide`] puts the netfilter syncer, the sysctls and the
//! conntrack cleanup behind [`rvs_proxy::run::NodeSide`], so the sync
//! loop runs them after each sync of the kernel dataplane.

pub mod conntrack;
pub mod kube_ipvs0;
pub mod netfilter;
pub mod sysctl;

use std::collections::BTreeSet;

use rvs_model::admin::Admin;
use rvs_netfilter::iptables::Backend;
use rvs_proxy::ProxyConfig;
use rvs_proxy::cluster::{ClusterState, ObjectName};
use rvs_proxy::ipsets::IpFamily;
use rvs_proxy::run::{ConntrackCleanup, NodeReport, NodeSide};
use rvs_proxy::sync::{BindError, SyncError, SyncReport, Syncer};

pub use conntrack::{ConntrackBackend, KernelConntrack};
pub use kube_ipvs0::KubeIpvs0;
pub use netfilter::{
    KernelRules, KernelSets, Netfilter, NetfilterOptions, RuleBackend, SetBackend,
};

/// How the kernel dataplane's node side is set up.
#[derive(Clone, Debug)]
pub struct NodeOptions {
    /// The sets and rules.
    pub netfilter: NetfilterOptions,
    /// Which iptables binaries write the rules.
    pub backend: Backend,
    /// `--ipvs-strict-arp`.
    pub strict_arp: bool,
    /// The `--conntrack-*` settings.
    pub conntrack: sysctl::ConntrackOptions,
    /// Where `/proc/sys` and `/sys` are.
    pub sysctl_roots: sysctl::Roots,
}

/// What the node side needs to know of the host it runs on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Host {
    /// The kernel's release (`uname -r`).
    pub release: String,
    /// The CPUs kube-proxy sizes the conntrack table by
    /// ([`sysctl::cpu_count`]).
    pub cpus: usize,
}

impl Host {
    /// The running kernel's release and the host's CPUs (read under
    /// `sys`).
    pub fn detect(sys: &std::path::Path) -> Host {
        Host {
            release: sysctl::kernel_release(),
            cpus: sysctl::cpu_count(sys),
        }
    }
}

/// The kernel dataplane's node side: kube-proxy's sets, rules, sysctls
/// and stale UDP conntrack entries.
#[derive(Debug)]
pub struct KernelSide<S = KernelSets, R = KernelRules, C = KernelConntrack> {
    netfilter: Netfilter<S, R>,
    sysctls: Vec<sysctl::Sysctl>,
    sysctl_roots: sysctl::Roots,
    /// Setting a sysctl failed: full syncs try again.
    sysctls_failed: bool,
    conntrack: C,
    udp_endpoints: conntrack::UdpEndpointsTracker,
    /// The families the node runs.
    families: Vec<IpFamily>,
    /// Families whose conntrack cleanup failed: full syncs try again.
    cleanup_failed: BTreeSet<IpFamily>,
}

impl KernelSide {
    /// The kernel's sets, `iptables-restore` and conntrack table, for the
    /// running kernel.
    pub fn new(options: NodeOptions) -> KernelSide {
        let rules = KernelRules {
            backend: options.backend,
        };
        let host = Host::detect(&options.sysctl_roots.sys);
        KernelSide::with_backends(
            options,
            KernelSets::default(),
            rules,
            KernelConntrack::default(),
            &host,
        )
    }
}

impl<S: SetBackend, R: RuleBackend, C: ConntrackBackend> KernelSide<S, R, C> {
    /// A node side writing through `sets`, `rules` and `conntrack`,
    /// setting the sysctls `host` needs: the conntrack ones, then the
    /// IPVS ones, in kube-proxy's order.
    pub fn with_backends(
        options: NodeOptions,
        sets: S,
        rules: R,
        conntrack: C,
        host: &Host,
    ) -> KernelSide<S, R, C> {
        let mut sysctls = sysctl::conntrack_sysctls(&options.conntrack, host.cpus);
        sysctls.extend(sysctl::kube_proxy_sysctls(
            &host.release,
            options.strict_arp,
        ));
        KernelSide {
            sysctls,
            sysctl_roots: options.sysctl_roots,
            families: options.netfilter.families.clone(),
            netfilter: Netfilter::new(options.netfilter, sets, rules),
            sysctls_failed: false,
            conntrack,
            udp_endpoints: conntrack::UdpEndpointsTracker::default(),
            cleanup_failed: BTreeSet::new(),
        }
    }

    /// Sets the sysctls that differ; returns how many could not be set.
    pub fn ensure_sysctls(&mut self) -> usize {
        let (_, failed) = sysctl::ensure(&self.sysctl_roots, &self.sysctls);
        self.sysctls_failed = failed > 0;
        failed
    }

    /// The sysctls this side sets, in order.
    pub fn sysctls(&self) -> &[sysctl::Sysctl] {
        &self.sysctls
    }

    /// The netfilter syncer.
    pub fn netfilter(&self) -> &Netfilter<S, R> {
        &self.netfilter
    }

    /// The conntrack backend.
    pub fn conntrack(&self) -> &C {
        &self.conntrack
    }

    /// kube-proxy's stale-entry cleanup, per family, when the sync changed
    /// UDP endpoints (or a failed one waits for a full sync). A failure is
    /// logged, as kube-proxy logs it, and not counted as a failed sync;
    /// the next full sync tries again.
    fn clean_conntrack(
        &mut self,
        cluster: &ClusterState,
        changed: Option<&BTreeSet<ObjectName>>,
    ) -> Vec<ConntrackCleanup> {
        let mut done = Vec::new();
        for family in self.families.clone() {
            let required = self.udp_endpoints.update(cluster, family, changed);
            let retry = changed.is_none() && self.cleanup_failed.contains(&family);
            if !required && !retry {
                continue;
            }
            let started = std::time::Instant::now();
            match conntrack::clean_stale_entries(&mut self.conntrack, cluster, family) {
                Ok(report) => {
                    self.cleanup_failed.remove(&family);
                    done.push(ConntrackCleanup {
                        family,
                        duration: started.elapsed(),
                        deleted: report.deleted,
                    });
                    let elapsed_ms = started.elapsed().as_millis();
                    if report.deleted > 0 {
                        tracing::info!(
                            ?family,
                            deleted = report.deleted,
                            listed = report.listed,
                            elapsed_ms,
                            "deleted stale UDP conntrack entries"
                        );
                    } else {
                        tracing::debug!(
                            ?family,
                            listed = report.listed,
                            elapsed_ms,
                            "no stale UDP conntrack entries"
                        );
                    }
                }
                Err(e) => {
                    self.cleanup_failed.insert(family);
                    tracing::error!(
                        ?family,
                        error = %rvs_proxy::run::display_chain(&e),
                        "cannot clear stale UDP conntrack entries; the next full sync tries again"
                    );
                }
            }
        }
        done
    }
}

impl<S: SetBackend, R: RuleBackend, C: ConntrackBackend> NodeSide for KernelSide<S, R, C> {
    fn after_sync(
        &mut self,
        cluster: &ClusterState,
        config: &ProxyConfig,
        changed: Option<&BTreeSet<ObjectName>>,
    ) -> NodeReport {
        let mut report = self.netfilter.sync(cluster, config, changed);
        if changed.is_none() && self.sysctls_failed {
            report.failures += self.ensure_sysctls();
        }
        // Last, as kube-proxy's syncProxyRules: the real servers are gone
        // from IPVS by now, so no new entry points at them.
        report.conntrack_cleanups = self.clean_conntrack(cluster, changed);
        report
    }
}

/// What `--cleanup` removed, and what it could not.
#[derive(Debug, Default)]
pub struct CleanupReport {
    /// The virtual servers and addresses.
    pub ipvs: SyncReport,
    /// Netfilter steps (chains, jumps, sets) that failed.
    pub netfilter_failures: usize,
}

impl CleanupReport {
    /// Whether anything failed (each failure is logged).
    pub fn failed(&self) -> bool {
        self.ipvs.failed + self.ipvs.address_failures + self.netfilter_failures > 0
    }
}

/// Why `--cleanup` could not even start.
#[derive(Debug, thiserror::Error)]
pub enum CleanupError {
    /// The dataplane could not be read.
    #[error(transparent)]
    Sync(#[from] SyncError),
    /// kube-ipvs0 or the host's addresses could not be read or removed.
    #[error(transparent)]
    Bind(#[from] BindError),
}

/// `--cleanup` of the kernel dataplane without a cluster view: the
/// virtual servers rvs owns as the node alone shows them (see
/// [`rvs_proxy::sync::cleanup_owns`]; none when `admin` is `None`, a
/// kernel without `ip_vs`), `kube-ipvs0`, then our iptables chains and
/// jumps, then our ipsets. Nothing foreign is touched.
pub fn cleanup<A: Admin>(
    admin: Option<A>,
    mut binder: KubeIpvs0,
    config: ProxyConfig,
    backend: Backend,
) -> Result<CleanupReport, CleanupError> {
    let mut report = CleanupReport::default();
    if let Some(admin) = admin {
        let host = binder.host_addresses()?;
        let mut syncer = Syncer::new(admin, binder, config);
        report.ipvs = syncer.cleanup(&host)?;
        binder = syncer.binder;
    }
    binder.remove_device()?;
    // Rules before sets: the kernel keeps sets that rules reference.
    let families = netfilter::kernel_families(backend);
    report.netfilter_failures = netfilter::cleanup(backend, &families);
    Ok(report)
}
