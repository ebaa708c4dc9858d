//! The kernel dataplane's netfilter side: kube-proxy's ipsets and
//! iptables rules, synced after each IPVS sync. This module owns when
//! each set and table is written and what is cached between syncs; the
//! writing itself goes through [`SetBackend`] and [`RuleBackend`] (the
//! kernel's nfnetlink and `iptables-restore` in production, fakes in
//! tests).
//!
//! Per IP family the node runs (IPv4 always, IPv6 when the kernel has
//! it), [`Netfilter::sync`]:
//!
//! * keeps the members of kube-proxy's sets per Service
//!   ([`IpsetTracker`]). A full sync rebuilds them and brings every set
//!   to them in place (created when missing, only differing members
//!   added and deleted, rebuilt and swapped in when `maxelem` changed); a
//!   partial sync recomputes only the changed Services and sends just
//!   their adds and dels, in one nfnetlink batch;
//! * renders the iptables rules from which sets have members (and the
//!   load balancers the node may not reach) and applies them with one
//!   `iptables-restore --noflush` per table. A partial sync skips that
//!   when the rules are the ones last applied, and otherwise rewrites
//!   only our chains; a full sync also reads the tables first to ensure
//!   the jumps from the built-in chains, so it repairs rules changed
//!   behind the proxy's back.
//!
//! Failures are logged with the set, member or table, counted in the
//! report, and make the next sync a full one; nothing here aborts the
//! proxy. [`cleanup`] removes our chains and jumps (nothing foreign),
//! then our sets.

use std::collections::BTreeSet;
use std::time::Instant;

use rvs_netfilter::ipset::{
    self, Entry, Family, IpsetClient, IpsetError, KubeSet, Op, SetSpec, SetType,
};
use rvs_netfilter::iptables::{
    Backend, Iptables, IptablesError, LocalDetect, RuleSet, RulesConfig, RulesInput, render_input,
};
use rvs_proxy::ProxyConfig;
use rvs_proxy::cluster::{ClusterState, ObjectName};
use rvs_proxy::ipsets::{IpFamily, IpsetDelta, IpsetTracker};
use rvs_proxy::run::NodeReport;

/// Where sets are written: the kernel's ipset over nfnetlink
/// ([`KernelSets`]), or a fake in tests.
pub trait SetBackend {
    /// Makes set `spec.name` hold exactly `desired` (see
    /// [`ipset::sync::sync_set`]).
    fn sync_set(
        &mut self,
        spec: &SetSpec,
        desired: &BTreeSet<Entry>,
    ) -> Result<ipset::sync::SyncReport, IpsetError>;
    /// Sends `ops` as one batch: one result per operation, or an error
    /// when the batch as a whole failed.
    fn batch(&mut self, ops: &[Op]) -> Result<Vec<Result<(), IpsetError>>, IpsetError>;
}

/// Where rules are written: `iptables-restore` ([`KernelRules`]), or a
/// fake in tests.
pub trait RuleBackend {
    /// Writes `rules` for `family` (ensuring the jumps from the built-in
    /// chains when asked; see [`Iptables::apply_tables`]).
    fn apply(
        &mut self,
        family: Family,
        rules: &RuleSet,
        ensure_jumps: bool,
    ) -> Result<(), IptablesError>;
}

/// The kernel's ipsets, through one nfnetlink socket opened when first
/// needed and opened again after a socket error.
#[derive(Debug, Default)]
pub struct KernelSets {
    client: Option<IpsetClient>,
}

impl KernelSets {
    fn client(&mut self) -> Result<&mut IpsetClient, IpsetError> {
        let client = match self.client.take() {
            Some(client) => client,
            None => IpsetClient::open()?,
        };
        Ok(self.client.insert(client))
    }

    fn check<T>(&mut self, result: Result<T, IpsetError>) -> Result<T, IpsetError> {
        if matches!(result, Err(IpsetError::Io { .. })) {
            // The socket may be broken: reopen next time.
            self.client = None;
        }
        result
    }
}

impl SetBackend for KernelSets {
    fn sync_set(
        &mut self,
        spec: &SetSpec,
        desired: &BTreeSet<Entry>,
    ) -> Result<ipset::sync::SyncReport, IpsetError> {
        let result = ipset::sync::sync_set(self.client()?, spec, desired);
        self.check(result)
    }

    fn batch(&mut self, ops: &[Op]) -> Result<Vec<Result<(), IpsetError>>, IpsetError> {
        let result = self.client()?.batch(ops);
        if result.is_err() {
            self.client = None;
        }
        result
    }
}

