//! One service's rebalancer: which connections to close, and when.
//!
//! Every tick (every 200 ms, ±50 % jitter, from [`Rebalancer::poll_timeout`])
//! the dataplane hands [`Rebalancer::handle_timeout`] the service's real
//! server weights and a snapshot of its connections. The rebalancer:
//! 1. refills a token bucket at `rate × connections` per second (at most
//!    that many, and at least one, banked): every close takes a token, so
//!    closes are spread over time and clients do not reconnect in a storm;
//! 2. counts each real server's connections against its weight's share
//!    of them all — plus the connections it closed in the last 5 s,
//!    whose clients may not have reconnected yet, so a closing wave does
//!    not shrink the shares and close more than needed;
//! 3. for each real server found at or over `share × (1 + tolerance)` —
//!    or, when some real server is at or under `share × (1 − tolerance)`,
//!    for the most over-loaded one — closes idle connections (idle for
//!    the policy's grace, as the dataplane judges it), oldest first, the
//!    most over-loaded server first, over as many ticks as it takes to
//!    bring it down to its share and no further;
//! 4. with a `max-age`, closes idle connections past it (each
//!    connection's age limit jittered ±10 % by its id).
//!
//! Real servers of weight 0 (draining ones) are neither counted nor
//! touched; their connections are the draining logic's.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::policy::Policy;

/// The base interval between ticks.
const TICK: Duration = Duration::from_millis(200);
/// How long a closed connection counts toward the service's total while
/// its client reconnects (a pooled client does so at its next request).
const RECONNECT_WINDOW: Duration = Duration::from_secs(5);

/// One connection as the dataplane sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conn {
    /// The dataplane's handle for it, returned in [`Close::id`].
    pub id: u64,
    /// Its real server: an index into the weights given with it.
    pub real_server: usize,
    /// When it was opened.
    pub opened: Instant,
    /// Since when no bytes have been in flight either way; `None` while
    /// some are.
    pub idle_since: Option<Instant>,
}

/// Why a connection is closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reason {
    /// Its real server holds more than its share.
    Skew,
    /// It is older than the policy's `max-age`.
    MaxAge,
}

/// A connection to close now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Close {
    /// [`Conn::id`].
    pub id: u64,
    /// [`Conn::real_server`] (for the per-real-server counter).
    pub real_server: usize,
    /// Why.
    pub reason: Reason,
}

/// What one tick decided.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    /// The connections to close, in order.
    pub close: Vec<Close>,
    /// The service's skew before these closes ([`skew`]).
    pub skew: f64,
}

/// How far the most over-loaded real server is over its weight's share
/// of the connections: 0 when balanced (or empty), 1 when one holds twice
/// its share. Real servers of weight 0 do not count.
pub fn skew(weights: &[u32], conns: &[Conn]) -> f64 {
    let counts = counts(weights, conns);
    let total: usize = counts.iter().sum();
    let weight_sum: u64 = weights.iter().map(|&w| u64::from(w)).sum();
    if total == 0 || weight_sum == 0 {
        return 0.0;
    }
    weights
        .iter()
        .zip(&counts)
        .filter(|(w, _)| **w > 0)
        .map(|(&w, &c)| {
            let share = total as f64 * f64::from(w) / weight_sum as f64;
            (c as f64 - share) / share
        })
        .fold(0.0, f64::max)
}

/// Connections per real server; those of weight 0 or unknown index are
/// not counted.
fn counts(weights: &[u32], conns: &[Conn]) -> Vec<usize> {
    let mut counts = vec![0; weights.len()];
    for c in conns {
        if let Some(n) = counts.get_mut(c.real_server)
            && weights[c.real_server] > 0
        {
            *n += 1;
        }
    }
    counts
}

/// One service's rebalancer (see the module docs).
#[derive(Debug)]
pub struct Rebalancer {
    policy: Policy,
    rng: u64,
    seed: u64,
    tokens: f64,
    refilled: Option<Instant>,
    next: Option<Instant>,
    /// When each recent close was made (oldest first).
    recent: VecDeque<Instant>,
    /// Per real server: found over the tolerance, not yet back at its
    /// share.
    over: Vec<bool>,
    /// The weights `over` is for: other weights (a real server added,
    /// removed or reordered) start it afresh.
    over_weights: Vec<u32>,
}

impl Rebalancer {
    /// A rebalancer for `policy`; `seed` drives its jitter (give each
    /// service its own).
    pub fn new(policy: Policy, seed: u64) -> Rebalancer {
        Rebalancer {
            policy,
            rng: seed,
            seed,
            tokens: 0.0,
            refilled: None,
            next: None,
            recent: VecDeque::new(),
            over: Vec::new(),
            over_weights: Vec::new(),
        }
    }

    /// The policy in force.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Changes the policy (the Service's annotation changed); it applies
    /// from the next tick.
    pub fn set_policy(&mut self, policy: Policy) {
        self.policy = policy;
        if policy.is_off() {
            self.next = None;
        }
    }

