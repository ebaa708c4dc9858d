//! Scenarios: the file format, its parser, and finding scenario files.
//!
//! A scenario is one YAML file (`*.yaml` or `*.yml`) holding one mapping:
//!
//! ```yaml
//! name: etp-local                         # default: the file's stem
//! description: externalTrafficPolicy Local with no local endpoint
//! flags: [--cluster-cidr=10.244.0.0/16]   # kube-proxy flags, given to both proxies
//! config: |                               # optional KubeProxyConfiguration (--config)
//!   ...
//! node:                                   # the node both proxies run on
//!   name: conformance-node                # the Node object (and --hostname-override)
//!   register: true                        # create that Node object (default true)
//!   addresses: [{type: InternalIP, address: 10.0.2.15}]
//!   podCIDRs: [10.244.0.0/24]
//!   labels: {topology.kubernetes.io/zone: zone-a}
//!   hostname: null                        # set the guest's host name instead of
//!                                         # passing --hostname-override
//!   setup: |                              # guest shell, run before the proxy starts
//!     ip link add eth1 type dummy
//!   ipv6: false                           # the guest kernel's IPv6 (ipv6.disable=1)
//! steps:
//! - name: create
//!   node: |                               # guest shell, run before this step
//!     ip addr add 192.0.2.7/32 dev eth1
//!   delete: [service/old, team-a/endpointslice/old-1, node/other]
//!   apply:                                # API objects, applied with kubectl
//!   - apiVersion: v1
//!     kind: Service
//!     metadata: {name: web}
//!     spec: {clusterIP: 10.96.1.1, ports: [{port: 80}]}
//! ```
//!
//! Every field but `steps` is optional. In each step the harness first
//! runs the guest commands (`node`), then deletes, then applies the
//! objects in order (namespace `default` unless they say otherwise); an
//! object's `status`, which `kubectl apply` does not write, is then
//! written through the status subresource (a LoadBalancer's ingress, a
//! Node's addresses). Deletions name `KIND/NAME` (namespace `default`, or
//! a cluster-scoped kind) or `NAMESPACE/KIND/NAME`.
//!
//! There is no controller-manager: EndpointSlices are the scenario's to
//! write (with the `kubernetes.io/service-name` label), and a Namespace
//! cannot be deleted (nothing would finalize it): create the ones you
//! need, they stay for later scenarios. Node ports and health check node
//! ports the scenario does not fix are allocated at random by the API
//! server; fix them to keep diffs readable.
//!
//! Guest commands run under busybox `sh` with `set -e`, as root, with
//! iproute2's `ip`, `ipvsadm`, `ipset`, `iptables` and `nft` at hand.
//!
//! Reserved: the namespace `rvs-conformance` and the addresses
//! `10.96.255.254` and `10.255.255.254` (the harness's step marker, see
//! [`crate::harness`]), and the guest's `eth0` (10.0.2.15/24, the way to
//! the API server).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The environment variable naming extra scenario directories (or files),
/// colon-separated.
pub const SCENARIOS_ENV: &str = "RVS_CONFORMANCE_SCENARIOS";

/// The Node name scenarios run as unless they say otherwise.
pub const DEFAULT_NODE_NAME: &str = "conformance-node";

/// The guest's address on the VM's only NIC, which the default Node
/// object reports as its InternalIP.
pub const GUEST_NODE_IP: &str = "10.0.2.15";

/// The namespace the harness keeps its step marker in.
pub const MARKER_NAMESPACE: &str = "rvs-conformance";

/// Errors reading or checking scenarios.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// A file or directory could not be read.
    #[error("read {path}: {source}")]
    Read {
        /// The path.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A file is not a scenario.
    #[error("{origin}: {message}")]
    Invalid {
        /// The file (or the generator) the scenario came from.
        origin: String,
        /// What is wrong.
        message: String,
    },
}

/// One scenario: a node, the proxies' flags and a sequence of steps.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Its name: the file's stem unless the file says otherwise.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// What it checks, for people.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// kube-proxy flags given to both proxies (after the harness's own).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flags: Vec<String>,
    /// A `KubeProxyConfiguration` both proxies read with `--config`. It
    /// replaces kube-proxy's flags, so it must name the kubeconfig
    /// (`clientConnection.kubeconfig: /etc/conformance/kubeconfig`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<String>,
    /// The node the proxies run on.
    #[serde(default)]
    pub node: NodeSetup,
    /// The steps, compared after each one.
    pub steps: Vec<Step>,
}

