//! Where Kubernetes objects come from.
//!
//! * [`manifests`]: a directory of YAML/JSON manifests, as `kubectl get -o
//!   yaml` prints them — the embedded default that needs no cluster.
//! * [`api`]: the Kubernetes API server, watched with `kube`.

pub mod api;
pub mod manifests;
