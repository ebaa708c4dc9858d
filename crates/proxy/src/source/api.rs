//! The Kubernetes API server as a source, through `kube`'s watcher.
//!
//! Three watchers (Services, EndpointSlices, this node's Node) fill one
//! [`Store`]. The watcher lists, then watches from the list's
//! resourceVersion with bookmarks, resumes a dropped stream from its last
//! resourceVersion, relists after `410 Gone` (at once: the backoff is for
//! errors, see `feed`) and backs off on errors as client-go's reflector
//! does (0.8 s doubling to 30 s, jittered). Each kind replaces
//! its objects atomically when a (re)list completes, so deletions missed
//! while disconnected disappear too. The store is *ready* only once every
//! kind has completed its first list: the proxy never syncs a partial
//! view (which would delete live virtual servers).
//!
//! Selectors follow kube-proxy (v1.37's `server.go`): Services without
//! `service.kubernetes.io/service-proxy-name` (or, with
//! `--service-proxy-name`, with it equal to that name) and with a cluster
//! IP other than `None`; EndpointSlices without
//! `service.kubernetes.io/headless` (a Service carrying that label is
//! still proxied); the Node by `metadata.name`.
//!
//! Watch errors never touch the store: while the API server is away (or
//! refuses a request) the proxy keeps syncing its last complete view. They
//! are logged by what the operator can do about them (see `report`): a
//! `403 Forbidden` names the verb and resource the ClusterRole lacks, a
//! `401` the credentials, a `410 Gone` is the expected relist, anything
//! else (the API server unreachable) a warning that the watch is retried.

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;

use crate::cluster::{
    Changes, ClusterState, HEADLESS_LABEL, NodeInfo, ObjectName, SERVICE_PROXY_NAME_LABEL,
    ServiceInfo, SliceInfo, node_info, object_name, service_info, slice_info,
};

/// Objects received, already reduced to the proxy's view (the raw objects,
/// with their managed fields, are several times larger), and what changed
/// since the sync loop last took them.
#[derive(Debug, Default)]
struct Objects {
    view: ClusterState,
    dirty_services: BTreeSet<ObjectName>,
    dirty_slices: BTreeSet<ObjectName>,
    dirty_node: bool,
    listed: [bool; 3],
    generation: u64,
}

impl Objects {
    fn set_service(&mut self, name: ObjectName, info: Option<ServiceInfo>) {
        put(
            &mut self.view.services,
            &mut self.dirty_services,
            name,
            info,
        );
    }

    fn set_slice(&mut self, name: ObjectName, info: Option<SliceInfo>) {
        put(&mut self.view.slices, &mut self.dirty_slices, name, info);
    }

    fn set_node(&mut self, info: Option<NodeInfo>) {
        if self.view.node != info {
            self.view.node = info;
            self.dirty_node = true;
        }
    }
}

/// Puts (or, with `None`, removes) one object, marking its name dirty when
/// that changed anything.
fn put<V: PartialEq>(
    map: &mut std::collections::BTreeMap<ObjectName, V>,
    dirty: &mut BTreeSet<ObjectName>,
    name: ObjectName,
    value: Option<V>,
) {
    let changed = match value {
        Some(v) => {
            map.get(&name) != Some(&v) && {
                map.insert(name.clone(), v);
                true
            }
        }
        None => map.remove(&name).is_some(),
    };
    if changed {
        dirty.insert(name);
    }
}

/// Objects received from the API server, shared between the watchers and
/// the sync loop.
#[derive(Debug, Default)]
pub struct Store {
    objects: Mutex<Objects>,
    changed: Condvar,
    proxy_name: Option<String>,
}

/// Which kind a watcher feeds.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Services = 0,
    Slices = 1,
    Nodes = 2,
}

impl Kind {
    /// The resource as RBAC rules name it, with its API group.
    fn resource(self) -> &'static str {
        match self {
            Kind::Services => "services",
            Kind::Slices => "endpointslices.discovery.k8s.io",
            Kind::Nodes => "nodes",
        }
    }
}

/// The API server's answer inside a watcher error, if it gave one.
fn status_of(error: &watcher::Error) -> Option<&kube::core::Status> {
    match error {
        watcher::Error::InitialListFailed(kube::Error::Api(status))
        | watcher::Error::WatchStartFailed(kube::Error::Api(status))
        | watcher::Error::WatchFailed(kube::Error::Api(status))
        | watcher::Error::WatchError(status) => Some(status),
        _ => None,
    }
}

