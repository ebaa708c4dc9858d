//! A writer for the `newc` cpio format the kernel unpacks as initramfs.
//!
//! Hand-written rather than taken from a crate: the format is a fixed
//! 110-byte ASCII header plus padding, and the rig needs exact control over
//! ownership, modes and timestamps (all zeroed for reproducible images) and
//! the ability to append archives, which the kernel overlays in order.

use std::collections::BTreeSet;
use std::io::{self, Write};

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

/// Builds one cpio archive in memory. Parent directories are created on
/// demand, each once.
#[derive(Debug, Default)]
pub(crate) struct Archive {
    buf: Vec<u8>,
    dirs: BTreeSet<String>,
    entries: BTreeSet<String>,
    ino: u32,
    rdev: (u32, u32),
}

impl Archive {
    /// Adds a directory (and its parents). `path` is relative to the root.
    pub(crate) fn dir(&mut self, path: &str) {
        let path = path.trim_matches('/');
        if path.is_empty() || self.dirs.contains(path) {
            return;
        }
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent);
        }
        self.dirs.insert(path.to_owned());
        self.header(path, S_IFDIR | 0o755, 0);
    }

    /// Adds a regular file with the given permission bits.
    pub(crate) fn file(&mut self, path: &str, mode: u32, data: &[u8]) {
        let path = path.trim_matches('/');
        if !self.claim(path) {
            return;
        }
        self.header(path, S_IFREG | (mode & 0o7777), data.len());
        self.buf.extend_from_slice(data);
        self.pad();
    }

    /// Adds a character device node (for `/dev/console` before devtmpfs).
    pub(crate) fn chardev(&mut self, path: &str, mode: u32, major: u32, minor: u32) {
        let path = path.trim_matches('/');
        if !self.claim(path) {
            return;
        }
        self.rdev = (major, minor);
        self.header(path, S_IFCHR | (mode & 0o7777), 0);
        self.rdev = (0, 0);
    }

    /// Adds a symbolic link to `target`.
    pub(crate) fn symlink(&mut self, path: &str, target: &str) {
        let path = path.trim_matches('/');
        if !self.claim(path) {
            return;
        }
        self.header(path, S_IFLNK | 0o777, target.len());
        self.buf.extend_from_slice(target.as_bytes());
        self.pad();
    }

    /// `true` when `path` holds an entry (file, link or directory).
    #[cfg(test)]
    pub(crate) fn contains(&self, path: &str) -> bool {
        let path = path.trim_matches('/');
        self.entries.contains(path) || self.dirs.contains(path)
    }

    /// Finishes the archive with its trailer and writes it out.
    pub(crate) fn finish(mut self, out: &mut impl Write) -> io::Result<()> {
        self.header("TRAILER!!!", 0, 0);
        out.write_all(&self.buf)
    }

    fn claim(&mut self, path: &str) -> bool {
        if self.entries.contains(path) || self.dirs.contains(path) {
            return false;
        }
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent);
        }
        self.entries.insert(path.to_owned());
        true
    }

    fn header(&mut self, name: &str, mode: u32, size: usize) {
        self.ino += 1;
        let nlink = if mode & 0o170000 == S_IFDIR { 2 } else { 1 };
        let fields: [u32; 13] = [
            self.ino,
            mode,
            0, // uid
            0, // gid
            nlink,
            0, // mtime
            u32::try_from(size).unwrap_or(u32::MAX),
            0, // devmajor
            0, // devminor
            self.rdev.0,
            self.rdev.1,
            u32::try_from(name.len() + 1).unwrap_or(u32::MAX),
            0, // check
        ];
        self.buf.extend_from_slice(b"070701");
        for field in fields {
            self.buf
                .extend_from_slice(format!("{field:08x}").as_bytes());
        }
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.push(0);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpio_tool_lists_and_extracts_what_we_write() {
        let Some(cpio) = crate::host::which("cpio") else {
            crate::skip(
                "cpio_tool_lists_and_extracts_what_we_write",
                &"no cpio binary",
            );
            return;
        };
        let mut archive = Archive::default();
        archive.file("usr/bin/hello", 0o755, b"#!/bin/sh\necho hi\n");
        archive.symlink("bin", "usr/bin");
        archive.file("etc/odd", 0o644, b"12345");
        archive.dir("empty/dir");
        let mut bytes = Vec::new();
        archive.finish(&mut bytes).unwrap();
        assert_eq!(bytes.len() % 4, 0);

        let dir = std::env::temp_dir().join(format!("rvs-cpio-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let archive_path = dir.join("a.cpio");
        std::fs::write(&archive_path, &bytes).unwrap();
        let out = std::process::Command::new(cpio)
            .args(["-idm", "--quiet", "-F"])
            .arg(&archive_path)
            .current_dir(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            std::fs::read(dir.join("usr/bin/hello")).unwrap(),
            b"#!/bin/sh\necho hi\n"
        );
        assert_eq!(std::fs::read(dir.join("etc/odd")).unwrap(), b"12345");
        assert_eq!(
            std::fs::read_link(dir.join("bin")).unwrap(),
            std::path::Path::new("usr/bin")
        );
        assert!(dir.join("empty/dir").is_dir());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn entries_are_added_once_and_parents_implicitly() {
        let mut archive = Archive::default();
        archive.file("a/b/c", 0o644, b"x");
        archive.file("a/b/c", 0o644, b"second copy is ignored");
        assert!(archive.contains("a") && archive.contains("a/b") && archive.contains("a/b/c"));
        let mut bytes = Vec::new();
        archive.finish(&mut bytes).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert_eq!(text.matches("a/b/c\0").count(), 1);
        assert!(!text.contains("second copy"));
        assert!(text.contains("TRAILER!!!"));
    }
}
