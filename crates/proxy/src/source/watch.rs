//! Watching a manifests directory: inotify, or polling where inotify is
//! unavailable.
//!
//! A file closed after writing, renamed in or out, or removed wakes the
//! proxy at once (a Kubernetes ConfigMap volume's `..data` swap is a
//! rename). A change is reported once it is complete, so a file being
//! written is never read half-written. Where inotify is unavailable (or
//! its watch breaks) the directory's fingerprint is polled instead.

use std::collections::HashSet;
use std::ffi::OsString;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

use super::manifests;

/// How often the manifests directory is polled for changes without
/// inotify, and how long a file being modified (but not yet closed) must
/// hold still before it is read.
const POLL: Duration = Duration::from_millis(20);

/// How long a file written in place may stay open before it is read
/// anyway (a writer that keeps it open).
const OPEN_WRITE_CAP: Duration = Duration::from_secs(1);

/// The events watched: writes, closes, creations, renames and removals in
/// the directory, and the directory itself going away.
fn watched() -> AddWatchFlags {
    AddWatchFlags::IN_CLOSE_WRITE
        | AddWatchFlags::IN_MODIFY
        | AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_MOVED_FROM
        | AddWatchFlags::IN_DELETE
        | AddWatchFlags::IN_DELETE_SELF
        | AddWatchFlags::IN_MOVE_SELF
}

/// Watches `dir` with inotify, or says why it cannot (the caller polls).
fn inotify(dir: &Path) -> Option<Inotify> {
    let result = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
        .and_then(|ino| ino.add_watch(dir, watched()).map(|_| ino));
    match result {
        Ok(ino) => Some(ino),
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot watch the manifests directory with inotify; polling it");
            None
        }
    }
}

/// Whether an event about `name` can concern a manifest: manifest files,
/// and Kubernetes volume bookkeeping (`..data`) whose swap replaces them.
fn relevant(name: Option<&std::ffi::OsStr>) -> bool {
    let Some(name) = name.and_then(|n| n.to_str()) else {
        return true;
    };
    name.starts_with("..")
        || [".yaml", ".yml", ".json"]
            .iter()
            .any(|ext| name.ends_with(ext))
}

/// Waits up to `timeout` for the watched directory to change. `Err` when
/// the watch broke (the caller falls back to polling).
///
/// A change is reported once it is complete: every file written in place
/// has been closed (or stayed open past [`OPEN_WRITE_CAP`]), and a removal
/// or creation has been followed by a quiet [`POLL`] (a tool that replaces
/// a file by removing and re-creating it is not caught in between). A
/// rename into the directory is complete at once.
fn wait_inotify(ino: &Inotify, timeout: Duration) -> nix::Result<bool> {
    let deadline = Instant::now() + timeout;
    // Files modified and not closed yet.
    let mut writing: HashSet<OsString> = HashSet::new();
    let mut last_event: Option<Instant> = None;
    let mut complete = false;
    loop {
        let now = Instant::now();
        let until = match last_event {
            None => deadline,
            Some(t) if writing.is_empty() => t + POLL,
            Some(t) => t + OPEN_WRITE_CAP,
        };
        if now >= until {
            return Ok(last_event.is_some());
        }
        let ms = u16::try_from((until - now).as_millis().max(1)).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(ino.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) => {}
            Err(e) => return Err(e),
        }
        let events = match ino.read_events() {
            Ok(events) => events,
            Err(nix::errno::Errno::EAGAIN) => continue,
            Err(e) => return Err(e),
        };
        for event in events {
            let mask = event.mask;
            if mask.intersects(
                AddWatchFlags::IN_IGNORED
                    | AddWatchFlags::IN_DELETE_SELF
                    | AddWatchFlags::IN_MOVE_SELF,
            ) {
                // The directory itself went away: the watch is gone.
                return Err(nix::errno::Errno::ENOENT);
            }
            if mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
                writing.clear();
                complete = true;
                last_event = Some(Instant::now());
                continue;
            }
            if !relevant(event.name.as_deref()) {
                continue;
            }
            last_event = Some(Instant::now());
            let name = event.name.unwrap_or_default();
            if mask.contains(AddWatchFlags::IN_MODIFY) {
                writing.insert(name);
            } else if mask.intersects(AddWatchFlags::IN_CLOSE_WRITE | AddWatchFlags::IN_MOVED_TO) {
                writing.remove(&name);
                complete = true;
            } else if mask.intersects(AddWatchFlags::IN_DELETE | AddWatchFlags::IN_MOVED_FROM) {
                writing.remove(&name);
            }
        }
        if complete && writing.is_empty() {
            // Take whatever else is already queued with this change.
            while let Ok(more) = ino.read_events() {
                if more.is_empty() {
                    break;
                }
            }
            return Ok(true);
        }
    }
}

