//! Never queue (`ip_vs_nq.c`).
//!
//! Kernel behaviour reproduced: walking the list, skip overloaded and
//! weight-0 destinations; the first one with no active connection is
//! chosen at once; otherwise the one minimising `(active + 1) / weight`
//! (first wins ties, strict 64-bit cross product).

use super::Pool;

pub(crate) fn schedule(pool: &Pool<'_>) -> Option<usize> {
    let mut least: Option<(usize, i64)> = None;
    for i in 0..pool.len() {
        if pool.overloaded(i) || pool.weight(i) == 0 {
            continue;
        }
        let doh = pool.active(i) + 1;
        if pool.active(i) == 0 {
            return Some(i);
        }
        match least {
            Some((l, loh)) if loh * pool.weight(i) <= doh * pool.weight(l) => {}
            _ => least = Some((i, doh)),
        }
    }
    least.map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use crate::sched::testkit::Bench;
    use rvs_model::Scheduler;

    #[test]
    fn idle_first_then_expected_delay() {
        let mut b = Bench::new(Scheduler::NeverQueue, &[1, 3]);
        assert_eq!(b.picks(1), "b");
        b.open_all();
        // b has 1 active; a is idle → a.
        assert_eq!(b.picks(1), "a");
        b.open_all();
        // b: 2/3, a: 2/1 → b.
        assert_eq!(b.picks(1), "b");
    }
}
