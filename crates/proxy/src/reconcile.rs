//! Planning the minimal change from what a dataplane has to what is
//! desired.
//!
//! [`plan`] is pure: it takes the observed virtual servers (with their real
//! servers and connection counts), the desired state and the ownership
//! rules, and returns the operations to apply. It:
//!
//! * programs every desired virtual server, but deletes only virtual
//!   servers the proxy owns: those on addresses it binds (`kube-ipvs0`) or
//!   serves node ports on, outside `--ipvs-exclude-cidrs`; everything else
//!   (say, an `ipvsadm`-made virtual server on another address, or any
//!   fwmark service) is left exactly as it is;
//! * edits in place rather than delete-and-add, so established
//!   connections survive scheduler or persistence changes and restarts
//!   adopt what a previous run (or kube-proxy) left;
//! * drains removed TCP real servers: weight 0 first, deletion once their
//!   active and inactive connection counts reach zero; UDP and SCTP real
//!   servers are deleted at once (kube-proxy #71514);
//! * restores weight 1 on a desired real server found at weight 0 (a drain
//!   interrupted by a restart, kube-proxy #92019).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use rvs_model::admin::Op;
use rvs_model::{
    Destination, DestinationStatus, Protocol, Service, ServiceFlags, ServiceKey, ServiceStatus,
};

use crate::desired::{Desired, deletes_immediately};

/// A virtual server as a dataplane reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    /// The service.
    pub status: ServiceStatus,
    /// Its real servers.
    pub destinations: Vec<DestinationStatus>,
}

/// Which virtual servers the proxy may change.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ownership {
    /// Addresses whose virtual servers are the proxy's: what it binds to
    /// `kube-ipvs0` (now or in a previous run) and the node addresses it
    /// serves node ports on.
    pub addresses: BTreeSet<IpAddr>,
    /// `--ipvs-exclude-cidrs`: never touched, even on owned addresses.
    pub exclude: Vec<IpNet>,
}

impl Ownership {
    /// `true` when the proxy may change or delete the virtual server `key`.
    pub fn owns(&self, key: &ServiceKey) -> bool {
        match key {
            ServiceKey::Addr { addr, .. } => {
                self.addresses.contains(&addr.ip())
                    && !self.exclude.iter().any(|net| net.contains(&addr.ip()))
            }
            ServiceKey::Fwmark { .. } => false,
        }
    }
}

/// The operations a sync applies, and what is left for later.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Operations in the order to apply them.
    pub ops: Vec<Op>,
    /// Real servers at weight 0 still holding connections; check again soon.
    pub draining: usize,
}

fn same_config(observed: &Service, desired: &Service) -> bool {
    let flags = |s: &Service| ServiceFlags(s.flags.0 & !ServiceFlags::HASHED);
    observed.scheduler == desired.scheduler
        && flags(observed) == flags(desired)
        && (!desired.is_persistent()
            || (observed.timeout == desired.timeout && observed.netmask == desired.netmask))
        && observed.pe_name == desired.pe_name
}

fn same_dest(observed: &Destination, desired: &Destination) -> bool {
    observed.forward == desired.forward
        && observed.weight == desired.weight
        && observed.upper_threshold == desired.upper_threshold
        && observed.lower_threshold == desired.lower_threshold
        && (desired.forward != rvs_model::ForwardMethod::Tunnel
            || observed.tunnel == desired.tunnel)
}

fn protocol_of(key: &ServiceKey) -> Option<Protocol> {
    match key {
        ServiceKey::Addr { protocol, .. } => Some(*protocol),
        ServiceKey::Fwmark { .. } => None,
    }
}

