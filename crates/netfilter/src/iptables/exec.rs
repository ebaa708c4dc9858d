//! Running `iptables-restore --noflush` and `iptables-save` for one
//! backend (legacy or nft) and family. Apply is one restore per table:
//! our chains are declared (so flushed) and refilled, and the jump
//! fixups computed from a fresh `iptables-save` are appended, all in the
//! same atomic restore.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::ipset::Family;

use super::IptablesError;
use super::restore::{cleanup_text, jump_fixups};
use super::rules::{RuleSet, Table};

/// Which iptables binaries to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// `iptables-legacy-*` (x_tables).
    Legacy,
    /// `iptables-nft-*` (nf_tables).
    Nft,
    /// Whatever `iptables-*` the system's alternatives point to.
    System,
}

/// An iptables backend for one family.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Iptables {
    /// The backend.
    pub backend: Backend,
    /// The family (`iptables` or `ip6tables`).
    pub family: Family,
}

impl Iptables {
    /// The backend's tools for `family`.
    pub fn new(backend: Backend, family: Family) -> Iptables {
        Iptables { backend, family }
    }

    fn program(&self, tool: &str) -> String {
        let base = match self.family {
            Family::Inet => "iptables",
            Family::Inet6 => "ip6tables",
        };
        match self.backend {
            Backend::Legacy => format!("{base}-legacy-{tool}"),
            Backend::Nft => format!("{base}-nft-{tool}"),
            Backend::System => format!("{base}-{tool}"),
        }
    }

    fn run(
        &self,
        tool: &str,
        args: &[&str],
        table: Table,
        input: Option<&str>,
    ) -> Result<String, IptablesError> {
        let program = self.program(tool);
        let mut child = Command::new(&program)
            .args(args)
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|error| IptablesError::Spawn {
                program: program.clone(),
                error,
            })?;
        if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
            stdin
                .write_all(input.as_bytes())
                .map_err(|error| IptablesError::Spawn {
                    program: program.clone(),
                    error,
                })?;
        }
        let output = child
            .wait_with_output()
            .map_err(|error| IptablesError::Spawn {
                program: program.clone(),
                error,
            })?;
        if !output.status.success() {
            return Err(IptablesError::Failed {
                program,
                table: table.name(),
                status: output.status.to_string(),
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Whether this family's iptables works here: kube-proxy's
    /// `Present()` lists the nat table's POSTROUTING chain and runs a
    /// family without it not at all (`platformCheckSupported`); this
    /// reads the nat table with `iptables-save -t nat`.
    pub fn present(&self) -> bool {
        self.save(Table::Nat).is_ok()
    }

    /// `iptables-save -t TABLE`.
    pub fn save(&self, table: Table) -> Result<String, IptablesError> {
        self.run("save", &["-t", table.name()], table, None)
    }

    /// `iptables-restore -w --noflush` with `text`.
    pub fn restore(&self, table: Table, text: &str) -> Result<(), IptablesError> {
        self.run("restore", &["-w", "--noflush"], table, Some(text))
            .map(drop)
    }

    /// Applies `rules` (which must be of this family): one restore per
    /// table, jumps from built-in chains ensured exactly once. The ipsets
    /// the rules name must exist.
    pub fn apply(&self, rules: &RuleSet) -> Result<(), IptablesError> {
        self.apply_tables(rules, true)
    }

    /// Like [`Iptables::apply`], but without reading the tables first
    /// when `ensure_jumps` is false: our chains are rewritten and the
    /// jumps into them are taken to be in place from an earlier apply.
    /// Half the processes; for updates between full applies.
    pub fn apply_tables(&self, rules: &RuleSet, ensure_jumps: bool) -> Result<(), IptablesError> {
        if rules.family != self.family {
            return Err(IptablesError::Config {
                field: "family",
                reason: format!(
                    "{} rules given to {}",
                    rules.family.name(),
                    self.program("restore")
                ),
            });
        }
        for table in Table::ALL {
            let fixups = if ensure_jumps {
                jump_fixups(&self.save(table)?, table)
            } else {
                Vec::new()
            };
            self.restore(table, &rules.restore_text(table, &fixups))?;
        }
        Ok(())
    }

    /// Removes our jumps and chains (`--cleanup`), leaving every foreign
    /// chain and rule. Returns `(table, chain)` of our chains kept
    /// (flushed) because a foreign chain jumps to them. Run before
    /// destroying the ipsets (the kernel keeps sets referenced by rules).
    pub fn cleanup(&self) -> Result<Vec<(Table, String)>, IptablesError> {
        let mut kept = Vec::new();
        for table in Table::ALL {
            let save = self.save(table)?;
            let cleanup = cleanup_text(&save, table);
            if let Some(text) = &cleanup.text {
                self.restore(table, text)?;
            }
            kept.extend(cleanup.kept.into_iter().map(|c| (table, c)));
        }
        Ok(kept)
    }
}
