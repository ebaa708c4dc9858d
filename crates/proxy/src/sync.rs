//! One sync: desired state, what the dataplane has, the plan, applying it.
//!
//! [`Syncer`] ties the pure pieces to a dataplane: it reads the virtual
//! servers through [`Admin`], the bound virtual addresses through an
//! [`AddressBinder`] (`kube-ipvs0` for the kernel), plans with
//! [`crate::reconcile::plan`] and applies the plan as one batch. Failures
//! of single operations are counted and logged with the operation, and do
//! not stop the others; the next sync retries what is still off.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use rvs_model::admin::{Admin, AdminError, Op, OpKind};
use rvs_model::{Destination, DestinationStatus, Service, ServiceKey, ServiceStatus, Stats};

use crate::cluster::{Changes, ClusterState, ObjectName};
use crate::config::ProxyConfig;
use crate::desired::{Desired, desired_for, desired_state};
use crate::reconcile::{Observed, Ownership, Plan, plan, simulate};

/// kube-proxy's default `--service-node-port-range` (an API server
/// flag; kube-proxy has none): the ports `--cleanup` takes for node
/// ports on the host's own addresses.
pub const NODE_PORT_RANGE: std::ops::RangeInclusive<u16> = 30000..=32767;

/// Whether `--cleanup` removes the virtual server `key` without a
/// cluster view: its address is bound to the binder's device
/// (`kube-ipvs0`), or it is one of the host's own addresses (`host`:
/// its interfaces' addresses) at a port in [`NODE_PORT_RANGE`]; and it
/// is not in `--ipvs-exclude-cidrs`. Firewall-mark services never are.
pub fn cleanup_owns(
    key: &ServiceKey,
    bound: &BTreeSet<IpAddr>,
    host: &BTreeSet<IpAddr>,
    exclude: &[ipnet::IpNet],
) -> bool {
    match key {
        ServiceKey::Addr { addr, .. } => {
            let ip = addr.ip();
            (bound.contains(&ip) || (host.contains(&ip) && NODE_PORT_RANGE.contains(&addr.port())))
                && !exclude.iter().any(|net| net.contains(&ip))
        }
        ServiceKey::Fwmark { .. } => false,
    }
}

/// Binds virtual addresses to the node so traffic to them reaches the
/// dataplane (for the kernel: addresses on the `kube-ipvs0` dummy device).
pub trait AddressBinder {
    /// The addresses bound now.
    fn bound(&mut self) -> Result<BTreeSet<IpAddr>, BindError>;
    /// Binds `addr`.
    fn bind(&mut self, addr: IpAddr) -> Result<(), BindError>;
    /// Unbinds `addr`.
    fn unbind(&mut self, addr: IpAddr) -> Result<(), BindError>;
    /// Binds every address of `addrs`, returning one result per address in
    /// order. Binders that can pipeline requests override this.
    fn bind_all(&mut self, addrs: &[IpAddr]) -> Vec<Result<(), BindError>> {
        addrs.iter().map(|a| self.bind(*a)).collect()
    }
    /// Unbinds every address of `addrs`, as [`AddressBinder::bind_all`].
    fn unbind_all(&mut self, addrs: &[IpAddr]) -> Vec<Result<(), BindError>> {
        addrs.iter().map(|a| self.unbind(*a)).collect()
    }
    /// The host's own addresses, on every interface but the binder's
    /// device: where kube-proxy serves node ports. `None` for binders
    /// that have no device (then the Node object's addresses stand in).
    fn local_addresses(&mut self) -> Option<Result<BTreeSet<IpAddr>, BindError>> {
        None
    }
}

/// An address binding failed.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{action}{}: {detail}", addr.map(|a| format!(" {a}")).unwrap_or_default())]
pub struct BindError {
    /// What was attempted (`bind`, `unbind`, `list`).
    pub action: &'static str,
    /// The address, when one was involved.
    pub addr: Option<IpAddr>,
    /// What went wrong.
    pub detail: String,
}

