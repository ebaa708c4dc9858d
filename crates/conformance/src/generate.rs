//! Generated scenarios: a seeded generator of random but API-valid
//! clusters and change sequences.
//!
//! [`generate`] turns a seed and a step count into a [`Scenario`] named
//! `generated-SEED` (hex): the first step creates a few Services with
//! their EndpointSlices, each later step makes one to three random
//! changes (a Service added or deleted; endpoints added, removed, made
//! ready, serving or terminating, moved between this node and another,
//! given zone hints; ports and target ports changed; traffic policies,
//! session affinity and its timeout, external IPs, load-balancer ingress
//! (and its `ipMode`) and source ranges changed; ClusterIP ↔ NodePort).
//! Services are ClusterIP, NodePort, LoadBalancer (with and without node
//! ports), ExternalName or headless, TCP, UDP or SCTP, some labelled for
//! another service proxy; IPv4 on an IPv4 node, or also IPv6 and
//! dual-stack on the dual-stack node. Every address and
//! port is fixed by the generator, so the same seed gives the same
//! objects; [`seeds`] derives a run's scenario seeds from its seed.
//!
//! Everything it writes passes kube-apiserver's validation; a scenario
//! it makes that the API server refuses is a generator bug (the harness
//! stops with kubectl's message).

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::scenario::{DEFAULT_NODE_NAME, NodeSetup, Scenario, Step};

/// SplitMix64: small, seedable, and the same everywhere.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// `true` with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// One of `items` (which must not be empty).
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// The node generated scenarios run on: dual-stack (some Services are
/// IPv6 or dual-stack), the same as `scenarios/dual-stack.yaml`'s, so that
/// they share its VM boots.
pub fn dual_stack_node() -> NodeSetup {
    let address = |ty: &str, a: &str| {
        BTreeMap::from([
            ("type".to_owned(), ty.to_owned()),
            ("address".to_owned(), a.to_owned()),
        ])
    };
    NodeSetup {
        ipv6: true,
        addresses: vec![
            address("InternalIP", "10.0.2.15"),
            address("InternalIP", "fd00:2::15"),
            address("Hostname", DEFAULT_NODE_NAME),
        ],
        pod_cidrs: Some(vec!["10.244.0.0/24".into(), "fd00:244::/64".into()]),
        setup: "ip -6 addr add fd00:2::15/64 dev eth0 nodad\n".into(),
        ..NodeSetup::default()
    }
}

/// `count` scenario seeds derived from a run's `seed`.
pub fn seeds(seed: u64, count: usize) -> Vec<u64> {
    let mut rng = Rng::new(seed);
    (0..count).map(|_| rng.next_u64()).collect()
}

const DUAL_PREFIX: &str = "dual-";

/// The seed of a generated scenario, and whether it is dual-stack, from
/// its name.
pub fn seed_of(name: &str) -> Option<(u64, bool)> {
    let rest = name.strip_prefix("generated-")?;
    let (rest, dual) = match rest.strip_prefix(DUAL_PREFIX) {
        Some(r) => (r, true),
        None => (rest, false),
    };
    Some((u64::from_str_radix(rest, 16).ok()?, dual))
}

