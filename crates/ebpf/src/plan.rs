//! The virtual-service table and the map writes that make it so.
//!
//! This module owns, without any I/O, what the maps must hold: it applies
//! [`Op`]s with IPVS's checks and errnos (or the errno documented in the
//! crate docs where the socket layer cannot do what IPVS does), keeps the
//! ids that index the maps, computes each service's selection table
//! ([`crate::sched`]), and turns a batch of changes into an ordered list
//! of [`Write`]s that never exposes a half-made service:
//!
//! 1. services deleted for good leave the service map first (new
//!    connections to them pass through untouched), then their slots;
//! 2. new and changed real servers are written before any slot points
//!    at them;
//! 3. each changed service gets its new slots, then its service entry
//!    (the count that bounds the slots the programs read), then the
//!    removal of slots beyond the new count;
//! 4. real servers no slot can reach any more are freed last.
//!
//! Between any two writes every lookup the programs can make finds
//! either the old or the new choice. Ids freed in a batch are reused only
//! in a later one. [`Table::adopt`] rebuilds the table from what pinned
//! maps hold, so a restarted loader continues where the last one stopped.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;

use rvs_model::admin::{AdminError, Op, errno};
use rvs_model::{
    Destination, ForwardMethod, Netmask, Protocol, Scheduler, Service, ServiceFlags, ServiceKey,
    Timeouts,
};

use crate::layout::{
    self, BeVal, BeValBytes, FREE_BACKEND, SchedCode, SlotKey, SvcKey, SvcVal, SvcValBytes,
};
use crate::sched::{self, Member};

/// The kernel's `HZ` on Debian's kernels: bounds the timeouts.
const HZ: u32 = 250;

/// How big the maps are: what the table refuses beyond (`ENOMEM`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Virtual services.
    pub max_services: u32,
    /// Real servers, over all services.
    pub max_backends: u32,
    /// Selection-table entries, over all services.
    pub max_slots: u32,
    /// Maglev table size for `mh` services (prime).
    pub maglev_size: u32,
    /// Longest `wrr` cycle kept exact.
    pub wrr_limit: u32,
}

impl Limits {
    /// Entries the slot map needs: the limit plus room for one table
    /// being rewritten.
    pub fn slot_map_entries(&self) -> u32 {
        self.max_slots.saturating_add(
            self.maglev_size
                .max(self.wrr_limit)
                .max(sched::SH_SIZE as u32),
        )
    }
}

/// One change to a map, in the order it must be made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Write {
    /// Sets a real server's entry ([`FREE_BACKEND`] frees it).
    Backend {
        /// Its id.
        id: u32,
        /// Its entry.
        value: BeValBytes,
    },
    /// Zeroes a real server's counters (a reused id).
    ZeroBackendStats(u32),
    /// Zeroes a service's counters (a reused id).
    ZeroServiceStats(u32),
    /// Restarts a service's round-robin position (its table changed).
    ResetRr(u32),
    /// Points a slot at a real server.
    Slot {
        /// The slot.
        key: SlotKey,
        /// The real server's id.
        backend: u32,
    },
    /// Removes a slot.
    DeleteSlot(SlotKey),
    /// Sets a service's entry.
    Service {
        /// The service.
        key: SvcKey,
        /// Its entry.
        value: SvcValBytes,
    },
    /// Removes a service's entry.
    DeleteService(SvcKey),
}

/// Hands out map indices; ids freed in a batch wait for the next one.
#[derive(Clone, Debug)]
struct IdPool {
    next: u32,
    max: u32,
    free: Vec<u32>,
    pending: Vec<u32>,
}

impl IdPool {
    fn new(max: u32) -> IdPool {
        IdPool {
            next: 0,
            max,
            free: Vec::new(),
            pending: Vec::new(),
        }
    }

    /// An id, and whether it was never used (its counters are zero).
    fn alloc(&mut self) -> Option<(u32, bool)> {
        if let Some(id) = self.free.pop() {
            return Some((id, false));
        }
        if self.next < self.max {
            self.next += 1;
            return Some((self.next - 1, true));
        }
        None
    }

    fn available(&self) -> usize {
        self.free.len() + (self.max - self.next.min(self.max)) as usize
    }

    fn release(&mut self, id: u32) {
        self.pending.push(id);
    }

    fn settle(&mut self) {
        self.free.append(&mut self.pending);
    }
}

#[derive(Clone, Debug)]
struct Dest {
    id: u32,
    dest: Destination,
    last_weight: i32,
    generation: u32,
    order: u32,
    /// What the backend map holds for it (`None`: not yet written).
    committed: Option<BeValBytes>,
}

impl Dest {
    fn value(&self, svc: u32) -> BeValBytes {
        BeVal {
            addr: self.dest.addr,
            svc,
            weight: self.dest.weight,
            generation: self.generation,
            last_weight: self.last_weight,
            order: self.order,
        }
        .encode()
    }
}

