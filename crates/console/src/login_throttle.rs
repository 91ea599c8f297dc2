//! Throttling of failed logins per client address, in memory: after
//! [`ThrottleLimits::failures`] failures within [`ThrottleLimits::window_ms`] an address is
//! refused until its window ends. Beside it, the node locks an account after repeated
//! failures (`service::Accounts`); this bounds guessing across many accounts. The table is
//! bounded: when full, windows that ended are dropped, then the oldest.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

#[derive(Debug, Clone, Copy)]
pub struct ThrottleLimits {
    pub failures: u32,
    pub window_ms: i64,
    pub max_addresses: usize,
}

impl Default for ThrottleLimits {
    fn default() -> Self {
        Self {
            failures: 20,
            window_ms: 10 * 60 * 1000,
            max_addresses: 10_000,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Window {
    started_ms: i64,
    failures: u32,
}

#[derive(Debug)]
pub struct LoginThrottle {
    limits: ThrottleLimits,
    windows: Mutex<HashMap<IpAddr, Window>>,
}

impl LoginThrottle {
    pub fn new(limits: ThrottleLimits) -> Self {
        Self {
            limits,
            windows: Mutex::new(HashMap::new()),
        }
    }

    fn windows(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Window>> {
        self.windows
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// `Err(seconds to wait)` when `addr` may not try now.
    pub fn admit(&self, addr: IpAddr, now_ms: i64) -> Result<(), u64> {
        let windows = self.windows();
        match windows.get(&addr) {
            Some(w) if now_ms - w.started_ms < self.limits.window_ms => {
                if w.failures >= self.limits.failures {
                    let left = self.limits.window_ms - (now_ms - w.started_ms);
                    Err((left.max(1000) as u64).div_ceil(1000))
                } else {
                    Ok(())
                }
            }
            _ => Ok(()),
        }
    }

    /// A login from `addr` failed.
    pub fn failed(&self, addr: IpAddr, now_ms: i64) {
        let mut windows = self.windows();
        let window_ms = self.limits.window_ms;
        if !windows.contains_key(&addr) && windows.len() >= self.limits.max_addresses {
            windows.retain(|_, w| now_ms - w.started_ms < window_ms);
            if windows.len() >= self.limits.max_addresses {
                let oldest = windows
                    .iter()
                    .min_by_key(|(_, w)| w.started_ms)
                    .map(|(a, _)| *a);
                if let Some(a) = oldest {
                    windows.remove(&a);
                }
            }
        }
        let w = windows.entry(addr).or_insert(Window {
            started_ms: now_ms,
            failures: 0,
        });
        if now_ms - w.started_ms >= window_ms {
            *w = Window {
                started_ms: now_ms,
                failures: 0,
            };
        }
        w.failures += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> ThrottleLimits {
        ThrottleLimits {
            failures: 3,
            window_ms: 60_000,
            max_addresses: 2,
        }
    }

    #[test]
    fn an_address_is_refused_after_its_failures_until_the_window_ends() {
        let t = LoginThrottle::new(limits());
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        for i in 0..3 {
            assert_eq!(t.admit(a, i), Ok(()), "failure {i} not yet over");
            t.failed(a, i);
        }
        assert_eq!(t.admit(a, 3), Err(60));
        assert_eq!(t.admit(a, 30_000), Err(30));
        assert_eq!(
            t.admit(b, 30_000),
            Ok(()),
            "another address is not affected"
        );
        assert_eq!(t.admit(a, 60_000), Ok(()), "window over");
        t.failed(a, 60_000);
        assert_eq!(t.admit(a, 60_001), Ok(()), "a new window counts from 1");
    }

    #[test]
    fn the_table_stays_bounded() {
        let t = LoginThrottle::new(limits());
        for i in 0..100u8 {
            t.failed([10, 0, 0, i].into(), i64::from(i));
        }
        assert!(t.windows().len() <= 2);
    }
}