/// How to replay generated scenario `name` of `steps` steps.
pub fn replay_hint(name: &str, steps: usize) -> Option<String> {
    let (seed, dual) = seed_of(name)?;
    Some(format!(
        "cargo build -p rvs-proxy-bin -p rvs-conformance && target/debug/rvs-conformance --replay {seed:#x} --steps {steps}{}",
        if dual { " --dual" } else { "" }
    ))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Type {
    ClusterIp,
    NodePort,
    LoadBalancer,
    ExternalName,
    Headless,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    V4,
    V6,
    Dual,
}

#[derive(Clone, Debug)]
struct Port {
    name: String,
    port: u16,
    /// Numeric target port, or `None` for the named one (`name`).
    target: Option<u16>,
    /// The endpoints' port number.
    endpoint_port: u16,
    protocol: &'static str,
    node_port: Option<u16>,
}

#[derive(Clone, Debug)]
struct Endpoint {
    ip: String,
    ready: Option<bool>,
    serving: Option<bool>,
    terminating: Option<bool>,
    node: Option<String>,
    zone: Option<String>,
    hint: Option<String>,
}

#[derive(Clone, Debug)]
struct Slice {
    name: String,
    v6: bool,
    endpoints: Vec<Endpoint>,
}

#[derive(Clone, Debug)]
struct Svc {
    name: String,
    ty: Type,
    family: Family,
    v4: String,
    v6: String,
    ports: Vec<Port>,
    etp_local: bool,
    itp_local: bool,
    affinity: Option<u32>,
    external_ips: Vec<String>,
    ingress: Vec<(String, Option<&'static str>)>,
    source_ranges: Vec<String>,
    hcnp: Option<u16>,
    allocate_node_ports: bool,
    other_proxy: bool,
    prefer_close: bool,
    slices: Vec<Slice>,
}

struct Gen {
    rng: Rng,
    dual: bool,
    next_svc: u32,
    next_ip: u32,
    next_node_port: u16,
    next_pod: u32,
    services: BTreeMap<String, Svc>,
}

const PROTOCOLS: [&str; 3] = ["TCP", "UDP", "SCTP"];

impl Gen {
    fn node_port(&mut self) -> u16 {
        self.next_node_port += 1;
        30000 + self.next_node_port
    }

    fn pod_ip(&mut self, v6: bool, local: bool) -> String {
        self.next_pod += 1;
        let n = self.next_pod;
        let subnet = u32::from(!local);
        if v6 {
            canonical_v6(&format!("fd00:244:{subnet:x}::{:x}", n + 1))
        } else {
            format!("10.244.{subnet}.{}", n % 250 + 2)
        }
    }

    fn endpoint(&mut self, v6: bool) -> Endpoint {
        let local = self.rng.chance(50);
        let ip = self.pod_ip(v6, local);
        let zone = ["zone-a", "zone-b"][usize::from(!local && self.rng.chance(70))];
        let mut e = Endpoint {
            ip,
            ready: Some(true),
            serving: Some(true),
            terminating: Some(false),
            node: Some(if local {
                DEFAULT_NODE_NAME.to_owned()
            } else {
                "node-b".to_owned()
            }),
            zone: Some(zone.to_owned()),
            hint: None,
        };
        self.vary_conditions(&mut e);
        e
    }

    fn vary_conditions(&mut self, e: &mut Endpoint) {
        match self.rng.below(10) {
            0 => {
                // Terminating but still serving.
                e.ready = Some(false);
                e.serving = Some(true);
                e.terminating = Some(true);
            }
            1 => {
                e.ready = Some(false);
                e.serving = Some(false);
                e.terminating = Some(true);
            }
            2 => {
                e.ready = Some(false);
                e.serving = Some(false);
                e.terminating = Some(false);
            }
            3 => {
                // Conditions left out: ready is then unknown (treated as ready).
                e.ready = None;
                e.serving = None;
                e.terminating = None;
            }
            _ => {
                e.ready = Some(true);
                e.serving = Some(true);
                e.terminating = Some(false);
            }
        }
    }

    fn new_service(&mut self) -> Svc {
        self.next_svc += 1;
        self.next_ip += 1;
        let name = format!("svc-{}", self.next_svc);
        let ty = match self.rng.below(20) {
            0..=6 => Type::ClusterIp,
            7..=11 => Type::NodePort,
            12..=16 => Type::LoadBalancer,
            17 => Type::ExternalName,
            _ => Type::Headless,
        };
        let family = match self.rng.below(10) {
            0 if self.dual => Family::V6,
            1..=2 if self.dual => Family::Dual,
            _ => Family::V4,
        };
        let n = self.next_ip;
        let mut svc = Svc {
            name: name.clone(),
            ty,
            family,
            v4: format!("10.96.{}.{}", 1 + n / 250, n % 250 + 1),
            // Within the API server's IPv6 service range (a /112).
            v6: canonical_v6(&format!("fd00:96::{:x}", 0x1000 + n)),
            ports: Vec::new(),
            etp_local: false,
            itp_local: self.rng.chance(10),
            affinity: None,
            external_ips: Vec::new(),
            ingress: Vec::new(),
            source_ranges: Vec::new(),
            hcnp: None,
            allocate_node_ports: true,
            other_proxy: self.rng.chance(5),
            prefer_close: self.rng.chance(10),
            slices: Vec::new(),
        };
        if ty != Type::Headless && self.rng.chance(20) {
            svc.affinity = Some(*self.rng.pick(&[10800, 60, 1, 86400]));
        }
        let nports = 1 + self.rng.below(3) as usize;
        for i in 0..nports {
            let protocol = if self.rng.chance(70) {
                "TCP"
            } else {
                *self.rng.pick(&PROTOCOLS)
            };
            let port = [80u16, 443, 53, 8080, 9000][i] + u16::from(i as u8);
            let endpoint_port = 8000 + port;
            svc.ports.push(Port {
                name: format!("p{i}"),
                port,
                target: (!self.rng.chance(20)).then_some(endpoint_port),
                endpoint_port,
                protocol,
                node_port: None,
            });
        }
        if matches!(ty, Type::NodePort | Type::LoadBalancer) {
            if ty == Type::LoadBalancer && self.rng.chance(20) {
                svc.allocate_node_ports = false;
            }
            if svc.allocate_node_ports {
                for i in 0..svc.ports.len() {
                    svc.ports[i].node_port = Some(self.node_port());
                }
            }
            svc.etp_local = self.rng.chance(40);
        }
        if ty == Type::LoadBalancer {
            self.set_ingress(&mut svc);
            if svc.etp_local {
                svc.hcnp = Some(self.node_port());
            }
            if self.rng.chance(25) {
                svc.source_ranges =
                    vec![self.rng.pick(&["10.0.0.0/8", "192.0.2.0/24"]).to_string()];
                if self.rng.chance(50) {
                    svc.source_ranges.push("10.0.2.0/24".into());
                }
            }
        }
        if matches!(ty, Type::ClusterIp | Type::NodePort | Type::LoadBalancer)
            && self.rng.chance(20)
        {
            self.set_external_ips(&mut svc);
        }
        if ty != Type::ExternalName {
            let families: Vec<bool> = match family {
                Family::V4 => vec![false],
                Family::V6 => vec![true],
                Family::Dual => vec![false, true],
            };
            for (k, v6) in families.into_iter().enumerate() {
                let count = self.rng.below(4) as usize;
                let endpoints = (0..count).map(|_| self.endpoint(v6)).collect();
                svc.slices.push(Slice {
                    name: format!("{name}-{k}"),
                    v6,
                    endpoints,
                });
            }
        }
        svc
    }

    fn set_ingress(&mut self, svc: &mut Svc) {
        svc.ingress.clear();
        let n = self.next_ip;
        if self.rng.chance(85) {
            let mode = *self.rng.pick(&[None, None, Some("VIP"), Some("Proxy")]);
            let ip = if svc.family == Family::V6 {
                canonical_v6(&format!("2001:db8:1::{n:x}"))
            } else {
                format!("203.0.113.{}", n % 250 + 1)
            };
            svc.ingress.push((ip, mode));
        }
    }

    fn set_external_ips(&mut self, svc: &mut Svc) {
        let n = self.next_ip + self.rng.below(3) as u32;
        svc.external_ips = if svc.family == Family::V6 {
            vec![canonical_v6(&format!("2001:db8:2::{n:x}"))]
        } else {
            vec![format!("198.51.100.{}", n % 250 + 1)]
        };
    }

    /// Changes one Service at random; returns its name, or `None` when
    /// it was deleted.
    fn mutate(&mut self, name: &str) -> Option<String> {
        let mut svc = self.services.get(name)?.clone();
        let proxied = !matches!(svc.ty, Type::ExternalName);
        match self.rng.below(14) {
            0..=3 if proxied && !svc.slices.is_empty() => {
                let k = self.rng.below(svc.slices.len() as u64) as usize;
                let v6 = svc.slices[k].v6;
                let eps = &svc.slices[k].endpoints;
                match self.rng.below(3) {
                    0 if !eps.is_empty() => {
                        let i = self.rng.below(eps.len() as u64) as usize;
                        svc.slices[k].endpoints.remove(i);
                    }
                    1 if !eps.is_empty() => {
                        let i = self.rng.below(eps.len() as u64) as usize;
                        let mut e = svc.slices[k].endpoints[i].clone();
                        self.vary_conditions(&mut e);
                        if self.rng.chance(20) {
                            e.hint = e.zone.clone();
                        }
                        svc.slices[k].endpoints[i] = e;
                    }
                    _ => {
                        let e = self.endpoint(v6);
                        svc.slices[k].endpoints.push(e);
                    }
                }
            }
            4 if proxied && !svc.ports.is_empty() => {
                let i = self.rng.below(svc.ports.len() as u64) as usize;
                let p = &mut svc.ports[i];
                p.endpoint_port = p.endpoint_port.wrapping_add(1).max(1);
                if p.target.is_some() {
                    p.target = Some(p.endpoint_port);
                }
            }
            5 if matches!(svc.ty, Type::NodePort | Type::LoadBalancer) => {
                svc.etp_local = !svc.etp_local;
                svc.hcnp = if svc.etp_local && svc.ty == Type::LoadBalancer {
                    Some(self.node_port())
                } else {
                    None
                };
            }
            6 if proxied => svc.itp_local = !svc.itp_local,
            7 if proxied && svc.ty != Type::Headless => {
                svc.affinity = match svc.affinity {
                    Some(_) if self.rng.chance(50) => None,
                    _ => Some(*self.rng.pick(&[10800, 30, 3600])),
                };
            }
            8 if matches!(
                svc.ty,
                Type::ClusterIp | Type::NodePort | Type::LoadBalancer
            ) =>
            {
                if svc.external_ips.is_empty() {
                    self.set_external_ips(&mut svc);
                } else {
                    svc.external_ips.clear();
                }
            }
            9 if svc.ty == Type::LoadBalancer => {
                if self.rng.chance(50) {
                    self.set_ingress(&mut svc);
                } else if svc.source_ranges.is_empty() {
                    svc.source_ranges = vec!["10.0.2.0/24".into()];
                } else {
                    svc.source_ranges.clear();
                }
            }
            10 if svc.ty == Type::ClusterIp => {
                svc.ty = Type::NodePort;
                for p in &mut svc.ports {
                    p.node_port = Some(self.node_port());
                }
            }
            10 if svc.ty == Type::NodePort => {
                svc.ty = Type::ClusterIp;
                svc.etp_local = false;
                for p in &mut svc.ports {
                    p.node_port = None;
                }
            }
            11 if proxied && svc.ty != Type::Headless => svc.prefer_close = !svc.prefer_close,
            12 => {
                self.services.remove(name);
                return None;
            }
            _ if proxied && !svc.slices.is_empty() => {
                let k = self.rng.below(svc.slices.len() as u64) as usize;
                let v6 = svc.slices[k].v6;
                let e = self.endpoint(v6);
                svc.slices[k].endpoints.push(e);
            }
            _ => {}
        }
        self.services.insert(name.to_owned(), svc);
        Some(name.to_owned())
    }
}

fn service_manifest(svc: &Svc) -> Value {
    let mut spec = serde_json::Map::new();
    let mut labels = serde_json::Map::new();
    if svc.other_proxy {
        labels.insert(
            "service.kubernetes.io/service-proxy-name".into(),
            "other-proxy".into(),
        );
    }
    match svc.ty {
        Type::ExternalName => {
            spec.insert("type".into(), "ExternalName".into());
            spec.insert("externalName".into(), "www.example.com".into());
        }
        _ => {
            let ty = match svc.ty {
                Type::NodePort => "NodePort",
                Type::LoadBalancer => "LoadBalancer",
                _ => "ClusterIP",
            };
            spec.insert("type".into(), ty.into());
            let (families, ips): (Vec<&str>, Vec<Value>) = match svc.family {
                Family::V4 => (vec!["IPv4"], vec![svc.v4.clone().into()]),
                Family::V6 => (vec!["IPv6"], vec![svc.v6.clone().into()]),
                Family::Dual => (
                    vec!["IPv4", "IPv6"],
                    vec![svc.v4.clone().into(), svc.v6.clone().into()],
                ),
            };
            if svc.ty == Type::Headless {
                spec.insert("clusterIP".into(), "None".into());
            } else {
                spec.insert("clusterIP".into(), ips[0].clone());
                spec.insert("clusterIPs".into(), ips.into());
            }
            let policy = if svc.family == Family::Dual {
                "RequireDualStack"
            } else {
                "SingleStack"
            };
            spec.insert("ipFamilyPolicy".into(), policy.into());
            spec.insert("ipFamilies".into(), families.into());
        }
    }
    let ports: Vec<Value> = svc
        .ports
        .iter()
        .map(|p| {
            let mut m = json!({"name": p.name, "port": p.port, "protocol": p.protocol});
            if svc.ty != Type::ExternalName {
                m["targetPort"] = match p.target {
                    Some(t) => t.into(),
                    None => format!("t-{}", p.name).into(),
                };
            }
            if let Some(np) = p.node_port {
                m["nodePort"] = np.into();
            }
            m
        })
        .collect();
    spec.insert("ports".into(), ports.into());
    if svc.ty != Type::ExternalName {
        if svc.etp_local {
            spec.insert("externalTrafficPolicy".into(), "Local".into());
        } else if matches!(svc.ty, Type::NodePort | Type::LoadBalancer) {
            spec.insert("externalTrafficPolicy".into(), "Cluster".into());
        }
        let itp = if svc.itp_local { "Local" } else { "Cluster" };
        spec.insert("internalTrafficPolicy".into(), itp.into());
    }
    if svc.ty == Type::LoadBalancer && !svc.allocate_node_ports {
        spec.insert("allocateLoadBalancerNodePorts".into(), false.into());
    }
    if let Some(hc) = svc.hcnp {
        spec.insert("healthCheckNodePort".into(), hc.into());
    }
    if let Some(timeout) = svc.affinity.filter(|_| svc.ty != Type::ExternalName) {
        spec.insert("sessionAffinity".into(), "ClientIP".into());
        spec.insert(
            "sessionAffinityConfig".into(),
            json!({"clientIP": {"timeoutSeconds": timeout}}),
        );
    }
    if !svc.external_ips.is_empty() {
        spec.insert("externalIPs".into(), svc.external_ips.clone().into());
    }
    if !svc.source_ranges.is_empty() {
        spec.insert(
            "loadBalancerSourceRanges".into(),
            svc.source_ranges.clone().into(),
        );
    }
    if svc.prefer_close && svc.ty != Type::ExternalName {
        spec.insert("trafficDistribution".into(), "PreferClose".into());
    }
    let mut doc = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": svc.name, "labels": labels},
        "spec": spec,
    });
    if svc.ty == Type::LoadBalancer {
        let ingress: Vec<Value> = svc
            .ingress
            .iter()
            .map(|(ip, mode)| match mode {
                Some(m) => json!({"ip": ip, "ipMode": m}),
                None => json!({"ip": ip}),
            })
            .collect();
        doc["status"] = json!({"loadBalancer": {"ingress": ingress}});
    }
    doc
}

