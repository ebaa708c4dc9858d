//! The API-server source against a fake API server that speaks real HTTP
//! list/watch: resourceVersions, ADDED/MODIFIED/DELETED, BOOKMARK, a
//! dropped watch connection, `410 Gone` forcing a relist, and a slow list
//! that must keep the store not ready.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rvs_proxy::source::api;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

fn service(name: &str, ip: &str, rv: u64) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "default", "resourceVersion": rv.to_string()},
        "spec": {"clusterIP": ip, "ports": [{"name": "http", "port": 80}]}
    })
}

#[derive(Default)]
struct Seen {
    requests: Vec<String>,
    service_lists: usize,
    service_watches: usize,
}

async fn respond_json(stream: &mut TcpStream, status: &str, body: &Value) {
    let body = body.to_string();
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(body.as_bytes()).await;
}

async fn start_chunked(stream: &mut TcpStream) {
    let head =
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
    let _ = stream.write_all(head.as_bytes()).await;
}

async fn event(stream: &mut TcpStream, kind: &str, object: Value) {
    let line = format!("{}\n", json!({"type": kind, "object": object}));
    let chunk = format!("{:x}\r\n{line}\r\n", line.len());
    let _ = stream.write_all(chunk.as_bytes()).await;
    let _ = stream.flush().await;
}

fn list(kind: &str, rv: u64, items: Vec<Value>) -> Value {
    json!({"apiVersion": "v1", "kind": kind, "metadata": {"resourceVersion": rv.to_string()}, "items": items})
}

async fn handle(mut stream: TcpStream, seen: Arc<Mutex<Seen>>) {
    let mut reader = BufReader::new(&mut stream);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).await.unwrap_or(0) == 0 {
        return;
    }
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).await.unwrap_or(0) == 0 || header == "\r\n" {
            break;
        }
    }
    let target = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("")
        .to_owned();
    let watch = target.contains("watch=true");
    let (service_list, service_watch) = {
        let mut s = seen.lock().unwrap();
        s.requests.push(target.clone());
        if target.starts_with("/api/v1/services") {
            if watch {
                s.service_watches += 1
            } else {
                s.service_lists += 1
            }
        }
        (s.service_lists, s.service_watches)
    };
    let hold = Duration::from_secs(30);
    if target.starts_with("/api/v1/services") {
        match (watch, service_list, service_watch) {
            (false, 1, _) => {
                let items = vec![
                    service("svc-a", "10.96.0.1", 5),
                    service("svc-b", "10.96.0.2", 6),
                ];
                respond_json(&mut stream, "200 OK", &list("ServiceList", 10, items)).await;
            }
            (true, _, 1) => {
                start_chunked(&mut stream).await;
                event(&mut stream, "ADDED", service("svc-new", "10.96.0.3", 11)).await;
                event(&mut stream, "BOOKMARK", json!({"kind": "Service", "apiVersion": "v1", "metadata": {"resourceVersion": "12"}})).await;
                event(&mut stream, "MODIFIED", service("svc-b", "10.96.0.22", 13)).await;
                // Drop the connection mid-stream.
            }
            (true, _, 2) => {
                // The watcher resumes from 13; that is too old now.
                start_chunked(&mut stream).await;
                let gone = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Expired", "code": 410, "message": "too old resource version"});
                event(&mut stream, "ERROR", gone).await;
            }
            (false, _, _) => {
                // The relist: svc-a was deleted while the watch was down.
                let items = vec![
                    service("svc-b", "10.96.0.22", 13),
                    service("svc-new", "10.96.0.3", 11),
                    service("svc-c", "10.96.0.4", 19),
                ];
                respond_json(&mut stream, "200 OK", &list("ServiceList", 20, items)).await;
            }
            (true, _, _) => {
                start_chunked(&mut stream).await;
                event(&mut stream, "DELETED", service("svc-new", "10.96.0.3", 21)).await;
                tokio::time::sleep(hold).await;
            }
        }
    } else if target.starts_with("/apis/discovery.k8s.io/v1/endpointslices") {
        if watch {
            start_chunked(&mut stream).await;
            tokio::time::sleep(hold).await;
        } else {
            respond_json(&mut stream, "200 OK", &list("EndpointSliceList", 3, vec![])).await;
        }
    } else if target.starts_with("/api/v1/nodes") {
        if watch {
            start_chunked(&mut stream).await;
            tokio::time::sleep(hold).await;
        } else {
            // A slow list: the store must not be ready meanwhile.
            tokio::time::sleep(Duration::from_millis(800)).await;
            let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-a", "resourceVersion": "4"}});
            respond_json(&mut stream, "200 OK", &list("NodeList", 4, vec![node])).await;
        }
    } else {
        respond_json(
            &mut stream,
            "404 Not Found",
            &json!({"kind": "Status", "code": 404}),
        )
        .await;
    }
}

