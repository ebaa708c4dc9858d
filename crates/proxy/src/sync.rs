//! One sync: desired state, what the dataplane has, the plan, applying it.
//!
//! [`Syncer`] ties the pure pieces to a dataplane: it reads the virtual
//! servers through [`Admin`], the bound virtual addresses through an
//! [`AddressBinder`] (`kube-ipvs0` for the kernel), plans with
//! [`crate::reconcile::plan`] and applies the plan as one batch. Failures
//! of single operations are counted and logged with the operation, and do
//! not stop the others; the next sync retries what is still off.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use rvs_model::admin::{Admin, AdminError, Op};

use crate::cluster::ClusterState;
use crate::config::ProxyConfig;
use crate::desired::{Desired, desired_state};
use crate::reconcile::{Observed, Ownership, Plan, plan};

/// Binds virtual addresses to the node so traffic to them reaches the
/// dataplane (for the kernel: addresses on the `kube-ipvs0` dummy device).
pub trait AddressBinder {
    /// The addresses bound now.
    fn bound(&mut self) -> Result<BTreeSet<IpAddr>, BindError>;
    /// Binds `addr`.
    fn bind(&mut self, addr: IpAddr) -> Result<(), BindError>;
    /// Unbinds `addr`.
    fn unbind(&mut self, addr: IpAddr) -> Result<(), BindError>;
}

/// An address binding failed.
#[derive(Debug, thiserror::Error)]
#[error("{action} {addr:?}: {detail}")]
pub struct BindError {
    /// What was attempted (`bind`, `unbind`, `list`).
    pub action: &'static str,
    /// The address, when one was involved.
    pub addr: Option<IpAddr>,
    /// What went wrong.
    pub detail: String,
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

/// Drives one dataplane towards desired state.
#[derive(Debug)]
pub struct Syncer<A, B> {
    /// The dataplane's admin surface.
    pub admin: A,
    /// The address binder.
    pub binder: B,
    /// Settings.
    pub config: ProxyConfig,
}

impl<A: Admin, B: AddressBinder> Syncer<A, B> {
    /// Computes what a sync would do, without doing it.
    pub fn plan(
        &mut self,
        cluster: &ClusterState,
    ) -> Result<(Desired, Plan, BTreeSet<IpAddr>), SyncError> {
        let desired = desired_state(cluster, &self.config);
        let observed = observe(&mut self.admin).map_err(SyncError::Read)?;
        let bound = self.binder.bound().map_err(SyncError::Bind)?;
        let ownership = self.ownership(cluster, &desired, &bound);
        let plan = plan(&observed, &desired, &ownership);
        Ok((desired, plan, bound))
    }

    fn ownership(
        &self,
        cluster: &ClusterState,
        desired: &Desired,
        bound: &BTreeSet<IpAddr>,
    ) -> Ownership {
        let mut addresses: BTreeSet<IpAddr> = bound.union(&desired.addresses).copied().collect();
        addresses.extend(
            cluster
                .node
                .iter()
                .flat_map(|n| n.addresses.iter().copied()),
        );
        Ownership {
            addresses,
            exclude: self.config.exclude_cidrs.clone(),
        }
    }

    /// Runs one sync.
    pub fn sync(&mut self, cluster: &ClusterState) -> Result<SyncReport, SyncError> {
        let started = Instant::now();
        let (desired, plan, bound) = self.plan(cluster)?;
        let mut report = SyncReport {
            draining: plan.draining,
            services: desired.services.len(),
            ..SyncReport::default()
        };
        report.plan_time = started.elapsed();
        // Bind new addresses first, so new virtual servers answer at once.
        let bind_start = Instant::now();
        for addr in desired.addresses.difference(&bound) {
            self.bind_one(true, *addr, &mut report);
        }
        report.bind_time = bind_start.elapsed();
        let apply_start = Instant::now();
        let results = self.admin.apply_batch(&plan.ops);
        report.apply_time = apply_start.elapsed();
        for (op, result) in plan.ops.iter().zip(results) {
            match result {
                Ok(()) => report.applied += 1,
                Err(err) => {
                    report.failed += 1;
                    tracing::warn!(op = ?op, error = %err, "dataplane refused an operation; the next sync retries");
                }
            }
        }
        // Unbind addresses no virtual server uses any more.
        let unbind_start = Instant::now();
        for addr in bound.difference(&desired.addresses) {
            if !self
                .config
                .exclude_cidrs
                .iter()
                .any(|net| net.contains(addr))
            {
                self.bind_one(false, *addr, &mut report);
            }
        }
        report.bind_time += unbind_start.elapsed();
        report.elapsed = started.elapsed();
        Ok(report)
    }

    fn bind_one(&mut self, bind: bool, addr: IpAddr, report: &mut SyncReport) {
        let result = if bind {
            self.binder.bind(addr)
        } else {
            self.binder.unbind(addr)
        };
        match result {
            Ok(()) => report.addresses_changed += 1,
            Err(err) => {
                report.address_failures += 1;
                tracing::warn!(error = %err, "address binding failed; the next sync retries");
            }
        }
    }

    /// `--cleanup`: deletes the virtual servers on addresses the proxy
    /// owns (bound addresses and this node's node-port addresses), and
    /// unbinds its addresses. Nothing else is touched.
    pub fn cleanup(&mut self, cluster: &ClusterState) -> Result<SyncReport, SyncError> {
        self.sync(&ClusterState {
            services: Default::default(),
            slices: Default::default(),
            node: cluster.node.clone(),
        })
    }
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
