//! A directory of manifests as a source of Services, EndpointSlices and
//! Nodes.
//!
//! Every `*.yaml`, `*.yml` and `*.json` file in the directory (not
//! recursive, in name order) is read as a stream of YAML documents (JSON
//! is YAML). A document is a Service, an EndpointSlice, a Node, or a
//! `List` (`ServiceList`, ...) of them; other kinds are ignored. A
//! document that does not decode is reported with its file, position and
//! the failing field, and the others still load. [`DirCache`] keeps the
//! merged view and says which Services each load changed; `rvs-proxy`
//! watches the directory with inotify, or polls its [`fingerprint`] of
//! names, sizes and modification times where inotify is unavailable. A
//! file that stops parsing as a whole, or turns up empty, keeps its
//! previous objects (it is most likely being written); removing the file
//! withdraws them. Scalars follow YAML
//! 1.2 (only `true`/`false` are booleans), so names such as `n` or `on`
//! stay strings.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::cluster::{Changes, ClusterState, NodeInfo, ObjectName};

/// The objects found in a directory.
#[derive(Clone, Debug, Default)]
pub struct Manifests {
    /// Services.
    pub services: Vec<Service>,
    /// EndpointSlices.
    pub slices: Vec<EndpointSlice>,
    /// Nodes.
    pub nodes: Vec<Node>,
}

/// A document that could not be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{origin}: document {document}{object}: {problem}")]
pub struct ManifestError {
    /// The file (or other origin) it came from.
    pub origin: String,
    /// 1-based document number within the file.
    pub document: usize,
    /// ` (Kind namespace/name)` when known, else empty.
    pub object: String,
    /// What is wrong, with the field path when decoding failed.
    pub problem: String,
}

/// The directory itself cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read manifests directory {}", dir.display())]
pub struct DirError {
    /// The directory.
    pub dir: PathBuf,
    /// Why.
    #[source]
    pub source: std::io::Error,
}

fn manifest_files(dir: &Path) -> Result<Vec<PathBuf>, DirError> {
    let entries = std::fs::read_dir(dir).map_err(|source| DirError {
        dir: dir.to_owned(),
        source,
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("yaml" | "yml" | "json")
                )
        })
        .collect();
    files.sort();
    Ok(files)
}

/// Keeps the merged view of a directory and, per file, its size,
/// modification time and the names of the objects it defines: a change to
/// one file of a large directory re-parses and re-validates only that
/// file, updates only the objects it defined or defines, and reports the
/// Services that changed — work in proportion to the change, not to the
/// directory. Objects are held once, reduced, in the merged view (neither
/// the raw Kubernetes objects, several times larger, nor a second copy
/// per file).
///
/// An object defined in several files takes its value from the last file
/// in name order, as if the files were applied in order; when that file
/// drops it, the next file defining it is read again.
#[derive(Debug)]
pub struct DirCache {
    node_name: String,
    proxy_name: Option<String>,
    files: BTreeMap<PathBuf, CachedFile>,
    /// The merged view of every file.
    merged: ClusterState,
    /// Files defining each Service and EndpointSlice, in name order
    /// (nearly always one).
    service_files: HashMap<ObjectName, Vec<PathBuf>>,
    slice_files: HashMap<ObjectName, Vec<PathBuf>>,
}

#[derive(Debug, Default)]
struct CachedFile {
    len: u64,
    modified: Option<SystemTime>,
    services: Vec<ObjectName>,
    slices: Vec<ObjectName>,
    node: Option<NodeInfo>,
    errors: Vec<String>,
}

/// What one [`DirCache::load`] found.
#[derive(Debug)]
pub struct Loaded<'a> {
    /// The directory's merged view.
    pub state: &'a ClusterState,
    /// What changed since the previous load.
    pub changes: Changes,
    /// Every problem found (bad documents and invalid objects), file by
    /// file.
    pub errors: Vec<String>,
}

/// A file read again in this load: its objects, and the names it defined
/// before.
struct Reread {
    path: PathBuf,
    cluster: ClusterState,
    old_services: Vec<ObjectName>,
    old_slices: Vec<ObjectName>,
}

impl DirCache {
    /// A cache that builds views for node `node_name` (and
    /// `--service-proxy-name`, if any).
    pub fn new(node_name: &str, proxy_name: Option<&str>) -> DirCache {
        DirCache {
            node_name: node_name.to_owned(),
            proxy_name: proxy_name.map(str::to_owned),
            files: BTreeMap::new(),
            merged: ClusterState::default(),
            service_files: HashMap::new(),
            slice_files: HashMap::new(),
        }
    }

