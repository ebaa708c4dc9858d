//! Private temporary directories for tests.
//!
//! A [`TempDir`] is a fresh directory under the system's temporary
//! directory, named after the test that made it and this process, and
//! removed with everything in it when dropped (also when the test
//! panics). Tests put sockets, manifests and logs there.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::RigError;

/// A fresh directory, removed on drop.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates `rvs-TAG-PID-N` under the temporary directory, removing
    /// whatever an earlier process of the same pid left there.
    pub fn new(tag: &str) -> Result<TempDir, RigError> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "rvs-{tag}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path)
            .map_err(RigError::io(format!("create {}", path.display())))?;
        Ok(TempDir { path })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `name` inside the directory.
    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_is_fresh_and_goes_away_on_drop() {
        let (Ok(a), Ok(b)) = (TempDir::new("tempdir-test"), TempDir::new("tempdir-test")) else {
            panic!("cannot create temporary directories");
        };
        assert_ne!(a.path(), b.path());
        assert!(std::fs::write(a.join("file"), "x").is_ok());
        let path = a.path().to_owned();
        drop(a);
        assert!(!path.exists());
        assert!(b.path().is_dir());
    }
}
