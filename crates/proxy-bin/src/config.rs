//! The command line merged with a `--config` file, by kube-proxy's rule:
//! [`rvs_proxy::flags::prepare`] has already dropped the kube-proxy flags
//! kube-proxy ignores beside a file, so a flag still given wins (only
//! `--hostname-override` and `-v` of the file's settings), and the file's
//! value (when it sets one) replaces a default. The file is read by
//! [`rvs_proxy::config_file`], which names the field of any error.

use anyhow::Context;
use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches};
use rvs_proxy::config_file::{FileConfig, default_bind_addresses};

use crate::cli::Cli;

/// Parses the process's arguments (exiting on `--help` or a usage error,
/// as clap does) and applies the `--config` file if one is named. Also
/// returns what was accepted and not acted on (flags, file fields), for
/// the caller to warn about once logging is set up.
pub(crate) fn parse_args() -> anyhow::Result<(Cli, Vec<String>)> {
    let prepared = rvs_proxy::flags::prepare(std::env::args_os());
    let matches = Cli::command().get_matches_from(&prepared.args);
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let mut ignored: Vec<String> = prepared.ignored.iter().map(|i| i.to_string()).collect();
    if let Some(path) = cli.config.clone() {
        let file = rvs_proxy::config_file::load(&path)
            .with_context(|| format!("--config {}", path.display()))?;
        merge(&mut cli, &file, &|id| explicit(&matches, id))?;
        let field = |f| format!("--config: {f}: accepted but not implemented by rvs-proxy");
        ignored.extend(file.ignored.iter().map(field));
    }
    Ok((cli, ignored))
}

/// The settings `cli` runs with, as a configuration file holds them (for
/// `--write-config-to`).
pub(crate) fn to_file(cli: &Cli) -> anyhow::Result<FileConfig> {
    let addr = |flag: &str, text: &str, port| {
        rvs_observe::parse_bind_address(text, port).with_context(|| format!("--{flag}"))
    };
    let nonzero = |d: std::time::Duration| (!d.is_zero()).then_some(d);
    Ok(FileConfig {
        hostname_override: cli.hostname_override.clone(),
        bind_address: cli.bind_address,
        healthz_bind_address: addr("healthz-bind-address", &cli.healthz_bind_address, 10256)?,
        metrics_bind_address: addr("metrics-bind-address", &cli.metrics_bind_address, 10249)?,
        bind_address_hard_fail: Some(cli.bind_address_hard_fail),
        mode: Some(cli.proxy_mode.clone()),
        kubeconfig: cli.kubeconfig.clone(),
        cluster_cidrs: Some(cli.cluster_cidr.clone()).filter(|c| !c.is_empty()),
        nodeport_addresses: Some(cli.nodeport_addresses.clone()).filter(|n| !n.is_empty()),
        ipvs_scheduler: Some(cli.proxy_config()?.scheduler),
        ipvs_sync_period: Some(cli.ipvs_sync_period),
        ipvs_min_sync_period: Some(cli.ipvs_min_sync_period),
        ipvs_exclude_cidrs: Some(cli.ipvs_exclude_cidrs.clone()).filter(|c| !c.is_empty()),
        ipvs_strict_arp: Some(cli.ipvs_strict_arp),
        ipvs_tcp_timeout: nonzero(cli.ipvs_tcp_timeout),
        ipvs_tcpfin_timeout: nonzero(cli.ipvs_tcpfin_timeout),
        ipvs_udp_timeout: nonzero(cli.ipvs_udp_timeout),
        detect_local_mode: Some(cli.detect_local_mode.to_string()),
        pod_bridge_interface: cli.pod_bridge_interface.clone(),
        pod_interface_name_prefix: cli.pod_interface_name_prefix.clone(),
        masquerade_all: Some(cli.masquerade_all),
        masquerade_bit: Some(cli.iptables_masquerade_bit),
        verbosity: Some(cli.verbosity),
        conntrack_max_per_core: Some(cli.conntrack_max_per_core),
        conntrack_min: Some(cli.conntrack_min),
        conntrack_tcp_be_liberal: Some(cli.conntrack_tcp_be_liberal),
        conntrack_tcp_close_wait_timeout: Some(cli.conntrack_tcp_timeout_close_wait),
        conntrack_tcp_established_timeout: Some(cli.conntrack_tcp_timeout_established),
        conntrack_udp_timeout: Some(cli.conntrack_udp_timeout),
        conntrack_udp_stream_timeout: Some(cli.conntrack_udp_timeout_stream),
        ignored: Vec::new(),
    })
}