/// The node: its Node object, its host name and guest-side setup.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NodeSetup {
    /// The Node object's name; also `--hostname-override` unless
    /// [`NodeSetup::hostname`] is set or the flags give one.
    #[serde(default = "default_node_name")]
    pub name: String,
    /// Whether the harness creates the Node object.
    #[serde(default = "yes")]
    pub register: bool,
    /// The Node's status addresses, as the API writes them (`type`,
    /// `address`); default its InternalIP 10.0.2.15 and its Hostname.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<BTreeMap<String, String>>,
    /// The Node's `spec.podCIDRs`; default `[10.244.0.0/24]`. An empty
    /// list written out (`[]`) leaves them unset.
    #[serde(default, rename = "podCIDRs", skip_serializing_if = "Option::is_none")]
    pub pod_cidrs: Option<Vec<String>>,
    /// Labels besides `kubernetes.io/hostname` and
    /// `topology.kubernetes.io/zone: zone-a` (which these may replace).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The guest's host name; when set, the proxies get no
    /// `--hostname-override` from the harness.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Shell commands run in the guest before the proxy starts.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub setup: String,
    /// Whether the guest kernel has IPv6. Without it (the default, which
    /// halves kube-proxy's work per sync under emulation) both proxies
    /// run IPv4 only; IPv6 and dual-stack scenarios set it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ipv6: bool,
}

fn default_node_name() -> String {
    DEFAULT_NODE_NAME.to_owned()
}

fn yes() -> bool {
    true
}

impl Default for NodeSetup {
    fn default() -> Self {
        NodeSetup {
            name: default_node_name(),
            register: true,
            addresses: Vec::new(),
            pod_cidrs: None,
            labels: BTreeMap::new(),
            hostname: None,
            setup: String::new(),
            ipv6: false,
        }
    }
}

impl NodeSetup {
    /// The Node object the harness registers (without its status).
    pub fn object(&self) -> Value {
        let mut labels = serde_json::Map::new();
        labels.insert("kubernetes.io/hostname".into(), self.name.clone().into());
        labels.insert("kubernetes.io/os".into(), "linux".into());
        labels.insert("topology.kubernetes.io/zone".into(), "zone-a".into());
        for (k, v) in &self.labels {
            labels.insert(k.clone(), v.clone().into());
        }
        let cidrs = self
            .pod_cidrs
            .clone()
            .unwrap_or_else(|| vec!["10.244.0.0/24".to_owned()]);
        let mut spec = serde_json::Map::new();
        if let Some(first) = cidrs.first() {
            spec.insert("podCIDR".into(), first.clone().into());
            spec.insert("podCIDRs".into(), cidrs.clone().into());
        }
        serde_json::json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": self.name, "labels": labels},
            "spec": spec,
        })
    }

    /// The Node's status as the harness writes it: addresses and Ready.
    pub fn status(&self) -> Value {
        let addresses: Vec<Value> = if self.addresses.is_empty() {
            vec![
                serde_json::json!({"type": "InternalIP", "address": GUEST_NODE_IP}),
                serde_json::json!({"type": "Hostname", "address": self.name}),
            ]
        } else {
            self.addresses
                .iter()
                .map(|a| serde_json::to_value(a).unwrap_or(Value::Null))
                .collect()
        };
        serde_json::json!({
            "addresses": addresses,
            "conditions": [{
                "type": "Ready", "status": "True", "reason": "KubeletReady",
                "message": "registered by rvs-conformance",
                "lastHeartbeatTime": "2026-01-01T00:00:00Z",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
            }],
        })
    }
}

/// One step: guest commands, deletions and objects to apply.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// Its name in reports (default `step-N`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Shell commands run in the guest before the step's API changes.
    /// A scenario with such commands gets VM boots of its own.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node: String,
    /// Objects to delete: `KIND/NAME` or `NAMESPACE/KIND/NAME`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub delete: Vec<String>,
    /// Objects to apply, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub apply: Vec<Value>,
}

/// An object a step deletes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectRef {
    /// Its namespace (ignored by kubectl for cluster-scoped kinds).
    pub namespace: String,
    /// Its kind or resource, as kubectl takes it (`service`, `endpointslice`).
    pub kind: String,
    /// Its name.
    pub name: String,
}

