//! Shortest expected delay (`ip_vs_sed.c`).
//!
//! Kernel behaviour reproduced: like wlc, but the overhead is
//! `active + 1` (inactive connections are ignored), minimising
//! `(active + 1) / weight`; first candidate not overloaded with weight > 0,
//! replaced only on a strictly smaller 64-bit cross product.

use super::Pool;
use super::wlc::weighted_least;

pub(crate) fn schedule(pool: &Pool<'_>) -> Option<usize> {
    weighted_least(pool, |i| pool.active(i) + 1)
}

#[cfg(test)]
mod tests {
    use crate::sched::testkit::Bench;
    use rvs_model::Scheduler;

    #[test]
    fn inactive_connections_do_not_count() {
        let mut b = Bench::new(Scheduler::ShortestExpectedDelay, &[1, 3]);
        // Nothing opened: every pick sees active 0 → the first, b.
        assert_eq!(b.picks(3), "bbb");
        b.open_all();
        // b: (3+1)/3, a: 1/1 → a.
        assert_eq!(b.picks(1), "a");
    }
}
