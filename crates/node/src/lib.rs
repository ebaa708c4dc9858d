//! What `rvs-proxy` programs on the node besides IPVS, as kube-proxy's
//! IPVS mode does:
//!
//! * [`kube_ipvs0`]: the `kube-ipvs0` dummy device and the virtual
//!   addresses bound to it (an [`rvs_proxy::sync::AddressBinder`]);
//! * [`netfilter`]: kube-proxy's ipsets and iptables rules, synced after
//!   each IPVS sync in the same scope, behind set and rule backends;
//! * [`sysctl`]: the sysctls kube-proxy sets at start.
//!
//! [`KernelSide`] puts the netfilter syncer and the sysctls behind
//! [`rvs_proxy::run::NodeSide`], so the sync loop runs them after each
//! sync of the kernel dataplane.

pub mod kube_ipvs0;
pub mod netfilter;
pub mod sysctl;

use std::collections::BTreeSet;
use std::path::PathBuf;

use rvs_model::admin::Admin;
use rvs_netfilter::iptables::Backend;
use rvs_proxy::ProxyConfig;
use rvs_proxy::cluster::{ClusterState, ObjectName};
use rvs_proxy::run::{NodeReport, NodeSide};
use rvs_proxy::sync::{BindError, SyncError, SyncReport, Syncer};

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
    /// Where sysctls live (`/proc/sys`).
    pub sysctl_root: PathBuf,
}

/// The kernel dataplane's node side: kube-proxy's sets, rules and
/// sysctls.
#[derive(Debug)]
pub struct KernelSide<S = KernelSets, R = KernelRules> {
    netfilter: Netfilter<S, R>,
    sysctls: Vec<sysctl::Sysctl>,
    sysctl_root: PathBuf,
    /// Setting a sysctl failed: full syncs try again.
    sysctls_failed: bool,
}

impl KernelSide {
    /// The kernel's sets and `iptables-restore`, for the running kernel.
    pub fn new(options: NodeOptions) -> KernelSide {
        let rules = KernelRules {
            backend: options.backend,
        };
        KernelSide::with_backends(
            options,
            KernelSets::default(),
            rules,
            &sysctl::kernel_release(),
        )
    }
}

impl<S: SetBackend, R: RuleBackend> KernelSide<S, R> {
    /// A node side writing through `sets` and `rules`, setting the
    /// sysctls a kernel of `release` needs.
    pub fn with_backends(
        options: NodeOptions,
        sets: S,
        rules: R,
        release: &str,
    ) -> KernelSide<S, R> {
        KernelSide {
            sysctls: sysctl::kube_proxy_sysctls(release, options.strict_arp),
            sysctl_root: options.sysctl_root,
            netfilter: Netfilter::new(options.netfilter, sets, rules),
            sysctls_failed: false,
        }
    }

    /// Sets the sysctls that differ; returns how many could not be set.
    pub fn ensure_sysctls(&mut self) -> usize {
        let (_, failed) = sysctl::ensure(&self.sysctl_root, &self.sysctls);
        self.sysctls_failed = failed > 0;
        failed
    }

    /// The netfilter syncer.
    pub fn netfilter(&self) -> &Netfilter<S, R> {
        &self.netfilter
    }
}

impl<S: SetBackend, R: RuleBackend> NodeSide for KernelSide<S, R> {
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
