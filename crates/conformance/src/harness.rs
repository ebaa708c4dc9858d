//! The host's side: scenarios grouped into batches, and for each batch
//! two VMs booted side by side, one running kube-proxy and one rvs-proxy,
//! driven in lockstep.
//!
//! Both guests reach the same kube-apiserver on the host through their
//! one forward (`10.0.2.100:443`). Batches run in lanes
//! ([`lanes_from_env`]): each lane has its own control plane and runs
//! its batches one after the other; lanes run side by side. Scenarios that share a [`Profile`]
//! (flags, configuration, node) share a batch: the harness removes one
//! scenario's objects before the next (a `(reset)` step, compared too).
//! Each batch starts from a clean cluster: every Service but
//! `default/kubernetes`, every EndpointSlice and every Node but the
//! profile's are deleted, and the profile's Node is created afresh.
//!
//! For each step the harness waits until both guests print
//! `@@READY I@@`, deletes, applies (then writes statuses through the
//! status subresource), and then moves the marker: the Service
//! `rvs-conformance/marker` (cluster IP [`MARKER_VIP`]) and its
//! EndpointSlice (endpoint [`MARKER_RS`]) to port `1000 + I`. The
//! guests wait for it and dump (see [`crate::script`]). After the last
//! step both VMs power off; their dumps are read from the consoles,
//! normalised, compared and judged against the allowlist.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddrV4;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use rvs_testrig::vm::VmOutput;
use rvs_testrig::{ControlPlane, RigError, RunningVm, Vm, VmJob};

use crate::allowlist::Allowlist;
use crate::diff;
use crate::report::{BatchOutcome, Report, StepKind, StepOutcome};
use crate::scenario::{
    DEFAULT_NODE_NAME, GUEST_NODE_IP, MARKER_NAMESPACE, ObjectRef, Profile, Scenario, Step,
};
use crate::script::{
    self, GUEST_CONFIG, GUEST_KUBECONFIG, GuestPlan, GuestStep, MARKER_BASE_PORT, MARKER_RS,
    MARKER_VIP, MARKER6_RS, MARKER6_VIP, Proxy,
};
use crate::state::State;

/// The most steps one batch (one pair of boots) takes, unless a single
/// scenario has more: longer groups of scenarios are cut.
pub const MAX_BATCH_STEPS: usize = 40;

/// Where the guests reach the API server.
pub const GUEST_API: &str = "10.0.2.100:443";

/// The API server's service CIDRs: dual-stack, so scenarios can have
/// IPv6 and dual-stack Services.
pub const SERVICE_CIDRS: &str = "10.96.0.0/16,fd00:96::/112";

/// Errors that stop a run (differences do not: they are in the report).
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// A rig (VM, control plane) failed.
    #[error(transparent)]
    Rig(Box<RigError>),
    /// kubectl refused a step's change: a scenario (or generator) bug.
    #[error("{label}: kubectl {what}: {source}")]
    Kubectl {
        /// The step.
        label: String,
        /// What was being done.
        what: String,
        /// kubectl's error.
        #[source]
        source: Box<RigError>,
    },
    /// A guest did not get through its script.
    #[error("the {proxy} VM, at {label}: {message}\n--- {proxy} console (end) ---\n{console}")]
    Guest {
        /// Which proxy's VM.
        proxy: &'static str,
        /// The step.
        label: String,
        /// What happened.
        message: String,
        /// The end of its console.
        console: String,
    },
}

impl HarnessError {
    /// The scenario whose step stopped the run (a kubectl refusal, a
    /// guest that did not get through), for a replay hint.
    pub fn scenario(&self) -> Option<&str> {
        match self {
            HarnessError::Kubectl { label, .. } | HarnessError::Guest { label, .. } => {
                label.split('/').next()
            }
            HarnessError::Rig(_) => None,
        }
    }
}

impl From<RigError> for HarnessError {
    fn from(e: RigError) -> Self {
        HarnessError::Rig(Box::new(e))
    }
}

/// Timing knobs.
#[derive(Clone, Debug)]
pub struct HarnessOptions {
    /// Seconds the first sync after boot may take to converge.
    pub boot_budget_secs: u32,
    /// Seconds any other step may take to converge.
    pub step_budget_secs: u32,
    /// A directory to keep each batch's VM consoles in
    /// (`batch-N-kube-proxy.log`, `batch-N-rvs-proxy.log`); from
    /// `RVS_CONFORMANCE_OUTPUT` by default.
    pub keep_consoles: Option<PathBuf>,
}

