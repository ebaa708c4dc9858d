//! A simulated clock and the userspace IPVS core as a dataplane, for
//! tests that drive sync loops without sleeping and without a kernel.
//!
//! [`SimClock`] is a shared instant that only moves when a test moves
//! it. [`CoreAdmin`] puts [`rvs_lb::Core`] — the kernel's IPVS semantics
//! (errnos, real-server lists, connection counts and their timeouts) —
//! behind [`Admin`], reading the time from a [`SimClock`], so a reconciler
//! meets a dataplane that behaves like the kernel's while the test runs
//! days of timers in milliseconds.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use rvs_lb::{Core, FlowId};
use rvs_model::admin::{Admin, AdminError, Op};
use rvs_model::{Connection, Daemon, DestinationStatus, Info, ServiceKey, ServiceStatus, Timeouts};

/// A clock that moves only when told to; clones share the time.
#[derive(Clone, Debug)]
pub struct SimClock(Rc<Cell<Instant>>);

impl SimClock {
    /// A clock at `start`.
    pub fn new(start: Instant) -> SimClock {
        SimClock(Rc::new(Cell::new(start)))
    }

    /// Now.
    pub fn now(&self) -> Instant {
        self.0.get()
    }

    /// Moves to `t` (never backwards).
    pub fn set(&self, t: Instant) {
        if t > self.0.get() {
            self.0.set(t);
        }
    }

    /// Moves on by `d`.
    pub fn advance(&self, d: Duration) {
        self.0.set(self.0.get() + d);
    }
}

/// The userspace IPVS core as an [`Admin`] dataplane on a [`SimClock`].
/// Its timers (connection expiry, the estimator) run before every call.
#[derive(Debug)]
pub struct CoreAdmin {
    /// The core.
    pub core: Core,
    clock: SimClock,
    /// Changes applied (accepted or refused), for tests that count work.
    pub ops: usize,
}

impl CoreAdmin {
    /// An empty core on `clock`.
    pub fn new(clock: SimClock) -> CoreAdmin {
        CoreAdmin {
            core: Core::new(),
            clock,
            ops: 0,
        }
    }

    fn now(&mut self) -> Instant {
        let now = self.clock.now();
        self.core.poll(now);
        now
    }

    /// A client connection to `vip`, scheduled and established now;
    /// returns the real server it went to.
    pub fn connect(&mut self, flow: &FlowId) -> Option<std::net::SocketAddr> {
        let now = self.now();
        let dest = self.core.schedule(flow, &[], now)?;
        self.core.opened(flow, dest, now);
        Some(dest)
    }

    /// The connection ends now (it stays in the table, inactive, for the
    /// TIME_WAIT timeout, as in the kernel).
    pub fn close(&mut self, flow: &FlowId, dest: std::net::SocketAddr) {
        let now = self.now();
        self.core.closed(flow, dest, now);
    }
}

impl Admin for CoreAdmin {
    fn info(&mut self) -> Result<Info, AdminError> {
        Ok(self.core.info())
    }
    fn services(&mut self) -> Result<Vec<ServiceStatus>, AdminError> {
        let now = self.now();
        Ok(self.core.services(now))
    }
    fn service(&mut self, key: &ServiceKey) -> Result<ServiceStatus, AdminError> {
        let now = self.now();
        self.core.service(key, now)
    }
    fn destinations(&mut self, key: &ServiceKey) -> Result<Vec<DestinationStatus>, AdminError> {
        let now = self.now();
        self.core.destinations(key, now)
    }
    fn timeouts(&mut self) -> Result<Timeouts, AdminError> {
        Ok(self.core.timeouts())
    }
    fn daemons(&mut self) -> Result<Vec<Daemon>, AdminError> {
        Ok(Vec::new())
    }
    fn connections(&mut self) -> Result<Vec<Connection>, AdminError> {
        let now = self.now();
        Ok(self.core.connections(now))
    }
    fn apply(&mut self, op: &Op) -> Result<(), AdminError> {
        let now = self.now();
        self.ops += 1;
        self.core.apply(op, now)
    }
}