impl BindError {
    /// The actions a binder reports when its device itself could not be
    /// found or created (then no address can be bound this sync).
    pub const DEVICE_ACTIONS: [&'static str; 2] = ["create", "look up"];

    /// Whether the device failed, not one address.
    pub fn is_device(&self) -> bool {
        Self::DEVICE_ACTIONS.contains(&self.action)
    }
}

/// A binder for dataplanes that need none (the userspace dataplane binds
/// its listeners itself). It remembers what it was told, so ownership
/// still follows the desired addresses.
#[derive(Debug, Default)]
pub struct NoBinder {
    bound: BTreeSet<IpAddr>,
}

impl AddressBinder for NoBinder {
    fn bound(&mut self) -> Result<BTreeSet<IpAddr>, BindError> {
        Ok(self.bound.clone())
    }
    fn bind(&mut self, addr: IpAddr) -> Result<(), BindError> {
        self.bound.insert(addr);
        Ok(())
    }
    fn unbind(&mut self, addr: IpAddr) -> Result<(), BindError> {
        self.bound.remove(&addr);
        Ok(())
    }
}

/// A sync could not even read the dataplane.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// Reading virtual servers failed.
    #[error("reading the dataplane's virtual servers")]
    Read(#[source] AdminError),
    /// Reading the bound addresses failed.
    #[error("reading bound addresses")]
    Bind(#[source] BindError),
}

/// What one sync did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Operations applied successfully.
    pub applied: usize,
    /// Operations the dataplane refused.
    pub failed: usize,
    /// Addresses bound and unbound.
    pub addresses_changed: usize,
    /// Address (un)bindings that failed.
    pub address_failures: usize,
    /// The binder's device (`kube-ipvs0`) could not be found or created:
    /// kube-proxy's sync stops there ('Failed to create dummy interface')
    /// and does not count as updated.
    pub device_failed: bool,
    /// Real servers still draining.
    pub draining: usize,
    /// Virtual servers desired.
    pub services: usize,
    /// Time spent in total.
    pub elapsed: Duration,
    /// Of which reading the dataplane and planning.
    pub plan_time: Duration,
    /// Of which applying operations.
    pub apply_time: Duration,
    /// Of which binding and unbinding addresses.
    pub bind_time: Duration,
    /// The Services a partial sync recomputed; `None` after a full sync.
    /// Layers synced after IPVS (ipsets) follow the same scope.
    pub changed: Option<BTreeSet<ObjectName>>,
    /// Operations applied and refused, by kind (for metrics).
    pub by_kind: Vec<KindCount>,
}

/// Operations of one kind a sync applied and the dataplane refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KindCount {
    /// The kind.
    pub kind: OpKind,
    /// Applied.
    pub applied: usize,
    /// Refused.
    pub failed: usize,
}

impl SyncReport {
    fn count(&mut self, kind: OpKind, ok: bool) {
        if !self.by_kind.iter().any(|k| k.kind == kind) {
            self.by_kind.push(KindCount {
                kind,
                applied: 0,
                failed: 0,
            });
        }
        let Some(entry) = self.by_kind.iter_mut().find(|k| k.kind == kind) else {
            return;
        };
        if ok {
            entry.applied += 1;
        } else {
            entry.failed += 1;
        }
    }
}

/// Reads every virtual server with its real servers.
pub fn observe(admin: &mut dyn Admin) -> Result<Vec<Observed>, AdminError> {
    let services = admin.services()?;
    let mut out = Vec::with_capacity(services.len());
    for status in services {
        let destinations = admin.destinations(&status.service.key)?;
        out.push(Observed {
            status,
            destinations,
        });
    }
    Ok(out)
}