fn names(store: &api::Store) -> Vec<String> {
    store
        .snapshot()
        .services
        .keys()
        .map(|n| n.name.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_list_watch_recover_and_converge() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let server_seen = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(handle(stream, Arc::clone(&server_seen)));
        }
    });

    let config = kube::Config::new(format!("http://{addr}").parse().unwrap());
    let client = kube::Client::try_from(config).unwrap();
    let store = api::spawn(client, "node-a", None);

    // Services list at once, the Node list takes 800 ms: not ready yet.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!store.ready(), "ready before the Node list completed");

    let deadline = Instant::now() + Duration::from_secs(20);
    let want = vec!["svc-b".to_owned(), "svc-c".to_owned()];
    while Instant::now() < deadline && !(store.ready() && names(&store) == want) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(store.ready());
    assert_eq!(
        names(&store),
        want,
        "svc-a deleted during the outage, svc-new deleted by the watch"
    );
    let snapshot = store.snapshot();
    let b = snapshot
        .services
        .values()
        .find(|s| s.name.name == "svc-b")
        .unwrap();
    assert_eq!(
        b.cluster_ips,
        vec!["10.96.0.22".parse::<std::net::IpAddr>().unwrap()],
        "MODIFIED applied"
    );
    assert!(snapshot.node.is_some());
    // The sync loop's copy is brought up to date with what changed: all of
    // it the first time, nothing the second.
    let mut view = rvs_proxy::ClusterState::default();
    let changes = store.update_view(&mut view);
    assert_eq!(view, snapshot);
    assert!(changes.node);
    // Services that came and went since count too (a sync of a name
    // that is gone deletes what it had).
    assert!(
        ["svc-b", "svc-c", "svc-a", "svc-new"]
            .iter()
            .all(|n| changes.services.iter().any(|c| c.name == *n)),
        "{changes:?}"
    );
    assert!(store.update_view(&mut view).is_empty());

    let seen = seen.lock().unwrap();
    assert_eq!(
        seen.service_lists, 2,
        "one relist after 410 Gone: {:?}",
        seen.requests
    );
    assert!(seen.service_watches >= 3, "{:?}", seen.requests);
    let service_req = seen
        .requests
        .iter()
        .find(|r| r.starts_with("/api/v1/services?"))
        .unwrap();
    assert!(
        service_req.contains("labelSelector=%21service.kubernetes.io%2Fservice-proxy-name"),
        "{service_req}"
    );
    assert!(
        service_req.contains("fieldSelector=spec.clusterIP%21%3DNone"),
        "{service_req}"
    );
    let watch_req = seen
        .requests
        .iter()
        .find(|r| r.starts_with("/api/v1/services?") && r.contains("watch=true"))
        .unwrap();
    assert!(
        watch_req.contains("resourceVersion=10") && watch_req.contains("allowWatchBookmarks=true"),
        "{watch_req}"
    );
    let resumed = seen
        .requests
        .iter()
        .filter(|r| r.starts_with("/api/v1/services?") && r.contains("watch=true"))
        .nth(1)
        .unwrap();
    assert!(
        resumed.contains("resourceVersion=13"),
        "resumes after the bookmark and MODIFIED: {resumed}"
    );
    let node_req = seen
        .requests
        .iter()
        .find(|r| r.starts_with("/api/v1/nodes?"))
        .unwrap();
    assert!(
        node_req.contains("fieldSelector=metadata.name%3Dnode-a"),
        "{node_req}"
    );
}

#[test]
fn selectors_follow_kube_proxy() {
    assert_eq!(
        api::service_label_selector(None),
        "!service.kubernetes.io/service-proxy-name"
    );
    assert_eq!(
        api::service_label_selector(Some("rvs")),
        "service.kubernetes.io/service-proxy-name=rvs"
    );
    assert_eq!(api::SERVICE_FIELD_SELECTOR, "spec.clusterIP!=None");
    assert_eq!(
        api::slice_label_selector(),
        "!service.kubernetes.io/headless"
    );
}
