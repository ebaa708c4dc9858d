//! Comparing two nodes' states: which lines only one of them has, and
//! which iptables chains hold the same rules in another order.

use std::collections::BTreeMap;
use std::fmt;

use crate::state::State;

/// Which node a differing line is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Side {
    /// Only kube-proxy's node has the line (`-` in reports).
    KubeProxy,
    /// Only rvs-proxy's node has the line (`+` in reports).
    Rvs,
    /// Both have the chain's common rules, in another order (`~`).
    Order,
}

impl Side {
    /// The mark in reports: `-`, `+` or `~`.
    pub fn mark(self) -> char {
        match self {
            Side::KubeProxy => '-',
            Side::Rvs => '+',
            Side::Order => '~',
        }
    }

    /// The name allowlist entries use: `kube-proxy`, `rvs` or `order`.
    pub fn name(self) -> &'static str {
        match self {
            Side::KubeProxy => "kube-proxy",
            Side::Rvs => "rvs",
            Side::Order => "order",
        }
    }
}

/// One difference between the nodes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Difference {
    /// The section (see [`crate::state`]).
    pub section: String,
    /// Which side has it.
    pub side: Side,
    /// The line; for [`Side::Order`], the chain's name.
    pub line: String,
    /// For [`Side::Order`]: the chain's common rules on each side.
    pub detail: Vec<String>,
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.side {
            Side::Order => {
                write!(
                    f,
                    "~ chain {} holds the same rules in another order:",
                    self.line
                )?;
                for d in &self.detail {
                    write!(f, "\n      {d}")?;
                }
                Ok(())
            }
            side => write!(f, "{} {}", side.mark(), self.line),
        }
    }
}

/// Counts of each line.
fn counts(lines: &[String]) -> BTreeMap<&str, usize> {
    let mut m = BTreeMap::new();
    for l in lines {
        *m.entry(l.as_str()).or_insert(0) += 1;
    }
    m
}

/// The differences between kube-proxy's state and rvs-proxy's, by
/// section, kube-proxy-only lines before rvs-only ones.
pub fn compare(kube: &State, rvs: &State) -> Vec<Difference> {
    let empty = Vec::new();
    let mut out = Vec::new();
    let names: std::collections::BTreeSet<&String> =
        kube.sections.keys().chain(rvs.sections.keys()).collect();
    for name in names {
        let k = kube.sections.get(name).map(|s| &s.lines).unwrap_or(&empty);
        let r = rvs.sections.get(name).map(|s| &s.lines).unwrap_or(&empty);
        let (kc, rc) = (counts(k), counts(r));
        let mut push = |side, line: &str, n: usize| {
            for _ in 0..n {
                out.push(Difference {
                    section: name.clone(),
                    side,
                    line: line.to_owned(),
                    detail: Vec::new(),
                });
            }
        };
        // In the section's own order, so that rules read as a chain.
        let mut done = std::collections::BTreeSet::new();
        for line in k {
            if done.insert(line.as_str()) {
                let n =
                    kc[line.as_str()].saturating_sub(rc.get(line.as_str()).copied().unwrap_or(0));
                push(Side::KubeProxy, line, n);
            }
        }
        done.clear();
        for line in r {
            if done.insert(line.as_str()) {
                let n =
                    rc[line.as_str()].saturating_sub(kc.get(line.as_str()).copied().unwrap_or(0));
                push(Side::Rvs, line, n);
            }
        }
        let ordered = kube.sections.get(name).is_some_and(|s| s.ordered)
            || rvs.sections.get(name).is_some_and(|s| s.ordered);
        if ordered {
            out.extend(order_differences(name, k, r));
        }
    }
    out
}

/// Chains whose rules both sides have, in another order.
fn order_differences(section: &str, kube: &[String], rvs: &[String]) -> Vec<Difference> {
    let chain_of = |l: &String| {
        l.strip_prefix("-A ")
            .and_then(|r| r.split_whitespace().next())
            .map(str::to_owned)
    };
    let by_chain = |lines: &[String]| {
        let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for l in lines {
            if let Some(c) = chain_of(l) {
                m.entry(c).or_default().push(l.clone());
            }
        }
        m
    };
    let (k, r) = (by_chain(kube), by_chain(rvs));
    let mut out = Vec::new();
    for (chain, krules) in &k {
        let Some(rrules) = r.get(chain) else { continue };
        let common = |a: &[String], b: &[String]| -> Vec<String> {
            let mut left = counts(b);
            a.iter()
                .filter(|l| match left.get_mut(l.as_str()) {
                    Some(n) if *n > 0 => {
                        *n -= 1;
                        true
                    }
                    _ => false,
                })
                .cloned()
                .collect()
        };
        let (kc, rc) = (common(krules, rrules), common(rrules, krules));
        if kc != rc {
            let mut detail = vec!["kube-proxy:".to_owned()];
            detail.extend(kc.iter().map(|l| format!("  {l}")));
            detail.push("rvs:".to_owned());
            detail.extend(rc.iter().map(|l| format!("  {l}")));
            out.push(Difference {
                section: section.to_owned(),
                side: Side::Order,
                line: chain.clone(),
                detail,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Section;

    fn state(section: &str, ordered: bool, lines: &[&str]) -> State {
        let mut s = State::default();
        s.sections.insert(
            section.into(),
            Section {
                lines: lines.iter().map(|l| l.to_string()).collect(),
                ordered,
            },
        );
        s
    }

    #[test]
    fn lines_only_one_side_has_are_reported() {
        let k = state("ipvs", false, &["a", "b", "b"]);
        let r = state("ipvs", false, &["b", "c"]);
        let d: Vec<String> = compare(&k, &r).iter().map(ToString::to_string).collect();
        assert_eq!(d, ["- a", "- b", "+ c"]);
        assert!(compare(&k, &k).is_empty());
    }

    #[test]
    fn a_missing_section_is_all_difference() {
        let k = state("hcnp/30000", false, &["code 200"]);
        let d = compare(&k, &State::default());
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].side, Side::KubeProxy);
    }

    #[test]
    fn rule_order_within_a_chain_matters() {
        let k = state(
            "iptables-nat",
            true,
            &[":X -", "-A X -j A", "-A X -j B", "-A Y -j C"],
        );
        let r = state(
            "iptables-nat",
            true,
            &[":X -", "-A X -j B", "-A X -j A", "-A Y -j C"],
        );
        let d = compare(&k, &r);
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0].side, Side::Order);
        assert_eq!(d[0].line, "X");
        // An extra rule is not an order difference of the others.
        let r = state(
            "iptables-nat",
            true,
            &[":X -", "-A X -j A", "-A X -j N", "-A X -j B", "-A Y -j C"],
        );
        let d = compare(&k, &r);
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0].to_string(), "+ -A X -j N");
    }
}
