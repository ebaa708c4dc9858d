//! The allowlist: differences from kube-proxy that are known, each with
//! its reason, in one file (`crates/conformance/allowlist.yaml`).
//!
//! The file is a YAML list of entries:
//!
//! ```yaml
//! - id: go-runtime-metrics          # unique, for reports
//!   status: on-purpose              # or TODO-fix: a divergence to fix
//!   reason: rvs is not a Go program
//!   section: metrics                # glob over the section name, or a list
//!   side: kube-proxy                # kube-proxy | rvs | order | any (default)
//!   line: "go_*"                    # glob over the line (the chain, for order),
//!                                   # or a list of globs
//!   scenarios: ["*"]                # globs over SCENARIO/STEP (default: all)
//! ```
//!
//! Globs know `*` (any run of characters, `/` included) and `?` (one
//! character). A difference is allowed by the first entry matching it.
//! `on-purpose` entries are rvs's deliberate choices; `TODO-fix` ones are
//! divergences found and not fixed yet: the harness passes with them but
//! lists them in every report.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::diff::{Difference, Side};

/// Why a difference is allowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
pub enum Status {
    /// rvs differs on purpose.
    #[serde(rename = "on-purpose")]
    OnPurpose,
    /// A divergence to fix.
    #[serde(rename = "TODO-fix")]
    TodoFix,
}

/// Which side an entry matches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SideFilter {
    /// Any difference.
    #[default]
    Any,
    /// Lines only kube-proxy's node has.
    KubeProxy,
    /// Lines only rvs-proxy's node has.
    Rvs,
    /// Chains in another order.
    Order,
}

/// One glob or a list of globs (a number is read as its text).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Globs {
    /// One glob.
    One(String),
    /// Any of these.
    Many(Vec<String>),
}

impl<'de> Deserialize<'de> for Globs {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde_json::Value;
        fn text(v: &Value) -> Option<String> {
            match v {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                Value::Bool(b) => Some(b.to_string()),
                _ => None,
            }
        }
        let v = Value::deserialize(d)?;
        let bad = || serde::de::Error::custom("expected a glob or a list of globs");
        match &v {
            Value::Array(items) => items
                .iter()
                .map(|i| text(i).ok_or_else(bad))
                .collect::<Result<_, _>>()
                .map(Globs::Many),
            other => text(other).map(Globs::One).ok_or_else(bad),
        }
    }
}

impl Globs {
    /// Whether any glob matches `text`.
    pub fn matches(&self, text: &str) -> bool {
        match self {
            Globs::One(g) => glob(g, text),
            Globs::Many(gs) => gs.iter().any(|g| glob(g, text)),
        }
    }
}

/// One allowed difference.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// Unique name.
    pub id: String,
    /// On purpose, or to fix.
    pub status: Status,
    /// Why.
    pub reason: String,
    /// Globs over the section (one, or a list of which any may match).
    pub section: Globs,
    /// Which side.
    #[serde(default)]
    pub side: SideFilter,
    /// Globs over the line (one, or a list of which any may match).
    pub line: Globs,
    /// Globs over `SCENARIO/STEP`; empty means every step.
    #[serde(default)]
    pub scenarios: Vec<String>,
}

impl Entry {
    /// Whether the entry allows `d`, seen at `step` (`SCENARIO/STEP`).
    pub fn matches(&self, step: &str, d: &Difference) -> bool {
        let side = match self.side {
            SideFilter::Any => true,
            SideFilter::KubeProxy => d.side == Side::KubeProxy,
            SideFilter::Rvs => d.side == Side::Rvs,
            SideFilter::Order => d.side == Side::Order,
        };
        side && self.section.matches(&d.section)
            && self.line.matches(&d.line)
            && (self.scenarios.is_empty() || self.scenarios.iter().any(|g| glob(g, step)))
    }
}

/// Errors reading the allowlist.
#[derive(Debug, thiserror::Error)]
pub enum AllowlistError {
    /// The file could not be read.
    #[error("read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The file is malformed.
    #[error("{origin}: {message}")]
    Invalid {
        /// The file.
        origin: String,
        /// What is wrong.
        message: String,
    },
}