/// `iptables-restore` of one backend (legacy, nft or the system's).
#[derive(Clone, Copy, Debug)]
pub struct KernelRules {
    /// Which binaries.
    pub backend: Backend,
}

impl RuleBackend for KernelRules {
    fn apply(
        &mut self,
        family: Family,
        rules: &RuleSet,
        ensure_jumps: bool,
    ) -> Result<(), IptablesError> {
        Iptables::new(self.backend, family).apply_tables(rules, ensure_jumps)
    }
}

/// The options that shape the sets and rules.
#[derive(Clone, Debug)]
pub struct NetfilterOptions {
    /// `maxelem` of every set (`--ipset-maxelem`).
    pub maxelem: u32,
    /// Rules options; `local_detect` is per family, below.
    pub rules: RulesConfig,
    /// Local-traffic detection of IPv4 and IPv6; a
    /// [`LocalDetect::NodeCidr`] is resolved against the Node's pod
    /// CIDRs at each sync, so a pod CIDR appearing or changing
    /// re-renders the rules.
    pub local_detect: [LocalDetect; 2],
    /// The families programmed.
    pub families: Vec<IpFamily>,
}

/// What one netfilter sync did: set members changed, `iptables-restore`
/// runs (one per table and family applied), failures (set operations,
/// members that do not fit, restores) and the time each part took.
pub type NetfilterReport = NodeReport;

/// The ipset/iptables family of a proxy family.
pub fn nf_family(family: IpFamily) -> Family {
    match family {
        IpFamily::V4 => Family::Inet,
        IpFamily::V6 => Family::Inet6,
    }
}

/// The families to run, as kube-proxy's `platformCheckSupported`
/// decides: IPv4, and IPv6 when the kernel has it (`/proc/net/if_inet6`)
/// and `ip6tables` of `backend` works ([`Iptables::present`]). Without
/// ip6tables kube-proxy runs single-stack IPv4 rather than failing every
/// IPv6 sync, and so does rvs-proxy (logged once here).
pub fn kernel_families(backend: Backend) -> Vec<IpFamily> {
    let mut families = vec![IpFamily::V4];
    if !std::path::Path::new("/proc/net/if_inet6").exists() {
        tracing::info!("no IPv6 in this kernel: IPv4 only");
    } else if !Iptables::new(backend, Family::Inet6).present() {
        tracing::info!("no usable ip6tables (ip6tables-save -t nat failed): IPv4 only");
    } else {
        families.push(IpFamily::V6);
    }
    families
}

#[derive(Debug)]
struct FamilyState {
    family: IpFamily,
    tracker: Option<IpsetTracker>,
    /// The rules last applied successfully.
    applied: Option<RuleSet>,
    /// The local-traffic detection they were rendered with.
    local: LocalDetect,
}

/// kube-proxy's ipsets and iptables rules for the families the node runs.
///
/// Its cache: per family the members of every set (the tracker) and the
/// rules last applied. A failure anywhere makes the next sync a full one,
/// which rebuilds the members, writes every set in full and restores the
/// rules with their jumps.
#[derive(Debug)]
pub struct Netfilter<S = KernelSets, R = KernelRules> {
    options: NetfilterOptions,
    sets: S,
    rules: R,
    families: Vec<FamilyState>,
    /// A failure happened: the next sync is a full one.
    needs_full: bool,
}

fn kube_set(base_name: &str) -> Option<KubeSet> {
    KubeSet::ALL
        .into_iter()
        .find(|s| s.base_name() == base_name)
}

impl<S: SetBackend, R: RuleBackend> Netfilter<S, R> {
    /// Nothing synced yet; the first sync is a full one.
    pub fn new(options: NetfilterOptions, sets: S, rules: R) -> Netfilter<S, R> {
        let families = options
            .families
            .iter()
            .map(|family| FamilyState {
                family: *family,
                tracker: None,
                applied: None,
                local: LocalDetect::None,
            })
            .collect();
        Netfilter {
            options,
            sets,
            rules,
            families,
            needs_full: true,
        }
    }

    /// The set backend.
    pub fn sets(&self) -> &S {
        &self.sets
    }

    /// The rule backend.
    pub fn rules(&self) -> &R {
        &self.rules
    }

    /// Syncs the sets and rules to `cluster`: every Service when
    /// `changed` is `None` (or after a failure), else only `changed`.
    pub fn sync(
        &mut self,
        cluster: &ClusterState,
        config: &ProxyConfig,
        changed: Option<&BTreeSet<ObjectName>>,
    ) -> NetfilterReport {
        let full = changed.is_none() || self.needs_full;
        let mut report = NetfilterReport::default();
        if !full && changed.is_some_and(BTreeSet::is_empty) {
            return report;
        }
        for i in 0..self.families.len() {
            self.sync_family(
                i,
                cluster,
                config,
                if full { None } else { changed },
                &mut report,
            );
        }
        self.needs_full = report.failures > 0;
        report
    }

