//! What a run found: each step's differences, classified against the
//! allowlist, and the text report.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use crate::allowlist::{Allowlist, Status};
use crate::diff::Difference;
use crate::state::State;

/// How one difference was judged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// No allowlist entry allows it: the run fails.
    Unexpected,
    /// An allowlist entry allows it.
    Allowed {
        /// The entry's id.
        id: String,
        /// The entry's status.
        status: Status,
    },
}

/// What kind of step a compared step was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepKind {
    /// The state after boot, before the batch's first scenario.
    Boot,
    /// A scenario's step.
    Scenario,
}

/// One compared step.
#[derive(Clone, Debug)]
pub struct StepOutcome {
    /// `SCENARIO/STEP` (`SCENARIO/(boot)` for the boot).
    pub label: String,
    /// What kind of step.
    pub kind: StepKind,
    /// The batch it ran in (index into [`Report::batches`]).
    pub batch: usize,
    /// kube-proxy's node.
    pub kube: State,
    /// rvs-proxy's node.
    pub rvs: State,
    /// The differences and how each was judged.
    pub differences: Vec<(Difference, Verdict)>,
}

/// One pair of VM boots.
#[derive(Clone, Debug, Default)]
pub struct BatchOutcome {
    /// The scenarios it ran, in order.
    pub scenarios: Vec<String>,
    /// The proxies' command-line flags (without the harness's own).
    pub flags: Vec<String>,
    /// Wall time from boot to power-off.
    pub elapsed: Duration,
    /// The end of kube-proxy's log (errors, warnings, last lines).
    pub kube_log: String,
    /// The end of rvs-proxy's log.
    pub rvs_log: String,
}

/// A whole run.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Every compared step, in order.
    pub steps: Vec<StepOutcome>,
    /// Every batch.
    pub batches: Vec<BatchOutcome>,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Allowlist entry ids in file order, with their status and reason.
    pub entries: Vec<(String, Status, String)>,
}

impl Report {
    /// An empty report for a run against `allowlist`.
    pub fn new(allowlist: &Allowlist) -> Report {
        Report {
            entries: allowlist
                .entries
                .iter()
                .map(|e| (e.id.clone(), e.status, e.reason.clone()))
                .collect(),
            ..Report::default()
        }
    }

    /// Judges `differences` at `label` against `allowlist`.
    pub fn classify(
        allowlist: &Allowlist,
        label: &str,
        differences: Vec<Difference>,
    ) -> Vec<(Difference, Verdict)> {
        differences
            .into_iter()
            .map(|d| {
                let verdict = match allowlist.find(label, &d) {
                    Some(e) => Verdict::Allowed {
                        id: e.id.clone(),
                        status: e.status,
                    },
                    None => Verdict::Unexpected,
                };
                (d, verdict)
            })
            .collect()
    }

    /// Whether no difference was unexpected.
    pub fn passed(&self) -> bool {
        self.unexpected_count() == 0
    }

    /// How many differences no entry allowed.
    pub fn unexpected_count(&self) -> usize {
        self.steps
            .iter()
            .flat_map(|s| &s.differences)
            .filter(|(_, v)| *v == Verdict::Unexpected)
            .count()
    }

    /// Scenario steps compared (boots not counted).
    pub fn scenario_steps(&self) -> usize {
        self.steps
            .iter()
            .filter(|s| s.kind == StepKind::Scenario)
            .count()
    }

    /// Labels of the steps with unexpected differences.
    pub fn failing_steps(&self) -> Vec<&str> {
        self.steps
            .iter()
            .filter(|s| s.differences.iter().any(|(_, v)| *v == Verdict::Unexpected))
            .map(|s| s.label.as_str())
            .collect()
    }

    /// The report as text: summary, unexpected differences (with the
    /// proxies' logs of their batches), TODO-fix divergences, on-purpose
    /// counts and unused entries.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let all: Vec<(&StepOutcome, &Difference, &Verdict)> = self
            .steps
            .iter()
            .flat_map(|s| s.differences.iter().map(move |(d, v)| (s, d, v)))
            .collect();
        let mut by_entry: BTreeMap<&str, Vec<(&str, &Difference)>> = BTreeMap::new();
        for (s, d, v) in &all {
            if let Verdict::Allowed { id, .. } = v {
                by_entry
                    .entry(id.as_str())
                    .or_default()
                    .push((s.label.as_str(), *d));
            }
        }
        let scenarios: std::collections::BTreeSet<&str> = self
            .batches
            .iter()
            .flat_map(|b| b.scenarios.iter().map(String::as_str))
            .collect();
        let _ = writeln!(
            out,
            "rvs-conformance: {} scenarios, {} scenario steps ({} compared states with the boots) \
             in {} batches, {:.0?}",
            scenarios.len(),
            self.scenario_steps(),
            self.steps.len(),
            self.batches.len(),
            self.elapsed
        );
        let _ = writeln!(out, "{}", self.timing());
        let count = |status: Status| {
            all.iter()
                .filter(|(_, _, v)| matches!(v, Verdict::Allowed { status: s, .. } if *s == status))
                .count()
        };
        let _ = writeln!(
            out,
            "differences: {} unexpected, {} TODO-fix, {} on purpose",
            self.unexpected_count(),
            count(Status::TodoFix),
            count(Status::OnPurpose)
        );