    /// The merged view as of the last load.
    pub fn state(&self) -> &ClusterState {
        &self.merged
    }

    /// Reads and validates one file: its objects, and every problem found.
    fn read(&self, file: &Path) -> (ClusterState, Vec<String>, bool) {
        let origin = file.display().to_string();
        match std::fs::read_to_string(file) {
            Ok(text) => read_file_text(&text, &origin, &self.node_name, self.proxy_name.as_deref()),
            Err(e) => {
                let errors = vec![unreadable_file(origin, &e).to_string()];
                (ClusterState::default(), errors, true)
            }
        }
    }

    /// Loads `dir`, re-reading only files added or changed since the last
    /// call (by size and modification time) and forgetting removed ones.
    pub fn load(&mut self, dir: &Path) -> Result<Loaded<'_>, DirError> {
        let files = manifest_files(dir)?;
        let mut reread: Vec<Reread> = Vec::new();
        let mut node = false;
        let gone: Vec<PathBuf> = self
            .files
            .keys()
            .filter(|path| files.binary_search(path).is_err())
            .cloned()
            .collect();
        for path in gone {
            if let Some(old) = self.files.remove(&path) {
                node |= old.node.is_some();
                reread.push(Reread {
                    path,
                    cluster: ClusterState::default(),
                    old_services: old.services,
                    old_slices: old.slices,
                });
            }
        }
        for file in files {
            let meta = std::fs::metadata(&file).ok();
            let len = meta.as_ref().map_or(0, std::fs::Metadata::len);
            let modified = meta.and_then(|m| m.modified().ok());
            let fresh = self
                .files
                .get(&file)
                .is_some_and(|c| c.len == len && c.modified == modified && modified.is_some());
            if fresh {
                continue;
            }
            let (mut cluster, mut errors, unreadable) = self.read(&file);
            // An empty file that held objects is most likely being written
            // in place (truncated, not yet filled): withdrawing every
            // Service it held would cut their traffic. Removing the file
            // withdraws them.
            let truncated = len == 0
                && self.files.get(&file).is_some_and(|f| {
                    !f.services.is_empty() || !f.slices.is_empty() || f.node.is_some()
                });
            if truncated {
                errors = vec![format!(
                    "{}: empty (being written?); remove the file to withdraw its objects",
                    file.display()
                )];
            }
            if (unreadable || truncated)
                && let Some(previous) = self.files.get_mut(&file)
            {
                // The whole file is unreadable (say, caught mid-write or
                // mistyped): keep what it held before rather than
                // withdrawing its Services.
                previous.errors = errors
                    .iter()
                    .map(|e| format!("{e} (keeping the file's previous objects)"))
                    .collect();
                // Read it again next time, whatever its size then.
                previous.modified = None;
                continue;
            }
            let old = self.files.remove(&file).unwrap_or_default();
            node |= old.node.is_some() || cluster.node.is_some();
            self.files.insert(
                file.clone(),
                CachedFile {
                    len,
                    modified,
                    services: cluster.services.keys().cloned().collect(),
                    slices: cluster.slices.keys().cloned().collect(),
                    node: cluster.node.take(),
                    errors,
                },
            );
            reread.push(Reread {
                path: file,
                cluster,
                old_services: old.services,
                old_slices: old.slices,
            });
        }
        let mut changes = self.remerge(reread);
        if node {
            let value = self.files.values().rev().find_map(|f| f.node.as_ref());
            if self.merged.node.as_ref() != value {
                self.merged.node = value.cloned();
                changes.node = true;
            }
        }
        let errors = self
            .files
            .values()
            .flat_map(|f| f.errors.iter().cloned())
            .collect();
        Ok(Loaded {
            state: &self.merged,
            changes,
            errors,
        })
    }

    /// Brings the merged view up to date with the files read again,
    /// returning the Services that changed.
    fn remerge(&mut self, mut reread: Vec<Reread>) -> Changes {
        let mut changes = Changes::default();
        // Which file defined each touched object before, and after.
        let mut services: BTreeMap<ObjectName, Option<PathBuf>> = BTreeMap::new();
        let mut slices: BTreeMap<ObjectName, Option<PathBuf>> = BTreeMap::new();
        for r in &reread {
            for name in r.old_services.iter().chain(r.cluster.services.keys()) {
                services
                    .entry(name.clone())
                    .or_insert_with(|| winner(&self.service_files, name));
            }
            for name in r.old_slices.iter().chain(r.cluster.slices.keys()) {
                slices
                    .entry(name.clone())
                    .or_insert_with(|| winner(&self.slice_files, name));
            }
        }
        for r in &reread {
            for name in &r.old_services {
                unlink(&mut self.service_files, name, &r.path);
            }
            for name in &r.old_slices {
                unlink(&mut self.slice_files, name, &r.path);
            }
            for name in r.cluster.services.keys() {
                link(&mut self.service_files, name, &r.path);
            }
            for name in r.cluster.slices.keys() {
                link(&mut self.slice_files, name, &r.path);
            }
        }
        // An object whose definition falls back to a file not read in this
        // load: read that file again (objects defined twice only).
        let mut fallback: BTreeSet<PathBuf> = BTreeSet::new();
        fallbacks(&self.service_files, &services, &reread, &mut fallback);
        fallbacks(&self.slice_files, &slices, &reread, &mut fallback);
        for path in fallback {
            let (cluster, _, _) = self.read(&path);
            reread.push(Reread {
                path,
                cluster,
                old_services: Vec::new(),
                old_slices: Vec::new(),
            });
        }
        for (name, before) in services {
            let Some(value) = settle(&self.service_files, &name, before, &mut reread, |c, n| {
                c.services.remove(n)
            }) else {
                continue;
            };
            if self.merged.services.get(&name) == value.as_ref() {
                continue;
            }
            match value {
                Some(v) => self.merged.services.insert(name.clone(), v),
                None => self.merged.services.remove(&name),
            };
            changes.services.insert(name);
        }
        for (name, before) in slices {
            let Some(value) = settle(&self.slice_files, &name, before, &mut reread, |c, n| {
                c.slices.remove(n)
            }) else {
                continue;
            };
            let old = self.merged.slices.get(&name);
            if old == value.as_ref() {
                continue;
            }
            changes.services.extend(old.map(|s| s.service.clone()));
            changes
                .services
                .extend(value.as_ref().map(|s| s.service.clone()));
            match value {
                Some(v) => self.merged.slices.insert(name, v),
                None => self.merged.slices.remove(&name),
            };
        }
        changes
    }
}