    fn sync_family(
        &mut self,
        index: usize,
        cluster: &ClusterState,
        config: &ProxyConfig,
        changed: Option<&BTreeSet<ObjectName>>,
        report: &mut NetfilterReport,
    ) {
        let started = Instant::now();
        let family = self.families[index].family;
        let nf = nf_family(family);
        let maxelem = self.options.maxelem;
        let rules_changed = match (changed, self.families[index].tracker.as_mut()) {
            (Some(changed), Some(tracker)) => {
                let delta = tracker.update_services(cluster, config, Some(changed));
                if !self.apply_delta(nf, &delta, report) {
                    report.unsynced_families.push(family);
                }
                delta.rules_input_changed
            }
            _ => {
                let tracker = IpsetTracker::build(cluster, config, family);
                if !self.sync_all_sets(nf, &tracker, maxelem, report) {
                    report.unsynced_families.push(family);
                }
                self.families[index].tracker = Some(tracker);
                true
            }
        };
        report.ipset_time += started.elapsed();

        let started = Instant::now();
        let state = &self.families[index];
        let Some(tracker) = state.tracker.as_ref() else {
            return;
        };
        let ipv6 = family == IpFamily::V6;
        let pod_cidrs = cluster.node.as_ref().map(|n| n.pod_cidrs.as_slice());
        let local =
            self.options.local_detect[usize::from(ipv6)].resolve(pod_cidrs.unwrap_or(&[]), ipv6);
        // A partial sync whose sets kept their emptiness (and the same
        // no-node-access entries and local detection) writes the rules
        // last applied: nothing to render or restore.
        if changed.is_some() && !rules_changed && state.applied.is_some() && state.local == local {
            return;
        }
        let input = rules_input(tracker, nf, report);
        let mut cfg = self.options.rules.clone();
        cfg.local_detect = local.clone();
        let rules = match render_input(&input, &cfg) {
            Ok(rules) => rules,
            Err(e) => {
                report.failures += 1;
                report.unsynced_families.push(family);
                tracing::error!(family = nf.name(), error = %e, "cannot render the iptables rules");
                return;
            }
        };
        let state = &mut self.families[index];
        if changed.is_some() && state.applied.as_ref() == Some(&rules) {
            return;
        }
        // Between full syncs the jumps into our chains stay from the last
        // apply: only our chains are rewritten, without reading the tables.
        let ensure_jumps = changed.is_none() || state.applied.is_none();
        match self.rules.apply(nf, &rules, ensure_jumps) {
            Ok(()) => {
                report.restores += 2;
                state.applied = Some(rules);
                state.local = local;
            }
            Err(e) => {
                report.failures += 1;
                report.unsynced_families.push(family);
                report.restore_failed.push(family);
                state.applied = None;
                tracing::error!(
                    family = nf.name(),
                    error = %e,
                    "applying the iptables rules failed; the next sync retries"
                );
            }
        }
        report.iptables_time += started.elapsed();
    }

    /// A full sync of every set of `nf` to the tracker's members;
    /// `false` when a set could not be brought up at all.
    fn sync_all_sets(
        &mut self,
        nf: Family,
        tracker: &IpsetTracker,
        maxelem: u32,
        report: &mut NetfilterReport,
    ) -> bool {
        let mut all_up = true;
        for set in KubeSet::ALL {
            let spec = set.spec(nf, maxelem);
            let mut desired = BTreeSet::new();
            for member in tracker.members(set.base_name()) {
                match Entry::parse(set.set_type(), member) {
                    Ok(e) => {
                        desired.insert(e);
                    }
                    Err(e) => {
                        report.failures += 1;
                        tracing::error!(set = %spec.name, member, error = %e, "member does not parse");
                    }
                }
            }
            match self.sets.sync_set(&spec, &desired) {
                Ok(r) => {
                    report.set_members += r.added + r.deleted;
                    if r.created || r.rebuilt {
                        tracing::debug!(
                            set = %spec.name,
                            created = r.created,
                            rebuilt = r.rebuilt,
                            members = desired.len(),
                            "ipset set up"
                        );
                    }
                }
                Err(e) => {
                    report.failures += 1;
                    all_up = false;
                    tracing::error!(set = %spec.name, error = %e, "syncing the ipset failed; the next sync retries");
                    if matches!(e, IpsetError::Io { .. }) {
                        // The socket is gone: the other sets wait for the
                        // next sync.
                        return false;
                    }
                }
            }
        }
        all_up
    }

