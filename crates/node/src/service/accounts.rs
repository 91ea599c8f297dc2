//! [`Accounts`]: the console's local accounts — adding them, new passwords, roles,
//! disabling, listing — and the login check (`authenticate`) with its lockout.
//!
//! Rules: a name is `[a-z0-9][a-z0-9._-]{0,63}`; a display name 1–100 characters without
//! control characters; a password 12–256 characters. Passwords are hashed with Argon2id
//! (OWASP parameters: 19 MiB, 2 passes, 1 lane; a random 16-byte salt; a PHC string) on a
//! blocking thread, and verified there too. A login that fails — unknown name, wrong
//! password, disabled account — gets one answer, [`NodeError::Unauthenticated`] with
//! [`LOGIN_REFUSED`], and an unknown name costs one verification too (against
//! [`DUMMY_HASH`]), so neither the answer nor its time tells whether an account exists.
//! [`MAX_FAILURES`] consecutive failures lock the account for [`LOCK_SECS`] on the node's
//! clock ([`NodeError::AccountLocked`], saying until when); the lock is in the store, so it
//! outlives a restart. Passwords and hashes appear in no log, audit entry or `Debug`.

use crate::shared::Shared;
use crate::NodeError;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use kurzdraht_ledger::{
    AccountRole, FailedLogin, LedgerError, LockoutPolicy, Login, StoredAccount,
};

/// The one answer to a login that failed for any reason but a lock.
pub const LOGIN_REFUSED: &str = "name or password wrong";
/// Consecutive failed logins that lock an account.
pub const MAX_FAILURES: u32 = 5;
/// How long a lock lasts: 15 minutes.
pub const LOCK_SECS: i64 = 15 * 60;
/// Argon2id memory in KiB (OWASP: 19 MiB), passes and lanes.
pub const ARGON2_M_KIB: u32 = 19_456;
pub const ARGON2_T: u32 = 2;
pub const ARGON2_P: u32 = 1;
/// Length limits, in characters.
pub const NAME_MAX: usize = 64;
pub const DISPLAY_NAME_MAX: usize = 100;
pub const PASSWORD_MIN: usize = 12;
pub const PASSWORD_MAX: usize = 256;

/// A made-up hash (no password is known to match it) with the parameters above: a login
/// with an unknown name is verified against it, so that it takes as long as one with a
/// known name (verifying computes a whole hash either way).
pub const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$a3VyemRyYWh0LWR1bW15$0dsRRrQF4HnYzZNdNI3r1Q0n0qLRUa3vuRlV1uHK5aY";

/// An account as the console and the operators see it: never its password hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountView {
    pub name: String,
    pub display_name: String,
    pub role: AccountRole,
    pub disabled: bool,
    /// Failed logins since the last success or lock.
    pub failed_logins: u32,
    /// Locked until then (seconds since 1970, the node's clock); `None`: not locked now.
    pub locked_until_secs: Option<i64>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

impl AccountView {
    fn of(account: &StoredAccount, now_ms: i64) -> Result<Self, NodeError> {
        let role = AccountRole::from_name(&account.role).ok_or_else(|| {
            NodeError::Internal(format!(
                "account {} has an unknown stored role",
                account.name
            ))
        })?;
        Ok(Self {
            name: account.name.clone(),
            display_name: account.display_name.clone(),
            role,
            disabled: account.disabled,
            failed_logins: account.failed_logins,
            locked_until_secs: (now_ms.div_euclid(1000) < account.locked_until_secs)
                .then_some(account.locked_until_secs),
            created_at_ms: account.created_at_ms,
            updated_at_ms: account.updated_at_ms,
        })
    }
}

/// The console's accounts on this node.
#[derive(Clone)]
pub struct Accounts {
    shared: Shared,
}

fn argon2() -> Result<Argon2<'static>, NodeError> {
    let params = Params::new(ARGON2_M_KIB, ARGON2_T, ARGON2_P, None)
        .map_err(|e| NodeError::Internal(format!("Argon2 parameters: {e}")))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// Hashes `password` with a fresh salt (blocking: call on a blocking thread).
fn hash_blocking(password: &str) -> Result<String, NodeError> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| NodeError::Internal(format!("random salt: {e}")))?;
    let salt = SaltString::encode_b64(&salt)
        .map_err(|e| NodeError::Internal(format!("salt encoding: {e}")))?;
    Ok(argon2()?
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| NodeError::Internal(format!("password hashing: {e}")))?
        .to_string())
}

/// Whether `password` matches the PHC string `hash` (blocking). A hash that does not parse
/// matches nothing.
fn verify_blocking(password: &str, hash: &str) -> Result<bool, NodeError> {
    let Ok(parsed) = PasswordHash::new(hash) else {
        return Ok(false);
    };
    Ok(argon2()?
        .verify_password(password.as_bytes(), &parsed)
        .is_ok())
}