/// The value object `name` takes now, taken from the file that now wins
/// (read in this load); `None` when the same unchanged file still wins,
/// so the merged view already holds its value.
fn settle<V>(
    index: &HashMap<ObjectName, Vec<PathBuf>>,
    name: &ObjectName,
    before: Option<PathBuf>,
    reread: &mut [Reread],
    take: impl Fn(&mut ClusterState, &ObjectName) -> Option<V>,
) -> Option<Option<V>> {
    let after = winner(index, name);
    let read_now = |p: &PathBuf| reread.iter().any(|r| &r.path == p);
    if after.is_some() && after == before && !after.as_ref().is_some_and(read_now) {
        return None;
    }
    Some(after.and_then(|p| {
        reread
            .iter_mut()
            .find(|r| r.path == p)
            .and_then(|r| take(&mut r.cluster, name))
    }))
}

/// Files not read in this load that now define one of `touched` in place
/// of the file that did.
fn fallbacks(
    index: &HashMap<ObjectName, Vec<PathBuf>>,
    touched: &BTreeMap<ObjectName, Option<PathBuf>>,
    reread: &[Reread],
    out: &mut BTreeSet<PathBuf>,
) {
    for (name, before) in touched {
        if let Some(after) = winner(index, name)
            && Some(&after) != before.as_ref()
            && !reread.iter().any(|r| r.path == after)
        {
            out.insert(after);
        }
    }
}

/// The file whose definition of `name` wins: the last in name order.
fn winner(index: &HashMap<ObjectName, Vec<PathBuf>>, name: &ObjectName) -> Option<PathBuf> {
    index.get(name).and_then(|paths| paths.last()).cloned()
}

fn link(index: &mut HashMap<ObjectName, Vec<PathBuf>>, name: &ObjectName, path: &Path) {
    let paths = index.entry(name.clone()).or_default();
    if let Err(at) = paths.binary_search_by(|p| p.as_path().cmp(path)) {
        paths.insert(at, path.to_owned());
    }
}

