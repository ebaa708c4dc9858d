//! kube-proxy's IPVS-mode iptables rules.
//!
//! * [`rules`]: the rule set as a pure function of the desired ipsets and
//!   the options ([`render`]);
//! * [`restore`]: pure text work on `iptables-save` output — jump rules
//!   from built-in chains ensured exactly once, and the `--cleanup`
//!   input that removes only our jumps and chains;
//! * [`local`]: `--detect-local-mode` and its flags, per family;
//! * [`exec`]: running `iptables-restore --noflush` / `iptables-save` of
//!   a chosen backend (legacy or nft) and family, once per table.

pub mod exec;
pub mod local;
pub mod restore;
pub mod rules;

pub use exec::{Backend, Iptables};
pub use local::{DetectLocalMode, LocalDetectError};
pub use rules::{LocalDetect, RuleSet, RulesConfig, RulesInput, Table, render, render_input};

/// Errors of iptables programming.
#[derive(Debug, thiserror::Error)]
pub enum IptablesError {
    /// An option cannot be turned into rules.
    #[error("iptables rules: invalid {field}: {reason}")]
    Config {
        /// The option.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// A program could not be started.
    #[error("cannot run {program}: {error}")]
    Spawn {
        /// The program.
        program: String,
        /// The operating system's error (in the message, so not a
        /// `source()` as well).
        error: std::io::Error,
    },
    /// A program ran and failed.
    #[error("{program} (table {table}) failed ({status}): {stderr}")]
    Failed {
        /// The program.
        program: String,
        /// The table.
        table: &'static str,
        /// Its exit status.
        status: String,
        /// What it wrote to stderr.
        stderr: String,
    },
}
