//! Weighted overflow (`ip_vs_ovf.c`).
//!
//! Kernel behaviour reproduced: the destination with the highest weight
//! among those not overloaded, with weight ≠ 0 and no more active
//! connections than its weight; ties go to the earlier one in list order.

use super::Pool;

pub(crate) fn schedule(pool: &Pool<'_>) -> Option<usize> {
    let mut best: Option<usize> = None;
    for i in 0..pool.len() {
        let w = pool.weight(i);
        if pool.overloaded(i) || pool.active(i) > w || w == 0 {
            continue;
        }
        if best.is_none_or(|h| w > pool.weight(h)) {
            best = Some(i);
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use crate::sched::testkit::Bench;
    use rvs_model::Scheduler;

    #[test]
    fn overflows_once_active_exceeds_weight() {
        let mut b = Bench::new(Scheduler::Overflow, &[1, 2]);
        // b (weight 2) until it has more than 2 active connections.
        for _ in 0..3 {
            assert_eq!(b.picks(1), "b");
            b.open_all();
        }
        assert_eq!(b.picks(1), "a");
    }
}
