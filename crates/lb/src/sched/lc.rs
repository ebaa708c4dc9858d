//! Least connection (`ip_vs_lc.c`).
//!
//! Kernel behaviour reproduced: the first destination in list order with
//! the smallest overhead `active × 256 + inactive` among those not
//! overloaded and with weight ≠ 0 (weights are not otherwise used; ties go
//! to the earlier, i.e. newer, destination).

use super::Pool;

pub(crate) fn schedule(pool: &Pool<'_>) -> Option<usize> {
    let mut least: Option<(usize, i64)> = None;
    for i in 0..pool.len() {
        if pool.overloaded(i) || pool.weight(i) == 0 {
            continue;
        }
        let doh = pool.overhead(i);
        if least.is_none_or(|(_, loh)| doh < loh) {
            least = Some((i, doh));
        }
    }
    least.map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use crate::sched::testkit::Bench;
    use rvs_model::Scheduler;

    #[test]
    fn fewest_connections_ignoring_weight() {
        let mut b = Bench::new(Scheduler::LeastConnection, &[1, 5, 1]);
        // New connections are inactive until opened: overhead counts 1 each.
        assert_eq!(b.picks(6), "cbacba");
        b.open_all();
        assert_eq!(b.picks(1), "c");
    }
}
