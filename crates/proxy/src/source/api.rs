//! The Kubernetes API server as a source, through `kube`'s watcher.
//!
//! Three watchers (Services, EndpointSlices, this node's Node) fill one
//! [`Store`]. The watcher lists, then watches from the list's
//! resourceVersion with bookmarks, relists after `410 Gone` or a dropped
//! stream, and backs off on errors (`default_backoff`). Each kind replaces
//! its objects atomically when a (re)list completes, so deletions missed
//! while disconnected disappear too. The store is *ready* only once every
//! kind has completed its first list: the proxy never syncs a partial
//! view (which would delete live virtual servers).
//!
//! Selectors follow kube-proxy: Services and EndpointSlices without
//! `service.kubernetes.io/headless` and, by default, without
//! `service.kubernetes.io/service-proxy-name` (or with it equal to
//! `--service-proxy-name`); the Node by `metadata.name`.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use super::manifests::Manifests;
use crate::cluster::{HEADLESS_LABEL, SERVICE_PROXY_NAME_LABEL};

type Key = (String, String);

#[derive(Debug, Default)]
struct Objects {
    services: BTreeMap<Key, Service>,
    slices: BTreeMap<Key, EndpointSlice>,
    nodes: BTreeMap<Key, Node>,
    listed: [bool; 3],
    generation: u64,
}

/// Objects received from the API server, shared between the watchers and
/// the sync loop.
#[derive(Debug, Default)]
pub struct Store {
    objects: Mutex<Objects>,
    changed: Condvar,
}

/// Which kind a watcher feeds.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Services = 0,
    Slices = 1,
    Nodes = 2,
}

impl Store {
    fn lock(&self) -> MutexGuard<'_, Objects> {
        self.objects
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `true` once every kind has been listed completely.
    pub fn ready(&self) -> bool {
        self.lock().listed.iter().all(|l| *l)
    }

    /// A counter that grows with every change.
    pub fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// Waits until the generation differs from `seen` (or `timeout`
    /// passes) and returns the current generation.
    pub fn wait_change(&self, seen: u64, timeout: Duration) -> u64 {
        let guard = self.lock();
        let (guard, _) = self
            .changed
            .wait_timeout_while(guard, timeout, |o| o.generation == seen)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        guard.generation
    }

    /// A copy of everything known now.
    pub fn snapshot(&self) -> Manifests {
        let o = self.lock();
        Manifests {
            services: o.services.values().cloned().collect(),
            slices: o.slices.values().cloned().collect(),
            nodes: o.nodes.values().cloned().collect(),
        }
    }

    fn update(&self, f: impl FnOnce(&mut Objects)) {
        let mut o = self.lock();
        f(&mut o);
        o.generation += 1;
        drop(o);
        self.changed.notify_all();
    }
}

fn key<K: Resource>(obj: &K) -> Key {
    (obj.namespace().unwrap_or_default(), obj.name_any())
}

/// The label selector kube-proxy uses for Services and EndpointSlices.
pub fn label_selector(service_proxy_name: Option<&str>) -> String {
    match service_proxy_name {
        Some(name) => format!("!{HEADLESS_LABEL},{SERVICE_PROXY_NAME_LABEL}={name}"),
        None => format!("!{HEADLESS_LABEL},!{SERVICE_PROXY_NAME_LABEL}"),
    }
}

/// Picks one kind's map out of the store.
type Select<K> = fn(&mut Objects) -> &mut BTreeMap<Key, K>;

async fn feed<K>(
    api: Api<K>,
    config: watcher::Config,
    kind: Kind,
    select: Select<K>,
    store: Arc<Store>,
) where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let mut buffer: Vec<(Key, K)> = Vec::new();
    let stream = watcher::watcher(api, config).default_backoff();
    futures_util::pin_mut!(stream);
    while let Some(event) = stream.next().await {
        match event {
            Ok(Event::Init) => buffer.clear(),
            Ok(Event::InitApply(obj)) => buffer.push((key(&obj), obj)),
            Ok(Event::InitDone) => {
                let listed = std::mem::take(&mut buffer);
                let count = listed.len();
                store.update(|o| {
                    *select(o) = listed.into_iter().collect();
                    o.listed[kind as usize] = true;
                });
                tracing::info!(?kind, count, "listed");
            }
            Ok(Event::Apply(obj)) => {
                let k = key(&obj);
                store.update(|o| {
                    select(o).insert(k, obj);
                });
            }
            Ok(Event::Delete(obj)) => {
                let k = key(&obj);
                store.update(|o| {
                    select(o).remove(&k);
                });
            }
            Err(e) => tracing::warn!(?kind, error = %e, "watch failed; retrying with backoff"),
        }
    }
}

/// Starts the three watchers on the current tokio runtime.
pub fn spawn(client: Client, node_name: &str, service_proxy_name: Option<&str>) -> Arc<Store> {
    let store = Arc::new(Store::default());
    let selector = label_selector(service_proxy_name);
    let services: Api<Service> = Api::all(client.clone());
    let slices: Api<EndpointSlice> = Api::all(client.clone());
    let nodes: Api<Node> = Api::all(client);
    let labelled = watcher::Config::default().labels(&selector);
    tokio::spawn(feed(
        services,
        labelled.clone(),
        Kind::Services,
        |o| &mut o.services,
        Arc::clone(&store),
    ));
    tokio::spawn(feed(
        slices,
        labelled,
        Kind::Slices,
        |o| &mut o.slices,
        Arc::clone(&store),
    ));
    let node_field = format!("metadata.name={node_name}");
    let named = watcher::Config::default().fields(&node_field);
    tokio::spawn(feed(
        nodes,
        named,
        Kind::Nodes,
        |o| &mut o.nodes,
        Arc::clone(&store),
    ));
    store
}
