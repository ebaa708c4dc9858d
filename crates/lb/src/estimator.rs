//! IPVS counters and the kernel's rate estimator (Linux 6.1
//! `ip_vs_est.c`).
//!
//! Counters have IPVS's meaning: `conns` counts connections scheduled
//! (`ip_vs_conn_stats`), packets and bytes are "in" (client to real
//! server) and "out" (real server to client). `-Z` does not clear the
//! totals but takes them as the new zero point, as the kernel's `kstats0`
//! does.
//!
//! The estimator runs every 2 s, like the kernel's `est_timer`: for each
//! counter the 2-second delta is scaled (`<< 9` for conns and packets,
//! i.e. ×2¹⁰ per second; `<< 4` for bytes, ×2⁵ per second) and folded into
//! an exponentially weighted average with weight ¼
//! (`avg += (rate - avg) >> 2`). Reading rounds like
//! `ip_vs_read_estimator`: `(avg + 0x1FF) >> 10` for cps and pps,
//! `(avg + 0xF) >> 5` for bps. Zeroing resets the averages and takes the
//! current totals as the new "last" values (`ip_vs_zero_estimator`).

use std::time::Duration;

use rvs_model::Stats;

use crate::Traffic;

/// The estimator period (`2*HZ`).
pub(crate) const TICK: Duration = Duration::from_secs(2);

const CONNS: usize = 0;
const INPKTS: usize = 1;
const OUTPKTS: usize = 2;
const INBYTES: usize = 3;
const OUTBYTES: usize = 4;

/// Counters of one service or destination, with their estimator.
#[derive(Clone, Debug, Default)]
pub(crate) struct Counters {
    total: [u64; 5],
    zero: [u64; 5],
    last: [u64; 5],
    avg: [i64; 5],
}

impl Counters {
    /// One more connection scheduled.
    pub(crate) fn conn(&mut self) {
        self.total[CONNS] = self.total[CONNS].wrapping_add(1);
    }

    /// Packets and bytes moved.
    pub(crate) fn traffic(&mut self, t: &Traffic) {
        self.total[INPKTS] = self.total[INPKTS].wrapping_add(t.in_packets);
        self.total[OUTPKTS] = self.total[OUTPKTS].wrapping_add(t.out_packets);
        self.total[INBYTES] = self.total[INBYTES].wrapping_add(t.in_bytes);
        self.total[OUTBYTES] = self.total[OUTBYTES].wrapping_add(t.out_bytes);
    }

    /// `-Z`: current totals become the zero point; rates restart at 0.
    pub(crate) fn zero(&mut self) {
        self.zero = self.total;
        self.last = self.total;
        self.avg = [0; 5];
    }

    /// One estimator tick (`estimation_timer`).
    pub(crate) fn tick(&mut self) {
        for i in 0..5 {
            let delta = self.total[i].wrapping_sub(self.last[i]);
            self.last[i] = self.total[i];
            let shift = if i >= INBYTES { 4 } else { 9 };
            // The kernel shifts the u64 delta and reads it as s64.
            let rate = delta.wrapping_shl(shift) as i64;
            self.avg[i] = self.avg[i].wrapping_add(rate.wrapping_sub(self.avg[i]) >> 2);
        }
    }

    /// The counters and rates as a listing shows them.
    pub(crate) fn stats(&self) -> Stats {
        let count = |i: usize| self.total[i].wrapping_sub(self.zero[i]);
        let pps = |i: usize| (self.avg[i].max(0) as u64).wrapping_add(0x1ff) >> 10;
        let bps = |i: usize| (self.avg[i].max(0) as u64).wrapping_add(0xf) >> 5;
        Stats {
            conns: count(CONNS),
            inpkts: count(INPKTS),
            outpkts: count(OUTPKTS),
            inbytes: count(INBYTES),
            outbytes: count(OUTBYTES),
            cps: pps(CONNS),
            inpps: pps(INPKTS),
            outpps: pps(OUTPKTS),
            inbps: bps(INBYTES),
            outbps: bps(OUTBYTES),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steady_rate_converges_to_the_kernel_value() {
        let mut c = Counters::default();
        // 100 connections and 1000 packets of 100 bytes per second.
        for _ in 0..60 {
            for _ in 0..200 {
                c.conn();
            }
            c.traffic(&Traffic {
                in_bytes: 200_000,
                out_bytes: 400_000,
                in_packets: 2000,
                out_packets: 2000,
            });
            c.tick();
        }
        let s = c.stats();
        assert_eq!(s.cps, 100);
        assert_eq!(s.inpps, 1000);
        assert_eq!(s.inbps, 100_000);
        assert_eq!(s.outbps, 200_000);
        assert_eq!(s.conns, 12_000);
    }

    #[test]
    fn first_tick_gives_a_quarter_of_the_rate() {
        let mut c = Counters::default();
        for _ in 0..80 {
            c.conn();
        }
        c.tick();
        // 40 cps measured, EWMA ¼ → 10.
        assert_eq!(c.stats().cps, 10);
    }

    #[test]
    fn zero_keeps_totals_as_the_new_origin() {
        let mut c = Counters::default();
        c.conn();
        c.tick();
        c.zero();
        assert_eq!(c.stats(), Stats::default());
        c.conn();
        assert_eq!(c.stats().conns, 1);
        c.tick();
        assert_eq!(c.stats().cps, 0, "1 conn in 2 s, ¼ of 0.5 rounds to 0");
    }
}
