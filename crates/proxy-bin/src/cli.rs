//! The command line, with kube-proxy's flag names and value formats
//! (Go durations such as `30s` or `1m30s`, comma-separated CIDR lists).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use clap::{Parser, ValueEnum};
use ipnet::IpNet;
use rvs_model::{Scheduler, Timeouts};
use rvs_netfilter::iptables::{Backend, LocalDetect};

/// Which dataplane carries the traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Dataplane {
    /// The kernel's IPVS, with virtual addresses on `kube-ipvs0`.
    Kernel,
    /// The userspace forwarder in this process.
    Userspace,
}

/// Which iptables binaries program the rules (an rvs addition;
/// kube-proxy's images pick one with a wrapper script).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum IptablesBackend {
    /// `iptables-restore`, whatever the system's alternatives choose.
    System,
    /// `iptables-legacy-restore` (x_tables).
    Legacy,
    /// `iptables-nft-restore` (nf_tables).
    Nft,
}

/// How traffic from this node's pods is told apart, for masquerading
/// traffic to cluster IPs from outside the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum DetectLocalMode {
    /// Pods are in `--cluster-cidr` (no detection when it is unset).
    #[value(name = "ClusterCIDR")]
    ClusterCidr,
    /// Pods attach to the bridge `--pod-bridge-interface`.
    #[value(name = "BridgeInterface")]
    BridgeInterface,
    /// Pod interfaces start with `--pod-interface-name-prefix`.
    #[value(name = "InterfaceNamePrefix")]
    InterfaceNamePrefix,
}

/// rvs-proxy: kube-proxy's IPVS mode, in Rust.
#[derive(Debug, Parser)]
#[command(name = "rvs-proxy", version)]
pub(crate) struct Cli {
    /// Read Services, EndpointSlices and Nodes from this directory of
    /// manifests (watched for changes) instead of the API server.
    #[arg(long, value_name = "DIR")]
    pub(crate) manifests: Option<PathBuf>,

    /// Path to a kubeconfig file (default: in-cluster, then
    /// `$KUBECONFIG` or `~/.kube/config`).
    #[arg(long, value_name = "PATH")]
    pub(crate) kubeconfig: Option<PathBuf>,

    /// The API server's address, overriding the kubeconfig's.
    #[arg(long, value_name = "URL")]
    pub(crate) master: Option<String>,

    /// Which dataplane to program.
    #[arg(long, value_enum, default_value = "kernel")]
    pub(crate) dataplane: Dataplane,

    /// Proxy mode; only `ipvs` is offered (accepted for kube-proxy
    /// compatibility).
    #[arg(long, default_value = "ipvs")]
    pub(crate) proxy_mode: String,

    /// Default IPVS scheduler.
    #[arg(long, default_value = "rr")]
    pub(crate) ipvs_scheduler: String,

    /// Full resync period.
    #[arg(long, default_value = "30s", value_parser = parse_go_duration)]
    pub(crate) ipvs_sync_period: Duration,

    /// Minimum interval between syncs; changes within it are coalesced.
    #[arg(long, default_value = "0s", value_parser = parse_go_duration)]
    pub(crate) ipvs_min_sync_period: Duration,

    /// IPVS idle timeout of established TCP connections (0: leave the
    /// dataplane's as it is).
    #[arg(long, default_value = "0s", value_parser = parse_go_duration)]
    pub(crate) ipvs_tcp_timeout: Duration,

    /// IPVS timeout of TCP connections after a FIN (0: leave it).
    #[arg(long, default_value = "0s", value_parser = parse_go_duration)]
    pub(crate) ipvs_tcpfin_timeout: Duration,

    /// IPVS timeout of UDP flows (0: leave it).
    #[arg(long, default_value = "0s", value_parser = parse_go_duration)]
    pub(crate) ipvs_udp_timeout: Duration,

    /// Masquerade (SNAT) all traffic to cluster IPs, not only traffic
    /// from outside the cluster.
    #[arg(long)]
    pub(crate) masquerade_all: bool,

    /// The cluster's pod CIDRs (one per family, comma-separated): traffic
    /// to cluster IPs from elsewhere is masqueraded.
    #[arg(long, value_delimiter = ',', value_parser = parse_cidr)]
    pub(crate) cluster_cidr: Vec<IpNet>,