fn slice_manifest(svc: &Svc, slice: &Slice) -> Value {
    let ports: Vec<Value> = svc
        .ports
        .iter()
        .map(|p| json!({"name": p.name, "port": p.endpoint_port, "protocol": p.protocol}))
        .collect();
    let endpoints: Vec<Value> = slice
        .endpoints
        .iter()
        .map(|e| {
            let mut conditions = serde_json::Map::new();
            for (k, v) in [
                ("ready", e.ready),
                ("serving", e.serving),
                ("terminating", e.terminating),
            ] {
                if let Some(v) = v {
                    conditions.insert(k.into(), v.into());
                }
            }
            let mut m = json!({"addresses": [e.ip], "conditions": conditions});
            if let Some(n) = &e.node {
                m["nodeName"] = n.clone().into();
            }
            if let Some(z) = &e.zone {
                m["zone"] = z.clone().into();
            }
            if let Some(h) = &e.hint {
                m["hints"] = json!({"forZones": [{"name": h}]});
            }
            m
        })
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": slice.name, "labels": {"kubernetes.io/service-name": svc.name}},
        "addressType": if slice.v6 { "IPv6" } else { "IPv4" },
        "ports": ports,
        "endpoints": endpoints,
    })
}

fn manifests(svc: &Svc) -> Vec<Value> {
    let mut out = vec![service_manifest(svc)];
    for slice in &svc.slices {
        out.push(slice_manifest(svc, slice));
    }
    out
}

