//! kube-proxy's configuration file (`--config`): a
//! `KubeProxyConfiguration` of `kubeproxy.config.k8s.io/v1alpha1`, in YAML
//! or JSON, with kube-proxy's field names and zero-value defaulting.
//!
//! The result, [`FileConfig`], holds one `Option` per setting: `None` when
//! the file leaves it unset (absent, `null`, or the zero value kube-proxy
//! replaces with its default), so the caller decides precedence against
//! its flags. Unknown fields and invalid values are errors naming the field
//! (`ipvs.syncPeriod`); fields kube-proxy has but rvs-proxy does not
//! implement are accepted and, when set to anything but their zero value,
//! listed in [`FileConfig::ignored`] (and logged) rather than rejected.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use rvs_model::Scheduler;
use serde::Deserialize;

use crate::config::NodePortAddress;
use serde_json::Value;

/// The only `apiVersion` accepted.
pub const API_VERSION: &str = "kubeproxy.config.k8s.io/v1alpha1";
/// The only `kind` accepted.
pub const KIND: &str = "KubeProxyConfiguration";
/// kube-proxy's healthz port (`ports.ProxyHealthzPort`).
pub const HEALTHZ_PORT: u16 = 10256;
/// kube-proxy's metrics port (`ports.ProxyStatusPort`).
pub const METRICS_PORT: u16 = 10249;

/// Why a configuration file was rejected.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    /// The file could not be read.
    #[error("reading {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The text is not YAML (or JSON).
    #[error("{origin}: not YAML or JSON: {message}")]
    Syntax {
        /// The file name.
        origin: String,
        /// The parser's message.
        message: String,
    },
    /// A field is unknown, of the wrong type, or has an invalid value.
    #[error("{origin}: {field}: {message}")]
    Field {
        /// The file name.
        origin: String,
        /// The field's path, such as `ipvs.syncPeriod`.
        field: String,
        /// What is wrong with it.
        message: String,
    },
}

/// The settings a `KubeProxyConfiguration` gives, one `Option` per
/// setting; the comment names the kube-proxy flag it stands for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FileConfig {
    /// `hostnameOverride` (`--hostname-override`).
    pub hostname_override: Option<String>,
    /// `bindAddress` (`--bind-address`): the node's primary IP hint; its
    /// family picks the healthz and metrics defaults (see
    /// [`default_bind_addresses`]).
    pub bind_address: Option<IpAddr>,
    /// `healthzBindAddress` (`--healthz-bind-address`); a bare IP gets port
    /// 10256.
    pub healthz_bind_address: Option<SocketAddr>,
    /// `metricsBindAddress` (`--metrics-bind-address`); a bare IP gets port
    /// 10249.
    pub metrics_bind_address: Option<SocketAddr>,
    /// `bindAddressHardFail` (`--bind-address-hard-fail`): an unusable
    /// healthz or metrics address stops the start instead of being
    /// retried.
    pub bind_address_hard_fail: Option<bool>,
    /// `mode` (`--proxy-mode`): only `ipvs` is accepted; empty means the
    /// default, which for rvs-proxy is `ipvs`.
    pub mode: Option<String>,
    /// `clientConnection.kubeconfig` (`--kubeconfig`).
    pub kubeconfig: Option<PathBuf>,
    /// `clusterCIDR` (`--cluster-cidr`): one CIDR, or a comma-separated
    /// pair of one per family.
    pub cluster_cidrs: Option<Vec<IpNet>>,
    /// `nodePortAddresses` (`--nodeport-addresses`): CIDRs and the
    /// keywords `primary`, `localhost` and `all`.
    pub nodeport_addresses: Option<Vec<NodePortAddress>>,
    /// `ipvs.scheduler` (`--ipvs-scheduler`).
    pub ipvs_scheduler: Option<Scheduler>,
    /// `ipvs.syncPeriod` (`--ipvs-sync-period`); 0 means the default.
    pub ipvs_sync_period: Option<Duration>,
    /// `ipvs.minSyncPeriod` (`--ipvs-min-sync-period`).
    pub ipvs_min_sync_period: Option<Duration>,
    /// `ipvs.excludeCIDRs` (`--ipvs-exclude-cidrs`).
    pub ipvs_exclude_cidrs: Option<Vec<IpNet>>,
    /// `ipvs.strictARP` (`--ipvs-strict-arp`).
    pub ipvs_strict_arp: Option<bool>,
    /// `ipvs.tcpTimeout` (`--ipvs-tcp-timeout`; 0 leaves the kernel's).
    pub ipvs_tcp_timeout: Option<Duration>,
    /// `ipvs.tcpFinTimeout` (`--ipvs-tcpfin-timeout`).
    pub ipvs_tcpfin_timeout: Option<Duration>,
    /// `ipvs.udpTimeout` (`--ipvs-udp-timeout`).
    pub ipvs_udp_timeout: Option<Duration>,
    /// `detectLocalMode` (`--detect-local-mode`): `ClusterCIDR`,
    /// `NodeCIDR`, `BridgeInterface` or `InterfaceNamePrefix`.
    pub detect_local_mode: Option<String>,
    /// `detectLocal.bridgeInterface` (`--pod-bridge-interface`).
    pub pod_bridge_interface: Option<String>,
    /// `detectLocal.interfaceNamePrefix` (`--pod-interface-name-prefix`).
    pub pod_interface_name_prefix: Option<String>,
    /// `iptables.masqueradeAll` (`--masquerade-all`).
    pub masquerade_all: Option<bool>,
    /// `iptables.masqueradeBit` (`--iptables-masquerade-bit`), 0–31.
    pub masquerade_bit: Option<u8>,
    /// `logging.verbosity` (`-v`).
    pub verbosity: Option<u8>,
    /// `conntrack.maxPerCore` (`--conntrack-max-per-core`); 0 is a setting
    /// (leave `nf_conntrack_max` alone), `null` is not.
    pub conntrack_max_per_core: Option<u32>,
    /// `conntrack.min` (`--conntrack-min`).
    pub conntrack_min: Option<u32>,
    /// `conntrack.tcpBeLiberal` (`--conntrack-tcp-be-liberal`).
    pub conntrack_tcp_be_liberal: Option<bool>,
    /// `conntrack.tcpCloseWaitTimeout`
    /// (`--conntrack-tcp-timeout-close-wait`); 0 leaves the kernel's.
    pub conntrack_tcp_close_wait_timeout: Option<Duration>,
    /// `conntrack.tcpEstablishedTimeout`
    /// (`--conntrack-tcp-timeout-established`); 0 leaves the kernel's.
    pub conntrack_tcp_established_timeout: Option<Duration>,
    /// `conntrack.udpTimeout` (`--conntrack-udp-timeout`).
    pub conntrack_udp_timeout: Option<Duration>,
    /// `conntrack.udpStreamTimeout` (`--conntrack-udp-timeout-stream`).
    pub conntrack_udp_stream_timeout: Option<Duration>,
    /// Fields set to a non-zero value that rvs-proxy accepts but does not
    /// implement, by path (`featureGates.SomeGate`, `oomScoreAdj`, …).
    pub ignored: Vec<String>,
}

