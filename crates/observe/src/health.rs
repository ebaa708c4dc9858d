//! kube-proxy's proxier health: the state behind `/healthz` and `/livez`.
//!
//! The rules are kube-proxy's (`ProxyHealthServer`):
//!
//! * a family's proxier is unhealthy when a change was queued
//!   ([`HealthState::queued`]) and not applied ([`HealthState::updated`])
//!   within the health timeout, which kube-proxy sets to twice the sync
//!   period; only the oldest unapplied queue time counts;
//! * before the first update, and when nothing is queued, it is healthy;
//! * `/healthz` also fails while the Node is being deleted or carries the
//!   cluster autoscaler's `ToBeDeletedByClusterAutoscaler` taint, so load
//!   balancers drain the node; `/livez` ignores the Node, so the proxy is
//!   not restarted for it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use crate::gotime;
use crate::metrics::IpFamily;

/// The taint the cluster autoscaler puts on a Node it is about to delete.
pub const TO_BE_DELETED_TAINT: &str = "ToBeDeletedByClusterAutoscaler";

#[derive(Debug)]
struct State {
    last_updated: BTreeMap<IpFamily, SystemTime>,
    oldest_queued: BTreeMap<IpFamily, SystemTime>,
    node_eligible: bool,
}

/// The proxy's health; clones share it.
#[derive(Clone, Debug)]
pub struct HealthState {
    state: Arc<Mutex<State>>,
    timeout: Duration,
    families: Arc<[IpFamily]>,
}

/// What `/healthz` or `/livez` answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthReply {
    /// 200 or 503.
    pub status: u16,
    /// kube-proxy's JSON body.
    pub body: String,
}