/// How loud a watcher error is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Severity {
    /// Expected now and then (a relist).
    Info,
    /// Transient, presumably (the API server unreachable).
    Warn,
    /// Needs the operator (RBAC, credentials).
    Error,
}

/// What a watcher error means, by what can be done about it.
fn explain(kind: Kind, error: &watcher::Error) -> (Severity, String) {
    let resource = kind.resource();
    let verb = match error {
        watcher::Error::InitialListFailed(_) => "list",
        _ => "watch",
    };
    match status_of(error).map(|s| (s.code, s.message.as_str())) {
        Some((403, message)) => (
            Severity::Error,
            format!(
                "not allowed to {verb} {resource} (403 Forbidden: {message}): grant `{verb}` on \
                 {resource} in rvs-proxy's ClusterRole (see deploy/kubernetes/rbac.yaml); \
                 keeping the last view and retrying"
            ),
        ),
        Some((401, message)) => (
            Severity::Error,
            format!(
                "the API server does not accept rvs-proxy's credentials to {verb} {resource} \
                 (401 Unauthorized: {message}): check the kubeconfig's token or client \
                 certificate; keeping the last view and retrying"
            ),
        ),
        Some((410, message)) => (
            Severity::Info,
            format!(
                "the watch of {resource} cannot resume from its resourceVersion (410 Gone: \
                 {message}): relisting"
            ),
        ),
        _ => (
            Severity::Warn,
            format!(
                "cannot {verb} {resource} ({error}); keeping the last view and retrying with \
                 backoff"
            ),
        ),
    }
}

/// Logs a watcher error (see [`explain`]). Nothing is dropped from the
/// store either way: the watcher retries with backoff, and the proxy
/// syncs its last complete view meanwhile.
fn report(kind: Kind, error: &watcher::Error) {
    let resource = kind.resource();
    match explain(kind, error) {
        (Severity::Error, message) => tracing::error!(resource, "{message}"),
        (Severity::Warn, message) => tracing::warn!(resource, "{message}"),
        (Severity::Info, message) => tracing::info!(resource, "{message}"),
    }
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

    /// A copy of the whole view now.
    pub fn snapshot(&self) -> ClusterState {
        self.lock().view.clone()
    }

    /// Brings `view` (a copy of the store's view as of the previous call)
    /// up to date, copying only what changed since, and says what changed:
    /// work in proportion to the change.
    pub fn update_view(&self, view: &mut ClusterState) -> Changes {
        let mut o = self.lock();
        let mut changes = Changes::default();
        for name in std::mem::take(&mut o.dirty_services) {
            match o.view.services.get(&name) {
                Some(info) => view.services.insert(name.clone(), info.clone()),
                None => view.services.remove(&name),
            };
            changes.services.insert(name);
        }
        for name in std::mem::take(&mut o.dirty_slices) {
            let before = match o.view.slices.get(&name) {
                Some(info) => {
                    changes.services.insert(info.service.clone());
                    view.slices.insert(name, info.clone())
                }
                None => view.slices.remove(&name),
            };
            changes.services.extend(before.map(|s| s.service));
        }
        if std::mem::take(&mut o.dirty_node) {
            view.node.clone_from(&o.view.node);
            changes.node = true;
        }
        changes
    }

    fn update(&self, f: impl FnOnce(&mut Objects)) {
        let mut o = self.lock();
        f(&mut o);
        o.generation += 1;
        drop(o);
        self.changed.notify_all();
    }
}

/// A kind the watchers keep, reduced as the proxy sees it.
trait Kept: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static {
    const KIND: Kind;
    /// The object's name and its reduced form (`None`: not for this
    /// proxy, or invalid, which is logged naming the field).
    fn reduce(&self, store: &Store) -> (ObjectName, Option<Self::Reduced>);
    type Reduced;
    /// Puts (or, with `None`, removes) one object.
    fn set(o: &mut Objects, name: ObjectName, value: Option<Self::Reduced>);
    /// The names of every object of this kind.
    fn names(o: &Objects) -> Vec<ObjectName>;
}

impl Kept for Service {
    const KIND: Kind = Kind::Services;
    type Reduced = ServiceInfo;
    fn reduce(&self, store: &Store) -> (ObjectName, Option<ServiceInfo>) {
        let info = match service_info(self, store.proxy_name.as_deref()) {
            Ok(Ok(info)) => Some(info),
            Ok(Err(_skip)) => None,
            Err(e) => {
                tracing::warn!(error = %e, "skipping an object");
                None
            }
        };
        (object_name(&self.metadata), info)
    }
    fn set(o: &mut Objects, name: ObjectName, value: Option<ServiceInfo>) {
        o.set_service(name, value);
    }
    fn names(o: &Objects) -> Vec<ObjectName> {
        o.view.services.keys().cloned().collect()
    }
}