impl ObjectRef {
    /// Parses `KIND/NAME` or `NAMESPACE/KIND/NAME`.
    pub fn parse(text: &str) -> Option<ObjectRef> {
        let parts: Vec<&str> = text.trim().split('/').collect();
        let ok = |s: &&str| !s.is_empty() && !s.contains(char::is_whitespace);
        match parts.as_slice() {
            [kind, name] if ok(kind) && ok(name) => Some(ObjectRef {
                namespace: "default".into(),
                kind: (*kind).into(),
                name: (*name).into(),
            }),
            [ns, kind, name] if ok(ns) && ok(kind) && ok(name) => Some(ObjectRef {
                namespace: (*ns).into(),
                kind: (*kind).into(),
                name: (*name).into(),
            }),
            _ => None,
        }
    }
}

/// What scenarios sharing one pair of VM boots must have in common.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Profile {
    /// The flags.
    pub flags: Vec<String>,
    /// The configuration file.
    pub config: Option<String>,
    /// The node.
    pub node: NodeSetup,
    /// Set for a scenario that changes the guest in its steps: no other
    /// scenario shares its boots.
    pub alone: Option<String>,
}

impl Scenario {
    /// Parses a scenario from YAML text; `origin` names it in errors and
    /// gives its name when the text has none.
    pub fn parse(text: &str, origin: &str) -> Result<Scenario, ScenarioError> {
        let options = serde_saphyr::options! {
            strict_booleans: true,
            duplicate_keys: serde_saphyr::DuplicateKeyPolicy::Error,
        };
        let mut scenario: Scenario =
            serde_saphyr::from_str_with_options(text, options).map_err(|e| {
                ScenarioError::Invalid {
                    origin: origin.to_owned(),
                    message: e.to_string(),
                }
            })?;
        if scenario.name.is_empty() {
            scenario.name = Path::new(origin)
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| origin.to_owned());
        }
        scenario.check(origin)?;
        Ok(scenario)
    }

    /// Reads and parses one scenario file.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: path.to_owned(),
            source,
        })?;
        Scenario::parse(&text, &path.display().to_string())
    }

    /// Checks what the parser cannot: names, steps, objects, deletions.
    pub fn check(&mut self, origin: &str) -> Result<(), ScenarioError> {
        let invalid = |message: String| ScenarioError::Invalid {
            origin: origin.to_owned(),
            message,
        };
        if self.steps.is_empty() {
            return Err(invalid("no steps".into()));
        }
        if self.name.contains(char::is_whitespace) || self.name.contains('/') {
            return Err(invalid(format!(
                "name {:?}: no spaces or slashes",
                self.name
            )));
        }
        for (i, step) in self.steps.iter_mut().enumerate() {
            if step.name.is_empty() {
                step.name = format!("step-{}", i + 1);
            }
            for d in &step.delete {
                let r = ObjectRef::parse(d).ok_or_else(|| {
                    invalid(format!(
                        "step {:?}: delete {d:?} is not KIND/NAME or NAMESPACE/KIND/NAME",
                        step.name
                    ))
                })?;
                if r.namespace == MARKER_NAMESPACE {
                    return Err(invalid(format!("{MARKER_NAMESPACE} is the harness's")));
                }
            }
            for doc in &step.apply {
                let kind = doc.get("kind").and_then(Value::as_str);
                let name = doc.pointer("/metadata/name").and_then(Value::as_str);
                if kind.is_none() || name.is_none() || doc.get("apiVersion").is_none() {
                    return Err(invalid(format!(
                        "step {:?}: every object needs apiVersion, kind and metadata.name",
                        step.name
                    )));
                }
                if doc.pointer("/metadata/namespace").and_then(Value::as_str)
                    == Some(MARKER_NAMESPACE)
                {
                    return Err(invalid(format!("{MARKER_NAMESPACE} is the harness's")));
                }
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for step in &self.steps {
            if !seen.insert(step.name.as_str()) {
                return Err(invalid(format!("two steps named {:?}", step.name)));
            }
        }
        Ok(())
    }

    /// The VM profile: scenarios with the same one share VM boots.
    pub fn profile(&self) -> Profile {
        let changes_guest = self.steps.iter().any(|s| !s.node.trim().is_empty());
        Profile {
            flags: self.flags.clone(),
            config: self.config.clone(),
            node: self.node.clone(),
            alone: changes_guest.then(|| self.name.clone()),
        }
    }

    /// Renders the scenario back as YAML text (JSON, which YAML reads).
    pub fn to_yaml(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default() + "\n"
    }
}

/// Loads every scenario file (`*.yaml`, `*.yml`) of `dir`, by name.
pub fn load_dir(dir: &Path) -> Result<Vec<Scenario>, ScenarioError> {
    let read = |source| ScenarioError::Read {
        path: dir.to_owned(),
        source,
    };
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(read)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect();
    paths.sort();
    paths.iter().map(|p| Scenario::load(p)).collect()
}

/// Loads a directory of scenarios, or one scenario file.
pub fn load_path(path: &Path) -> Result<Vec<Scenario>, ScenarioError> {
    if path.is_dir() {
        load_dir(path)
    } else {
        Scenario::load(path).map(|s| vec![s])
    }
}

/// The scenarios shipped with this crate (`crates/conformance/scenarios`).
pub fn builtin_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios"))
}

