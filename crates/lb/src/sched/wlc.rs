//! Weighted least connection (`ip_vs_wlc.c`), the kernel's default.
//!
//! Kernel behaviour reproduced: the first destination (list order) not
//! overloaded with weight > 0 is the candidate; each later one that is not
//! overloaded replaces it when `loh × w > doh × lw` (overhead over weight
//! strictly smaller, compared in 64 bits without division), so ties keep
//! the earlier destination and weight-0 destinations never win.

use super::Pool;

/// The weighted-least search shared by wlc and sed, with the overhead
/// function as the only difference.
pub(crate) fn weighted_least(pool: &Pool<'_>, overhead: impl Fn(usize) -> i64) -> Option<usize> {
    let first = (0..pool.len()).find(|&i| !pool.overloaded(i) && pool.weight(i) > 0)?;
    let mut least = first;
    let mut loh = overhead(first);
    for i in first + 1..pool.len() {
        if pool.overloaded(i) {
            continue;
        }
        let doh = overhead(i);
        if loh * pool.weight(i) > doh * pool.weight(least) {
            least = i;
            loh = doh;
        }
    }
    Some(least)
}

pub(crate) fn schedule(pool: &Pool<'_>) -> Option<usize> {
    weighted_least(pool, |i| pool.overhead(i))
}

#[cfg(test)]
mod tests {
    use crate::sched::testkit::Bench;
    use rvs_model::Scheduler;

    #[test]
    fn load_over_weight() {
        let mut b = Bench::new(Scheduler::WeightedLeastConnection, &[1, 2]);
        // List b, a. b: 0/2, a: 0/1 → b (tie keeps the first).
        assert_eq!(b.picks(3), "bab");
        // b:2/2=1, a:1/1=1 → b.
        assert_eq!(b.picks(1), "b");
    }
}
