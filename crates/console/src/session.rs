//! Signed-in sessions, held in memory (a restart signs everyone out), and the cookie that
//! names one. A session ends when it was idle longer than the idle timeout, when it is older
//! than its absolute lifetime (both on the node's clock, so tests step time instead of
//! waiting), when its account signs out, or when the store of sessions is full and it is the
//! one idle longest. Only the SHA-256 of a session's token is kept.

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;

/// The bounds of the session store.
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    /// A session not used for this long ends.
    pub idle_ms: i64,
    /// A session ends this long after sign-in, however busy.
    pub lifetime_ms: i64,
    /// The most sessions held at once.
    pub max_sessions: usize,
}

impl Default for SessionLimits {
    fn default() -> Self {
        Self {
            idle_ms: 15 * 60 * 1000,
            lifetime_ms: 10 * 60 * 60 * 1000,
            max_sessions: 1000,
        }
    }
}

/// One signed-in session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The account's name.
    pub account: String,
    /// The token every state-changing form of this session carries.
    pub csrf: String,
    pub started_ms: i64,
    pub last_seen_ms: i64,
}

/// The sessions of one console.
#[derive(Debug)]
pub struct Sessions {
    limits: SessionLimits,
    held: Mutex<HashMap<[u8; 32], Session>>,
}

/// A fresh random token of 32 bytes, as 64 hex digits.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    // The operating system's randomness; without it nothing here is safe.
    if let Err(e) = getrandom::fill(&mut bytes) {
        panic!("no randomness from the operating system: {e}");
    }
    hex::encode(bytes)
}