impl Default for HarnessOptions {
    fn default() -> Self {
        HarnessOptions {
            boot_budget_secs: 300,
            step_budget_secs: 120,
            keep_consoles: std::env::var_os("RVS_CONFORMANCE_OUTPUT").map(PathBuf::from),
        }
    }
}

/// The prepared harness: a VM image, one control plane per lane, and
/// both proxies.
#[derive(Debug)]
pub struct Harness {
    vm: Vm,
    planes: Vec<ControlPlane>,
    kube_proxy: PathBuf,
    rvs_proxy: PathBuf,
    /// Holds rvs-proxy without its debug information, when objcopy made one.
    _stripped: Option<rvs_testrig::TempDir>,
    /// Timing knobs.
    pub options: HarnessOptions,
}

/// One step as the host drives it: the boot (`None`), or a scenario's
/// step, after removing the previous scenario's objects when `reset`.
#[derive(Clone, Debug)]
struct HostStep<'a> {
    label: String,
    step: Option<&'a Step>,
    reset: bool,
}

/// One lane: batches run one after the other against its control plane.
#[derive(Clone, Copy, Debug)]
struct Lane<'a> {
    harness: &'a Harness,
    plane: &'a ControlPlane,
}

/// Lanes (pairs of VMs running batches side by side, each pair with its
/// control plane): `RVS_CONFORMANCE_LANES`, default 2.
pub fn lanes_from_env() -> usize {
    std::env::var("RVS_CONFORMANCE_LANES")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(2)
}

impl Harness {
    /// Prepares the VM image and brings up `lanes` control planes;
    /// `kube_proxy` defaults to the one beside kube-apiserver.
    pub fn new(
        kube_proxy: Option<PathBuf>,
        rvs_proxy: PathBuf,
        lanes: usize,
    ) -> Result<Harness, HarnessError> {
        let vm = Vm::new()?;
        let planes = (0..lanes.max(1))
            .map(|_| start_plane())
            .collect::<Result<Vec<_>, _>>()?;
        Harness::with(vm, planes, kube_proxy, rvs_proxy)
    }

    /// [`Harness::new`] for a test: reports a skip for `test` (a failure
    /// under `RVS_REQUIRE_PRIVILEGED=1`) when there is no VM or no
    /// Kubernetes binaries, and returns `None`.
    pub fn or_skip(test: &str, rvs_proxy: PathBuf, lanes: usize) -> Option<Harness> {
        let vm = Vm::or_skip(test)?;
        let mut planes = Vec::new();
        for _ in 0..lanes.max(1) {
            match start_plane() {
                Ok(plane) => planes.push(plane),
                Err(RigError::Unavailable(reason)) => {
                    rvs_testrig::skip(test, &reason);
                    return None;
                }
                Err(e) => panic!("{test}: {e}"),
            }
        }
        match Harness::with(vm, planes, None, rvs_proxy) {
            Ok(h) => Some(h),
            Err(e) => panic!("{test}: {e}"),
        }
    }

    fn with(
        vm: Vm,
        planes: Vec<ControlPlane>,
        kube_proxy: Option<PathBuf>,
        rvs_proxy: PathBuf,
    ) -> Result<Harness, HarnessError> {
        let kube_proxy = match (kube_proxy, planes.first()) {
            (Some(p), _) => p,
            (None, Some(plane)) => plane.k8s_bin().join("kube-proxy"),
            (None, None) => PathBuf::from("kube-proxy"),
        };
        for (what, path) in [("kube-proxy", &kube_proxy), ("rvs-proxy", &rvs_proxy)] {
            if !path.is_file() {
                return Err(RigError::Unavailable(format!(
                    "{what} not found at {}",
                    path.display()
                ))
                .into());
            }
        }
        // A debug build of rvs-proxy is mostly DWARF, copied into every
        // guest's initramfs: boot a copy without it (symbols stay).
        let (rvs_proxy, stripped) = match strip_debug(&rvs_proxy) {
            Some((dir, path)) => (path, Some(dir)),
            None => (rvs_proxy, None),
        };
        for plane in &planes {
            plane
                .apply(&format!(
                    "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {MARKER_NAMESPACE}}}\n"
                ))
                .map_err(|source| HarnessError::Kubectl {
                    label: "setup".into(),
                    what: "create the marker's namespace".into(),
                    source: Box::new(source),
                })?;
        }
        Ok(Harness {
            vm,
            planes,
            kube_proxy,
            rvs_proxy,
            _stripped: stripped,
            options: HarnessOptions::default(),
        })
    }