/// What the syncer believes the dataplane holds, kept between syncs so a
/// change costs work in proportion to the change, not to the cluster.
#[derive(Debug, Default)]
struct Cache {
    /// The dataplane's virtual servers (as observed, plus what was applied).
    observed: BTreeMap<ServiceKey, Held>,
    /// Which Service each desired virtual server came from.
    origin: BTreeMap<ServiceKey, ObjectName>,
    /// The other way round: each Service's virtual servers.
    by_origin: HashMap<ObjectName, BTreeSet<ServiceKey>>,
    /// Virtual addresses each Service needs bound.
    addresses: BTreeMap<ObjectName, BTreeSet<IpAddr>>,
    /// How many Services need each address bound.
    address_refs: HashMap<IpAddr, u32>,
    /// Addresses bound now.
    bound: BTreeSet<IpAddr>,
    /// Virtual servers with real servers still draining.
    draining: BTreeSet<ServiceKey>,
}

/// Drives one dataplane towards desired state.
#[derive(Debug)]
pub struct Syncer<A, B> {
    /// The dataplane's admin surface.
    pub admin: A,
    /// The address binder.
    pub binder: B,
    /// Settings.
    pub config: ProxyConfig,
    cache: Option<Cache>,
}

impl<A: Admin, B: AddressBinder> Syncer<A, B> {
    /// A syncer with nothing cached: its first sync reads everything.
    pub fn new(admin: A, binder: B, config: ProxyConfig) -> Syncer<A, B> {
        Syncer {
            admin,
            binder,
            config,
            cache: None,
        }
    }

    /// Reads the host's addresses from the binder into the config
    /// ([`ProxyConfig::local_addresses`]), as kube-proxy reads them every
    /// sync; on failure the last ones are kept and the failure counted.
    fn read_local_addresses(&mut self, report: &mut SyncReport) {
        match self.binder.local_addresses() {
            None => {}
            Some(Ok(local)) => {
                if self.config.local_addresses.as_ref() != Some(&local) {
                    tracing::debug!(addresses = ?local, "the host's addresses (node ports)");
                }
                self.config.local_addresses = Some(local);
            }
            Some(Err(e)) => {
                report.address_failures += 1;
                tracing::warn!(error = %e, "listing the host's addresses failed; node ports keep the last ones");
            }
        }
    }

    /// Computes what a full sync would do, without doing it.
    pub fn plan(
        &mut self,
        cluster: &ClusterState,
    ) -> Result<(Desired, Plan, BTreeSet<IpAddr>), SyncError> {
        self.read_local_addresses(&mut SyncReport::default());
        let desired = desired_state(cluster, &self.config);
        let observed = observe(&mut self.admin).map_err(SyncError::Read)?;
        let bound = self.binder.bound().map_err(SyncError::Bind)?;
        let ownership = self.ownership(
            cluster,
            &desired,
            &bound,
            observed.iter().map(|o| &o.status.service.key),
        );
        let plan = plan(&observed, &desired, &ownership);
        Ok((desired, plan, bound))
    }

