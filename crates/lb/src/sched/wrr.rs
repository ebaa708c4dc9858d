//! Weighted round robin (`ip_vs_wrr.c`).
//!
//! Kernel behaviour reproduced: the state is a position (`cl`), a current
//! weight `cw`, the step `di` = gcd of the positive weights (1 if none)
//! and `mw` = max weight − (di − 1). A pick walks on from the position for
//! a destination that is not overloaded with weight ≥ `cw`; at the end of
//! the list `cw` drops by `di`, and below 1 it restarts at `mw`. The walk
//! stops with "all destinations are overloaded" exactly where the kernel
//! does (`last_pass`/`restarted`/`stop`). Any add, delete or edit resets
//! the position to the head, recomputes `di` and `mw`, and keeps `cw`
//! unless it exceeds the new `mw` or is 0 (then `mw`), otherwise rounds it
//! to `(cw / di) * di + 1` when `di > 1` (`ip_vs_wrr_dest_changed`).

use super::{Pool, gcd};

#[derive(Debug)]
pub(crate) struct Wrr {
    /// Position: `None` is the list head.
    cl: Option<usize>,
    cw: i64,
    mw: i64,
    di: i64,
}

fn gcd_weight(pool: &Pool<'_>) -> i64 {
    let mut g = 0;
    for i in 0..pool.len() {
        let w = pool.weight(i);
        if w > 0 {
            g = if g > 0 { gcd(w, g) } else { w };
        }
    }
    if g != 0 { g } else { 1 }
}

fn max_weight(pool: &Pool<'_>) -> i64 {
    (0..pool.len()).map(|i| pool.weight(i)).fold(0, i64::max)
}

impl Wrr {
    pub(crate) fn new(pool: &Pool<'_>) -> Wrr {
        let di = gcd_weight(pool);
        let mw = max_weight(pool) - (di - 1);
        Wrr {
            cl: None,
            cw: mw,
            mw,
            di,
        }
    }

    pub(crate) fn dest_changed(&mut self, pool: &Pool<'_>) {
        self.cl = None;
        self.di = gcd_weight(pool);
        self.mw = max_weight(pool) - (self.di - 1);
        if self.cw > self.mw || self.cw == 0 {
            self.cw = self.mw;
        } else if self.di > 1 {
            self.cw = (self.cw / self.di) * self.di + 1;
        }
    }

    pub(crate) fn schedule(&mut self, pool: &Pool<'_>) -> Option<usize> {
        if self.mw == 0 {
            return None;
        }
        let n = pool.len();
        let last = self.cl;
        let mut pos = self.cl;
        let mut stop: Option<usize> = None;
        let mut last_pass = false;
        let mut restarted = false;
        // The kernel's loop always ends; bound it anyway against
        // arithmetic surprises (two full weight cycles plus slack).
        let rounds = 2 * (self.mw / self.di.max(1)).max(1) + 4;
        for _ in 0..rounds {
            let start = pos.map_or(0, |p| p + 1);
            for i in start..n {
                if !pool.overloaded(i) && pool.weight(i) >= self.cw {
                    self.cl = Some(i);
                    return Some(i);
                }
                if stop == Some(i) {
                    self.cl = Some(i);
                    return None;
                }
            }
            pos = None;
            self.cw -= self.di;
            if self.cw <= 0 {
                self.cw = self.mw;
                if last_pass || last.is_none() {
                    self.cl = None;
                    return None;
                }
                restarted = true;
            }
            last_pass = self.cw <= self.di;
            if last_pass && restarted && last.is_some() {
                stop = last;
            }
        }
        self.cl = None;
        None
    }
}

#[cfg(test)]
mod tests {
    use crate::sched::testkit::Bench;
    use rvs_model::Scheduler;

    #[test]
    fn interleaves_by_weight() {
        // a=4, b=3, c=2 added one by one: the list is c, b, a. Adding a
        // alone left cw = mw = 1 (di = 4), and later adds keep cw = 1, so
        // the first round is at weight 1, then 4, 3, 2, 1.
        let mut b = Bench::new(Scheduler::WeightedRoundRobin, &[4, 3, 2]);
        assert_eq!(b.picks(10), "cbaabacbac");
    }

    #[test]
    fn gcd_steps() {
        let mut b = Bench::new(Scheduler::WeightedRoundRobin, &[4, 2]);
        // After the adds: di = 2, mw = 3, cw = (1 / 2) * 2 + 1 = 1.
        // cw 1 → b, a; cw 3 → a; cw 1 → b, a; ...
        assert_eq!(b.picks(6), "baabaa");
    }

    #[test]
    fn all_overloaded_gives_none() {
        let mut b = Bench::new(Scheduler::WeightedRoundRobin, &[3, 1]);
        b.overload('a');
        b.overload('b');
        assert_eq!(b.picks(2), "--");
    }
}