fn unlink(index: &mut HashMap<ObjectName, Vec<PathBuf>>, name: &ObjectName, path: &Path) {
    if let Some(paths) = index.get_mut(name) {
        paths.retain(|p| p != path);
        if paths.is_empty() {
            index.remove(name);
        }
    }
}

/// Loads every manifest file of `dir` as Kubernetes objects.
pub fn load_dir(dir: &Path) -> Result<(Manifests, Vec<ManifestError>), DirError> {
    let mut manifests = Manifests::default();
    let mut errors = Vec::new();
    for file in manifest_files(dir)? {
        load_file(&file, &mut manifests, &mut errors);
    }
    Ok((manifests, errors))
}

fn load_file(file: &Path, out: &mut Manifests, errors: &mut Vec<ManifestError>) {
    let origin = file.display().to_string();
    match std::fs::read_to_string(file) {
        Ok(text) => parse_into(&text, &origin, out, errors),
        Err(e) => errors.push(unreadable_file(origin, &e)),
    }
}

/// A file that could not be read at all (document 0: the whole file).
fn unreadable_file(origin: String, e: &std::io::Error) -> ManifestError {
    ManifestError {
        origin,
        document: 0,
        object: String::new(),
        problem: e.to_string(),
    }
}

/// A value that changes whenever a manifest file is added, removed or
/// modified.
pub fn fingerprint(dir: &Path) -> Result<Vec<(PathBuf, u64, Option<SystemTime>)>, DirError> {
    Ok(manifest_files(dir)?
        .into_iter()
        .map(|p| {
            let meta = std::fs::metadata(&p).ok();
            let len = meta.as_ref().map_or(0, std::fs::Metadata::len);
            let modified = meta.and_then(|m| m.modified().ok());
            (p, len, modified)
        })
        .collect())
}

/// One manifest file's text, as a cluster view for node `node_name` (and
/// `--service-proxy-name`) with every problem found: a JSON `List` is
/// reduced object by object while it is parsed ([`reduce_json_list`]);
/// anything else takes the careful path ([`parse_into`], then
/// [`ClusterState::build`]), which names the document and field of each
/// problem. Both paths give the same view and errors for the same List.
pub fn read_text(
    text: &str,
    origin: &str,
    node_name: &str,
    proxy_name: Option<&str>,
) -> (ClusterState, Vec<String>) {
    let (cluster, errors, _) = read_file_text(text, origin, node_name, proxy_name);
    (cluster, errors)
}

/// [`read_text`], and whether the text as a whole could not be read (not
/// YAML or JSON: a file caught half-written keeps its objects).
fn read_file_text(
    text: &str,
    origin: &str,
    node_name: &str,
    proxy_name: Option<&str>,
) -> (ClusterState, Vec<String>, bool) {
    if origin.ends_with(".json")
        && let Some((cluster, errors)) = reduce_json_list(text, node_name, proxy_name)
    {
        return (cluster, errors, false);
    }
    let mut objects = Manifests::default();
    let mut doc_errors = Vec::new();
    parse_into(text, origin, &mut objects, &mut doc_errors);
    let (cluster, object_errors) = ClusterState::build(
        &objects.services,
        &objects.slices,
        &objects.nodes,
        node_name,
        proxy_name,
    );
    let unreadable = doc_errors.iter().any(|e| e.document == 0);
    let errors = doc_errors
        .iter()
        .map(ToString::to_string)
        .chain(object_errors.iter().map(ToString::to_string))
        .collect();
    (cluster, errors, unreadable)
}

/// Parses one file's text, appending objects and errors.
pub fn parse_into(text: &str, origin: &str, out: &mut Manifests, errors: &mut Vec<ManifestError>) {
    if origin.ends_with(".json") && parse_json_fast(text, out) {
        return;
    }
    // YAML 1.2 booleans: a name like `n` or `on` stays a string. The
    // parser's default budget (1,024 documents) is sized for config files;
    // a cluster's worth of objects in one file is far larger, so raise it
    // well past 100,000 Services while keeping the depth guard.
    let options = serde_saphyr::options! {
        strict_booleans: true,
        budget: serde_saphyr::budget! {
            max_documents: 10_000_000,
            max_nodes: 500_000_000,
            max_events: 1_000_000_000,
        },
    };
    // JSON (what `kubectl get -o json` and the API server write) takes the
    // much faster JSON parser; YAML streams the YAML one.
    let parsed = if origin.ends_with(".json") {
        serde_json::from_str::<Value>(text)
            .map(|v| vec![v])
            .map_err(|e| e.to_string())
    } else {
        serde_saphyr::from_multiple_with_options(text, options).map_err(|e| e.to_string())
    };
    let docs: Vec<Value> = match parsed {
        Ok(docs) => docs,
        Err(e) => {
            errors.push(ManifestError {
                origin: origin.to_owned(),
                document: 0,
                object: String::new(),
                problem: format!("not YAML or JSON: {e}"),
            });
            return;
        }
    };
    for (i, doc) in docs.into_iter().enumerate() {
        add_document(doc, origin, i + 1, out, errors);
    }
}