    /// Ownership of the virtual servers `keys` (the ones a plan reads):
    /// those on addresses bound or to be bound, or on this node's
    /// addresses. Only their addresses are collected, so a partial sync
    /// does not copy every bound address.
    fn ownership<'k>(
        &self,
        cluster: &ClusterState,
        desired: &Desired,
        bound: &BTreeSet<IpAddr>,
        keys: impl IntoIterator<Item = &'k ServiceKey>,
    ) -> Ownership {
        // The Node's addresses and the host's own (node ports live on
        // them, also those a previous run or kube-proxy left there).
        let mut node = crate::config::host_addresses(cluster.node.as_ref(), &self.config);
        node.extend(
            cluster
                .node
                .iter()
                .flat_map(|n| n.addresses.iter().copied()),
        );
        Ownership {
            addresses: keys
                .into_iter()
                .filter_map(|k| match k {
                    ServiceKey::Addr { addr, .. } => Some(addr.ip()),
                    ServiceKey::Fwmark { .. } => None,
                })
                .filter(|ip| {
                    bound.contains(ip) || desired.addresses.contains(ip) || node.contains(ip)
                })
                .collect(),
            exclude: self.config.exclude_cidrs.clone(),
        }
    }

    fn excluded(&self, addr: &IpAddr) -> bool {
        self.config
            .exclude_cidrs
            .iter()
            .any(|net| net.contains(addr))
    }

    /// A full sync: reads every virtual server and bound address from the
    /// dataplane, so it also repairs changes made behind the proxy's back.
    pub fn sync(&mut self, cluster: &ClusterState) -> Result<SyncReport, SyncError> {
        let started = Instant::now();
        self.cache = None;
        let mut report = SyncReport::default();
        self.read_local_addresses(&mut report);
        let desired = desired_state(cluster, &self.config);
        let observed = observe(&mut self.admin).map_err(SyncError::Read)?;
        let bound = self.binder.bound().map_err(SyncError::Bind)?;
        let ownership = self.ownership(
            cluster,
            &desired,
            &bound,
            observed.iter().map(|o| &o.status.service.key),
        );
        let plan = plan(&observed, &desired, &ownership);
        // Every address on kube-ipvs0 no Service needs goes, as kube-proxy
        // removes its "superfluous addresses", --ipvs-exclude-cidrs or not
        // (those spare virtual servers, not the proxy's own device).
        let unbind: Vec<IpAddr> = bound.difference(&desired.addresses).copied().collect();
        report.services = desired.services.len();
        report.plan_time = started.elapsed();
        let mut bound_now = bound;
        let applied = self.execute(
            &plan,
            &desired.addresses,
            &mut bound_now,
            &unbind,
            &mut report,
        );
        let after = simulate(observed, &applied);
        let mut cache = Cache {
            observed: after.into_iter().map(Held::keyed).collect(),
            bound: bound_now,
            ..Cache::default()
        };
        cache.record(&desired);
        cache.draining = draining_keys(&cache.observed, &desired);
        if report.failed + report.address_failures == 0 {
            self.cache = Some(cache);
        }
        report.elapsed = started.elapsed();
        Ok(report)
    }

    /// A partial sync: plans only the Services in `changes` (and virtual
    /// servers still draining), against the cached view of the dataplane.
    /// `changes` must hold every Service that differs from the view last
    /// synced (see [`ClusterState::changes_since`]). Falls back to a full
    /// sync when nothing is cached or this node's object changed (node
    /// ports and locality depend on it).
    pub fn sync_changes(
        &mut self,
        cluster: &ClusterState,
        changes: &Changes,
    ) -> Result<SyncReport, SyncError> {
        let started = Instant::now();
        let Some(mut cache) = self.cache.take() else {
            return self.sync(cluster);
        };
        if changes.node {
            return self.sync(cluster);
        }
        let mut changed = changes.services.clone();
        // Re-read draining virtual servers: their connection counts decide.
        for key in cache.draining.clone() {
            match self.admin.destinations(&key) {
                Ok(dests) => {
                    if let Some(o) = cache.observed.get_mut(&key) {
                        o.set_destinations(dests);
                    }
                }
                Err(e) => tracing::debug!(%key, error = %e, "re-reading a draining virtual server"),
            }
            if let Some(name) = cache.origin.get(&key) {
                changed.insert(name.clone());
            }
        }
        let mut report = SyncReport {
            changed: Some(changed.clone()),
            ..SyncReport::default()
        };
        if changed.is_empty() {
            self.cache = Some(cache);
            report.elapsed = started.elapsed();
            return Ok(report);
        }
        let desired = desired_for(cluster, &self.config, Some(&changed));
        let keys: BTreeSet<ServiceKey> = changed
            .iter()
            .filter_map(|name| cache.by_origin.get(name))
            .flatten()
            .copied()
            .chain(desired.services.keys().copied())
            .chain(cache.draining.iter().copied())
            .collect();
        // A real server about to leave is re-read from the dataplane: the
        // cached connection counts are as old as the last sync, and they
        // decide between deleting it and draining it at weight 0.
        for key in &keys {
            let Some(o) = cache.observed.get_mut(key) else {
                continue;
            };
            let leaving = match desired.services.get(key) {
                Some(want) => o
                    .destinations
                    .iter()
                    .any(|d| !want.destinations.contains_key(&d.destination.addr)),
                None => false,
            };
            if leaving {
                match self.admin.destinations(key) {
                    Ok(dests) => o.set_destinations(dests),
                    Err(e) => tracing::debug!(%key, error = %e, "re-reading real servers"),
                }
            }
        }
        let observed: Vec<Observed> = keys
            .iter()
            .filter_map(|k| cache.observed.get(k).map(Held::observed))
            .collect();
        let ownership = self.ownership(cluster, &desired, &cache.bound, &keys);
        let plan = plan(&observed, &desired, &ownership);
        // Addresses: what the changed Services needed, released when no
        // other Service needs them and they are not needed any more.
        let mut held_by_changed: BTreeMap<IpAddr, u32> = BTreeMap::new();
        for name in &changed {
            for a in cache.addresses.get(name).into_iter().flatten() {
                *held_by_changed.entry(*a).or_default() += 1;
            }
        }
        let released: Vec<IpAddr> = held_by_changed
            .iter()
            .filter(|(a, n)| cache.address_refs.get(a).copied().unwrap_or(0) <= **n)
            .map(|(a, _)| *a)
            .filter(|a| !desired.addresses.contains(a))
            .collect();
        report.services = desired.services.len();
        report.plan_time = started.elapsed();
        let applied = self.execute(
            &plan,
            &desired.addresses,
            &mut cache.bound,
            &released,
            &mut report,
        );
        // The planned virtual servers now look like this (deleted ones are
        // gone from the simulation's result).
        for key in &keys {
            cache.observed.remove(key);
        }
        for o in simulate(observed, &applied) {
            let (key, o) = Held::keyed(o);
            cache.observed.insert(key, o);
        }
        for key in &keys {
            cache.unrecord(key);
        }
        for name in &changed {
            cache.forget(name);
        }
        cache.record(&desired);
        // Draining servers belong to Services recomputed here.
        cache.draining = draining_keys(&cache.observed, &desired);
        report.draining = plan.draining;
        if report.failed + report.address_failures == 0 {
            self.cache = Some(cache);
        }
        report.elapsed = started.elapsed();
        Ok(report)
    }

    /// Binds, applies, unbinds; returns the operations that succeeded.
    /// `bound` holds the addresses bound before and is kept up to date.
    fn execute(
        &mut self,
        plan: &Plan,
        wanted: &BTreeSet<IpAddr>,
        bound: &mut BTreeSet<IpAddr>,
        unbind: &[IpAddr],
        report: &mut SyncReport,
    ) -> Vec<Op> {
        // Bind new addresses first, so new virtual servers answer at once.
        let bind_start = Instant::now();
        let new: Vec<IpAddr> = wanted.difference(bound).copied().collect();
        if !new.is_empty() {
            let results = self.binder.bind_all(&new);
            for (addr, result) in new.into_iter().zip(results) {
                if bind_result(result, report) {
                    bound.insert(addr);
                }
            }
        }
        report.bind_time = bind_start.elapsed();
        let apply_start = Instant::now();
        let results = self.admin.apply_batch(&plan.ops);
        report.apply_time = apply_start.elapsed();
        let mut applied = Vec::with_capacity(plan.ops.len());
        for (op, result) in plan.ops.iter().zip(results) {
            match result {
                Ok(()) => {
                    report.applied += 1;
                    report.count(op.kind(), true);
                    applied.push(op.clone());
                }
                Err(err) => {
                    report.failed += 1;
                    report.count(op.kind(), false);
                    tracing::warn!(op = ?op, error = %err, "dataplane refused an operation; the next sync retries");
                }
            }
        }
        // Unbind addresses no virtual server uses any more.
        let unbind_start = Instant::now();
        if !unbind.is_empty() {
            let results = self.binder.unbind_all(unbind);
            for (addr, result) in unbind.iter().zip(results) {
                if bind_result(result, report) {
                    bound.remove(addr);
                }
            }
        }
        report.bind_time += unbind_start.elapsed();
        report.draining = plan.draining;
        applied
    }

    /// `--cleanup`, without a cluster view: deletes the virtual servers
    /// the proxy owns, found from the node alone, and unbinds every
    /// address bound (see [`cleanup_owns`]). Nothing else is touched.
    pub fn cleanup(&mut self, host: &BTreeSet<IpAddr>) -> Result<SyncReport, SyncError> {
        let started = Instant::now();
        self.cache = None;
        let observed = observe(&mut self.admin).map_err(SyncError::Read)?;
        let bound = self.binder.bound().map_err(SyncError::Bind)?;
        let exclude = &self.config.exclude_cidrs;
        let owned: Vec<Observed> = observed
            .into_iter()
            .filter(|o| cleanup_owns(&o.status.service.key, &bound, host, exclude))
            .collect();
        let ownership = Ownership {
            addresses: owned
                .iter()
                .filter_map(|o| match o.status.service.key {
                    ServiceKey::Addr { addr, .. } => Some(addr.ip()),
                    ServiceKey::Fwmark { .. } => None,
                })
                .collect(),
            exclude: exclude.clone(),
        };
        let plan = plan(&owned, &Desired::default(), &ownership);
        let unbind: Vec<IpAddr> = bound
            .iter()
            .filter(|a| !self.excluded(a))
            .copied()
            .collect();
        let mut report = SyncReport::default();
        let mut bound_now = bound;
        self.execute(
            &plan,
            &BTreeSet::new(),
            &mut bound_now,
            &unbind,
            &mut report,
        );
        report.elapsed = started.elapsed();
        Ok(report)
    }
}