/// The scenario of `seed`: a first step creating a small cluster, then
/// `steps - 1` steps of random changes; IPv4 Services on an IPv4 node
/// (named `generated-SEED`), or, when `dual`, IPv4, IPv6 and dual-stack
/// ones on the dual-stack node (`generated-dual-SEED`).
pub fn generate(seed: u64, steps: usize, dual: bool) -> Scenario {
    let mut g = Gen {
        rng: Rng::new(seed),
        dual,
        next_svc: 0,
        next_ip: 0,
        next_node_port: (seed % 1000) as u16,
        next_pod: 0,
        services: BTreeMap::new(),
    };
    let mut out = Vec::new();
    let mut first = Vec::new();
    for _ in 0..2 + g.rng.below(4) {
        let svc = g.new_service();
        first.extend(manifests(&svc));
        g.services.insert(svc.name.clone(), svc);
    }
    out.push(Step {
        name: "create".into(),
        apply: first,
        ..Step::default()
    });
    for i in 1..steps.max(1) {
        let mut step = Step {
            name: format!("change-{i}"),
            ..Step::default()
        };
        let mut touched = std::collections::BTreeSet::new();
        for _ in 0..1 + g.rng.below(3) {
            if g.services.is_empty() || g.rng.chance(15) {
                let svc = g.new_service();
                touched.insert(svc.name.clone());
                g.services.insert(svc.name.clone(), svc);
                continue;
            }
            let names: Vec<String> = g.services.keys().cloned().collect();
            let name = g.rng.pick(&names).clone();
            let before = g.services.get(&name).cloned();
            match g.mutate(&name) {
                Some(n) => {
                    touched.insert(n);
                }
                None => {
                    touched.remove(&name);
                    if let Some(old) = before {
                        step.delete.push(format!("service/{}", old.name));
                        for s in &old.slices {
                            step.delete.push(format!("endpointslice/{}", s.name));
                        }
                    }
                }
            }
        }
        for name in &touched {
            if let Some(svc) = g.services.get(name) {
                step.apply.extend(manifests(svc));
            }
        }
        out.push(step);
    }
    Scenario {
        name: format!(
            "generated-{}{seed:016x}",
            if dual { DUAL_PREFIX } else { "" }
        ),
        description: format!("generated from seed {seed:#x}, {steps} steps"),
        flags: Vec::new(),
        config: None,
        node: if dual {
            dual_stack_node()
        } else {
            NodeSetup::default()
        },
        steps: out,
    }
}