impl Kept for EndpointSlice {
    const KIND: Kind = Kind::Slices;
    type Reduced = SliceInfo;
    fn reduce(&self, _store: &Store) -> (ObjectName, Option<SliceInfo>) {
        let name = object_name(&self.metadata);
        match slice_info(self) {
            Ok(Some((name, info))) => (name, Some(info)),
            Ok(None) => (name, None),
            Err(e) => {
                tracing::warn!(error = %e, "skipping an object");
                (name, None)
            }
        }
    }
    fn set(o: &mut Objects, name: ObjectName, value: Option<SliceInfo>) {
        o.set_slice(name, value);
    }
    fn names(o: &Objects) -> Vec<ObjectName> {
        o.view.slices.keys().cloned().collect()
    }
}

impl Kept for Node {
    const KIND: Kind = Kind::Nodes;
    type Reduced = NodeInfo;
    fn reduce(&self, _store: &Store) -> (ObjectName, Option<NodeInfo>) {
        let info = match node_info(self) {
            Ok(info) => Some(info),
            Err(e) => {
                tracing::warn!(error = %e, "skipping an object");
                None
            }
        };
        (object_name(&self.metadata), info)
    }
    fn set(o: &mut Objects, _name: ObjectName, value: Option<NodeInfo>) {
        // The watcher selects this node by name: there is only one.
        o.set_node(value);
    }
    fn names(o: &Objects) -> Vec<ObjectName> {
        o.view
            .node
            .iter()
            .map(|n| ObjectName {
                namespace: "default".to_owned(),
                name: n.name.clone(),
            })
            .collect()
    }
}

/// The label selector kube-proxy uses for Services.
pub fn service_label_selector(service_proxy_name: Option<&str>) -> String {
    match service_proxy_name {
        Some(name) => format!("{SERVICE_PROXY_NAME_LABEL}={name}"),
        None => format!("!{SERVICE_PROXY_NAME_LABEL}"),
    }
}

/// The field selector kube-proxy uses for Services: headless ones are
/// left to DNS.
pub const SERVICE_FIELD_SELECTOR: &str = "spec.clusterIP!=None";

/// The label selector kube-proxy uses for EndpointSlices: the
/// EndpointSlice controller labels a headless Service's slices.
pub fn slice_label_selector() -> String {
    format!("!{HEADLESS_LABEL}")
}

/// What the watcher yields, with `410 Gone` taken out of the errors.
enum Step<K> {
    /// An event.
    Event(Event<K>),
    /// The watch cannot resume (`410 Gone`); the watcher relists next.
    Gone(watcher::Error),
}

/// `true` for the API server's `410 Gone` (Expired).
fn is_gone(error: &watcher::Error) -> bool {
    status_of(error).is_some_and(|s| s.code == 410)
}

async fn feed<K: Kept>(api: Api<K>, config: watcher::Config, store: Arc<Store>) {
    let mut buffer: Vec<(ObjectName, Option<K::Reduced>)> = Vec::new();
    // Errors are retried with client-go's reflector backoff (0.8 s
    // doubling to 30 s, jittered up to 100 %, reset by the next event).
    // A 410 Gone is not an error here: the API server answered, and the
    // watcher's next step is the relist, which should not wait out a
    // backoff that grew while the API server was away (up to 60 s).
    let stream = watcher::watcher(api, config)
        .map(|item| match item {
            Ok(event) => Ok(Step::Event(event)),
            Err(e) if is_gone(&e) => Ok(Step::Gone(e)),
            Err(e) => Err(e),
        })
        .backoff(watcher::DefaultBackoff::default());
    futures_util::pin_mut!(stream);
    let kind = K::KIND;
    let mut lists = 0u64;
    while let Some(step) = stream.next().await {
        let event = match step {
            Ok(Step::Event(event)) => Ok(event),
            Ok(Step::Gone(e)) | Err(e) => Err(e),
        };
        match event {
            Ok(Event::Init) => buffer.clear(),
            Ok(Event::InitApply(obj)) => buffer.push(obj.reduce(&store)),
            Ok(Event::InitDone) => {
                let listed = std::mem::take(&mut buffer);
                let count = listed.len();
                store.update(|o| {
                    // A relist replaces the kind: what it no longer holds
                    // was deleted while the watch was down.
                    let keep: BTreeSet<&ObjectName> = listed.iter().map(|(n, _)| n).collect();
                    let gone: Vec<ObjectName> = K::names(o)
                        .into_iter()
                        .filter(|n| !keep.contains(n))
                        .collect();
                    for name in gone {
                        K::set(o, name, None);
                    }
                    for (name, value) in listed {
                        K::set(o, name, value);
                    }
                    o.listed[kind as usize] = true;
                });
                lists += 1;
                if lists == 1 {
                    tracing::info!(resource = kind.resource(), count, "listed");
                } else {
                    // What a relist no longer holds was deleted meanwhile.
                    tracing::info!(
                        resource = kind.resource(),
                        count,
                        "relisted; objects gone meanwhile are removed"
                    );
                }
            }
            Ok(Event::Apply(obj)) => {
                let (name, value) = obj.reduce(&store);
                store.update(|o| K::set(o, name, value));
            }
            Ok(Event::Delete(obj)) => {
                let name = object_name(obj.meta());
                store.update(|o| K::set(o, name, None));
            }
            Err(e) => report(kind, &e),
        }
    }
    // The watcher retries forever; it ends only with the runtime.
    tracing::debug!(resource = kind.resource(), "watch ended");
}

