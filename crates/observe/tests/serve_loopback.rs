//! The servers over real sockets on 127.0.0.1: `/metrics` scraped and
//! checked for kube-proxy's names, types and values; `/healthz` and
//! `/livez` status codes and bodies in each state; health check node port
//! servers opened, answering 200/503, and closed.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use rvs_model::admin::OpKind;
use rvs_observe::{
    HealthState, IpFamily, Metrics, ServeOptions, ServiceHealth, ServiceName, SyncKind, serve,
};
use rvs_testrig::backend::{HttpReply, http_get};

fn get(addr: SocketAddr, path: &str) -> std::io::Result<HttpReply> {
    http_get(addr, path, Duration::from_secs(5))
}

/// One runtime for every server of this test binary, as rvs-proxy has.
fn runtime() -> &'static tokio::runtime::Handle {
    static RUNTIME: std::sync::LazyLock<tokio::runtime::Runtime> =
        std::sync::LazyLock::new(|| tokio::runtime::Runtime::new().unwrap());
    RUNTIME.handle()
}

fn local() -> ServeOptions {
    let any = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    ServeOptions {
        metrics_addr: Some(any),
        healthz_addr: Some(any),
        ..ServeOptions::default()
    }
}

/// The value of the sample line starting with `series ` (name and labels).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.parse().expect("a number"))
}

