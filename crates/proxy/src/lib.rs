//! The Kubernetes service proxy: kube-proxy's IPVS mode, in Rust.
//!
//! Data flows one way through this crate:
//!
//! * [`source`]: where Kubernetes objects come from (a directory of
//!   manifests; the API server).
//! * [`cluster`]: the typed, validated view of Services, EndpointSlices
//!   and this node that the rest works on; malformed objects are rejected
//!   there with errors naming the object and field.
//! * [`desired`]: a pure function from that view and the [`config`] to the
//!   IPVS virtual servers, real servers and `kube-ipvs0` addresses the node
//!   should have.
//! * [`reconcile`]: diffs desired state against what a dataplane reports
//!   and plans the minimal change set, never touching state it does not
//!   own, draining removed TCP real servers gracefully.
//! * [`sync`]: one sync against a dataplane through the shared
//!   [`rvs_model::admin::Admin`] surface and an address binder.
//! * [`schedule`]: when to sync, in full or in part, re-check draining
//!   real servers, read counters and back off — a sans-IO state machine.
//! * [`flags`]: kube-proxy's command line, flag by flag, and the pass
//!   that reads it as kube-proxy does.
//! * [`run`]: the loop carrying out the schedule against a source, a
//!   syncer, the rest of the node ([`run::NodeSide`]) and the observers
//!   ([`observe`]: kube-proxy's metrics and health servers).

pub mod cluster;
pub mod config;
pub mod config_file;
pub mod desired;
pub mod flags;
pub mod ipsets;
pub mod observe;
pub mod rebalance;
pub mod reconcile;
pub mod run;
pub mod schedule;
pub mod source;
pub mod sync;

pub use cluster::ClusterState;
pub use config::ProxyConfig;
pub use desired::{Desired, desired_state};
