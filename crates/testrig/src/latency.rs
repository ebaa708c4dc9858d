//! Connect latency as a client sees it: the time from `connect()` to a
//! Service's address until the first byte from the backend arrives
//! (through whatever rewrites or relays it: iptables, nftables, IPVS, a
//! socket-level balancer or a userspace proxy, which completes the
//! client's handshake itself before it reaches a backend, so the
//! handshake alone would not compare), one connection after another,
//! each closed with a reset so that no TIME_WAIT piles up. Bounded in
//! count and in time.
//!
//! [`serve`] is the other side: accept, write one byte, close; as cheap a
//! backend as there is, for backends in pod namespaces.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

/// What [`measure`] saw.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Latencies {
    /// Each connection's time from `connect()` to the backend's first
    /// byte, µs, in the order made.
    pub micros: Vec<u64>,
    /// Connections refused, timed out, closed without a byte or failed
    /// otherwise.
    pub failed: usize,
    /// Whether the time bound ended the run before `count` connects.
    pub cut_short: bool,
}

impl Latencies {
    /// The `p`-th percentile (0–100, nearest rank) of the completed
    /// connects, µs.
    pub fn percentile(&self, p: f64) -> Option<u64> {
        if self.micros.is_empty() {
            return None;
        }
        let mut v = self.micros.clone();
        v.sort_unstable();
        let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
        v.get(rank.clamp(1, v.len()) - 1).copied()
    }
}

/// Makes `count` connections, the `k`-th to `targets[k % len]`, each
/// allowed `timeout`, stopping early after `bound` in all.
pub fn measure(
    targets: &[SocketAddr],
    count: usize,
    timeout: Duration,
    bound: Duration,
) -> Latencies {
    let mut out = Latencies::default();
    if targets.is_empty() {
        return out;
    }
    let started = Instant::now();
    for k in 0..count {
        if started.elapsed() >= bound {
            out.cut_short = true;
            break;
        }
        let target = targets[k % targets.len()];
        let t0 = Instant::now();
        match first_byte(target, timeout) {
            Ok(stream) => {
                out.micros
                    .push(u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX));
                reset(&stream);
            }
            Err(_) => out.failed += 1,
        }
    }
    out
}

/// Connects to `target` and reads the backend's first byte.
fn first_byte(target: SocketAddr, timeout: Duration) -> std::io::Result<TcpStream> {
    let mut stream = TcpStream::connect_timeout(&target, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    let mut byte = [0u8; 1];
    stream.read_exact(&mut byte)?;
    Ok(stream)
}

/// Closes `stream` with a reset (SO_LINGER 0): the client keeps no
/// TIME_WAIT, so thousands of connects do not run out of ports.
fn reset(stream: &TcpStream) {
    let linger = nix::libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // A failure only leaves a TIME_WAIT behind.
    let _ =
        nix::sys::socket::setsockopt(&stream.as_fd(), nix::sys::socket::sockopt::Linger, &linger);
}

/// Accepts connections on `listener`, writes one byte to each and closes
/// it, until `bound` has passed (checked at each connection) or accepting
/// fails. Returns the number accepted.
pub fn serve(listener: &TcpListener, bound: Duration) -> usize {
    let started = Instant::now();
    let mut accepted = 0;
    while started.elapsed() < bound {
        match listener.accept() {
            Ok((mut stream, _)) => {
                accepted += 1;
                // A client gone already is its own business.
                let _ = stream.write_all(b"x");
            }
            Err(_) => break,
        }
    }
    accepted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connects_to_a_loopback_listener_are_timed_and_refusals_counted() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || serve(&listener, Duration::from_secs(5)));
        // A port nobody listens on: bind one, note it, close it.
        let closed = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let l = measure(
            &[addr, closed],
            10,
            Duration::from_secs(1),
            Duration::from_secs(10),
        );
        assert_eq!((l.micros.len(), l.failed, l.cut_short), (5, 5, false));
        assert!(l.percentile(50.0).unwrap() <= l.percentile(99.0).unwrap());
        // The server thread ends with the test process.
        drop(server);
        let none = measure(&[], 10, Duration::from_secs(1), Duration::from_secs(1));
        assert_eq!(none, Latencies::default());
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let l = Latencies {
            micros: (1..=100).rev().collect(),
            ..Latencies::default()
        };
        assert_eq!(l.percentile(50.0), Some(50));
        assert_eq!(l.percentile(99.0), Some(99));
        assert_eq!(l.percentile(100.0), Some(100));
        assert_eq!(l.percentile(0.0), Some(1));
        assert_eq!(Latencies::default().percentile(50.0), None);
    }
}