    /// How local (pod) traffic is detected.
    #[arg(long, value_enum, default_value = "ClusterCIDR")]
    pub(crate) detect_local_mode: DetectLocalMode,

    /// The pods' bridge, with `--detect-local-mode=BridgeInterface`.
    #[arg(long, value_name = "NAME")]
    pub(crate) pod_bridge_interface: Option<String>,

    /// The pods' interface name prefix, with
    /// `--detect-local-mode=InterfaceNamePrefix`.
    #[arg(long, value_name = "PREFIX")]
    pub(crate) pod_interface_name_prefix: Option<String>,

    /// The fwmark bit (0–31) that marks packets to masquerade.
    #[arg(long, default_value_t = 14, value_parser = clap::value_parser!(u8).range(0..=31))]
    pub(crate) iptables_masquerade_bit: u8,

    /// Set arp_ignore=1 and arp_announce=2 so the node does not answer
    /// ARP for addresses on kube-ipvs0.
    #[arg(long)]
    pub(crate) ipvs_strict_arp: bool,

    /// `maxelem` of kube-proxy's ipsets (an rvs addition; kube-proxy
    /// always uses 65536).
    #[arg(long, default_value_t = 65536, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) ipset_maxelem: u32,

    /// Which iptables binaries to run (an rvs addition).
    #[arg(long, value_enum, default_value = "system")]
    pub(crate) iptables_backend: IptablesBackend,

    /// CIDRs whose virtual servers are never touched.
    #[arg(long, value_delimiter = ',', value_parser = parse_cidr)]
    pub(crate) ipvs_exclude_cidrs: Vec<IpNet>,

    /// Node addresses that serve NodePorts (default: every address of the
    /// Node object).
    #[arg(long, value_delimiter = ',', value_parser = parse_cidr)]
    pub(crate) nodeport_addresses: Vec<IpNet>,

    /// Serve only Services labelled
    /// `service.kubernetes.io/service-proxy-name=NAME`.
    #[arg(long, value_name = "NAME")]
    pub(crate) service_proxy_name: Option<String>,

    /// This node's name (default: the host name).
    #[arg(long)]
    pub(crate) hostname_override: Option<String>,

    /// Remove what rvs-proxy programmed (its virtual servers and
    /// addresses, nothing else) and exit.
    #[arg(long)]
    pub(crate) cleanup: bool,

    /// Print the changes a sync would apply, apply nothing, and exit.
    #[arg(long)]
    pub(crate) dry_run: bool,

    /// Serve the admin protocol on this unix socket, so
    /// `rvsadm --target unix:PATH` reads and programs the userspace
    /// dataplane (the kernel's is read by `rvsadm` directly).
    #[arg(long, value_name = "PATH")]
    pub(crate) admin_socket: Option<PathBuf>,

    /// Userspace dataplane: forwarding worker threads (0: one per CPU).
    #[arg(long, default_value_t = 0)]
    pub(crate) workers: usize,

    /// Userspace dataplane: also bind virtual addresses to `kube-ipvs0`
    /// (needs CAP_NET_ADMIN), so any cluster IP can be served. Without
    /// it only addresses the host already has (127.0.0.0/8, node
    /// addresses) are served.
    #[arg(long)]
    pub(crate) bind_addresses: bool,

    /// Sync once and exit (for tests and one-shot runs).
    #[arg(long)]
    pub(crate) once: bool,

    /// A kube-proxy `KubeProxyConfiguration` file
    /// (`kubeproxy.config.k8s.io/v1alpha1`); flags given explicitly win
    /// over its values.
    #[arg(long, value_name = "PATH")]
    pub(crate) config: Option<PathBuf>,

    /// Where `/metrics` is served (`IP:PORT`, or a bare IP for port
    /// 10249; empty turns the server off).
    #[arg(long, default_value = "127.0.0.1:10249", value_name = "IP:PORT")]
    pub(crate) metrics_bind_address: String,

    /// Where `/healthz` and `/livez` are served (`IP:PORT`, or a bare IP
    /// for port 10256; empty turns the server off).
    #[arg(long, default_value = "0.0.0.0:10256", value_name = "IP:PORT")]
    pub(crate) healthz_bind_address: String,