/// A virtual server as the cache keeps it: what planning reads, without
/// counters and without the unused capacity of a vector grown while
/// reading (at 10,000 virtual servers × 10 real servers, less than half
/// the memory of an [`Observed`]).
#[derive(Debug)]
struct Held {
    service: Service,
    destinations: Box<[HeldDestination]>,
}

/// A real server as the cache keeps it.
#[derive(Debug)]
struct HeldDestination {
    destination: Destination,
    active_conns: u32,
    inactive_conns: u32,
    persistent_conns: u32,
}

impl Held {
    /// The cache's form of `o`, with its key.
    fn keyed(o: Observed) -> (ServiceKey, Held) {
        let key = o.status.service.key;
        let mut held = Held {
            service: o.status.service,
            destinations: Box::default(),
        };
        held.set_destinations(o.destinations);
        (key, held)
    }

    /// Replaces the real servers with ones just read.
    fn set_destinations(&mut self, dests: Vec<DestinationStatus>) {
        self.destinations = dests
            .into_iter()
            .map(|d| HeldDestination {
                destination: d.destination,
                active_conns: d.active_conns,
                inactive_conns: d.inactive_conns,
                persistent_conns: d.persistent_conns,
            })
            .collect();
    }

    /// Back to the planner's form (counters zero: planning never reads
    /// them).
    fn observed(&self) -> Observed {
        Observed {
            status: ServiceStatus {
                service: self.service.clone(),
                stats: Stats::default(),
            },
            destinations: self
                .destinations
                .iter()
                .map(|d| DestinationStatus {
                    destination: d.destination.clone(),
                    active_conns: d.active_conns,
                    inactive_conns: d.inactive_conns,
                    persistent_conns: d.persistent_conns,
                    stats: Stats::default(),
                })
                .collect(),
        }
    }
}

