//! Client-side pacing for control planes with a fixed request quota. API Gateway allows about
//! ten management calls per second per account ("API Gateway quotas for creating, deploying and
//! managing an API" in its developer guide, not adjustable); a parallel apply would otherwise
//! exceed it and spend its time in the SDK's throttling back-off instead.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// A token bucket shared by every clone: `take` waits until the call may go.
#[derive(Debug, Clone)]
pub struct Pace {
    per_second: f64,
    burst: f64,
    state: Arc<Mutex<Bucket>>,
}

#[derive(Debug)]
struct Bucket {
    /// May go negative: a caller reserves its token and sleeps for the debt.
    tokens: f64,
    refilled: Instant,
}

/// API Gateway's management quota: 10 requests per second per account. The bucket starts full
/// with one second's worth, so a first deploy's dozen route calls barely wait.
pub const API_GATEWAY_PER_SECOND: f64 = 10.0;

impl Pace {
    pub fn new(per_second: f64, burst: f64) -> Self {
        Self {
            per_second,
            burst,
            state: Arc::new(Mutex::new(Bucket {
                tokens: burst,
                refilled: Instant::now(),
            })),
        }
    }

    /// API Gateway's control-plane pace.
    pub fn api_gateway() -> Self {
        Self::new(API_GATEWAY_PER_SECOND, API_GATEWAY_PER_SECOND)
    }

    /// How long the caller must wait before its request, with its token reserved.
    fn reserve(&self, now: Instant) -> Duration {
        let mut b = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let refill = now.saturating_duration_since(b.refilled).as_secs_f64() * self.per_second;
        b.tokens = (b.tokens + refill).min(self.burst);
        b.refilled = now;
        b.tokens -= 1.0;
        if b.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-b.tokens / self.per_second)
        }
    }

    /// Wait for a token.
    pub async fn take(&self) {
        let wait = self.reserve(Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_goes_at_once_and_the_rest_at_the_rate() {
        let pace = Pace::new(10.0, 10.0);
        let now = Instant::now();
        let waits: Vec<Duration> = (0..15).map(|_| pace.reserve(now)).collect();
        assert!(waits[..10].iter().all(|w| w.is_zero()), "{waits:?}");
        // The 11th waits one token's time, the 15th five.
        assert_eq!(waits[10].as_millis(), 100);
        assert_eq!(waits[14].as_millis(), 500);
    }

    #[test]
    fn an_idle_bucket_refills_up_to_its_burst_only() {
        let pace = Pace::new(10.0, 10.0);
        let start = Instant::now();
        for _ in 0..10 {
            pace.reserve(start);
        }
        let later = start + Duration::from_secs(60);
        let waits: Vec<Duration> = (0..11).map(|_| pace.reserve(later)).collect();
        assert!(waits[..10].iter().all(|w| w.is_zero()), "{waits:?}");
        assert_eq!(waits[10].as_millis(), 100);
    }
}