/// The directories (or files) [`SCENARIOS_ENV`] names, in order.
pub fn env_paths() -> Vec<PathBuf> {
    std::env::var_os(SCENARIOS_ENV)
        .map(|v| {
            std::env::split_paths(&v)
                .filter(|p| !p.as_os_str().is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// Checks that no two scenarios share a name.
pub fn check_unique(scenarios: &[Scenario]) -> Result<(), ScenarioError> {
    let mut seen = std::collections::BTreeSet::new();
    for s in scenarios {
        if !seen.insert(s.name.as_str()) {
            return Err(ScenarioError::Invalid {
                origin: s.name.clone(),
                message: "two scenarios have this name".into(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const TEXT: &str = r#"
description: a web Service
flags: [--masquerade-all]
node:
  setup: |
    ip link add eth1 type dummy
steps:
- apply:
  - apiVersion: v1
    kind: Service
    metadata: {name: web}
    spec: {clusterIP: 10.96.1.1, ports: [{port: 80}]}
- name: gone
  delete: [service/web, team/endpointslice/web-1]
"#;

    #[test]
    fn a_scenario_parses_with_defaults() {
        let s = Scenario::parse(TEXT, "dir/web.yaml").unwrap();
        assert_eq!(s.name, "web");
        assert_eq!(s.flags, ["--masquerade-all"]);
        assert_eq!(s.node.name, DEFAULT_NODE_NAME);
        assert!(s.node.register);
        assert_eq!(s.steps[0].name, "step-1");
        assert_eq!(s.steps[1].name, "gone");
        assert_eq!(
            s.steps[0].apply[0].pointer("/spec/ports/0/port"),
            Some(&Value::from(80))
        );
        assert_eq!(
            ObjectRef::parse(&s.steps[1].delete[1]),
            Some(ObjectRef {
                namespace: "team".into(),
                kind: "endpointslice".into(),
                name: "web-1".into()
            })
        );
        assert_eq!(s.profile().alone, None);
        let again = Scenario::parse(&s.to_yaml(), "x.yaml").unwrap();
        assert_eq!(again, s);
    }

    #[test]
    fn mistakes_are_named() {
        let err = |t: &str| Scenario::parse(t, "f.yaml").unwrap_err().to_string();
        assert!(err("steps: []").contains("no steps"));
        assert!(err("stepz: []").contains("stepz"));
        assert!(err("steps: [{delete: [web]}]").contains("KIND/NAME"));
        assert!(err("steps: [{apply: [{kind: Service}]}]").contains("metadata.name"));
        assert!(err("steps: [{name: a}, {name: a}]").contains("two steps"));
        assert!(err("steps: [{delete: [rvs-conformance/service/marker]}]").contains("harness"));
    }

    #[test]
    fn guest_changes_make_a_scenario_run_alone() {
        let s = Scenario::parse(
            "steps: [{node: 'ip addr add 192.0.2.1/32 dev lo'}]",
            "n.yaml",
        )
        .unwrap();
        assert_eq!(s.profile().alone.as_deref(), Some("n"));
    }

    #[test]
    fn the_default_node_is_the_guest() {
        let node = NodeSetup::default();
        assert_eq!(
            node.status().pointer("/addresses/0/address"),
            Some(&Value::from(GUEST_NODE_IP))
        );
        assert_eq!(
            node.object().pointer("/spec/podCIDRs/0"),
            Some(&Value::from("10.244.0.0/24"))
        );
    }
}