/// Counts one (un)binding; `true` when it succeeded.
fn bind_result(result: Result<(), BindError>, report: &mut SyncReport) -> bool {
    match result {
        Ok(()) => {
            report.addresses_changed += 1;
            true
        }
        Err(err) => {
            report.address_failures += 1;
            report.device_failed |= err.is_device();
            tracing::warn!(error = %err, "address binding failed; the next sync retries");
            false
        }
    }
}

impl Cache {
    /// Records which Service each desired virtual server and address
    /// belongs to.
    fn record(&mut self, desired: &Desired) {
        for (key, d) in &desired.services {
            self.unrecord(key);
            self.origin.insert(*key, d.origin.0.clone());
            self.by_origin
                .entry(d.origin.0.clone())
                .or_default()
                .insert(*key);
            if let ServiceKey::Addr { addr, .. } = key
                && desired.addresses.contains(&addr.ip())
            {
                let fresh = self
                    .addresses
                    .entry(d.origin.0.clone())
                    .or_default()
                    .insert(addr.ip());
                if fresh {
                    *self.address_refs.entry(addr.ip()).or_default() += 1;
                }
            }
        }
    }

    /// Forgets which Service virtual server `key` came from.
    fn unrecord(&mut self, key: &ServiceKey) {
        if let Some(name) = self.origin.remove(key)
            && let Some(keys) = self.by_origin.get_mut(&name)
        {
            keys.remove(key);
            if keys.is_empty() {
                self.by_origin.remove(&name);
            }
        }
    }

