//! Where Kubernetes objects come from.
//!
//! * [`manifests`]: a directory of YAML/JSON manifests, as `kubectl get -o
//!   yaml` prints them — the embedded default that needs no cluster —
//!   watched for changes by [`watch`].
//! * [`api`]: the Kubernetes API server, watched with `kube`.
//!
//! [`Source`] puts either behind [`ChangeSource`], what the sync loop
//! needs: wait for a change, then load the view and what changed.

pub mod api;
pub mod manifests;
pub mod watch;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::cluster::{Changes, ClusterState};

/// What the sync loop reads objects from.
pub trait ChangeSource {
    /// Waits up to `timeout` for a change; `true` when something changed
    /// since the last [`ChangeSource::load`].
    fn wait_change(&mut self, timeout: Duration) -> bool;

    /// The current view and what changed since the previous load, or
    /// `None` while the view is incomplete (the API source before every
    /// kind has been listed).
    fn load(&mut self) -> Result<Option<(&ClusterState, Changes)>, SourceError>;
}

/// A source could not be set up or read.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The manifests directory cannot be read.
    #[error(transparent)]
    Dir(#[from] manifests::DirError),
    /// The kubeconfig file cannot be used.
    #[error("--kubeconfig {}", path.display())]
    Kubeconfig {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// `--master` is not a URL.
    #[error("--master {url:?} is not a URL")]
    Master {
        /// What was given.
        url: String,
        /// Why.
        #[source]
        source: http::uri::InvalidUri,
    },
    /// Neither flag was given and no default configuration was found.
    #[error("no --kubeconfig/--master and no in-cluster or default kubeconfig")]
    Infer(#[source] kube::config::InferConfigError),
    /// The API client could not be built from the configuration.
    #[error("building the API client")]
    Client(#[source] kube::Error),
}

/// Where Kubernetes objects come from, for one node.
#[derive(Debug)]
pub struct Source {
    kind: Kind,
    node_name: String,
}

#[derive(Debug)]
enum Kind {
    /// A directory of manifests, watched.
    Manifests {
        dir: PathBuf,
        /// Parsed files, re-parsed only when they change.
        cache: Box<manifests::DirCache>,
        watch: watch::DirWatch,
    },
    /// The API server, through watchers filling a store.
    Api {
        store: Arc<api::Store>,
        /// The store's generation at the last load.
        seen: u64,
        /// The view last loaded.
        current: ClusterState,
    },
}

/// How to reach the API server.
#[derive(Clone, Debug, Default)]
pub struct ApiOptions {
    /// `--kubeconfig`.
    pub kubeconfig: Option<PathBuf>,
    /// `--master`, overriding the kubeconfig's server.
    pub master: Option<String>,
}

impl Source {
    /// A manifests directory for node `node_name` (and
    /// `--service-proxy-name`).
    pub fn manifests(dir: &Path, node_name: &str, proxy_name: Option<&str>) -> Source {
        Source {
            kind: Kind::Manifests {
                dir: dir.to_owned(),
                cache: Box::new(manifests::DirCache::new(node_name, proxy_name)),
                watch: watch::DirWatch::new(dir),
            },
            node_name: node_name.to_owned(),
        }
    }

    /// The API server: `--master` and/or `--kubeconfig`, else the
    /// in-cluster service account or `$KUBECONFIG`/`~/.kube/config`. The
    /// watchers run on `runtime`.
    pub fn api(
        options: &ApiOptions,
        node_name: &str,
        proxy_name: Option<&str>,
        runtime: &tokio::runtime::Handle,
    ) -> Result<Source, SourceError> {
        let client = runtime.block_on(client(options))?;
        let store = {
            let _entered = runtime.enter();
            api::spawn(client, node_name, proxy_name)
        };
        Ok(Source {
            kind: Kind::Api {
                store,
                seen: u64::MAX,
                current: ClusterState::default(),
            },
            node_name: node_name.to_owned(),
        })
    }

    /// The first complete view, waiting up to `timeout` for it (the API
    /// source needs its initial lists); `None` when it did not come.
    pub fn first_view(&mut self, timeout: Duration) -> Result<Option<ClusterState>, SourceError> {
        self.wait_for(timeout, |_| true)
    }

    /// The first complete view for which `ready` holds, waiting up to
    /// `timeout` (say, for this node's pod CIDR, as kube-proxy does with
    /// `--detect-local-mode=NodeCIDR`); `None` when none came.
    pub fn wait_for(
        &mut self,
        timeout: Duration,
        ready: impl Fn(&ClusterState) -> bool,
    ) -> Result<Option<ClusterState>, SourceError> {
        let deadline = std::time::Instant::now() + timeout;
        // Read again on a change, or every second (not on every wake-up:
        // each read of an incomplete view logs what it misses).
        let mut last_load = None::<std::time::Instant>;
        let mut changed = true;
        loop {
            if changed || last_load.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                last_load = Some(std::time::Instant::now());
                if let Some((cluster, _)) = self.load()?
                    && ready(cluster)
                {
                    return Ok(Some(cluster.clone()));
                }
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            changed = self.wait_change(left.min(Duration::from_millis(200)));
        }
    }
}

async fn client(options: &ApiOptions) -> Result<kube::Client, SourceError> {
    let master = |url: &str| {
        url.parse::<http::Uri>()
            .map_err(|source| SourceError::Master {
                url: url.to_owned(),
                source,
            })
    };
    let mut config = match (&options.kubeconfig, &options.master) {
        (Some(path), _) => {
            let kubeconfig = |source| SourceError::Kubeconfig {
                path: path.clone(),
                source,
            };
            let file = kube::config::Kubeconfig::read_from(path).map_err(kubeconfig)?;
            kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(kubeconfig)?
        }
        (None, Some(url)) => kube::Config::new(master(url)?),
        (None, None) => kube::Config::infer().await.map_err(SourceError::Infer)?,
    };
    if let (Some(url), Some(_)) = (&options.master, &options.kubeconfig) {
        config.cluster_url = master(url)?;
    }
    kube::Client::try_from(config).map_err(SourceError::Client)
}

impl ChangeSource for Source {
    fn wait_change(&mut self, timeout: Duration) -> bool {
        match &mut self.kind {
            Kind::Manifests { watch, .. } => watch.wait_change(timeout),
            Kind::Api { store, seen, .. } => store.wait_change(*seen, timeout) != *seen,
        }
    }

    fn load(&mut self) -> Result<Option<(&ClusterState, Changes)>, SourceError> {
        let (cluster, changes) = match &mut self.kind {
            Kind::Manifests { dir, cache, watch } => {
                watch.mark_read();
                let loaded = cache.load(dir)?;
                for e in &loaded.errors {
                    tracing::warn!(error = %e, "skipping a manifest document or object");
                }
                (loaded.state, loaded.changes)
            }
            Kind::Api {
                store,
                seen,
                current,
            } => {
                *seen = store.generation();
                if !store.ready() {
                    return Ok(None);
                }
                // Only what the watchers changed since the last load is
                // copied: O(change).
                let changes = store.update_view(current);
                (&*current, changes)
            }
        };
        if cluster.node.is_none() {
            tracing::warn!(node = %self.node_name, "no Node object for this node: NodePorts and local endpoints are not known");
        }
        Ok(Some((cluster, changes)))
    }
}
