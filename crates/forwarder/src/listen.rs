//! Listening sockets on virtual addresses.
//!
//! This module owns how the forwarder binds a VIP:port: `SO_REUSEPORT`
//! (so several worker runtimes or threads each accept on their own socket
//! and the kernel spreads connections and datagrams between them),
//! `SO_REUSEADDR`, `IPV6_V6ONLY` for IPv6, optionally `IP_FREEBIND` to
//! bind an address not (yet) configured on the host, and non-blocking
//! mode for tokio. Binding addresses in 127.0.0.0/8 or `::1` needs no
//! privileges.

use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

use crate::ForwardError;

/// How to bind a listening socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListenOptions {
    /// Set `SO_REUSEPORT` (several sockets on one address and port).
    pub reuse_port: bool,
    /// Set `IP_FREEBIND`/`IPV6_FREEBIND` (bind an address the host does
    /// not have).
    pub freebind: bool,
    /// The TCP accept backlog.
    pub backlog: i32,
}

impl Default for ListenOptions {
    fn default() -> ListenOptions {
        ListenOptions {
            reuse_port: true,
            freebind: false,
            backlog: 1024,
        }
    }
}

fn socket(
    addr: SocketAddr,
    ty: Type,
    proto: Protocol,
    opts: ListenOptions,
) -> Result<Socket, ForwardError> {
    let what = if ty == Type::STREAM { "TCP" } else { "UDP" };
    let ctx = |step: &str| format!("{step} for {what} listener {addr}");
    let sock = Socket::new(Domain::for_address(addr), ty, Some(proto))
        .map_err(ForwardError::io(ctx("create socket")))?;
    sock.set_reuse_address(true)
        .map_err(ForwardError::io(ctx("set SO_REUSEADDR")))?;
    if opts.reuse_port {
        sock.set_reuse_port(true)
            .map_err(ForwardError::io(ctx("set SO_REUSEPORT")))?;
    }
    if addr.is_ipv6() {
        sock.set_only_v6(true)
            .map_err(ForwardError::io(ctx("set IPV6_V6ONLY")))?;
    }
    if opts.freebind {
        let set = if addr.is_ipv6() {
            sock.set_freebind_v6(true)
        } else {
            sock.set_freebind_v4(true)
        };
        set.map_err(ForwardError::io(ctx("set IP_FREEBIND")))?;
    }
    sock.set_nonblocking(true)
        .map_err(ForwardError::io(ctx("set O_NONBLOCK")))?;
    sock.bind(&addr.into())
        .map_err(ForwardError::io(ctx("bind")))?;
    Ok(sock)
}

/// A non-blocking TCP listener on `addr`, ready for
/// [`tokio::net::TcpListener::from_std`].
pub fn tcp_listener(
    addr: SocketAddr,
    opts: ListenOptions,
) -> Result<std::net::TcpListener, ForwardError> {
    let sock = socket(addr, Type::STREAM, Protocol::TCP, opts)?;
    sock.listen(opts.backlog)
        .map_err(ForwardError::io(format!("listen on TCP {addr}")))?;
    Ok(sock.into())
}

/// A non-blocking UDP socket bound to `addr`, ready for
/// [`tokio::net::UdpSocket::from_std`].
pub fn udp_socket(
    addr: SocketAddr,
    opts: ListenOptions,
) -> Result<std::net::UdpSocket, ForwardError> {
    Ok(socket(addr, Type::DGRAM, Protocol::UDP, opts)?.into())
}

/// A tokio TCP listener on `addr` (must be called inside a runtime).
pub fn tokio_tcp_listener(
    addr: SocketAddr,
    opts: ListenOptions,
) -> Result<tokio::net::TcpListener, ForwardError> {
    tokio::net::TcpListener::from_std(tcp_listener(addr, opts)?).map_err(ForwardError::io(format!(
        "register TCP listener {addr} with tokio"
    )))
}

/// A tokio UDP socket on `addr` (must be called inside a runtime).
pub fn tokio_udp_socket(
    addr: SocketAddr,
    opts: ListenOptions,
) -> Result<tokio::net::UdpSocket, ForwardError> {
    tokio::net::UdpSocket::from_std(udp_socket(addr, opts)?).map_err(ForwardError::io(format!(
        "register UDP socket {addr} with tokio"
    )))
}