    /// Forgets the addresses Service `name` needed.
    fn forget(&mut self, name: &ObjectName) {
        for addr in self.addresses.remove(name).into_iter().flatten() {
            if let Some(n) = self.address_refs.get_mut(&addr) {
                *n -= 1;
                if *n == 0 {
                    self.address_refs.remove(&addr);
                }
            }
        }
    }
}

/// Virtual servers holding real servers that are not desired (weight 0,
/// waiting for their connections to end).
fn draining_keys(observed: &BTreeMap<ServiceKey, Held>, desired: &Desired) -> BTreeSet<ServiceKey> {
    desired
        .services
        .iter()
        .filter(|(key, d)| {
            observed.get(key).is_some_and(|o| {
                o.destinations
                    .iter()
                    .any(|x| !d.destinations.contains_key(&x.destination.addr))
            })
        })
        .map(|(key, _)| *key)
        .collect()
}

/// The batch a plan applies, for `--dry-run` output: one line per op.
pub fn describe(ops: &[Op]) -> String {
    let mut out = String::new();
    for op in ops {
        let line = match op {
            Op::AddService(s) => format!(
                "add service {} scheduler {}{}",
                s.key,
                s.scheduler,
                persistence(s)
            ),
            Op::EditService(s) => format!(
                "edit service {} scheduler {}{}",
                s.key,
                s.scheduler,
                persistence(s)
            ),
            Op::DeleteService(k) => format!("delete service {k}"),
            Op::AddDestination(k, d) => {
                format!("add real server {} to {k} weight {}", d.addr, d.weight)
            }
            Op::EditDestination(k, d) => {
                format!("set real server {} of {k} weight {}", d.addr, d.weight)
            }
            Op::DeleteDestination(k, a) => format!("delete real server {a} from {k}"),
            other => format!("{other:?}"),
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

fn persistence(s: &rvs_model::Service) -> String {
    if s.is_persistent() {
        format!(" persistent {}", s.timeout)
    } else {
        String::new()
    }
}

#[cfg(test)]
mod tests {
    use super::BindError;

    #[test]
    fn bind_errors_name_the_address_once_and_plainly() {
        let e = BindError {
            action: "bind",
            addr: Some("10.96.0.1".parse().unwrap()),
            detail: "to kube-ipvs0: File exists".into(),
        };
        assert_eq!(e.to_string(), "bind 10.96.0.1: to kube-ipvs0: File exists");
        let e = BindError {
            action: "list",
            addr: None,
            detail: "no socket".into(),
        };
        assert_eq!(e.to_string(), "list: no socket");
    }
}
