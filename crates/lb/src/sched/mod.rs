//! The IPVS schedulers, one module each, with the kernel's exact choices
//! (Linux 6.1 `net/netfilter/ipvs/ip_vs_<name>.c`; `twos` from 6.2).
//!
//! Every scheduler sees the service's destinations in the kernel's list
//! order (newest first) through a [`Pool`], and keeps its own state
//! ([`SchedState`]) which the table updates on the same events as the
//! kernel's `add_dest`/`del_dest`/`upd_dest` hooks. Common kernel rules:
//!
//! * a destination with weight 0 is quiescent: no scheduler picks it
//!   (existing connections continue);
//! * a destination with `IP_VS_DEST_F_OVERLOAD` (upper threshold reached)
//!   is skipped, except where the kernel does not look at the flag (the
//!   cached destination of lblc/lblcr, see there);
//! * the load of a destination is `ip_vs_dest_conn_overhead`:
//!   `active × 256 + inactive`.
//!
//! Userspace addition: destinations the driver already failed to connect
//! to for this flow (`tried`) are treated as overloaded for this one
//! decision.
//!
//! `tests/kernel_differential_vm.rs` runs the same services, destinations and
//! connection sequences in the test VM's kernel and in the core and
//! requires the same choice for every connection (all schedulers but
//! `twos`, IPv4 and IPv6, thresholds, persistence); `tests/scheduler_props.rs`
//! checks the schedulers' invariants for arbitrary weights and histories.

use crate::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

use rvs_model::{Scheduler, ServiceFlags};

use crate::rng::Rng;
use crate::table::{DestEntry, DestId};

mod dh;
mod fo;
pub(crate) mod hash;
mod lblc;
mod lblcr;
mod lc;
mod mh;
mod nq;
mod ovf;
mod rr;
mod sed;
mod sh;
mod twos;
mod wlc;
mod wrr;

/// A service's destinations as a scheduler sees them.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Pool<'a> {
    list: &'a [DestId],
    dests: &'a HashMap<DestId, DestEntry>,
    tried: &'a [SocketAddr],
}

impl<'a> Pool<'a> {
    pub(crate) fn new(
        list: &'a [DestId],
        dests: &'a HashMap<DestId, DestEntry>,
        tried: &'a [SocketAddr],
    ) -> Pool<'a> {
        Pool { list, dests, tried }
    }

    pub(crate) fn len(&self) -> usize {
        self.list.len()
    }

    pub(crate) fn id(&self, i: usize) -> Option<DestId> {
        self.list.get(i).copied()
    }

    /// A destination by id, live or in the trash.
    pub(crate) fn entry(&self, id: DestId) -> Option<&'a DestEntry> {
        self.dests.get(&id)
    }

    fn at(&self, i: usize) -> Option<&'a DestEntry> {
        self.list.get(i).and_then(|id| self.dests.get(id))
    }

    /// The current weight (`dest->weight`).
    pub(crate) fn weight(&self, i: usize) -> i64 {
        self.at(i).map_or(0, |d| i64::from(d.cfg.weight))
    }

    /// `dest->last_weight`.
    pub(crate) fn last_weight(&self, i: usize) -> i64 {
        self.at(i).map_or(0, |d| i64::from(d.last_weight))
    }

    /// `IP_VS_DEST_F_OVERLOAD`, or already tried for this flow.
    pub(crate) fn overloaded(&self, i: usize) -> bool {
        self.at(i).is_none_or(|d| self.entry_overloaded(d))
    }

    pub(crate) fn entry_overloaded(&self, d: &DestEntry) -> bool {
        d.overloaded || self.tried.contains(&d.cfg.addr)
    }

    pub(crate) fn tried(&self, d: &DestEntry) -> bool {
        self.tried.contains(&d.cfg.addr)
    }

    pub(crate) fn overhead(&self, i: usize) -> i64 {
        self.at(i).map_or(0, DestEntry::overhead)
    }

    pub(crate) fn active(&self, i: usize) -> i64 {
        self.at(i).map_or(0, |d| i64::from(d.active))
    }

    pub(crate) fn addr(&self, i: usize) -> Option<SocketAddr> {
        self.at(i).map(|d| d.cfg.addr)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (DestId, &'a DestEntry)> + '_ {
        self.list
            .iter()
            .filter_map(|id| self.dests.get(id).map(|d| (*id, d)))
    }

    /// `is_overloaded` of lblc/lblcr: more active connections than weight
    /// while some destination is below half its weight.
    pub(crate) fn locality_overloaded(&self, d: &DestEntry) -> bool {
        i64::from(d.active) > i64::from(d.cfg.weight)
            && self
                .iter()
                .any(|(_, o)| i64::from(o.active) * 2 < i64::from(o.cfg.weight))
    }
}

/// What a scheduler may look at in the packet that opens a connection.
#[derive(Debug)]
pub(crate) struct Request<'a> {
    /// Source address and port (the client).
    pub(crate) client: SocketAddr,
    /// Destination address and port (the virtual service).
    pub(crate) vip: SocketAddr,
    pub(crate) flags: ServiceFlags,
    pub(crate) now: Instant,
    pub(crate) rng: &'a mut Rng,
}