impl HealthState {
    /// Health that turns bad when a queued change waits longer than
    /// `timeout` (kube-proxy: 2 × `--ipvs-sync-period`), tracked for each
    /// of `families`. The Node counts as eligible until told otherwise.
    pub fn new(timeout: Duration, families: &[IpFamily]) -> HealthState {
        HealthState {
            state: Arc::new(Mutex::new(State {
                last_updated: BTreeMap::new(),
                oldest_queued: BTreeMap::new(),
                node_eligible: true,
            })),
            timeout,
            families: families.into(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A Service, EndpointSlice or Node change arrived that needs a sync
    /// (kube-proxy's `QueuedUpdate`). Keeps the oldest unapplied time.
    pub fn queued(&self) {
        self.queued_at(SystemTime::now());
    }

    /// [`HealthState::queued`] at a given time.
    pub fn queued_at(&self, at: SystemTime) {
        let mut s = self.lock();
        for &f in self.families.iter() {
            s.oldest_queued.entry(f).or_insert(at);
        }
    }

    /// A sync succeeded: the dataplane reflects every change queued before
    /// it started (kube-proxy's `Updated`). Also call it once when the sync
    /// loop starts, as kube-proxy does.
    pub fn updated(&self) {
        self.updated_at(SystemTime::now());
    }

    /// [`HealthState::updated`] at a given time.
    pub fn updated_at(&self, at: SystemTime) {
        let mut s = self.lock();
        for &f in self.families.iter() {
            s.oldest_queued.remove(&f);
            s.last_updated.insert(f, at);
        }
    }

    /// Sets whether this Node is eligible for traffic: `false` while it is
    /// being deleted or tainted `ToBeDeletedByClusterAutoscaler` (see
    /// [`HealthState::node_eligible_from`]), and when it is deleted.
    pub fn set_node_eligible(&self, eligible: bool) {
        self.lock().node_eligible = eligible;
    }

    /// kube-proxy's rule: a Node is eligible unless it has a deletion
    /// timestamp or a taint with key `ToBeDeletedByClusterAutoscaler`.
    pub fn node_eligible_from<'a>(
        being_deleted: bool,
        taint_keys: impl IntoIterator<Item = &'a str>,
    ) -> bool {
        !being_deleted && !taint_keys.into_iter().any(|k| k == TO_BE_DELETED_TAINT)
    }

    /// Whether the Node is eligible.
    pub fn node_eligible(&self) -> bool {
        self.lock().node_eligible
    }

    /// The proxier's health, ignoring the Node (what `/livez` and the
    /// per-Service health checks use).
    pub fn is_healthy(&self) -> bool {
        self.health_at(SystemTime::now()).0
    }

    /// Health at `now` and the last-updated time to report.
    fn health_at(&self, now: SystemTime) -> (bool, Option<SystemTime>) {
        let s = self.lock();
        let mut last: Option<SystemTime> = None;
        for (family, &updated) in &s.last_updated {
            last = Some(last.map_or(updated, |l| l.max(updated)));
            let Some(&queued) = s.oldest_queued.get(family) else {
                continue;
            };
            if now.duration_since(queued).unwrap_or_default() < self.timeout {
                continue;
            }
            return (false, Some(updated));
        }
        (true, last)
    }

    /// The `/healthz` answer at `now`: 200 when healthy and the Node is
    /// eligible, else 503; `lastUpdated` is `now` when healthy (kube-proxy
    /// keeps that for compatibility), else the last successful update.
    pub fn healthz_at(&self, now: SystemTime) -> HealthReply {
        let eligible = self.node_eligible();
        let (healthy, last) = self.health_at(now);
        let healthy = healthy && eligible;
        let last = if healthy { Some(now) } else { last };
        HealthReply {
            status: if healthy { 200 } else { 503 },
            body: format!(
                "{{\"lastUpdated\": {},\"currentTime\": {}, \"nodeEligible\": {eligible}}}",
                quote(last),
                quote(Some(now)),
            ),
        }
    }

    /// The `/livez` answer at `now`: like `/healthz` without the Node.
    pub fn livez_at(&self, now: SystemTime) -> HealthReply {
        let (healthy, last) = self.health_at(now);
        let last = if healthy { Some(now) } else { last };
        HealthReply {
            status: if healthy { 200 } else { 503 },
            body: format!(
                "{{\"lastUpdated\": {},\"currentTime\": {}}}",
                quote(last),
                quote(Some(now)),
            ),
        }
    }
}

/// A time as Go's `%q` of a `time.Time` prints it (the zero time when
/// there is none).
fn quote(t: Option<SystemTime>) -> String {
    let text = t.map_or_else(|| gotime::ZERO.to_owned(), gotime::format);
    format!("\"{text}\"")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    #[test]
    fn healthy_while_starting_and_when_nothing_is_queued() {
        let h = HealthState::new(Duration::from_secs(60), &[IpFamily::V4]);
        let r = h.healthz_at(at(0));
        assert_eq!(r.status, 200);
        assert_eq!(
            r.body,
            "{\"lastUpdated\": \"2023-11-14 22:13:20 +0000 UTC\",\"currentTime\": \"2023-11-14 22:13:20 +0000 UTC\", \"nodeEligible\": true}"
        );
        h.updated_at(at(1));
        assert_eq!(h.healthz_at(at(1000)).status, 200);
    }

    #[test]
    fn a_change_queued_longer_than_the_timeout_is_unhealthy() {
        let h = HealthState::new(Duration::from_secs(60), &[IpFamily::V4, IpFamily::V6]);
        h.updated_at(at(0));
        h.queued_at(at(10));
        // A later queue does not move the oldest.
        h.queued_at(at(50));
        assert_eq!(h.healthz_at(at(69)).status, 200);
        let r = h.healthz_at(at(70));
        assert_eq!(r.status, 503);
        assert!(
            r.body
                .starts_with("{\"lastUpdated\": \"2023-11-14 22:13:20 +0000 UTC\""),
            "{}",
            r.body
        );
        assert_eq!(h.livez_at(at(70)).status, 503);
        h.updated_at(at(71));
        assert_eq!(h.healthz_at(at(500)).status, 200);
    }

    #[test]
    fn queued_before_any_update_counts_only_after_the_first_update() {
        // kube-proxy iterates families that have updated at least once.
        let h = HealthState::new(Duration::from_secs(1), &[IpFamily::V4]);
        h.queued_at(at(0));
        assert_eq!(h.healthz_at(at(100)).status, 200);
    }

    #[test]
    fn a_node_being_deleted_fails_healthz_not_livez() {
        let h = HealthState::new(Duration::from_secs(60), &[IpFamily::V4]);
        h.updated_at(at(0));
        assert!(!HealthState::node_eligible_from(
            false,
            [
                "node.kubernetes.io/unschedulable",
                "ToBeDeletedByClusterAutoscaler"
            ]
        ));
        assert!(!HealthState::node_eligible_from(true, []));
        assert!(HealthState::node_eligible_from(false, ["other"]));
        h.set_node_eligible(false);
        let r = h.healthz_at(at(5));
        assert_eq!(r.status, 503);
        assert!(r.body.ends_with("\"nodeEligible\": false}"), "{}", r.body);
        let l = h.livez_at(at(5));
        assert_eq!(l.status, 200);
        assert_eq!(
            l.body,
            "{\"lastUpdated\": \"2023-11-14 22:13:25 +0000 UTC\",\"currentTime\": \"2023-11-14 22:13:25 +0000 UTC\"}"
        );
    }
}
