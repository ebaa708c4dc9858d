//! What a dataplane keeps per virtual service to rebalance it.
//!
//! [`Book`] owns the policies (a default, and per-service ones the proxy
//! sets from the Service's annotation), one [`Rebalancer`] per service
//! being rebalanced, the skew its last tick saw, and the connections
//! closed per real server. Every dataplane that closes connections keeps
//! one; how it finds and closes them is its own.

use std::collections::HashMap;
use std::net::SocketAddr;

use rvs_model::{Protocol, ServiceKey};

use crate::planner::Rebalancer;
use crate::policy::Policy;

/// A virtual service: protocol and virtual address.
pub type Vip = (Protocol, SocketAddr);

/// Policies and per-service state (see the module docs).
#[derive(Debug, Default)]
pub struct Book {
    default: Policy,
    policies: HashMap<Vip, Policy>,
    services: HashMap<Vip, ServiceState>,
}

/// One service being rebalanced.
#[derive(Debug)]
pub struct ServiceState {
    /// Its rebalancer.
    pub rebalancer: Rebalancer,
    /// The skew its last tick saw.
    pub skew: f64,
    /// Connections closed for rebalancing, per real server.
    pub closed: HashMap<SocketAddr, u64>,
}

/// One virtual service's rebalancing, as [`Book::statuses`] lists it (the
/// admin API's type).
pub type ServiceRebalance = rvs_model::admin::RebalanceStatus;

impl Book {
    /// The policy in force for a virtual service.
    pub fn policy(&self, vip: &Vip) -> Policy {
        self.policies.get(vip).copied().unwrap_or(self.default)
    }

    /// Whether any service may be rebalanced.
    pub fn any_on(&self) -> bool {
        !self.default.is_off() || self.policies.values().any(|p| !p.is_off())
    }

    /// The policy of services that have none of their own. A service
    /// whose policy is now off loses its state and counts (as with
    /// [`Book::set`]).
    pub fn set_default(&mut self, policy: Policy) {
        self.default = policy;
        let Book {
            default,
            policies,
            services,
        } = self;
        services.retain(|vip, s| {
            let p = policies.get(vip).copied().unwrap_or(*default);
            s.rebalancer.set_policy(p);
            !p.is_off()
        });
    }

    /// One virtual service's own policy (`None`: the default's). A service
    /// whose policy is now off loses its state and counts.
    pub fn set(&mut self, vip: Vip, policy: Option<Policy>) {
        match policy {
            Some(p) => self.policies.insert(vip, p),
            None => self.policies.remove(&vip),
        };
        let p = self.policy(&vip);
        if p.is_off() {
            self.services.remove(&vip);
        } else if let Some(s) = self.services.get_mut(&vip) {
            s.rebalancer.set_policy(p);
        }
    }

    /// A service's state, made on first use.
    pub fn service(&mut self, vip: Vip) -> &mut ServiceState {
        let policy = self.policy(&vip);
        self.services.entry(vip).or_insert_with(|| ServiceState {
            rebalancer: Rebalancer::new(policy, seed(&vip)),
            skew: 0.0,
            closed: HashMap::new(),
        })
    }

    /// Counts one connection to `dest` closed for rebalancing `vip` (if
    /// the service is still rebalanced).
    pub fn count_closed(&mut self, vip: &Vip, dest: SocketAddr) {
        if let Some(s) = self.services.get_mut(vip) {
            *s.closed.entry(dest).or_default() += 1;
        }
    }

    /// Drops the state of services `live` says nothing is watched for and
    /// that have no counts.
    pub fn retain_live(&mut self, live: impl Fn(&Vip) -> bool) {
        self.services
            .retain(|vip, s| !s.closed.is_empty() || live(vip));
    }

    /// Every virtual service being rebalanced (or with connections closed
    /// so far), sorted.
    pub fn statuses(&self) -> Vec<ServiceRebalance> {
        let mut out: Vec<ServiceRebalance> = self
            .services
            .iter()
            .map(|(&(protocol, addr), s)| {
                let mut closed: Vec<(SocketAddr, u64)> =
                    s.closed.iter().map(|(&d, &n)| (d, n)).collect();
                closed.sort();
                ServiceRebalance {
                    service: ServiceKey::Addr { protocol, addr },
                    skew: s.skew,
                    closed,
                }
            })
            .collect();
        out.sort_by_key(|s| s.service);
        out
    }
}

/// A per-service jitter seed, stable for the service.
fn seed(vip: &Vip) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    vip.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vip(port: u16) -> Vip {
        (Protocol::Tcp, SocketAddr::from(([10, 96, 0, 1], port)))
    }

    #[test]
    fn a_service_turned_off_loses_its_state_and_counts() {
        let mut book = Book::default();
        let idle: Policy = "idle".parse().expect("policy");
        book.set(vip(80), Some(idle));
        assert!(book.any_on());
        book.service(vip(80));
        book.count_closed(&vip(80), SocketAddr::from(([10, 0, 0, 1], 8080)));
        assert_eq!(book.statuses().len(), 1);
        assert_eq!(book.statuses()[0].closed.len(), 1);
        book.set(vip(80), None);
        assert!(!book.any_on());
        assert!(book.statuses().is_empty());
    }

    #[test]
    fn the_default_reaches_services_without_their_own() {
        let mut book = Book::default();
        let idle: Policy = "idle".parse().expect("policy");
        book.set_default(idle);
        assert_eq!(book.policy(&vip(81)), idle);
        book.set(vip(80), Some(Policy::default()));
        assert!(book.policy(&vip(80)).is_off());
        book.retain_live(|_| false);
        assert!(book.statuses().is_empty());
    }
}