        if !self.passed() {
            let _ = writeln!(
                out,
                "\nUNEXPECTED DIFFERENCES (- only kube-proxy's node, + only rvs-proxy's, ~ rule order):"
            );
            let mut batches = std::collections::BTreeSet::new();
            for s in &self.steps {
                let bad: Vec<&Difference> = s
                    .differences
                    .iter()
                    .filter(|(_, v)| *v == Verdict::Unexpected)
                    .map(|(d, _)| d)
                    .collect();
                if bad.is_empty() {
                    continue;
                }
                batches.insert(s.batch);
                let _ = writeln!(out, "\n== {} (batch {})", s.label, s.batch + 1);
                let mut section = "";
                for d in bad {
                    if d.section != section {
                        section = &d.section;
                        let _ = writeln!(out, "   {section}:");
                    }
                    let _ = writeln!(out, "     {d}");
                }
            }
            for b in batches {
                let Some(batch) = self.batches.get(b) else {
                    continue;
                };
                let _ = writeln!(
                    out,
                    "\n-- batch {} ({}), flags {:?}\n-- kube-proxy log:\n{}\n-- rvs-proxy log:\n{}",
                    b + 1,
                    batch.scenarios.join(", "),
                    batch.flags,
                    indent(&batch.kube_log),
                    indent(&batch.rvs_log)
                );
            }
        }

        let todo: Vec<&(String, Status, String)> = self
            .entries
            .iter()
            .filter(|(id, st, _)| *st == Status::TodoFix && by_entry.contains_key(id.as_str()))
            .collect();
        if !todo.is_empty() {
            let _ = writeln!(out, "\nTODO-fix: known divergences, allowed for now:");
            for (id, _, reason) in todo {
                let seen = &by_entry[id.as_str()];
                let _ = writeln!(out, "  {id} ({} differences): {reason}", seen.len());
                let mut shown = std::collections::BTreeSet::new();
                for (label, d) in seen {
                    if shown.len() >= 8 {
                        let _ = writeln!(out, "      …");
                        break;
                    }
                    if shown.insert((d.section.as_str(), d.side, d.line.as_str())) {
                        let _ = writeln!(out, "      {label}: {}: {d}", d.section);
                    }
                }
            }
        }
        let purpose: Vec<String> = self
            .entries
            .iter()
            .filter(|(id, st, _)| *st == Status::OnPurpose && by_entry.contains_key(id.as_str()))
            .map(|(id, _, _)| format!("{id} ×{}", by_entry[id.as_str()].len()))
            .collect();
        if !purpose.is_empty() {
            let _ = writeln!(out, "\non purpose: {}", purpose.join(", "));
        }
        let unused: Vec<&str> = self
            .entries
            .iter()
            .filter(|(id, _, _)| !by_entry.contains_key(id.as_str()))
            .map(|(id, _, _)| id.as_str())
            .collect();
        if !unused.is_empty() {
            let _ = writeln!(
                out,
                "allowlist entries no difference needed in this run: {}",
                unused.join(", ")
            );
        }
        out
    }
}

impl Report {
    /// How long steps took to converge on each side, and each batch's
    /// wall time.
    pub fn timing(&self) -> String {
        let secs = |state: &State| {
            state
                .timing
                .split_whitespace()
                .next()
                .and_then(|n| n.parse::<u32>().ok())
        };
        let summary = |pick: &dyn Fn(&StepOutcome) -> &State| {
            let mut v: Vec<u32> = self.steps.iter().filter_map(|s| secs(pick(s))).collect();
            v.sort_unstable();
            match (v.get(v.len() / 2), v.last()) {
                (Some(median), Some(max)) => format!("median {median} s, max {max} s"),
                _ => "-".to_owned(),
            }
        };
        let batches: Vec<String> = self
            .batches
            .iter()
            .map(|b| format!("{:.0?}", b.elapsed))
            .collect();
        format!(
            "convergence: kube-proxy {}, rvs-proxy {}; batches: {}",
            summary(&|s| &s.kube),
            summary(&|s| &s.rvs),
            batches.join(" ")
        )
    }
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("   {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}
