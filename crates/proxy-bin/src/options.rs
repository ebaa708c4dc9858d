//! The option structs of each part, built from the command line: the
//! settings go where they are used, never as `&Cli`.

use std::time::Duration;

use anyhow::Context;
use rvs_model::Timeouts;
use rvs_netfilter::iptables::{Backend, LocalDetect, RulesConfig};
use rvs_node::sysctl::{ConntrackOptions, Roots};
use rvs_node::{NetfilterOptions, NodeOptions};
use rvs_observe::{ServeOptions, parse_bind_address};
use rvs_proxy::ProxyConfig;
use rvs_proxy::observe::ObserveOptions;
use rvs_proxy::run::RunOptions;

use crate::cli::{Cli, IptablesBackend};

/// This node's name as kube-proxy's `nodeutil.GetHostname` makes it:
/// `--hostname-override`, or (when that is unset or empty) the host
/// name, trimmed of white space and lower-cased; empty is an error.
/// Node names are lower-case DNS names, so an upper-case host name
/// still finds its Node.
pub(crate) fn node_name(
    hostname_override: Option<&str>,
    hostname: impl FnOnce() -> std::io::Result<String>,
) -> anyhow::Result<String> {
    let raw = match hostname_override.filter(|h| !h.is_empty()) {
        Some(name) => name.to_owned(),
        None => hostname().context("couldn't determine hostname (/proc/sys/kernel/hostname)")?,
    };
    let name = raw.trim();
    if name.is_empty() {
        anyhow::bail!(
            "--hostname-override or the host name: empty hostname is invalid (set --hostname-override)"
        );
    }
    Ok(name.to_lowercase())
}

impl Cli {
    /// The settings that shape desired state.
    pub(crate) fn proxy_config(&self) -> anyhow::Result<ProxyConfig> {
        let node_name = node_name(self.hostname_override.as_deref(), || {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
        })?;
        Ok(ProxyConfig {
            node_name,
            scheduler: self
                .ipvs_scheduler
                .parse()
                .map_err(|e| anyhow::anyhow!("--ipvs-scheduler: {e}"))?,
            exclude_cidrs: self.ipvs_exclude_cidrs.clone(),
            nodeport_addresses: self.nodeport_addresses.clone(),
            bind_address: self.bind_address,
            service_proxy_name: self.service_proxy_name.clone(),
            sync_period: self.ipvs_sync_period,
            min_sync_period: self.ipvs_min_sync_period,
            // Read from kube-ipvs0's binder at each full sync.
            local_addresses: None,
        })
    }

    /// How the sync loop runs.
    pub(crate) fn run_options(&self) -> RunOptions {
        let mut options = RunOptions {
            once: self.once,
            ..RunOptions::default()
        };
        options.schedule.min_period = self.ipvs_min_sync_period;
        options.schedule.full_period = self.ipvs_sync_period;
        options
    }

    /// The metrics and health servers.
    pub(crate) fn observe_options(&self) -> anyhow::Result<ObserveOptions> {
        Ok(ObserveOptions {
            serve: ServeOptions {
                metrics_addr: parse_bind_address(&self.metrics_bind_address, 10249)
                    .context("--metrics-bind-address")?,
                healthz_addr: parse_bind_address(&self.healthz_bind_address, 10256)
                    .context("--healthz-bind-address")?,
                proxy_mode: "ipvs".into(),
                bind_hard_fail: self.bind_address_hard_fail,
                ..ServeOptions::default()
            },
            sync_period: self.ipvs_sync_period,
            families: rvs_node::netfilter::kernel_families(self.backend()),
            // The API server source watches this node's Node.
            node_watched: self.manifests.is_none(),
        })
    }

    /// The kernel dataplane's sets, rules and sysctls.
    pub(crate) fn node_options(&self) -> anyhow::Result<NodeOptions> {
        Ok(NodeOptions {
            netfilter: NetfilterOptions {
                maxelem: self.ipset_maxelem,
                rules: RulesConfig {
                    masquerade_all: self.masquerade_all,
                    masquerade_bit: self.iptables_masquerade_bit,
                    ..RulesConfig::default()
                },
                local_detect: LocalDetect::per_family(
                    self.detect_local_mode,
                    &self.cluster_cidr,
                    self.pod_bridge_interface.as_deref(),
                    self.pod_interface_name_prefix.as_deref(),
                )?,
                families: rvs_node::netfilter::kernel_families(self.backend()),
            },
            backend: self.backend(),
            strict_arp: self.ipvs_strict_arp,
            conntrack: self.conntrack_options(),
            sysctl_roots: Roots::default(),
        })
    }

    /// The `--conntrack-*` settings.
    pub(crate) fn conntrack_options(&self) -> ConntrackOptions {
        ConntrackOptions {
            max_per_core: self.conntrack_max_per_core,
            min: self.conntrack_min,
            tcp_established_timeout: self.conntrack_tcp_timeout_established,
            tcp_close_wait_timeout: self.conntrack_tcp_timeout_close_wait,
            tcp_be_liberal: self.conntrack_tcp_be_liberal,
            udp_timeout: self.conntrack_udp_timeout,
            udp_stream_timeout: self.conntrack_udp_timeout_stream,
        }
    }

    /// The IPVS timeouts to set at start, as `ipvsadm --set` takes them
    /// (whole seconds; 0 leaves a value unchanged), or `None` when all
    /// three flags are unset, as kube-proxy skips the call then.
    pub(crate) fn timeouts(&self) -> anyhow::Result<Option<Timeouts>> {
        let secs = |flag: &str, d: Duration| -> anyhow::Result<u32> {
            u32::try_from(d.as_secs())
                .map_err(|_| anyhow::anyhow!("--{flag}: {} s is too long", d.as_secs()))
        };
        let t = Timeouts {
            tcp: secs("ipvs-tcp-timeout", self.ipvs_tcp_timeout)?,
            tcp_fin: secs("ipvs-tcpfin-timeout", self.ipvs_tcpfin_timeout)?,
            udp: secs("ipvs-udp-timeout", self.ipvs_udp_timeout)?,
        };
        Ok((t != Timeouts::default()).then_some(t))
    }

    /// The iptables backend.
    pub(crate) fn backend(&self) -> Backend {
        match self.iptables_backend {
            IptablesBackend::System => Backend::System,
            IptablesBackend::Legacy => Backend::Legacy,
            IptablesBackend::Nft => Backend::Nft,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::node_name;

    #[test]
    fn node_names_are_trimmed_and_lower_cased_as_kube_proxys() {
        let never = || -> std::io::Result<String> { panic!("host name read") };
        assert_eq!(node_name(Some("Node-A"), never).unwrap(), "node-a");
        assert_eq!(node_name(Some(" node-b\n"), never).unwrap(), "node-b");
        let host = || Ok("Worker-7.Example.COM\n".to_owned());
        assert_eq!(node_name(None, host).unwrap(), "worker-7.example.com");
        // An empty override falls back to the host name, as kube-proxy's.
        assert_eq!(node_name(Some(""), host).unwrap(), "worker-7.example.com");
        let e = node_name(Some("  "), never).unwrap_err();
        assert!(e.to_string().contains("empty hostname is invalid"), "{e}");
        let e = node_name(None, || Err(std::io::Error::other("no procfs"))).unwrap_err();
        assert!(format!("{e:#}").contains("no procfs"), "{e:#}");
    }
}
