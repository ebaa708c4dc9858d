//! The userspace dataplane's `Admin` surface.
//!
//! This module owns [`DataplaneAdmin`]: the same [`Admin`] trait the
//! kernel client implements, so `rvsadm`, the admin socket and the
//! proxy's reconciler drive both dataplanes alike. Reads come from the
//! core; changes go to the core and then bring the listeners in line
//! (once per batch, not once per operation).

use std::sync::Arc;
use std::time::Instant;

use rvs_model::admin::{Admin, AdminError, Op};
use rvs_model::{Connection, Daemon, DestinationStatus, Info, ServiceKey, ServiceStatus, Timeouts};

use crate::dataplane::Shared;

/// A handle on a running [`crate::Dataplane`]; cheap to clone.
#[derive(Clone, Debug)]
pub struct DataplaneAdmin {
    shared: Arc<Shared>,
}

impl DataplaneAdmin {
    pub(crate) fn new(shared: Arc<Shared>) -> DataplaneAdmin {
        DataplaneAdmin { shared }
    }
}

impl Admin for DataplaneAdmin {
    fn info(&mut self) -> Result<Info, AdminError> {
        Ok(self.shared.sched.with(|core| core.info()))
    }

    fn services(&mut self) -> Result<Vec<ServiceStatus>, AdminError> {
        Ok(self.shared.sched.with(|core| core.services(Instant::now())))
    }

    fn service(&mut self, key: &ServiceKey) -> Result<ServiceStatus, AdminError> {
        self.shared
            .sched
            .with(|core| core.service(key, Instant::now()))
    }

    fn destinations(&mut self, key: &ServiceKey) -> Result<Vec<DestinationStatus>, AdminError> {
        self.shared
            .sched
            .with(|core| core.destinations(key, Instant::now()))
    }

    fn timeouts(&mut self) -> Result<Timeouts, AdminError> {
        Ok(self.shared.sched.with(|core| core.timeouts()))
    }

    fn daemons(&mut self) -> Result<Vec<Daemon>, AdminError> {
        // No connection synchronisation in userspace: no daemons run.
        Ok(Vec::new())
    }

    fn rebalancing(&mut self) -> Result<Vec<rvs_model::admin::RebalanceStatus>, AdminError> {
        Ok(self.shared.sched.rebalancing().statuses())
    }

    fn connections(&mut self) -> Result<Vec<Connection>, AdminError> {
        Ok(self
            .shared
            .sched
            .with(|core| core.connections(Instant::now())))
    }

    fn apply(&mut self, op: &Op) -> Result<(), AdminError> {
        let result = self
            .shared
            .sched
            .with(|core| core.apply(op, Instant::now()));
        if result.is_ok() && changes_listeners(op) {
            self.shared.sync_listeners();
        }
        result
    }

    fn apply_batch(&mut self, ops: &[Op]) -> Vec<Result<(), AdminError>> {
        let results: Vec<_> = self.shared.sched.with(|core| {
            let now = Instant::now();
            ops.iter().map(|op| core.apply(op, now)).collect()
        });
        if results
            .iter()
            .zip(ops)
            .any(|(r, op)| r.is_ok() && changes_listeners(op))
        {
            self.shared.sync_listeners();
        }
        results
    }
}

/// Whether `op` can change which virtual services need a listener. Real
/// server changes cannot, so a batch of them costs no pass over every
/// listener (with 10,000 services that pass was most of a one-endpoint
/// sync).
fn changes_listeners(op: &Op) -> bool {
    matches!(op, Op::AddService(_) | Op::DeleteService(_) | Op::Flush)
}
