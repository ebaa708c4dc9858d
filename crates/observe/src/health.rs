//! kube-proxy's proxier health: the state behind `/healthz` and `/livez`.
//!
//! The rules are kube-proxy's (`ProxyHealthServer`):
//!
//! * a family's proxier is unhealthy when a change was queued
//!   ([`HealthState::queued`]) and not applied ([`HealthState::updated`],
//!   [`HealthState::updated_families`]) within the health timeout, which
//!   kube-proxy sets to twice the sync period; only the oldest unapplied
//!   queue time counts;
//! * before the first update, and when nothing is queued, it is healthy;
//! * `/healthz` also fails while the Node is being deleted or carries the
//!   cluster autoscaler's `ToBeDeletedByClusterAutoscaler` taint, so load
//!   balancers drain the node; `/livez` ignores the Node, so the proxy is
//!   not restarted for it;
//! * the bodies are v1.37's JSON (`ProxyHealth` through `json.Marshal`):
//!   `{"lastUpdated":…,"currentTime":…,"nodeEligible":…,"healthy":…,
//!   "status":{"IPv4":{"lastUpdated":…,"healthy":…}}}`, RFC 3339 times.

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
        let families = self.families.clone();
        self.updated_families_at(at, &families);
    }

    /// The proxier of each of `families` synced (kube-proxy calls
    /// `Updated(family)` per proxier; a family whose rules could not be
    /// written is left out, and turns unhealthy once a change waits).
    pub fn updated_families(&self, families: &[IpFamily]) {
        self.updated_families_at(SystemTime::now(), families);
    }

    /// [`HealthState::updated_families`] at a given time.
    pub fn updated_families_at(&self, at: SystemTime, families: &[IpFamily]) {
        let mut s = self.lock();
        for &f in families.iter().filter(|f| self.families.contains(f)) {
            s.oldest_queued.remove(&f);
            s.last_updated.insert(f, at);
        }
    }

    /// The families tracked.
    pub fn families(&self) -> &[IpFamily] {
        &self.families
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
        self.health_at(SystemTime::now()).healthy
    }

    /// kube-proxy's `ProxyHealthServer.Health()` at `now`: each family
    /// that has updated at least once is healthy unless a change queued
    /// for it has waited `timeout`; `lastUpdated` is the latest update of
    /// any family.
    fn health_at(&self, now: SystemTime) -> Health {
        let s = self.lock();
        let mut health = Health {
            healthy: true,
            last_updated: None,
            status: BTreeMap::new(),
        };
        for (family, &updated) in &s.last_updated {
            health.last_updated = Some(health.last_updated.map_or(updated, |l| l.max(updated)));
            let late = s.oldest_queued.get(family).is_some_and(|&queued| {
                now.duration_since(queued).unwrap_or_default() >= self.timeout
            });
            health.healthy &= !late;
            health.status.insert(*family, (updated, !late));
        }
        health
    }

    /// The `/healthz` answer at `now`: 200 when healthy and the Node is
    /// eligible, else 503. The body is kube-proxy v1.37's
    /// (`json.Marshal` of `ProxyHealth`): `lastUpdated` (`now` when the
    /// answer is 200, kube-proxy's compatibility rule), `currentTime`,
    /// `nodeEligible`, `healthy` (the proxiers', without the Node) and
    /// `status` per family, times in RFC 3339.
    pub fn healthz_at(&self, now: SystemTime) -> HealthReply {
        let eligible = self.node_eligible();
        let health = self.health_at(now);
        let ok = health.healthy && eligible;
        HealthReply {
            status: if ok { 200 } else { 503 },
            body: health.json(now, ok, Some(eligible)),
        }
    }

    /// The `/livez` answer at `now`: like `/healthz` without the Node
    /// (and without `nodeEligible` in the body).
    pub fn livez_at(&self, now: SystemTime) -> HealthReply {
        let health = self.health_at(now);
        HealthReply {
            status: if health.healthy { 200 } else { 503 },
            body: health.json(now, health.healthy, None),
        }
    }
}

/// kube-proxy's `ProxyHealth`.
struct Health {
    healthy: bool,
    last_updated: Option<SystemTime>,
    /// Per family: last update and health.
    status: BTreeMap<IpFamily, (SystemTime, bool)>,
}