    /// A partial sync: the members that changed, dels first, one batch.
    /// `false` when the batch could not be sent at all (refused members
    /// are counted and logged, as kube-proxy logs them).
    fn apply_delta(
        &mut self,
        nf: Family,
        delta: &IpsetDelta,
        report: &mut NetfilterReport,
    ) -> bool {
        let mut ops = Vec::with_capacity(delta.add.len() + delta.del.len());
        let mut parse = |set: &str, member: &str| -> Option<(String, Entry)> {
            let kube = kube_set(set)?;
            match Entry::parse(kube.set_type(), member) {
                Ok(e) => Some((kube.name(nf), e)),
                Err(e) => {
                    report.failures += 1;
                    tracing::error!(set, member, error = %e, "member does not parse");
                    None
                }
            }
        };
        for (set, member) in &delta.del {
            if let Some((set, entry)) = parse(set, member) {
                ops.push(Op::Del {
                    set,
                    entry,
                    missing_ok: true,
                });
            }
        }
        for (set, member) in &delta.add {
            if let Some((set, entry)) = parse(set, member) {
                ops.push(Op::Add {
                    set,
                    entry,
                    comment: None,
                    exist_ok: true,
                });
            }
        }
        if ops.is_empty() {
            return true;
        }
        match self.sets.batch(&ops) {
            Ok(results) => {
                for (op, result) in ops.iter().zip(results) {
                    match result {
                        Ok(()) => report.set_members += 1,
                        Err(e) => {
                            report.failures += 1;
                            tracing::warn!(op = %op.describe(), error = %e, "ipset refused a change; the next sync is a full one");
                        }
                    }
                }
            }
            Err(e) => {
                report.failures += 1;
                tracing::error!(error = %e, "sending ipset changes failed; the next sync is a full one");
                return false;
            }
        }
        true
    }
}

/// What the rules of one family depend on, from the tracker.
fn rules_input(tracker: &IpsetTracker, nf: Family, report: &mut NetfilterReport) -> RulesInput {
    let mut lb_no_node_access = BTreeSet::new();
    for member in tracker.lb_no_node_access() {
        match Entry::parse(SetType::HashIpPort, member) {
            Ok(e) => {
                lb_no_node_access.insert(e);
            }
            Err(e) => {
                report.failures += 1;
                tracing::error!(member, error = %e, "load-balancer entry does not parse");
            }
        }
    }
    RulesInput {
        family: nf,
        non_empty: KubeSet::ALL
            .into_iter()
            .filter(|s| !tracker.is_empty(s.base_name()))
            .collect(),
        lb_no_node_access,
    }
}

