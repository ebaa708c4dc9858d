//! The Kubernetes service proxy.
//!
//! Data flows one way through this crate: sources (the Kubernetes API, or a
//! directory of manifests) produce typed Services and endpoints; a pure
//! function turns them into desired IPVS state; the reconciler diffs that
//! against what a dataplane reports and applies the minimal change set.
//! It is filled in by the `rvs-proxy` issues.

#![forbid(unsafe_code)]

pub use rvs_model::VirtualService;