#[derive(Clone, Debug)]
struct Svc {
    id: u32,
    service: Service,
    /// The kernel's list order: newest first.
    dests: Vec<Dest>,
    /// The selection table as planned (backend ids).
    planned: Vec<Option<u32>>,
    /// What the slot map holds for this id.
    committed_slots: Vec<Option<u32>>,
    /// What the service map holds for this key.
    committed_val: Option<SvcValBytes>,
    /// A reused id whose round-robin position must restart.
    rr_reset: bool,
}

impl Svc {
    fn sched_code(&self) -> SchedCode {
        sched_code(&self.service.scheduler).unwrap_or(SchedCode::Rr)
    }

    fn value(&self) -> SvcValBytes {
        let timeout = if self.service.is_persistent() {
            self.service.timeout.max(1)
        } else {
            0
        };
        SvcVal {
            id: self.id,
            count: u32::try_from(self.planned.len()).unwrap_or(u32::MAX),
            sched: self.sched_code(),
            flags: self.service.flags.0,
            timeout,
        }
        .encode()
    }

    fn members(&self) -> Vec<Member> {
        self.dests
            .iter()
            .map(|d| Member {
                addr: d.dest.addr,
                weight: d.dest.weight,
                last_weight: d.last_weight,
            })
            .collect()
    }

    /// Recomputes the selection table.
    fn replan(&mut self, limits: &Limits) {
        let members = self.members();
        let ids: Vec<u32> = self.dests.iter().map(|d| d.id).collect();
        let id = |i: usize| ids.get(i).copied();
        let flags = self.service.flags;
        self.planned = match self.sched_code() {
            SchedCode::Rr => sched::rr(&members).into_iter().map(id).collect(),
            SchedCode::Wrr => sched::wrr(&members, limits.wrr_limit as usize)
                .into_iter()
                .map(id)
                .collect(),
            SchedCode::Sh => sched::sh(&members, flags.has(ServiceFlags::SCHED1))
                .into_iter()
                .map(|s| s.and_then(id))
                .collect(),
            SchedCode::Mh => {
                if members.is_empty() {
                    Vec::new()
                } else {
                    // Populated in address order, not in the order the
                    // servers were added: the same set gives the same
                    // table on every node, whatever each node's history.
                    let mut order: Vec<usize> = (0..members.len()).collect();
                    order.sort_by_key(|&i| members[i].addr);
                    let sorted: Vec<Member> = order.iter().map(|&i| members[i]).collect();
                    sched::maglev(&sorted, limits.maglev_size)
                        .into_iter()
                        .map(|s| s.and_then(|j| order.get(j).copied()).and_then(id))
                        .collect()
                }
            }
        };
    }

    fn slots_used(&self) -> usize {
        self.planned.iter().flatten().count()
    }
}

/// The scheduler code for a model scheduler the programs implement.
pub fn sched_code(s: &Scheduler) -> Option<SchedCode> {
    match s {
        Scheduler::RoundRobin => Some(SchedCode::Rr),
        Scheduler::WeightedRoundRobin => Some(SchedCode::Wrr),
        Scheduler::SourceHashing => Some(SchedCode::Sh),
        Scheduler::Maglev => Some(SchedCode::Mh),
        _ => None,
    }
}

fn scheduler_of(code: SchedCode) -> Scheduler {
    match code {
        SchedCode::Rr => Scheduler::RoundRobin,
        SchedCode::Wrr => Scheduler::WeightedRoundRobin,
        SchedCode::Sh => Scheduler::SourceHashing,
        SchedCode::Mh => Scheduler::Maglev,
    }
}

/// A service deleted in this batch whose entries must go.
#[derive(Clone, Debug)]
struct Removed {
    /// The model key, when known (not for orphans found at adoption).
    model: Option<ServiceKey>,
    key: SvcKey,
    id: u32,
    slots: Vec<Option<u32>>,
    had_entry: bool,
}

/// A real server, as [`Table::destinations`] lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DestView {
    /// Its configuration.
    pub destination: Destination,
    /// The backend id (index of its counters).
    pub id: u32,
    /// Its generation: a socket translated with another one went to an
    /// earlier server that had this id.
    pub generation: u32,
}

/// The desired content of the maps, and what they hold.
#[derive(Clone, Debug)]
pub struct Table {
    limits: Limits,
    services: BTreeMap<ServiceKey, Svc>,
    svc_ids: IdPool,
    be_ids: IdPool,
    next_gen: u32,
    next_order: u32,
    slots_used: usize,
    backends_used: usize,
    timeouts: Timeouts,
    dirty: BTreeSet<ServiceKey>,
    removed: Vec<Removed>,
    /// Backend ids to free at the end of the batch.
    freed_backends: Vec<u32>,
    zero_backend_stats: BTreeSet<u32>,
    zero_service_stats: BTreeSet<u32>,
}

fn is_unicast(addr: SocketAddr) -> bool {
    match addr.ip() {
        std::net::IpAddr::V4(v4) => {
            !(v4.is_unspecified() || v4.is_broadcast() || v4.is_multicast())
        }
        std::net::IpAddr::V6(v6) => !(v6.is_unspecified() || v6.is_multicast()),
    }
}

