//! `rvs-proxy --dataplane ebpf` end to end on the host kernel: the
//! programs attached to a child cgroup this test creates (never the
//! machine's root), manifests in a directory, clients in the cgroup and a
//! client network namespace, backends in another namespace. A Service's
//! cluster IP is balanced round robin, an endpoint removed from the
//! manifests stops getting connections, `rvsadm`'s view (the admin
//! socket) shows the services, connections keep working while rvs-proxy
//! restarts (the programs and maps stay pinned), and `--cleanup` detaches
//! everything. A second test rebalances keep-alive clients' sockets after
//! the Service scales from 2 to 4 endpoints (`--rebalance=idle`), seen in
//! the admin socket's rebalancing list (what `rvsadm --rebalancing`
//! prints) and in the metrics. Bounded throughout.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use rvs_admin::{Admin, AdminClient};
use rvs_model::ServiceKey;
use rvs_model::admin::RebalanceStatus;
use rvs_testrig::backend::{Backend, http_get};
use rvs_testrig::cgroup::{BpfFs, Cgroup, Client, ClientReport, ClientSpec, Mode};
use rvs_testrig::keepalive::{self, Requests};
use rvs_testrig::{Daemon, Netns, TempDir, eventually};

const NODE: &str = "ebpf-node";
const STEP: Duration = Duration::from_secs(20);
/// The arguments that make this test binary run `client_role` only.
const CLIENT_ARGS: [&str; 3] = ["--exact", "client_role", "--nocapture"];

/// The client side: this test binary re-run inside the cgroup.
#[test]
fn client_role() {
    rvs_testrig::cgroup::serve_client_role();
}

fn vip() -> SocketAddr {
    "10.96.7.10:80".parse().unwrap()
}