    /// Exit when the healthz or metrics address cannot be bound, instead
    /// of retrying in the background.
    #[arg(long)]
    pub(crate) bind_address_hard_fail: bool,

    /// Log verbosity, as kube-proxy's `-v` (0–1 info, 2–3 debug, 4+ trace).
    #[arg(short = 'v', long = "v", default_value_t = 0)]
    pub(crate) verbosity: u8,
}

impl Cli {
    /// The metrics server's address, or `None` when turned off.
    pub(crate) fn metrics_addr(&self) -> anyhow::Result<Option<SocketAddr>> {
        parse_bind("--metrics-bind-address", &self.metrics_bind_address, 10249)
    }

    /// The healthz server's address, or `None` when turned off.
    pub(crate) fn healthz_addr(&self) -> anyhow::Result<Option<SocketAddr>> {
        parse_bind("--healthz-bind-address", &self.healthz_bind_address, 10256)
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

    /// Local-traffic detection for IPv4 and IPv6, checked.
    pub(crate) fn local_detect(&self) -> anyhow::Result<[LocalDetect; 2]> {
        match self.detect_local_mode {
            DetectLocalMode::ClusterCidr => {
                let mut out = [LocalDetect::None, LocalDetect::None];
                for net in &self.cluster_cidr {
                    let slot = &mut out[usize::from(net.addr().is_ipv6())];
                    if *slot != LocalDetect::None {
                        bail!("--cluster-cidr: more than one CIDR of the family of {net}");
                    }
                    *slot = LocalDetect::Cidr(*net);
                }
                Ok(out)
            }
            DetectLocalMode::BridgeInterface => {
                let Some(name) = self.pod_bridge_interface.clone().filter(|n| !n.is_empty()) else {
                    bail!("--detect-local-mode=BridgeInterface needs --pod-bridge-interface");
                };
                let d = LocalDetect::BridgeInterface(name);
                Ok([d.clone(), d])
            }
            DetectLocalMode::InterfaceNamePrefix => {
                let Some(prefix) = self
                    .pod_interface_name_prefix
                    .clone()
                    .filter(|n| !n.is_empty())
                else {
                    bail!(
                        "--detect-local-mode=InterfaceNamePrefix needs --pod-interface-name-prefix"
                    );
                };
                let d = LocalDetect::InterfaceNamePrefix(prefix);
                Ok([d.clone(), d])
            }
        }
    }

    /// The iptables backend.
    pub(crate) fn backend(&self) -> Backend {
        match self.iptables_backend {
            IptablesBackend::System => Backend::System,
            IptablesBackend::Legacy => Backend::Legacy,
            IptablesBackend::Nft => Backend::Nft,
        }
    }

    /// The default scheduler, checked.
    pub(crate) fn scheduler(&self) -> anyhow::Result<Scheduler> {
        self.ipvs_scheduler
            .parse()
            .map_err(|e| anyhow::anyhow!("--ipvs-scheduler: {e}"))
    }
}

/// `IP:PORT`, `[IPv6]:PORT`, a bare IP (the default port), or empty (off).
fn parse_bind(flag: &str, text: &str, default_port: u16) -> anyhow::Result<Option<SocketAddr>> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(Some(addr));
    }
    match text.parse::<IpAddr>() {
        Ok(ip) => Ok(Some(SocketAddr::new(ip, default_port))),
        Err(_) => bail!("{flag}: {text:?} is not an address such as 0.0.0.0:{default_port}"),
    }
}

fn parse_cidr(text: &str) -> Result<IpNet, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a CIDR such as 10.0.0.0/8"))
}

