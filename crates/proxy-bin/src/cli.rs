//! The command line, with kube-proxy's flag names and value formats
//! (Go durations such as `30s` or `1m30s`, comma-separated CIDR lists).
//! [`rvs_proxy::flags::prepare`] reads the arguments first, the way
//! kube-proxy does, so this parser sees only what rvs-proxy implements.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use ipnet::IpNet;
use rvs_netfilter::iptables::DetectLocalMode;
use rvs_proxy::config::NodePortAddress;

/// Which dataplane carries the traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Dataplane {
    /// The kernel's IPVS, with virtual addresses on `kube-ipvs0`.
    Kernel,
    /// The userspace forwarder in this process.
    Userspace,
    /// eBPF socket-level load balancing for the processes of `--cgroup`
    /// (no node ports from outside the node).
    Ebpf,
    /// The socket-level load balancer for the node's own processes, and
    /// IPVS for traffic that arrives from outside (node ports).
    #[value(name = "kernel,ebpf")]
    KernelEbpf,
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

/// rvs-proxy: kube-proxy's IPVS mode, in Rust.
#[derive(Debug, Parser)]
#[command(name = "rvs-proxy", version, args_override_self = true, after_help = AFTER_HELP)]
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

    /// How local (pod) traffic is detected: ClusterCIDR, BridgeInterface
    /// or InterfaceNamePrefix.
    #[arg(long, default_value = "ClusterCIDR", value_parser = |s: &str| s.parse::<DetectLocalMode>())]
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

    /// Maximum number of NAT connections to track per CPU core (0 to leave
    /// the limit as it is and ignore --conntrack-min).
    #[arg(long, default_value_t = 32768, value_parser = clap::value_parser!(u32).range(0..=i64::from(i32::MAX)))]
    pub(crate) conntrack_max_per_core: u32,

    /// Minimum number of conntrack entries to allocate, regardless of
    /// --conntrack-max-per-core.
    #[arg(long, default_value_t = 131072, value_parser = clap::value_parser!(u32).range(0..=i64::from(i32::MAX)))]
    pub(crate) conntrack_min: u32,

    /// Set nf_conntrack_tcp_be_liberal to 1 (liberal tracking of TCP).
    #[arg(long)]
    pub(crate) conntrack_tcp_be_liberal: bool,

    /// Conntrack timeout of TCP connections in CLOSE_WAIT (0: leave it).
    #[arg(long, default_value = "1h0m0s", value_parser = parse_go_duration)]
    pub(crate) conntrack_tcp_timeout_close_wait: Duration,

    /// Conntrack idle timeout of established TCP connections (0: leave it).
    #[arg(long, default_value = "24h0m0s", value_parser = parse_go_duration)]
    pub(crate) conntrack_tcp_timeout_established: Duration,

    /// Conntrack idle timeout of UNREPLIED UDP flows (0: leave it).
    #[arg(long, default_value = "0s", value_parser = parse_go_duration)]
    pub(crate) conntrack_udp_timeout: Duration,

    /// Conntrack idle timeout of ASSURED UDP flows (0: leave it).
    #[arg(long, default_value = "0s", value_parser = parse_go_duration)]
    pub(crate) conntrack_udp_timeout_stream: Duration,

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

    /// Node addresses that serve NodePorts: CIDRs and the keywords
    /// `primary`, `localhost`, `all` (default: every address of the Node
    /// object).
    #[arg(long, value_delimiter = ',')]
    pub(crate) nodeport_addresses: Vec<NodePortAddress>,

    /// The node's primary IP for `--nodeport-addresses=primary` (default:
    /// the Node object's).
    #[arg(long, value_name = "IP")]
    pub(crate) bind_address: Option<IpAddr>,

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

    /// Set the sysctls the kernel dataplane needs (the part that needs
    /// full root) and exit.
    #[arg(long)]
    pub(crate) init_only: bool,

    /// Write the configuration rvs-proxy would run with, as a
    /// `KubeProxyConfiguration`, to this file and exit.
    #[arg(long, value_name = "PATH")]
    pub(crate) write_config_to: Option<PathBuf>,

    /// Print the changes a sync would apply, apply nothing, and exit.
    #[arg(long)]
    pub(crate) dry_run: bool,

    /// Serve the admin protocol on this unix socket, so
    /// `rvsadm --target unix:PATH` reads and programs the userspace or
    /// eBPF dataplane (the kernel's is read by `rvsadm` directly).
    #[arg(long, value_name = "PATH")]
    pub(crate) admin_socket: Option<PathBuf>,

    /// Also let this group (a name or a gid) use the admin socket: mode
    /// 0660 instead of 0600.
    #[arg(long, value_name = "NAME|GID")]
    pub(crate) admin_socket_group: Option<rvs_admin::SocketGroup>,

    /// eBPF dataplane: the cgroup v2 whose processes are balanced
    /// (default: the cgroup v2 root, every process on the node).
    #[arg(long, value_name = "PATH")]
    pub(crate) cgroup: Option<PathBuf>,

    /// eBPF dataplane: the bpffs directory its maps and programs are
    /// pinned in, so a restart adopts them without a gap.
    #[arg(long, value_name = "PATH", default_value = "/sys/fs/bpf/rvs-proxy")]
    pub(crate) bpf_pin_dir: PathBuf,

    /// Userspace dataplane: the per-network-namespace lock that keeps a
    /// second one from starting (change it only to run several on
    /// purpose, as tests do).
    #[arg(long, value_name = "NAME", default_value = rvs_userspace::DEFAULT_INSTANCE_LOCK)]
    pub(crate) instance_lock: String,

    /// Rebalance long-lived connections after a scale-up (an rvs
    /// addition): the policy of Services without an `rvs.dev/rebalance`
    /// annotation, `off`, `idle` or `idle,max-age=D` (options in the
    /// README). Carried out by the userspace and eBPF dataplanes (with
    /// `kernel,ebpf`, for the connections made on the node); refused by
    /// `kernel` alone.
    #[arg(long, default_value = "off", value_name = "POLICY")]
    pub(crate) rebalance: rvs_rebalance::Policy,

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
    /// (`kubeproxy.config.k8s.io/v1alpha1`). As with kube-proxy, it
    /// replaces kube-proxy's other flags but `--hostname-override`,
    /// `--master`, `-v` and `--cleanup` (rvs-proxy's own flags still
    /// apply).
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

const AFTER_HELP: &str = "Every other flag of kube-proxy v1.37 is accepted too; \
those rvs-proxy does not implement are named in a warning and ignored.";

fn parse_cidr(text: &str) -> Result<IpNet, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a CIDR such as 10.0.0.0/8"))
}

/// Go durations (`300ms`, `30s`, `1m30s`, `1h`), read the same way as
/// the config file's.
pub(crate) use rvs_proxy::config_file::parse_go_duration;
