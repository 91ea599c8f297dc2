//! Per-peer admission: each calling agency gets its own cap on concurrent requests — taken
//! before a request's body is read, so that what a peer can make the node buffer is bounded
//! by its cap times the largest request — and its own token bucket (envelopes per second —
//! each envelope of a batch counts as one request — with a burst of one second's worth), so
//! one flooding or stuck peer cannot starve the others. Over a limit is RESOURCE_EXHAUSTED;
//! the sender's delivery worker treats that as transient and backs off.
//!
//! [`AuditAllowance`] bounds the audit entries that callers nobody could identify (a
//! certificate naming no agency) can cause: a few per remote address, then one a minute.

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

    fn state<'a>(
        &self,
        peers: &'a mut HashMap<String, PeerState>,
        agency: &str,
        now: Instant,
    ) -> &'a mut PeerState {
        peers
            .entry(agency.to_string())
            .or_insert_with(|| PeerState {
                bucket: Bucket::full(self.rate, now),
                in_flight: Arc::new(Semaphore::new(self.concurrent)),
            })
    }

    /// Lets one request of `agency` in, before its body is read, if the agency has fewer
    /// than its cap in flight; the slot is held until the [`Admission`] drops.
    pub fn enter(&self, agency: &str) -> Result<Admission, NodeError> {
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        let state = self.state(&mut peers, agency, Instant::now());
        let permit = state.in_flight.clone().try_acquire_owned().map_err(|_| {
            NodeError::ResourceExhausted(format!(
                "{agency} has {} requests in flight, the most this node allows",
                self.concurrent
            ))
        })?;
        Ok(Admission { _permit: permit })
    }

    /// How many requests of `agency` hold one of its slots now (admitted, not yet answered).
    pub fn in_flight(&self, agency: &str) -> usize {
        let peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        peers.get(agency).map_or(0, |state| {
            self.concurrent
                .saturating_sub(state.in_flight.available_permits())
        })
    }

    /// Takes `envelopes` from `agency`'s rate (once the request is decoded), or says why not.
    pub fn take(&self, agency: &str, envelopes: usize) -> Result<(), NodeError> {
        let now = Instant::now();
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        let state = self.state(&mut peers, agency, now);
        if !state.bucket.take(envelopes.max(1) as f64, self.rate, now) {
            return Err(NodeError::ResourceExhausted(format!(
                "{agency} is over {} envelopes per second",
                self.rate
            )));
        }
        Ok(())
    }

    /// [`PeerLimits::enter`] and [`PeerLimits::take`] at once.
    pub fn admit(&self, agency: &str, envelopes: usize) -> Result<Admission, NodeError> {
        let admission = self.enter(agency)?;
        self.take(agency, envelopes)?;
        Ok(admission)
    }
}

/// How many audit entries one remote address may cause at once ...
pub const AUDIT_BURST: f64 = 5.0;
/// ... and how often one more (milliseconds).
pub const AUDIT_EVERY_MS: i64 = 60_000;
/// Remote addresses remembered; when full, those with a full allowance are forgotten, and
/// if none has, further refusals are counted but not audited.
const AUDIT_ADDRESSES: usize = 4_096;

/// Per remote address, a bucket of audit entries: [`AUDIT_BURST`] at once, one more every
/// [`AUDIT_EVERY_MS`]. On the node's clock (injected, so tests step it).
#[derive(Default)]
pub struct AuditAllowance {
    /// Per address: entries left and when that was computed (ms).
    addresses: Mutex<HashMap<std::net::IpAddr, (f64, i64)>>,
}

impl AuditAllowance {
    /// Whether a refusal of a caller from `address` at `now_ms` is audited (else only
    /// counted); takes one entry of its allowance if so.
    pub fn allows(&self, address: Option<std::net::IpAddr>, now_ms: i64) -> bool {
        let Some(address) = address else {
            return true;
        };
        let mut map = self.addresses.lock().unwrap_or_else(|p| p.into_inner());
        let refill = |(left, at): (f64, i64)| {
            let gained = now_ms.saturating_sub(at).max(0) as f64 / AUDIT_EVERY_MS as f64;
            ((left + gained).min(AUDIT_BURST), now_ms)
        };
        if map.len() >= AUDIT_ADDRESSES && !map.contains_key(&address) {
            map.retain(|_, entry| refill(*entry).0 < AUDIT_BURST);
            if map.len() >= AUDIT_ADDRESSES {
                return false;
            }
        }
        let entry = map.entry(address).or_insert((AUDIT_BURST, now_ms));
        *entry = refill(*entry);
        if entry.0 >= 1.0 {
            entry.0 -= 1.0;
            true
        } else {
            false
        }
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
    fn audits_of_one_address_are_bounded_and_refill_on_the_clock() {
        let a = AuditAllowance::default();
        let ip: std::net::IpAddr = "192.0.2.7".parse().expect("test");
        let other: std::net::IpAddr = "192.0.2.8".parse().expect("test");
        let allowed = (0..50).filter(|_| a.allows(Some(ip), 1_000)).count();
        assert_eq!(allowed, AUDIT_BURST as usize);
        assert!(a.allows(Some(other), 1_000), "another address has its own");
        assert!(!a.allows(Some(ip), 1_000 + AUDIT_EVERY_MS - 1));
        assert!(a.allows(Some(ip), 1_000 + AUDIT_EVERY_MS));
        assert!(!a.allows(Some(ip), 1_000 + AUDIT_EVERY_MS));
    }

    #[test]
    fn entering_is_capped_before_the_rate_is_taken() {
        let limits = PeerLimits::new(1, 2);
        let one = limits.enter("a").expect("test");
        let _two = limits.enter("a").expect("test");
        assert!(limits.enter("a").is_err(), "two in flight");
        assert!(limits.enter("b").is_ok(), "b has its own slots");
        drop(one);
        let _three = limits.enter("a").expect("test");
        assert!(limits.take("a", 1).is_ok());
        assert!(limits.take("a", 1).is_err(), "one envelope per second");
    }

    #[test]
    fn concurrency_is_capped_per_peer() {
        let limits = PeerLimits::new(1000, 2);
        let one = limits.admit("a", 1).expect("test");
        let _two = limits.admit("a", 1).expect("test");
        assert!(limits.admit("a", 1).is_err());
        drop(one);
        assert!(limits.admit("a", 1).is_ok());
    }
}