#[test]
fn metrics_have_kube_proxys_names_types_and_values() {
    let metrics = Metrics::new(&[IpFamily::V4, IpFamily::V6]);
    let health = HealthState::new(Duration::from_secs(60), &[IpFamily::V4, IpFamily::V6]);
    let running = serve(&local(), &metrics, &health, runtime()).unwrap();
    let addr = running.metrics_addr().unwrap();

    metrics.sync_queued();
    metrics.service_changes(3, 2);
    metrics.endpoint_changes(5, 4);
    metrics.sync_finished(SyncKind::Full, Duration::from_millis(3), true);
    metrics.sync_finished(SyncKind::Partial, Duration::from_millis(20), false);
    metrics.network_programming(Duration::from_millis(700));
    metrics.iptables_restore_failed(IpFamily::V6);
    metrics.conntrack_reconciled(IpFamily::V4, Duration::from_millis(2), 3);
    metrics.no_local_endpoints(IpFamily::V4, 1, 2);
    metrics.reconciler_ops(OpKind::AddDestination, 7);
    metrics.dataplane_errors(OpKind::DeleteService, 1);
    let svc = rvs_model::Service::new(
        rvs_model::ServiceKey::tcp("10.96.0.1:443".parse().unwrap()),
        rvs_model::Scheduler::RoundRobin,
    );
    metrics.virtual_services(&[rvs_model::ServiceStatus {
        service: svc,
        stats: rvs_model::Stats {
            conns: 11,
            inpkts: 12,
            outpkts: 13,
            inbytes: 14,
            outbytes: 15,
            ..Default::default()
        },
    }]);

    let got = get(addr, "/metrics").unwrap();
    assert_eq!(got.status, 200);
    assert!(
        got.headers
            .contains("content-type: application/openmetrics-text")
    );
    let t = &got.body;
    for (name, kind) in [
        ("kubeproxy_sync_proxy_rules_duration_seconds", "histogram"),
        (
            "kubeproxy_sync_full_proxy_rules_duration_seconds",
            "histogram",
        ),
        (
            "kubeproxy_sync_partial_proxy_rules_duration_seconds",
            "histogram",
        ),
        ("kubeproxy_sync_proxy_rules_last_timestamp_seconds", "gauge"),
        (
            "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds",
            "gauge",
        ),
        (
            "kubeproxy_network_programming_duration_seconds",
            "histogram",
        ),
        ("kubeproxy_sync_proxy_rules_endpoint_changes", "counter"),
        (
            "kubeproxy_sync_proxy_rules_endpoint_changes_pending",
            "gauge",
        ),
        ("kubeproxy_sync_proxy_rules_service_changes", "counter"),
        (
            "kubeproxy_sync_proxy_rules_service_changes_pending",
            "gauge",
        ),
        (
            "kubeproxy_sync_proxy_rules_iptables_restore_failures",
            "counter",
        ),
        (
            "kubeproxy_sync_proxy_rules_no_local_endpoints_total",
            "gauge",
        ),
        ("rvs_reconciler_operations", "counter"),
        ("rvs_dataplane_errors", "counter"),
        ("rvs_virtual_service_connections", "counter"),
        ("rvs_virtual_service_in_bytes", "counter"),
        (
            "kubeproxy_conntrack_reconciler_sync_duration_seconds",
            "histogram",
        ),
        ("kubeproxy_conntrack_reconciler_deleted_entries", "counter"),
        // Go's process collector, as every Kubernetes component has it.
        ("process_cpu_seconds", "counter"),
        ("process_open_fds", "gauge"),
        ("process_max_fds", "gauge"),
        ("process_resident_memory_bytes", "gauge"),
        ("process_virtual_memory_bytes", "gauge"),
        ("process_virtual_memory_max_bytes", "gauge"),
        ("process_start_time_seconds", "gauge"),
    ] {
        assert!(
            t.contains(&format!("# TYPE {name} {kind}\n")),
            "{name} {kind}:\n{t}"
        );
    }
    assert!(t.ends_with("# EOF\n"));
    assert!(sample(t, "process_resident_memory_bytes").unwrap() > 0.0);
    assert_eq!(
        sample(
            t,
            "kubeproxy_conntrack_reconciler_deleted_entries_total{ip_family=\"IPv4\"}"
        ),
        Some(3.0)
    );
    // Counter families without a series yet are left out, as client_golang
    // leaves out an untouched CounterVec.
    assert!(!t.contains("kubeproxy_proxy_healthz"));
    let v4 = "{ip_family=\"IPv4\"}";
    assert_eq!(
        sample(t, "kubeproxy_sync_proxy_rules_endpoint_changes_total"),
        Some(5.0)
    );
    assert_eq!(
        sample(t, "kubeproxy_sync_proxy_rules_endpoint_changes_pending"),
        Some(4.0)
    );
    assert_eq!(
        sample(t, "kubeproxy_sync_proxy_rules_service_changes_total"),
        Some(3.0)
    );
    assert_eq!(
        sample(t, "kubeproxy_sync_proxy_rules_service_changes_pending"),
        Some(2.0)
    );
    assert_eq!(
        sample(
            t,
            &format!("kubeproxy_sync_proxy_rules_duration_seconds_count{v4}")
        ),
        Some(2.0)
    );
    // 3 ms lands in the 4 ms bucket, 20 ms in the 32 ms one.
    assert_eq!(
        sample(
            t,
            "kubeproxy_sync_proxy_rules_duration_seconds_bucket{le=\"0.004\",ip_family=\"IPv4\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            t,
            "kubeproxy_sync_proxy_rules_duration_seconds_bucket{le=\"16.384\",ip_family=\"IPv6\"}"
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(
            t,
            &format!("kubeproxy_sync_full_proxy_rules_duration_seconds_count{v4}")
        ),
        Some(1.0)
    );
    let last = sample(
        t,
        &format!("kubeproxy_sync_proxy_rules_last_timestamp_seconds{v4}"),
    )
    .unwrap();
    let queued = sample(
        t,
        &format!("kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds{v4}"),
    )
    .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(queued <= last && now - last < 60.0, "{queued} {last} {now}");
    assert_eq!(
        sample(
            t,
            "kubeproxy_network_programming_duration_seconds_bucket{le=\"0.5\",ip_family=\"IPv4\"}"
        ),
        Some(0.0)
    );
    assert_eq!(
        sample(
            t,
            "kubeproxy_network_programming_duration_seconds_bucket{le=\"1.0\",ip_family=\"IPv4\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            t,
            "kubeproxy_sync_proxy_rules_iptables_restore_failures_total{ip_family=\"IPv6\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            t,
            "kubeproxy_sync_proxy_rules_iptables_restore_failures_total{ip_family=\"IPv4\"}"
        ),
        Some(0.0)
    );
    assert_eq!(
        sample(
            t,
            "kubeproxy_sync_proxy_rules_no_local_endpoints_total{ip_family=\"IPv4\",traffic_policy=\"external\"}"
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(
            t,
            "rvs_reconciler_operations_total{kind=\"add_destination\"}"
        ),
        Some(7.0)
    );
    assert_eq!(
        sample(t, "rvs_dataplane_errors_total{kind=\"delete_service\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample(t, "rvs_syncs_total{kind=\"partial\",result=\"failure\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample(
            t,
            "rvs_virtual_service_connections_total{protocol=\"TCP\",address=\"10.96.0.1:443\"}"
        ),
        Some(11.0)
    );
    assert_eq!(
        sample(
            t,
            "rvs_virtual_service_out_bytes_total{protocol=\"TCP\",address=\"10.96.0.1:443\"}"
        ),
        Some(15.0)
    );

    metrics.changes_taken();
    let t = get(addr, "/metrics").unwrap().body;
    assert_eq!(
        sample(&t, "kubeproxy_sync_proxy_rules_endpoint_changes_pending"),
        Some(0.0)
    );

    let mode = get(addr, "/proxyMode").unwrap();
    assert_eq!((mode.status, mode.body.as_str()), (200, "ipvs"));
    assert_eq!(get(addr, "/healthz").unwrap().body, "ok");
    assert_eq!(get(addr, "/nope").unwrap().status, 404);
    running.stop();
    assert!(TcpStream::connect(addr).is_err(), "closed on stop");
}

#[test]
fn healthz_and_livez_follow_kube_proxys_rules() {
    let metrics = Metrics::new(&[IpFamily::V4]);
    // A tiny timeout stands for 2 × the sync period.
    let health = HealthState::new(Duration::from_millis(200), &[IpFamily::V4]);
    let running = serve(&local(), &metrics, &health, runtime()).unwrap();
    let addr = running.healthz_addr().unwrap();

    // Starting: healthy.
    let h = get(addr, "/healthz").unwrap();
    assert_eq!(h.status, 200);
    assert!(h.headers.contains("content-type: application/json"));
    assert!(h.headers.contains("x-content-type-options: nosniff"));
    let v: serde_json::Value = serde_json::from_str(&h.body).unwrap();
    assert_eq!(v["nodeEligible"], true);
    assert_eq!(v["lastUpdated"], v["currentTime"]);
    // kube-proxy v1.37: RFC 3339 times, `healthy`, per-family `status`.
    assert!(v["currentTime"].as_str().unwrap().ends_with('Z'));
    assert_eq!(v["healthy"], true);

    // Synced, then a change waits past the timeout: 503 on both.
    health.updated();
    health.queued();
    assert_eq!(get(addr, "/healthz").unwrap().status, 200);
    std::thread::sleep(Duration::from_millis(300));
    let h = get(addr, "/healthz").unwrap();
    assert_eq!(h.status, 503);
    let v: serde_json::Value = serde_json::from_str(&h.body).unwrap();
    assert_ne!(v["lastUpdated"], v["currentTime"]);
    let l = get(addr, "/livez").unwrap();
    assert_eq!(l.status, 503);
    let v: serde_json::Value = serde_json::from_str(&l.body).unwrap();
    assert!(v.get("nodeEligible").is_none());

    // Applied: healthy again.
    health.updated();
    assert_eq!(get(addr, "/healthz").unwrap().status, 200);
    assert_eq!(get(addr, "/livez").unwrap().status, 200);

    // The Node is being deleted: /healthz 503, /livez 200.
    health.set_node_eligible(false);
    let h = get(addr, "/healthz").unwrap();
    assert_eq!(h.status, 503);
    let v: serde_json::Value = serde_json::from_str(&h.body).unwrap();
    assert_eq!(v["nodeEligible"], false, "{}", h.body);
    assert_eq!(v["healthy"], true, "{}", h.body);
    assert!(v["status"]["IPv4"]["lastUpdated"].is_string(), "{}", h.body);
    assert_eq!(get(addr, "/livez").unwrap().status, 200);
    assert_eq!(get(addr, "/metrics").unwrap().status, 404);

    // Each answer is counted by code.
    let t = get(running.metrics_addr().unwrap(), "/metrics")
        .unwrap()
        .body;
    assert_eq!(
        sample(&t, "kubeproxy_proxy_healthz_total{code=\"200\"}"),
        Some(3.0)
    );
    assert_eq!(
        sample(&t, "kubeproxy_proxy_healthz_total{code=\"503\"}"),
        Some(2.0)
    );
    assert_eq!(
        sample(&t, "kubeproxy_proxy_livez_total{code=\"503\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample(&t, "kubeproxy_proxy_livez_total{code=\"200\"}"),
        Some(2.0)
    );
}

/// A client that shuts down its sending side after the request (busybox
/// `nc` does) still gets the whole answer, as from Go's net/http.
#[test]
fn a_half_closed_request_is_answered() {
    use std::io::{Read, Write};
    let metrics = Metrics::new(&[IpFamily::V4]);
    let health = HealthState::new(Duration::from_secs(60), &[IpFamily::V4]);
    let running = serve(&local(), &metrics, &health, runtime()).unwrap();
    let addr = running.healthz_addr().unwrap();
    for _ in 0..20 {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"GET /healthz HTTP/1.0\r\n\r\n").unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.0 200"), "{answer:?}");
        assert!(answer.contains("\"nodeEligible\":true"), "{answer:?}");
    }
}

#[test]
fn disabled_servers_do_not_listen() {
    let metrics = Metrics::new(&[IpFamily::V4]);
    let health = HealthState::new(Duration::from_secs(60), &[IpFamily::V4]);
    let options = ServeOptions {
        metrics_addr: None,
        healthz_addr: None,
        ..local()
    };
    let running = serve(&options, &metrics, &health, runtime()).unwrap();
    assert_eq!(running.metrics_addr(), None);
    assert_eq!(running.healthz_addr(), None);
}

#[test]
fn an_address_in_use_is_an_error_naming_it() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let metrics = Metrics::new(&[IpFamily::V4]);
    let health = HealthState::new(Duration::from_secs(60), &[IpFamily::V4]);
    let options = ServeOptions {
        metrics_addr: Some(addr),
        healthz_addr: None,
        bind_hard_fail: true,
        ..local()
    };
    let err = serve(&options, &metrics, &health, runtime())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&addr.to_string()) && err.contains("metrics"),
        "{err}"
    );
}

