//! Test data kept as files.
//!
//! This module owns two kinds:
//!
//! * The hex fixture format: messages a real kernel sent, one message a
//!   line as lowercase hex, with `#` comment lines saying where they came
//!   from. Codec tests read them ([`read_hex`]); the tests that capture
//!   them in the VM or a network namespace rewrite them ([`write_hex`])
//!   when asked to. The files stay beside the crate they test.
//! * The Kubernetes manifests of the end-to-end scenarios, one directory
//!   of YAML files per scenario under `crates/testrig/fixtures/manifests/`
//!   ([`manifests`]). A file may be a template with `${NAME}` placeholders
//!   for the values its test chooses ([`fill`]).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::RigError;

/// The messages in hex fixture text: one per line that is neither empty
/// nor a `#` comment.
pub fn parse_hex(text: &str) -> Result<Vec<Vec<u8>>, RigError> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.is_empty() && !line.starts_with('#'))
        .map(|(index, line)| {
            from_hex(line.trim_end())
                .ok_or_else(|| RigError::Fixture(format!("line {}: not hex: {line}", index + 1)))
        })
        .collect()
}

/// The messages of the hex fixture file at `path` (see [`parse_hex`]).
pub fn read_hex(path: impl AsRef<Path>) -> Result<Vec<Vec<u8>>, RigError> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path)
        .map_err(RigError::io(format!("read fixture {}", path.display())))?;
    parse_hex(&text).map_err(|err| RigError::Fixture(format!("{}: {err}", path.display())))
}

/// Writes `messages` to `path` as a hex fixture file, after `comment`
/// (each of its lines becomes a `# ` line).
pub fn write_hex(
    path: impl AsRef<Path>,
    comment: &str,
    messages: &[Vec<u8>],
) -> Result<(), RigError> {
    let path = path.as_ref();
    let mut text = String::new();
    for line in comment.lines() {
        let _ = writeln!(text, "# {line}");
    }
    for message in messages {
        text.push_str(&to_hex(message));
        text.push('\n');
    }
    std::fs::write(path, text).map_err(RigError::io(format!("write fixture {}", path.display())))
}

/// `bytes` as lowercase hex, two digits a byte.
pub fn to_hex(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(text, "{byte:02x}");
    }
    text
}

/// The bytes of a hex string, or `None` when it is not one.
pub fn from_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The directory of the manifests of end-to-end scenario `scenario`.
pub fn manifests_dir(scenario: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/manifests")
        .join(scenario)
}

/// The manifest files of end-to-end scenario `scenario`: each file's name
/// and text, sorted by name.
pub fn manifests(scenario: &str) -> Result<Vec<(String, String)>, RigError> {
    let dir = manifests_dir(scenario);
    let entries =
        std::fs::read_dir(&dir).map_err(RigError::io(format!("list {}", dir.display())))?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(RigError::io(format!("list {}", dir.display())))?
            .path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if path.is_file() && !name.starts_with('.') {
            let text = std::fs::read_to_string(&path)
                .map_err(RigError::io(format!("read {}", path.display())))?;
            files.push((name.to_owned(), text));
        }
    }
    if files.is_empty() {
        return Err(RigError::Fixture(format!(
            "no manifests in {}",
            dir.display()
        )));
    }
    files.sort();
    Ok(files)
}

/// `template` with every `${NAME}` replaced by the value of `NAME` in
/// `values`. A placeholder without a value is an error, so a template and
/// its test cannot drift apart unnoticed.
pub fn fill(template: &str, values: &[(&str, &str)]) -> Result<String, RigError> {
    let mut text = template.to_owned();
    for (name, value) in values {
        text = text.replace(&format!("${{{name}}}"), value);
    }
    match text.find("${") {
        Some(at) => Err(RigError::Fixture(format!(
            "no value for the placeholder at: {}",
            text.get(at..)
                .unwrap_or_default()
                .lines()
                .next()
                .unwrap_or_default()
        ))),
        None => Ok(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scenario_has_manifests() {
        let Ok(entries) = std::fs::read_dir(manifests_dir("")) else {
            panic!("no fixtures/manifests directory");
        };
        let mut scenarios = 0;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let files = manifests(&name);
            assert!(
                files.as_ref().is_ok_and(|f| !f.is_empty()),
                "{name}: {files:?}"
            );
            scenarios += 1;
        }
        assert!(scenarios >= 5, "{scenarios}");
        assert!(manifests("no-such-scenario").is_err());
    }

    #[test]
    fn templates_are_filled_and_left_over_placeholders_refused() {
        let filled = fill("a: ${A}\nb: [${B}, ${A}]\n", &[("A", "1"), ("B", "x")]);
        assert_eq!(filled.ok().as_deref(), Some("a: 1\nb: [x, 1]\n"));
        let err = fill("a: ${A}\nb: ${B}\n", &[("A", "1")]).err();
        assert_eq!(
            err.map(|e| e.to_string()).as_deref(),
            Some("no value for the placeholder at: ${B}")
        );
    }

    #[test]
    fn comments_and_blank_lines_are_skipped() {
        let text = "# a capture\n\n0a0B\n# more\nff\n";
        assert_eq!(
            parse_hex(text).ok(),
            Some(vec![vec![0x0a, 0x0b], vec![0xff]])
        );
    }

    #[test]
    fn bad_lines_are_named() {
        let err = parse_hex("# c\n0a\nxyz\n").err().map(|e| e.to_string());
        assert_eq!(err.as_deref(), Some("line 3: not hex: xyz"));
        assert!(parse_hex("abc\n").is_err(), "odd length");
        assert!(parse_hex("é0\n").is_err(), "not ASCII");
    }

    #[test]
    fn written_files_read_back() {
        let path = std::env::temp_dir().join(format!("rvs-fixture-{}.hex", std::process::id()));
        let messages = vec![vec![0, 1, 0xab], vec![0xff; 3]];
        assert!(write_hex(&path, "one\ntwo", &messages).is_ok());
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        assert_eq!(text, "# one\n# two\n0001ab\nffffff\n");
        assert_eq!(read_hex(&path).ok(), Some(messages));
        let _ = std::fs::remove_file(&path);
    }
}
