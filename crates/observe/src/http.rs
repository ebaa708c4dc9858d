//! The HTTP servers: `/metrics` on the metrics address, `/healthz` and
//! `/livez` on the healthz address, each a small hyper HTTP/1 server
//! spawned on the caller's tokio runtime, so the synchronous sync loop
//! only holds a [`Running`] handle.

use std::convert::Infallible;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use socket2::{Domain, Socket, Type};
use tokio::sync::oneshot;
use tokio::task::JoinSet;

use crate::service_health::ServiceHealthServer;
use crate::{HealthState, Metrics, ObserveError};

/// One reply of a handler.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) content_type: &'static str,
    pub(crate) body: String,
    /// `X-Load-Balancing-Endpoint-Weight`: the health check node port's
    /// count of local endpoints, which load balancers may weigh nodes by.
    pub(crate) endpoint_weight: Option<usize>,
}

impl Reply {
    fn json(status: u16, body: String) -> Reply {
        Reply {
            status,
            content_type: "application/json",
            body,
            endpoint_weight: None,
        }
    }

    fn text(status: u16, body: &str) -> Reply {
        Reply {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.to_owned(),
            endpoint_weight: None,
        }
    }

    fn not_found() -> Reply {
        Reply::text(404, "404 page not found\n")
    }
}

/// Answers a request path.
pub(crate) type Handler = Arc<dyn Fn(&str) -> Reply + Send + Sync>;

fn response(reply: Reply) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(reply.body)));
    *resp.status_mut() =
        StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = resp.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(reply.content_type));
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    if let Some(weight) = reply.endpoint_weight {
        headers.insert(
            "x-load-balancing-endpoint-weight",
            HeaderValue::from(weight),
        );
    }
    resp
}

/// Opens a listening socket. `0.0.0.0` listens on every IPv4 and IPv6
/// address where the host has IPv6, as Go (and so kube-proxy) does.
pub(crate) fn bind(addr: SocketAddr, what: &str) -> Result<std::net::TcpListener, ObserveError> {
    let err = |error| ObserveError::Listen {
        addr,
        what: what.to_owned(),
        error,
    };
    if addr.ip() == Ipv4Addr::UNSPECIFIED {
        let any6 = SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), addr.port());
        if let Ok(l) = listen(any6, Some(false)) {
            return Ok(l);
        }
    }
    listen(addr, None).map_err(err)
}

/// Opens a listening socket on exactly `addr`: `0.0.0.0` is IPv4 only
/// and `::` IPv6 only, as Go listens on `tcp4` and `tcp6`.
pub(crate) fn bind_exact(
    addr: SocketAddr,
    what: &str,
) -> Result<std::net::TcpListener, ObserveError> {
    listen(addr, addr.is_ipv6().then_some(true)).map_err(|error| ObserveError::Listen {
        addr,
        what: what.to_owned(),
        error,
    })
}

fn listen(addr: SocketAddr, only_v6: Option<bool>) -> std::io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    if let Some(v6) = only_v6 {
        socket.set_only_v6(v6)?;
    }
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Serves `handler` on `listener` until `stop` fires or is dropped; then
/// closes the listener and every open connection.
pub(crate) async fn run_server(
    listener: std::net::TcpListener,
    handler: Handler,
    mut stop: oneshot::Receiver<()>,
    what: String,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(server = what, error = %e, "cannot serve");
            return;
        }
    };
    let mut conns = JoinSet::new();
    loop {
        while conns.try_join_next().is_some() {}
        let accepted = tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(server = what, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let handler = Arc::clone(&handler);
        conns.spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let reply = handler(req.uri().path());
                async move { Ok::<_, Infallible>(response(reply)) }
            });
            // half_close: a client that shuts down its sending side after
            // its request still gets the answer, as from Go's net/http.
            let _ = hyper::server::conn::http1::Builder::new()
                .half_close(true)
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(30))
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
    tracing::debug!(server = what, "closed");
}

