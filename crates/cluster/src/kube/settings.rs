//! How a [`KubeDriver`](super::KubeDriver) talks to its API server: timeouts, the client-side
//! rate limit and the retries of answers that say "try again".

use std::time::Duration;

/// Connection settings of one cluster's client. [`Default`] gives the documented defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KubeSettings {
    /// Requests per second the client sends on average (client-go's default is 5; Slipway's
    /// calls are small and few per step, so it allows more).
    pub qps: u32,
    /// Requests the client may send at once before the average applies.
    pub burst: u32,
    /// Time to open a connection to the API server.
    pub connect_timeout: Duration,
    /// Time for one API call to answer.
    pub call_timeout: Duration,
    /// Attempts of one action (or observation) when the API server answers 409, 429 or 5xx:
    /// the first try and `attempts - 1` retries, each after a doubling backoff.
    pub attempts: u32,
    /// The first backoff; it doubles per retry, up to `max_backoff`.
    pub backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for KubeSettings {
    fn default() -> Self {
        Self {
            qps: 20,
            burst: 40,
            connect_timeout: Duration::from_secs(10),
            call_timeout: Duration::from_secs(30),
            attempts: 4,
            backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(2),
        }
    }
}

impl KubeSettings {
    /// The wait before retry `n` (1-based): `backoff * 2^(n-1)`, capped, plus up to 20 % jitter
    /// so that many workers retrying one API server spread out.
    pub fn backoff_before(&self, retry: u32) -> Duration {
        let doubled = self
            .backoff
            .saturating_mul(1u32 << retry.saturating_sub(1).min(16));
        let base = doubled.min(self.max_backoff);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        base + base.mul_f64(f64::from(nanos % 200) / 1000.0)
    }

    /// The fixed window of the rate limit: `burst` requests per `burst / qps` seconds.
    pub(super) fn rate_window(&self) -> (u64, Duration) {
        let qps = self.qps.max(1);
        let burst = self.burst.max(1);
        (
            u64::from(burst),
            Duration::from_secs_f64(f64::from(burst) / f64::from(qps)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let s = KubeSettings::default();
        let within = |d: Duration, base_ms: u64| {
            let base = Duration::from_millis(base_ms);
            d >= base && d <= base.mul_f64(1.2)
        };
        assert!(within(s.backoff_before(1), 200));
        assert!(within(s.backoff_before(2), 400));
        assert!(within(s.backoff_before(3), 800));
        assert!(within(s.backoff_before(5), 2000));
        assert!(within(s.backoff_before(40), 2000));
    }

    #[test]
    fn rate_window_spreads_the_burst() {
        let s = KubeSettings {
            qps: 5,
            burst: 10,
            ..KubeSettings::default()
        };
        assert_eq!(s.rate_window(), (10, Duration::from_secs(2)));
        let zero = KubeSettings {
            qps: 0,
            burst: 0,
            ..KubeSettings::default()
        };
        assert_eq!(zero.rate_window(), (1, Duration::from_secs(1)));
    }
}
