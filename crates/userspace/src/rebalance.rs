//! Rebalancing long-lived TCP connections in the userspace dataplane.
//!
//! This module owns [`Rebalancing`]: the policy of each virtual service
//! (a default, and per-service ones the proxy sets from the Service's
//! `rvs.dev/rebalance` annotation), the TCP connections it watches (those
//! of services whose policy is on, through the forwarder's
//! [`Activity`]), one [`rvs_rebalance::Rebalancer`] per such service (in a
//! [`Book`]), and the count of
//! connections closed per real server.
//!
//! Every tick ([`Rebalancing::tick`], from the dataplane's rebalancing
//! task) samples each watched connection: bytes moved since the last
//! sample, bytes in flight, or a last word that was the client's (a
//! request may be outstanding) make it busy; otherwise it has been idle
//! since the tick that last saw it move (a conservative bound: no clock
//! is read on the copy's path). The rebalancers then choose what to
//! close; the copy closes a chosen connection only if it is still as the
//! tick saw it, by a FIN to the client and to the real server, and the
//! next tick counts it.
//!
//! Only connections opened while their service's policy is on are
//! watched: turning a policy on rebalances the connections opened from
//! then on. Locks: this module's, then the core's ([`Sched::with`]),
//! never the other way round.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rvs_forwarder::{Activity, Flow};
use rvs_model::{Protocol, ServiceKey};
use rvs_rebalance::{Book, Conn, Policy, ServiceRebalance, Vip};

use crate::sched::Sched;

/// How long the rebalancing task sleeps when no service's policy is on.
const IDLE_TICK: Duration = Duration::from_secs(1);

/// Rebalancing state of one dataplane (see the module docs).
#[derive(Debug, Default)]
pub struct Rebalancing {
    /// Whether any policy is on: when not, connections are not watched
    /// and `watch` takes no lock.
    any_on: AtomicBool,
    /// How many connections are watched: when none, `closed` takes no
    /// lock.
    watching: AtomicUsize,
    next_id: AtomicU64,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    book: Book,
    watched: HashMap<Flow, Watched>,
}

#[derive(Debug)]
struct Watched {
    id: u64,
    dest: SocketAddr,
    opened: Instant,
    activity: Arc<Activity>,
    /// `Activity::moved` at the last sample, and when it last changed.
    moved: u64,
    changed: Instant,
    /// Its close has been counted.
    counted: bool,
}

impl Rebalancing {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The policy of services that have none of their own.
    pub fn set_default(&self, policy: Policy) {
        let mut inner = self.lock();
        inner.book.set_default(policy);
        self.any_on.store(inner.book.any_on(), Ordering::Relaxed);
    }

    /// One virtual service's own policy (`None`: the default's).
    pub fn set(&self, protocol: Protocol, vip: SocketAddr, policy: Option<Policy>) {
        let mut inner = self.lock();
        inner.book.set((protocol, vip), policy);
        self.any_on.store(inner.book.any_on(), Ordering::Relaxed);
    }

    /// The policy in force for a virtual service.
    pub fn policy(&self, protocol: Protocol, vip: SocketAddr) -> Policy {
        self.lock().book.policy(&(protocol, vip))
    }

    /// Every virtual service being rebalanced (or with connections closed
    /// so far): the skew its last tick saw and its closed connections per
    /// real server, sorted.
    pub fn statuses(&self) -> Vec<ServiceRebalance> {
        self.lock().book.statuses()
    }

    /// The forwarder's question for an opened TCP flow: its activity when
    /// the service's policy is on.
    pub(crate) fn watch(&self, flow: &Flow, dest: SocketAddr) -> Option<Arc<Activity>> {
        if !self.any_on.load(Ordering::Relaxed) {
            return None;
        }
        let mut inner = self.lock();
        if inner.book.policy(&(flow.protocol, flow.vip)).is_off() {
            return None;
        }
        let activity = Arc::new(Activity::new());
        let now = Instant::now();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let previous = inner.watched.insert(
            *flow,
            Watched {
                id,
                dest,
                opened: now,
                activity: Arc::clone(&activity),
                moved: 0,
                changed: now,
                counted: false,
            },
        );
        if previous.is_none() {
            self.watching.fetch_add(1, Ordering::Relaxed);
        }
        Some(activity)
    }