impl Health {
    /// The body as Go's `json.Marshal` writes `ProxyHealth`: fields in
    /// declaration order, `nodeEligible` and an empty `status` omitted,
    /// map keys sorted, no spaces.
    fn json(&self, now: SystemTime, ok: bool, node_eligible: Option<bool>) -> String {
        let last = if ok { Some(now) } else { self.last_updated };
        let mut out = format!(
            "{{\"lastUpdated\":{},\"currentTime\":{}",
            quote(last),
            quote(Some(now))
        );
        if let Some(eligible) = node_eligible {
            out.push_str(&format!(",\"nodeEligible\":{eligible}"));
        }
        out.push_str(&format!(",\"healthy\":{}", self.healthy));
        if !self.status.is_empty() {
            let families: Vec<String> = self
                .status
                .iter()
                .map(|(family, (updated, healthy))| {
                    format!(
                        "\"{}\":{{\"lastUpdated\":{},\"healthy\":{healthy}}}",
                        family.as_str(),
                        quote(Some(*updated))
                    )
                })
                .collect();
            out.push_str(&format!(",\"status\":{{{}}}", families.join(",")));
        }
        out.push('}');
        out
    }
}

/// A time as Go's `encoding/json` writes a `time.Time` (the zero time
/// when there is none).
fn quote(t: Option<SystemTime>) -> String {
    let text = t.map_or_else(|| gotime::ZERO_RFC3339.to_owned(), gotime::rfc3339);
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
        // Before any update: no status map (omitempty), zero-less times.
        assert_eq!(
            r.body,
            "{\"lastUpdated\":\"2023-11-14T22:13:20Z\",\"currentTime\":\"2023-11-14T22:13:20Z\",\"nodeEligible\":true,\"healthy\":true}"
        );
        h.updated_at(at(1));
        let r = h.healthz_at(at(1000));
        assert_eq!(r.status, 200);
        assert_eq!(
            r.body,
            "{\"lastUpdated\":\"2023-11-14T22:30:00Z\",\"currentTime\":\"2023-11-14T22:30:00Z\",\"nodeEligible\":true,\"healthy\":true,\"status\":{\"IPv4\":{\"lastUpdated\":\"2023-11-14T22:13:21Z\",\"healthy\":true}}}"
        );
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
        assert_eq!(
            r.body,
            "{\"lastUpdated\":\"2023-11-14T22:13:20Z\",\"currentTime\":\"2023-11-14T22:14:30Z\",\"nodeEligible\":true,\"healthy\":false,\"status\":{\"IPv4\":{\"lastUpdated\":\"2023-11-14T22:13:20Z\",\"healthy\":false},\"IPv6\":{\"lastUpdated\":\"2023-11-14T22:13:20Z\",\"healthy\":false}}}"
        );
        assert_eq!(h.livez_at(at(70)).status, 503);
        h.updated_at(at(71));
        assert_eq!(h.healthz_at(at(500)).status, 200);
    }

    #[test]
    fn each_family_is_updated_on_its_own() {
        let h = HealthState::new(Duration::from_secs(60), &[IpFamily::V4, IpFamily::V6]);
        h.updated_at(at(0));
        h.queued_at(at(10));
        // Only IPv4's rules were written: IPv6 keeps waiting.
        h.updated_families_at(at(20), &[IpFamily::V4]);
        let r = h.livez_at(at(100));
        assert_eq!(r.status, 503);
        assert_eq!(
            r.body,
            "{\"lastUpdated\":\"2023-11-14T22:13:40Z\",\"currentTime\":\"2023-11-14T22:15:00Z\",\"healthy\":false,\"status\":{\"IPv4\":{\"lastUpdated\":\"2023-11-14T22:13:40Z\",\"healthy\":true},\"IPv6\":{\"lastUpdated\":\"2023-11-14T22:13:20Z\",\"healthy\":false}}}"
        );
        // A family the proxy does not run is ignored.
        let v4 = HealthState::new(Duration::from_secs(60), &[IpFamily::V4]);
        v4.updated_families_at(at(0), &[IpFamily::V6]);
        assert!(!v4.livez_at(at(1)).body.contains("status"));
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
        // Not healthy as an answer, so lastUpdated stays the update time;
        // `healthy` is the proxiers' own health.
        assert_eq!(
            r.body,
            "{\"lastUpdated\":\"2023-11-14T22:13:20Z\",\"currentTime\":\"2023-11-14T22:13:25Z\",\"nodeEligible\":false,\"healthy\":true,\"status\":{\"IPv4\":{\"lastUpdated\":\"2023-11-14T22:13:20Z\",\"healthy\":true}}}"
        );
        let l = h.livez_at(at(5));
        assert_eq!(l.status, 200);
        assert_eq!(
            l.body,
            "{\"lastUpdated\":\"2023-11-14T22:13:25Z\",\"currentTime\":\"2023-11-14T22:13:25Z\",\"healthy\":true,\"status\":{\"IPv4\":{\"lastUpdated\":\"2023-11-14T22:13:20Z\",\"healthy\":true}}}"
        );
    }
}
