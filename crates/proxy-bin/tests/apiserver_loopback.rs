//! `rvs-proxy --dataplane userspace` against a real kube-apiserver and
//! etcd (`rvs_testrig::ControlPlane`), with real client connections, and
//! no root.
//!
//! Where: kube-apiserver refuses loopback addresses in EndpointSlices and
//! Service `externalIPs` ("may not be in the loopback range"), so each
//! test runs in its own rootless sandbox (`rvs_testrig::Sandbox`: user,
//! network, PID and mount namespaces) where the service CIDR 10.96.0.0/16
//! and the backends' 10.250.0.0/16 are routed to loopback. Cluster IPs are
//! then the API server's own, backends real servers, and nothing leaves
//! the namespace; the control plane, rvs-proxy and everything else die
//! with the sandbox.
//!
//! What: objects created and changed with `kubectl` converge (scale by
//! editing slices, the scheduler annotation, deletion); the shipped RBAC
//! role is sufficient and a missing verb is named in the log without the
//! proxy crashing or dropping its state; an API server outage of 30 s
//! loses no request through a VIP, `/healthz` stays 200 and periodic syncs
//! advance the sync timestamp metric, as in kube-proxy; a watch that cannot
//! resume (etcd compacted, 410 Gone) relists without dropping state, and
//! a Service deleted and re-created meanwhile is replaced, old VIP gone.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)] // test code

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rvs_admin::{Admin, AdminClient};
use rvs_model::{Protocol, ServiceKey};
use rvs_testrig::backend::{Backend, ask_once};
use rvs_testrig::{ControlPlane, Relay, Sandbox, SandboxOptions};

/// One request's bound.
const REQUEST: Duration = Duration::from_secs(2);
/// A change made through the API converges within this (a watch event).
const CONVERGE: Duration = Duration::from_secs(30);
/// After an outage or a cut the watchers reconnect with kube's backoff,
/// client-go's reflector's: 0.8 s doubling up to 30 s, plus up to 100 %
/// jitter, so a retry can be 60 s away; one more if it meets the API
/// server still starting. Allow for that.
const RECONNECT: Duration = Duration::from_secs(150);
/// The API server outage kube-proxy users ride out in this test.
const OUTAGE: Duration = Duration::from_secs(30);

const NODE: &str = "rvs-node";
const SERVICE_CIDR: &str = "10.96.0.0/16";
const BACKEND_CIDR: &str = "10.250.0.0/16";
const METRICS: &str = "127.0.0.1:10249";
const HEALTHZ: &str = "127.0.0.1:10256";
const A: &str = "10.250.1.1";
const B: &str = "10.250.1.2";
const C: &str = "10.250.1.3";
const BACKEND_PORT: u16 = 8080;

fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

fn tcp_key(vip: SocketAddr) -> ServiceKey {
    ServiceKey::Addr {
        protocol: Protocol::Tcp,
        addr: vip,
    }
}

/// The test's sandbox (see the module docs) with a control plane in it;
/// `None` in the outer run, or when the test must skip.
fn sandbox(test: &str) -> Option<(Sandbox, ControlPlane)> {
    // The binaries are found (or built) outside: the sandbox has no
    // network to fetch Go modules with.
    let k8s_bin = match rvs_testrig::control_plane::k8s_bin() {
        Ok(dir) => dir,
        Err(e) => {
            rvs_testrig::skip(test, &e);
            return None;
        }
    };
    let options = SandboxOptions::default()
        .local_route(SERVICE_CIDR)
        .local_route(BACKEND_CIDR)
        .env("K8S_BIN", k8s_bin.to_str().unwrap())
        .timeout(Duration::from_secs(420));
    let sandbox = Sandbox::enter(test, &options)?;
    let plane = ControlPlane::start().expect("control plane");
    Some((sandbox, plane))
}

/// The three backends, answering with their names.
fn backends() -> Vec<Backend> {
    [(A, "a"), (B, "b"), (C, "c")]
        .iter()
        .map(|(ip, name)| Backend::tcp(addr(&format!("{ip}:{BACKEND_PORT}")), name).unwrap())
        .collect()
}

