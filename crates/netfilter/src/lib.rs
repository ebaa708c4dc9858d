//! The netfilter half of kube-proxy's IPVS mode.
//!
//! * [`ipset`]: ipsets over nfnetlink in pure Rust (no libipset, no
//!   `ipset` process per member): a sans-IO codec, a thin batching
//!   client, an update-in-place helper and kube-proxy's set table.

#![forbid(unsafe_code)]

pub mod ipset;
