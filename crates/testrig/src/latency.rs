//! Connect latency as a client sees it: the time `connect()` takes to
//! complete the TCP handshake with a Service's address (through whatever
//! rewrites it: iptables, nftables, IPVS, a socket-level balancer or a
//! userspace proxy), one connection after another, each closed with a
//! reset so that no TIME_WAIT piles up. Bounded in count and in time.
//!
//! [`serve`] is the other side: an accept-and-close loop, as cheap a
//! backend as there is, for backends in pod namespaces.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

/// What [`measure`] saw.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Latencies {
    /// Each completed connect's duration, µs, in the order made.
    pub micros: Vec<u64>,
    /// Connects refused, timed out or failed otherwise.
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
        match TcpStream::connect_timeout(&target, timeout) {
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

/// Accepts connections on `listener` and closes each at once, until
/// `bound` has passed (checked at each connection) or accepting fails.
/// Returns the number accepted.
pub fn serve(listener: &TcpListener, bound: Duration) -> usize {
    let started = Instant::now();
    let mut accepted = 0;
    while started.elapsed() < bound {
        match listener.accept() {
            Ok((stream, _)) => {
                accepted += 1;
                drop(stream);
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