/// Binds `addr` and serves `handler` until `stop`. Binding failures are
/// retried every `retry`, as kube-proxy does when
/// `bindAddressHardFail` is off, so a port still held by a terminating
/// kube-proxy is taken over once it is free.
async fn bind_and_serve(
    addr: SocketAddr,
    handler: Handler,
    mut stop: oneshot::Receiver<()>,
    what: String,
    retry: Duration,
) {
    loop {
        match bind(addr, &what) {
            Ok(listener) => {
                tracing::info!(server = what, address = %addr, "serving");
                return run_server(listener, handler, stop, what).await;
            }
            Err(e) => {
                tracing::warn!(server = what, error = %e, retry_in_ms = retry.as_millis() as u64, "cannot listen yet");
            }
        }
        tokio::select! {
            _ = &mut stop => return,
            () = tokio::time::sleep(retry) => {}
        }
    }
}

/// A bind address flag's value that is not an address.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not an address such as 0.0.0.0:{default_port}")]
pub struct BadBindAddress {
    /// What was given.
    pub text: String,
    /// The port a bare IP gets.
    pub default_port: u16,
}

/// A `--metrics-bind-address` / `--healthz-bind-address` value, as
/// kube-proxy reads it: `IP:PORT`, `[IPv6]:PORT`, a bare IP (which gets
/// `default_port`), or empty (`None`: the server is off).
pub fn parse_bind_address(
    text: &str,
    default_port: u16,
) -> Result<Option<SocketAddr>, BadBindAddress> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(Some(addr));
    }
    match text.parse::<std::net::IpAddr>() {
        Ok(ip) => Ok(Some(SocketAddr::new(ip, default_port))),
        Err(_) => Err(BadBindAddress {
            text: text.to_owned(),
            default_port,
        }),
    }
}

/// Where to serve; `None` turns a server off (kube-proxy: an empty
/// `--metrics-bind-address` / `--healthz-bind-address`).
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// `/metrics` (kube-proxy default `127.0.0.1:10249`).
    pub metrics_addr: Option<SocketAddr>,
    /// `/healthz` and `/livez` (kube-proxy default `0.0.0.0:10256`).
    pub healthz_addr: Option<SocketAddr>,
    /// What `/proxyMode` on the metrics address answers (`ipvs`).
    pub proxy_mode: String,
    /// kube-proxy's `bindAddressHardFail`: an address that cannot be
    /// bound is an error from [`serve`] instead of being retried every
    /// [`ServeOptions::bind_retry`] in the background.
    pub bind_hard_fail: bool,
    /// How long to wait before trying a busy address again (kube-proxy:
    /// 5 s).
    pub bind_retry: Duration,
}

impl Default for ServeOptions {
    fn default() -> ServeOptions {
        ServeOptions {
            metrics_addr: Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 10249))),
            healthz_addr: Some(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 10256))),
            proxy_mode: "ipvs".to_owned(),
            bind_hard_fail: false,
            bind_retry: Duration::from_secs(5),
        }
    }
}

/// The running servers. Dropping it (or [`Running::stop`]) closes them.
#[derive(Debug)]
pub struct Running {
    runtime: tokio::runtime::Handle,
    /// Dropping a sender stops its server (and its connections).
    stops: Vec<oneshot::Sender<()>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    metrics_addr: Option<SocketAddr>,
    healthz_addr: Option<SocketAddr>,
    health: HealthState,
}