impl Table {
    /// An empty table.
    pub fn new(limits: Limits) -> Table {
        Table {
            limits,
            services: BTreeMap::new(),
            svc_ids: IdPool::new(limits.max_services),
            be_ids: IdPool::new(limits.max_backends),
            next_gen: 1,
            next_order: 0,
            slots_used: 0,
            backends_used: 0,
            timeouts: Timeouts {
                tcp: 900,
                tcp_fin: 120,
                udp: 300,
            },
            dirty: BTreeSet::new(),
            removed: Vec::new(),
            freed_backends: Vec::new(),
            zero_backend_stats: BTreeSet::new(),
            zero_service_stats: BTreeSet::new(),
        }
    }

    /// Rebuilds the table from what pinned maps hold: the service map,
    /// the used entries of the backend array and the slot map. Entries
    /// nothing refers to are removed at the next [`Table::commit`], and
    /// tables that differ from the plan (another Maglev size) rewritten.
    pub fn adopt(
        limits: Limits,
        services: &[(SvcKey, SvcValBytes)],
        backends: &[(u32, BeValBytes)],
        slots: &[(SlotKey, u32)],
    ) -> Table {
        let mut table = Table::new(limits);
        let mut by_id: HashMap<u32, ServiceKey> = HashMap::new();
        let mut max_svc = None;
        for (k, v) in services {
            let (Some((protocol, addr)), Some(val)) = (layout::parse_svc_key(k), SvcVal::decode(v))
            else {
                table.removed.push(Removed {
                    model: None,
                    key: *k,
                    id: u32::MAX,
                    slots: Vec::new(),
                    had_entry: true,
                });
                continue;
            };
            let key = ServiceKey::Addr { protocol, addr };
            let mut service = Service::new(key, scheduler_of(val.sched));
            service.flags = ServiceFlags(val.flags);
            service.timeout = val.timeout;
            max_svc = max_svc.max(Some(val.id));
            by_id.insert(val.id, key);
            table.services.insert(
                key,
                Svc {
                    id: val.id,
                    service,
                    dests: Vec::new(),
                    planned: Vec::new(),
                    committed_slots: Vec::new(),
                    committed_val: Some(*v),
                    rr_reset: false,
                },
            );
        }
        let mut max_be = None;
        for (id, bytes) in backends {
            let Some(be) = BeVal::decode(bytes) else {
                continue;
            };
            max_be = max_be.max(Some(*id));
            table.next_gen = table.next_gen.max(be.generation.wrapping_add(1));
            table.next_order = table.next_order.max(be.order.wrapping_add(1));
            let svc = by_id
                .get(&be.svc)
                .and_then(|key| table.services.get_mut(key));
            let Some(svc) = svc else {
                // A server of no service: free it.
                table.freed_backends.push(*id);
                continue;
            };
            let mut dest = Destination::masquerade(be.addr);
            dest.weight = be.weight;
            svc.dests.push(Dest {
                id: *id,
                dest,
                last_weight: be.last_weight,
                generation: be.generation,
                order: be.order,
                committed: Some(*bytes),
            });
        }
        let mut orphan_slots: BTreeMap<u32, Vec<Option<u32>>> = BTreeMap::new();
        for (k, backend) in slots {
            let (svc_id, slot) = layout::parse_slot_key(k);
            let target = match by_id
                .get(&svc_id)
                .and_then(|key| table.services.get_mut(key))
            {
                Some(svc) => &mut svc.committed_slots,
                None => orphan_slots.entry(svc_id).or_default(),
            };
            let slot = slot as usize;
            if target.len() <= slot {
                target.resize(slot + 1, None);
            }
            target[slot] = Some(*backend);
        }
        for (id, slots) in orphan_slots {
            table.removed.push(Removed {
                model: None,
                key: [0; 20],
                id,
                slots,
                had_entry: false,
            });
        }
        // Ids: everything below the highest used one that is unused is free
        // (and may hold old counters: not fresh).
        let used_svc: BTreeSet<u32> = by_id.keys().copied().collect();
        table.svc_ids.next = max_svc.map_or(0, |m| m + 1).min(limits.max_services);
        table.svc_ids.free = (0..table.svc_ids.next)
            .rev()
            .filter(|id| !used_svc.contains(id))
            .collect();
        let used_be: BTreeSet<u32> = table
            .services
            .values()
            .flat_map(|s| s.dests.iter().map(|d| d.id))
            .collect();
        table.be_ids.next = max_be.map_or(0, |m| m + 1).min(limits.max_backends);
        table.be_ids.free = (0..table.be_ids.next)
            .rev()
            .filter(|id| !used_be.contains(id) && !table.freed_backends.contains(id))
            .collect();
        for id in &table.freed_backends {
            table.be_ids.release(*id);
        }
        table.backends_used = used_be.len();
        let keys: Vec<ServiceKey> = table.services.keys().copied().collect();
        for key in keys {
            if let Some(svc) = table.services.get_mut(&key) {
                svc.dests.sort_by_key(|d| std::cmp::Reverse(d.order));
                svc.replan(&limits);
                table.slots_used += svc.slots_used();
                let same = svc.planned.len() == svc.committed_slots.len()
                    && svc.planned == svc.committed_slots
                    && svc.committed_val == Some(svc.value());
                if !same {
                    table.dirty.insert(key);
                }
            }
        }
        table
    }

