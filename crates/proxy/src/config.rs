//! The proxy's settings that shape desired state, named after kube-proxy's
//! flags and defaults.

use std::time::Duration;

use ipnet::IpNet;
use rvs_model::Scheduler;

/// Annotation that picks a Service's IPVS scheduler (an rvs addition;
/// kube-proxy only has the node-wide `--ipvs-scheduler`).
pub const SCHEDULER_ANNOTATION: &str = "rvs.dev/ipvs-scheduler";

/// Settings that shape desired state and syncing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyConfig {
    /// This node's name (`--hostname-override`, else the host name).
    pub node_name: String,
    /// Default scheduler (`--ipvs-scheduler`, default `rr`).
    pub scheduler: Scheduler,
    /// Virtual servers in these ranges are never touched
    /// (`--ipvs-exclude-cidrs`).
    pub exclude_cidrs: Vec<IpNet>,
    /// Node addresses that serve NodePorts (`--nodeport-addresses`); empty
    /// means every address the Node object lists.
    pub nodeport_addresses: Vec<IpNet>,
    /// Only Services labelled `service.kubernetes.io/service-proxy-name`
    /// with this value (`--service-proxy-name`); `None` means only
    /// Services without that label, as kube-proxy does.
    pub service_proxy_name: Option<String>,
    /// Full resync period (`--ipvs-sync-period`, default 30 s).
    pub sync_period: Duration,
    /// Minimum time between syncs (`--ipvs-min-sync-period`, default 0).
    pub min_sync_period: Duration,
}

impl Default for ProxyConfig {
    fn default() -> ProxyConfig {
        ProxyConfig {
            node_name: String::new(),
            scheduler: Scheduler::RoundRobin,
            exclude_cidrs: Vec::new(),
            nodeport_addresses: Vec::new(),
            service_proxy_name: None,
            sync_period: Duration::from_secs(30),
            min_sync_period: Duration::ZERO,
        }
    }
}
