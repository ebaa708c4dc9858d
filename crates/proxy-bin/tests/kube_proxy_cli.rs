//! `rvs-proxy` takes kube-proxy's command line unchanged: every flag of
//! the committed `kube-proxy --help` (v1.37.2) in each of pflag's forms,
//! unimplemented ones warned about once by name, `--config` beside flags
//! by kube-proxy's rule, and kubeadm's DaemonSet arguments with kubeadm's
//! configuration file. Each run is parse-only: `--write-config-to`
//! checks everything, writes the configuration rvs-proxy would run with
//! and exits, as kube-proxy's does.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::path::{Path, PathBuf};
use std::process::Command;

use rvs_proxy::config::NodePortAddress;
use rvs_proxy::config_file::{FileConfig, parse};
use rvs_proxy::flags::{Handling, lookup, parse_help};

const HELP: &str = include_str!("../../proxy/tests/fixtures/kube-proxy-v1.37.2-help.txt");

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rvs-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs rvs-proxy with `args` and `--write-config-to`; the written
/// configuration and stderr, or stderr on failure.
fn run(dir: &Path, args: &[&str]) -> Result<(FileConfig, String), String> {
    let out_file = dir.join("written.yaml");
    let _ = std::fs::remove_file(&out_file);
    let out = Command::new(env!("CARGO_BIN_EXE_rvs-proxy"))
        .args(args)
        .arg(format!("--write-config-to={}", out_file.display()))
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        return Err(stderr);
    }
    let text = std::fs::read_to_string(&out_file).unwrap();
    let config = parse(&text, "written").unwrap_or_else(|e| panic!("{e}\n{text}"));
    Ok((config, stderr))
}

/// The value to give `--name` in a parse-only run: the table's sample,
/// but files that exist where the flag reads one.
fn value_for(name: &str, dir: &Path) -> String {
    match name {
        "config" => {
            let path = dir.join("config.conf");
            std::fs::write(
                &path,
                "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n",
            )
            .unwrap();
            path.display().to_string()
        }
        "write-config-to" => dir.join("other.yaml").display().to_string(),
        _ => lookup(name).unwrap().sample.to_owned(),
    }
}

