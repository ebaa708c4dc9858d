//! The binary's view of a source: something that says when it changed and
//! yields a validated [`ClusterState`] once it has a complete view, with
//! the Services that changed since the previous load.
//!
//! The manifests directory is watched with inotify: a file closed after
//! writing, renamed in or out, or removed wakes the proxy at once (a
//! Kubernetes ConfigMap volume's `..data` swap is a rename). Where inotify
//! is unavailable the directory's fingerprint is polled instead.

use std::collections::HashSet;
use std::ffi::OsString;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use rvs_proxy::cluster::Changes;
use rvs_proxy::source::api::Store;
use rvs_proxy::source::manifests;
use rvs_proxy::{ClusterState, ProxyConfig};

/// Where Kubernetes objects come from.
pub(crate) enum Source {
    /// A directory of manifests, polled.
    Manifests {
        /// The directory.
        dir: PathBuf,
        /// Its fingerprint at the last load (when polling).
        seen: Option<Vec<(PathBuf, u64, Option<std::time::SystemTime>)>>,
        /// Parsed files, re-parsed only when they change.
        cache: manifests::DirCache,
        /// The directory's inotify watch; `None` falls back to polling.
        watch: Option<Inotify>,
    },
    /// The API server, through watchers filling a store.
    Api {
        /// The store.
        store: Arc<Store>,
        /// Its generation at the last load.
        seen: u64,
        /// The view last loaded.
        current: ClusterState,
        /// Keeps the watchers' runtime alive.
        _runtime: tokio::runtime::Runtime,
    },
}

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
pub(crate) fn watch(dir: &std::path::Path) -> Option<Inotify> {
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

impl Source {
    /// Waits up to `timeout` for a change; `true` when something changed
    /// since the last [`Source::load`].
    pub(crate) fn wait_change(&mut self, timeout: Duration) -> bool {
        match self {
            Source::Manifests {
                dir, seen, watch, ..
            } => {
                if let Some(ino) = watch {
                    match wait_inotify(ino, timeout) {
                        Ok(changed) => return changed,
                        Err(e) => {
                            tracing::warn!(dir = %dir.display(), error = %e, "the manifests directory's inotify watch broke; polling it");
                            *watch = None;
                            *seen = None;
                            return true;
                        }
                    }
                }
                let step = timeout.min(POLL);
                let mut waited = Duration::ZERO;
                loop {
                    let now = manifests::fingerprint(dir).ok();
                    if now != *seen {
                        // Debounce: a file being written changes again
                        // within a poll; load once it holds still.
                        std::thread::sleep(POLL);
                        if manifests::fingerprint(dir).ok() == now {
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
            Source::Api { store, seen, .. } => store.wait_change(*seen, timeout) != *seen,
        }
    }

    /// The current view and what changed since the previous load, or
    /// `None` while the view is incomplete (the API source before every
    /// kind has been listed).
    pub(crate) fn load(
        &mut self,
        config: &ProxyConfig,
    ) -> anyhow::Result<Option<(&ClusterState, Changes)>> {
        match self {
            Source::Manifests {
                dir,
                seen,
                cache,
                watch,
            } => {
                if watch.is_none() {
                    *seen = manifests::fingerprint(dir).ok();
                }
                let loaded = cache.load(dir)?;
                for e in &loaded.errors {
                    tracing::warn!(error = %e, "skipping a manifest document or object");
                }
                warn_without_node(loaded.state, config);
                Ok(Some((loaded.state, loaded.changes)))
            }
            Source::Api {
                store,
                seen,
                current,
                ..
            } => {
                *seen = store.generation();
                if !store.ready() {
                    return Ok(None);
                }
                // Only what the watchers changed since the last load is
                // copied: O(change).
                let changes = store.update_view(current);
                warn_without_node(current, config);
                Ok(Some((current, changes)))
            }
        }
    }
}

fn warn_without_node(cluster: &ClusterState, config: &ProxyConfig) {
    if cluster.node.is_none() {
        tracing::warn!(node = %config.node_name, "no Node object for this node: NodePorts and local endpoints are not known");
    }
}

/// Connects to the API server: `--master` and/or `--kubeconfig`, else the
/// in-cluster service account or `$KUBECONFIG`/`~/.kube/config`.
pub(crate) fn api(
    kubeconfig: Option<&std::path::Path>,
    master: Option<&str>,
    config: &ProxyConfig,
) -> anyhow::Result<Source> {
    use anyhow::Context;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("start the API client runtime")?;
    let store = runtime.block_on(async {
        let mut kube_config = match kubeconfig {
            Some(path) => {
                let file = kube::config::Kubeconfig::read_from(path)
                    .with_context(|| format!("--kubeconfig {}", path.display()))?;
                kube::Config::from_custom_kubeconfig(
                    file,
                    &kube::config::KubeConfigOptions::default(),
                )
                .await
                .with_context(|| format!("--kubeconfig {}", path.display()))?
            }
            None => match master {
                Some(url) => kube::Config::new(
                    url.parse()
                        .with_context(|| format!("--master {url:?} is not a URL"))?,
                ),
                None => kube::Config::infer()
                    .await
                    .context("no --kubeconfig/--master and no in-cluster or default kubeconfig")?,
            },
        };
        if let (Some(url), Some(_)) = (master, kubeconfig) {
            kube_config.cluster_url = url
                .parse()
                .with_context(|| format!("--master {url:?} is not a URL"))?;
        }
        let client = kube::Client::try_from(kube_config).context("build the API client")?;
        anyhow::Ok(rvs_proxy::source::api::spawn(
            client,
            &config.node_name,
            config.service_proxy_name.as_deref(),
        ))
    })?;
    Ok(Source::Api {
        store,
        seen: u64::MAX,
        current: ClusterState::default(),
        _runtime: runtime,
    })
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
        let ino = watch(&dir).unwrap();
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
        let ino = watch(&dir).unwrap();
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
