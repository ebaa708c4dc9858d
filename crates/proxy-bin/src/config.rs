//! The command line merged with a `--config` file: a flag given on the
//! command line wins; otherwise the file's value (when it sets one)
//! replaces the flag's default. The file is read by
//! [`rvs_proxy::config_file`], which names the field of any error.

use anyhow::Context;
use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches};
use rvs_proxy::config_file::{FileConfig, default_bind_addresses};

use crate::cli::Cli;

/// Parses the process's arguments (exiting on `--help` or a usage error,
/// as clap does) and applies the `--config` file if one is named.
/// Also returns the file's fields rvs-proxy accepts but does not
/// implement, for the caller to log once logging is set up (the file's
/// `logging.verbosity` decides how).
pub(crate) fn parse_args() -> anyhow::Result<(Cli, Vec<String>)> {
    let matches = Cli::command().get_matches();
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let mut ignored = Vec::new();
    if let Some(path) = cli.config.clone() {
        let file = rvs_proxy::config_file::load(&path)
            .with_context(|| format!("--config {}", path.display()))?;
        merge(&mut cli, &file, &|id| explicit(&matches, id))?;
        ignored = file.ignored;
    }
    Ok((cli, ignored))
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::Parser;

    use super::*;

    const FILE: &str = "apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: ipvs
clusterCIDR: 10.244.0.0/16
metricsBindAddress: 0.0.0.0:10249
ipvs:
  scheduler: wlc
  syncPeriod: 1m
  strictARP: true
iptables:
  masqueradeAll: true
";

    fn merged(args: &[&str]) -> Cli {
        let matches = Cli::command().try_get_matches_from(args).unwrap();
        let mut cli = Cli::from_arg_matches(&matches).unwrap();
        let file = rvs_proxy::config_file::parse(FILE, "test").unwrap();
        merge(&mut cli, &file, &|id| explicit(&matches, id)).unwrap();
        cli
    }

    #[test]
    fn the_file_replaces_defaults() {
        let cli = merged(&["rvs-proxy"]);
        assert_eq!(cli.ipvs_scheduler, "wlc");
        assert_eq!(cli.ipvs_sync_period, Duration::from_secs(60));
        assert!(cli.ipvs_strict_arp && cli.masquerade_all);
        assert_eq!(cli.cluster_cidr.len(), 1);
        assert_eq!(cli.metrics_bind_address, "0.0.0.0:10249");
        assert_eq!(cli.healthz_bind_address, "0.0.0.0:10256");
    }

    #[test]
    fn explicit_flags_win_over_the_file() {
        let cli = merged(&[
            "rvs-proxy",
            "--ipvs-scheduler=rr",
            "--ipvs-sync-period=5s",
            "--metrics-bind-address=127.0.0.1:19999",
        ]);
        assert_eq!(cli.ipvs_scheduler, "rr");
        assert_eq!(cli.ipvs_sync_period, Duration::from_secs(5));
        assert_eq!(cli.metrics_bind_address, "127.0.0.1:19999");
        // What the command line left alone still comes from the file.
        assert!(cli.masquerade_all);
        let cli = Cli::try_parse_from(["rvs-proxy"]).unwrap();
        assert_eq!(cli.ipvs_scheduler, "rr", "default without a file");
    }
}
