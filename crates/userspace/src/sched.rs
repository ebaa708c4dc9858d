//! The forwarder's view of the core.
//!
//! This module owns [`Sched`]: the `rvs-lb` core behind one lock,
//! implementing the forwarder's [`Balancer`] by translating its callbacks
//! (pick, connect failed, opened, closed) into the core's, with the
//! current time passed in. Everything that reads or changes the core
//! goes through [`Sched::with`]. It also hands the forwarder the
//! [`Activity`] of connections that [`Rebalancing`] watches.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use rvs_forwarder::{Activity, Balancer, Counters, Flow};
use rvs_lb::{Core, FlowId, Traffic};

use crate::rebalance::Rebalancing;

/// The shared core, and the rebalancing of its TCP connections. Cloning
/// shares them.
#[derive(Clone, Debug, Default)]
pub struct Sched {
    core: Arc<Mutex<Core>>,
    rebalancing: Arc<Rebalancing>,
}

impl Sched {
    /// Wraps a core.
    pub fn new(core: Core) -> Sched {
        Sched {
            core: Arc::new(Mutex::new(core)),
            rebalancing: Arc::default(),
        }
    }

    /// The rebalancing of long-lived connections (off unless a policy
    /// says otherwise).
    pub fn rebalancing(&self) -> &Rebalancing {
        &self.rebalancing
    }

    /// Runs `f` with the core locked. A panic in another holder does not
    /// make the core unusable: its state is consistent between calls.
    pub fn with<T>(&self, f: impl FnOnce(&mut Core) -> T) -> T {
        let mut core = self.core.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut core)
    }
}

fn flow_id(flow: &Flow) -> FlowId {
    FlowId {
        protocol: flow.protocol,
        client: flow.client,
        vip: flow.vip,
    }
}

impl Balancer for Sched {
    fn pick(&self, flow: &Flow, tried: &[SocketAddr]) -> Option<SocketAddr> {
        self.with(|core| core.schedule(&flow_id(flow), tried, Instant::now()))
    }

    fn connect_failed(&self, flow: &Flow, dest: SocketAddr, error: &io::Error) {
        tracing::debug!(%flow, %dest, %error, "destination refused a connection");
        self.with(|core| core.connect_failed(&flow_id(flow), dest, Instant::now()));
    }

    fn opened(&self, flow: &Flow, dest: SocketAddr) {
        self.with(|core| core.opened(&flow_id(flow), dest, Instant::now()));
    }

    fn closed(&self, flow: &Flow, dest: SocketAddr, counters: &Counters) {
        let traffic = Traffic {
            in_bytes: counters.in_bytes,
            out_bytes: counters.out_bytes,
            in_packets: counters.in_packets,
            out_packets: counters.out_packets,
        };
        let id = flow_id(flow);
        self.with(|core| {
            let now = Instant::now();
            core.traffic(&id, dest, &traffic, now);
            core.closed(&id, dest, now);
        });
        self.rebalancing.closed(flow);
    }

    fn watch(&self, flow: &Flow, dest: SocketAddr) -> Option<Arc<Activity>> {
        self.rebalancing.watch(flow, dest)
    }
}
