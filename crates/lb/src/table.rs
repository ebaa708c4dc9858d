//! The virtual-service table and what the admin operations do to it.
//!
//! This module owns services and destinations and applies [`Op`]s with
//! the kernel's semantics and errnos (Linux 6.1 `ip_vs_ctl.c`):
//!
//! * services are found in O(1) by [`ServiceKey`] (protocol, address and
//!   port, or firewall mark); a flow that matches no port-specific service
//!   falls back to a port-zero service of the same address, as
//!   `ip_vs_service_find` does;
//! * a destination list keeps the kernel's order: a new destination goes
//!   to the head (`list_add_rcu`), which is the order schedulers walk;
//! * a deleted destination that connections still use moves to a trash
//!   and comes back, counters and connections included, when it is added
//!   again to the same service (`ip_vs_trash_get_dest`); it is freed when
//!   its last connection goes;
//! * the overload flag (`ip_vs_dest_update_overload`): set when a
//!   destination's connections reach its upper threshold, cleared when
//!   they fall below the lower one (3/4 of the upper, rounded up, without
//!   one), and re-evaluated at once when an edit changes the thresholds,
//!   as Debian's 6.1 kernel does (a stable fix; older kernels only
//!   cleared the flag on edits that raised or removed the upper
//!   threshold). The differential test against the VM's kernel found the
//!   difference;
//! * refusals: `EEXIST` for an existing service or destination, `ESRCH`
//!   for a missing service, `ENOENT` for a missing destination, a
//!   scheduler rvs does not implement ([`rvs_model::Scheduler::Other`],
//!   as for a kernel without that module) or an unknown persistence
//!   engine, `ERANGE` for a negative weight or a lower
//!   threshold above the upper one, `EINVAL` for an upper threshold above
//!   `INT_MAX`, a bad IPv6 prefix, a destination of another family that is
//!   not tunnelled, a GUE tunnel without port, a non-unicast destination
//!   address, or timeouts above `INT_MAX / HZ`.

use crate::HashMap;
use std::net::{IpAddr, SocketAddr};

use rvs_model::admin::{AdminError, Op, errno};
use rvs_model::{
    Destination, DestinationStatus, ForwardMethod, Protocol, Service, ServiceFlags, ServiceKey,
    ServiceStatus, TunnelType,
};

use crate::estimator::Counters;
use crate::sched::{Pool, SchedState};

/// The kernel's `HZ` on Debian's kernels: bounds the timeouts.
const HZ: u32 = 250;

/// Identifies a service for as long as it exists (never reused).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct SvcId(u64);

/// Identifies a destination for as long as it exists (never reused).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct DestId(u64);

/// A real server and its connection counts.
#[derive(Debug)]
pub(crate) struct DestEntry {
    /// The service whose list holds it; `None` while in the trash (the
    /// kernel's `IP_VS_DEST_F_AVAILABLE` cleared).
    pub(crate) svc: Option<SvcId>,
    /// The service it was added to (to find it again in the trash).
    pub(crate) svc_key: ServiceKey,
    pub(crate) cfg: Destination,
    /// The latest non-zero weight (`last_weight`, used by mh).
    pub(crate) last_weight: i32,
    /// `IP_VS_DEST_F_OVERLOAD`.
    pub(crate) overloaded: bool,
    pub(crate) active: u32,
    pub(crate) inactive: u32,
    pub(crate) persistent: u32,
    pub(crate) stats: Counters,
}

impl DestEntry {
    pub(crate) fn available(&self) -> bool {
        self.svc.is_some()
    }

    /// `ip_vs_dest_conn_overhead`: active × 256 + inactive.
    pub(crate) fn overhead(&self) -> i64 {
        (i64::from(self.active) << 8) + i64::from(self.inactive)
    }

    fn total_conns(&self) -> u64 {
        u64::from(self.active) + u64::from(self.inactive)
    }

    fn refs(&self) -> u64 {
        self.total_conns() + u64::from(self.persistent)
    }

    /// A connection or template was bound (`ip_vs_bind_dest`).
    pub(crate) fn bind(&mut self, template: bool) {
        if template {
            self.persistent = self.persistent.saturating_add(1);
        } else {
            self.inactive = self.inactive.saturating_add(1);
        }
        self.update_overload();
    }