/// Starts the metrics and healthz servers as tasks on `runtime`.
///
/// Each address is bound before this returns when it can be; one that
/// cannot is an error with [`ServeOptions::bind_hard_fail`], else it is
/// logged and retried every [`ServeOptions::bind_retry`] in the
/// background.
pub fn serve(
    options: &ServeOptions,
    metrics: &Metrics,
    health: &HealthState,
    runtime: &tokio::runtime::Handle,
) -> Result<Running, ObserveError> {
    let first_bind = |addr: Option<SocketAddr>, what: &str| -> Result<_, ObserveError> {
        let Some(addr) = addr else {
            return Ok(None);
        };
        match bind(addr, what) {
            Ok(l) => Ok(Some(Ok(l))),
            Err(e) if options.bind_hard_fail => Err(e),
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen yet; retrying in the background");
                Ok(Some(Err(addr)))
            }
        }
    };
    let metrics_listener = first_bind(options.metrics_addr, "metrics")?;
    let healthz_listener = first_bind(options.healthz_addr, "healthz")?;
    let local = |l: &Option<Result<std::net::TcpListener, SocketAddr>>| {
        l.as_ref()
            .and_then(|l| l.as_ref().ok())
            .and_then(|l| l.local_addr().ok())
    };
    let metrics_addr = local(&metrics_listener);
    let healthz_addr = local(&healthz_listener);

    let handle = runtime.clone();
    let mut server_stops = Vec::new();
    let mut tasks = Vec::new();
    let mut start = |listener: Option<Result<std::net::TcpListener, SocketAddr>>,
                     handler: Handler,
                     what: &str| {
        let Some(listener) = listener else { return };
        let (tx, rx) = oneshot::channel();
        server_stops.push(tx);
        match listener {
            Ok(l) => {
                tracing::info!(server = what, address = ?l.local_addr().ok(), "serving");
                tasks.push(handle.spawn(run_server(l, handler, rx, what.to_owned())));
            }
            Err(addr) => {
                tasks.push(handle.spawn(bind_and_serve(
                    addr,
                    handler,
                    rx,
                    what.to_owned(),
                    options.bind_retry,
                )));
            }
        }
    };
    let m = metrics.clone();
    let mode = options.proxy_mode.clone();
    let metrics_handler: Handler = Arc::new(move |path| match path {
        "/metrics" => Reply {
            status: 200,
            content_type: "application/openmetrics-text; version=1.0.0; charset=utf-8",
            body: m.encode(),
            endpoint_weight: None,
        },
        "/healthz" => Reply::text(200, "ok"),
        "/proxyMode" => Reply::text(200, &mode),
        _ => Reply::not_found(),
    });
    start(metrics_listener, metrics_handler, "metrics");
    let m = metrics.clone();
    let h = health.clone();
    let healthz_handler: Handler = Arc::new(move |path| match path {
        "/healthz" => {
            let r = h.healthz_at(SystemTime::now());
            m.healthz_served(r.status);
            Reply::json(r.status, r.body)
        }
        "/livez" => {
            let r = h.livez_at(SystemTime::now());
            m.livez_served(r.status);
            Reply::json(r.status, r.body)
        }
        _ => Reply::not_found(),
    });
    start(healthz_listener, healthz_handler, "healthz");
    Ok(Running {
        runtime: handle,
        stops: server_stops,
        tasks,
        metrics_addr,
        healthz_addr,
        health: health.clone(),
    })
}

impl Running {
    /// The metrics server's bound address, if it is listening (`None`
    /// while a busy address is being retried).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The healthz server's bound address, if it is listening.
    pub fn healthz_addr(&self) -> Option<SocketAddr> {
        self.healthz_addr
    }

    /// A manager of per-Service health check node port servers on this
    /// runtime, listening on exactly `addresses` (`0.0.0.0`: every IPv4
    /// address, `::` every IPv6 one, as kube-proxy's proxier of each
    /// family listens; empty: every address of both families on one
    /// socket), answering from the health given to [`serve`].
    pub fn service_health(&self, addresses: Vec<std::net::IpAddr>) -> ServiceHealthServer {
        ServiceHealthServer::new(self.runtime.clone(), addresses, self.health.clone())
    }

    /// Closes every server; outside the runtime, also waits (up to a
    /// second) until they have let their sockets go.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stops.clear();
        let tasks = std::mem::take(&mut self.tasks);
        if tasks.is_empty() || tokio::runtime::Handle::try_current().is_ok() {
            // Inside the runtime a blocking wait could stall it: the
            // servers stop on their own.
            return;
        }
        self.runtime.block_on(async move {
            let all = async {
                for task in tasks {
                    let _ = task.await;
                }
            };
            let _ = tokio::time::timeout(Duration::from_secs(1), all).await;
        });
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn bind_addresses_parse_as_kube_proxy_reads_them() {
        use super::parse_bind_address as p;
        assert_eq!(p("", 10249), Ok(None));
        assert_eq!(p("127.0.0.1:1", 9), Ok(Some(([127, 0, 0, 1], 1).into())));
        assert_eq!(p("0.0.0.0", 10256), Ok(Some(([0, 0, 0, 0], 10256).into())));
        assert_eq!(p("[::1]:5", 9).unwrap().unwrap().port(), 5);
        assert_eq!(
            p("nope", 10249).unwrap_err().to_string(),
            "\"nope\" is not an address such as 0.0.0.0:10249"
        );
    }
}
