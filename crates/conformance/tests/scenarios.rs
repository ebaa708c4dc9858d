//! The shipped scenarios and the allowlist parse, and say what they must:
//! unique names, a reason for every allowed difference, and enough steps
//! for CI's budget (with the generated ones, see
//! `crates/proxy-bin/tests/conformance_vm.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // test code

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

/// The API server refuses node ports and health check node ports outside
/// its range (the default, 30000-32767), which stops the whole run.
#[test]
fn the_shipped_scenarios_node_ports_are_in_range() {
    fn walk(v: &serde_json::Value, what: &str, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, x) in m {
                    if k == "nodePort" || k == "healthCheckNodePort" {
                        let p = x.as_u64().unwrap_or(0);
                        if !(30000..=32767).contains(&p) {
                            out.push(format!("{what}: {k} {x}"));
                        }
                    }
                    walk(x, what, out);
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, what, out)),
            _ => {}
        }
    }
    let mut bad = Vec::new();
    for s in scenario::load_dir(&scenario::builtin_dir()).unwrap() {
        for step in &s.steps {
            for doc in &step.apply {
                walk(doc, &format!("{}/{}", s.name, step.name), &mut bad);
            }
        }
    }
    assert!(bad.is_empty(), "{bad:#?}");
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

/// `RVS_CONFORMANCE_SCENARIOS` as the VM test and the command read it
/// (`scenario::env_paths`, then `load_path` on each): directories and
/// files, colon-separated, empty parts skipped. The variable is set for a
/// child process of this test binary, which runs
/// [`scenarios_named_by_the_environment`] and prints what it loaded.
#[test]
fn extra_scenario_directories_come_from_the_environment() {
    let base = std::env::temp_dir().join(format!("rvs-conformance-env-{}", std::process::id()));
    let (a, b) = (base.join("a"), base.join("b"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    let scenario = "description: x\nsteps: [{delete: [service/none]}]\n";
    std::fs::write(a.join("one.yaml"), scenario).unwrap();
    std::fs::write(b.join("two.yml"), scenario).unwrap();
    std::fs::write(b.join("three.yaml"), scenario).unwrap();
    std::fs::write(base.join("four.yaml"), scenario).unwrap();
    let value = format!(
        "{}:{}::{}",
        a.display(),
        b.display(),
        base.join("four.yaml").display()
    );
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "scenarios_named_by_the_environment",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(scenario::SCENARIOS_ENV, value)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&base);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("loaded from the environment: one, three, two, four\n"),
        "{stdout}"
    );
}

#[test]
#[ignore = "a child of extra_scenario_directories_come_from_the_environment"]
fn scenarios_named_by_the_environment() {
    let mut names = Vec::new();
    for path in scenario::env_paths() {
        names.extend(
            scenario::load_path(&path)
                .unwrap()
                .into_iter()
                .map(|s| s.name),
        );
    }
    println!("loaded from the environment: {}", names.join(", "));
}

#[test]
fn a_generated_scenario_round_trips_through_its_file_format() {
    let s = generate::generate(0x5eed, 10, true);
    let text = s.to_yaml();
    let back = Scenario::parse(&text, "generated.yaml").unwrap();
    assert_eq!(back, s);
}
