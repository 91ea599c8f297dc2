//! Per-peer admission: each calling agency gets its own token bucket (envelopes per second —
//! each envelope of a batch counts as one request — with a burst of one second's worth) and its own cap on concurrent requests, so one
//! flooding or stuck peer cannot starve the others. Over a limit is RESOURCE_EXHAUSTED; the
//! sender's delivery worker treats that as transient and backs off.

use crate::NodeError;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A token bucket: `rate` tokens per second, holding at most `rate` (a burst of one second).
#[derive(Debug, Clone, Copy)]
pub struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    pub fn full(rate: f64, now: Instant) -> Self {
        Self {
            tokens: rate,
            last: now,
        }
    }

    /// Takes `n` tokens if there are that many (after refilling for the time passed). A full
    /// bucket admits even more than it holds, going into debt, so that a batch larger than
    /// one second's worth is slowed down, not refused for ever.
    pub fn take(&mut self, n: f64, rate: f64, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(rate);
        self.last = now;
        if self.tokens >= n || self.tokens >= rate {
            self.tokens -= n;
            true
        } else {
            false
        }
    }
}

struct PeerState {
    bucket: Bucket,
    in_flight: Arc<Semaphore>,
}

pub struct PeerLimits {
    rate: f64,
    concurrent: usize,
    peers: Mutex<HashMap<String, PeerState>>,
}

/// Held while a peer's request runs; dropping it frees the slot.
pub struct Admission {
    _permit: OwnedSemaphorePermit,
}

impl PeerLimits {
    pub fn new(requests_per_second: u32, concurrent: u32) -> Self {
        Self {
            rate: f64::from(requests_per_second.max(1)),
            concurrent: concurrent.max(1) as usize,
            peers: Mutex::new(HashMap::new()),
        }
    }

    /// Admits one request of `agency` carrying `envelopes` envelopes, or says why not.
    pub fn admit(&self, agency: &str, envelopes: usize) -> Result<Admission, NodeError> {
        let now = Instant::now();
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        let state = peers
            .entry(agency.to_string())
            .or_insert_with(|| PeerState {
                bucket: Bucket::full(self.rate, now),
                in_flight: Arc::new(Semaphore::new(self.concurrent)),
            });
        let permit = state.in_flight.clone().try_acquire_owned().map_err(|_| {
            NodeError::ResourceExhausted(format!(
                "{agency} has {} requests in flight, the most this node allows",
                self.concurrent
            ))
        })?;
        if !state.bucket.take(envelopes.max(1) as f64, self.rate, now) {
            return Err(NodeError::ResourceExhausted(format!(
                "{agency} is over {} envelopes per second",
                self.rate
            )));
        }
        Ok(Admission { _permit: permit })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bucket_allows_its_rate_then_refills() {
        let t0 = Instant::now();
        let mut b = Bucket::full(10.0, t0);
        let taken = (0..20).filter(|_| b.take(1.0, 10.0, t0)).count();
        assert_eq!(taken, 10);
        assert!(b.take(1.0, 10.0, t0 + Duration::from_millis(100)));
        assert!(!b.take(1.0, 10.0, t0 + Duration::from_millis(100)));
    }

    #[test]
    fn a_batch_takes_one_token_per_envelope_and_a_full_bucket_admits_any_batch() {
        let t0 = Instant::now();
        let mut b = Bucket::full(10.0, t0);
        assert!(b.take(4.0, 10.0, t0));
        assert!(b.take(6.0, 10.0, t0));
        assert!(!b.take(1.0, 10.0, t0));
        let mut full = Bucket::full(10.0, t0);
        assert!(
            full.take(25.0, 10.0, t0),
            "a full bucket admits a big batch"
        );
        // ... and is then in debt: 1.5 s later it holds 0, not yet 1 token
        assert!(!full.take(1.0, 10.0, t0 + Duration::from_millis(1500)));
        assert!(full.take(1.0, 10.0, t0 + Duration::from_millis(1700)));
    }

    #[test]
    fn peers_have_their_own_limits() {
        let limits = PeerLimits::new(5, 100);
        for _ in 0..5 {
            assert!(limits.admit("a", 1).is_ok());
        }
        assert!(matches!(
            limits.admit("a", 1),
            Err(NodeError::ResourceExhausted(_))
        ));
        assert!(limits.admit("b", 1).is_ok(), "b is not starved by a");
    }

    #[test]
    fn concurrency_is_capped_per_peer() {
        let limits = PeerLimits::new(1000, 2);
        let one = limits.admit("a", 1).unwrap();
        let _two = limits.admit("a", 1).unwrap();
        assert!(limits.admit("a", 1).is_err());
        drop(one);
        assert!(limits.admit("a", 1).is_ok());
    }
}