/// The allowlist's entries, in file order.
#[derive(Clone, Debug, Default)]
pub struct Allowlist {
    /// The entries.
    pub entries: Vec<Entry>,
}

impl Allowlist {
    /// The allowlist shipped with this crate.
    pub fn builtin_path() -> PathBuf {
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/allowlist.yaml"))
    }

    /// Parses allowlist text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Allowlist, AllowlistError> {
        let invalid = |message: String| AllowlistError::Invalid {
            origin: origin.to_owned(),
            message,
        };
        let options = serde_saphyr::options! {
            strict_booleans: true,
            duplicate_keys: serde_saphyr::DuplicateKeyPolicy::Error,
        };
        let entries: Option<Vec<Entry>> = serde_saphyr::from_str_with_options(text, options)
            .map_err(|e| invalid(e.to_string()))?;
        let entries = entries.unwrap_or_default();
        let mut ids = std::collections::BTreeSet::new();
        for e in &entries {
            if !ids.insert(e.id.as_str()) {
                return Err(invalid(format!("two entries have the id {:?}", e.id)));
            }
            if e.reason.trim().is_empty() {
                return Err(invalid(format!("entry {:?} gives no reason", e.id)));
            }
        }
        Ok(Allowlist { entries })
    }

    /// Reads the allowlist file at `path`.
    pub fn load(path: &Path) -> Result<Allowlist, AllowlistError> {
        let text = std::fs::read_to_string(path).map_err(|source| AllowlistError::Read {
            path: path.to_owned(),
            source,
        })?;
        Allowlist::parse(&text, &path.display().to_string())
    }

    /// The first entry allowing `d` at `step` (`SCENARIO/STEP`).
    pub fn find(&self, step: &str, d: &Difference) -> Option<&Entry> {
        self.entries.iter().find(|e| e.matches(step, d))
    }
}

/// Whether `text` matches the glob `pattern` (`*` and `?`).
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("go_*", "go_gc_duration_seconds"));
        assert!(glob("*", ""));
        assert!(glob("a*b*c", "axxbyyc"));
        assert!(!glob("a*b*c", "axxbyy"));
        assert!(glob("hcnp/*", "hcnp/30000"));
        assert!(glob("?-*", "+-x"));
        assert!(!glob("abc", "abcd"));
    }

    #[test]
    fn entries_match_section_side_line_and_step() {
        let list = Allowlist::parse(
            r#"
- id: go
  status: on-purpose
  reason: not Go
  section: metrics
  side: kube-proxy
  line: "go_*"
- id: several
  status: on-purpose
  reason: lists
  section: metrics
  line: [a_*, b_*, 200]
- id: mh
  status: TODO-fix
  reason: issue 16 item 4
  section: ipvs
  line: "* -b mh-port"
  scenarios: ["scheduler-mh/*"]
"#,
            "test",
        )
        .unwrap();
        let d = |section: &str, side, line: &str| Difference {
            section: section.into(),
            side,
            line: line.into(),
            detail: vec![],
        };
        let go = d("metrics", Side::KubeProxy, "go_goroutines");
        assert_eq!(list.find("x/y", &go).map(|e| e.id.as_str()), Some("go"));
        assert!(
            list.find("x/y", &d("metrics", Side::Rvs, "go_goroutines"))
                .is_none()
        );
        let mh = d(
            "ipvs",
            Side::KubeProxy,
            "-A -t 10.96.0.1:80 -s mh -b mh-port",
        );
        assert_eq!(
            list.find("scheduler-mh/create", &mh).map(|e| e.status),
            Some(Status::TodoFix)
        );
        assert!(list.find("other/create", &mh).is_none());
    }

    #[test]
    fn entries_need_a_reason_and_a_unique_id() {
        let e = Allowlist::parse(
            "- {id: a, status: on-purpose, reason: ' ', section: x, line: y}",
            "t",
        );
        assert!(e.unwrap_err().to_string().contains("no reason"));
        let e = Allowlist::parse(
            "- {id: a, status: on-purpose, reason: r, section: x, line: y}\n\
             - {id: a, status: TODO-fix, reason: r, section: x, line: y}",
            "t",
        );
        assert!(e.unwrap_err().to_string().contains("two entries"));
        assert!(Allowlist::parse("", "t").unwrap().entries.is_empty());
    }
}