    /// A flow ended: it is no longer watched.
    pub(crate) fn closed(&self, flow: &Flow) {
        if self.watching.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut inner = self.lock();
        let Some(w) = inner.watched.remove(flow) else {
            return;
        };
        self.watching.fetch_sub(1, Ordering::Relaxed);
        // Closed by a rebalancing request before a tick counted it.
        if w.activity.closing() && !w.counted {
            inner.book.count_closed(&(flow.protocol, flow.vip), w.dest);
        }
    }

    /// One tick at `now`: samples the watched connections and lets each
    /// due service's rebalancer close some. Returns when to tick next.
    pub fn tick(&self, now: Instant, sched: &Sched) -> Instant {
        let mut inner = self.lock();
        let Inner { book, watched } = &mut *inner;
        // A connection whose copy is gone without `closed` (its listener
        // stopped and aborted it) holds the only reference left.
        let before = watched.len();
        watched.retain(|_, w| Arc::strong_count(&w.activity) > 1);
        self.watching
            .fetch_sub(before - watched.len(), Ordering::Relaxed);
        // Sample, count the closes carried out, and group by service.
        let mut by_service: HashMap<Vip, Vec<&Watched>> = HashMap::new();
        for (flow, w) in watched.iter_mut() {
            let vip = (flow.protocol, flow.vip);
            let moved = w.activity.moved();
            if moved != w.moved || w.activity.in_flight() {
                w.moved = moved;
                w.changed = now;
            }
            if w.activity.closing() {
                if !w.counted {
                    w.counted = true;
                    book.count_closed(&vip, w.dest);
                }
                continue;
            }
            by_service.entry(vip).or_default().push(w);
        }
        let live: HashSet<Vip> = by_service.keys().copied().collect();
        let mut next = now + IDLE_TICK;
        for (vip, conns) in by_service {
            let state = book.service(vip);
            let Some(due) = state.rebalancer.poll_timeout(now) else {
                continue;
            };
            if due > now {
                next = next.min(due);
                continue;
            }
            let key = ServiceKey::Addr {
                protocol: vip.0,
                addr: vip.1,
            };
            let Ok(dests) = sched.with(|core| core.destinations(&key, now)) else {
                continue;
            };
            let weights: Vec<u32> = dests
                .iter()
                .map(|d| u32::try_from(d.destination.weight).unwrap_or(0))
                .collect();
            let index: HashMap<SocketAddr, usize> = dests
                .iter()
                .enumerate()
                .map(|(i, d)| (d.destination.addr, i))
                .collect();
            // Counts of real servers that are gone go with them.
            state.closed.retain(|d, _| index.contains_key(d));
            let snapshot: Vec<Conn> = conns
                .iter()
                .filter_map(|w| {
                    let rs = *index.get(&w.dest)?;
                    // Moving now, or the destination has not had the
                    // last word (a request may be outstanding).
                    let busy = w.changed == now || !w.activity.answered();
                    Some(Conn {
                        id: w.id,
                        real_server: rs,
                        opened: w.opened,
                        idle_since: (!busy).then_some(w.changed),
                    })
                })
                .collect();
            let plan = state.rebalancer.handle_timeout(now, &weights, &snapshot);
            state.skew = plan.skew;
            for close in &plan.close {
                if let Some(w) = conns.iter().find(|w| w.id == close.id) {
                    // Counted once the copy carries it out (at the next
                    // tick or when the flow ends), not here.
                    w.activity.request_close(w.moved);
                    tracing::debug!(service = %key, dest = %w.dest, reason = ?close.reason, "closing an idle connection to rebalance");
                }
            }
            if let Some(t) = state.rebalancer.poll_timeout(now) {
                next = next.min(t);
            }
        }
        // Services with nothing watched and no counts keep no state.
        book.retain_live(|vip| live.contains(vip));
        next
    }
}
