//! The binary's view of a source: something that says when it changed and
//! yields a validated [`ClusterState`] once it has a complete view.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rvs_proxy::source::api::Store;
use rvs_proxy::source::manifests::{self, Manifests};
use rvs_proxy::{ClusterState, ProxyConfig};

/// Where Kubernetes objects come from.
pub(crate) enum Source {
    /// A directory of manifests, polled.
    Manifests {
        /// The directory.
        dir: PathBuf,
        /// Its fingerprint at the last load.
        seen: Option<Vec<(PathBuf, u64, Option<std::time::SystemTime>)>>,
        /// Parsed files, re-parsed only when they change.
        cache: manifests::DirCache,
    },
    /// The API server, through watchers filling a store.
    Api {
        /// The store.
        store: Arc<Store>,
        /// Its generation at the last load.
        seen: u64,
        /// Keeps the watchers' runtime alive.
        _runtime: tokio::runtime::Runtime,
    },
}

/// How often the manifests directory is polled for changes.
const POLL: Duration = Duration::from_millis(20);

impl Source {
    /// Waits up to `timeout` for a change; `true` when something changed
    /// since the last [`Source::load`].
    pub(crate) fn wait_change(&mut self, timeout: Duration) -> bool {
        match self {
            Source::Manifests { dir, seen, .. } => {
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

    /// The current view, or `None` while it is incomplete (the API
    /// source before every kind has been listed).
    pub(crate) fn load(&mut self, config: &ProxyConfig) -> anyhow::Result<Option<ClusterState>> {
        let objects = match self {
            Source::Manifests { dir, seen, cache } => {
                *seen = manifests::fingerprint(dir).ok();
                let (cluster, errors) = cache.load(dir)?;
                for e in &errors {
                    tracing::warn!(error = %e, "skipping a manifest document or object");
                }
                warn_without_node(&cluster, config);
                return Ok(Some(cluster));
            }
            Source::Api { store, seen, .. } => {
                *seen = store.generation();
                if !store.ready() {
                    return Ok(None);
                }
                store.snapshot()
            }
        };
        Ok(Some(build(&objects, config)))
    }
}

fn build(objects: &Manifests, config: &ProxyConfig) -> ClusterState {
    let (cluster, errors) = ClusterState::build(
        &objects.services,
        &objects.slices,
        &objects.nodes,
        &config.node_name,
        config.service_proxy_name.as_deref(),
    );
    for e in &errors {
        tracing::warn!(error = %e, "skipping an object");
    }
    warn_without_node(&cluster, config);
    cluster
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
        _runtime: runtime,
    })
}
