//! Services' rebalancing policies, handed to the dataplane that carries
//! them out.
//!
//! This module owns [`RebalanceSide`]: a [`NodeSide`] that, after each
//! sync, gives a [`RebalanceTarget`] (the userspace dataplane's
//! rebalancing) the policy of every virtual server whose Service has the
//! `rvs.dev/rebalance` annotation, and takes it back from those whose
//! Service lost it or is gone; the others follow the proxy's default
//! (`--rebalance`), which the binary sets once.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use rvs_model::{Protocol, ServiceKey};
use rvs_rebalance::Policy;

use crate::cluster::{ClusterState, ObjectName};
use crate::config::ProxyConfig;
use crate::desired::desired_for;
use crate::run::{NodeReport, NodeSide};

/// What carries out the policies: per virtual server, its own policy or
/// (`None`) the default.
pub trait RebalanceTarget {
    /// Sets or clears one virtual server's own policy.
    fn set(&self, protocol: Protocol, vip: SocketAddr, policy: Option<Policy>);
}

/// The node side that keeps a [`RebalanceTarget`] in line with the
/// Services' annotations (see the module docs).
#[derive(Debug)]
pub struct RebalanceSide<T> {
    target: T,
    /// Virtual servers given their own policy, by Service.
    given: BTreeMap<ObjectName, Vec<Given>>,
}

/// A virtual server and the policy it was given.
type Given = (Protocol, SocketAddr, Policy);

impl<T: RebalanceTarget> RebalanceSide<T> {
    /// A side for `target`, which has no per-service policy yet.
    pub fn new(target: T) -> RebalanceSide<T> {
        RebalanceSide {
            target,
            given: BTreeMap::new(),
        }
    }
}

impl<T: RebalanceTarget> NodeSide for RebalanceSide<T> {
    fn after_sync(
        &mut self,
        cluster: &ClusterState,
        config: &ProxyConfig,
        changed: Option<&BTreeSet<ObjectName>>,
    ) -> NodeReport {
        // What the Services in scope (those changed, or all) want now: the
        // annotated ones, a policy for each of their virtual servers.
        let in_scope = |name: &ObjectName| changed.is_none_or(|c| c.contains(name));
        let annotated: BTreeMap<ObjectName, Policy> = cluster
            .services
            .iter()
            .filter(|(name, _)| in_scope(name))
            .filter_map(|(name, info)| Some((name.clone(), info.rebalance?)))
            .collect();
        let mut want: BTreeMap<ObjectName, Vec<Given>> = BTreeMap::new();
        if !annotated.is_empty() {
            let names: BTreeSet<ObjectName> = annotated.keys().cloned().collect();
            let desired = desired_for(cluster, config, Some(&names));
            for (key, d) in &desired.services {
                let ServiceKey::Addr { protocol, addr } = *key else {
                    continue;
                };
                if let Some(&policy) = annotated.get(&d.origin.0) {
                    want.entry(d.origin.0.clone())
                        .or_default()
                        .push((protocol, addr, policy));
                }
            }
        }
        // Only what changed is told: a virtual server keeps its policy
        // across syncs without a gap.
        let names: BTreeSet<ObjectName> = self
            .given
            .keys()
            .filter(|n| in_scope(n))
            .cloned()
            .chain(want.keys().cloned())
            .collect();
        for name in names {
            let old = self.given.remove(&name).unwrap_or_default();
            let new = want.remove(&name).unwrap_or_default();
            for &(protocol, vip, _) in &old {
                if !new.iter().any(|&(p, v, _)| (p, v) == (protocol, vip)) {
                    self.target.set(protocol, vip, None);
                }
            }
            for &(protocol, vip, policy) in &new {
                if !old.contains(&(protocol, vip, policy)) {
                    self.target.set(protocol, vip, Some(policy));
                }
            }
            if !new.is_empty() {
                self.given.insert(name, new);
            }
        }
        NodeReport::default()
    }
}