    /// The control planes' directories (for taking them down from a signal
    /// handler: `scripts/control-plane.sh down DIR`).
    pub fn plane_dirs(&self) -> Vec<PathBuf> {
        self.planes.iter().map(|p| p.dir().to_owned()).collect()
    }

    /// Runs `scenarios` and judges every difference against `allowlist`.
    ///
    /// Scenarios sharing a profile form a batch (in the order of their
    /// first scenario); the lanes take batches, longest first, and run
    /// them side by side. `progress` hears about each batch and step
    /// (from the lanes' threads). The report lists batches in order.
    pub fn run(
        &self,
        scenarios: &[Scenario],
        allowlist: &Allowlist,
        progress: &(dyn Fn(&str) + Sync),
    ) -> Result<Report, HarnessError> {
        let started = Instant::now();
        let mut groups: Vec<(Profile, Vec<&Scenario>)> = Vec::new();
        for s in scenarios {
            let profile = s.profile();
            match groups.iter_mut().find(|(p, _)| *p == profile) {
                Some((_, members)) => members.push(s),
                None => groups.push((profile, vec![s])),
            }
        }
        // Long groups are cut into batches of at most MAX_BATCH_STEPS
        // steps (whole scenarios), so that lanes share the work evenly.
        let groups: Vec<(Profile, Vec<&Scenario>)> = groups
            .into_iter()
            .flat_map(|(profile, members)| {
                let mut batches: Vec<(Profile, Vec<&Scenario>)> = Vec::new();
                let mut steps = 0;
                for s in members {
                    match batches.last_mut() {
                        Some((_, b)) if steps + s.steps.len() <= MAX_BATCH_STEPS => b.push(s),
                        _ => {
                            batches.push((profile.clone(), vec![s]));
                            steps = 0;
                        }
                    }
                    steps += s.steps.len();
                }
                batches
            })
            .collect();
        let total = groups.len();
        let size = |g: &(Profile, Vec<&Scenario>)| g.1.iter().map(|s| s.steps.len()).sum::<usize>();
        let mut queue: Vec<usize> = (0..total).collect();
        queue.sort_by_key(|&b| std::cmp::Reverse(size(&groups[b])));
        let queue = std::sync::Mutex::new(std::collections::VecDeque::from(queue));
        let overall = Overall {
            done: std::sync::atomic::AtomicUsize::new(0),
            total: scenarios.iter().map(|s| s.steps.len()).sum(),
            started,
        };
        let overall = &overall;
        type Done = Result<(Vec<StepOutcome>, BatchOutcome), HarnessError>;
        let results: std::sync::Mutex<BTreeMap<usize, Done>> =
            std::sync::Mutex::new(BTreeMap::new());
        std::thread::scope(|scope| {
            for plane in &self.planes {
                let lane = Lane {
                    harness: self,
                    plane,
                };
                let (queue, results, groups) = (&queue, &results, &groups);
                scope.spawn(move || {
                    loop {
                        let next = queue.lock().ok().and_then(|mut q| q.pop_front());
                        let Some(b) = next else { break };
                        let (profile, members) = &groups[b];
                        let names: Vec<&str> = members.iter().map(|s| s.name.as_str()).collect();
                        progress(&format!(
                            "batch {}/{total}: {} (flags {:?})",
                            b + 1,
                            names.join(", "),
                            profile.flags
                        ));
                        let done =
                            lane.run_batch(b, profile, members, allowlist, progress, overall);
                        let failed = done.is_err();
                        if let Ok(mut r) = results.lock() {
                            r.insert(b, done);
                        }
                        if failed {
                            // Stop the other lanes too: the run has failed.
                            if let Ok(mut q) = queue.lock() {
                                q.clear();
                            }
                            break;
                        }
                    }
                });
            }
        });
        let mut report = Report::new(allowlist);
        let results = results.into_inner().unwrap_or_default();
        for (_, done) in results {
            let (steps, batch) = done?;
            report.steps.extend(steps);
            report.batches.push(batch);
        }
        report.elapsed = started.elapsed();
        Ok(report)
    }

    /// How long the host waits for a guest to get through one step.
    fn step_wait(&self) -> Duration {
        // The convergence budget, plus the dump, on a slow TCG guest.
        Duration::from_secs(u64::from(self.options.step_budget_secs) + 120)
    }
}

/// The run's progress across lanes: scenario steps started of all.
struct Overall {
    done: std::sync::atomic::AtomicUsize,
    total: usize,
    started: Instant,
}

