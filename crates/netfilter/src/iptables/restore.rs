//! Pure text work on `iptables-save` output: which of our jump rules the
//! built-in chains lack or hold more than once, and the `--cleanup`
//! input that removes our jumps and chains and nothing else.

use super::rules::{CHAINS, JUMPS, Table};

/// The `-A` lines of one table in `iptables-save` output.
fn rules_of(save: &str, table: Table) -> impl Iterator<Item = &str> {
    let header = format!("*{}", table.name());
    save.lines()
        .skip_while(move |l| *l != header)
        .skip(1)
        .take_while(|l| *l != "COMMIT")
        .filter(|l| l.starts_with("-A "))
}

/// The chains declared in one table of `iptables-save` output.
pub fn chains_of(save: &str, table: Table) -> Vec<String> {
    let header = format!("*{}", table.name());
    save.lines()
        .skip_while(|l| *l != header)
        .skip(1)
        .take_while(|l| *l != "COMMIT")
        .filter_map(|l| l.strip_prefix(':'))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// Lines to add to a restore of `table` so that each of our jumps is in
/// its built-in chain exactly once: `-I CHAIN 1 …` for a missing one (in
/// kube-proxy's order, so the resulting order is kube-proxy's), `-D
/// CHAIN …` for each extra copy.
pub fn jump_fixups(save: &str, table: Table) -> Vec<String> {
    let existing: Vec<&str> = rules_of(save, table).collect();
    let mut out = Vec::new();
    for jump in JUMPS.iter().filter(|j| j.table == table) {
        let rule = format!("-A {} {}", jump.from, jump.spec());
        let count = existing.iter().filter(|l| **l == rule).count();
        if count == 0 {
            out.push(format!("-I {} 1 {}", jump.from, jump.spec()));
        }
        for _ in 1..count {
            out.push(format!("-D {} {}", jump.from, jump.spec()));
        }
    }
    out
}

/// The built-in chains of the tables we use.
const BUILTIN: [&str; 5] = ["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"];

/// What `--cleanup` does to one table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cleanup {
    /// The `iptables-restore --noflush` input; `None` when nothing of
    /// ours is there.
    pub text: Option<String>,
    /// Our chains that a foreign chain still jumps to: flushed but kept,
    /// since deleting them would need editing the foreign chain.
    pub kept: Vec<String>,
}

/// The `--cleanup` of `table`, given its `iptables-save` output: rules
/// in built-in chains that jump to our chains are deleted, our chains
/// flushed and deleted. Foreign chains are never edited; an our chain a
/// foreign chain jumps to is only flushed (and reported in
/// [`Cleanup::kept`]).
pub fn cleanup_text(save: &str, table: Table) -> Cleanup {
    let ours: Vec<&str> = CHAINS
        .iter()
        .filter(|(t, _)| *t == table)
        .map(|(_, c)| *c)
        .collect();
    let present: Vec<String> = chains_of(save, table)
        .into_iter()
        .filter(|c| ours.contains(&c.as_str()))
        .collect();
    let mut deletes = Vec::new();
    let mut kept: Vec<String> = Vec::new();
    for rule in rules_of(save, table) {
        let chain = rule.split_whitespace().nth(1).unwrap_or_default();
        let target = rule
            .rsplit_once(" -j ")
            .and_then(|(_, t)| t.split_whitespace().next())
            .unwrap_or_default();
        if !ours.contains(&target) || ours.contains(&chain) {
            continue;
        }
        if BUILTIN.contains(&chain) {
            deletes.push(format!("-D {}", rule.trim_start_matches("-A ")));
        } else if !kept.iter().any(|k| k == target) {
            kept.push(target.to_owned());
        }
    }
    if present.is_empty() && deletes.is_empty() {
        return Cleanup { text: None, kept };
    }
    let mut out = format!("*{}\n", table.name());
    for chain in &present {
        out.push_str(&format!(":{chain} - [0:0]\n"));
    }
    for line in deletes {
        out.push_str(&line);
        out.push('\n');
    }
    for chain in present.iter().filter(|c| !kept.contains(c)) {
        out.push_str(&format!("-X {chain}\n"));
    }
    out.push_str("COMMIT\n");
    Cleanup {
        text: Some(out),
        kept,
    }
}