/// `--cleanup` of the netfilter side: per family, our iptables jumps and
/// chains (foreign chains untouched; ours a foreign chain jumps to are
/// only flushed), then our ipsets. Returns how many steps failed; each
/// failure is logged.
pub fn cleanup(backend: Backend, families: &[IpFamily]) -> usize {
    let mut failures = 0;
    for family in families {
        let nf = nf_family(*family);
        match Iptables::new(backend, nf).cleanup() {
            Ok(kept) => {
                for (table, chain) in kept {
                    tracing::warn!(
                        table = table.name(),
                        chain,
                        "kept (flushed) a chain of ours that a foreign chain jumps to"
                    );
                }
            }
            Err(IptablesError::Spawn { program, error })
                if error.kind() == std::io::ErrorKind::NotFound =>
            {
                tracing::info!(program, "no such program: no iptables rules to clean up");
            }
            Err(e) => {
                failures += 1;
                tracing::error!(family = nf.name(), error = %e, "removing the iptables rules failed");
            }
        }
    }
    match IpsetClient::open() {
        Ok(mut client) => {
            for family in families {
                let nf = nf_family(*family);
                if let Err(e) = ipset::kube::destroy_all(&mut client, nf) {
                    failures += 1;
                    tracing::error!(family = nf.name(), error = %e, "destroying the ipsets failed");
                }
            }
        }
        Err(e) => {
            failures += 1;
            tracing::error!(error = %e, "cannot open the ipset socket");
        }
    }
    failures
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use rvs_model::Protocol;
    use rvs_proxy::cluster::{NodeInfo, ServiceInfo, ServicePort};

    use super::*;

    /// Sets that take anything; rules that keep the last applied.
    #[derive(Default)]
    struct Fake(Vec<RuleSet>);

    impl SetBackend for Fake {
        fn sync_set(
            &mut self,
            _: &SetSpec,
            _: &BTreeSet<Entry>,
        ) -> Result<ipset::sync::SyncReport, IpsetError> {
            Ok(ipset::sync::SyncReport::default())
        }
        fn batch(&mut self, ops: &[Op]) -> Result<Vec<Result<(), IpsetError>>, IpsetError> {
            Ok(ops.iter().map(|_| Ok(())).collect())
        }
    }

    impl RuleBackend for Fake {
        fn apply(&mut self, _: Family, rules: &RuleSet, _: bool) -> Result<(), IptablesError> {
            self.0.push(rules.clone());
            Ok(())
        }
    }

    fn cluster(pod_cidrs: &[&str]) -> ClusterState {
        let name = ObjectName::new("default", "web");
        let port = ServicePort {
            name: "http".into(),
            protocol: Protocol::Tcp,
            port: 80,
            node_port: None,
        };
        let vip = IpAddr::from([10, 96, 0, 1]);
        let mut c = ClusterState {
            node: Some(NodeInfo {
                name: "node-a".into(),
                pod_cidrs: pod_cidrs.iter().map(|c| c.parse().unwrap()).collect(),
                ..NodeInfo::default()
            }),
            ..ClusterState::default()
        };
        c.services
            .insert(name.clone(), ServiceInfo::new(name, vec![vip], vec![port]));
        c
    }

    fn masquerade_rule(rules: &RuleSet) -> String {
        rules
            .nat
            .rules
            .iter()
            .find(|r| {
                r.contains("KUBE-CLUSTER-IP dst,dst") || r.contains("KUBE-CLUSTER-IP src,dst")
            })
            .cloned()
            .unwrap_or_default()
    }

    /// Rules that `iptables-restore` refuses.
    struct Refusing;

    impl RuleBackend for Refusing {
        fn apply(&mut self, family: Family, _: &RuleSet, _: bool) -> Result<(), IptablesError> {
            Err(IptablesError::Failed {
                program: format!("{}-restore", family.name()),
                table: "nat",
                status: "exit status: 2".into(),
                stderr: "no".into(),
            })
        }
    }

    #[test]
    fn a_family_whose_rules_fail_is_reported_unsynced() {
        let options = NetfilterOptions {
            maxelem: 65536,
            rules: RulesConfig::default(),
            local_detect: [LocalDetect::None, LocalDetect::None],
            families: vec![IpFamily::V4],
        };
        let mut nf = Netfilter::new(options.clone(), Fake::default(), Refusing);
        let report = nf.sync(&cluster(&[]), &ProxyConfig::default(), None);
        assert_eq!(report.unsynced_families, [IpFamily::V4]);
        assert_eq!(report.restore_failed, [IpFamily::V4]);
        let mut nf = Netfilter::new(options, Fake::default(), Fake::default());
        let report = nf.sync(&cluster(&[]), &ProxyConfig::default(), None);
        assert!(report.unsynced_families.is_empty() && report.failures == 0);
    }

    #[test]
    fn node_cidr_follows_the_nodes_pod_cidr() {
        let options = NetfilterOptions {
            maxelem: 65536,
            rules: RulesConfig::default(),
            local_detect: [LocalDetect::NodeCidr, LocalDetect::NodeCidr],
            families: vec![IpFamily::V4],
        };
        let mut nf = Netfilter::new(options, Fake::default(), Fake::default());
        let config = ProxyConfig::default();
        // No pod CIDR yet: no detection, as kube-proxy's no-op detector.
        assert_eq!(nf.sync(&cluster(&[]), &config, None).failures, 0);
        let first = masquerade_rule(&nf.rules().0[0]);
        assert!(first.contains("src,dst -j KUBE-MARK-MASQ"), "{first}");
        // The pod CIDR appears: even a partial sync with no Service
        // changed in its scope renders the rules again.
        let changed = BTreeSet::from([ObjectName::new("default", "other")]);
        let report = nf.sync(&cluster(&["10.244.1.0/24"]), &config, Some(&changed));
        assert_eq!(report.failures, 0);
        assert_eq!(nf.rules().0.len(), 2);
        let now = masquerade_rule(&nf.rules().0[1]);
        assert!(
            now.contains("dst,dst ! -s 10.244.1.0/24 -j KUBE-MARK-MASQ"),
            "{now}"
        );
        // The same again: nothing to restore.
        nf.sync(&cluster(&["10.244.1.0/24"]), &config, Some(&changed));
        assert_eq!(nf.rules().0.len(), 2);
    }
}