impl Lane<'_> {
    fn run_batch(
        &self,
        index: usize,
        profile: &Profile,
        scenarios: &[&Scenario],
        allowlist: &Allowlist,
        progress: &(dyn Fn(&str) + Sync),
        overall: &Overall,
    ) -> Result<(Vec<StepOutcome>, BatchOutcome), HarnessError> {
        let started = Instant::now();
        let first = scenarios.first().map(|s| s.name.as_str()).unwrap_or("-");
        // The boot, then each scenario's steps; the first step of each
        // scenario after the first starts by removing what the one before
        // left (no state is compared in between: anything left over shows
        // in that step).
        let mut steps = vec![HostStep {
            label: format!("{first}/(boot)"),
            step: None,
            reset: false,
        }];
        for (k, s) in scenarios.iter().enumerate() {
            for (j, step) in s.steps.iter().enumerate() {
                steps.push(HostStep {
                    label: format!("{}/{}", s.name, step.name),
                    step: Some(step),
                    reset: k > 0 && j == 0,
                });
            }
        }

        self.reset_cluster(profile, true, &format!("{first}/(boot)"))?;
        let job = |proxy| self.job(proxy, profile, &steps);
        let mut kube = self.harness.vm.start(&job(Proxy::KubeProxy)?)?;
        let mut rvs = self.harness.vm.start(&job(Proxy::Rvs)?)?;
        let wait = self.harness.step_wait();
        for (i, host_step) in steps.iter().enumerate() {
            let label = &host_step.label;
            let ready = format!("@@READY {i}@@");
            let budget = if i == 0 { wait * 3 } else { wait };
            wait_line(&mut kube, "kube-proxy", &ready, budget, label)?;
            wait_line(&mut rvs, "rvs-proxy", &ready, budget, label)?;
            let host_started = Instant::now();
            if host_step.reset {
                self.reset_cluster(profile, false, label)?;
            }
            if let Some(step) = host_step.step {
                self.apply_step(step, label)?;
            }
            self.move_marker(MARKER_BASE_PORT + i as u32, profile.node.ipv6, label)?;
            let done = if host_step.step.is_some() {
                overall
                    .done
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                    + 1
            } else {
                overall.done.load(std::sync::atomic::Ordering::Relaxed)
            };
            progress(&format!(
                "  [{}] step {i}/{}: {label} (host: {:.1?}; run: {done}/{} scenario steps, {}s)",
                index + 1,
                steps.len() - 1,
                host_started.elapsed(),
                overall.total,
                overall.started.elapsed().as_secs()
            ));
        }
        let last = steps.last().map(|s| s.label.as_str()).unwrap_or("-");
        let done = format!("@@DONE {}@@", steps.len() - 1);
        wait_line(&mut kube, "kube-proxy", &done, wait, last)?;
        wait_line(&mut rvs, "rvs-proxy", &done, wait, last)?;
        let kube = finish(kube, "kube-proxy", last)?;
        let rvs = finish(rvs, "rvs-proxy", last)?;
        if let Some(dir) = &self.harness.options.keep_consoles {
            for (name, out) in [("kube-proxy", &kube), ("rvs-proxy", &rvs)] {
                let path = dir.join(format!("batch-{}-{name}.log", index + 1));
                std::fs::create_dir_all(dir)
                    .and_then(|()| std::fs::write(&path, &out.console))
                    .map_err(|e| RigError::Unexpected(format!("write {}: {e}", path.display())))?;
            }
        }

        let mut outcomes = Vec::new();
        let (mut kprev, mut rprev): (Option<State>, Option<State>) = (None, None);
        for (i, host_step) in steps.iter().enumerate() {
            let label = &host_step.label;
            let kind = if host_step.step.is_some() {
                StepKind::Scenario
            } else {
                StepKind::Boot
            };
            let k = State::parse(&dump(&kube.output, i), kprev.as_ref());
            let r = State::parse(&dump(&rvs.output, i), rprev.as_ref());
            let differences = Report::classify(allowlist, label, diff::compare(&k, &r));
            outcomes.push(StepOutcome {
                label: label.clone(),
                kind,
                batch: index,
                kube: k.clone(),
                rvs: r.clone(),
                differences,
            });
            progress(&format!(
                "  [{}] converged {label}: kube-proxy {}; rvs-proxy {}",
                index + 1,
                k.timing,
                r.timing
            ));
            kprev = Some(k);
            rprev = Some(r);
        }
        let batch = BatchOutcome {
            scenarios: scenarios.iter().map(|s| s.name.clone()).collect(),
            flags: profile.flags.clone(),
            elapsed: started.elapsed(),
            kube_log: log_of(&kube.output),
            rvs_log: log_of(&rvs.output),
        };
        Ok((outcomes, batch))
    }

    fn job(
        &self,
        proxy: Proxy,
        profile: &Profile,
        steps: &[HostStep<'_>],
    ) -> Result<VmJob, HarnessError> {
        let args = proxy_args(proxy, profile);
        let flag = |name: &str| last_flag(&args, name);
        let plan = GuestPlan {
            proxy,
            args: args.clone(),
            setup: profile.node.setup.clone(),
            hostname: profile.node.hostname.clone(),
            steps: steps
                .iter()
                .enumerate()
                .map(|(i, s)| GuestStep {
                    label: s.label.clone(),
                    node: s.step.map(|step| step.node.clone()).unwrap_or_default(),
                    budget_secs: if i == 0 {
                        self.harness.options.boot_budget_secs
                    } else {
                        self.harness.options.step_budget_secs
                    },
                })
                .collect(),
            metrics: script::reachable(
                flag("--metrics-bind-address").unwrap_or("127.0.0.1:10249"),
                10249,
            ),
            healthz: script::reachable(
                flag("--healthz-bind-address").unwrap_or("0.0.0.0:10256"),
                10256,
            ),
            dual: profile.node.ipv6,
        };
        let guest_api: SocketAddrV4 = GUEST_API
            .parse()
            .map_err(|_| RigError::Unexpected(format!("bad address {GUEST_API}")))?;
        let kubeconfig = self
            .plane
            .kubeconfig_for_server("kube-proxy", &format!("https://{guest_api}"))?;
        let binary = match proxy {
            Proxy::KubeProxy => &self.harness.kube_proxy,
            Proxy::Rvs => &self.harness.rvs_proxy,
        };
        let budget = u64::from(self.harness.options.boot_budget_secs)
            + steps.len() as u64 * self.harness.step_wait().as_secs()
            + 120;
        let mut job = VmJob::new(script::render(&plan))
            .binary(proxy.binary(), binary)
            .file(GUEST_KUBECONFIG, kubeconfig)
            .forward_to_host(guest_api, self.plane.api_addr()?.port())
            .timeout(Duration::from_secs(budget));
        if !profile.node.ipv6 {
            job = job.kernel_arg("ipv6.disable=1");
        }
        if let Some(config) = &profile.config {
            job = job.file(GUEST_CONFIG, config.clone());
        }
        Ok(job)
    }

    fn kubectl(&self, label: &str, what: &str, args: &[&str]) -> Result<String, HarnessError> {
        self.plane
            .kubectl(args)
            .map_err(|source| HarnessError::Kubectl {
                label: label.to_owned(),
                what: what.to_owned(),
                source: Box::new(source),
            })
    }

    fn kubectl_stdin(
        &self,
        label: &str,
        what: &str,
        args: &[&str],
        input: &str,
    ) -> Result<String, HarnessError> {
        self.plane
            .kubectl_stdin(args, input)
            .map_err(|source| HarnessError::Kubectl {
                label: label.to_owned(),
                what: what.to_owned(),
                source: Box::new(source),
            })
    }

    /// Deletes, applies and writes statuses for one step.
    fn apply_step(&self, step: &Step, label: &str) -> Result<(), HarnessError> {
        let mut by_ns: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for d in &step.delete {
            if let Some(r) = ObjectRef::parse(d) {
                by_ns
                    .entry(r.namespace)
                    .or_default()
                    .push(format!("{}/{}", r.kind, r.name));
            }
        }
        for (ns, objects) in &by_ns {
            let mut args = vec![
                "delete",
                "-n",
                ns.as_str(),
                "--ignore-not-found",
                "--wait=false",
            ];
            args.extend(objects.iter().map(String::as_str));
            self.kubectl(label, &format!("delete {}", objects.join(" ")), &args)?;
        }
        if step.apply.is_empty() {
            return Ok(());
        }
        let mut text = String::new();
        let mut statuses = Vec::new();
        for doc in &step.apply {
            let mut doc = doc.clone();
            if let Some(status) = doc.as_object_mut().and_then(|o| o.remove("status")) {
                statuses.push((doc.clone(), status));
            }
            text.push_str("---\n");
            text.push_str(&doc.to_string());
            text.push('\n');
        }
        self.kubectl_stdin(label, "apply", &["apply", "-f", "-"], &text)?;
        for (doc, status) in statuses {
            self.write_status(&doc, status, label)?;
        }
        Ok(())
    }

    /// Replaces an object's status through the status subresource.
    fn write_status(&self, doc: &Value, status: Value, label: &str) -> Result<(), HarnessError> {
        let kind = doc
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_ascii_lowercase();
        let name = doc
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let ns = doc
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("default");
        let patch = json!([{"op": "add", "path": "/status", "value": status}]).to_string();
        let object = format!("{kind}/{name}");
        self.kubectl(
            label,
            &format!("write the status of {object}"),
            &[
                "patch",
                &object,
                "-n",
                ns,
                "--subresource=status",
                "--type=json",
                "-p",
                &patch,
            ],
        )
        .map(drop)
    }

    /// Moves the marker to `port` (see the module's documentation).
    fn move_marker(&self, port: u32, dual: bool, label: &str) -> Result<(), HarnessError> {
        let mut objects = String::new();
        let markers: &[(&str, &str, &str, &str)] = if dual {
            &[
                ("marker", MARKER_VIP, MARKER_RS, "IPv4"),
                ("marker6", MARKER6_VIP, MARKER6_RS, "IPv6"),
            ]
        } else {
            &[("marker", MARKER_VIP, MARKER_RS, "IPv4")]
        };
        for (name, vip, rs, family) in markers {
            let service = json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": name, "namespace": MARKER_NAMESPACE},
                "spec": {"clusterIP": vip, "clusterIPs": [vip], "ipFamilies": [family],
                         "ipFamilyPolicy": "SingleStack",
                         "ports": [{"port": port, "protocol": "TCP"}]},
            });
            let slice = json!({
                "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": name, "namespace": MARKER_NAMESPACE,
                             "labels": {"kubernetes.io/service-name": name}},
                "addressType": family,
                "ports": [{"port": port, "protocol": "TCP"}],
                "endpoints": [{"addresses": [rs], "conditions": {"ready": true}}],
            });
            let _ = write!(objects, "---\n{service}\n---\n{slice}\n");
        }
        self.kubectl_stdin(label, "move the marker", &["apply", "-f", "-"], &objects)
            .map(drop)
    }

    /// Removes what scenarios created and puts the profile's Node back
    /// (`fresh`: deleted and created again, for a new batch).
    fn reset_cluster(
        &self,
        profile: &Profile,
        fresh: bool,
        label: &str,
    ) -> Result<(), HarnessError> {
        let listed = self.kubectl(
            label,
            "list Services and EndpointSlices",
            &[
                "get",
                "services,endpointslices.discovery.k8s.io",
                "-A",
                "-o",
                "jsonpath={range .items[*]}{.kind} {.metadata.namespace} {.metadata.name}{\"\\n\"}{end}",
            ],
        )?;
        let mut by_ns: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for line in listed.lines() {
            let mut w = line.split_whitespace();
            let (Some(kind), Some(ns), Some(name)) = (w.next(), w.next(), w.next()) else {
                continue;
            };
            let keep = ns == MARKER_NAMESPACE
                || (kind == "Service" && ns == "default" && name == "kubernetes");
            if !keep {
                let resource = if kind == "Service" {
                    "service"
                } else {
                    "endpointslices.discovery.k8s.io"
                };
                by_ns
                    .entry(ns.to_owned())
                    .or_default()
                    .push(format!("{resource}/{name}"));
            }
        }
        for (ns, objects) in &by_ns {
            let mut args = vec![
                "delete",
                "-n",
                ns.as_str(),
                "--ignore-not-found",
                "--wait=false",
            ];
            args.extend(objects.iter().map(String::as_str));
            self.kubectl(label, "delete the scenario's objects", &args)?;
        }
        if fresh && !profile.node.ipv6 {
            // The IPv6 marker of a dual-stack batch before, if any.
            self.kubectl(
                label,
                "delete the IPv6 marker",
                &[
                    "delete",
                    "-n",
                    MARKER_NAMESPACE,
                    "--ignore-not-found",
                    "service/marker6",
                    "endpointslices.discovery.k8s.io/marker6",
                ],
            )?;
        }
        let nodes = self.kubectl(
            label,
            "list Nodes",
            &[
                "get",
                "nodes",
                "-o",
                "jsonpath={range .items[*]}{.metadata.name}{\"\\n\"}{end}",
            ],
        )?;
        let node = &profile.node;
        for name in nodes.lines().map(str::trim).filter(|n| !n.is_empty()) {
            if fresh || !node.register || name != node.name {
                self.kubectl(
                    label,
                    &format!("delete node {name}"),
                    &["delete", "node", name, "--ignore-not-found"],
                )?;
            }
        }
        if node.register {
            let object = node.object().to_string();
            let exists = !fresh && nodes.lines().any(|n| n.trim() == node.name);
            let verb = if exists { "replace" } else { "create" };
            self.kubectl_stdin(
                label,
                &format!("{verb} the Node"),
                &[verb, "-f", "-"],
                &object,
            )?;
            self.write_status(&node.object(), node.status(), label)?;
        }
        Ok(())
    }
}

