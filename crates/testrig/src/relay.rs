//! A TCP relay on loopback that a test can cut and restore.
//!
//! This module owns [`Relay`]: it listens on `127.0.0.1:0` and pipes every
//! connection to a target address, byte for byte (TLS passes through
//! untouched). [`Relay::cut`] disconnects a client from its server without
//! stopping either — every relayed connection is shut down and new ones
//! are closed as soon as they are accepted — until [`Relay::restore`].
//! Tests put one between rvs-proxy and kube-apiserver to change objects
//! while rvs-proxy cannot see them (and so to make it resume or relist).

use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crate::RigError;

/// How long connecting to the target may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug)]
struct Inner {
    target: SocketAddr,
    cut: AtomicBool,
    stop: AtomicBool,
    relayed: AtomicUsize,
    refused: AtomicUsize,
    /// Both ends of every relayed connection, to shut down on a cut.
    open: Mutex<Vec<TcpStream>>,
}

impl Inner {
    fn shut_all(&self) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        for stream in open.drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

/// A relay from a loopback port to a target; stops when dropped.
#[derive(Debug)]
pub struct Relay {
    addr: SocketAddr,
    inner: Arc<Inner>,
    acceptor: Option<JoinHandle<()>>,
}

impl Relay {
    /// Listens on `127.0.0.1:0` and relays to `target`.
    pub fn start(target: SocketAddr) -> Result<Relay, RigError> {
        Relay::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), target)
    }

    /// Listens on `listen` (an address of this network namespace; port 0
    /// for any) and relays to `target`.
    pub fn start_on(listen: SocketAddr, target: SocketAddr) -> Result<Relay, RigError> {
        let listener = TcpListener::bind(listen)
            .map_err(RigError::io(format!("bind the relay on {listen}")))?;
        let addr = listener
            .local_addr()
            .map_err(RigError::io("read the relay's address"))?;
        let inner = Arc::new(Inner {
            target,
            cut: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            relayed: AtomicUsize::new(0),
            refused: AtomicUsize::new(0),
            open: Mutex::new(Vec::new()),
        });
        let shared = Arc::clone(&inner);
        let acceptor = thread::Builder::new()
            .name("rvs-relay".into())
            .spawn(move || accept(&listener, &shared))
            .map_err(RigError::io("start the relay thread"))?;
        Ok(Relay {
            addr,
            inner,
            acceptor: Some(acceptor),
        })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://127.0.0.1:PORT`: the relay as a URL for TLS clients.
    pub fn https_url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Disconnects: shuts down every relayed connection, and closes new
    /// ones at once, until [`Relay::restore`].
    pub fn cut(&self) {
        self.inner.cut.store(true, Ordering::SeqCst);
        self.inner.shut_all();
    }

    /// Relays new connections again.
    pub fn restore(&self) {
        self.inner.cut.store(false, Ordering::SeqCst);
    }

    /// Connections relayed so far.
    pub fn relayed(&self) -> usize {
        self.inner.relayed.load(Ordering::SeqCst)
    }

    /// Connections closed unrelayed (while cut, or the target refused).
    pub fn refused(&self) -> usize {
        self.inner.refused.load(Ordering::SeqCst)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.inner.stop.store(true, Ordering::SeqCst);
        self.inner.shut_all();
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(500));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

fn accept(listener: &TcpListener, inner: &Arc<Inner>) {
    for conn in listener.incoming() {
        if inner.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = conn else { continue };
        if inner.cut.load(Ordering::SeqCst) {
            inner.refused.fetch_add(1, Ordering::SeqCst);
            let _ = client.shutdown(Shutdown::Both);
            continue;
        }
        match relay(client, inner) {
            Ok(()) => {
                inner.relayed.fetch_add(1, Ordering::SeqCst);
            }
            Err(_) => {
                inner.refused.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
}

/// Connects to the target and starts copying both ways.
fn relay(client: TcpStream, inner: &Arc<Inner>) -> io::Result<()> {
    let server = TcpStream::connect_timeout(&inner.target, CONNECT_TIMEOUT)?;
    {
        let mut open = inner.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.push(client.try_clone()?);
        open.push(server.try_clone()?);
    }
    // A cut that came while connecting also ends this connection.
    if inner.cut.load(Ordering::SeqCst) {
        inner.shut_all();
    }
    let (client_r, server_r) = (client.try_clone()?, server.try_clone()?);
    thread::Builder::new()
        .name("rvs-relay-up".into())
        .spawn(move || pipe(client_r, server))?;
    thread::Builder::new()
        .name("rvs-relay-down".into())
        .spawn(move || pipe(server_r, client))?;
    Ok(())
}

/// Copies `from` to `to` until either ends, then passes the end on.
fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let _ = io::copy(&mut from, &mut to);
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Write};

    use super::*;
    use crate::backend::{Backend, ask_once};

    #[test]
    fn relays_until_cut_and_again_after_restore() {
        let backend = Backend::tcp("127.0.0.1:0".parse().unwrap(), "echo").unwrap();
        let relay = Relay::start(backend.addr()).unwrap();
        let step = Duration::from_secs(5);
        assert_eq!(ask_once(relay.addr(), step).unwrap(), "echo");

        // A connection held open across the cut is shut down by it.
        let held = TcpStream::connect(relay.addr()).unwrap();
        held.set_read_timeout(Some(step)).unwrap();
        let mut reader = BufReader::new(held.try_clone().unwrap());
        (&held).write_all(b"who\n").unwrap();
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert_eq!(line, "echo\n");
        relay.cut();
        line.clear();
        assert_eq!(reader.read_line(&mut line).unwrap_or(0), 0, "{line:?}");
        assert!(ask_once(relay.addr(), step).is_err());
        assert!(relay.refused() >= 1);

        relay.restore();
        assert_eq!(ask_once(relay.addr(), step).unwrap(), "echo");
        assert_eq!(relay.relayed(), 3);
    }
}