/// One object of a JSON manifest, decoded straight into its type.
#[derive(serde::Deserialize)]
#[serde(tag = "kind")]
enum TypedObject {
    Service(Box<k8s_openapi::api::core::v1::Service>),
    EndpointSlice(Box<EndpointSlice>),
    Node(Box<Node>),
    #[serde(alias = "ServiceList", alias = "EndpointSliceList", alias = "NodeList")]
    List {
        items: Vec<TypedObject>,
    },
    #[serde(other)]
    Other,
}

impl TypedObject {
    fn into_manifests(self, out: &mut Manifests) {
        match self {
            TypedObject::Service(s) => out.services.push(*s),
            TypedObject::EndpointSlice(s) => out.slices.push(*s),
            TypedObject::Node(n) => out.nodes.push(*n),
            TypedObject::List { items } => items.into_iter().for_each(|i| i.into_manifests(out)),
            TypedObject::Other => {}
        }
    }
}

/// Decodes a JSON manifest directly into typed objects, without building
/// a generic value tree first (several times the file's size for a
/// cluster-sized List). Returns `false` when the file needs the careful
/// path, which reports each bad document with its field.
fn parse_json_fast(text: &str, out: &mut Manifests) -> bool {
    match serde_json::from_str::<TypedObject>(text) {
        Ok(object) => {
            object.into_manifests(out);
            true
        }
        Err(_) => false,
    }
}

/// Reduces a JSON `List` (what `kubectl get -o json` writes) object by
/// object while parsing it, so a cluster-sized file never exists as typed
/// Kubernetes objects all at once (nor as a buffered value tree, which an
/// internally tagged enum over the whole List would build). `None` when
/// the file is not a List of well-formed objects: the careful path then
/// reports each bad document with its field.
pub fn reduce_json_list(
    text: &str,
    node_name: &str,
    proxy_name: Option<&str>,
) -> Option<(ClusterState, Vec<String>)> {
    let mut reducer = Reducer {
        node_name,
        proxy_name,
        cluster: ClusterState::default(),
        errors: Vec::new(),
    };
    let mut de = serde_json::Deserializer::from_str(text);
    let is_list = serde::de::DeserializeSeed::deserialize(TopList(&mut reducer), &mut de).ok()?;
    de.end().ok()?;
    is_list.then_some((reducer.cluster, reducer.errors))
}

/// Builds a cluster view one object at a time.
struct Reducer<'a> {
    node_name: &'a str,
    proxy_name: Option<&'a str>,
    cluster: ClusterState,
    errors: Vec<String>,
}

impl Reducer<'_> {
    fn add(&mut self, object: TypedObject) {
        let result = match object {
            TypedObject::Service(svc) => self.cluster.add_service(&svc, self.proxy_name),
            TypedObject::EndpointSlice(slice) => self.cluster.add_slice(&slice),
            TypedObject::Node(node) => self.cluster.add_node(&node, self.node_name),
            TypedObject::List { items } => {
                items.into_iter().for_each(|i| self.add(i));
                Ok(())
            }
            TypedObject::Other => Ok(()),
        };
        if let Err(e) = result {
            self.errors.push(e.to_string());
        }
    }
}

/// The top of a JSON List: `items` streamed through the reducer, `kind`
/// checked, everything else skipped. Yields whether it was a List.
struct TopList<'r, 'a>(&'r mut Reducer<'a>);

impl<'de> serde::de::DeserializeSeed<'de> for TopList<'_, '_> {
    type Value = bool;
    fn deserialize<D: serde::Deserializer<'de>>(self, de: D) -> Result<bool, D::Error> {
        de.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for TopList<'_, '_> {
    type Value = bool;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a List object")
    }
    fn visit_map<M: serde::de::MapAccess<'de>>(self, mut map: M) -> Result<bool, M::Error> {
        let mut items = false;
        let mut list_kind = false;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            match key.as_ref() {
                "items" => {
                    map.next_value_seed(Items(&mut *self.0))?;
                    items = true;
                }
                "kind" => {
                    let kind: std::borrow::Cow<'de, str> = map.next_value()?;
                    list_kind = kind.ends_with("List");
                }
                _ => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        Ok(items && list_kind)
    }
}