/// A ClusterIP (or, with `node_port`, NodePort) Service to port 8080.
fn service(name: &str, cluster_ip: &str, port: u16, node_port: Option<u16>) -> String {
    let (kind, node_port) = match node_port {
        Some(p) => ("NodePort", format!(", nodePort: {p}")),
        None => ("ClusterIP", String::new()),
    };
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\n\
         spec:\n  type: {kind}\n  clusterIP: {cluster_ip}\n\
         \x20 ports: [{{name: http, port: {port}, targetPort: {BACKEND_PORT}, protocol: TCP{node_port}}}]\n"
    )
}

/// An EndpointSlice of `service` with ready endpoints on this node.
fn slice(name: &str, service: &str, endpoints: &[&str]) -> String {
    let endpoints: String = endpoints
        .iter()
        .map(|ip| {
            format!("- {{addresses: [{ip}], conditions: {{ready: true}}, nodeName: {NODE}}}\n")
        })
        .collect();
    format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {{name: {name}, namespace: default, labels: {{kubernetes.io/service-name: {service}}}}}\n\
         addressType: IPv4\nports: [{{name: http, port: {BACKEND_PORT}, protocol: TCP}}]\n\
         endpoints:\n{endpoints}"
    )
}

/// rvs-proxy on the userspace dataplane; killed when dropped (its log is
/// printed then if the test is failing).
struct Proxy {
    child: Child,
    dir: PathBuf,
}

