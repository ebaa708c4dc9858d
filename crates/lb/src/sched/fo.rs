//! Weighted failover (`ip_vs_fo.c`).
//!
//! Kernel behaviour reproduced: the destination with the highest weight
//! among those not overloaded (weight must exceed 0); ties go to the
//! earlier one in list order.

use super::Pool;

pub(crate) fn schedule(pool: &Pool<'_>) -> Option<usize> {
    let mut best: Option<usize> = None;
    let mut hw = 0;
    for i in 0..pool.len() {
        if !pool.overloaded(i) && pool.weight(i) > hw {
            best = Some(i);
            hw = pool.weight(i);
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use crate::sched::testkit::Bench;
    use rvs_model::Scheduler;

    #[test]
    fn highest_weight_until_overloaded() {
        let mut b = Bench::new(Scheduler::Failover, &[5, 10, 1]);
        assert_eq!(b.picks(3), "bbb");
        b.overload('b');
        assert_eq!(b.picks(2), "aa");
    }
}
