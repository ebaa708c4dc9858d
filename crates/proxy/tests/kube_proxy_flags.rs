//! `rvs_proxy::flags` lists exactly the flags `kube-proxy --help`
//! prints: against the committed help text of v1.37.2, and, when
//! `K8S_BIN` names a directory holding that kube-proxy (see
//! `scripts/k8s-binaries.sh`), the committed text against the live one,
//! so the fixture cannot go stale silently.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::collections::BTreeSet;

use rvs_proxy::flags::{Handling, KUBE_PROXY_FLAGS, KUBE_PROXY_VERSION, lookup, parse_help};

const FIXTURE: &str = include_str!("fixtures/kube-proxy-v1.37.2-help.txt");

#[test]
fn the_table_lists_every_flag_of_the_help_text_and_no_other() {
    let help = parse_help(FIXTURE);
    assert_eq!(
        help.len(),
        55,
        "flag lines of kube-proxy {KUBE_PROXY_VERSION} --help"
    );
    for flag in &help {
        let spec = lookup(&flag.name)
            .unwrap_or_else(|| panic!("--{} is not in rvs_proxy::flags", flag.name));
        assert_eq!(spec.value_type, flag.value_type, "--{}", flag.name);
        assert_eq!(spec.short, flag.short, "--{}", flag.name);
        assert!(!spec.hidden, "--{} is printed", flag.name);
        assert!(!spec.sample.is_empty(), "--{}", flag.name);
    }
    let printed: BTreeSet<&str> = help.iter().map(|f| f.name.as_str()).collect();
    for spec in KUBE_PROXY_FLAGS {
        assert_eq!(
            printed.contains(spec.name),
            !spec.hidden,
            "--{}: in the help text exactly when not hidden",
            spec.name
        );
    }
    let names: BTreeSet<&str> = KUBE_PROXY_FLAGS.iter().map(|f| f.name).collect();
    assert_eq!(names.len(), KUBE_PROXY_FLAGS.len(), "no flag twice");
}

/// What rvs-proxy leaves undone, by name: a flag moves out of this list
/// when it is implemented (the seven `--conntrack-*` ones did).
#[test]
fn the_unimplemented_flags_are_these() {
    let not: Vec<&str> = KUBE_PROXY_FLAGS
        .iter()
        .filter(|f| matches!(f.handling, Handling::NotImplemented(_)))
        .map(|f| f.name)
        .collect();
    assert_eq!(
        not,
        [
            "config-sync-period",
            "feature-gates",
            "kube-api-burst",
            "kube-api-content-type",
            "kube-api-qps",
            "log-flush-frequency",
            "log-json-info-buffer-size",
            "log-json-split-stream",
            "log-text-info-buffer-size",
            "log-text-split-stream",
            "logging-format",
            "oom-score-adj",
            "profiling",
            "show-hidden-metrics-for-version",
            "vmodule",
            "healthz-port",
            "metrics-port",
        ]
    );
    for name in [
        "conntrack-max-per-core",
        "conntrack-min",
        "conntrack-tcp-be-liberal",
        "conntrack-tcp-timeout-close-wait",
        "conntrack-tcp-timeout-established",
        "conntrack-udp-timeout",
        "conntrack-udp-timeout-stream",
    ] {
        let flag = lookup(name).unwrap();
        assert_eq!(flag.handling, Handling::Implemented, "--{name}");
        assert!(!flag.with_config, "--{name}: the file's value wins");
    }
}

#[test]
fn the_fixture_is_what_kube_proxy_prints() {
    let Some(dir) = std::env::var_os("K8S_BIN") else {
        eprintln!("skipped: K8S_BIN is not set (K8S_BIN=$(scripts/k8s-binaries.sh | tail -n1))");
        return;
    };
    let kube_proxy = std::path::Path::new(&dir).join("kube-proxy");
    let version = std::process::Command::new(&kube_proxy)
        .arg("--version")
        .output()
        .expect("run kube-proxy --version");
    let version = String::from_utf8_lossy(&version.stdout);
    assert!(
        version.trim().ends_with(KUBE_PROXY_VERSION),
        "{} is {version}; the fixture is of {KUBE_PROXY_VERSION}",
        kube_proxy.display()
    );
    let out = std::process::Command::new(&kube_proxy)
        .arg("--help")
        .output()
        .expect("run kube-proxy --help");
    assert!(out.status.success(), "{out:?}");
    let live = String::from_utf8(out.stdout).expect("UTF-8 help");
    assert_eq!(
        parse_help(&live),
        parse_help(FIXTURE),
        "kube-proxy's flags changed: update the fixture and rvs_proxy::flags"
    );
    assert!(
        live == FIXTURE,
        "kube-proxy --help differs from the fixture in its text"
    );
}