#[test]
fn a_busy_address_is_retried_until_it_is_free() {
    // A terminating kube-proxy may still hold the port when rvs-proxy starts.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let metrics = Metrics::new(&[IpFamily::V4]);
    let health = HealthState::new(Duration::from_secs(60), &[IpFamily::V4]);
    let options = ServeOptions {
        metrics_addr: None,
        healthz_addr: Some(addr),
        bind_retry: Duration::from_millis(50),
        ..local()
    };
    let running = serve(&options, &metrics, &health, runtime()).unwrap();
    assert_eq!(running.healthz_addr(), None);
    drop(taken);
    rvs_testrig::eventually("the retried bind listens", Duration::from_secs(10), || {
        get(addr, "/livez").is_ok()
    });
    assert_eq!(get(addr, "/livez").unwrap().status, 200);
    running.stop();
}

#[test]
fn health_check_node_ports_open_answer_and_close() {
    let metrics = Metrics::new(&[IpFamily::V4]);
    let health = HealthState::new(Duration::from_millis(200), &[IpFamily::V4]);
    let options = ServeOptions {
        metrics_addr: None,
        healthz_addr: None,
        ..local()
    };
    let running = serve(&options, &metrics, &health, runtime()).unwrap();
    let mut hc = running.service_health(vec![Ipv4Addr::LOCALHOST.into()]);
    let web = ServiceName::new("default", "web");
    let db = ServiceName::new("prod", "db");
    let mut wanted = BTreeMap::new();
    wanted.insert(
        web.clone(),
        ServiceHealth {
            port: 0,
            local_endpoints: 2,
        },
    );
    wanted.insert(
        db.clone(),
        ServiceHealth {
            port: 0,
            local_endpoints: 0,
        },
    );
    assert!(hc.sync(&wanted).is_empty());
    let web_addr = hc.local_addrs(&web).unwrap()[0];
    let db_addr = hc.local_addrs(&db).unwrap()[0];

    let r = get(web_addr, "/").unwrap();
    assert_eq!(r.status, 200);
    assert!(r.headers.contains("content-type: application/json"));
    assert!(
        r.headers.contains("x-load-balancing-endpoint-weight: 2"),
        "{}",
        r.headers
    );
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["service"]["namespace"], "default");
    assert_eq!(v["service"]["name"], "web");
    assert_eq!(v["localEndpoints"], 2);
    assert_eq!(v["serviceProxyHealthy"], true);
    let r = get(db_addr, "/anything").unwrap();
    assert_eq!(r.status, 503);
    assert!(
        r.headers.contains("x-load-balancing-endpoint-weight: 0"),
        "{}",
        r.headers
    );
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["localEndpoints"], 0);

    // Endpoint counts update in place: same listener, new answer.
    wanted.insert(
        db.clone(),
        ServiceHealth {
            port: 0,
            local_endpoints: 1,
        },
    );
    wanted.insert(
        web.clone(),
        ServiceHealth {
            port: 0,
            local_endpoints: 0,
        },
    );
    assert!(hc.sync(&wanted).is_empty());
    assert_eq!(hc.local_addrs(&db).unwrap()[0], db_addr);
    assert_eq!(get(db_addr, "/").unwrap().status, 200);
    assert_eq!(get(web_addr, "/").unwrap().status, 503);

    // An unhealthy proxy fails every Service's check.
    health.updated();
    health.queued();
    std::thread::sleep(Duration::from_millis(300));
    let r = get(db_addr, "/").unwrap();
    assert_eq!(r.status, 503);
    assert!(
        r.body.contains("\"serviceProxyHealthy\": false"),
        "{}",
        r.body
    );
    health.updated();

    // A Service no longer wanted is closed; the other keeps serving.
    wanted.remove(&web);
    assert!(hc.sync(&wanted).is_empty());
    assert!(hc.local_addrs(&web).is_none());
    std::thread::sleep(Duration::from_millis(100));
    assert!(TcpStream::connect(web_addr).is_err(), "web's port closed");
    assert_eq!(get(db_addr, "/").unwrap().status, 200);
    assert_eq!(hc.services().collect::<Vec<_>>(), vec![&db]);

    // A port in use is reported and retried on the next sync.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let busy = ServiceName::new("default", "busy");
    wanted.insert(
        busy.clone(),
        ServiceHealth {
            port,
            local_endpoints: 1,
        },
    );
    let errors = hc.sync(&wanted);
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].to_string().contains("default/busy"),
        "{}",
        errors[0]
    );
    drop(taken);
    assert!(hc.sync(&wanted).is_empty());
    let busy_addr = hc.local_addrs(&busy).unwrap()[0];
    assert_eq!(busy_addr.port(), port);
    assert_eq!(get(busy_addr, "/").unwrap().status, 200);

    wanted.clear();
    hc.sync(&wanted);
    std::thread::sleep(Duration::from_millis(100));
    assert!(TcpStream::connect(db_addr).is_err());
    assert!(TcpStream::connect(busy_addr).is_err());
}
