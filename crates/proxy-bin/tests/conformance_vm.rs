//! rvs-proxy against the real kube-proxy (`--proxy-mode=ipvs`),
//! differentially: the scenarios shipped in `crates/conformance/scenarios`
//! (and those in `RVS_CONFORMANCE_SCENARIOS`, colon-separated
//! directories), plus generated ones, run through both proxies, each in
//! its own VM on the same kernel and the same kube-apiserver; after every
//! step both nodes' state is compared (see the `rvs-conformance` crate).
//! A difference the allowlist (`crates/conformance/allowlist.yaml`) does
//! not allow fails the test; `TODO-fix` entries pass and are printed.
//!
//! Two sizes. By default (what `.ci/run` does) every shipped scenario
//! and four generated ones of 30 steps run: over 200 steps, asserted;
//! about 40 minutes of TCG on two idle cores. `RVS_CONFORMANCE_SHORT=1`
//! runs only the scenarios sharing the default node's VM boots, with one
//! generated scenario of 10 steps: one pair of boots per lane, for a
//! quick look while working.
//!
//! `RVS_CONFORMANCE_SEED` picks the generated scenarios (default a fixed
//! seed, so CI is repeatable); a failing generated scenario is printed
//! with the command that replays it. `RVS_CONFORMANCE_LANES` sets how many
//! batches run side by side (default 2); `RVS_CONFORMANCE_OUTPUT=DIR`
//! keeps every VM console.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)] // test code

use std::path::PathBuf;

use rvs_conformance::harness::{Harness, lanes_from_env};
use rvs_conformance::{Allowlist, generate, scenario};

const TEST: &str = "rvs_proxy_matches_kube_proxy_step_by_step";

/// The generated scenarios CI runs: IPv4 ones (sharing the default
/// node's boots) and one dual-stack one, with their steps.
const GENERATED_V4: usize = 3;
const GENERATED_DUAL: usize = 1;
const GENERATED_STEPS: usize = 30;
const DEFAULT_SEED: u64 = 0x16;

/// Issue 16's floor for the default (full) run: scenario steps,
/// hand-written and generated.
const MIN_STEPS: usize = 200;
/// The short run's generated scenario.
const SHORT_GENERATED_STEPS: usize = 10;

#[test]
fn rvs_proxy_matches_kube_proxy_step_by_step() {
    let rvs = PathBuf::from(env!("CARGO_BIN_EXE_rvs-proxy"));
    let Some(harness) = Harness::or_skip(TEST, rvs, lanes_from_env()) else {
        return;
    };
    let mut scenarios = scenario::load_dir(&scenario::builtin_dir()).unwrap();
    for path in scenario::env_paths() {
        scenarios.extend(scenario::load_path(&path).unwrap());
    }
    let seed = std::env::var("RVS_CONFORMANCE_SEED")
        .ok()
        .map(|s| match s.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16).unwrap(),
            None => s.parse().unwrap(),
        })
        .unwrap_or(DEFAULT_SEED);
    let full = std::env::var_os("RVS_CONFORMANCE_SHORT").is_none_or(|v| v == "0");
    let steps = if full {
        GENERATED_STEPS
    } else {
        SHORT_GENERATED_STEPS
    };
    if full {
        let seeds = generate::seeds(seed, GENERATED_V4 + GENERATED_DUAL);
        for (i, s) in seeds.into_iter().enumerate() {
            scenarios.push(generate::generate(s, GENERATED_STEPS, i >= GENERATED_V4));
        }
    } else {
        let generated = generate::generate(generate::seeds(seed, 1)[0], steps, false);
        let profile = generated.profile();
        scenarios.retain(|s| s.profile() == profile);
        scenarios.push(generated);
    }
    scenario::check_unique(&scenarios).unwrap();
    let allowlist = Allowlist::load(&Allowlist::builtin_path()).unwrap();
    eprintln!(
        "{TEST}: {} scenarios ({}), generated from seed {seed:#x}",
        scenarios.len(),
        if full {
            "full"
        } else {
            "short (RVS_CONFORMANCE_SHORT)"
        }
    );

    let report = match harness.run(&scenarios, &allowlist, &|line| eprintln!("{line}")) {
        Ok(report) => report,
        Err(e) => {
            let hint = e
                .scenario()
                .and_then(|name| generate::replay_hint(name, steps))
                .map(|hint| format!("\nreplay: {hint}"))
                .unwrap_or_default();
            panic!("{e}{hint}");
        }
    };
    let text = report.render();
    eprintln!("{text}");
    let failing: std::collections::BTreeSet<&str> = report
        .failing_steps()
        .into_iter()
        .filter_map(|label| label.split('/').next())
        .collect();
    let hints: Vec<String> = failing
        .iter()
        .filter_map(|name| generate::replay_hint(name, steps))
        .map(|hint| format!("replay: {hint}"))
        .collect();
    assert!(report.passed(), "{text}\n{}", hints.join("\n"));
    assert!(
        !full || report.scenario_steps() >= MIN_STEPS,
        "only {} scenario steps ran (CI needs {MIN_STEPS})",
        report.scenario_steps()
    );
}