async fn blocking<T: Send + 'static>(
    what: &'static str,
    f: impl FnOnce() -> Result<T, NodeError> + Send + 'static,
) -> Result<T, NodeError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| NodeError::Task(format!("{what}: {e}")))?
}

/// A name as the rules allow it: `[a-z0-9][a-z0-9._-]{0,63}`.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit())
        && name.len() <= NAME_MAX
        && chars
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'))
}

fn check_name(field: &str, name: &str) -> Result<(), NodeError> {
    if valid_name(name) {
        Ok(())
    } else {
        Err(NodeError::invalid(
            field,
            format!(
                "must be 1 to {NAME_MAX} characters: lower-case letters a-z, digits, '.', '_' \
                 or '-', beginning with a letter or digit"
            ),
        ))
    }
}

fn check_display_name(display_name: &str) -> Result<(), NodeError> {
    let n = display_name.chars().count();
    if n == 0 || n > DISPLAY_NAME_MAX {
        return Err(NodeError::invalid(
            "display_name",
            format!("must be 1 to {DISPLAY_NAME_MAX} characters (has {n})"),
        ));
    }
    if display_name.chars().any(char::is_control) {
        return Err(NodeError::invalid(
            "display_name",
            "must be one line without control characters",
        ));
    }
    Ok(())
}

fn check_password(password: &str) -> Result<(), NodeError> {
    let n = password.chars().count();
    if !(PASSWORD_MIN..=PASSWORD_MAX).contains(&n) {
        return Err(NodeError::invalid(
            "password",
            format!("must be {PASSWORD_MIN} to {PASSWORD_MAX} characters (has {n})"),
        ));
    }
    Ok(())
}

fn unknown_account(e: LedgerError) -> NodeError {
    match e {
        LedgerError::UnknownAccount { name } => NodeError::NotFound(format!("account {name}")),
        e => e.into(),
    }
}

impl Accounts {
    pub(crate) fn new(shared: Shared) -> Self {
        Self { shared }
    }

    fn policy() -> LockoutPolicy {
        LockoutPolicy {
            max_failures: MAX_FAILURES,
            lock_secs: LOCK_SECS,
        }
    }

    async fn durable(
        &self,
        account: &StoredAccount,
        now_ms: i64,
    ) -> Result<AccountView, NodeError> {
        self.shared.ledger().flush().await?;
        AccountView::of(account, now_ms)
    }

    /// Adds an account (`by`: who, for the audit chain). Refuses an invalid field naming it
    /// (`name`, `display_name`, `password`) and a name in use (ALREADY_EXISTS).
    pub async fn add(
        &self,
        by: &str,
        name: &str,
        display_name: &str,
        role: AccountRole,
        password: &str,
    ) -> Result<AccountView, NodeError> {
        check_name("name", name)?;
        check_display_name(display_name)?;
        check_password(password)?;
        let password = password.to_string();
        let password_hash = blocking("password hashing", move || hash_blocking(&password)).await?;
        let now = self.shared.now_ms();
        let account = StoredAccount {
            name: name.to_string(),
            display_name: display_name.to_string(),
            role: role.as_str().to_string(),
            password_hash,
            created_at_ms: now,
            updated_at_ms: now,
            ..Default::default()
        };
        self.shared.ledger().add_account(&account, by, now)?;
        tracing::info!(account = name, role = %role, by, "account added");
        self.durable(&account, now).await
    }

    /// Sets a new password (and lifts a lock).
    pub async fn set_password(
        &self,
        by: &str,
        name: &str,
        password: &str,
    ) -> Result<AccountView, NodeError> {
        check_name("name", name)?;
        check_password(password)?;
        if self.shared.ledger().account(name)?.is_none() {
            return Err(NodeError::NotFound(format!("account {name}")));
        }
        let password = password.to_string();
        let password_hash = blocking("password hashing", move || hash_blocking(&password)).await?;
        let now = self.shared.now_ms();
        let account = self
            .shared
            .ledger()
            .set_account_password(name, &password_hash, by, now)
            .map_err(unknown_account)?;
        tracing::info!(account = name, by, "account password changed");
        self.durable(&account, now).await
    }

    /// Gives an account another role; it takes effect at the account's next request.
    pub async fn set_role(
        &self,
        by: &str,
        name: &str,
        role: AccountRole,
    ) -> Result<AccountView, NodeError> {
        check_name("name", name)?;
        let now = self.shared.now_ms();
        let account = self
            .shared
            .ledger()
            .set_account_role(name, role, by, now)
            .map_err(unknown_account)?;
        tracing::info!(account = name, role = %role, by, "account role set");
        self.durable(&account, now).await
    }