/// A service's scheduler and its state (`svc->sched_data`).
#[derive(Debug)]
pub(crate) enum SchedState {
    Rr(rr::Rr),
    Wrr(wrr::Wrr),
    Lc,
    Wlc,
    Lblc(lblc::Lblc),
    Lblcr(lblcr::Lblcr),
    Dh(dh::Dh),
    Sh(sh::Sh),
    Sed,
    Nq,
    Mh(Box<mh::Mh>),
    Fo,
    Ovf,
    Twos,
}

impl SchedState {
    /// `init_service`; `None` for a scheduler rvs does not implement
    /// ([`Scheduler::Other`]), which the table refuses with `ENOENT` like
    /// a kernel without that module.
    pub(crate) fn new(sched: Scheduler, pool: &Pool<'_>) -> Option<SchedState> {
        Some(match sched {
            Scheduler::RoundRobin => SchedState::Rr(rr::Rr::default()),
            Scheduler::WeightedRoundRobin => SchedState::Wrr(wrr::Wrr::new(pool)),
            Scheduler::LeastConnection => SchedState::Lc,
            Scheduler::WeightedLeastConnection => SchedState::Wlc,
            Scheduler::LocalityLeastConnection => SchedState::Lblc(lblc::Lblc::default()),
            Scheduler::LocalityLeastConnectionReplication => {
                SchedState::Lblcr(lblcr::Lblcr::default())
            }
            Scheduler::DestinationHashing => SchedState::Dh(dh::Dh::new(pool)),
            Scheduler::SourceHashing => SchedState::Sh(sh::Sh::new(pool)),
            Scheduler::ShortestExpectedDelay => SchedState::Sed,
            Scheduler::NeverQueue => SchedState::Nq,
            Scheduler::Maglev => SchedState::Mh(Box::new(mh::Mh::new(pool))),
            Scheduler::Failover => SchedState::Fo,
            Scheduler::Overflow => SchedState::Ovf,
            Scheduler::RandomTwos => SchedState::Twos,
            Scheduler::Other(_) => return None,
        })
    }

    /// `add_dest`: the destination was inserted at `index` (the head).
    pub(crate) fn dest_added(&mut self, pool: &Pool<'_>, index: usize) {
        match self {
            SchedState::Rr(s) => s.dest_added(index),
            SchedState::Wrr(s) => s.dest_changed(pool),
            SchedState::Dh(s) => s.reassign(pool),
            SchedState::Sh(s) => s.reassign(pool),
            SchedState::Mh(s) => s.reassign(pool),
            _ => {}
        }
    }

    /// `del_dest`: the destination that was at `index` left the list.
    pub(crate) fn dest_removed(&mut self, pool: &Pool<'_>, index: usize) {
        match self {
            SchedState::Rr(s) => s.dest_removed(index),
            SchedState::Wrr(s) => s.dest_changed(pool),
            SchedState::Dh(s) => s.reassign(pool),
            SchedState::Sh(s) => s.reassign(pool),
            SchedState::Mh(s) => s.reassign(pool),
            _ => {}
        }
    }

    /// `upd_dest`: a destination's weight or thresholds changed.
    pub(crate) fn dest_updated(&mut self, pool: &Pool<'_>) {
        match self {
            SchedState::Wrr(s) => s.dest_changed(pool),
            SchedState::Sh(s) => s.reassign(pool),
            SchedState::Mh(s) => s.reassign(pool),
            _ => {}
        }
    }

    /// `schedule`: the destination for a new connection, if any.
    pub(crate) fn schedule(&mut self, pool: &Pool<'_>, req: &mut Request<'_>) -> Option<DestId> {
        let index = match self {
            SchedState::Rr(s) => s.schedule(pool),
            SchedState::Wrr(s) => s.schedule(pool),
            SchedState::Lc => lc::schedule(pool),
            SchedState::Wlc => wlc::schedule(pool),
            SchedState::Lblc(s) => return s.schedule(pool, req),
            SchedState::Lblcr(s) => return s.schedule(pool, req),
            SchedState::Dh(s) => return s.schedule(pool, req),
            SchedState::Sh(s) => return s.schedule(pool, req),
            SchedState::Sed => sed::schedule(pool),
            SchedState::Nq => nq::schedule(pool),
            SchedState::Mh(s) => return s.schedule(pool, req),
            SchedState::Fo => fo::schedule(pool),
            SchedState::Ovf => ovf::schedule(pool),
            SchedState::Twos => twos::schedule(pool, req.rng),
        }?;
        pool.id(index)
    }

    /// Drops expired locality entries (lblc/lblcr garbage collection).
    pub(crate) fn collect(&mut self, now: Instant) {
        match self {
            SchedState::Lblc(s) => s.collect(now),
            SchedState::Lblcr(s) => s.collect(now),
            _ => {}
        }
    }
}

/// Greatest common divisor (the kernel's `gcd`).
pub(crate) fn gcd(mut a: i64, mut b: i64) -> i64 {
    while b != 0 {
        let t = a % b;
        a = b;
        b = t;
    }
    a
}

#[cfg(test)]
pub(crate) mod testkit;