/// A copy of `binary` without debug information (`objcopy
/// --strip-debug`), in a directory removed on drop; `None` when objcopy
/// is missing or fails.
pub fn strip_debug(binary: &std::path::Path) -> Option<(rvs_testrig::TempDir, PathBuf)> {
    let dir = rvs_testrig::TempDir::new("rvs-conformance-bin").ok()?;
    let name = binary.file_name()?;
    let out = dir.path().join(name);
    let ok = std::process::Command::new("objcopy")
        .arg("--strip-debug")
        .arg(binary)
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    ok.then_some((dir, out))
}

/// A control plane as the harness's lanes have: the guests' address
/// ([`GUEST_API`]) in its certificate, the service CIDRs
/// [`SERVICE_CIDRS`], and the Node [`DEFAULT_NODE_NAME`] at
/// [`GUEST_NODE_IP`].
pub fn start_plane() -> Result<ControlPlane, RigError> {
    let guest_api = GUEST_API.split(':').next().unwrap_or_default();
    ControlPlane::options()
        .extra_san(guest_api)
        .env("RVS_SERVICE_CIDR", SERVICE_CIDRS)
        .env("RVS_NODE_NAME", DEFAULT_NODE_NAME)
        .env("RVS_NODE_IP", GUEST_NODE_IP)
        .start()
}