/// A List's `items`, each decoded (alone) and reduced at once.
struct Items<'r, 'a>(&'r mut Reducer<'a>);

impl<'de> serde::de::DeserializeSeed<'de> for Items<'_, '_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
        de.deserialize_seq(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Items<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a list of objects")
    }
    fn visit_seq<S: serde::de::SeqAccess<'de>>(self, mut seq: S) -> Result<(), S::Error> {
        use serde::de::Error;
        // Each item is first delimited (no allocation), its `kind` read
        // with every other field skipped, then decoded straight into its
        // type: cheaper than buffering it as a generic value tree to find
        // the tag, which an internally tagged enum does.
        #[derive(serde::Deserialize)]
        struct Kind<'a> {
            #[serde(borrow)]
            kind: Option<std::borrow::Cow<'a, str>>,
        }
        while let Some(raw) = seq.next_element::<&'de serde_json::value::RawValue>()? {
            let text = raw.get();
            let kind = serde_json::from_str::<Kind<'_>>(text).map_err(S::Error::custom)?;
            let object = match kind.kind.as_deref() {
                Some("Service") => TypedObject::Service(Box::new(
                    serde_json::from_str(text).map_err(S::Error::custom)?,
                )),
                Some("EndpointSlice") => TypedObject::EndpointSlice(Box::new(
                    serde_json::from_str(text).map_err(S::Error::custom)?,
                )),
                Some("Node") => TypedObject::Node(Box::new(
                    serde_json::from_str(text).map_err(S::Error::custom)?,
                )),
                Some(k) if k.ends_with("List") => {
                    serde_json::from_str(text).map_err(S::Error::custom)?
                }
                _ => TypedObject::Other,
            };
            self.0.add(object);
        }
        Ok(())
    }
}

fn describe(doc: &Value) -> String {
    let kind = doc.get("kind").and_then(Value::as_str).unwrap_or("?");
    let meta = doc.get("metadata");
    let name = meta
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("?");
    match meta
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str)
    {
        Some(ns) => format!(" ({kind} {ns}/{name})"),
        None => format!(" ({kind} {name})"),
    }
}

fn decode<T: DeserializeOwned>(doc: Value) -> Result<T, String> {
    serde_path_to_error::deserialize(doc).map_err(|e| {
        let path = e.path().to_string();
        format!("field {path}: {}", e.into_inner())
    })
}

