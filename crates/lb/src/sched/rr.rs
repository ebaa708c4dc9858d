//! Round robin (`ip_vs_rr.c`).
//!
//! Kernel behaviour reproduced: the scheduler remembers the last chosen
//! destination (initially the list head) and walks the list circularly
//! from the one after it, choosing the first destination that is not
//! overloaded and has weight > 0; the walk includes the last chosen one,
//! so a single available destination is chosen again. Destinations are
//! added at the head, so with the position at the head the newest comes
//! first. When the remembered destination is deleted the position moves
//! to its predecessor (`ip_vs_rr_del_dest`), so the walk continues with
//! its successor.

use super::Pool;

/// The remembered position: `None` is the list head.
#[derive(Debug, Default)]
pub(crate) struct Rr {
    pos: Option<usize>,
}

impl Rr {
    pub(crate) fn dest_added(&mut self, index: usize) {
        if let Some(p) = self.pos
            && p >= index
        {
            self.pos = Some(p + 1);
        }
    }

    pub(crate) fn dest_removed(&mut self, index: usize) {
        if let Some(p) = self.pos {
            if p == index {
                self.pos = index.checked_sub(1);
            } else if p > index {
                self.pos = Some(p - 1);
            }
        }
    }

    pub(crate) fn schedule(&mut self, pool: &Pool<'_>) -> Option<usize> {
        let n = pool.len();
        let (start, count) = match self.pos {
            None => (0, n),
            Some(p) => (p + 1, n),
        };
        for k in 0..count {
            let i = (start + k) % n.max(1);
            if !pool.overloaded(i) && pool.weight(i) > 0 {
                self.pos = Some(i);
                return Some(i);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use crate::sched::testkit::Bench;
    use rvs_model::Scheduler;

    #[test]
    fn walks_newest_first_and_wraps() {
        let mut b = Bench::new(Scheduler::RoundRobin, &[1, 1, 1]);
        // Added a, b, c: the list is c, b, a.
        assert_eq!(b.picks(6), "cbacba");
    }

    #[test]
    fn skips_quiescent_and_overloaded() {
        let mut b = Bench::new(Scheduler::RoundRobin, &[1, 0, 1]);
        b.overload('a');
        assert_eq!(b.picks(3), "ccc");
    }

    #[test]
    fn deleting_the_current_one_continues_with_its_successor() {
        let mut b = Bench::new(Scheduler::RoundRobin, &[1, 1, 1, 1]);
        assert_eq!(b.picks(2), "dc");
        b.delete('c');
        assert_eq!(b.picks(3), "bad");
    }
}