/// Starts the three watchers on the current tokio runtime.
pub fn spawn(client: Client, node_name: &str, service_proxy_name: Option<&str>) -> Arc<Store> {
    let store = Arc::new(Store {
        proxy_name: service_proxy_name.map(str::to_owned),
        ..Store::default()
    });
    let services: Api<Service> = Api::all(client.clone());
    let slices: Api<EndpointSlice> = Api::all(client.clone());
    let nodes: Api<Node> = Api::all(client);
    let service_selector = service_label_selector(service_proxy_name);
    let service_config = watcher::Config::default()
        .labels(&service_selector)
        .fields(SERVICE_FIELD_SELECTOR);
    let slice_selector = slice_label_selector();
    let slice_config = watcher::Config::default().labels(&slice_selector);
    tokio::spawn(feed(services, service_config, Arc::clone(&store)));
    tokio::spawn(feed(slices, slice_config, Arc::clone(&store)));
    let node_field = format!("metadata.name={node_name}");
    let named = watcher::Config::default().fields(&node_field);
    tokio::spawn(feed(nodes, named, Arc::clone(&store)));
    store
}

#[cfg(test)]
mod tests {
    use kube::core::Status;

    use super::*;

    fn status(code: u16, message: &str) -> Box<Status> {
        Box::new(Status {
            code,
            message: message.to_owned(),
            ..Status::default()
        })
    }

    #[test]
    fn a_forbidden_watch_names_the_verb_the_resource_and_the_cluster_role() {
        let error = watcher::Error::WatchStartFailed(kube::Error::Api(status(
            403,
            "endpointslices.discovery.k8s.io is forbidden: User \"system:serviceaccount:kube-system:rvs-proxy\" cannot watch resource \"endpointslices\"",
        )));
        let (severity, message) = explain(Kind::Slices, &error);
        assert_eq!(severity, Severity::Error);
        assert!(
            message.starts_with(
                "not allowed to watch endpointslices.discovery.k8s.io (403 Forbidden: "
            ),
            "{message}"
        );
        assert!(
            message.contains(
                "grant `watch` on endpointslices.discovery.k8s.io in rvs-proxy's ClusterRole"
            ),
            "{message}"
        );
        let list = watcher::Error::InitialListFailed(kube::Error::Api(status(403, "no")));
        assert!(
            explain(Kind::Services, &list)
                .1
                .starts_with("not allowed to list services")
        );
    }

    #[test]
    fn gone_is_a_relist_and_other_errors_a_retry() {
        let gone = watcher::Error::WatchError(status(410, "too old resource version: 1 (2)"));
        let (severity, message) = explain(Kind::Nodes, &gone);
        assert_eq!(severity, Severity::Info);
        assert!(
            message.contains("410 Gone") && message.ends_with("relisting"),
            "{message}"
        );
        assert!(is_gone(&gone), "a 410 skips the backoff");
        let unauthorized =
            watcher::Error::WatchFailed(kube::Error::Api(status(401, "Unauthorized")));
        assert_eq!(explain(Kind::Nodes, &unauthorized).0, Severity::Error);
        assert!(!is_gone(&unauthorized));
        let (severity, message) = explain(Kind::Services, &watcher::Error::NoResourceVersion);
        assert_eq!(severity, Severity::Warn);
        assert!(message.starts_with("cannot watch services ("), "{message}");
    }
}