/// A Service on `vip()` with endpoints 10.77.0.`hosts`:8080.
fn manifests(hosts: &[u8]) -> String {
    let endpoints: Vec<String> = hosts
        .iter()
        .map(|h| format!("  - {{addresses: [10.77.0.{h}], conditions: {{ready: true}}}}"))
        .collect();
    format!(
        "apiVersion: v1
kind: Node
metadata: {{name: {NODE}}}
status: {{addresses: [{{type: InternalIP, address: 10.77.0.1}}]}}
---
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: default}}
spec:
  clusterIP: 10.96.7.10
  ports: [{{name: http, port: 80, protocol: TCP, targetPort: 8080}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-1
  namespace: default
  labels: {{kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{{name: http, port: 8080, protocol: TCP}}]
endpoints:
{}
",
        endpoints.join("\n")
    )
}

fn write_manifests(dir: &Path, text: &str) {
    let tmp = dir.join(".cluster.yaml.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join("cluster.yaml")).unwrap();
}

struct Rig {
    cgroup: Cgroup,
    bpffs: BpfFs,
    client: Netns,
    server: Netns,
    dir: TempDir,
}

impl Rig {
    fn or_skip(test: &str) -> Option<Rig> {
        if !rvs_ebpf::programs_built() {
            rvs_testrig::skip(test, &"rvs-ebpf was built without clang: no eBPF programs");
            return None;
        }
        let cgroup = Cgroup::or_skip(test)?;
        let bpffs = match BpfFs::new() {
            Ok(fs) => fs,
            Err(err) => {
                rvs_testrig::skip(test, &err);
                return None;
            }
        };
        let client = Netns::or_skip(test)?;
        let server = Netns::or_skip(test)?;
        client
            .link(&server, "10.77.0.1/24", "10.77.0.2/24")
            .unwrap();
        server
            .run("ip", &["addr", "add", "10.77.0.3/24", "dev", "veth0"])
            .unwrap();
        let dir = TempDir::new("ebpf-e2e").unwrap();
        Some(Rig {
            cgroup,
            bpffs,
            client,
            server,
            dir,
        })
    }

    fn backend(&self, host: u8, name: &str) -> Backend {
        let addr: SocketAddr = format!("10.77.0.{host}:8080").parse().unwrap();
        self.server
            .enter(move || Backend::tcp(addr, name))
            .unwrap()
            .unwrap()
    }

    fn socket(&self) -> std::path::PathBuf {
        self.dir.join("admin.sock")
    }

    fn proxy(&self, extra: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_rvs-proxy"));
        cmd.arg("--dataplane")
            .arg("ebpf")
            .arg("--cgroup")
            .arg(self.cgroup.path())
            .arg("--bpf-pin-dir")
            .arg(self.bpffs.path().join("rvs"))
            .args(["--hostname-override", NODE])
            .args(["--metrics-bind-address", "", "--healthz-bind-address", ""])
            .args(extra)
            .stdout(Stdio::null());
        cmd
    }

    fn start(&self) -> Daemon {
        let mut cmd = self.proxy(&[]);
        cmd.arg("--manifests")
            .arg(self.dir.path())
            .arg("--admin-socket")
            .arg(self.socket());
        Daemon::spawn(&mut cmd).unwrap()
    }

    fn run(&self, count: u32) -> ClientReport {
        let spec = ClientSpec::new(Mode::Tcp, vip(), count);
        Client::run(&self.cgroup, Some(&self.client), &CLIENT_ARGS, &spec).unwrap()
    }

    /// The real servers of the web Service as the admin socket shows them.
    fn real_servers(&self) -> Vec<SocketAddr> {
        let Ok(mut admin) = AdminClient::connect(self.socket()) else {
            return Vec::new();
        };
        let mut addrs: Vec<SocketAddr> = admin
            .destinations(&ServiceKey::tcp(vip()))
            .map(|ds| ds.into_iter().map(|d| d.destination.addr).collect())
            .unwrap_or_default();
        addrs.sort();
        addrs
    }
}

fn rs(hosts: &[u8]) -> Vec<SocketAddr> {
    hosts
        .iter()
        .map(|h| format!("10.77.0.{h}:8080").parse().unwrap())
        .collect()
}

#[test]
fn rvs_proxy_balances_sockets_of_a_cgroup_and_survives_restarts() {
    let test = "rvs_proxy_balances_sockets_of_a_cgroup_and_survives_restarts";
    let Some(rig) = Rig::or_skip(test) else {
        return;
    };
    let _backends = [rig.backend(2, "b2"), rig.backend(3, "b3")];
    write_manifests(rig.dir.path(), &manifests(&[2, 3]));
    let mut proxy = rig.start();
    eventually("the service through the admin socket", STEP, || {
        rig.real_servers() == rs(&[2, 3])
    });

    // Round robin over both endpoints, exactly.
    let report = rig.run(20);
    assert!(report.errors().is_empty(), "{:?}", report.errors());
    let counts = report.counts();
    assert_eq!(counts.get("b2"), Some(&10), "{counts:?}");
    assert_eq!(counts.get("b3"), Some(&10), "{counts:?}");

    // An endpoint leaves: new connections go to the other one only.
    write_manifests(rig.dir.path(), &manifests(&[2]));
    eventually("the endpoint removed", STEP, || {
        rig.real_servers() == rs(&[2])
    });
    let report = rig.run(10);
    assert_eq!(report.counts().get("b2"), Some(&10), "{report:?}");

    // A restart: a client connecting every 2 ms across the stop and the
    // start of the next rvs-proxy never fails (the programs and maps stay
    // pinned, and the next one adopts them).
    let mut spec = ClientSpec::new(Mode::Tcp, vip(), 2000);
    spec.pace = Duration::from_millis(2);
    spec.within = Duration::from_secs(30);
    let client = Client::spawn(&rig.cgroup, Some(&rig.client), &CLIENT_ARGS, &spec).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    proxy.terminate(STEP).unwrap();
    let mut proxy = rig.start();
    eventually("the restarted proxy's admin socket", STEP, || {
        rig.real_servers() == rs(&[2])
    });
    let report = client.wait().unwrap();
    assert!(
        report.errors().is_empty(),
        "{} failed of {}: {:?}",
        report.errors().len(),
        report.attempts.len(),
        report.errors().first()
    );
    assert!(report.attempts.len() > 100, "{}", report.attempts.len());
    proxy.terminate(STEP).unwrap();

    // --cleanup (no source) detaches: the virtual address is not
    // translated any more.
    let status = rig
        .proxy(&["--cleanup"])
        .status()
        .expect("rvs-proxy --cleanup");
    assert!(status.success());
    let report = rig.run(1);
    assert_eq!(report.errors().len(), 1, "{report:?}");
}

/// The clients of the rebalancing test: a few urllib3 keep-alive clients
/// for a bounded time.
const KEEPALIVE_CLIENTS: usize = 20;
const KEEPALIVE_SECS: f64 = 30.0;

#[test]
fn rvs_proxy_rebalances_keep_alive_sockets_after_a_scale_up() {
    let test = "rvs_proxy_rebalances_keep_alive_sockets_after_a_scale_up";
    let Some(rig) = Rig::or_skip(test) else {
        return;
    };
    if let Err(why) = keepalive::python_urllib3() {
        rvs_testrig::skip(test, &why);
        return;
    }
    for host in [4, 5] {
        rig.server
            .run(
                "ip",
                &["addr", "add", &format!("10.77.0.{host}/24"), "dev", "veth0"],
            )
            .unwrap();
    }
    for host in 2..=5u8 {
        let addr: SocketAddr = format!("10.77.0.{host}:8080").parse().unwrap();
        let listener = rig
            .server
            .enter(move || std::net::TcpListener::bind(addr))
            .unwrap()
            .unwrap();
        keepalive::http_backend(listener, usize::from(host - 2));
    }
    write_manifests(rig.dir.path(), &manifests(&[2, 3]));
    let metrics = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rvs-proxy"));
    cmd.args(["--dataplane", "ebpf", "--rebalance", "idle"])
        .arg("--cgroup")
        .arg(rig.cgroup.path())
        .arg("--bpf-pin-dir")
        .arg(rig.bpffs.path().join("rvs"))
        .args(["--hostname-override", NODE])
        .args(["--metrics-bind-address", &metrics.to_string()])
        .args(["--healthz-bind-address", ""])
        .arg("--manifests")
        .arg(rig.dir.path())
        .arg("--admin-socket")
        .arg(rig.socket())
        .stdout(Stdio::null());
    let mut proxy = Daemon::spawn(&mut cmd).unwrap();
    eventually("the service through the admin socket", STEP, || {
        rig.real_servers() == rs(&[2, 3])
    });
    let mut clients = rig.cgroup.command(Some(&rig.client), Path::new("python3"));
    clients.args(keepalive::clients_args(
        &vip().ip().to_string(),
        vip().port(),
        KEEPALIVE_CLIENTS,
        KEEPALIVE_SECS,
    ));
    let clients = std::thread::spawn(move || clients.output().unwrap());
    std::thread::sleep(Duration::from_secs(8));
    write_manifests(rig.dir.path(), &manifests(&[2, 3, 4, 5]));
    let out = clients.join().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let requests = Requests::parse(&String::from_utf8_lossy(&out.stdout));
    print!(
        "{}",
        requests.summary("rvs-proxy --rebalance=idle", KEEPALIVE_SECS, 5.0)
    );

    // No request failed, and the new endpoints serve their part by the end.
    assert!(requests.failed.is_empty(), "{:?}", requests.failed);
    let late: [u32; 4] = requests.per_backend(KEEPALIVE_SECS - 5.0, KEEPALIVE_SECS);
    assert!(late[2] > 0 && late[3] > 0, "last 5 s: {late:?}");

    // What rvsadm --rebalancing lists: the service, with closes counted
    // against its first two real servers only.
    let listed = || {
        AdminClient::connect(rig.socket())
            .unwrap()
            .rebalancing()
            .unwrap()
    };
    let list = listed();
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0].service, ServiceKey::tcp(vip()));
    let closed = |list: &[RebalanceStatus]| -> u64 { list[0].closed.iter().map(|&(_, n)| n).sum() };
    assert!(closed(&list) > 0, "{list:?}");
    assert!(
        list[0].closed.iter().all(|(d, _)| rs(&[2, 3]).contains(d)),
        "{list:?}"
    );

    // The metrics say the same once they have read the counters again
    // (they read them periodically, as the virtual servers' counters).
    let started = std::time::Instant::now();
    loop {
        let reply = http_get(metrics, "/metrics", STEP).unwrap();
        let series: u64 = reply
            .body
            .lines()
            .filter(|l| l.starts_with("rvs_rebalance_closed_connections_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum();
        let now = listed();
        if series == closed(&now) && reply.body.contains("rvs_rebalance_skew{") {
            break;
        }
        assert!(
            started.elapsed() < STEP,
            "the metrics never matched {now:?}:\n{}",
            reply.body
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    proxy.terminate(STEP).unwrap();
}
