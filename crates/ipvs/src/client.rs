//! The kernel IPVS client: [`Admin`] over generic netlink.
//!
//! Placeholder surface so the rest of the tree can be written against it;
//! the requests are implemented by the kernel IPVS issue.

use rvs_model::admin::{Admin, AdminError, Op, OpKind};
use rvs_model::{Connection, Daemon, DestinationStatus, Info, ServiceKey, ServiceStatus, Timeouts};

/// A connection to the kernel's IPVS.
#[derive(Debug)]
pub struct IpvsClient {
    _private: (),
}

impl IpvsClient {
    /// Opens a generic netlink socket and resolves the IPVS family.
    pub fn connect() -> Result<IpvsClient, AdminError> {
        Err(unimplemented_op(OpKind::GetInfo))
    }
}

fn unimplemented_op(op: OpKind) -> AdminError {
    AdminError::Protocol {
        op,
        detail: "kernel IPVS client not implemented yet".into(),
    }
}

impl Admin for IpvsClient {
    fn info(&mut self) -> Result<Info, AdminError> {
        Err(unimplemented_op(OpKind::GetInfo))
    }
    fn services(&mut self) -> Result<Vec<ServiceStatus>, AdminError> {
        Err(unimplemented_op(OpKind::GetServices))
    }
    fn service(&mut self, _key: &ServiceKey) -> Result<ServiceStatus, AdminError> {
        Err(unimplemented_op(OpKind::GetServices))
    }
    fn destinations(&mut self, _key: &ServiceKey) -> Result<Vec<DestinationStatus>, AdminError> {
        Err(unimplemented_op(OpKind::GetDestinations))
    }
    fn timeouts(&mut self) -> Result<Timeouts, AdminError> {
        Err(unimplemented_op(OpKind::GetTimeouts))
    }
    fn daemons(&mut self) -> Result<Vec<Daemon>, AdminError> {
        Err(unimplemented_op(OpKind::GetDaemons))
    }
    fn connections(&mut self) -> Result<Vec<Connection>, AdminError> {
        Err(unimplemented_op(OpKind::GetConnections))
    }
    fn apply(&mut self, op: &Op) -> Result<(), AdminError> {
        Err(unimplemented_op(op.kind()))
    }
}