fn key_of(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Sessions {
    pub fn new(limits: SessionLimits) -> Self {
        Self {
            limits,
            held: Mutex::new(HashMap::new()),
        }
    }

    pub fn limits(&self) -> SessionLimits {
        self.limits
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Session>> {
        self.held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn alive(&self, s: &Session, now_ms: i64) -> bool {
        now_ms - s.last_seen_ms < self.limits.idle_ms
            && now_ms - s.started_ms < self.limits.lifetime_ms
    }

    /// Starts a session for `account`; returns its token (the cookie's value).
    pub fn start(&self, account: &str, now_ms: i64) -> (String, Session) {
        let token = random_token();
        let session = Session {
            account: account.to_string(),
            csrf: random_token(),
            started_ms: now_ms,
            last_seen_ms: now_ms,
        };
        let mut held = self.held();
        if held.len() >= self.limits.max_sessions {
            held.retain(|_, s| self.alive(s, now_ms));
        }
        if held.len() >= self.limits.max_sessions {
            let idlest = held
                .iter()
                .min_by_key(|(_, s)| s.last_seen_ms)
                .map(|(k, _)| *k);
            if let Some(k) = idlest {
                held.remove(&k);
            }
        }
        held.insert(key_of(&token), session.clone());
        (token, session)
    }

    /// The session of `token`, marked as used now; `None` (and the session ended) when it
    /// does not exist or has expired.
    pub fn touch(&self, token: &str, now_ms: i64) -> Option<Session> {
        let key = key_of(token);
        let mut held = self.held();
        let alive = held.get(&key).map(|s| self.alive(s, now_ms))?;
        if !alive {
            held.remove(&key);
            return None;
        }
        let s = held.get_mut(&key)?;
        s.last_seen_ms = s.last_seen_ms.max(now_ms);
        Some(s.clone())
    }

    /// Ends the session of `token` (sign-out).
    pub fn end(&self, token: &str) {
        self.held().remove(&key_of(token));
    }

    /// Ends every session of `account` (disabled, or signed in elsewhere is fine: only this).
    pub fn end_all_of(&self, account: &str) {
        self.held().retain(|_, s| s.account != account);
    }

    /// How many sessions are held (ended ones included until they are looked at).
    pub fn len(&self) -> usize {
        self.held().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The session cookie's name for the console of `agency`: `__Host-` (the browser keeps it
/// only when set over HTTPS, for this host, for every path) and the agency, so the consoles
/// of several nodes on one host do not overwrite each other's sessions.
pub fn cookie_name(agency: &str) -> String {
    let safe: String = agency
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    format!("__Host-kurzdraht-{safe}")
}

/// The `Set-Cookie` value that holds `token`: secure, not readable by script, never sent
/// with a request from another site.
pub fn set_cookie(name: &str, token: &str) -> String {
    format!("{name}={token}; Path=/; Secure; HttpOnly; SameSite=Strict")
}

/// The `Set-Cookie` value that removes the cookie.
pub fn clear_cookie(name: &str) -> String {
    format!("{name}=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0")
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie_value<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|pair| {
        let (k, v) = pair.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> SessionLimits {
        SessionLimits {
            idle_ms: 1000,
            lifetime_ms: 10_000,
            max_sessions: 3,
        }
    }

    #[test]
    fn a_session_lives_while_used_and_ends_when_idle() {
        let s = Sessions::new(limits());
        let (t, _) = s.start("anna", 0);
        assert_eq!(s.touch(&t, 999).map(|x| x.account), Some("anna".into()));
        assert!(s.touch(&t, 1998).is_some(), "used at 999: alive until 1999");
        assert!(s.touch(&t, 2998).is_none(), "idle 1000 ms: ended");
        assert!(s.touch(&t, 2999).is_none(), "and stays ended");
        assert!(s.is_empty());
    }

    #[test]
    fn a_busy_session_ends_at_its_lifetime() {
        let s = Sessions::new(limits());
        let (t, _) = s.start("anna", 0);
        for now in (500..10_000).step_by(500) {
            assert!(s.touch(&t, now).is_some(), "alive at {now}");
        }
        assert!(s.touch(&t, 10_000).is_none());
    }

    #[test]
    fn tokens_differ_and_only_their_hash_is_kept() {
        let s = Sessions::new(limits());
        let (a, sa) = s.start("anna", 0);
        let (b, sb) = s.start("anna", 0);
        assert_ne!(a, b);
        assert_ne!(sa.csrf, sb.csrf);
        assert_eq!(a.len(), 64);
        assert!(s.touch("0".repeat(64).as_str(), 0).is_none());
        let held = s.held();
        assert!(held.contains_key(&key_of(&a)) && !held.keys().any(|k| hex::encode(k) == a));
    }

    #[test]
    fn a_full_store_drops_the_idlest_session() {
        let s = Sessions::new(limits());
        let (a, _) = s.start("a", 0);
        let (b, _) = s.start("b", 10);
        let (c, _) = s.start("c", 20);
        assert!(s.touch(&a, 30).is_some());
        let (d, _) = s.start("d", 40);
        assert_eq!(s.len(), 3);
        assert!(s.touch(&b, 41).is_none(), "b was idle longest");
        for t in [&a, &c, &d] {
            assert!(s.touch(t, 41).is_some());
        }
    }

    #[test]
    fn sign_out_and_disable_end_sessions() {
        let s = Sessions::new(limits());
        let (a1, _) = s.start("anna", 0);
        let (a2, _) = s.start("anna", 0);
        let (b, _) = s.start("ben", 0);
        s.end(&a1);
        assert!(s.touch(&a1, 1).is_none());
        assert!(s.touch(&a2, 1).is_some());
        s.end_all_of("anna");
        assert!(s.touch(&a2, 2).is_none());
        assert!(s.touch(&b, 2).is_some());
    }

    #[test]
    fn cookies() {
        let n = cookie_name("jugendamt.kreis-segeberg");
        assert_eq!(n, "__Host-kurzdraht-jugendamt-kreis-segeberg");
        assert_eq!(
            set_cookie(&n, "ab"),
            format!("{n}=ab; Path=/; Secure; HttpOnly; SameSite=Strict")
        );
        let header = format!("x=1; {n}=abc; y=2");
        assert_eq!(cookie_value(&header, &n), Some("abc"));
        assert_eq!(cookie_value("x=1", &n), None);
        assert_eq!(cookie_value(&format!("{n}x=1"), &n), None);
    }
}