    /// Disables an account: it can no longer log in, and its sessions end at their next
    /// request (the console checks [`Accounts::get`] on each).
    pub async fn disable(&self, by: &str, name: &str) -> Result<AccountView, NodeError> {
        check_name("name", name)?;
        let now = self.shared.now_ms();
        let account = self
            .shared
            .ledger()
            .disable_account(name, by, now)
            .map_err(unknown_account)?;
        tracing::info!(account = name, by, "account disabled");
        self.durable(&account, now).await
    }

    /// Every account, by name.
    pub fn list(&self) -> Result<Vec<AccountView>, NodeError> {
        let now = self.shared.now_ms();
        self.shared
            .ledger()
            .accounts()?
            .iter()
            .map(|a| AccountView::of(a, now))
            .collect()
    }

    /// The account `name` as it is now (`None`: no such account, or not a valid name).
    pub fn get(&self, name: &str) -> Result<Option<AccountView>, NodeError> {
        if !valid_name(name) {
            return Ok(None);
        }
        let now = self.shared.now_ms();
        self.shared
            .ledger()
            .account(name)?
            .map(|a| AccountView::of(&a, now))
            .transpose()
    }

    /// The login check. Unknown name, wrong password and disabled account all give
    /// [`NodeError::Unauthenticated`] with [`LOGIN_REFUSED`]; a locked account gives
    /// [`NodeError::AccountLocked`] (without checking the password). Each attempt is
    /// audited (`console.login`, `console.login-failed` — for an unknown name as `unknown`
    /// — and `console.locked`) and durable before the answer.
    pub async fn authenticate(&self, name: &str, password: &str) -> Result<AccountView, NodeError> {
        let ledger = self.shared.ledger();
        let held = if valid_name(name) {
            ledger.account(name)?
        } else {
            None
        };
        if let Some(account) = &held {
            let now = self.shared.now_ms();
            if now.div_euclid(1000) < account.locked_until_secs {
                return Err(NodeError::AccountLocked {
                    until_secs: account.locked_until_secs,
                });
            }
        }
        let hash = held
            .as_ref()
            .map_or(DUMMY_HASH, |a| a.password_hash.as_str())
            .to_string();
        let (typed, verified_hash) = (password.to_string(), hash.clone());
        let matches = blocking("password check", move || {
            verify_blocking(&typed, &verified_hash)
        })
        .await?;
        let now = self.shared.now_ms();
        let login = match (&held, matches) {
            (Some(account), true) => ledger.record_login(&account.name, &hash, now)?,
            _ => Login::Refused,
        };
        let result = match login {
            Login::LoggedIn(account) => AccountView::of(&account, now),
            Login::Locked { until_secs } => Err(NodeError::AccountLocked { until_secs }),
            Login::Refused => {
                let failed = match &held {
                    // record_login audited the refusal of a verified password already
                    Some(_) if matches => FailedLogin::Counted,
                    Some(account) => {
                        ledger.record_failed_login(Some(&account.name), Self::policy(), now)?
                    }
                    None => ledger.record_failed_login(None, Self::policy(), now)?,
                };
                match failed {
                    FailedLogin::Counted => Err(NodeError::Unauthenticated(LOGIN_REFUSED.into())),
                    FailedLogin::Locked { until_secs } => {
                        Err(NodeError::AccountLocked { until_secs })
                    }
                }
            }
        };
        ledger.flush().await?;
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_rule() {
        for ok in ["a", "l.jensen", "0", "jc-admin_2", &"a".repeat(64)] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in [
            "",
            "Lena",
            ".a",
            "-a",
            "a b",
            "ä",
            "a/b",
            &"a".repeat(65),
            "a\n",
        ] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn the_dummy_hash_has_the_parameters_of_real_ones() {
        let dummy = PasswordHash::new(DUMMY_HASH).expect("the dummy hash parses");
        let real = hash_blocking("correct horse battery").expect("hash");
        let real = PasswordHash::new(&real).expect("parses");
        assert_eq!(dummy.algorithm, real.algorithm);
        assert_eq!(dummy.version, real.version);
        assert_eq!(dummy.params, real.params);
        assert_eq!(dummy.hash.map(|h| h.len()), real.hash.map(|h| h.len()));
        assert!(!verify_blocking("", DUMMY_HASH).expect("verify"));
    }

    #[test]
    fn a_hash_verifies_its_password_only() {
        let hash = hash_blocking("correct horse battery").expect("hash");
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        assert!(verify_blocking("correct horse battery", &hash).expect("verify"));
        assert!(!verify_blocking("correct horse batterY", &hash).expect("verify"));
        assert_ne!(
            hash,
            hash_blocking("correct horse battery").expect("hash"),
            "salted"
        );
    }
}