    /// `ip_vs_dest_update_overload`: the flag is set once the connections
    /// reach the upper threshold and cleared once they fall below the
    /// lower one (by default `u - u/4`, i.e. 3/4 of the upper one rounded
    /// up); in between it stays as it was. No upper threshold, no flag.
    fn update_overload(&mut self) {
        let upper = u64::from(self.cfg.upper_threshold);
        let total = self.total_conns();
        if upper != 0 && total >= upper {
            self.overloaded = true;
            return;
        }
        let lower = match self.cfg.lower_threshold {
            0 => upper - (upper >> 2),
            l => u64::from(l),
        };
        if upper == 0 || total < lower {
            self.overloaded = false;
        }
    }

    /// A connection or template went (`ip_vs_unbind_dest`).
    pub(crate) fn unbind(&mut self, template: bool, inactive: bool) {
        if template {
            self.persistent = self.persistent.saturating_sub(1);
        } else if inactive {
            self.inactive = self.inactive.saturating_sub(1);
        } else {
            self.active = self.active.saturating_sub(1);
        }
        if self.overloaded {
            self.update_overload();
        }
    }

    /// A connection changed between active and inactive.
    pub(crate) fn set_active(&mut self, active: bool) {
        if active {
            self.inactive = self.inactive.saturating_sub(1);
            self.active = self.active.saturating_add(1);
        } else {
            self.active = self.active.saturating_sub(1);
            self.inactive = self.inactive.saturating_add(1);
        }
    }
}

/// A virtual service.
#[derive(Debug)]
pub(crate) struct SvcEntry {
    pub(crate) cfg: Service,
    /// Destinations in the kernel's list order (newest first).
    pub(crate) dests: Vec<DestId>,
    pub(crate) sched: SchedState,
    pub(crate) stats: Counters,
}

/// Services and destinations.
#[derive(Debug, Default)]
pub(crate) struct Table {
    pub(crate) svcs: HashMap<SvcId, SvcEntry>,
    by_key: HashMap<ServiceKey, SvcId>,
    pub(crate) dests: HashMap<DestId, DestEntry>,
    trash: HashMap<(ServiceKey, SocketAddr), DestId>,
    next_id: u64,
}

/// A refusal inside the table: the errno the kernel would return.
/// [`Table::apply`] turns it into an [`AdminError`] naming the operation's
/// service and real server.
type Errno = i32;

fn family_is_v6(key: &ServiceKey) -> bool {
    key.is_ipv6()
}

/// What `inet_addr_type`/`ipv6_addr_type` would refuse as a real server.
fn is_unicast(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !(v4.is_unspecified() || v4.is_broadcast() || v4.is_multicast()),
        IpAddr::V6(v6) => !(v6.is_unspecified() || v6.is_multicast() || v6.is_unicast_link_local()),
    }
}

