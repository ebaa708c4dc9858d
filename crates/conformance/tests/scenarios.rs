//! The shipped scenarios and the allowlist parse, and say what they must:
//! unique names, a reason for every allowed difference, and enough steps
//! for CI's budget (with the generated ones, see
//! `crates/proxy-bin/tests/conformance_vm.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use rvs_conformance::scenario::{self, Scenario};
use rvs_conformance::{Allowlist, generate};

#[test]
fn the_shipped_scenarios_parse_and_have_unique_names() {
    let scenarios = scenario::load_dir(&scenario::builtin_dir()).unwrap();
    assert!(scenarios.len() >= 25, "{} scenarios", scenarios.len());
    scenario::check_unique(&scenarios).unwrap();
    for s in &scenarios {
        assert!(!s.description.is_empty(), "{} has no description", s.name);
        assert!(
            !s.name.starts_with("generated-"),
            "{}: that prefix is the generator's",
            s.name
        );
    }
}

#[test]
fn the_allowlist_parses_and_every_entry_has_a_reason() {
    let list = Allowlist::load(&Allowlist::builtin_path()).unwrap();
    for e in &list.entries {
        assert!(e.reason.len() > 20, "{}: say why", e.id);
    }
}

#[test]
fn a_scenario_directory_is_its_yaml_files() {
    let dir = std::env::temp_dir().join(format!("rvs-conformance-extra-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("mine.yaml"),
        "description: x\nsteps: [{delete: [service/none]}]\n",
    )
    .unwrap();
    std::fs::write(dir.join("notes.txt"), "not a scenario").unwrap();
    let loaded: Vec<Scenario> = scenario::load_path(&dir).unwrap();
    assert_eq!(loaded.len(), 1);
    assert_eq!(loaded[0].name, "mine");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_generated_scenario_round_trips_through_its_file_format() {
    let s = generate::generate(0x5eed, 10, true);
    let text = s.to_yaml();
    let back = Scenario::parse(&text, "generated.yaml").unwrap();
    assert_eq!(back, s);
}