    /// The limits the table was made with.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Every service, in key order, with its id.
    pub fn services(&self) -> impl Iterator<Item = (&Service, u32)> {
        self.services.values().map(|s| (&s.service, s.id))
    }

    /// One service and its id.
    pub fn service(&self, key: &ServiceKey) -> Option<(&Service, u32)> {
        self.services.get(key).map(|s| (&s.service, s.id))
    }

    /// The real servers of a service, in the kernel's list order.
    pub fn destinations(&self, key: &ServiceKey) -> Option<Vec<DestView>> {
        self.services.get(key).map(|s| {
            s.dests
                .iter()
                .map(|d| DestView {
                    destination: d.dest.clone(),
                    id: d.id,
                    generation: d.generation,
                })
                .collect()
        })
    }

    /// The planned selection table of a service, as real-server
    /// addresses: what [`crate::SocketLb::selection_table`] shows.
    pub fn selection(&self, key: &ServiceKey) -> Option<Vec<Option<SocketAddr>>> {
        let svc = self.services.get(key)?;
        let addr = |id: u32| svc.dests.iter().find(|d| d.id == id).map(|d| d.dest.addr);
        Some(svc.planned.iter().map(|s| s.and_then(addr)).collect())
    }

    /// The connection timeouts last set.
    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    /// Applies one operation to the table (the maps change at
    /// [`Table::commit`]).
    pub fn apply(&mut self, op: &Op) -> Result<(), AdminError> {
        self.apply_op(op)
            .map_err(|errno| AdminError::refusal_of(op, errno))
    }

    fn apply_op(&mut self, op: &Op) -> Result<(), i32> {
        match op {
            Op::AddService(svc) => self.add_service(svc),
            Op::EditService(svc) => self.edit_service(svc),
            Op::DeleteService(key) => {
                if !self.services.contains_key(key) {
                    return Err(errno::ESRCH);
                }
                self.delete_service(key);
                Ok(())
            }
            Op::Flush => {
                let keys: Vec<ServiceKey> = self.services.keys().copied().collect();
                for key in keys {
                    self.delete_service(&key);
                }
                Ok(())
            }
            Op::AddDestination(key, dest) => self.add_dest(key, dest),
            Op::EditDestination(key, dest) => self.edit_dest(key, dest),
            Op::DeleteDestination(key, addr) => self.delete_dest(key, *addr),
            Op::Zero(None) => {
                for svc in self.services.values() {
                    self.zero_service_stats.insert(svc.id);
                    self.zero_backend_stats
                        .extend(svc.dests.iter().map(|d| d.id));
                }
                Ok(())
            }
            Op::Zero(Some(key)) => {
                let svc = self.services.get(key).ok_or(errno::ESRCH)?;
                self.zero_service_stats.insert(svc.id);
                self.zero_backend_stats
                    .extend(svc.dests.iter().map(|d| d.id));
                Ok(())
            }
            Op::SetTimeouts(t) => {
                let max = i32::MAX as u32 / HZ;
                if t.tcp > max || t.tcp_fin > max || t.udp > max {
                    return Err(errno::EINVAL);
                }
                let keep = |new: u32, old: u32| if new == 0 { old } else { new };
                self.timeouts = Timeouts {
                    tcp: keep(t.tcp, self.timeouts.tcp),
                    tcp_fin: keep(t.tcp_fin, self.timeouts.tcp_fin),
                    udp: keep(t.udp, self.timeouts.udp),
                };
                Ok(())
            }
            // No connection synchronisation at the socket layer.
            Op::StartDaemon(_) => Err(errno::EOPNOTSUPP),
            Op::StopDaemon(_) => Err(errno::ESRCH),
        }
    }

    /// IPVS's checks (`ip_vs_add_service`), then what the socket layer
    /// cannot do.
    fn check_service(svc: &Service) -> Result<(), i32> {
        let ServiceKey::Addr { .. } = svc.key else {
            // A firewall mark is set on packets, after the socket layer.
            return Err(errno::EOPNOTSUPP);
        };
        if sched_code(&svc.scheduler).is_none() {
            // As a kernel without the scheduler's module.
            return Err(errno::ENOENT);
        }
        if svc.pe_name.as_deref().is_some_and(|pe| !pe.is_empty()) {
            // No persistence engine (sip) sees packets here.
            return Err(errno::ENOENT);
        }
        let v6 = svc.key.is_ipv6();
        if v6 && !(1..=128).contains(&svc.netmask.0) {
            return Err(errno::EINVAL);
        }
        if svc.flags.has(ServiceFlags::ONEPACKET)
            || (svc.is_persistent() && svc.netmask != Netmask::host(v6))
        {
            return Err(errno::EOPNOTSUPP);
        }
        Ok(())
    }