/// kube-proxy's healthz and metrics defaults for a `bindAddress`:
/// `0.0.0.0:10256` and `127.0.0.1:10249`, or `[::]:10256` and
/// `[::1]:10249` when the bind address is IPv6.
pub fn default_bind_addresses(bind_address: Option<IpAddr>) -> (SocketAddr, SocketAddr) {
    match bind_address {
        Some(IpAddr::V6(v6)) if v6.to_ipv4_mapped().is_none() => (
            SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), HEALTHZ_PORT),
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), METRICS_PORT),
        ),
        _ => (
            SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), HEALTHZ_PORT),
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), METRICS_PORT),
        ),
    }
}

/// Reads and checks a configuration file; logs each ignored field.
pub fn load(path: &Path) -> Result<FileConfig, ConfigFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    let config = parse(&text, &path.display().to_string())?;
    for field in &config.ignored {
        tracing::warn!(
            config = %path.display(),
            field,
            "kube-proxy configuration field not implemented by rvs-proxy; ignored"
        );
    }
    Ok(config)
}

// The file as written. Sections rvs-proxy implements deny unknown fields;
// sections it ignores are kept as raw values and only checked for being
// set.

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Raw {
    api_version: Option<String>,
    kind: Option<String>,
    feature_gates: Option<Value>,
    client_connection: Option<RawClientConnection>,
    logging: Option<RawLogging>,
    hostname_override: Option<String>,
    bind_address: Option<String>,
    healthz_bind_address: Option<String>,
    metrics_bind_address: Option<String>,
    bind_address_hard_fail: Option<bool>,
    enable_profiling: Option<Value>,
    show_hidden_metrics_for_version: Option<Value>,
    mode: Option<String>,
    iptables: Option<RawIptables>,
    ipvs: Option<RawIpvs>,
    nftables: Option<Value>,
    winkernel: Option<Value>,
    detect_local_mode: Option<String>,
    detect_local: Option<RawDetectLocal>,
    #[serde(rename = "clusterCIDR")]
    cluster_cidr: Option<String>,
    node_port_addresses: Option<Vec<String>>,
    oom_score_adj: Option<Value>,
    conntrack: Option<RawConntrack>,
    config_sync_period: Option<Value>,
    port_range: Option<Value>,
    windows_run_as_service: Option<Value>,
    // Removed from v1alpha1 but still in configs written by older kubeadm
    // releases; kube-proxy decodes them leniently.
    udp_idle_timeout: Option<Value>,
    resource_container: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawClientConnection {
    kubeconfig: Option<String>,
    accept_content_types: Option<Value>,
    content_type: Option<Value>,
    qps: Option<Value>,
    burst: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawLogging {
    verbosity: Option<i64>,
    #[serde(flatten)]
    rest: serde_json::Map<String, Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawIptables {
    masquerade_bit: Option<i64>,
    masquerade_all: Option<bool>,
    localhost_node_ports: Option<Value>,
    #[serde(rename = "snatNodeInternalIP")]
    snat_node_internal_ip: Option<Value>,
    sync_period: Option<Value>,
    min_sync_period: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawDetectLocal {
    bridge_interface: Option<String>,
    interface_name_prefix: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawIpvs {
    sync_period: Option<String>,
    min_sync_period: Option<String>,
    scheduler: Option<String>,
    #[serde(rename = "excludeCIDRs")]
    exclude_cidrs: Option<Vec<String>>,
    #[serde(rename = "strictARP")]
    strict_arp: Option<bool>,
    tcp_timeout: Option<String>,
    tcp_fin_timeout: Option<String>,
    udp_timeout: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawConntrack {
    max_per_core: Option<i64>,
    min: Option<i64>,
    tcp_be_liberal: Option<bool>,
    tcp_close_wait_timeout: Option<String>,
    tcp_established_timeout: Option<String>,
    udp_timeout: Option<String>,
    udp_stream_timeout: Option<String>,
    // Removed from v1alpha1 (kube-proxy 1.19) but still in old configs.
    max: Option<Value>,
}

/// An `int32` count that must not be negative.
fn count(field: &str, value: Option<i64>) -> FieldResult<Option<u32>> {
    match value {
        None => Ok(None),
        Some(v) if v < 0 => bad(field, format!("{v}: must be greater than or equal to 0")),
        Some(v) => match i32::try_from(v).ok().and_then(|v| u32::try_from(v).ok()) {
            Some(v) => Ok(Some(v)),
            None => bad(field, format!("{v}: does not fit an int32")),
        },
    }
}

/// Whether a value is its type's zero value (kubeadm writes every field,
/// most as zeros: those are not settings).
fn is_zero(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty() || s == "0" || parse_go_duration(s) == Ok(Duration::ZERO),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.values().all(is_zero),
    }
}

/// Collects the non-zero leaves under `prefix` into `out`.
fn note_set(prefix: &str, v: Option<&Value>, out: &mut Vec<String>) {
    let Some(v) = v else { return };
    match v {
        Value::Object(o) if !o.is_empty() => {
            for (k, v) in o {
                note_set(&format!("{prefix}.{k}"), Some(v), out);
            }
        }
        v if !is_zero(v) => out.push(prefix.to_owned()),
        _ => {}
    }
}

/// Parses a configuration file's text; `origin` names it in errors.
pub fn parse(text: &str, origin: &str) -> Result<FileConfig, ConfigFileError> {
    let options = serde_saphyr::options! {
        strict_booleans: true,
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::Error,
    };
    let value: Value = serde_saphyr::from_str_with_options(text, options).map_err(|e| {
        ConfigFileError::Syntax {
            origin: origin.to_owned(),
            message: e.to_string(),
        }
    })?;
    let field_err = |field: &str, message: String| ConfigFileError::Field {
        origin: origin.to_owned(),
        field: field.to_owned(),
        message,
    };
    if !value.is_object() {
        return Err(field_err(
            ".",
            "expected a KubeProxyConfiguration mapping".to_owned(),
        ));
    }
    let raw: Raw = serde_path_to_error::deserialize(value)
        .map_err(|e| field_err(&e.path().to_string(), e.inner().to_string()))?;
    convert(raw).map_err(|(field, message)| field_err(&field, message))
}

type FieldResult<T> = Result<T, (String, String)>;

fn bad<T>(field: &str, message: impl Into<String>) -> FieldResult<T> {
    Err((field.to_owned(), message.into()))
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty())
}

fn duration(field: &str, text: Option<String>) -> FieldResult<Option<Duration>> {
    let Some(text) = non_empty(text) else {
        return Ok(None);
    };
    if text.starts_with('-') {
        return bad(
            field,
            format!("{text:?}: must be greater than or equal to 0"),
        );
    }
    parse_go_duration(&text)
        .map(Some)
        .map_err(|e| (field.to_owned(), e.to_string()))
}

fn cidr(field: &str, text: &str) -> FieldResult<IpNet> {
    text.trim().parse().map_err(|_| {
        (
            field.to_owned(),
            format!("{text:?} is not a CIDR such as 10.0.0.0/8"),
        )
    })
}

fn host_port(
    field: &str,
    text: Option<String>,
    default_port: u16,
) -> FieldResult<Option<SocketAddr>> {
    let Some(text) = non_empty(text) else {
        return Ok(None);
    };
    // kube-proxy appends the default port to a bare IP.
    if let Ok(ip) = text
        .trim_matches(|c| c == '[' || c == ']')
        .parse::<IpAddr>()
    {
        return Ok(Some(SocketAddr::new(ip, default_port)));
    }
    text.parse::<SocketAddr>().map(Some).map_err(|_| {
        (
            field.to_owned(),
            format!("{text:?} is not an IP:port such as 0.0.0.0:{default_port}"),
        )
    })
}

fn convert(raw: Raw) -> FieldResult<FileConfig> {
    match raw.api_version.as_deref() {
        Some(API_VERSION) => {}
        Some(other) => {
            return bad(
                "apiVersion",
                format!("{other:?} is not supported; expected {API_VERSION:?}"),
            );
        }
        None => return bad("apiVersion", format!("missing; expected {API_VERSION:?}")),
    }
    match raw.kind.as_deref() {
        Some(KIND) => {}
        Some(other) => return bad("kind", format!("{other:?}; expected {KIND:?}")),
        None => return bad("kind", format!("missing; expected {KIND:?}")),
    }

    let mut out = FileConfig::default();
    let ignored = &mut out.ignored;

    note_set("featureGates", raw.feature_gates.as_ref(), ignored);
    if let Some(cc) = raw.client_connection {
        out.kubeconfig = non_empty(cc.kubeconfig).map(PathBuf::from);
        note_set(
            "clientConnection.acceptContentTypes",
            cc.accept_content_types.as_ref(),
            ignored,
        );
        note_set(
            "clientConnection.contentType",
            cc.content_type.as_ref(),
            ignored,
        );
        note_set("clientConnection.qps", cc.qps.as_ref(), ignored);
        note_set("clientConnection.burst", cc.burst.as_ref(), ignored);
    }
    if let Some(logging) = raw.logging {
        if let Some(v) = logging.verbosity {
            out.verbosity = Some(u8::try_from(v).map_err(|_| {
                (
                    "logging.verbosity".to_owned(),
                    format!("{v}: must be 0–255"),
                )
            })?);
        }
        for (k, v) in &logging.rest {
            note_set(&format!("logging.{k}"), Some(v), ignored);
        }
    }
    out.hostname_override = non_empty(raw.hostname_override);
    out.bind_address = match non_empty(raw.bind_address) {
        None => None,
        Some(text) => Some(text.parse::<IpAddr>().map_err(|_| {
            (
                "bindAddress".to_owned(),
                format!("{text:?} is not an IP address"),
            )
        })?),
    };
    out.healthz_bind_address =
        host_port("healthzBindAddress", raw.healthz_bind_address, HEALTHZ_PORT)?;
    out.metrics_bind_address =
        host_port("metricsBindAddress", raw.metrics_bind_address, METRICS_PORT)?;
    out.bind_address_hard_fail = raw.bind_address_hard_fail;
    note_set("enableProfiling", raw.enable_profiling.as_ref(), ignored);
    note_set(
        "showHiddenMetricsForVersion",
        raw.show_hidden_metrics_for_version.as_ref(),
        ignored,
    );

    out.mode = match non_empty(raw.mode) {
        None => None,
        Some(mode) if mode == "ipvs" => Some(mode),
        Some(mode) if ["iptables", "nftables", "kernelspace"].contains(&mode.as_str()) => {
            return bad(
                "mode",
                format!("{mode:?}: rvs-proxy implements only the \"ipvs\" mode"),
            );
        }
        Some(mode) => {
            return bad(
                "mode",
                format!("{mode:?} is not a proxy mode (iptables, ipvs, nftables)"),
            );
        }
    };

    if let Some(ipt) = raw.iptables {
        out.masquerade_all = ipt.masquerade_all;
        out.masquerade_bit = match ipt.masquerade_bit {
            None => None,
            Some(bit @ 0..=31) => u8::try_from(bit).ok(),
            Some(bit) => {
                return bad(
                    "iptables.masqueradeBit",
                    format!("{bit}: must be within [0, 31]"),
                );
            }
        };
        note_set(
            "iptables.localhostNodePorts",
            ipt.localhost_node_ports.as_ref(),
            ignored,
        );
        note_set(
            "iptables.snatNodeInternalIP",
            ipt.snat_node_internal_ip.as_ref(),
            ignored,
        );
        // The ipvs mode syncs on ipvs.syncPeriod; these only matter to the
        // iptables mode.
        note_set("iptables.syncPeriod", ipt.sync_period.as_ref(), ignored);
        note_set(
            "iptables.minSyncPeriod",
            ipt.min_sync_period.as_ref(),
            ignored,
        );
    }

    if let Some(ipvs) = raw.ipvs {
        out.ipvs_sync_period =
            duration("ipvs.syncPeriod", ipvs.sync_period)?.filter(|d| !d.is_zero());
        out.ipvs_min_sync_period = duration("ipvs.minSyncPeriod", ipvs.min_sync_period)?;
        let sync = out.ipvs_sync_period.unwrap_or(Duration::from_secs(30));
        if let Some(min) = out.ipvs_min_sync_period
            && min > sync
        {
            return bad(
                "ipvs.minSyncPeriod",
                format!("{min:?} must be less than or equal to ipvs.syncPeriod ({sync:?})"),
            );
        }
        out.ipvs_scheduler = match non_empty(ipvs.scheduler) {
            None => None,
            Some(s) => Some(
                s.parse::<Scheduler>()
                    .map_err(|e| ("ipvs.scheduler".to_owned(), e.to_string()))?,
            ),
        };
        out.ipvs_exclude_cidrs = match ipvs.exclude_cidrs {
            None => None,
            Some(list) if list.is_empty() => None,
            Some(list) => Some(
                list.iter()
                    .enumerate()
                    .map(|(i, c)| cidr(&format!("ipvs.excludeCIDRs[{i}]"), c))
                    .collect::<FieldResult<Vec<_>>>()?,
            ),
        };
        out.ipvs_strict_arp = ipvs.strict_arp;
        out.ipvs_tcp_timeout = duration("ipvs.tcpTimeout", ipvs.tcp_timeout)?;
        out.ipvs_tcpfin_timeout = duration("ipvs.tcpFinTimeout", ipvs.tcp_fin_timeout)?;
        out.ipvs_udp_timeout = duration("ipvs.udpTimeout", ipvs.udp_timeout)?;
    }

    note_set("nftables", raw.nftables.as_ref(), ignored);
    note_set("winkernel", raw.winkernel.as_ref(), ignored);
    out.detect_local_mode = match non_empty(raw.detect_local_mode) {
        None => None,
        Some(m)
            if [
                "ClusterCIDR",
                "NodeCIDR",
                "BridgeInterface",
                "InterfaceNamePrefix",
            ]
            .contains(&m.as_str()) =>
        {
            Some(m)
        }
        Some(m) => {
            return bad(
                "detectLocalMode",
                format!(
                    "{m:?} is not one of ClusterCIDR, NodeCIDR, BridgeInterface, InterfaceNamePrefix"
                ),
            );
        }
    };
    if let Some(dl) = raw.detect_local {
        out.pod_bridge_interface = non_empty(dl.bridge_interface);
        out.pod_interface_name_prefix = non_empty(dl.interface_name_prefix);
    }
    match out.detect_local_mode.as_deref() {
        Some("BridgeInterface") if out.pod_bridge_interface.is_none() => {
            return bad(
                "detectLocal.bridgeInterface",
                "must be set with detectLocalMode BridgeInterface",
            );
        }
        Some("InterfaceNamePrefix") if out.pod_interface_name_prefix.is_none() => {
            return bad(
                "detectLocal.interfaceNamePrefix",
                "must be set with detectLocalMode InterfaceNamePrefix",
            );
        }
        _ => {}
    }

    out.cluster_cidrs = match non_empty(raw.cluster_cidr) {
        None => None,
        Some(text) => {
            let cidrs = text
                .split(',')
                .map(|c| cidr("clusterCIDR", c))
                .collect::<FieldResult<Vec<_>>>()?;
            let v4 = cidrs.iter().filter(|c| matches!(c, IpNet::V4(_))).count();
            if cidrs.len() > 2 || v4 > 1 || cidrs.len() - v4 > 1 {
                return bad(
                    "clusterCIDR",
                    format!("{text:?}: at most one CIDR per IP family"),
                );
            }
            Some(cidrs)
        }
    };

    out.nodeport_addresses = match raw.node_port_addresses {
        None => None,
        Some(list) if list.is_empty() => None,
        Some(list) => {
            let entries = list.iter().enumerate().map(|(i, entry)| {
                entry
                    .parse::<NodePortAddress>()
                    .map_err(|e| (format!("nodePortAddresses[{i}]"), e.to_string()))
            });
            Some(entries.collect::<FieldResult<Vec<_>>>()?)
        }
    };

    match raw.oom_score_adj.as_ref() {
        None | Some(Value::Null) => {}
        Some(Value::Number(n)) if n.as_i64().is_some_and(|v| (-1000..=1000).contains(&v)) => {
            // kube-proxy's default is -999; any value is left to the
            // container runtime or the systemd unit (OOMScoreAdjust=).
            ignored.push("oomScoreAdj".to_owned());
        }
        Some(v) => return bad("oomScoreAdj", format!("{v}: must be within [-1000, 1000]")),
    }
    if let Some(ct) = raw.conntrack {
        out.conntrack_max_per_core = count("conntrack.maxPerCore", ct.max_per_core)?;
        out.conntrack_min = count("conntrack.min", ct.min)?;
        out.conntrack_tcp_be_liberal = ct.tcp_be_liberal;
        out.conntrack_tcp_close_wait_timeout =
            duration("conntrack.tcpCloseWaitTimeout", ct.tcp_close_wait_timeout)?;
        out.conntrack_tcp_established_timeout = duration(
            "conntrack.tcpEstablishedTimeout",
            ct.tcp_established_timeout,
        )?;
        out.conntrack_udp_timeout = duration("conntrack.udpTimeout", ct.udp_timeout)?;
        out.conntrack_udp_stream_timeout =
            duration("conntrack.udpStreamTimeout", ct.udp_stream_timeout)?;
        note_set("conntrack.max", ct.max.as_ref(), ignored);
    }
    note_set("configSyncPeriod", raw.config_sync_period.as_ref(), ignored);
    note_set("portRange", raw.port_range.as_ref(), ignored);
    note_set(
        "windowsRunAsService",
        raw.windows_run_as_service.as_ref(),
        ignored,
    );
    note_set("udpIdleTimeout", raw.udp_idle_timeout.as_ref(), ignored);
    note_set(
        "resourceContainer",
        raw.resource_container.as_ref(),
        ignored,
    );
    Ok(out)
}

/// Writes `config` as a `KubeProxyConfiguration` (what
/// `--write-config-to` writes): the settings it holds, each under its
/// field, keys sorted as kube-proxy writes them; [`parse`] reads it back
/// to the same settings.
pub fn render(config: &FileConfig) -> String {
    use serde_json::{Map, json};
    let mut root = Map::new();
    let mut put = |path: &str, value: Option<Value>| {
        let Some(value) = value else { return };
        let mut map = &mut root;
        let mut keys = path.split('.').peekable();
        while let Some(key) = keys.next() {
            if keys.peek().is_none() {
                map.insert(key.to_owned(), value);
                return;
            }
            let entry = map.entry(key).or_insert_with(|| Value::Object(Map::new()));
            let Value::Object(next) = entry else { return };
            map = next;
        }
    };
    let text = |v: &dyn ToString| json!(v.to_string());
    let list = |v: &[IpNet]| json!(v.iter().map(ToString::to_string).collect::<Vec<_>>());
    let dur = |d: &Duration| json!(format_go_duration(*d));
    put("apiVersion", Some(json!(API_VERSION)));
    put("kind", Some(json!(KIND)));
    put(
        "hostnameOverride",
        config.hostname_override.as_ref().map(|v| text(v)),
    );
    put("bindAddress", config.bind_address.as_ref().map(|v| text(v)));
    put(
        "healthzBindAddress",
        config.healthz_bind_address.as_ref().map(|v| text(v)),
    );
    put(
        "metricsBindAddress",
        config.metrics_bind_address.as_ref().map(|v| text(v)),
    );
    put(
        "bindAddressHardFail",
        config.bind_address_hard_fail.map(|v| json!(v)),
    );
    put("mode", config.mode.as_ref().map(|v| text(v)));
    put(
        "clientConnection.kubeconfig",
        config.kubeconfig.as_ref().map(|p| text(&p.display())),
    );
    put(
        "clusterCIDR",
        config.cluster_cidrs.as_ref().map(|v| {
            json!(
                v.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            )
        }),
    );
    put(
        "nodePortAddresses",
        config
            .nodeport_addresses
            .as_ref()
            .map(|v| json!(v.iter().map(ToString::to_string).collect::<Vec<_>>())),
    );
    put(
        "ipvs.scheduler",
        config.ipvs_scheduler.as_ref().map(|v| text(v)),
    );
    put("ipvs.syncPeriod", config.ipvs_sync_period.as_ref().map(dur));
    put(
        "ipvs.minSyncPeriod",
        config.ipvs_min_sync_period.as_ref().map(dur),
    );
    put(
        "ipvs.excludeCIDRs",
        config.ipvs_exclude_cidrs.as_deref().map(list),
    );
    put("ipvs.strictARP", config.ipvs_strict_arp.map(|v| json!(v)));
    put("ipvs.tcpTimeout", config.ipvs_tcp_timeout.as_ref().map(dur));
    put(
        "ipvs.tcpFinTimeout",
        config.ipvs_tcpfin_timeout.as_ref().map(dur),
    );
    put("ipvs.udpTimeout", config.ipvs_udp_timeout.as_ref().map(dur));
    put(
        "detectLocalMode",
        config.detect_local_mode.as_ref().map(|v| text(v)),
    );
    put(
        "detectLocal.bridgeInterface",
        config.pod_bridge_interface.as_ref().map(|v| text(v)),
    );
    put(
        "detectLocal.interfaceNamePrefix",
        config.pod_interface_name_prefix.as_ref().map(|v| text(v)),
    );
    put(
        "iptables.masqueradeAll",
        config.masquerade_all.map(|v| json!(v)),
    );
    put(
        "iptables.masqueradeBit",
        config.masquerade_bit.map(|v| json!(v)),
    );
    put("logging.verbosity", config.verbosity.map(|v| json!(v)));
    put(
        "conntrack.maxPerCore",
        config.conntrack_max_per_core.map(|v| json!(v)),
    );
    put("conntrack.min", config.conntrack_min.map(|v| json!(v)));
    put(
        "conntrack.tcpBeLiberal",
        config.conntrack_tcp_be_liberal.map(|v| json!(v)),
    );
    put(
        "conntrack.tcpCloseWaitTimeout",
        config.conntrack_tcp_close_wait_timeout.as_ref().map(dur),
    );
    put(
        "conntrack.tcpEstablishedTimeout",
        config.conntrack_tcp_established_timeout.as_ref().map(dur),
    );
    put(
        "conntrack.udpTimeout",
        config.conntrack_udp_timeout.as_ref().map(dur),
    );
    put(
        "conntrack.udpStreamTimeout",
        config.conntrack_udp_stream_timeout.as_ref().map(dur),
    );
    let mut out = String::new();
    emit_yaml(&Value::Object(root), 0, &mut out);
    out
}

/// Block-style YAML of a JSON value: mappings and lists on their own
/// lines, scalars as JSON (which YAML reads as they are).
fn emit_yaml(value: &Value, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                match v {
                    Value::Object(m) if !m.is_empty() => {
                        out.push_str(&format!("{pad}{key}:\n"));
                        emit_yaml(v, indent + 2, out);
                    }
                    Value::Array(a) if !a.is_empty() => {
                        out.push_str(&format!("{pad}{key}:\n"));
                        for item in a {
                            out.push_str(&format!("{pad}- {item}\n"));
                        }
                    }
                    scalar => out.push_str(&format!("{pad}{key}: {scalar}\n")),
                }
            }
        }
        scalar => out.push_str(&format!("{pad}{scalar}\n")),
    }
}

pub use rvs_model::{BadDuration, format_go_duration, parse_go_duration};

#[cfg(test)]
mod tests {
    use super::*;

    /// `kubectl -n kube-system get cm kube-proxy` on a kubeadm cluster
    /// (`config.conf`), with the ipvs mode chosen.
    const KUBEADM: &str = r#"apiVersion: kubeproxy.config.k8s.io/v1alpha1
bindAddress: 0.0.0.0
bindAddressHardFail: false
clientConnection:
  acceptContentTypes: ""
  burst: 0
  contentType: ""
  kubeconfig: /var/lib/kube-proxy/kubeconfig.conf
  qps: 0
clusterCIDR: 10.244.0.0/16
configSyncPeriod: 0s
conntrack:
  maxPerCore: null
  min: null
  tcpBeLiberal: false
  tcpCloseWaitTimeout: null
  tcpEstablishedTimeout: null
  udpStreamTimeout: 0s
  udpTimeout: 0s
detectLocal:
  bridgeInterface: ""
  interfaceNamePrefix: ""
detectLocalMode: ""
enableProfiling: false
healthzBindAddress: ""
hostnameOverride: ""
iptables:
  localhostNodePorts: null
  masqueradeAll: false
  masqueradeBit: null
  minSyncPeriod: 0s
  syncPeriod: 0s
ipvs:
  excludeCIDRs: null
  minSyncPeriod: 0s
  scheduler: ""
  strictARP: true
  syncPeriod: 0s
  tcpFinTimeout: 0s
  tcpTimeout: 0s
  udpTimeout: 0s
kind: KubeProxyConfiguration
logging:
  flushFrequency: 0
  options:
    json:
      infoBufferSize: "0"
    text:
      infoBufferSize: "0"
  verbosity: 0
metricsBindAddress: ""
mode: ipvs
nftables:
  masqueradeAll: false
  masqueradeBit: null
  minSyncPeriod: 0s
  syncPeriod: 0s
nodePortAddresses: null
oomScoreAdj: null
portRange: ""
showHiddenMetricsForVersion: ""
winkernel:
  enableDSR: false
  forwardHealthCheckVip: false
  networkName: ""
  rootHnsEndpointName: ""
  sourceVip: ""
"#;

    const HEAD: &str =
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n";

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn kubeadms_config_reads_as_its_few_real_settings() {
        let c = parse(KUBEADM, "config.conf").unwrap();
        assert_eq!(
            c,
            FileConfig {
                bind_address: Some(Ipv4Addr::UNSPECIFIED.into()),
                bind_address_hard_fail: Some(false),
                mode: Some("ipvs".to_owned()),
                kubeconfig: Some("/var/lib/kube-proxy/kubeconfig.conf".into()),
                cluster_cidrs: Some(vec![net("10.244.0.0/16")]),
                ipvs_min_sync_period: Some(Duration::ZERO),
                ipvs_strict_arp: Some(true),
                ipvs_tcp_timeout: Some(Duration::ZERO),
                ipvs_tcpfin_timeout: Some(Duration::ZERO),
                ipvs_udp_timeout: Some(Duration::ZERO),
                masquerade_all: Some(false),
                verbosity: Some(0),
                conntrack_tcp_be_liberal: Some(false),
                conntrack_udp_timeout: Some(Duration::ZERO),
                conntrack_udp_stream_timeout: Some(Duration::ZERO),
                ..FileConfig::default()
            }
        );
        assert!(c.ignored.is_empty(), "{:?}", c.ignored);
    }

    #[test]
    fn the_shipped_configs_parse_without_ignored_fields() {
        let daemonset = parse(
            include_str!("../../../deploy/kubernetes/config.conf"),
            "deploy/kubernetes/config.conf",
        )
        .unwrap();
        assert_eq!(daemonset.mode.as_deref(), Some("ipvs"));
        assert_eq!(
            daemonset.kubeconfig.as_deref(),
            Some(Path::new("/var/lib/rvs-proxy/kubeconfig.conf"))
        );
        assert_eq!(daemonset.masquerade_bit, Some(14));
        assert!(daemonset.ignored.is_empty(), "{:?}", daemonset.ignored);
        let host = parse(
            include_str!("../../../deploy/systemd/config.yaml"),
            "deploy/systemd/config.yaml",
        )
        .unwrap();
        assert_eq!(host.ipvs_scheduler, Some(Scheduler::RoundRobin));
        assert!(host.ignored.is_empty(), "{:?}", host.ignored);
    }

    #[test]
    fn json_is_read_too() {
        let c = parse(
            r#"{"apiVersion":"kubeproxy.config.k8s.io/v1alpha1","kind":"KubeProxyConfiguration",
                "ipvs":{"scheduler":"wlc","syncPeriod":"1m"},"metricsBindAddress":"0.0.0.0:10249"}"#,
            "c.json",
        )
        .unwrap();
        assert_eq!(c.ipvs_scheduler, Some(Scheduler::WeightedLeastConnection));
        assert_eq!(c.ipvs_sync_period, Some(Duration::from_secs(60)));
        assert_eq!(
            c.metrics_bind_address,
            Some("0.0.0.0:10249".parse().unwrap())
        );
    }

    #[test]
    fn settings_map_to_their_fields() {
        type Check = fn(&FileConfig) -> bool;
        let cases: &[(&str, Check)] = &[
            ("hostnameOverride: node-a", |c| {
                c.hostname_override.as_deref() == Some("node-a")
            }),
            ("healthzBindAddress: 0.0.0.0", |c| {
                c.healthz_bind_address == Some("0.0.0.0:10256".parse().unwrap())
            }),
            ("healthzBindAddress: \"[::]:9999\"", |c| {
                c.healthz_bind_address == Some("[::]:9999".parse().unwrap())
            }),
            ("metricsBindAddress: \"::1\"", |c| {
                c.metrics_bind_address == Some("[::1]:10249".parse().unwrap())
            }),
            ("clusterCIDR: 10.244.0.0/16,fd00:10:244::/56", |c| {
                c.cluster_cidrs == Some(vec![net("10.244.0.0/16"), net("fd00:10:244::/56")])
            }),
            (
                "nodePortAddresses: [192.168.0.0/24, localhost, primary]",
                |c| {
                    c.nodeport_addresses
                        == Some(vec![
                            NodePortAddress::Cidr(net("192.168.0.0/24")),
                            NodePortAddress::Localhost,
                            NodePortAddress::Primary,
                        ])
                },
            ),
            ("detectLocalMode: NodeCIDR", |c| {
                c.detect_local_mode.as_deref() == Some("NodeCIDR")
            }),
            ("nodePortAddresses: []", |c| c.nodeport_addresses.is_none()),
            ("ipvs: {excludeCIDRs: [10.0.0.0/8]}", |c| {
                c.ipvs_exclude_cidrs == Some(vec![net("10.0.0.0/8")])
            }),
            ("ipvs: {syncPeriod: 1m30s, minSyncPeriod: 500ms}", |c| {
                c.ipvs_sync_period == Some(Duration::from_secs(90))
                    && c.ipvs_min_sync_period == Some(Duration::from_millis(500))
            }),
            ("ipvs: {syncPeriod: 0s}", |c| c.ipvs_sync_period.is_none()),
            (
                "ipvs: {tcpTimeout: 15m, tcpFinTimeout: 2m, udpTimeout: 1.5h}",
                |c| {
                    c.ipvs_tcp_timeout == Some(Duration::from_secs(900))
                        && c.ipvs_tcpfin_timeout == Some(Duration::from_secs(120))
                        && c.ipvs_udp_timeout == Some(Duration::from_secs(5400))
                },
            ),
            ("iptables: {masqueradeAll: true, masqueradeBit: 31}", |c| {
                c.masquerade_all == Some(true) && c.masquerade_bit == Some(31)
            }),
            ("logging: {verbosity: 4, format: text}", |c| {
                c.verbosity == Some(4)
            }),
            ("mode: \"\"", |c| c.mode.is_none()),
            ("bindAddressHardFail: true", |c| {
                c.bind_address_hard_fail == Some(true) && c.ignored.is_empty()
            }),
            ("detectLocalMode: ClusterCIDR", |c| {
                c.detect_local_mode.as_deref() == Some("ClusterCIDR") && c.ignored.is_empty()
            }),
            (
                "detectLocalMode: BridgeInterface\ndetectLocal: {bridgeInterface: cbr0}",
                |c| {
                    c.detect_local_mode.as_deref() == Some("BridgeInterface")
                        && c.pod_bridge_interface.as_deref() == Some("cbr0")
                },
            ),
            (
                "detectLocalMode: InterfaceNamePrefix\ndetectLocal: {interfaceNamePrefix: veth}",
                |c| c.pod_interface_name_prefix.as_deref() == Some("veth"),
            ),
            ("bindAddress: \"::\"", |c| {
                c.bind_address == Some(Ipv6Addr::UNSPECIFIED.into())
            }),
            // A pointer field's 0 is a setting (leave the limit alone);
            // null is kube-proxy's default.
            ("conntrack: {maxPerCore: 0, min: null}", |c| {
                c.conntrack_max_per_core == Some(0)
                    && c.conntrack_min.is_none()
                    && c.ignored.is_empty()
            }),
            (
                "conntrack: {maxPerCore: 65536, min: 262144, tcpBeLiberal: true}",
                |c| {
                    c.conntrack_max_per_core == Some(65536)
                        && c.conntrack_min == Some(262144)
                        && c.conntrack_tcp_be_liberal == Some(true)
                },
            ),
            (
                "conntrack: {tcpEstablishedTimeout: 2h, tcpCloseWaitTimeout: 0s, udpTimeout: 30s, udpStreamTimeout: 2m}",
                |c| {
                    c.conntrack_tcp_established_timeout == Some(Duration::from_secs(7200))
                        && c.conntrack_tcp_close_wait_timeout == Some(Duration::ZERO)
                        && c.conntrack_udp_timeout == Some(Duration::from_secs(30))
                        && c.conntrack_udp_stream_timeout == Some(Duration::from_secs(120))
                },
            ),
        ];
        for (yaml, check) in cases {
            let c =
                parse(&format!("{HEAD}{yaml}\n"), "t").unwrap_or_else(|e| panic!("{yaml}: {e}"));
            assert!(check(&c), "{yaml}: {c:?}");
        }
    }

    #[test]
    fn unimplemented_fields_are_accepted_and_listed() {
        let cases: &[(&str, &[&str])] = &[
            ("conntrack: {max: 262144}", &["conntrack.max"]),
            ("featureGates: {SomeGate: true}", &["featureGates.SomeGate"]),
            ("oomScoreAdj: -999", &["oomScoreAdj"]),
            ("configSyncPeriod: 15m", &["configSyncPeriod"]),
            (
                "iptables: {localhostNodePorts: true, syncPeriod: 30s}",
                &["iptables.localhostNodePorts", "iptables.syncPeriod"],
            ),
            (
                "logging: {format: json, options: {json: {infoBufferSize: \"0\"}}}",
                &["logging.format"],
            ),
            (
                "clientConnection: {qps: 50, burst: 100}",
                &["clientConnection.qps", "clientConnection.burst"],
            ),
            ("enableProfiling: true", &["enableProfiling"]),
            ("udpIdleTimeout: 250ms", &["udpIdleTimeout"]),
            ("winkernel: {enableDSR: false}", &[]),
        ];
        for (yaml, want) in cases {
            let c =
                parse(&format!("{HEAD}{yaml}\n"), "t").unwrap_or_else(|e| panic!("{yaml}: {e}"));
            assert_eq!(&c.ignored, want, "{yaml}");
        }
    }

    #[test]
    fn errors_name_the_field() {
        let cases: &[(&str, &str, &str)] = &[
            ("ipvs: {syncPeriod: 30}", "ipvs.syncPeriod", "invalid type"),
            (
                "ipvs: {syncPeriod: soon}",
                "ipvs.syncPeriod",
                "not a duration",
            ),
            (
                "ipvs: {syncPeriod: -1s}",
                "ipvs.syncPeriod",
                "greater than or equal to 0",
            ),
            (
                "ipvs: {syncPeriod: 10s, minSyncPeriod: 1m}",
                "ipvs.minSyncPeriod",
                "less than",
            ),
            ("ipvs: {scheduler: fastest}", "ipvs.scheduler", "fastest"),
            ("ipvs: {strictArp: true}", "ipvs.strictArp", "unknown field"),
            (
                "ipvs: {excludeCIDRs: [10.0.0.0/8, 10.1.0.0]}",
                "ipvs.excludeCIDRs[1]",
                "not a CIDR",
            ),
            ("ipvs: {strictARP: yes}", "ipvs.strictARP", "invalid type"),
            ("syncPeriod: 30s", "syncPeriod", "unknown field"),
            (
                "clientConnection: {kubeConfig: /x}",
                "clientConnection.kubeConfig",
                "unknown field",
            ),
            (
                "iptables: {masqueradeBit: 32}",
                "iptables.masqueradeBit",
                "[0, 31]",
            ),
            ("mode: iptables", "mode", "only the \"ipvs\" mode"),
            ("mode: userspace", "mode", "not a proxy mode"),
            ("bindAddress: node-a", "bindAddress", "not an IP"),
            (
                "healthzBindAddress: \"localhost:10256\"",
                "healthzBindAddress",
                "not an IP:port",
            ),
            (
                "clusterCIDR: 10.0.0.0/8,10.1.0.0/16",
                "clusterCIDR",
                "one CIDR per IP family",
            ),
            ("clusterCIDR: 10.0.0.0", "clusterCIDR", "not a CIDR"),
            (
                "nodePortAddresses: [primary, 10.0.0.1]",
                "nodePortAddresses[1]",
                "not a CIDR",
            ),
            ("oomScoreAdj: -2000", "oomScoreAdj", "[-1000, 1000]"),
            ("detectLocalMode: Magic", "detectLocalMode", "not one of"),
            (
                "detectLocalMode: BridgeInterface",
                "detectLocal.bridgeInterface",
                "must be set",
            ),
            (
                "detectLocal: {bridge: cbr0}",
                "detectLocal.bridge",
                "unknown field",
            ),
            ("logging: {verbosity: -1}", "logging.verbosity", "0–255"),
            (
                "conntrack: {maxPerCore: -1}",
                "conntrack.maxPerCore",
                "greater than or equal to 0",
            ),
            ("conntrack: {min: 4294967296}", "conntrack.min", "int32"),
            (
                "conntrack: {udpTimeout: -5s}",
                "conntrack.udpTimeout",
                "greater than or equal to 0",
            ),
            (
                "conntrack: {tcpTimeout: 5s}",
                "conntrack.tcpTimeout",
                "unknown field",
            ),
        ];
        for (yaml, field, message) in cases {
            let err = parse(&format!("{HEAD}{yaml}\n"), "f.yaml").unwrap_err();
            match &err {
                ConfigFileError::Field {
                    origin,
                    field: f,
                    message: m,
                } => {
                    assert_eq!(origin, "f.yaml");
                    assert_eq!(f, field, "{yaml}: {err}");
                    assert!(m.contains(message), "{yaml}: {err}");
                }
                other => panic!("{yaml}: {other}"),
            }
        }
    }

    #[test]
    fn the_header_and_syntax_are_checked() {
        let e = parse("kind: KubeProxyConfiguration\n", "f").unwrap_err();
        assert!(e.to_string().contains("apiVersion: missing"), "{e}");
        let e = parse(
            "apiVersion: kubeproxy.config.k8s.io/v1alpha2\nkind: KubeProxyConfiguration\n",
            "f",
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("apiVersion: \"kubeproxy.config.k8s.io/v1alpha2\""),
            "{e}"
        );
        let e = parse(
            "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeletConfiguration\n",
            "f",
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("f: kind: "), "{e}");
        let e = parse(&format!("{HEAD}mode: ipvs\nmode: ipvs\n"), "f").unwrap_err();
        assert!(matches!(e, ConfigFileError::Syntax { .. }), "{e}");
        let e = parse("ipvs: [\n", "f").unwrap_err();
        assert!(matches!(e, ConfigFileError::Syntax { .. }), "{e}");
        let e = parse("- 1\n", "f").unwrap_err();
        assert!(e.to_string().contains("mapping"), "{e}");
    }

    #[test]
    fn default_addresses_follow_the_bind_address_family() {
        let (h, m) = default_bind_addresses(None);
        assert_eq!(
            (h.to_string(), m.to_string()),
            ("0.0.0.0:10256".into(), "127.0.0.1:10249".into())
        );
        let (h, m) = default_bind_addresses(Some(Ipv6Addr::UNSPECIFIED.into()));
        assert_eq!(
            (h.to_string(), m.to_string()),
            ("[::]:10256".into(), "[::1]:10249".into())
        );
    }

    #[test]
    fn go_durations() {
        for (text, want) in [
            ("30s", Duration::from_secs(30)),
            ("1m30s", Duration::from_secs(90)),
            ("1.5h", Duration::from_secs(5400)),
            ("250ms", Duration::from_millis(250)),
            ("2us", Duration::from_micros(2)),
            ("2µs", Duration::from_micros(2)),
            ("0", Duration::ZERO),
            ("0s", Duration::ZERO),
        ] {
            assert_eq!(parse_go_duration(text), Ok(want), "{text}");
        }
        for text in ["", "30", "s", "5 minutes", "1d", "1.2.3s"] {
            assert!(parse_go_duration(text).is_err(), "{text}");
        }
    }

    #[test]
    fn rendered_configs_read_back_to_the_same_settings() {
        for yaml in [
            KUBEADM,
            include_str!("../../../deploy/kubernetes/config.conf"),
        ] {
            let config = parse(yaml, "in").unwrap();
            let text = render(&config);
            let again = parse(&text, "out").unwrap_or_else(|e| panic!("{e}\n{text}"));
            assert_eq!(again, config, "{text}");
        }
        let config = parse(
            &format!(
                "{HEAD}nodePortAddresses: [primary, 10.0.0.0/8]\ndetectLocalMode: NodeCIDR\n\
                 ipvs: {{syncPeriod: 1m30s, excludeCIDRs: [10.1.0.0/16]}}\n\
                 conntrack: {{maxPerCore: 0, tcpEstablishedTimeout: 24h, tcpBeLiberal: true}}\n"
            ),
            "in",
        )
        .unwrap();
        let text = render(&config);
        assert!(
            text.contains("ipvs:\n  excludeCIDRs:\n  - \"10.1.0.0/16\"\n"),
            "{text}"
        );
        assert!(text.contains("  syncPeriod: \"1m30s\"\n"), "{text}");
        assert!(
            text.contains("conntrack:\n  maxPerCore: 0\n  tcpBeLiberal: true\n  tcpEstablishedTimeout: \"24h0m0s\"\n"),
            "{text}"
        );
        assert_eq!(parse(&text, "out").unwrap(), config);
    }

    #[test]
    fn load_reads_a_file_and_names_it() {
        let dir = std::env::temp_dir().join(format!("rvs-config-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config.conf");
        std::fs::write(&path, KUBEADM).unwrap();
        assert_eq!(load(&path).unwrap().mode.as_deref(), Some("ipvs"));
        std::fs::write(&path, format!("{HEAD}ipvs: {{udpTimeout: x}}\n")).unwrap();
        let e = load(&path).unwrap_err().to_string();
        assert!(e.contains("config.conf: ipvs.udpTimeout"), "{e}");
        let e = load(&dir.join("missing")).unwrap_err().to_string();
        assert!(e.starts_with("reading "), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
