//! The TCP side of the forwarder.
//!
//! This module owns a TCP virtual service's life on one listener: accept
//! a client, ask the [`Balancer`] for a destination, connect (bounded in
//! time; on failure report it and reschedule to another destination, a
//! bounded number of times), then run the half-close-correct duplex copy
//! of [`crate::copy`] and report the flow's counters when it ends.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rvs_model::Protocol;
use socket2::{Domain, Protocol as SockProtocol, SockRef, Socket, Type};
use tokio::io::Interest;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use crate::copy::{CopyOptions, DuplexReport, duplex_then_close, estimate_segments};
use crate::{Balancer, Counters, Flow, ForwardError};

/// How TCP flows are forwarded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpOptions {
    /// How long one connection attempt to a destination may take.
    pub connect_timeout: Duration,
    /// How many destinations are tried for one flow (at least 1).
    pub max_attempts: usize,
    /// How bytes are copied.
    pub copy: CopyOptions,
}

impl Default for TcpOptions {
    fn default() -> TcpOptions {
        TcpOptions {
            connect_timeout: Duration::from_secs(3),
            max_attempts: 3,
            copy: CopyOptions::default(),
        }
    }
}

/// Connects a flow to a destination the balancer picks, rescheduling on
/// failure (each failed destination is reported with
/// [`Balancer::connect_failed`] and passed to the next `pick` as tried).
/// On success [`Balancer::opened`] has been called.
pub async fn connect_upstream<B: Balancer + ?Sized>(
    balancer: &B,
    flow: &Flow,
    opts: &TcpOptions,
) -> Result<(TcpStream, SocketAddr), ForwardError> {
    let mut tried: Vec<SocketAddr> = Vec::new();
    let mut last: Option<(SocketAddr, io::Error)> = None;
    for _ in 0..opts.max_attempts.max(1) {
        let Some(dest) = balancer.pick(flow, &tried) else {
            break;
        };
        let attempt = tokio::time::timeout(opts.connect_timeout, connect(dest)).await;
        let error = match attempt {
            Ok(Ok(stream)) => {
                balancer.opened(flow, dest);
                return Ok((stream, dest));
            }
            Ok(Err(e)) => e,
            Err(_) => io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no answer within {:?}", opts.connect_timeout),
            ),
        };
        tracing::debug!(%flow, %dest, error = %error, "connect to destination failed; rescheduling");
        balancer.connect_failed(flow, dest, &error);
        tried.push(dest);
        last = Some((dest, error));
    }
    match last {
        Some((dest, source)) => Err(ForwardError::ConnectFailed {
            flow: *flow,
            attempts: tried.len(),
            dest,
            source,
        }),
        None => Err(ForwardError::NoDestination { flow: *flow }),
    }
}

/// Connects to `dest` with `TCP_NODELAY` set before the handshake. As
/// HAProxy does, writability without an error or hang-up means connected:
/// `SO_ERROR` is read only to name a failure, not on every connect.
async fn connect(dest: SocketAddr) -> io::Result<TcpStream> {
    let sock = Socket::new(
        Domain::for_address(dest),
        Type::STREAM.nonblocking(),
        Some(SockProtocol::TCP),
    )?;
    if let Err(e) = sock.set_tcp_nodelay(true) {
        tracing::debug!(%dest, error = %e, "TCP_NODELAY refused");
    }
    match sock.connect(&dest.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(nix::libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    let stream = TcpStream::from_std(std::net::TcpStream::from(sock))?;
    let ready = stream.ready(Interest::WRITABLE | Interest::ERROR).await?;
    if ready.is_error() || ready.is_write_closed() {
        return Err(stream
            .take_error()?
            .unwrap_or_else(|| io::Error::from(io::ErrorKind::ConnectionRefused)));
    }
    Ok(stream)
}

/// Forwards one accepted client connection to completion and returns its
/// counters (also reported with [`Balancer::closed`]). When no
/// destination can be reached the client is reset.
pub async fn forward_connection<B: Balancer + ?Sized>(
    client: TcpStream,
    flow: Flow,
    balancer: &B,
    opts: &TcpOptions,
) -> Result<Counters, ForwardError> {
    let (upstream, dest) = match connect_upstream(balancer, &flow, opts).await {
        Ok(pair) => pair,
        Err(e) => {
            // A reset tells the client at once, as a refused SYN would.
            let _ = SockRef::from(&client).set_linger(Some(Duration::ZERO));
            return Err(e);
        }
    };
    let activity = balancer.watch(&flow, dest);
    let report = duplex_then_close(&client, &upstream, &opts.copy, activity.as_deref()).await;
    let counters = counters(&report, &client, &upstream);
    // The close sends the FIN the copy left to it (see duplex_then_close).
    drop((client, upstream));
    balancer.closed(&flow, dest, &counters);
    tracing::trace!(%flow, %dest, ?counters, "TCP flow closed");
    match report.error {
        Some(source) => Err(ForwardError::Io {
            context: format!("{flow}: copying to and from {dest}"),
            source,
        }),
        None => Ok(counters),
    }
}

/// The smallest MSS IPv4 allows: up to this many bytes fit one segment
/// whatever the socket's MSS, so short flows skip the `getsockopt`.
const MIN_MSS: u64 = 536;

fn counters(report: &DuplexReport, client: &TcpStream, upstream: &TcpStream) -> Counters {
    let segments = |bytes: u64, s: &TcpStream| {
        if bytes <= MIN_MSS {
            u64::from(bytes > 0)
        } else {
            estimate_segments(bytes, SockRef::from(s).tcp_mss().unwrap_or(1460))
        }
    };
    Counters {
        in_bytes: report.inbound.bytes,
        out_bytes: report.outbound.bytes,
        in_packets: segments(report.inbound.bytes, client),
        out_packets: segments(report.outbound.bytes, upstream),
    }
}

/// Accepts on `listener` and forwards every connection (a task each)
/// until `shutdown` completes; then stops accepting and aborts the
/// connections still open. The virtual address of each flow is the
/// accepted socket's local address.
pub async fn serve_tcp<B: Balancer + ?Sized>(
    listener: TcpListener,
    balancer: Arc<B>,
    opts: TcpOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ForwardError> {
    let bound = listener
        .local_addr()
        .map_err(ForwardError::io("read the TCP listener's address"))?;
    // Accepted sockets inherit TCP_NODELAY from their listener (Linux
    // copies the listening socket's TCP state into each child and keeps
    // `nonagle`), saving a setsockopt per connection.
    if let Err(e) = SockRef::from(&listener).set_tcp_nodelay(true) {
        tracing::debug!(listener = %bound, error = %e, "TCP_NODELAY refused on the listener");
    }
    let opts = Arc::new(opts);
    let mut conns = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        while conns.try_join_next().is_some() {}
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let (client, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Out of descriptors, aborted handshakes: pause, go on.
                tracing::warn!(listener = %bound, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        // A listener on one address needs no getsockname per connection.
        let vip = if bound.ip().is_unspecified() {
            client.local_addr().unwrap_or(bound)
        } else {
            bound
        };
        let flow = Flow {
            protocol: Protocol::Tcp,
            client: peer,
            vip,
        };
        let balancer = Arc::clone(&balancer);
        let opts = Arc::clone(&opts);
        conns.spawn(async move {
            if let Err(e) = forward_connection(client, flow, &*balancer, &opts).await {
                tracing::debug!(error = %e, "TCP flow ended with an error");
            }
        });
    }
    tracing::debug!(listener = %bound, open = conns.len(), "TCP listener stopping");
    conns.shutdown().await;
    Ok(())
}