#[test]
fn every_flag_of_kube_proxys_help_is_accepted_in_each_form() {
    let dir = scratch("every");
    let flags = parse_help(HELP);
    assert_eq!(flags.len(), 55);
    for flag in flags {
        let name = flag.name.as_str();
        if name == "help" || name == "version" {
            // Print and exit 0, as kube-proxy's do.
            for arg in [format!("--{name}"), "-h".to_owned()] {
                if name == "version" && arg == "-h" {
                    continue;
                }
                let out = Command::new(env!("CARGO_BIN_EXE_rvs-proxy"))
                    .arg(&arg)
                    .output()
                    .unwrap();
                assert!(out.status.success(), "{arg}: {out:?}");
                assert!(!out.stdout.is_empty(), "{arg}");
            }
            continue;
        }
        let spec = lookup(name).unwrap();
        let value = value_for(name, &dir);
        let forms: Vec<Vec<String>> = if spec.is_bool() {
            ["", "=true", "=false", "=1"]
                .iter()
                .map(|v| vec![format!("--{name}{v}")])
                .collect()
        } else {
            vec![
                vec![format!("--{name}={value}")],
                vec![format!("--{name}"), value.clone()],
            ]
        };
        for args in forms {
            // --cleanup and --init-only act instead of writing; give them
            // as false only.
            if (name == "cleanup" || name == "init-only") && !args[0].ends_with("false") {
                continue;
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let (_, stderr) = run(&dir, &args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
            let warned = stderr.matches(&format!("--{name}:")).count();
            let given = match args.as_slice() {
                [_, value] => *value,
                [flag] => flag.split_once('=').map_or("true", |(_, v)| v),
                _ => unreachable!(),
            };
            let given = if given == "1" { "true" } else { given };
            let quiet = spec.handling == Handling::Implemented || spec.inert.contains(&given);
            assert_eq!(warned, usize::from(!quiet), "{args:?}: {stderr}");
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn values_land_where_kube_proxy_puts_them() {
    let dir = scratch("values");
    let (c, stderr) = run(
        &dir,
        &[
            "--ipvs-scheduler",
            "wlc",
            "--ipvs-sync-period=1m",
            "--ipvs-exclude-cidrs=10.0.0.0/8",
            "--ipvs-exclude-cidrs",
            "fd00::/8",
            "--nodeport-addresses=primary,192.168.0.0/16",
            "--detect-local-mode=NodeCIDR",
            "--bind-address=192.168.0.7",
            "--masquerade-all",
            "--masquerade-all=false",
            "-v=4",
            "--conntrack-min=1",
            "--conntrack-min=2",
        ],
    )
    .unwrap();
    assert_eq!(
        c.ipvs_scheduler.map(|s| s.to_string()).as_deref(),
        Some("wlc")
    );
    assert_eq!(c.ipvs_sync_period, Some(std::time::Duration::from_secs(60)));
    assert_eq!(c.ipvs_exclude_cidrs.unwrap().len(), 2, "lists append");
    assert_eq!(
        c.nodeport_addresses.unwrap(),
        [
            NodePortAddress::Primary,
            NodePortAddress::Cidr("192.168.0.0/16".parse().unwrap())
        ]
    );
    assert_eq!(c.detect_local_mode.as_deref(), Some("NodeCIDR"));
    assert_eq!(c.bind_address, Some("192.168.0.7".parse().unwrap()));
    assert_eq!(c.masquerade_all, Some(false), "the last value wins");
    assert_eq!(c.verbosity, Some(4));
    assert_eq!(c.conntrack_min, Some(2), "the last value wins");
    assert!(!stderr.contains("--conntrack-min:"), "{stderr}");
    // Bad values are errors naming the flag.
    for (args, message) in [
        (
            &["--cluster-cidr=10.0.0.0/8,10.1.0.0/16"][..],
            "--cluster-cidr",
        ),
        (&["--nodeport-addresses=10.0.0.1"], "--nodeport-addresses"),
        (&["--ipvs-tcp-timeout=2000000h"], "--ipvs-tcp-timeout"),
        (
            &["--detect-local-mode=BridgeInterface"],
            "--pod-bridge-interface",
        ),
        (&["--proxy-mode=iptables"], "--proxy-mode"),
        (&["--masquerade-all=yes"], "--masquerade-all"),
    ] {
        let e = run(&dir, args).expect_err(args[0]);
        assert!(e.contains(message), "{args:?}: {e}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn conntrack_flags_and_fields_land_in_the_configuration() {
    let dir = scratch("conntrack");
    let secs = std::time::Duration::from_secs;
    let (c, stderr) = run(
        &dir,
        &[
            "--conntrack-max-per-core=0",
            "--conntrack-min",
            "65536",
            "--conntrack-tcp-be-liberal",
            "--conntrack-tcp-timeout-established=2h",
            "--conntrack-tcp-timeout-close-wait=0s",
            "--conntrack-udp-timeout=30s",
            "--conntrack-udp-timeout-stream=3m",
        ],
    )
    .unwrap();
    assert!(!stderr.contains("--conntrack"), "{stderr}");
    assert_eq!(c.conntrack_max_per_core, Some(0));
    assert_eq!(c.conntrack_min, Some(65536));
    assert_eq!(c.conntrack_tcp_be_liberal, Some(true));
    assert_eq!(c.conntrack_tcp_established_timeout, Some(secs(7200)));
    assert_eq!(c.conntrack_tcp_close_wait_timeout, Some(secs(0)));
    assert_eq!(c.conntrack_udp_timeout, Some(secs(30)));
    assert_eq!(c.conntrack_udp_stream_timeout, Some(secs(180)));
    // From a file: its settings replace the defaults.
    let file = dir.join("config.conf");
    std::fs::write(
        &file,
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
conntrack: {maxPerCore: 16384, min: null, udpTimeout: 10s}
",
    )
    .unwrap();
    let (c, _) = run(&dir, &[&format!("--config={}", file.display())]).unwrap();
    assert_eq!(c.conntrack_max_per_core, Some(16384));
    assert_eq!(c.conntrack_min, Some(131072));
    assert_eq!(c.conntrack_udp_timeout, Some(secs(10)));
    for (args, message) in [
        (
            &["--conntrack-max-per-core=-1"][..],
            "--conntrack-max-per-core",
        ),
        (&["--conntrack-min=2147483648"], "--conntrack-min"),
        (&["--conntrack-udp-timeout=soon"], "--conntrack-udp-timeout"),
    ] {
        let e = run(&dir, args).expect_err(args[0]);
        assert!(e.contains(message), "{args:?}: {e}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn beside_config_kube_proxys_flags_yield_to_the_file_but_a_few() {
    let dir = scratch("config");
    let file = dir.join("config.conf");
    std::fs::write(
        &file,
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: ipvs
hostnameOverride: from-file
clusterCIDR: 10.244.0.0/16
ipvs: {scheduler: wlc}
logging: {verbosity: 1}
",
    )
    .unwrap();
    let config = format!("--config={}", file.display());
    let (c, stderr) = run(
        &dir,
        &[
            "--ipvs-scheduler=sh",
            "--masquerade-all",
            "--kubeconfig=/elsewhere",
            &config,
            "--hostname-override=node-a",
            "-v=3",
            "--iptables-backend=legacy",
        ],
    )
    .unwrap();
    assert_eq!(
        c.ipvs_scheduler.map(|s| s.to_string()).as_deref(),
        Some("wlc")
    );
    assert_eq!(c.masquerade_all, Some(false));
    assert_eq!(c.kubeconfig, None);
    assert_eq!(
        c.hostname_override.as_deref(),
        Some("node-a"),
        "the flag wins"
    );
    assert_eq!(c.verbosity, Some(3), "logging flags win");
    for flag in ["--ipvs-scheduler", "--masquerade-all", "--kubeconfig"] {
        assert!(
            stderr.contains(&format!("{flag}: ignored because --config is given")),
            "{flag}: {stderr}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// kubeadm's `kube-proxy` ConfigMap (`config.conf`) as `kubeadm init`
/// writes it for v1.37 with `mode: ipvs` (cmd/kubeadm/app/phases/addons/
/// proxy: every field, mostly zero values).
const KUBEADM_CONFIG: &str = r#"apiVersion: kubeproxy.config.k8s.io/v1alpha1
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
  strictARP: false
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

#[test]
fn kubeadms_daemonset_arguments_start_rvs_proxy_unchanged() {
    let dir = scratch("kubeadm");
    let file = dir.join("config.conf");
    std::fs::write(&file, KUBEADM_CONFIG).unwrap();
    // The container's command, with $(NODE_NAME) as the kubelet expands it.
    let config = format!("--config={}", file.display());
    let (c, stderr) = run(&dir, &[&config, "--hostname-override=node-a"]).unwrap();
    assert!(!stderr.contains("WARN"), "nothing ignored: {stderr}");
    assert_eq!(c.mode.as_deref(), Some("ipvs"));
    assert_eq!(c.hostname_override.as_deref(), Some("node-a"));
    assert_eq!(
        c.kubeconfig.as_deref(),
        Some(Path::new("/var/lib/kube-proxy/kubeconfig.conf"))
    );
    assert_eq!(c.cluster_cidrs.unwrap().len(), 1);
    assert_eq!(
        c.healthz_bind_address,
        Some("0.0.0.0:10256".parse().unwrap())
    );
    assert_eq!(
        c.metrics_bind_address,
        Some("127.0.0.1:10249".parse().unwrap())
    );
    // kubeadm's nulls are kube-proxy's conntrack defaults.
    let secs = std::time::Duration::from_secs;
    assert_eq!(c.conntrack_max_per_core, Some(32768));
    assert_eq!(c.conntrack_min, Some(131072));
    assert_eq!(c.conntrack_tcp_established_timeout, Some(secs(86400)));
    assert_eq!(c.conntrack_tcp_close_wait_timeout, Some(secs(3600)));
    assert_eq!(c.conntrack_tcp_be_liberal, Some(false));
    // And the sync side, on a manifests directory standing in for the API
    // server, plans from it (userspace: no kernel needed here).
    let manifests = dir.join("m");
    std::fs::create_dir_all(&manifests).unwrap();
    std::fs::write(
        manifests.join("c.yaml"),
        "kind: Node\nmetadata: {name: node-a}\nstatus: {addresses: [{type: InternalIP, address: 127.0.0.1}]}
---
kind: Service
metadata: {name: web, namespace: default}
spec: {clusterIP: 127.0.10.1, ports: [{port: 8080}]}
",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_rvs-proxy"))
        .args([&config, "--hostname-override=node-a", "--dry-run"])
        .arg(format!("--manifests={}", manifests.display()))
        .args(["--dataplane=userspace", "--instance-lock=rvs-cli-test"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout.contains("add service TCP 127.0.10.1:8080 scheduler rr"),
        "{stdout}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