/// `addr` in the canonical form the API server requires of IPv6
/// addresses (RFC 5952: `fd00:244::c`, not `fd00:244:0::c`).
fn canonical_v6(addr: &str) -> String {
    addr.parse::<std::net::Ipv6Addr>()
        .map_or_else(|_| addr.to_owned(), |a| a.to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Found by CI's first full run: kube-apiserver v1.37 refuses an
    /// EndpointSlice address written `fd00:244:0::c`.
    #[test]
    fn every_generated_ipv6_address_is_canonical() {
        assert_eq!(canonical_v6("fd00:244:0::c"), "fd00:244::c");
        assert_eq!(canonical_v6("2001:db8:1::0"), "2001:db8:1::");
        let mut seen = 0;
        for seed in 0..40 {
            let scenario = generate(seed, 30, true);
            for step in &scenario.steps {
                let text = serde_json::to_string(&step.apply).unwrap();
                for word in text.split(|c: char| !(c.is_ascii_hexdigit() || c == ':')) {
                    if let Ok(a) = word.parse::<std::net::Ipv6Addr>() {
                        seen += 1;
                        assert_eq!(word, a.to_string(), "seed {seed}, {}", step.name);
                    }
                }
            }
        }
        assert!(seen > 100, "{seen} IPv6 addresses looked at");
    }

    #[test]
    fn generated_scenarios_share_the_dual_stack_scenarios_boots() {
        let path = crate::scenario::builtin_dir().join("dual-stack.yaml");
        let shipped = Scenario::load(&path).unwrap();
        assert_eq!(shipped.profile(), generate(1, 2, true).profile());
        assert_eq!(
            Scenario::parse("steps: [{}]", "x.yaml").unwrap().profile(),
            generate(1, 2, false).profile()
        );
    }

    #[test]
    fn the_same_seed_gives_the_same_scenario() {
        assert_eq!(generate(7, 12, false), generate(7, 12, false));
        assert_ne!(generate(7, 12, false), generate(8, 12, false));
        assert_ne!(generate(7, 12, false), generate(7, 12, true));
        assert_eq!(generate(7, 12, true).steps.len(), 12);
        assert_eq!(
            seed_of(&generate(0xabc, 2, false).name),
            Some((0xabc, false))
        );
        assert_eq!(seed_of(&generate(0xabc, 2, true).name), Some((0xabc, true)));
    }

    #[test]
    fn generated_scenarios_pass_the_scenario_checks() {
        for (i, seed) in seeds(1, 50).into_iter().enumerate() {
            let mut s = generate(seed, 15, i % 2 == 0);
            let name = s.name.clone();
            s.check(&name).unwrap();
            let again = Scenario::parse(&s.to_yaml(), "x.yaml").unwrap();
            assert_eq!(again.steps, s.steps);
        }
    }

    /// The API server refuses a cluster IP outside its service ranges
    /// (`harness::SERVICE_CIDRS`: 10.96.0.0/16, fd00:96::/112).
    #[test]
    fn cluster_ips_are_in_the_service_ranges() {
        let mut v6 = 0;
        for seed in seeds(3, 30) {
            for step in &generate(seed, 25, true).steps {
                for doc in step.apply.iter().filter(|d| d["kind"] == "Service") {
                    let ips = doc["spec"]["clusterIPs"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default();
                    for ip in ips.iter().chain(doc["spec"].get("clusterIP")) {
                        let ip = ip.as_str().unwrap();
                        if ip == "None" {
                            continue;
                        }
                        match ip.parse::<std::net::IpAddr>().unwrap() {
                            std::net::IpAddr::V4(a) => {
                                assert_eq!(a.octets()[..2], [10, 96], "{ip}");
                            }
                            std::net::IpAddr::V6(a) => {
                                v6 += 1;
                                assert_eq!(
                                    a.segments()[..7],
                                    [0xfd00, 0x96, 0, 0, 0, 0, 0],
                                    "{ip}"
                                );
                            }
                        }
                    }
                }
            }
        }
        assert!(v6 > 0, "no IPv6 cluster IP generated");
    }

    #[test]
    fn node_ports_and_cluster_ips_are_never_reused() {
        for (i, seed) in seeds(2, 30).into_iter().enumerate() {
            let s = generate(seed, 25, i % 2 == 0);
            let mut owner: BTreeMap<String, String> = BTreeMap::new();
            for step in &s.steps {
                for doc in &step.apply {
                    if doc["kind"] != "Service" {
                        continue;
                    }
                    let name = doc["metadata"]["name"].as_str().unwrap().to_owned();
                    let mut keys = Vec::new();
                    for p in doc["spec"]["ports"].as_array().unwrap() {
                        if let Some(np) = p.get("nodePort") {
                            keys.push(format!("np {np}"));
                        }
                    }
                    if let Some(hc) = doc["spec"].get("healthCheckNodePort") {
                        keys.push(format!("np {hc}"));
                    }
                    if let Some(ip) = doc["spec"].get("clusterIP").filter(|ip| *ip != "None") {
                        keys.push(format!("ip {ip}"));
                    }
                    for k in keys {
                        let o = owner.entry(k.clone()).or_insert_with(|| name.clone());
                        assert_eq!(*o, name, "{k} reused in {}", s.name);
                    }
                }
            }
        }
    }
}