fn add_document(
    doc: Value,
    origin: &str,
    document: usize,
    out: &mut Manifests,
    errors: &mut Vec<ManifestError>,
) {
    let object = describe(&doc);
    let fail = |problem: String| ManifestError {
        origin: origin.to_owned(),
        document,
        object: object.clone(),
        problem,
    };
    let Some(kind) = doc.get("kind").and_then(Value::as_str).map(str::to_owned) else {
        errors.push(fail("no `kind`".into()));
        return;
    };
    let result = match kind.as_str() {
        "Service" => decode(doc).map(|s| out.services.push(s)),
        "EndpointSlice" => decode(doc).map(|s| out.slices.push(s)),
        "Node" => decode(doc).map(|n| out.nodes.push(n)),
        k if k == "List" || k.ends_with("List") => {
            match doc.get("items").and_then(Value::as_array) {
                Some(items) => {
                    for item in items.clone() {
                        add_document(item, origin, document, out, errors);
                    }
                    Ok(())
                }
                None => Err("a List without `items`".into()),
            }
        }
        other => {
            tracing::debug!(
                origin,
                document,
                kind = other,
                "ignoring object of a kind the proxy does not use"
            );
            Ok(())
        }
    };
    if let Err(problem) = result {
        errors.push(fail(problem));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  clusterIP: 10.96.0.10
  ports: [{name: http, port: 80, protocol: TCP, targetPort: 8080}]
---
apiVersion: v1
kind: List
items:
- apiVersion: discovery.k8s.io/v1
  kind: EndpointSlice
  metadata:
    name: web-abc
    namespace: default
    labels: {kubernetes.io/service-name: web}
  addressType: IPv4
  ports: [{name: http, port: 8080, protocol: TCP}]
  endpoints:
  - addresses: [10.244.1.5]
    conditions: {ready: true}
- apiVersion: v1
  kind: ConfigMap
  metadata: {name: ignored}
---
{"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-a"}}
"#;

    #[test]
    fn json_lists_reduce_while_parsing_as_the_careful_path_does() {
        let list = r#"{"apiVersion":"v1","items":[
            {"kind":"Service","metadata":{"name":"web","namespace":"default"},"spec":{"clusterIP":"10.96.0.10","ports":[{"name":"http","port":80}]}},
            {"kind":"Service","metadata":{"name":"bad","namespace":"default"},"spec":{"clusterIP":"not-an-ip","ports":[{"port":80}]}},
            {"kind":"EndpointSlice","metadata":{"name":"web-1","namespace":"default","labels":{"kubernetes.io/service-name":"web"}},"addressType":"IPv4","ports":[{"name":"http","port":8080}],"endpoints":[{"addresses":["10.244.0.5"]}]},
            {"kind":"ConfigMap","metadata":{"name":"ignored"}},
            {"kind":"NodeList","items":[{"kind":"Node","metadata":{"name":"other"}},{"kind":"Node","metadata":{"name":"node-a"}}]}
        ],"kind":"List","metadata":{}}"#;
        let (fast, fast_errors) = reduce_json_list(list, "node-a", None).unwrap();
        let mut m = Manifests::default();
        let mut errors = Vec::new();
        parse_into(list, "x.yaml", &mut m, &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        let (careful, careful_errors) =
            ClusterState::build(&m.services, &m.slices, &m.nodes, "node-a", None);
        assert_eq!(fast, careful);
        assert_eq!(fast.services.len(), 1);
        assert_eq!(fast.node.as_ref().map(|n| n.name.as_str()), Some("node-a"));
        let careful_errors: Vec<String> = careful_errors.iter().map(ToString::to_string).collect();
        assert_eq!(fast_errors, careful_errors);
        assert!(fast_errors[0].contains("bad"), "{fast_errors:?}");
        // Not a List, or an item that does not decode: the careful path.
        assert!(
            reduce_json_list(r#"{"kind":"Service","metadata":{"name":"a"}}"#, "n", None).is_none()
        );
        let bad_field = list.replace(r#""port":8080"#, r#""port":"eighty""#);
        assert!(reduce_json_list(&bad_field, "node-a", None).is_none());
        assert!(reduce_json_list(r#"{"kind":"ConfigMap","items":[]}"#, "n", None).is_none());
    }

    #[test]
    fn documents_lists_and_json_load() {
        let mut m = Manifests::default();
        let mut errors = Vec::new();
        parse_into(SAMPLE, "sample.yaml", &mut m, &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!((m.services.len(), m.slices.len(), m.nodes.len()), (1, 1, 1));
        assert_eq!(
            m.slices[0].endpoints[0].addresses,
            vec!["10.244.1.5".to_owned()]
        );
    }

    #[test]
    fn a_bad_document_names_file_object_and_field_and_the_rest_loads() {
        let text = "kind: Service\nmetadata: {name: bad, namespace: ns1}\nspec:\n  ports: [{port: eighty}]\n---\nkind: Node\nmetadata: {name: n}\n---\nkind: Node\nmetadata: {name: on}\n";
        let mut m = Manifests::default();
        let mut errors = Vec::new();
        parse_into(text, "bad.yaml", &mut m, &mut errors);
        assert_eq!(m.nodes.len(), 2, "{errors:?}");
        assert_eq!(m.nodes[1].metadata.name.as_deref(), Some("on"));
        assert_eq!(errors.len(), 1);
        let msg = errors[0].to_string();
        assert!(
            msg.starts_with("bad.yaml: document 1 (Service ns1/bad): field spec.ports[0].port"),
            "{msg}"
        );
    }

    #[test]
    fn thousands_of_documents_in_one_file_load() {
        let doc = "kind: Node\nmetadata: {name: n}\n---\n";
        let mut m = Manifests::default();
        let mut errors = Vec::new();
        parse_into(&doc.repeat(5000), "big.yaml", &mut m, &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(m.nodes.len(), 5000);
    }

    #[test]
    fn json_lists_take_the_typed_path_and_bad_ones_the_careful_one() {
        let good = r#"{"kind":"List","items":[{"kind":"Node","metadata":{"name":"a"}},{"kind":"ConfigMap","metadata":{"name":"x"}},{"kind":"ServiceList","items":[{"kind":"Service","metadata":{"name":"s"}}]}]}"#;
        let mut m = Manifests::default();
        assert!(parse_json_fast(good, &mut m));
        assert_eq!((m.nodes.len(), m.services.len()), (1, 1));
        let bad = r#"{"kind":"List","items":[{"kind":"Service","metadata":{"name":"s","namespace":"n"},"spec":{"ports":[{"port":"x"}]}}]}"#;
        assert!(!parse_json_fast(bad, &mut Manifests::default()));
        let mut m = Manifests::default();
        let mut errors = Vec::new();
        parse_into(bad, "c.json", &mut m, &mut errors);
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0]
                .to_string()
                .contains("(Service n/s): field spec.ports[0].port"),
            "{}",
            errors[0]
        );
    }

    #[test]
    fn invalid_yaml_is_reported_not_panicked() {
        let mut m = Manifests::default();
        let mut errors = Vec::new();
        parse_into("kind: [unclosed\n", "x.yaml", &mut m, &mut errors);
        assert_eq!(errors.len(), 1);
        assert!(errors[0].problem.starts_with("not YAML"), "{:?}", errors[0]);
    }

    #[test]
    fn directories_load_in_name_order_and_fingerprints_change() {
        let dir = std::env::temp_dir().join(format!("rvs-manifests-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("b.yaml"), SAMPLE).unwrap();
        std::fs::write(dir.join("notes.txt"), "not a manifest").unwrap();
        let before = fingerprint(&dir).unwrap();
        let (m, errors) = load_dir(&dir).unwrap();
        assert!(errors.is_empty());
        assert_eq!(m.services.len(), 1);
        std::fs::write(
            dir.join("a.json"),
            r#"{"kind":"Node","metadata":{"name":"n2"}}"#,
        )
        .unwrap();
        assert_ne!(fingerprint(&dir).unwrap(), before);
        assert_eq!(load_dir(&dir).unwrap().0.nodes.len(), 2);
        // The cache re-reads only what changed, notices removals and says
        // what changed.
        let mut cache = DirCache::new("n2", None);
        let loaded = cache.load(&dir).unwrap();
        assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
        assert_eq!(
            loaded.state.node.as_ref().map(|n| n.name.as_str()),
            Some("n2")
        );
        assert_eq!(loaded.state.services.len(), 1);
        assert!(loaded.changes.node);
        assert_eq!(loaded.changes.services.len(), 1);
        assert!(cache.load(&dir).unwrap().changes.is_empty());
        std::fs::write(
            dir.join("a.json"),
            r#"{"kind":"Node","metadata":{"name":"n3"}} "#,
        )
        .unwrap();
        let loaded = cache.load(&dir).unwrap();
        assert_eq!(loaded.state.node, None, "n2 is gone");
        assert!(loaded.changes.node && loaded.changes.services.is_empty());
        std::fs::remove_file(dir.join("a.json")).unwrap();
        let loaded = cache.load(&dir).unwrap();
        assert_eq!(loaded.state.services.len(), 1);
        assert!(loaded.changes.is_empty(), "{:?}", loaded.changes);
        // A file that stops parsing keeps its previous objects.
        std::fs::write(dir.join("b.yaml"), "kind: [half-written\n").unwrap();
        let loaded = cache.load(&dir).unwrap();
        assert_eq!(loaded.state.services.len(), 1, "{:?}", loaded.errors);
        assert!(loaded.changes.is_empty(), "{:?}", loaded.changes);
        assert!(
            loaded.errors[0].contains("keeping the file's previous objects"),
            "{:?}",
            loaded.errors
        );
        // So does one caught truncated, before its writer fills it.
        std::fs::write(dir.join("b.yaml"), SAMPLE).unwrap();
        assert_eq!(cache.load(&dir).unwrap().state.services.len(), 1);
        std::fs::write(dir.join("b.yaml"), "").unwrap();
        let loaded = cache.load(&dir).unwrap();
        assert_eq!(loaded.state.services.len(), 1, "{:?}", loaded.errors);
        assert!(loaded.changes.is_empty(), "{:?}", loaded.changes);
        assert!(loaded.errors[0].contains("empty"), "{:?}", loaded.errors);
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(load_dir(&dir).is_err());
    }
}