    fn add_service(&mut self, svc: &Service) -> Result<(), i32> {
        if self.services.contains_key(&svc.key) {
            return Err(errno::EEXIST);
        }
        Self::check_service(svc)?;
        let (id, fresh) = self.svc_ids.alloc().ok_or(errno::ENOMEM)?;
        if !fresh {
            self.zero_service_stats.insert(id);
        }
        let mut cfg = svc.clone();
        cfg.flags = cfg.flags.with(ServiceFlags::HASHED, true);
        self.services.insert(
            svc.key,
            Svc {
                id,
                service: cfg,
                dests: Vec::new(),
                planned: Vec::new(),
                committed_slots: Vec::new(),
                committed_val: None,
                rr_reset: !fresh,
            },
        );
        self.dirty.insert(svc.key);
        Ok(())
    }

    fn edit_service(&mut self, svc: &Service) -> Result<(), i32> {
        if !self.services.contains_key(&svc.key) {
            return Err(errno::ESRCH);
        }
        Self::check_service(svc)?;
        let limits = self.limits;
        let mut cfg = svc.clone();
        cfg.flags = cfg.flags.with(ServiceFlags::HASHED, true);
        self.replan_with(&svc.key, &limits, |s| {
            s.service = cfg;
            Ok(())
        })
    }

    /// Changes a service with `change`, replans it, and keeps the slot
    /// budget; undoes the change (and refuses with `ENOMEM`) when the new
    /// table would not fit.
    fn replan_with(
        &mut self,
        key: &ServiceKey,
        limits: &Limits,
        change: impl FnOnce(&mut Svc) -> Result<(), i32>,
    ) -> Result<(), i32> {
        let Some(svc) = self.services.get_mut(key) else {
            return Err(errno::ESRCH);
        };
        let before = svc.clone();
        change(svc)?;
        let old = before.slots_used();
        svc.replan(limits);
        let new = svc.slots_used();
        let total = self.slots_used - old + new;
        if total > limits.max_slots as usize {
            *svc = before;
            return Err(errno::ENOMEM);
        }
        self.slots_used = total;
        self.dirty.insert(*key);
        Ok(())
    }

    fn delete_service(&mut self, key: &ServiceKey) {
        let Some(svc) = self.services.remove(key) else {
            return;
        };
        self.slots_used -= svc.slots_used();
        self.dirty.remove(key);
        for d in &svc.dests {
            self.freed_backends.push(d.id);
            self.be_ids.release(d.id);
            self.backends_used -= 1;
        }
        self.svc_ids.release(svc.id);
        self.removed.push(Removed {
            model: Some(*key),
            key: layout_key(key),
            id: svc.id,
            slots: svc.committed_slots,
            had_entry: svc.committed_val.is_some(),
        });
    }

    fn check_dest(key: &ServiceKey, dest: &Destination) -> Result<(), i32> {
        if dest.addr.is_ipv6() != key.is_ipv6() && dest.forward != ForwardMethod::Tunnel {
            return Err(errno::EINVAL);
        }
        if dest.weight < 0 || dest.lower_threshold > dest.upper_threshold {
            return Err(errno::ERANGE);
        }
        if dest.upper_threshold > i32::MAX as u32 {
            return Err(errno::EINVAL);
        }
        // The socket layer rewrites the destination address: that is
        // masquerading (or a local server); it cannot tunnel or route,
        // nor count connections against thresholds.
        if !matches!(
            dest.forward,
            ForwardMethod::Masquerade | ForwardMethod::Local
        ) || dest.upper_threshold != 0
            || dest.lower_threshold != 0
        {
            return Err(errno::EOPNOTSUPP);
        }
        Ok(())
    }

    fn add_dest(&mut self, key: &ServiceKey, dest: &Destination) -> Result<(), i32> {
        let svc = self.services.get(key).ok_or(errno::ESRCH)?;
        Self::check_dest(key, dest)?;
        if svc.dests.iter().any(|d| d.dest.addr == dest.addr) {
            return Err(errno::EEXIST);
        }
        if !is_unicast(dest.addr) {
            return Err(errno::EINVAL);
        }
        if self.be_ids.available() == 0 {
            return Err(errno::ENOMEM);
        }
        let (id, fresh) = self.be_ids.alloc().ok_or(errno::ENOMEM)?;
        let generation = self.next_gen;
        let order = self.next_order;
        let limits = self.limits;
        let new = Dest {
            id,
            dest: dest.clone(),
            last_weight: dest.weight,
            generation,
            order,
            committed: None,
        };
        let result = self.replan_with(key, &limits, |s| {
            s.dests.insert(0, new);
            Ok(())
        });
        match result {
            Ok(()) => {
                self.next_gen = self.next_gen.wrapping_add(1).max(1);
                self.next_order = self.next_order.wrapping_add(1);
                self.backends_used += 1;
                if !fresh {
                    self.zero_backend_stats.insert(id);
                }
                Ok(())
            }
            Err(e) => {
                // Give the id back untouched.
                if fresh {
                    self.be_ids.next -= 1;
                } else {
                    self.be_ids.free.push(id);
                }
                Err(e)
            }
        }
    }

