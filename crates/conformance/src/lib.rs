//! rvs-conformance: rvs-proxy checked differentially against the real
//! kube-proxy in IPVS mode, on the same API objects and the same kernel.
//!
//! A [`Scenario`] is a node (its Node object, guest
//! setup), the proxies' flags, and a sequence of steps (objects applied
//! and deleted with kubectl, guest commands). The
//! [`Harness`] runs scenarios in batches: for each
//! batch it boots two VMs on the same kernel, one with
//! `kube-proxy --proxy-mode=ipvs`, one with `rvs-proxy --dataplane kernel`,
//! both watching one kube-apiserver on the host, and drives them in
//! lockstep. After each step, once both have converged, each guest dumps
//! its state (IPVS, ipsets, iptables, addresses, sysctls, health
//! endpoints, health check node ports, listeners, metric names); the
//! host normalises the dumps ([`state`]), compares them ([`diff`]) and
//! judges every difference against the [`allowlist`]: a difference no
//! entry allows fails the run; `TODO-fix` entries pass but are listed.
//!
//! * [`scenario`]: the file format, its parser, scenario directories
//!   (`crates/conformance/scenarios`, `RVS_CONFORMANCE_SCENARIOS`);
//! * [`generate`]: seeded random scenarios, replayable by seed;
//! * [`script`]: the guest's script (the convergence rule);
//! * [`harness`]: the host's side (batches, the step protocol);
//! * [`state`], [`diff`], [`allowlist`], [`report`]: normalising,
//!   comparing, judging and reporting.
//!
//! The binary `rvs-conformance` runs scenario files and generated
//! scenarios (for a count or a duration) and prints the report; see
//! `docs/testing.md`.

pub mod allowlist;
pub mod diff;
pub mod generate;
pub mod harness;
pub mod report;
pub mod scenario;
pub mod script;
pub mod state;

pub use allowlist::Allowlist;
pub use harness::{Harness, HarnessError};
pub use report::Report;
pub use scenario::Scenario;