    /// When [`Rebalancer::handle_timeout`] should be called next: `None`
    /// when the policy is off; before the first call, at once.
    pub fn poll_timeout(&self, now: Instant) -> Option<Instant> {
        if self.policy.is_off() {
            return None;
        }
        Some(self.next.unwrap_or(now))
    }

    /// One tick at `now`: the connections to close, given the service's
    /// real server `weights` and its connections.
    pub fn handle_timeout(&mut self, now: Instant, weights: &[u32], conns: &[Conn]) -> Plan {
        let mut plan = Plan {
            close: Vec::new(),
            skew: skew(weights, conns),
        };
        if self.policy.is_off() {
            self.next = None;
            return plan;
        }
        let jitter = 0.5 + self.unit();
        self.next = Some(now + TICK.mul_f64(jitter));
        while self
            .recent
            .front()
            .is_some_and(|&t| now.saturating_duration_since(t) >= RECONNECT_WINDOW)
        {
            self.recent.pop_front();
        }
        let mut counts = counts(weights, conns);
        let live: usize = counts.iter().sum();
        self.refill(now, live);
        let weight_sum: u64 = weights.iter().map(|&w| u64::from(w)).sum();
        if weight_sum == 0 {
            return plan;
        }
        let total = (live + self.recent.len()) as f64;
        let share = |rs: usize| total * f64::from(weights[rs]) / weight_sum as f64;

        // Closable connections per real server, oldest first.
        let grace = self.policy.grace;
        let idle = |c: &&Conn| {
            c.idle_since
                .is_some_and(|t| now.saturating_duration_since(t) >= grace)
        };
        let mut candidates: Vec<Vec<&Conn>> = vec![Vec::new(); weights.len()];
        for c in conns.iter().filter(idle) {
            if let Some(list) = candidates.get_mut(c.real_server)
                && weights[c.real_server] > 0
            {
                list.push(c);
            }
        }
        for list in &mut candidates {
            list.sort_by_key(|c| (c.opened, c.id));
            list.reverse(); // pop() takes the oldest
        }

        // 3: the skew, most over-loaded real server first. A real server
        // found over the tolerance is brought down to its share (not just
        // under the tolerance), across ticks.
        let tolerance = self.policy.tolerance();
        if self.over_weights != weights {
            self.over = vec![false; weights.len()];
            self.over_weights = weights.to_vec();
        }
        let mut under = false;
        for rs in 0..weights.len() {
            let s = share(rs);
            let c = counts[rs] as f64;
            if weights[rs] == 0 || c - s < 1.0 {
                self.over[rs] = false;
            } else if c >= s * (1.0 + tolerance) {
                self.over[rs] = true;
            }
            under |= weights[rs] > 0 && s - c >= 1.0 && c <= s * (1.0 - tolerance);
        }
        // One under its share by the tolerance: others hold its
        // connections; the most over-loaded gives them back.
        if under
            && let Some(rs) = (0..weights.len())
                .filter(|&rs| weights[rs] > 0 && counts[rs] as f64 - share(rs) >= 1.0)
                .max_by(|&a, &b| {
                    let over = |rs: usize| counts[rs] as f64 / share(rs);
                    over(a).total_cmp(&over(b))
                })
        {
            self.over[rs] = true;
        }
        while self.tokens >= 1.0 {
            let worst = (0..weights.len())
                .filter(|&rs| self.over[rs] && !candidates[rs].is_empty())
                .filter(|&rs| counts[rs] as f64 - share(rs) >= 1.0)
                .max_by(|&a, &b| {
                    let over = |rs: usize| counts[rs] as f64 / share(rs);
                    over(a).total_cmp(&over(b))
                });
            let Some(rs) = worst else { break };
            let Some(c) = candidates[rs].pop() else { break };
            counts[rs] -= 1;
            self.take(now);
            plan.close.push(Close {
                id: c.id,
                real_server: rs,
                reason: Reason::Skew,
            });
        }

        // 4: the age limit.
        if let Some(max_age) = self.policy.max_age {
            let mut old: Vec<&Conn> = candidates
                .iter()
                .flatten()
                .copied()
                .filter(|c| {
                    let factor = 0.9 + 0.2 * self.unit_of(c.id);
                    let limit = Duration::try_from_secs_f64(max_age.as_secs_f64() * factor)
                        .unwrap_or(Duration::MAX);
                    now.saturating_duration_since(c.opened) >= limit
                })
                .collect();
            old.sort_by_key(|c| (c.opened, c.id));
            for c in old {
                if self.tokens < 1.0 {
                    break;
                }
                self.take(now);
                plan.close.push(Close {
                    id: c.id,
                    real_server: c.real_server,
                    reason: Reason::MaxAge,
                });
            }
        }
        plan
    }

