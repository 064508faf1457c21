//! Per-principal request rate limits: one token bucket per authenticated subject.
//!
//! Every `/v1` request that needs a caller takes one token from its subject's bucket after
//! authentication (with authentication off, every caller is `anonymous` and shares one bucket).
//! A bucket holds up to `burst` tokens and refills at `per_second`; an empty bucket answers
//! `429` problem+json with `Retry-After` (whole seconds until a token is back). Webhooks and
//! the ops endpoints carry no principal: webhook deliveries have their own limiter of this
//! kind, keyed by app (`webhook_rate_limit`, taken before any signature is checked); the ops
//! endpoints are not limited. The limit is per process: with several API replicas a subject
//! gets up to `replicas × per_second`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The limit every principal gets; `per_second == 0` turns limiting off.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Sustained requests per second per principal.
    pub per_second: u32,
    /// Requests a principal may send at once after being idle.
    pub burst: u32,
}

impl RateLimit {
    pub const OFF: Self = Self {
        per_second: 0,
        burst: 0,
    };

    pub fn is_off(self) -> bool {
        self.per_second == 0
    }
}

/// Above this many buckets, full ones (idle long enough to have refilled) are dropped.
const PRUNE_ABOVE: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The buckets of one process.
#[derive(Debug)]
pub struct RateLimiter {
    limit: RateLimit,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    pub fn new(limit: RateLimit) -> Self {
        Self {
            limit,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `subject`; `Err(wait)` when it has none, with the time until one
    /// is back.
    pub fn check(&self, subject: &str) -> Result<(), Duration> {
        self.check_at(subject, Instant::now())
    }

    fn check_at(&self, subject: &str, now: Instant) -> Result<(), Duration> {
        if self.limit.is_off() {
            return Ok(());
        }
        let rate = f64::from(self.limit.per_second);
        let burst = f64::from(self.limit.burst.max(1));
        // A poisoned lock only means another request panicked mid-update of a counter: the
        // map is still usable.
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if buckets.len() > PRUNE_ABOVE && !buckets.contains_key(subject) {
            let refill = Duration::from_secs_f64(burst / rate);
            buckets.retain(|_, b| now.saturating_duration_since(b.at) < refill);
        }
        let bucket = buckets.entry(subject.to_owned()).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(per_second: u32, burst: u32) -> RateLimiter {
        RateLimiter::new(RateLimit { per_second, burst })
    }

    #[test]
    fn a_burst_then_the_sustained_rate() {
        let l = limiter(10, 3);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(l.check_at("ci", t0), Ok(()));
        }
        let wait = l.check_at("ci", t0).expect_err("the burst is spent");
        assert!(wait > Duration::from_millis(90) && wait <= Duration::from_millis(100));
        // 100 ms later one token is back, and only one.
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(l.check_at("ci", t1), Ok(()));
        assert!(l.check_at("ci", t1).is_err());
    }

    #[test]
    fn principals_have_their_own_buckets() {
        let l = limiter(1, 1);
        let t0 = Instant::now();
        assert_eq!(l.check_at("alice", t0), Ok(()));
        assert!(l.check_at("alice", t0).is_err());
        assert_eq!(l.check_at("bob", t0), Ok(()));
    }

    #[test]
    fn an_idle_bucket_refills_only_up_to_the_burst() {
        let l = limiter(100, 2);
        let t0 = Instant::now();
        assert_eq!(l.check_at("ci", t0), Ok(()));
        let later = t0 + Duration::from_secs(60);
        assert_eq!(l.check_at("ci", later), Ok(()));
        assert_eq!(l.check_at("ci", later), Ok(()));
        assert!(l.check_at("ci", later).is_err());
    }

    #[test]
    fn off_never_refuses() {
        let l = RateLimiter::new(RateLimit::OFF);
        let t0 = Instant::now();
        for _ in 0..10_000 {
            assert_eq!(l.check_at("ci", t0), Ok(()));
        }
    }

    #[test]
    fn idle_buckets_are_pruned_when_there_are_many() {
        let l = limiter(1000, 1);
        let t0 = Instant::now();
        for i in 0..=PRUNE_ABOVE {
            assert_eq!(l.check_at(&format!("s{i}"), t0), Ok(()));
        }
        let later = t0 + Duration::from_secs(1);
        assert_eq!(l.check_at("newcomer", later), Ok(()));
        let len = l
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len();
        assert_eq!(len, 1, "every refilled bucket was dropped");
    }
}
