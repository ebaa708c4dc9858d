//! Synthetic clusters for the benches: N Services, each with one port and
//! one EndpointSlice of [`ENDPOINTS`] endpoints, as `kubectl get -o json`
//! prints a List, and the bench settings that size them.

/// Endpoints per Service.
pub(crate) const ENDPOINTS: usize = 10;

/// The endpoint a change measurement adds to the last Service.
pub(crate) const NEW_ENDPOINT: &str = "10.99.0.1";

/// Endpoint `j` of Service `i`.
pub(crate) fn endpoint(i: usize, j: usize) -> String {
    format!("10.{}.{}.{}", 100 + j, i / 256, i % 256)
}

/// Services `range` with cluster IPs from `vip` (with the Node `node-a`
/// when `node`); `extra` adds [`NEW_ENDPOINT`] to every slice.
pub(crate) fn manifests(
    range: std::ops::Range<usize>,
    node: bool,
    extra: bool,
    vip: impl Fn(usize) -> String,
) -> String {
    let mut items = Vec::new();
    if node {
        items.push(r#"{"kind":"Node","metadata":{"name":"node-a"}}"#.to_owned());
    }
    for i in range {
        items.push(format!(
            r#"{{"kind":"Service","metadata":{{"name":"s{i}","namespace":"bench"}},"spec":{{"clusterIP":"{}","ports":[{{"name":"http","port":80}}]}}}}"#,
            vip(i)
        ));
        let mut endpoints: Vec<String> = (0..ENDPOINTS)
            .map(|j| format!(r#"{{"addresses":["{}"]}}"#, endpoint(i, j)))
            .collect();
        if extra {
            endpoints.push(format!(r#"{{"addresses":["{NEW_ENDPOINT}"]}}"#));
        }
        items.push(format!(
            r#"{{"kind":"EndpointSlice","metadata":{{"name":"s{i}-1","namespace":"bench","labels":{{"kubernetes.io/service-name":"s{i}"}}}},"addressType":"IPv4","ports":[{{"name":"http","port":8080,"protocol":"TCP"}}],"endpoints":[{}]}}"#,
            endpoints.join(",")
        ));
    }
    format!(
        r#"{{"apiVersion":"v1","kind":"List","items":[{}]}}"#,
        items.join(",\n")
    )
}

/// Cluster sizes to measure: `RVS_BENCH_SIZES` (comma-separated), by
/// default 1,000 and 10,000 Services.
pub(crate) fn sizes() -> Vec<usize> {
    std::env::var("RVS_BENCH_SIZES")
        .unwrap_or_else(|_| "1000,10000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect()
}

/// A count from environment variable `name`, else `default`.
pub(crate) fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}