    /// Adds `rate × live` tokens per second since the last refill, up to
    /// that many (at least one).
    fn refill(&mut self, now: Instant, live: usize) {
        let per_sec = self.policy.rate() * live as f64;
        let elapsed = self
            .refilled
            .map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
        self.refilled = Some(now);
        self.tokens = (self.tokens + per_sec * elapsed.as_secs_f64()).min(per_sec.max(1.0));
    }

    fn take(&mut self, now: Instant) {
        self.tokens -= 1.0;
        self.recent.push_back(now);
    }

    /// A uniform number in [0, 1) from the rebalancer's stream
    /// (splitmix64).
    fn unit(&mut self) -> f64 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        unit_from(self.rng)
    }

    /// A uniform number in [0, 1) fixed for connection `id`.
    fn unit_of(&self, id: u64) -> f64 {
        unit_from(self.seed ^ id.wrapping_mul(0x9e37_79b9_7f4a_7c15))
    }
}

/// splitmix64's output function, as a fraction in [0, 1).
fn unit_from(x: u64) -> f64 {
    let mut z = x;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conns(t0: Instant, per_rs: &[usize], idle: bool) -> Vec<Conn> {
        let mut out = Vec::new();
        for (rs, &n) in per_rs.iter().enumerate() {
            for _ in 0..n {
                out.push(Conn {
                    id: out.len() as u64,
                    real_server: rs,
                    opened: t0 + Duration::from_millis(out.len() as u64),
                    idle_since: idle.then_some(t0),
                });
            }
        }
        out
    }

    /// Ticks every 100 ms for `secs`; every close.
    fn run(r: &mut Rebalancer, t0: Instant, secs: u64, weights: &[u32], c: &[Conn]) -> Vec<Close> {
        let mut closes = Vec::new();
        for i in 1..=secs * 10 {
            let plan = r.handle_timeout(t0 + Duration::from_millis(100 * i), weights, c);
            closes.extend(plan.close);
        }
        closes
    }

    #[test]
    fn skew_is_over_the_share() {
        let t0 = Instant::now();
        assert_eq!(skew(&[1, 1], &conns(t0, &[5, 5], true)), 0.0);
        assert!((skew(&[1, 1], &conns(t0, &[15, 5], true)) - 0.5).abs() < 1e-9);
        // Weight 0 (draining) neither counts nor is counted.
        assert_eq!(skew(&[1, 1, 0], &conns(t0, &[5, 5, 30], true)), 0.0);
        assert_eq!(skew(&[], &[]), 0.0);
    }

    #[test]
    fn busy_connections_weight_zero_and_unknown_servers_are_never_closed() {
        let t0 = Instant::now();
        let mut busy = conns(t0, &[20, 0], false);
        busy.extend(conns(t0, &[0, 0, 20], true).into_iter().map(|c| Conn {
            id: c.id + 100,
            ..c
        }));
        let mut r = Rebalancer::new(Policy::IDLE, 1);
        // rs 2 has weight 0; rs 0's connections are all busy.
        assert!(run(&mut r, t0, 10, &[1, 1, 0], &busy).is_empty());
        // Connections naming a real server beyond the weights are ignored.
        assert!(run(&mut r, t0, 10, &[1], &conns(t0, &[0, 30], true)).is_empty());
    }

    #[test]
    fn the_rate_and_the_need_bound_the_closes() {
        let t0 = Instant::now();
        let c = conns(t0, &[40, 0], true);
        let mut r = Rebalancer::new(Policy::IDLE, 1);
        // The snapshot never changes (no client reconnects): 5 % of 40 is
        // 2 per second, never more.
        let first = run(&mut r, t0, 3, &[1, 1], &c);
        assert!((5..=7).contains(&first.len()), "{}", first.len());
        assert!(
            first
                .iter()
                .all(|c| c.real_server == 0 && c.reason == Reason::Skew)
        );
        // Oldest first.
        assert_eq!(first[0].id, 0);
        let all = run(&mut r, t0 + Duration::from_secs(3), 60, &[1, 1], &c);
        // The recent closes count toward the total for a second, then
        // drop out; the snapshot still shows 40 on rs 0, so it keeps
        // asking, but never more per second than the rate.
        assert!(all.len() <= 2 * 60 + 1, "{}", all.len());
    }

    #[test]
    fn off_closes_nothing_and_asks_for_no_tick() {
        let t0 = Instant::now();
        let mut r = Rebalancer::new(Policy::OFF, 1);
        assert_eq!(r.poll_timeout(t0), None);
        let plan = r.handle_timeout(t0, &[1, 1], &conns(t0, &[40, 0], true));
        assert!(plan.close.is_empty());
        assert!((plan.skew - 1.0).abs() < 1e-9);
        r.set_policy(Policy::IDLE);
        assert_eq!(r.poll_timeout(t0), Some(t0));
        r.handle_timeout(t0, &[1, 1], &[]);
        let next = r.poll_timeout(t0).unwrap();
        assert!(next >= t0 + Duration::from_millis(100) && next <= t0 + Duration::from_millis(300));
    }
}