/// The proxy's arguments: the harness's, then the profile's flags.
pub fn proxy_args(proxy: Proxy, profile: &Profile) -> Vec<String> {
    let mut args = Vec::new();
    if profile.config.is_some() {
        args.push(format!("--config={GUEST_CONFIG}"));
    } else {
        args.extend([
            "--proxy-mode=ipvs".to_owned(),
            format!("--kubeconfig={GUEST_KUBECONFIG}"),
            "--conntrack-max-per-core=0".to_owned(),
            "--ipvs-min-sync-period=0".to_owned(),
        ]);
    }
    if profile.node.hostname.is_none() && last_flag(&profile.flags, "--hostname-override").is_none()
    {
        args.push(format!("--hostname-override={}", profile.node.name));
    }
    if proxy == Proxy::Rvs {
        args.push("--dataplane=kernel".to_owned());
    }
    args.extend(profile.flags.iter().cloned());
    args
}

/// The value of the last `NAME=VALUE` or `NAME VALUE` among `args`.
pub fn last_flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    let mut found = None;
    let mut iter = args.iter().peekable();
    while let Some(a) = iter.next() {
        if let Some(v) = a.strip_prefix(name) {
            if let Some(v) = v.strip_prefix('=') {
                found = Some(v);
            } else if v.is_empty() {
                found = iter.peek().map(|s| s.as_str());
            }
        }
    }
    found
}