    fn edit_dest(&mut self, key: &ServiceKey, dest: &Destination) -> Result<(), i32> {
        let svc = self.services.get(key).ok_or(errno::ESRCH)?;
        Self::check_dest(key, dest)?;
        if !svc.dests.iter().any(|d| d.dest.addr == dest.addr) {
            return Err(errno::ENOENT);
        }
        let limits = self.limits;
        self.replan_with(key, &limits, |s| {
            if let Some(d) = s.dests.iter_mut().find(|d| d.dest.addr == dest.addr) {
                if dest.weight != 0 {
                    d.last_weight = dest.weight;
                }
                d.dest = dest.clone();
            }
            Ok(())
        })
    }

    fn delete_dest(&mut self, key: &ServiceKey, addr: SocketAddr) -> Result<(), i32> {
        let svc = self.services.get(key).ok_or(errno::ESRCH)?;
        let Some(id) = svc.dests.iter().find(|d| d.dest.addr == addr).map(|d| d.id) else {
            return Err(errno::ENOENT);
        };
        let limits = self.limits;
        self.replan_with(key, &limits, |s| {
            s.dests.retain(|d| d.dest.addr != addr);
            Ok(())
        })?;
        self.freed_backends.push(id);
        self.be_ids.release(id);
        self.backends_used -= 1;
        Ok(())
    }

    /// The writes that bring the maps to the table, in a safe order (see
    /// the module docs), assuming they all succeed; if one fails, the
    /// caller rebuilds the table with [`Table::adopt`] from the maps.
    pub fn commit(&mut self) -> Vec<Write> {
        let mut out = Vec::new();
        let removed = std::mem::take(&mut self.removed);
        // A key deleted and added again in this batch keeps its entry
        // (overwritten below): no gap for it.
        let (late, early): (Vec<Removed>, Vec<Removed>) = removed
            .into_iter()
            .partition(|r| r.model.is_some_and(|k| self.services.contains_key(&k)));
        // 1. Services gone for good: their entry, then their slots.
        for r in &early {
            if r.had_entry {
                out.push(Write::DeleteService(r.key));
            }
            delete_slots(&mut out, r.id, &r.slots, 0);
        }
        // 2. Real servers, new or changed, before any slot points at them.
        let dirty = std::mem::take(&mut self.dirty);
        for key in &dirty {
            let Some(svc) = self.services.get_mut(key) else {
                continue;
            };
            let svc_id = svc.id;
            for d in &mut svc.dests {
                let value = d.value(svc_id);
                if d.committed != Some(value) {
                    out.push(Write::Backend { id: d.id, value });
                    d.committed = Some(value);
                }
            }
        }
        for id in std::mem::take(&mut self.zero_backend_stats) {
            out.push(Write::ZeroBackendStats(id));
        }
        for id in std::mem::take(&mut self.zero_service_stats) {
            out.push(Write::ZeroServiceStats(id));
        }
        // 3. Tables, shrinking ones first so the slot map never overflows.
        let mut order: Vec<(isize, ServiceKey)> = dirty
            .iter()
            .filter_map(|k| {
                let s = self.services.get(k)?;
                let growth = s.planned.iter().flatten().count() as isize
                    - s.committed_slots.iter().flatten().count() as isize;
                Some((growth, *k))
            })
            .collect();
        order.sort();
        for (_, key) in order {
            let Some(svc) = self.services.get_mut(&key) else {
                continue;
            };
            let changed = svc.planned != svc.committed_slots;
            for (i, slot) in svc.planned.iter().enumerate() {
                let old = svc.committed_slots.get(i).copied().flatten();
                if let Some(be) = slot
                    && old != Some(*be)
                {
                    out.push(Write::Slot {
                        key: layout::slot_key(svc.id, i as u32),
                        backend: *be,
                    });
                }
            }
            // A fresh id's position is 0 already: only a table that
            // changed under a live service, or a reused id, restarts.
            if (changed && svc.committed_val.is_some()) || svc.rr_reset {
                out.push(Write::ResetRr(svc.id));
                svc.rr_reset = false;
            }
            let value = svc.value();
            if svc.committed_val != Some(value) {
                out.push(Write::Service {
                    key: layout_key(&key),
                    value,
                });
                svc.committed_val = Some(value);
            }
            // Slots beyond the new table, or emptied in it.
            for (i, old) in svc.committed_slots.iter().enumerate() {
                let now = svc.planned.get(i).copied().flatten();
                if old.is_some() && now.is_none() {
                    out.push(Write::DeleteSlot(layout::slot_key(svc.id, i as u32)));
                }
            }
            svc.committed_slots = svc.planned.clone();
        }
        // Services deleted and added again in this batch: their old slots.
        for r in &late {
            delete_slots(&mut out, r.id, &r.slots, 0);
        }
        // 4. Real servers nothing points at any more.
        for id in std::mem::take(&mut self.freed_backends) {
            out.push(Write::Backend {
                id,
                value: FREE_BACKEND,
            });
        }
        self.svc_ids.settle();
        self.be_ids.settle();
        out
    }
}

fn delete_slots(out: &mut Vec<Write>, id: u32, slots: &[Option<u32>], from: usize) {
    for (i, s) in slots.iter().enumerate().skip(from) {
        if s.is_some() {
            out.push(Write::DeleteSlot(layout::slot_key(id, i as u32)));
        }
    }
}

