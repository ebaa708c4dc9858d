//! Weighted random twos choice (`ip_vs_twos.c`, Linux 6.2; not in 6.1).
//!
//! Kernel behaviour reproduced: with `total` = sum of the positive weights
//! of destinations not overloaded, draw two numbers in `[0, total]`
//! (`get_random_u32() % (total + 1)`, so the first eligible destination
//! is one step likelier, as in the kernel); walking the eligible
//! destinations and subtracting weights, each draw lands on the first one
//! where it reaches ≤ 0; the second choice wins only when
//! `w2 × overhead1 > w1 × overhead2`. The random source is the core's
//! seeded generator instead of the kernel's, so only the distribution, not
//! the sequence, can match a kernel.

use super::Pool;
use crate::rng::Rng;

pub(crate) fn schedule(pool: &Pool<'_>, rng: &mut Rng) -> Option<usize> {
    let eligible = |i: usize| !pool.overloaded(i) && pool.weight(i) > 0;
    let mut total: i64 = 0;
    let mut any = None;
    for i in 0..pool.len() {
        if eligible(i) {
            total += pool.weight(i);
            any = Some(i);
        }
    }
    let fallback = any?;
    let total = total + 1;
    let mut r1 = i64::from(rng.next_u32()) % total;
    let mut r2 = i64::from(rng.next_u32()) % total;
    let mut c1: Option<(usize, i64, i64)> = None;
    let mut c2: Option<(usize, i64, i64)> = None;
    for i in 0..pool.len() {
        if !eligible(i) {
            continue;
        }
        let w = pool.weight(i);
        r1 -= w;
        r2 -= w;
        if r1 <= 0 && c1.is_none() {
            c1 = Some((i, w, pool.overhead(i)));
        }
        if r2 <= 0 && c2.is_none() {
            c2 = Some((i, w, pool.overhead(i)));
        }
        if c1.is_some() && c2.is_some() {
            break;
        }
    }
    match (c1, c2) {
        (Some((_, w1, o1)), Some((i2, w2, o2))) if w2 * o1 > w1 * o2 => Some(i2),
        (Some((i1, ..)), _) => Some(i1),
        (None, Some((i2, ..))) => Some(i2),
        (None, None) => Some(fallback),
    }
}

#[cfg(test)]
mod tests {
    use crate::sched::testkit::Bench;
    use rvs_model::Scheduler;

    #[test]
    fn only_eligible_destinations() {
        let mut b = Bench::new(Scheduler::RandomTwos, &[1, 0, 1]);
        b.overload('a');
        assert_eq!(b.picks(5), "ccccc");
    }
}