fn wait_line(
    vm: &mut RunningVm,
    proxy: &'static str,
    line: &str,
    within: Duration,
    label: &str,
) -> Result<(), HarnessError> {
    vm.wait_for_line(line, within).map_err(|e| {
        let console = vm.console();
        let tail: Vec<&str> = console.lines().rev().take(80).collect();
        HarnessError::Guest {
            proxy,
            label: label.to_owned(),
            message: format!("no {line:?}: {}", first_line(&e.to_string())),
            console: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
        }
    })
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or_default()
}

fn finish(vm: RunningVm, proxy: &'static str, label: &str) -> Result<VmOutput, HarnessError> {
    let out = vm.wait().map_err(|e| HarnessError::Guest {
        proxy,
        label: label.to_owned(),
        message: "did not power off".into(),
        console: e
            .to_string()
            .lines()
            .rev()
            .take(80)
            .collect::<Vec<_>>()
            .join("\n"),
    })?;
    Ok(out)
}

/// Judges again the consoles a run kept (`RVS_CONFORMANCE_OUTPUT`):
/// every `batch-N-kube-proxy.log` beside its `batch-N-rvs-proxy.log` in
/// `dir`, against `allowlist`. For working on the allowlist without
/// running the VMs again.
pub fn judge_consoles(dir: &std::path::Path, allowlist: &Allowlist) -> Result<Report, RigError> {
    let mut report = Report::new(allowlist);
    for n in 1.. {
        let read = |proxy: &str| {
            let path = dir.join(format!("batch-{n}-{proxy}.log"));
            std::fs::read_to_string(&path).ok()
        };
        let (Some(kube), Some(rvs)) = (read("kube-proxy"), read("rvs-proxy")) else {
            if n > 1000 {
                break;
            }
            continue;
        };
        let (mut kprev, mut rprev): (Option<State>, Option<State>) = (None, None);
        let mut scenarios = Vec::new();
        for i in 0.. {
            let (kd, rd) = (dump(&kube, i), dump(&rvs, i));
            if kd.is_empty() && rd.is_empty() {
                break;
            }
            let k = State::parse(&kd, kprev.as_ref());
            let r = State::parse(&rd, rprev.as_ref());
            let label = if k.label.is_empty() {
                format!("batch-{n}/step-{i}")
            } else {
                k.label.clone()
            };
            let kind = if label.ends_with("/(boot)") {
                StepKind::Boot
            } else {
                StepKind::Scenario
            };
            let name = label.split('/').next().unwrap_or_default();
            if kind == StepKind::Scenario && !scenarios.iter().any(|s| s == name) {
                scenarios.push(name.to_owned());
            }
            let differences = Report::classify(allowlist, &label, diff::compare(&k, &r));
            report.steps.push(StepOutcome {
                label,
                kind,
                batch: report.batches.len(),
                kube: k.clone(),
                rvs: r.clone(),
                differences,
            });
            kprev = Some(k);
            rprev = Some(r);
        }
        report.batches.push(BatchOutcome {
            scenarios,
            flags: Vec::new(),
            elapsed: Duration::ZERO,
            kube_log: log_of(&kube),
            rvs_log: log_of(&rvs),
        });
    }
    if report.batches.is_empty() {
        return Err(RigError::Unexpected(format!(
            "{}: no batch-N-kube-proxy.log and batch-N-rvs-proxy.log",
            dir.display()
        )));
    }
    Ok(report)
}