/// The map key of a model service key (fwmark keys never get here).
fn layout_key(key: &ServiceKey) -> SvcKey {
    match key {
        ServiceKey::Addr { protocol, addr } => layout::svc_key(*protocol, *addr),
        ServiceKey::Fwmark { .. } => {
            layout::svc_key(Protocol::Tcp, SocketAddr::from(([0, 0, 0, 0], 0)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            max_services: 8,
            max_backends: 16,
            max_slots: 5000,
            maglev_size: 13,
            wrr_limit: 64,
        }
    }

    fn key(s: &str) -> ServiceKey {
        ServiceKey::tcp(s.parse().unwrap())
    }

    fn dest(s: &str, weight: i32) -> Destination {
        let mut d = Destination::masquerade(s.parse().unwrap());
        d.weight = weight;
        d
    }

    fn errno_of(r: Result<(), AdminError>) -> Option<i32> {
        r.err().and_then(|e| e.errno())
    }

    #[test]
    fn refuses_as_ipvs_and_where_the_socket_layer_cannot() {
        let mut t = Table::new(limits());
        let k = key("10.96.0.1:80");
        let svc = Service::new(k, Scheduler::RoundRobin);
        assert_eq!(errno_of(t.apply(&Op::AddService(svc.clone()))), None);
        assert_eq!(
            errno_of(t.apply(&Op::AddService(svc.clone()))),
            Some(errno::EEXIST)
        );
        let lc = Service::new(key("10.96.0.2:80"), Scheduler::LeastConnection);
        assert_eq!(errno_of(t.apply(&Op::AddService(lc))), Some(errno::ENOENT));
        let fw = Service::new(
            ServiceKey::Fwmark {
                mark: 1,
                ipv6: false,
            },
            Scheduler::RoundRobin,
        );
        assert_eq!(
            errno_of(t.apply(&Op::AddService(fw))),
            Some(errno::EOPNOTSUPP)
        );
        let mut one = svc.clone();
        one.flags = one.flags.with(ServiceFlags::ONEPACKET, true);
        assert_eq!(
            errno_of(t.apply(&Op::EditService(one))),
            Some(errno::EOPNOTSUPP)
        );
        let mut wide = svc.clone().persistent(60);
        wide.netmask = Netmask(0xffff_ff00);
        assert_eq!(
            errno_of(t.apply(&Op::EditService(wide))),
            Some(errno::EOPNOTSUPP)
        );
        let mut dr = dest("10.0.0.1:80", 1);
        dr.forward = ForwardMethod::DirectRoute;
        assert_eq!(
            errno_of(t.apply(&Op::AddDestination(k, dr))),
            Some(errno::EOPNOTSUPP)
        );
        let mut thr = dest("10.0.0.1:80", 1);
        thr.upper_threshold = 10;
        assert_eq!(
            errno_of(t.apply(&Op::AddDestination(k, thr))),
            Some(errno::EOPNOTSUPP)
        );
        assert_eq!(
            errno_of(t.apply(&Op::AddDestination(k, dest("10.0.0.1:80", -1)))),
            Some(errno::ERANGE)
        );
        assert_eq!(
            errno_of(t.apply(&Op::AddDestination(k, dest("[fd00::1]:80", 1)))),
            Some(errno::EINVAL)
        );
        assert_eq!(
            errno_of(t.apply(&Op::DeleteDestination(k, "10.0.0.9:80".parse().unwrap()))),
            Some(errno::ENOENT)
        );
        assert_eq!(
            errno_of(t.apply(&Op::DeleteService(key("10.96.0.9:80")))),
            Some(errno::ESRCH)
        );
    }

    #[test]
    fn a_new_service_writes_servers_then_slots_then_its_entry() {
        let mut t = Table::new(limits());
        let k = key("10.96.0.1:80");
        t.apply(&Op::AddService(Service::new(k, Scheduler::RoundRobin)))
            .unwrap();
        t.apply(&Op::AddDestination(k, dest("10.0.0.1:80", 1)))
            .unwrap();
        t.apply(&Op::AddDestination(k, dest("10.0.0.2:80", 1)))
            .unwrap();
        let w = t.commit();
        let kinds: Vec<&str> = w
            .iter()
            .map(|w| match w {
                Write::Backend { .. } => "be",
                Write::Slot { .. } => "slot",
                Write::ResetRr(_) => "rr",
                Write::Service { .. } => "svc",
                _ => "other",
            })
            .collect();
        assert_eq!(kinds, ["be", "be", "slot", "slot", "svc"]);
        // Nothing left to do.
        assert!(t.commit().is_empty());
        // Newest first, as the kernel lists them.
        let sel = t.selection(&k).unwrap();
        assert_eq!(sel[0], Some("10.0.0.2:80".parse().unwrap()));
    }

    #[test]
    fn weight_zero_leaves_the_rr_table_and_deletion_frees_last() {
        let mut t = Table::new(limits());
        let k = key("10.96.0.1:80");
        t.apply(&Op::AddService(Service::new(k, Scheduler::RoundRobin)))
            .unwrap();
        t.apply(&Op::AddDestination(k, dest("10.0.0.1:80", 1)))
            .unwrap();
        t.apply(&Op::AddDestination(k, dest("10.0.0.2:80", 1)))
            .unwrap();
        t.commit();
        t.apply(&Op::EditDestination(k, dest("10.0.0.2:80", 0)))
            .unwrap();
        assert_eq!(
            t.selection(&k).unwrap(),
            vec![Some("10.0.0.1:80".parse().unwrap())]
        );
        let w = t.commit();
        assert!(matches!(w.last(), Some(Write::DeleteSlot(_))), "{w:?}");
        t.apply(&Op::DeleteDestination(k, "10.0.0.2:80".parse().unwrap()))
            .unwrap();
        let w = t.commit();
        assert!(
            matches!(w.last(), Some(Write::Backend { value, .. }) if *value == FREE_BACKEND),
            "{w:?}"
        );
    }

    #[test]
    fn deleting_a_service_removes_its_entry_before_its_slots() {
        let mut t = Table::new(limits());
        let k = key("10.96.0.1:80");
        t.apply(&Op::AddService(Service::new(k, Scheduler::Maglev)))
            .unwrap();
        t.apply(&Op::AddDestination(k, dest("10.0.0.1:80", 1)))
            .unwrap();
        t.commit();
        t.apply(&Op::DeleteService(k)).unwrap();
        let w = t.commit();
        assert!(matches!(w[0], Write::DeleteService(_)));
        assert_eq!(
            w.iter()
                .filter(|w| matches!(w, Write::DeleteSlot(_)))
                .count(),
            13
        );
        assert!(matches!(w.last(), Some(Write::Backend { .. })));
    }

    #[test]
    fn capacity_is_refused_with_enomem_and_leaves_the_table_as_it_was() {
        let mut l = limits();
        l.max_slots = 20;
        let mut t = Table::new(l);
        let k = key("10.96.0.1:80");
        t.apply(&Op::AddService(Service::new(k, Scheduler::Maglev)))
            .unwrap();
        t.apply(&Op::AddDestination(k, dest("10.0.0.1:80", 1)))
            .unwrap();
        let k2 = key("10.96.0.2:80");
        t.apply(&Op::AddService(Service::new(k2, Scheduler::Maglev)))
            .unwrap();
        assert_eq!(
            errno_of(t.apply(&Op::AddDestination(k2, dest("10.0.0.1:80", 1)))),
            Some(errno::ENOMEM)
        );
        assert!(t.destinations(&k2).unwrap().is_empty());
        for i in 3..=8 {
            t.apply(&Op::AddService(Service::new(
                key(&format!("10.96.0.{i}:80")),
                Scheduler::RoundRobin,
            )))
            .unwrap();
        }
        assert_eq!(
            errno_of(t.apply(&Op::AddService(Service::new(
                key("10.96.0.9:80"),
                Scheduler::RoundRobin
            )))),
            Some(errno::ENOMEM)
        );
    }

    #[test]
    fn adoption_rebuilds_the_same_table_and_writes_nothing() {
        let mut t = Table::new(limits());
        let k = key("10.96.0.1:80");
        t.apply(&Op::AddService(
            Service::new(k, Scheduler::WeightedRoundRobin).persistent(30),
        ))
        .unwrap();
        t.apply(&Op::AddDestination(k, dest("10.0.0.1:80", 2)))
            .unwrap();
        t.apply(&Op::AddDestination(k, dest("10.0.0.2:80", 1)))
            .unwrap();
        let writes = t.commit();
        // Play the writes into "maps".
        let mut svcs = BTreeMap::new();
        let mut bes = BTreeMap::new();
        let mut slots = BTreeMap::new();
        for w in writes {
            match w {
                Write::Service { key, value } => {
                    svcs.insert(key, value);
                }
                Write::Backend { id, value } => {
                    bes.insert(id, value);
                }
                Write::Slot { key, backend } => {
                    slots.insert(key, backend);
                }
                Write::DeleteSlot(key) => {
                    slots.remove(&key);
                }
                _ => {}
            }
        }
        let svcs: Vec<_> = svcs.into_iter().collect();
        let bes: Vec<_> = bes.into_iter().collect();
        let slots: Vec<_> = slots.into_iter().collect();
        let mut adopted = Table::adopt(limits(), &svcs, &bes, &slots);
        assert_eq!(adopted.service(&k).unwrap().0, t.service(&k).unwrap().0);
        assert_eq!(adopted.destinations(&k), t.destinations(&k));
        assert_eq!(adopted.selection(&k), t.selection(&k));
        assert!(adopted.commit().is_empty());
        // New ids do not collide with adopted ones.
        adopted
            .apply(&Op::AddDestination(k, dest("10.0.0.3:80", 1)))
            .unwrap();
        let ids: BTreeSet<u32> = adopted
            .destinations(&k)
            .unwrap()
            .iter()
            .map(|d| d.id)
            .collect();
        assert_eq!(ids.len(), 3);
    }
}