impl Proxy {
    fn start(kubeconfig: &Path, extra: &[&str]) -> Proxy {
        // TMPDIR is the sandbox's own.
        let dir = std::env::temp_dir().join("rvs-proxy");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let log = std::fs::File::create(dir.join("proxy.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_rvs-proxy"))
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["--dataplane", "userspace", "--hostname-override", NODE])
            .args(["--workers", "1"])
            .args(["--instance-lock", "rvs-proxy-apiserver-loopback"])
            .args(["--metrics-bind-address", METRICS])
            .args(["--healthz-bind-address", HEALTHZ])
            .arg("--admin-socket")
            .arg(dir.join("admin.sock"))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Proxy { child, dir }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("proxy.log")).unwrap_or_default()
    }

    /// Lines of the log that contain `needle`.
    fn log_lines(&self, needle: &str) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_owned)
            .collect()
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    fn admin(&self) -> AdminClient {
        let socket = self.dir.join("admin.sock");
        let deadline = Instant::now() + CONVERGE;
        loop {
            match AdminClient::connect(&socket) {
                Ok(admin) => return admin,
                Err(e) if Instant::now() > deadline => panic!("admin socket: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// Waits until `check` holds, for at most `timeout`; the time it took.
    fn eventually(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut() -> bool,
    ) -> Duration {
        let started = Instant::now();
        while !check() {
            assert!(
                started.elapsed() < timeout,
                "timed out after {timeout:?} waiting: {what}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        started.elapsed()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- rvs-proxy log ---\n{}", self.log());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The destinations (address, weight) of one virtual service, sorted;
/// `None` when the dataplane does not have it.
fn destinations(admin: &mut AdminClient, vip: SocketAddr) -> Option<Vec<(SocketAddr, i32)>> {
    let mut dests: Vec<(SocketAddr, i32)> = admin
        .destinations(&tcp_key(vip))
        .ok()?
        .into_iter()
        .map(|d| (d.destination.addr, d.destination.weight))
        .collect();
    dests.sort();
    Some(dests)
}

/// Every virtual service with its destinations: the dataplane's state.
fn snapshot(admin: &mut AdminClient) -> Vec<(String, Vec<(SocketAddr, i32)>)> {
    let mut all = Vec::new();
    for status in admin.services().unwrap() {
        let key = status.service.key;
        let mut dests: Vec<(SocketAddr, i32)> = admin
            .destinations(&key)
            .unwrap()
            .into_iter()
            .map(|d| (d.destination.addr, d.destination.weight))
            .collect();
        dests.sort();
        all.push((format!("{key:?} {}", status.service.scheduler), dests));
    }
    all.sort();
    all
}

fn weighted(ips: &[&str]) -> Vec<(SocketAddr, i32)> {
    let mut v: Vec<(SocketAddr, i32)> = ips
        .iter()
        .map(|ip| (addr(&format!("{ip}:{BACKEND_PORT}")), 1))
        .collect();
    v.sort();
    v
}

/// A plain HTTP/1.0 GET: the status code and the body.
fn http_get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&addr.parse().unwrap(), REQUEST)?;
    stream.set_read_timeout(Some(REQUEST))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// `kubeproxy_sync_proxy_rules_last_timestamp_seconds` (IPv4), if served.
fn last_sync_timestamp() -> Option<f64> {
    let (status, text) = http_get(METRICS, "/metrics").ok()?;
    if status != 200 {
        return None;
    }
    text.lines()
        .filter(|l| l.starts_with("kubeproxy_sync_proxy_rules_last_timestamp_seconds"))
        .find(|l| !l.contains("IPv6"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
}

/// A client loop through a VIP, bounded in count and time; counts what
/// was sent and what failed (a failed connect or answer).
struct Load {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<LoadReport>,
}

#[derive(Debug)]
struct LoadReport {
    sent: u64,
    failed: u64,
    errors: Vec<String>,
    elapsed: Duration,
}

impl Load {
    fn start(vip: SocketAddr, max_requests: u64, max_time: Duration) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let handle = std::thread::spawn(move || {
            let started = Instant::now();
            let mut report = LoadReport {
                sent: 0,
                failed: 0,
                errors: Vec::new(),
                elapsed: Duration::ZERO,
            };
            while !flag.load(Ordering::SeqCst)
                && report.sent < max_requests
                && started.elapsed() < max_time
            {
                report.sent += 1;
                if let Err(e) = ask_once(vip, REQUEST) {
                    report.failed += 1;
                    if report.errors.len() < 5 {
                        report.errors.push(format!("{:?}: {e}", started.elapsed()));
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            report.elapsed = started.elapsed();
            report
        });
        Load { stop, handle }
    }

    fn finish(self) -> LoadReport {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.join().unwrap()
    }
}

#[test]
fn kubectl_changes_converge_on_the_userspace_dataplane() {
    let test = "kubectl_changes_converge_on_the_userspace_dataplane";
    let Some((_sandbox, plane)) = sandbox(test) else {
        return;
    };
    let backends = backends();
    let vip = addr("10.96.100.10:80");
    let node_port = addr("127.0.0.1:30080");
    plane
        .apply(&format!(
            "{}---\n{}",
            service("web", "10.96.100.10", 80, Some(30080)),
            slice("web-1", "web", &[A, B])
        ))
        .unwrap();
    let started = Instant::now();
    let proxy = Proxy::start(&plane.admin_kubeconfig(), &[]);
    let mut admin = proxy.admin();
    proxy.eventually("the cluster IP answers", CONVERGE, || {
        ask_once(vip, REQUEST).is_ok()
    });
    let first_sync = started.elapsed();
    let names: Vec<String> = (0..6).map(|_| ask_once(vip, REQUEST).unwrap()).collect();
    assert!(
        names.contains(&"a".into()) && names.contains(&"b".into()),
        "{names:?}"
    );
    assert!(
        ["a", "b"].contains(&ask_once(node_port, REQUEST).unwrap().as_str()),
        "the NodePort on the Node's InternalIP"
    );

    // Scale up by editing the slice.
    plane.apply(&slice("web-1", "web", &[A, B, C])).unwrap();
    let scale_up = proxy.eventually("three endpoints", CONVERGE, || {
        destinations(&mut admin, vip) == Some(weighted(&[A, B, C]))
    });
    proxy.eventually("c serves", CONVERGE, || {
        (0..3).any(|_| ask_once(vip, REQUEST).unwrap() == "c")
    });

    // Scale down: new connections go to `a` only.
    plane.apply(&slice("web-1", "web", &[A])).unwrap();
    let scale_down = proxy.eventually("only a serves", CONVERGE, || {
        (0..4).all(|_| ask_once(vip, REQUEST).unwrap() == "a")
    });

    // The scheduler annotation.
    plane
        .kubectl(&[
            "annotate",
            "service",
            "web",
            "rvs.dev/ipvs-scheduler=lc",
            "--overwrite",
        ])
        .unwrap();
    let annotate = proxy.eventually("the scheduler is lc", CONVERGE, || {
        admin
            .service(&tcp_key(vip))
            .is_ok_and(|s| s.service.scheduler.name() == "lc")
    });
    let node_port_scheduler = admin.service(&tcp_key(node_port)).unwrap();
    assert_eq!(node_port_scheduler.service.scheduler.name(), "lc");

    // Delete: both virtual services go, nothing answers.
    plane
        .kubectl(&["delete", "service", "web", "--wait=false"])
        .unwrap();
    let delete = proxy.eventually("web's virtual services are gone", CONVERGE, || {
        let keys: Vec<ServiceKey> = admin
            .services()
            .unwrap()
            .into_iter()
            .map(|s| s.service.key)
            .collect();
        !keys.contains(&tcp_key(vip)) && !keys.contains(&tcp_key(node_port))
    });
    // What is left is default/kubernetes (10.96.0.1:443, no endpoints:
    // there is no endpoint reconciler).
    let left = snapshot(&mut admin);
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(left[0].0.contains("10.96.0.1:443"), "{left:?}");
    assert!(ask_once(vip, REQUEST).is_err());
    assert!(ask_once(node_port, REQUEST).is_err());
    assert!(backends[0].served() > 0);

    let errors = proxy.log_lines(" ERROR ");
    assert!(errors.is_empty(), "{errors:#?}");
    eprintln!(
        "convergence: first sync {first_sync:?} (rvs-proxy start to first answer), \
         scale up {scale_up:?}, scale down {scale_down:?}, annotation {annotate:?}, \
         delete {delete:?}"
    );
}

#[test]
fn rbac_role_suffices_and_a_missing_verb_is_named() {
    let test = "rbac_role_suffices_and_a_missing_verb_is_named";
    let Some((_sandbox, plane)) = sandbox(test) else {
        return;
    };
    let _backends = backends();
    let vip = addr("10.96.100.10:80");
    let rbac = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/kubernetes/rbac.yaml"
    ))
    .unwrap();
    plane.apply(&rbac).unwrap();
    let token = plane
        .kubectl(&[
            "create",
            "token",
            "rvs-proxy",
            "-n",
            "kube-system",
            "--duration=1h",
        ])
        .unwrap();
    // Through a relay: cutting it makes the watches reconnect, so that
    // they meet the role as it is now (RBAC is checked per request).
    let relay = Relay::start(plane.api_addr().unwrap()).unwrap();
    let kubeconfig = plane.dir().join("rvs-proxy.kubeconfig");
    std::fs::write(
        &kubeconfig,
        plane
            .token_kubeconfig(token.trim(), &relay.https_url())
            .unwrap(),
    )
    .unwrap();
    plane
        .apply(&format!(
            "{}---\n{}",
            service("web", "10.96.100.10", 80, Some(30080)),
            slice("web-1", "web", &[A, B])
        ))
        .unwrap();
    let mut proxy = Proxy::start(&kubeconfig, &[]);
    let mut admin = proxy.admin();
    // Services, EndpointSlices and the Node (the NodePort is served on
    // its InternalIP): everything rvs-proxy reads, with the shipped role.
    proxy.eventually("synced with the ServiceAccount's token", CONVERGE, || {
        destinations(&mut admin, vip) == Some(weighted(&[A, B]))
            && destinations(&mut admin, addr("127.0.0.1:30080")).is_some()
    });
    assert!(
        proxy.log_lines("403 Forbidden").is_empty(),
        "{}",
        proxy.log()
    );
    let before = snapshot(&mut admin);

    // Take `watch` on endpointslices away.
    let reduced = rbac.replace(
        "resources: [endpointslices]\n    verbs: [list, watch]",
        "resources: [endpointslices]\n    verbs: [list]",
    );
    assert_ne!(reduced, rbac, "the role's endpointslices rule moved");
    plane.apply(&reduced).unwrap();
    // `kubectl auth can-i` exits 0 for yes, 1 for no.
    let can_watch = || {
        plane
            .kubectl(&[
                "auth",
                "can-i",
                "watch",
                "endpointslices.discovery.k8s.io",
                "--as=system:serviceaccount:kube-system:rvs-proxy",
            ])
            .is_ok()
    };
    proxy.eventually("the role change is in force", CONVERGE, || !can_watch());
    relay.cut();
    relay.restore();
    let wanted = "not allowed to watch endpointslices.discovery.k8s.io (403 Forbidden: ";
    let noticed = proxy.eventually("the missing verb is logged", RECONNECT, || {
        !proxy.log_lines(wanted).is_empty()
    });
    let line = proxy.log_lines(wanted).remove(0);
    eprintln!("rvs-proxy logs, {noticed:?} after the reconnect:\n{line}");
    assert!(line.contains(" ERROR "), "{line}");
    assert!(
        line.contains("cannot watch resource \\\"endpointslices\\\"")
            || line.contains("cannot watch resource \"endpointslices\""),
        "the API server's own words are kept: {line}"
    );
    assert!(line.contains("ClusterRole"), "{line}");
    // It neither crashes nor drops what it programmed, and stays healthy
    // (kube-proxy's /healthz only fails when a queued change is not
    // synced in time; a failing watch queues nothing).
    proxy.eventually(
        "the watch is retried (and refused again)",
        RECONNECT,
        || proxy.log_lines(wanted).len() >= 2,
    );
    assert!(proxy.running(), "rvs-proxy exited:\n{}", proxy.log());
    assert_eq!(snapshot(&mut admin), before);
    assert!(ask_once(vip, REQUEST).is_ok());
    let (status, body) = http_get(HEALTHZ, "/healthz").unwrap();
    assert_eq!(status, 200, "{body}");
    // What is still allowed still flows: a Service change converges.
    plane
        .kubectl(&[
            "annotate",
            "service",
            "web",
            "rvs.dev/ipvs-scheduler=lc",
            "--overwrite",
        ])
        .unwrap();
    proxy.eventually("the Service change arrives", CONVERGE, || {
        admin
            .service(&tcp_key(vip))
            .is_ok_and(|s| s.service.scheduler.name() == "lc")
    });
    assert_eq!(destinations(&mut admin, vip), Some(weighted(&[A, B])));

    // Give the verb back: the watch resumes (with backoff) and changes
    // flow again.
    plane.apply(&rbac).unwrap();
    proxy.eventually("the role is whole again", CONVERGE, can_watch);
    plane.apply(&slice("web-1", "web", &[A])).unwrap();
    let recovered = proxy.eventually("the scale-down arrives", RECONNECT, || {
        destinations(&mut admin, vip)
            .is_some_and(|d| d.len() == 1 || d.iter().any(|(_, w)| *w == 0))
    });
    eprintln!("after the role was restored, a slice change converged in {recovered:?}");
}

#[test]
fn apiserver_outage_keeps_traffic_and_health() {
    let test = "apiserver_outage_keeps_traffic_and_health";
    let Some((_sandbox, plane)) = sandbox(test) else {
        return;
    };
    let _backends = backends();
    let vip = addr("10.96.100.10:80");
    plane
        .apply(&format!(
            "{}---\n{}",
            service("web", "10.96.100.10", 80, None),
            slice("web-1", "web", &[A, B])
        ))
        .unwrap();
    // Periodic full syncs every 5 s: several during the outage.
    let mut proxy = Proxy::start(&plane.admin_kubeconfig(), &["--ipvs-sync-period", "5s"]);
    let mut admin = proxy.admin();
    proxy.eventually("synced", CONVERGE, || {
        destinations(&mut admin, vip) == Some(weighted(&[A, B]))
    });
    proxy.eventually("metrics served", CONVERGE, || {
        last_sync_timestamp().is_some()
    });
    let before = snapshot(&mut admin);
    let load = Load::start(vip, 20_000, OUTAGE + RECONNECT + Duration::from_secs(60));

    let stopping = Instant::now();
    plane.stop_apiserver().unwrap();
    let stopped_in = stopping.elapsed();
    let outage_started = Instant::now();
    let mut timestamps: Vec<f64> = Vec::new();
    let mut healthz_checks = 0;
    while outage_started.elapsed() < OUTAGE {
        let (status, body) = http_get(HEALTHZ, "/healthz").unwrap();
        assert_eq!(status, 200, "healthz during the outage: {body}");
        // kube-proxy's compatibility rule: while healthy, lastUpdated is
        // reported as now.
        let field = |name: &str| {
            body.split(&format!("\"{name}\":\""))
                .nth(1)
                .and_then(|r| r.split('"').next())
                .map(str::to_owned)
        };
        let (last, now) = (field("lastUpdated"), field("currentTime"));
        assert!(last.is_some() && last == now, "{body}");
        healthz_checks += 1;
        let t = last_sync_timestamp().unwrap();
        if timestamps.last() != Some(&t) {
            timestamps.push(t);
        }
        assert_eq!(snapshot(&mut admin), before, "the dataplane changed");
        assert!(proxy.running(), "rvs-proxy exited:\n{}", proxy.log());
        std::thread::sleep(Duration::from_secs(1));
    }
    let down_for = outage_started.elapsed();
    let restart = Instant::now();
    plane.start_apiserver().unwrap();
    let restarted_in = restart.elapsed();
    // A change right after the restart.
    plane.apply(&slice("web-1", "web", &[A, B, C])).unwrap();
    let converged = proxy.eventually("the change after the restart", RECONNECT, || {
        destinations(&mut admin, vip) == Some(weighted(&[A, B, C]))
    });
    let report = load.finish();

    // Periodic syncs went on from the cache: the timestamp advanced.
    let advanced = timestamps.len().saturating_sub(1);
    assert!(
        advanced >= 3,
        "the sync timestamp advanced {advanced} times in {OUTAGE:?}: {timestamps:?}"
    );
    assert_eq!(report.failed, 0, "requests failed: {report:?}");
    assert!(report.sent >= 300, "{report:?}");
    let warnings = proxy.log_lines("keeping the last view and retrying");
    assert!(!warnings.is_empty(), "{}", proxy.log());
    let relists = proxy.log_lines("relisted");
    let watch_log: Vec<String> = proxy
        .log()
        .lines()
        .filter(|l| l.contains("rvs_proxy::source::api") || l.contains("synced full=false"))
        .map(|l| l.chars().take(220).collect())
        .collect();
    eprintln!("rvs-proxy's watch log:\n{}", watch_log.join("\n"));
    eprintln!(
        "outage: apiserver stopped in {stopped_in:?}, down {down_for:?}, ready again \
         {restarted_in:?} after its start; {} requests sent through the VIP in {:?}, {} failed; \
         /healthz 200 on all {healthz_checks} checks; sync timestamp advanced {advanced} \
         times; a change made right after the restart converged in {converged:?}; \
         {} retry warnings, {} relists:\n{}",
        report.sent,
        report.elapsed,
        report.failed,
        warnings.len(),
        relists.len(),
        relists.join("\n")
    );
}

#[test]
fn relist_after_410_replaces_a_recreated_service() {
    let test = "relist_after_410_replaces_a_recreated_service";
    let Some((_sandbox, plane)) = sandbox(test) else {
        return;
    };
    let _backends = backends();
    let steady = addr("10.96.100.20:80");
    let relay = Relay::start(plane.api_addr().unwrap()).unwrap();
    let kubeconfig = plane.dir().join("relayed.kubeconfig");
    std::fs::write(
        &kubeconfig,
        plane
            .kubeconfig_for_server("admin", &relay.https_url())
            .unwrap(),
    )
    .unwrap();
    plane
        .apply(&format!(
            "{}---\n{}---\n{}---\n{}",
            service("web", "10.96.100.10", 80, None),
            slice("web-1", "web", &[A, B]),
            service("steady", "10.96.100.20", 80, None),
            slice("steady-1", "steady", &[C]),
        ))
        .unwrap();
    let proxy = Proxy::start(&kubeconfig, &[]);
    let mut admin = proxy.admin();
    proxy.eventually("synced", CONVERGE, || {
        destinations(&mut admin, addr("10.96.100.10:80")) == Some(weighted(&[A, B]))
            && destinations(&mut admin, steady) == Some(weighted(&[C]))
    });
    // The Service that is not touched keeps serving throughout.
    let load = Load::start(steady, 20_000, Duration::from_secs(240));
    let uid = |plane: &ControlPlane| {
        plane
            .kubectl(&["get", "service", "web", "-o", "jsonpath={.metadata.uid}"])
            .unwrap()
    };

    // While rvs-proxy is cut off: `web` deleted and re-created under the
    // same name with a new UID, cluster IP and port; etcd compacted. The
    // API server's watch cache still holds the events, so the watch
    // resumes and delivers them.
    let first_uid = uid(&plane);
    let recreate = |plane: &ControlPlane, ip: &str, port: u16, old: &str, new: &str, ep: &str| {
        plane
            .kubectl(&["delete", "service", "web", "--wait=true"])
            .unwrap();
        plane
            .kubectl(&["delete", "endpointslice", old, "--wait=true"])
            .unwrap();
        plane
            .apply(&format!(
                "{}---\n{}",
                service("web", ip, port, None),
                slice(new, "web", &[ep])
            ))
            .unwrap();
    };
    relay.cut();
    recreate(&plane, "10.96.100.11", 81, "web-1", "web-2", B);
    plane.compact_etcd().unwrap();
    let second_uid = uid(&plane);
    assert_ne!(first_uid, second_uid);
    relay.restore();
    let resumed = proxy.eventually("the re-created web (resumed watch)", RECONNECT, || {
        destinations(&mut admin, addr("10.96.100.11:81")) == Some(weighted(&[B]))
            && destinations(&mut admin, addr("10.96.100.10:80")).is_none()
    });
    assert_eq!(ask_once(addr("10.96.100.11:81"), REQUEST).unwrap(), "b");
    assert!(ask_once(addr("10.96.100.10:80"), REQUEST).is_err());
    let relists_before = proxy.log_lines("relisted").len();

    // Again, but the API server restarts too: its new watch cache starts
    // after rvs-proxy's resourceVersion and etcd no longer has it, so the
    // watch gets 410 Gone and rvs-proxy must relist.
    relay.cut();
    recreate(&plane, "10.96.100.12", 82, "web-2", "web-3", A);
    plane.compact_etcd().unwrap();
    plane.stop_apiserver().unwrap();
    plane.start_apiserver().unwrap();
    assert_ne!(uid(&plane), second_uid);
    relay.restore();
    let relisted = proxy.eventually("the re-created web (relist)", RECONNECT, || {
        destinations(&mut admin, addr("10.96.100.12:82")) == Some(weighted(&[A]))
            && destinations(&mut admin, addr("10.96.100.11:81")).is_none()
    });
    assert_eq!(ask_once(addr("10.96.100.12:82"), REQUEST).unwrap(), "a");
    assert!(ask_once(addr("10.96.100.11:81"), REQUEST).is_err());
    let gone = proxy.log_lines("410 Gone");
    assert!(!gone.is_empty(), "{}", proxy.log());
    let relists = proxy.log_lines("relisted");
    assert!(relists.len() > relists_before, "{}", proxy.log());
    // Nothing else was touched: steady served every request.
    let report = load.finish();
    assert_eq!(
        report.failed, 0,
        "requests to the untouched Service failed: {report:?}"
    );
    assert_eq!(destinations(&mut admin, steady), Some(weighted(&[C])));
    let services = snapshot(&mut admin);
    assert_eq!(
        services.len(),
        3,
        "default/kubernetes, steady and the latest web only: {services:?}"
    );
    eprintln!(
        "re-created while cut off: converged {resumed:?} after reconnecting (watch resumed \
         from the cache); with a restart and compaction: {relisted:?} (410 Gone, relist); \
         {} requests to the untouched Service, {} failed; log:\n{}\n{}",
        report.sent,
        report.failed,
        gone.join("\n"),
        relists.join("\n")
    );
}
