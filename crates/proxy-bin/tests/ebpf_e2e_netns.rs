//! `rvs-proxy --dataplane ebpf` end to end on the host kernel: the
//! programs attached to a child cgroup this test creates (never the
//! machine's root), manifests in a directory, clients in the cgroup and a
//! client network namespace, backends in another namespace. A Service's
//! cluster IP is balanced round robin, an endpoint removed from the
//! manifests stops getting connections, `rvsadm`'s view (the admin
//! socket) shows the services, connections keep working while rvs-proxy
//! restarts (the programs and maps stay pinned), and `--cleanup` detaches
//! everything. Bounded throughout.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use rvs_admin::{Admin, AdminClient};
use rvs_model::ServiceKey;
use rvs_testrig::backend::Backend;
use rvs_testrig::cgroup::{BpfFs, Cgroup, Client, ClientReport, ClientSpec, Mode};
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