/// The dump of step `i` in a guest's output.
fn dump(output: &str, i: usize) -> String {
    let begin = format!("@@DUMP {i}@@");
    let end = format!("@@DONE {i}@@");
    output
        .lines()
        .skip_while(|l| *l != begin)
        .skip(1)
        .take_while(|l| *l != end)
        .collect::<Vec<_>>()
        .join("\n")
}

/// The proxy's log lines the guest printed after its last step.
fn log_of(output: &str) -> String {
    output
        .split_once("== proxy log (errors and warnings)\n")
        .map(|(_, rest)| rest.to_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_read_as_pflag_writes_them() {
        let args: Vec<String> = ["--a=1", "--b", "2", "--a=3", "--ab=4"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(last_flag(&args, "--a"), Some("3"));
        assert_eq!(last_flag(&args, "--b"), Some("2"));
        assert_eq!(last_flag(&args, "--c"), None);
    }

    #[test]
    fn the_harness_names_the_node_unless_the_scenario_does() {
        let mut profile = Scenario::parse("steps: [{}]", "x.yaml")
            .map(|s| s.profile())
            .unwrap_or_else(|e| panic!("{e}"));
        let args = proxy_args(Proxy::Rvs, &profile);
        assert!(args.contains(&format!("--hostname-override={DEFAULT_NODE_NAME}")));
        assert!(args.contains(&"--dataplane=kernel".to_owned()));
        assert!(!proxy_args(Proxy::KubeProxy, &profile).contains(&"--dataplane=kernel".to_owned()));
        profile.flags = vec!["--hostname-override=NODE".into()];
        let args = proxy_args(Proxy::KubeProxy, &profile);
        assert_eq!(
            args.iter()
                .filter(|a| a.starts_with("--hostname-override"))
                .count(),
            1
        );
    }

    #[test]
    fn dumps_are_cut_at_their_markers() {
        let out = "x\n@@DUMP 0@@\n== a\n1\n@@DONE 0@@\n@@DUMP 1@@\n== b\n@@DONE 1@@\n";
        assert_eq!(dump(out, 0), "== a\n1");
        assert_eq!(dump(out, 1), "== b");
        assert_eq!(dump(out, 2), "");
    }
}
