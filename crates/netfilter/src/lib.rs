//! The netfilter half of kube-proxy's IPVS mode.
//!
//! * [`ipset`]: ipsets over nfnetlink in pure Rust (no libipset, no
//!   `ipset` process per member): a sans-IO codec, a thin batching
//!   client, an update-in-place helper and kube-proxy's set table.
//! * [`iptables`]: the fixed iptables rule set kube-proxy's IPVS mode
//!   writes, as a pure function to `iptables-restore` text, applied with
//!   one `iptables-restore --noflush` per table and family, and removed
//!   by `--cleanup` without touching foreign chains.

pub mod ipset;
pub mod iptables;