/// Plans the change from `observed` to `desired` within `ownership`.
pub fn plan(observed: &[Observed], desired: &Desired, ownership: &Ownership) -> Plan {
    let mut plan = Plan::default();
    let (mut edits, mut adds, mut dest_ops, mut deletes) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let by_key: BTreeMap<ServiceKey, &Observed> =
        observed.iter().map(|o| (o.status.service.key, o)).collect();

    for (key, want) in &desired.services {
        match by_key.get(key) {
            None => {
                adds.push(Op::AddService(want.service.clone()));
                for dest in want.destinations.values() {
                    adds.push(Op::AddDestination(*key, dest.clone()));
                }
            }
            Some(have) => {
                if !same_config(&have.status.service, &want.service) {
                    edits.push(Op::EditService(want.service.clone()));
                }
                let have_dests: BTreeMap<SocketAddr, &DestinationStatus> = have
                    .destinations
                    .iter()
                    .map(|d| (d.destination.addr, d))
                    .collect();
                for (addr, dest) in &want.destinations {
                    match have_dests.get(addr) {
                        None => dest_ops.push(Op::AddDestination(*key, dest.clone())),
                        Some(h) if !same_dest(&h.destination, dest) => {
                            dest_ops.push(Op::EditDestination(*key, dest.clone()))
                        }
                        Some(_) => {}
                    }
                }
                for (addr, h) in &have_dests {
                    if want.destinations.contains_key(addr) {
                        continue;
                    }
                    let immediate = protocol_of(key).is_none_or(deletes_immediately);
                    let conns = u64::from(h.active_conns) + u64::from(h.inactive_conns);
                    if immediate || conns == 0 {
                        dest_ops.push(Op::DeleteDestination(*key, *addr));
                    } else if h.destination.weight != 0 {
                        let mut drained = h.destination.clone();
                        drained.weight = 0;
                        dest_ops.push(Op::EditDestination(*key, drained));
                        plan.draining += 1;
                    } else {
                        plan.draining += 1;
                    }
                }
            }
        }
    }
    for (key, _) in by_key
        .iter()
        .filter(|(k, _)| !desired.services.contains_key(k) && ownership.owns(k))
    {
        deletes.push(Op::DeleteService(*key));
    }
    plan.ops.extend(deletes);
    plan.ops.extend(edits);
    plan.ops.extend(adds);
    plan.ops.extend(dest_ops);
    plan
}

/// Applies `ops` to an observed snapshot, as a dataplane would: the state
/// a successful sync leaves. Takes the snapshot by value: at 10,000
/// virtual servers a copy is tens of megabytes at the sync's peak.
pub fn simulate(observed: Vec<Observed>, ops: &[Op]) -> Vec<Observed> {
    let mut state: BTreeMap<ServiceKey, Observed> = observed
        .into_iter()
        .map(|o| (o.status.service.key, o))
        .collect();
    let fresh = |d: &Destination| DestinationStatus {
        destination: d.clone(),
        active_conns: 0,
        inactive_conns: 0,
        persistent_conns: 0,
        stats: Default::default(),
    };
    for op in ops {
        match op {
            Op::AddService(s) | Op::EditService(s) => {
                let entry = state.entry(s.key).or_insert_with(|| Observed {
                    status: ServiceStatus {
                        service: s.clone(),
                        stats: Default::default(),
                    },
                    destinations: Vec::new(),
                });
                entry.status.service = s.clone();
            }
            Op::DeleteService(k) => {
                state.remove(k);
            }
            Op::Flush => state.clear(),
            Op::AddDestination(k, d) | Op::EditDestination(k, d) => {
                if let Some(o) = state.get_mut(k) {
                    match o
                        .destinations
                        .iter_mut()
                        .find(|x| x.destination.addr == d.addr)
                    {
                        Some(x) => x.destination = d.clone(),
                        None => o.destinations.push(fresh(d)),
                    }
                }
            }
            Op::DeleteDestination(k, a) => {
                if let Some(o) = state.get_mut(k) {
                    o.destinations.retain(|x| x.destination.addr != *a);
                }
            }
            Op::Zero(_) | Op::SetTimeouts(_) | Op::StartDaemon(_) | Op::StopDaemon(_) => {}
        }
    }
    state.into_values().collect()
}