/// Go durations (`300ms`, `30s`, `1m30s`, `1h`), read the same way as
/// the config file's.
pub(crate) use rvs_proxy::config_file::parse_go_duration;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse() {
        assert_eq!(parse_go_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_go_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_go_duration("0"), Ok(Duration::ZERO));
        assert!(parse_go_duration("30").is_err());
        assert!(parse_go_duration("5 minutes").is_err());
        assert!(parse_go_duration("").is_err());
    }

    #[test]
    fn kube_proxy_flags_parse() {
        let cli = Cli::try_parse_from([
            "rvs-proxy",
            "--proxy-mode=ipvs",
            "--ipvs-scheduler=wlc",
            "--ipvs-sync-period=1m",
            "--ipvs-exclude-cidrs=10.0.0.0/8,fd00::/8",
            "--hostname-override=node-a",
            "--v=2",
        ])
        .unwrap();
        assert_eq!(cli.scheduler().unwrap(), Scheduler::WeightedLeastConnection);
        assert_eq!(cli.ipvs_sync_period, Duration::from_secs(60));
        assert_eq!(cli.ipvs_exclude_cidrs.len(), 2);
        assert_eq!(cli.verbosity, 2);
        let bad = Cli::try_parse_from(["rvs-proxy", "--ipvs-exclude-cidrs=10.0.0.0"]).unwrap_err();
        assert!(bad.to_string().contains("is not a CIDR"), "{bad}");
        let cli = Cli::try_parse_from(["rvs-proxy", "--ipvs-scheduler=fastest"]).unwrap();
        assert!(
            cli.scheduler()
                .unwrap_err()
                .to_string()
                .contains("unknown IPVS scheduler \"fastest\"")
        );
    }

    #[test]
    fn netfilter_flags_parse() {
        let cli = Cli::try_parse_from(["rvs-proxy"]).unwrap();
        assert_eq!(cli.iptables_masquerade_bit, 14);
        assert_eq!(cli.ipset_maxelem, 65536);
        assert!(!cli.masquerade_all && !cli.ipvs_strict_arp);
        assert_eq!(
            cli.local_detect().unwrap(),
            [LocalDetect::None, LocalDetect::None]
        );
        let cli = Cli::try_parse_from([
            "rvs-proxy",
            "--masquerade-all",
            "--cluster-cidr=10.244.0.0/16,fd00:244::/56",
            "--iptables-masquerade-bit=3",
            "--ipvs-strict-arp",
            "--ipset-maxelem=1000000",
            "--iptables-backend=legacy",
        ])
        .unwrap();
        assert!(cli.masquerade_all && cli.ipvs_strict_arp);
        assert_eq!(cli.iptables_masquerade_bit, 3);
        assert_eq!(cli.ipset_maxelem, 1_000_000);
        assert_eq!(cli.backend(), Backend::Legacy);
        assert_eq!(
            cli.local_detect().unwrap(),
            [
                LocalDetect::Cidr("10.244.0.0/16".parse().unwrap()),
                LocalDetect::Cidr("fd00:244::/56".parse().unwrap())
            ]
        );
        assert!(Cli::try_parse_from(["rvs-proxy", "--iptables-masquerade-bit=32"]).is_err());
        assert!(Cli::try_parse_from(["rvs-proxy", "--ipset-maxelem=0"]).is_err());
        let two_v4 =
            Cli::try_parse_from(["rvs-proxy", "--cluster-cidr=10.0.0.0/8,10.1.0.0/16"]).unwrap();
        assert!(two_v4.local_detect().is_err());
        let bridge = Cli::try_parse_from([
            "rvs-proxy",
            "--detect-local-mode=BridgeInterface",
            "--pod-bridge-interface=cbr0",
        ])
        .unwrap();
        assert_eq!(
            bridge.local_detect().unwrap()[1],
            LocalDetect::BridgeInterface("cbr0".into())
        );
        let missing =
            Cli::try_parse_from(["rvs-proxy", "--detect-local-mode=InterfaceNamePrefix"]).unwrap();
        assert!(missing.local_detect().is_err());
    }

    #[test]
    fn timeouts_are_set_only_when_asked() {
        let cli = Cli::try_parse_from(["rvs-proxy"]).unwrap();
        assert_eq!(cli.timeouts().unwrap(), None);
        let cli = Cli::try_parse_from([
            "rvs-proxy",
            "--ipvs-tcpfin-timeout=1m",
            "--ipvs-udp-timeout=5s",
        ])
        .unwrap();
        assert_eq!(
            cli.timeouts().unwrap(),
            Some(Timeouts {
                tcp: 0,
                tcp_fin: 60,
                udp: 5
            })
        );
        let long = Cli::try_parse_from(["rvs-proxy", "--ipvs-tcp-timeout=2000000h"]).unwrap();
        assert!(
            long.timeouts()
                .unwrap_err()
                .to_string()
                .contains("--ipvs-tcp-timeout")
        );
    }
}
