//! Loopback backends for userspace end-to-end tests.
//!
//! This module owns small real servers that tests put behind a virtual
//! service: a TCP server that answers every connection with its name
//! (after reading one line, so a held-open connection can also be probed
//! later with [`Probe`]), and a UDP server that answers every datagram
//! with its name. They run on threads, bind only the loopback address
//! they are given, and stop when dropped. The clients that ask them (and
//! [`http_get`], for the HTTP servers under test) live here too.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use crate::RigError;

fn io_err(context: String) -> impl FnOnce(io::Error) -> RigError {
    move |source| RigError::Io { context, source }
}

/// A backend server; stops when dropped.
#[derive(Debug)]
pub struct Backend {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    served: Arc<AtomicUsize>,
    udp: bool,
}

impl Backend {
    /// A TCP backend on `addr`: for every line a client sends it answers
    /// `NAME\n`, until the client closes.
    pub fn tcp(addr: SocketAddr, name: &str) -> Result<Backend, RigError> {
        let listener =
            TcpListener::bind(addr).map_err(io_err(format!("bind TCP backend {addr}")))?;
        let addr = listener
            .local_addr()
            .map_err(io_err(format!("read TCP backend address {addr}")))?;
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicUsize::new(0));
        let (s, n, name) = (Arc::clone(&stop), Arc::clone(&served), format!("{name}\n"));
        thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                n.fetch_add(1, Ordering::SeqCst);
                let name = name.clone();
                thread::spawn(move || serve_lines(conn, &name));
            }
        });
        Ok(Backend {
            addr,
            stop,
            served,
            udp: false,
        })
    }

    /// A UDP backend on `addr` answering each datagram with `NAME`.
    pub fn udp(addr: SocketAddr, name: &str) -> Result<Backend, RigError> {
        let socket = UdpSocket::bind(addr).map_err(io_err(format!("bind UDP backend {addr}")))?;
        let addr = socket
            .local_addr()
            .map_err(io_err(format!("read UDP backend address {addr}")))?;
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .map_err(io_err(format!("set UDP backend timeout {addr}")))?;
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicUsize::new(0));
        let (s, n, name) = (Arc::clone(&stop), Arc::clone(&served), name.to_owned());
        thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !s.load(Ordering::SeqCst) {
                if let Ok((_, peer)) = socket.recv_from(&mut buf) {
                    n.fetch_add(1, Ordering::SeqCst);
                    let _ = socket.send_to(name.as_bytes(), peer);
                }
            }
        });
        Ok(Backend {
            addr,
            stop,
            served,
            udp: true,
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections (TCP) or datagrams (UDP) served so far.
    pub fn served(&self) -> usize {
        self.served.load(Ordering::SeqCst)
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if !self.udp {
            // Wake the accept loop so it sees the flag.
            let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
        }
    }
}

fn serve_lines(conn: TcpStream, name: &str) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    let Ok(mut writer) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(conn);
    let mut line = String::new();
    while matches!(reader.read_line(&mut line), Ok(n) if n > 0) {
        if writer.write_all(name.as_bytes()).is_err() {
            return;
        }
        line.clear();
    }
}

/// A client connection kept open to ask again later.
#[derive(Debug)]
pub struct Probe {
    stream: BufReader<TcpStream>,
}

impl Probe {
    /// Connects to `addr` (bounded by `timeout`).
    pub fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<Probe> {
        let stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        Ok(Probe {
            stream: BufReader::new(stream),
        })
    }

    /// Connects to `addr` up to `attempts` times until a connection is
    /// answered by backend `name`, and returns that one, held open (for
    /// tests that drain or remove a backend under an open connection).
    pub fn connect_to(
        addr: SocketAddr,
        name: &str,
        attempts: usize,
        timeout: Duration,
    ) -> io::Result<Option<Probe>> {
        for _ in 0..attempts {
            let mut probe = Probe::connect(addr, timeout)?;
            if probe.ask()? == name {
                return Ok(Some(probe));
            }
        }
        Ok(None)
    }

    /// Sends one line and returns the backend's name.
    pub fn ask(&mut self) -> io::Result<String> {
        self.stream.get_mut().write_all(b"who\n")?;
        let mut line = String::new();
        if self.stream.read_line(&mut line)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed",
            ));
        }
        Ok(line.trim_end().to_owned())
    }
}

/// One request on a new connection: the name of the backend that served it.
pub fn ask_once(addr: SocketAddr, timeout: Duration) -> io::Result<String> {
    Probe::connect(addr, timeout)?.ask()
}

/// [`ask_once`], retried every 20 ms until it answers (a listener that is
/// still starting) or `timeout` has passed; then the last error.
pub fn ask_until_up(addr: SocketAddr, timeout: Duration) -> io::Result<String> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match ask_once(addr, timeout) {
            Ok(name) => return Ok(name),
            Err(e) if std::time::Instant::now() >= deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// What an HTTP server answered to [`http_get`].
#[derive(Clone, Debug)]
pub struct HttpReply {
    /// The status code.
    pub status: u16,
    /// The header lines after the status line, lowercased.
    pub headers: String,
    /// The body.
    pub body: String,
}

/// `GET PATH` over HTTP/1.1 on a new connection (`Connection: close`),
/// each step bounded by `timeout`; the answer read to its end.
pub fn http_get(addr: SocketAddr, path: &str, timeout: Duration) -> io::Result<HttpReply> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    let invalid =
        |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("{what}: {text:?}"));
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| invalid("no end of the header"))?;
    let (status_line, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| invalid("no status code"))?;
    Ok(HttpReply {
        status,
        headers: headers.to_ascii_lowercase(),
        body: body.to_owned(),
    })
}

/// One UDP datagram from `from` to `addr`: the name that answered.
pub fn ask_udp(from: SocketAddr, addr: SocketAddr, timeout: Duration) -> io::Result<String> {
    let socket = UdpSocket::bind(from)?;
    socket.set_read_timeout(Some(timeout))?;
    socket.send_to(b"who", addr)?;
    let mut buf = [0u8; 512];
    let (n, _) = socket.recv_from(&mut buf)?;
    let mut text = String::new();
    buf.get(..n).unwrap_or_default().read_to_string(&mut text)?;
    Ok(text)
}