/// The target of a dataplane that does not close connections (the
/// kernel's IPVS alone): the first annotated Service is reported, once,
/// so the annotation is never a silent no-op.
#[derive(Debug)]
pub struct NotCarriedOut {
    dataplane: &'static str,
    warned: std::sync::atomic::AtomicBool,
}

impl NotCarriedOut {
    /// For the dataplane named `dataplane`.
    pub fn new(dataplane: &'static str) -> NotCarriedOut {
        NotCarriedOut {
            dataplane,
            warned: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

impl RebalanceTarget for NotCarriedOut {
    fn set(&self, protocol: Protocol, vip: SocketAddr, policy: Option<Policy>) {
        if policy.is_some_and(|p| !p.is_off())
            && !self.warned.swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            tracing::warn!(
                dataplane = self.dataplane,
                virtual_server = %format!("{protocol} {vip}"),
                "the {} annotation is not carried out by this dataplane (IPVS cannot close the connections it forwards; --dataplane kernel,ebpf, ebpf and userspace rebalance); ignored",
                rvs_rebalance::ANNOTATION
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;
    use std::sync::Mutex;

    use super::*;
    use crate::cluster::{ServiceInfo, ServicePort};

    #[derive(Debug, Default)]
    struct Recorder(Mutex<Vec<(SocketAddr, Option<Policy>)>>);

    impl RebalanceTarget for &Recorder {
        fn set(&self, _: Protocol, vip: SocketAddr, policy: Option<Policy>) {
            self.0.lock().unwrap().push((vip, policy));
        }
    }

    fn name(n: &str) -> ObjectName {
        ObjectName {
            namespace: "default".into(),
            name: n.into(),
        }
    }

    fn service(n: &str, ip: [u8; 4], rebalance: Option<Policy>) -> ServiceInfo {
        let mut s = ServiceInfo::new(
            name(n),
            vec![IpAddr::from(ip)],
            vec![ServicePort {
                name: String::new(),
                protocol: Protocol::Tcp,
                port: 80,
                node_port: None,
            }],
        );
        s.rebalance = rebalance;
        s
    }

    #[test]
    fn annotated_services_get_their_policy_and_lose_it() {
        let recorder = Recorder::default();
        let mut side = RebalanceSide::new(&recorder);
        let config = ProxyConfig::default();
        let mut cluster = ClusterState::default();
        cluster
            .services
            .insert(name("a"), service("a", [10, 96, 0, 1], Some(Policy::IDLE)));
        cluster
            .services
            .insert(name("b"), service("b", [10, 96, 0, 2], None));
        side.after_sync(&cluster, &config, None);
        let a: SocketAddr = "10.96.0.1:80".parse().unwrap();
        let b: SocketAddr = "10.96.0.2:80".parse().unwrap();
        assert_eq!(*recorder.0.lock().unwrap(), [(a, Some(Policy::IDLE))]);

        // Nothing changed: nothing told (no gap in a's policy).
        recorder.0.lock().unwrap().clear();
        side.after_sync(&cluster, &config, None);
        assert!(recorder.0.lock().unwrap().is_empty());

        // A partial sync of b alone leaves a alone; b gets its own.
        recorder.0.lock().unwrap().clear();
        let off: Policy = "off".parse().unwrap();
        cluster
            .services
            .insert(name("b"), service("b", [10, 96, 0, 2], Some(off)));
        side.after_sync(&cluster, &config, Some(&BTreeSet::from([name("b")])));
        assert_eq!(*recorder.0.lock().unwrap(), [(b, Some(off))]);

        // a loses its annotation, b is deleted: both back to the default.
        recorder.0.lock().unwrap().clear();
        cluster
            .services
            .insert(name("a"), service("a", [10, 96, 0, 1], None));
        cluster.services.remove(&name("b"));
        side.after_sync(&cluster, &config, None);
        let mut calls = recorder.0.lock().unwrap().clone();
        calls.sort_by_key(|c| c.0);
        assert_eq!(calls, [(a, None), (b, None)]);
    }
}