/// A directory's fingerprint: each file's path, size and modification
/// time.
type Fingerprint = Vec<(PathBuf, u64, Option<SystemTime>)>;

/// Tells when a manifests directory changed.
#[derive(Debug)]
pub struct DirWatch {
    dir: PathBuf,
    /// The inotify watch; `None` falls back to polling.
    inotify: Option<Inotify>,
    /// The fingerprint at the last [`DirWatch::mark_read`] (when polling).
    seen: Option<Fingerprint>,
}

impl DirWatch {
    /// Watches `dir` with inotify, or polls it when inotify is unavailable
    /// (logged once).
    pub fn new(dir: &Path) -> DirWatch {
        DirWatch {
            dir: dir.to_owned(),
            inotify: inotify(dir),
            seen: None,
        }
    }

    /// The directory is about to be read: later changes count.
    pub fn mark_read(&mut self) {
        if self.inotify.is_none() {
            self.seen = manifests::fingerprint(&self.dir).ok();
        }
    }

    /// Waits up to `timeout` for a complete change; `true` when the
    /// directory changed since the last [`DirWatch::mark_read`].
    pub fn wait_change(&mut self, timeout: Duration) -> bool {
        if let Some(ino) = &self.inotify {
            match wait_inotify(ino, timeout) {
                Ok(changed) => return changed,
                Err(e) => {
                    tracing::warn!(dir = %self.dir.display(), error = %e, "the manifests directory's inotify watch broke; polling it");
                    self.inotify = None;
                    self.seen = None;
                    return true;
                }
            }
        }
        let step = timeout.min(POLL);
        let mut waited = Duration::ZERO;
        loop {
            let now = manifests::fingerprint(&self.dir).ok();
            if now != self.seen {
                // Debounce: a file being written changes again within a
                // poll; load once it holds still.
                std::thread::sleep(POLL);
                if manifests::fingerprint(&self.dir).ok() == now {
                    return true;
                }
            }
            if waited >= timeout {
                return false;
            }
            std::thread::sleep(step);
            waited += step;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("rvs-watch-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A file truncated, then filled slowly and closed: the change is
    /// reported once it is closed, never while it is empty.
    #[test]
    fn an_in_place_write_is_reported_when_closed() {
        let dir = dir("inplace");
        let path = dir.join("a.yaml");
        std::fs::write(&path, "kind: Node\n").unwrap();
        let ino = inotify(&dir).unwrap();
        let writer = {
            let path = path.clone();
            std::thread::spawn(move || {
                let mut f = std::fs::File::create(&path).unwrap();
                std::thread::sleep(Duration::from_millis(150));
                f.write_all(b"kind: Service\n").unwrap();
                std::thread::sleep(Duration::from_millis(150));
                f.write_all(b"metadata: {name: a}\n").unwrap();
            })
        };
        assert!(wait_inotify(&ino, Duration::from_secs(5)).unwrap());
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "kind: Service\nmetadata: {name: a}\n"
        );
        writer.join().unwrap();
        // Nothing else happened: a quiet wait times out.
        assert!(!wait_inotify(&ino, Duration::from_millis(50)).unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A rename into the directory is reported at once; files that are
    /// not manifests (a writer's temporary file) are not.
    #[test]
    fn renames_count_and_other_files_do_not() {
        let dir = dir("rename");
        let ino = inotify(&dir).unwrap();
        std::fs::write(dir.join("a.yaml.tmp"), "kind: Node\n").unwrap();
        assert!(!wait_inotify(&ino, Duration::from_millis(100)).unwrap());
        let started = Instant::now();
        std::fs::rename(dir.join("a.yaml.tmp"), dir.join("a.yaml")).unwrap();
        assert!(wait_inotify(&ino, Duration::from_secs(5)).unwrap());
        assert!(started.elapsed() < Duration::from_millis(500));
        std::fs::remove_dir_all(&dir).unwrap();
        // The directory went away: the watch says so, and the caller polls.
        assert!(wait_inotify(&ino, Duration::from_secs(5)).is_err());
    }
}
