//! What `rvs-proxy` programs on the node besides IPVS, as kube-proxy's
//! IPVS mode does:
//!
//! * [`kube_ipvs0`]: the `kube-ipvs0` dummy device and the virtual
//!   addresses bound to it (an [`rvs_proxy::sync::AddressBinder`]);
//! * [`netfilter`]: kube-proxy's ipsets and iptables rules, synced after
//!   each IPVS sync in the same scope, behind set and rule backends;
//! * [`sysctl`]: the sysctls (conntrack's and IPVS's) kube-proxy sets at
//!   start.
//!
//! [`KernelSide`] puts the netfilter syncer and the sysctls behind
//! [`rvs_proxy::run::NodeSide`], so the sync loop runs them after each
//! sync of the kernel dataplane.

pub mod kube_ipvs0;
pub mod netfilter;
pub mod sysctl;

use std::collections::BTreeSet;

use rvs_netfilter::iptables::Backend;
use rvs_proxy::ProxyConfig;
use rvs_proxy::cluster::{ClusterState, ObjectName};
use rvs_proxy::run::{NodeReport, NodeSide};

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

/// The kernel dataplane's node side: kube-proxy's sets, rules and
/// sysctls.
#[derive(Debug)]
pub struct KernelSide<S = KernelSets, R = KernelRules> {
    netfilter: Netfilter<S, R>,
    sysctls: Vec<sysctl::Sysctl>,
    sysctl_roots: sysctl::Roots,
    /// Setting a sysctl failed: full syncs try again.
    sysctls_failed: bool,
}

impl KernelSide {
    /// The kernel's sets and `iptables-restore`, for the running kernel.
    pub fn new(options: NodeOptions) -> KernelSide {
        let rules = KernelRules {
            backend: options.backend,
        };
        let host = Host::detect(&options.sysctl_roots.sys);
        KernelSide::with_backends(options, KernelSets::default(), rules, &host)
    }
}

impl<S: SetBackend, R: RuleBackend> KernelSide<S, R> {
    /// A node side writing through `sets` and `rules`, setting the
    /// sysctls `host` needs: the conntrack ones, then the IPVS ones, in
    /// kube-proxy's order.
    pub fn with_backends(options: NodeOptions, sets: S, rules: R, host: &Host) -> KernelSide<S, R> {
        let mut sysctls = sysctl::conntrack_sysctls(&options.conntrack, host.cpus);
        sysctls.extend(sysctl::kube_proxy_sysctls(
            &host.release,
            options.strict_arp,
        ));
        KernelSide {
            sysctls,
            sysctl_roots: options.sysctl_roots,
            netfilter: Netfilter::new(options.netfilter, sets, rules),
            sysctls_failed: false,
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