impl Table {
    fn alloc(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// The service for a flow to `vip` (`ip_vs_service_find`), by key.
    pub(crate) fn lookup(&self, protocol: Protocol, vip: SocketAddr) -> Option<SvcId> {
        if let Some(id) = self.by_key.get(&ServiceKey::Addr {
            protocol,
            addr: vip,
        }) {
            return Some(*id);
        }
        if vip.port() != 0 {
            let mut any = vip;
            any.set_port(0);
            return self
                .by_key
                .get(&ServiceKey::Addr {
                    protocol,
                    addr: any,
                })
                .copied();
        }
        None
    }

    pub(crate) fn id_of(&self, key: &ServiceKey) -> Option<SvcId> {
        self.by_key.get(key).copied()
    }

    /// The live destination of `svc` at `addr`.
    pub(crate) fn dest_of(&self, svc: SvcId, addr: SocketAddr) -> Option<DestId> {
        let entry = self.svcs.get(&svc)?;
        entry
            .dests
            .iter()
            .copied()
            .find(|id| self.dests.get(id).is_some_and(|d| d.cfg.addr == addr))
    }

    /// Frees a trashed destination nothing uses any more.
    pub(crate) fn release(&mut self, id: DestId) {
        if let Some(d) = self.dests.get(&id)
            && !d.available()
            && d.refs() == 0
        {
            let key = (d.svc_key, d.cfg.addr);
            self.dests.remove(&id);
            if self.trash.get(&key) == Some(&id) {
                self.trash.remove(&key);
            }
        }
    }

    /// Applies one admin operation (timeouts are the core's business).
    pub(crate) fn apply(&mut self, op: &Op) -> Result<(), AdminError> {
        self.apply_op(op)
            .map_err(|errno| AdminError::refusal_of(op, errno))
    }

    fn apply_op(&mut self, op: &Op) -> Result<(), Errno> {
        match op {
            Op::AddService(svc) => self.add_service(svc),
            Op::EditService(svc) => self.edit_service(svc),
            Op::DeleteService(key) => {
                let id = self.id_of(key).ok_or(errno::ESRCH)?;
                self.delete_service(id);
                Ok(())
            }
            Op::Flush => {
                let ids: Vec<SvcId> = self.svcs.keys().copied().collect();
                for id in ids {
                    self.delete_service(id);
                }
                Ok(())
            }
            Op::AddDestination(key, dest) => self.add_dest(key, dest),
            Op::EditDestination(key, dest) => self.edit_dest(key, dest),
            Op::DeleteDestination(key, addr) => {
                let id = self.id_of(key).ok_or(errno::ESRCH)?;
                let did = self.dest_of(id, *addr).ok_or(errno::ENOENT)?;
                self.delete_dest(id, did);
                Ok(())
            }
            Op::Zero(None) => {
                for svc in self.svcs.values_mut() {
                    svc.stats.zero();
                }
                for d in self.dests.values_mut() {
                    d.stats.zero();
                }
                Ok(())
            }
            Op::Zero(Some(key)) => {
                let id = self.id_of(key).ok_or(errno::ESRCH)?;
                if let Some(svc) = self.svcs.get_mut(&id) {
                    for did in &svc.dests {
                        if let Some(d) = self.dests.get_mut(did) {
                            d.stats.zero();
                        }
                    }
                    svc.stats.zero();
                }
                Ok(())
            }
            Op::SetTimeouts(t) => {
                let max = i32::MAX as u32 / HZ;
                if t.tcp > max || t.tcp_fin > max || t.udp > max {
                    return Err(errno::EINVAL);
                }
                Ok(())
            }
            // No connection synchronisation in userspace: nothing can
            // start, and nothing runs to be stopped.
            Op::StartDaemon(_) => Err(errno::EOPNOTSUPP),
            Op::StopDaemon(_) => Err(errno::ESRCH),
        }
    }

    /// The kernel's checks in `ip_vs_add_service`/`ip_vs_edit_service`,
    /// in its order: the scheduler module (one rvs does not implement is
    /// a module this "kernel" lacks), the persistence engine, the IPv6
    /// prefix length.
    fn check_service(svc: &Service) -> Result<(), Errno> {
        if !svc.scheduler.is_known() {
            return Err(errno::ENOENT);
        }
        if let Some(pe) = &svc.pe_name
            && !pe.is_empty()
            && pe != "sip"
        {
            return Err(errno::ENOENT);
        }
        if family_is_v6(&svc.key) && !(1..=128).contains(&svc.netmask.0) {
            return Err(errno::EINVAL);
        }
        Ok(())
    }

    fn add_service(&mut self, svc: &Service) -> Result<(), Errno> {
        if self.by_key.contains_key(&svc.key) {
            return Err(errno::EEXIST);
        }
        Self::check_service(svc)?;
        let id = SvcId(self.alloc());
        let mut cfg = svc.clone();
        cfg.flags = cfg.flags.with(ServiceFlags::HASHED, true);
        let sched = SchedState::new(cfg.scheduler, &Pool::new(&[], &self.dests, &[]))
            .ok_or(errno::ENOENT)?;
        self.svcs.insert(
            id,
            SvcEntry {
                cfg,
                dests: Vec::new(),
                sched,
                stats: Counters::default(),
            },
        );
        self.by_key.insert(svc.key, id);
        Ok(())
    }

    fn edit_service(&mut self, svc: &Service) -> Result<(), Errno> {
        let id = self.id_of(&svc.key).ok_or(errno::ESRCH)?;
        Self::check_service(svc)?;
        let Some(entry) = self.svcs.get_mut(&id) else {
            return Err(errno::ESRCH);
        };
        if entry.cfg.scheduler != svc.scheduler {
            entry.sched =
                SchedState::new(svc.scheduler, &Pool::new(&entry.dests, &self.dests, &[]))
                    .ok_or(errno::ENOENT)?;
        }
        entry.cfg = svc.clone();
        entry.cfg.flags = entry.cfg.flags.with(ServiceFlags::HASHED, true);
        Ok(())
    }

    fn delete_service(&mut self, id: SvcId) {
        let Some(entry) = self.svcs.remove(&id) else {
            return;
        };
        self.by_key.remove(&entry.cfg.key);
        for did in entry.dests {
            self.trash_dest(did);
        }
    }

    fn trash_dest(&mut self, did: DestId) {
        let Some(d) = self.dests.get_mut(&did) else {
            return;
        };
        d.svc = None;
        let key = (d.svc_key, d.cfg.addr);
        if d.refs() == 0 {
            self.dests.remove(&did);
        } else {
            self.trash.insert(key, did);
        }
    }

    fn check_dest(key: &ServiceKey, dest: &Destination, full: bool) -> Result<(), Errno> {
        if dest.addr.is_ipv6() != family_is_v6(key) && dest.forward != ForwardMethod::Tunnel {
            return Err(errno::EINVAL);
        }
        if !full {
            return Ok(());
        }
        if dest.weight < 0 || dest.lower_threshold > dest.upper_threshold {
            return Err(errno::ERANGE);
        }
        if dest.upper_threshold > i32::MAX as u32 {
            return Err(errno::EINVAL);
        }
        if dest.tunnel.kind == TunnelType::Gue && dest.tunnel.port == 0 {
            return Err(errno::EINVAL);
        }
        Ok(())
    }

    fn add_dest(&mut self, key: &ServiceKey, dest: &Destination) -> Result<(), Errno> {
        let id = self.id_of(key).ok_or(errno::ESRCH)?;
        Self::check_dest(key, dest, true)?;
        if self.dest_of(id, dest.addr).is_some() {
            return Err(errno::EEXIST);
        }
        let revived = self.trash.remove(&(*key, dest.addr));
        let did = match revived.filter(|d| self.dests.contains_key(d)) {
            Some(did) => {
                if let Some(d) = self.dests.get_mut(&did) {
                    d.svc = Some(id);
                    Self::update_dest(d, dest, true);
                }
                did
            }
            None => {
                if !is_unicast(dest.addr.ip()) {
                    return Err(errno::EINVAL);
                }
                let did = DestId(self.alloc());
                let mut d = DestEntry {
                    svc: Some(id),
                    svc_key: *key,
                    cfg: dest.clone(),
                    last_weight: 0,
                    overloaded: false,
                    active: 0,
                    inactive: 0,
                    persistent: 0,
                    stats: Counters::default(),
                };
                Self::update_dest(&mut d, dest, true);
                self.dests.insert(did, d);
                did
            }
        };
        if let Some(entry) = self.svcs.get_mut(&id) {
            entry.dests.insert(0, did);
            let pool = Pool::new(&entry.dests, &self.dests, &[]);
            entry.sched.dest_added(&pool, 0);
        }
        Ok(())
    }

    /// `__ip_vs_update_dest`: weight, `last_weight`, thresholds and the
    /// overload flag. Changed thresholds re-evaluate the flag against the
    /// destination's connections at once (the stable-kernel fix Debian's
    /// 6.1 carries: lowering the upper threshold below the current
    /// connections overloads the destination; older kernels only ever
    /// cleared the flag here).
    fn update_dest(d: &mut DestEntry, udest: &Destination, add: bool) {
        if add || udest.weight != 0 {
            d.last_weight = udest.weight;
        }
        let thresholds_changed = d.cfg.upper_threshold != udest.upper_threshold
            || d.cfg.lower_threshold != udest.lower_threshold;
        d.cfg = udest.clone();
        if thresholds_changed {
            d.update_overload();
        }
    }

    fn edit_dest(&mut self, key: &ServiceKey, dest: &Destination) -> Result<(), Errno> {
        let id = self.id_of(key).ok_or(errno::ESRCH)?;
        Self::check_dest(key, dest, true)?;
        let did = self.dest_of(id, dest.addr).ok_or(errno::ENOENT)?;
        if let Some(d) = self.dests.get_mut(&did) {
            Self::update_dest(d, dest, false);
        }
        if let Some(entry) = self.svcs.get_mut(&id) {
            let pool = Pool::new(&entry.dests, &self.dests, &[]);
            entry.sched.dest_updated(&pool);
        }
        Ok(())
    }

    fn delete_dest(&mut self, id: SvcId, did: DestId) {
        if let Some(entry) = self.svcs.get_mut(&id)
            && let Some(index) = entry.dests.iter().position(|d| *d == did)
        {
            entry.dests.remove(index);
            let pool = Pool::new(&entry.dests, &self.dests, &[]);
            entry.sched.dest_removed(&pool, index);
        }
        self.trash_dest(did);
    }

    /// Every service, sorted by key.
    pub(crate) fn service_statuses(&self) -> Vec<ServiceStatus> {
        let mut out: Vec<ServiceStatus> = self
            .svcs
            .values()
            .map(|s| ServiceStatus {
                service: s.cfg.clone(),
                stats: s.stats.stats(),
            })
            .collect();
        out.sort_by_key(|s| s.service.key);
        out
    }

    pub(crate) fn service_status(&self, id: SvcId) -> Option<ServiceStatus> {
        self.svcs.get(&id).map(|s| ServiceStatus {
            service: s.cfg.clone(),
            stats: s.stats.stats(),
        })
    }

    /// The destinations of a service in the kernel's list order.
    pub(crate) fn dest_statuses(&self, id: SvcId) -> Vec<DestinationStatus> {
        let Some(svc) = self.svcs.get(&id) else {
            return Vec::new();
        };
        svc.dests
            .iter()
            .filter_map(|did| self.dests.get(did))
            .map(|d| DestinationStatus {
                destination: d.cfg.clone(),
                active_conns: d.active,
                inactive_conns: d.inactive,
                persistent_conns: d.persistent,
                stats: d.stats.stats(),
            })
            .collect()
    }

    /// Runs the estimator over every service and destination.
    pub(crate) fn tick(&mut self) {
        for s in self.svcs.values_mut() {
            s.stats.tick();
        }
        for d in self.dests.values_mut() {
            d.stats.tick();
        }
    }

    /// The (protocol, address) pairs a userspace forwarder serves.
    pub(crate) fn listeners(&self) -> Vec<(Protocol, SocketAddr)> {
        let mut out: Vec<(Protocol, SocketAddr)> = self
            .by_key
            .keys()
            .filter_map(|key| match key {
                ServiceKey::Addr { protocol, addr }
                    if addr.port() != 0 && matches!(protocol, Protocol::Tcp | Protocol::Udp) =>
                {
                    Some((*protocol, *addr))
                }
                _ => None,
            })
            .collect();
        out.sort();
        out
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // one real instant is the origin of simulated time
mod tests {
    use std::time::Instant;

    use rvs_model::admin::{AdminError, Op, OpKind, errno};
    use rvs_model::{Destination, Scheduler, Service, ServiceKey};

    use crate::Core;

    #[test]
    fn a_scheduler_rvs_lacks_is_refused_like_a_missing_module() {
        let mut core = Core::new();
        let now = Instant::now();
        let key = ServiceKey::tcp("10.96.0.10:80".parse().unwrap());
        let fastest = Scheduler::from_kernel_name("fastest").unwrap();
        let err = core
            .apply(&Op::AddService(Service::new(key, fastest)), now)
            .unwrap_err();
        assert_eq!(err.errno(), Some(errno::ENOENT));
        assert!(core.services(now).is_empty());
        core.apply(
            &Op::AddService(Service::new(key, Scheduler::RoundRobin)),
            now,
        )
        .unwrap();
        // Adding it again: the duplicate is found first, as in the kernel.
        let err = core
            .apply(&Op::AddService(Service::new(key, fastest)), now)
            .unwrap_err();
        assert_eq!(err.errno(), Some(errno::EEXIST));
        // An edit to it leaves the service as it was.
        let err = core
            .apply(&Op::EditService(Service::new(key, fastest)), now)
            .unwrap_err();
        assert_eq!(err.errno(), Some(errno::ENOENT));
        assert_eq!(
            err.to_string(),
            "edit service TCP 10.96.0.10:80: refused by the dataplane: ENOENT (errno 2)"
        );
        assert_eq!(
            core.service(&key, now).unwrap().service.scheduler,
            Scheduler::RoundRobin
        );
    }

    #[test]
    fn refusals_name_the_service_and_real_server() {
        let mut core = Core::new();
        let now = Instant::now();
        let key = ServiceKey::tcp("10.96.0.10:80".parse().unwrap());
        let dest = Destination::masquerade("10.0.2.2:8080".parse().unwrap());
        let err = core
            .apply(&Op::AddDestination(key, dest.clone()), now)
            .unwrap_err();
        match err {
            AdminError::Refused {
                op,
                errno,
                service,
                destination,
            } => {
                assert_eq!(op, OpKind::AddDestination);
                assert_eq!(errno, errno::ESRCH);
                assert_eq!(service, Some(key));
                assert_eq!(destination, Some(dest.addr));
            }
            other => panic!("{other:?}"),
        }
        let err = core.destinations(&key, now).unwrap_err();
        assert_eq!(
            err.to_string(),
            "list destinations TCP 10.96.0.10:80: refused by the dataplane: ESRCH (errno 3)"
        );
    }
}