/// Whether the flag with this id was given on the command line.
fn explicit(matches: &ArgMatches, id: &str) -> bool {
    matches.value_source(id) == Some(ValueSource::CommandLine)
}

/// Applies `file` to `cli` wherever the flag was not given explicitly.
fn merge(cli: &mut Cli, file: &FileConfig, explicit: &dyn Fn(&str) -> bool) -> anyhow::Result<()> {
    macro_rules! take {
        ($id:literal, $field:ident, $value:expr) => {
            if !explicit($id) {
                if let Some(v) = $value {
                    cli.$field = v;
                }
            }
        };
    }
    take!(
        "hostname_override",
        hostname_override,
        file.hostname_override.clone().map(Some)
    );
    take!("proxy_mode", proxy_mode, file.mode.clone());
    take!("kubeconfig", kubeconfig, file.kubeconfig.clone().map(Some));
    take!("cluster_cidr", cluster_cidr, file.cluster_cidrs.clone());
    take!(
        "nodeport_addresses",
        nodeport_addresses,
        file.nodeport_addresses.clone()
    );
    take!(
        "ipvs_scheduler",
        ipvs_scheduler,
        file.ipvs_scheduler.map(|s| s.to_string())
    );
    take!("ipvs_sync_period", ipvs_sync_period, file.ipvs_sync_period);
    take!(
        "ipvs_min_sync_period",
        ipvs_min_sync_period,
        file.ipvs_min_sync_period
    );
    take!(
        "ipvs_exclude_cidrs",
        ipvs_exclude_cidrs,
        file.ipvs_exclude_cidrs.clone()
    );
    take!("ipvs_strict_arp", ipvs_strict_arp, file.ipvs_strict_arp);
    take!("bind_address", bind_address, file.bind_address.map(Some));
    take!("ipvs_tcp_timeout", ipvs_tcp_timeout, file.ipvs_tcp_timeout);
    take!(
        "ipvs_tcpfin_timeout",
        ipvs_tcpfin_timeout,
        file.ipvs_tcpfin_timeout
    );
    take!("ipvs_udp_timeout", ipvs_udp_timeout, file.ipvs_udp_timeout);
    take!(
        "pod_bridge_interface",
        pod_bridge_interface,
        file.pod_bridge_interface.clone().map(Some)
    );
    take!(
        "pod_interface_name_prefix",
        pod_interface_name_prefix,
        file.pod_interface_name_prefix.clone().map(Some)
    );
    take!("masquerade_all", masquerade_all, file.masquerade_all);
    take!(
        "iptables_masquerade_bit",
        iptables_masquerade_bit,
        file.masquerade_bit
    );
    take!("verbosity", verbosity, file.verbosity);
    take!(
        "conntrack_max_per_core",
        conntrack_max_per_core,
        file.conntrack_max_per_core
    );
    take!("conntrack_min", conntrack_min, file.conntrack_min);
    take!(
        "conntrack_tcp_be_liberal",
        conntrack_tcp_be_liberal,
        file.conntrack_tcp_be_liberal
    );
    take!(
        "conntrack_tcp_timeout_close_wait",
        conntrack_tcp_timeout_close_wait,
        file.conntrack_tcp_close_wait_timeout
    );
    take!(
        "conntrack_tcp_timeout_established",
        conntrack_tcp_timeout_established,
        file.conntrack_tcp_established_timeout
    );
    take!(
        "conntrack_udp_timeout",
        conntrack_udp_timeout,
        file.conntrack_udp_timeout
    );
    take!(
        "conntrack_udp_timeout_stream",
        conntrack_udp_timeout_stream,
        file.conntrack_udp_stream_timeout
    );
    take!(
        "bind_address_hard_fail",
        bind_address_hard_fail,
        file.bind_address_hard_fail
    );
    if !explicit("detect_local_mode")
        && let Some(mode) = &file.detect_local_mode
    {
        cli.detect_local_mode = mode
            .parse()
            .map_err(|_| anyhow::anyhow!("--config: detectLocalMode {mode:?} is not supported"))?;
    }
    // bindAddress picks the family of both servers' defaults.
    let (healthz_default, metrics_default) = default_bind_addresses(file.bind_address);
    if !explicit("healthz_bind_address") {
        cli.healthz_bind_address = file
            .healthz_bind_address
            .unwrap_or(healthz_default)
            .to_string();
    }
    if !explicit("metrics_bind_address") {
        cli.metrics_bind_address = file
            .metrics_bind_address
            .unwrap_or(metrics_default)
            .to_string();
    }
    Ok(())
}
