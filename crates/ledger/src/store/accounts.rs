//! The console's accounts (tree `accounts`: account name → sealed [`StoredAccount`]) and
//! what a login changes in them: each change and its audit entry in one transaction.
//!
//! The store keeps what the node decided: the password only as the Argon2id hash the node
//! made (hashing and verifying are the node's), the failed-login counter and the lock. Audit
//! entries name the account and who acted — never a password, a hash, or a name as typed at
//! a login (an unknown one is recorded as `unknown`).

use super::{abort, Ledger, Tx, TxResult};
use crate::{
    audit::{AuditEvent, AuditNote},
    error::LedgerError,
    records::StoredAccount,
};

/// The tree's name, also the associated data of its sealed values.
const TREE: &str = "accounts";

/// What an account may do in the console.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AccountRole {
    /// Works with cases: consents, messages, the inbox.
    Caseworker,
    /// The data protection officer: the audit chain and access reports.
    DataProtection,
    /// Administration.
    Admin,
}

impl AccountRole {
    pub const ALL: [AccountRole; 3] = [Self::Caseworker, Self::DataProtection, Self::Admin];

    /// The stable name (stored, audited, on the command line).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Caseworker => "caseworker",
            Self::DataProtection => "data-protection",
            Self::Admin => "admin",
        }
    }

    /// The role of a stable name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == name)
    }
}

impl std::fmt::Display for AccountRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// When failed logins lock an account, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockoutPolicy {
    /// Consecutive failures that lock the account.
    pub max_failures: u32,
    /// How long a lock lasts, in seconds.
    pub lock_secs: i64,
}

/// What a failed login did to its account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailedLogin {
    /// Counted (or, for an unknown or disabled account, only audited).
    Counted,
    /// This failure locked the account, or it was locked already: refused until then
    /// (seconds since 1970).
    Locked { until_secs: i64 },
}

/// What a login with a verified password found when it was recorded.
#[derive(Debug, Clone, PartialEq)]
pub enum Login {
    /// Logged in (counter reset, audited): the account as it is now.
    LoggedIn(StoredAccount),
    /// The account is locked until then (seconds since 1970); nothing recorded.
    Locked { until_secs: i64 },
    /// The account is gone, disabled, or its password changed since it was verified:
    /// refused like a wrong password (audited as a failure, not counted).
    Refused,
}

fn secs_of(now_ms: i64) -> i64 {
    now_ms.div_euclid(1000)
}

/// The lock in force at `now_ms`, if any.
fn locked_until(account: &StoredAccount, now_ms: i64) -> Option<i64> {
    (secs_of(now_ms) < account.locked_until_secs).then_some(account.locked_until_secs)
}

impl Tx<'_> {
    fn account(&self, name: &str) -> TxResult<Option<StoredAccount>> {
        self.get_sealed(self.accounts, TREE, name.as_bytes())
    }

    fn existing_account(&self, name: &str) -> TxResult<StoredAccount> {
        match self.account(name)? {
            Some(a) => Ok(a),
            None => abort(LedgerError::UnknownAccount {
                name: name.to_string(),
            }),
        }
    }

    fn put_account(&self, account: &StoredAccount) -> TxResult<()> {
        self.put_sealed(self.accounts, TREE, account.name.as_bytes(), account)
    }
}

impl Ledger {
    /// Adds `account` (its name must be new), audited as `account.added` by `by`.
    pub fn add_account(
        &self,
        account: &StoredAccount,
        by: &str,
        now_ms: i64,
    ) -> Result<(), LedgerError> {
        self.tx(|t| {
            if t.account(&account.name)?.is_some() {
                return abort(LedgerError::AccountExists {
                    name: account.name.clone(),
                });
            }
            t.put_account(account)?;
            t.append_audit(
                AuditNote::new(AuditEvent::AccountAdded).detail(format!(
                    "account={} role={} by={by}",
                    account.name, account.role
                )),
                now_ms,
            )
        })
    }

    /// Sets a new password hash; also lifts a lock and clears the failed-login counter.
    /// Audited as `account.password-changed`.
    pub fn set_account_password(
        &self,
        name: &str,
        password_hash: &str,
        by: &str,
        now_ms: i64,
    ) -> Result<StoredAccount, LedgerError> {
        self.tx(|t| {
            let mut account = t.existing_account(name)?;
            account.password_hash = password_hash.to_string();
            account.failed_logins = 0;
            account.locked_until_secs = 0;
            account.updated_at_ms = now_ms;
            t.put_account(&account)?;
            t.append_audit(
                AuditNote::new(AuditEvent::AccountPasswordChanged)
                    .detail(format!("account={name} by={by}")),
                now_ms,
            )?;
            Ok(account)
        })
    }

    /// Gives the account `role`, audited as `account.role-changed` (nothing changes, and
    /// nothing is audited, if it has the role already).
    pub fn set_account_role(
        &self,
        name: &str,
        role: AccountRole,
        by: &str,
        now_ms: i64,
    ) -> Result<StoredAccount, LedgerError> {
        self.tx(|t| {
            let mut account = t.existing_account(name)?;
            if account.role == role.as_str() {
                return Ok(account);
            }
            let from = std::mem::replace(&mut account.role, role.as_str().to_string());
            account.updated_at_ms = now_ms;
            t.put_account(&account)?;
            t.append_audit(
                AuditNote::new(AuditEvent::AccountRoleChanged)
                    .detail(format!("account={name} from={from} to={role} by={by}")),
                now_ms,
            )?;
            Ok(account)
        })
    }

    /// Disables the account (it can no longer log in), audited as `account.disabled`;
    /// nothing changes if it is disabled already.
    pub fn disable_account(
        &self,
        name: &str,
        by: &str,
        now_ms: i64,
    ) -> Result<StoredAccount, LedgerError> {
        self.tx(|t| {
            let mut account = t.existing_account(name)?;
            if account.disabled {
                return Ok(account);
            }
            account.disabled = true;
            account.updated_at_ms = now_ms;
            t.put_account(&account)?;
            t.append_audit(
                AuditNote::new(AuditEvent::AccountDisabled)
                    .detail(format!("account={name} by={by}")),
                now_ms,
            )?;
            Ok(account)
        })
    }

    /// The account `name`, if there is one.
    pub fn account(&self, name: &str) -> Result<Option<StoredAccount>, LedgerError> {
        self.get_sealed(&self.accounts, TREE, name.as_bytes())
    }

    /// Every account, by name (a node has a few dozen).
    pub fn accounts(&self) -> Result<Vec<StoredAccount>, LedgerError> {
        self.accounts
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                self.open_sealed(TREE, &k, &v)
            })
            .collect()
    }

    /// Records a login whose password verified against `verified_hash`: if the account
    /// still has that hash, is enabled and not locked, its counter is reset and
    /// `console.login` audited, in one transaction.
    pub fn record_login(
        &self,
        name: &str,
        verified_hash: &str,
        now_ms: i64,
    ) -> Result<Login, LedgerError> {
        self.tx(|t| {
            let Some(mut account) = t.account(name)? else {
                t.append_audit(failed_note("unknown"), now_ms)?;
                return Ok(Login::Refused);
            };
            if let Some(until_secs) = locked_until(&account, now_ms) {
                return Ok(Login::Locked { until_secs });
            }
            if account.disabled || account.password_hash != verified_hash {
                t.append_audit(failed_note(name), now_ms)?;
                return Ok(Login::Refused);
            }
            if account.failed_logins != 0 || account.locked_until_secs != 0 {
                account.failed_logins = 0;
                account.locked_until_secs = 0;
                t.put_account(&account)?;
            }
            t.append_audit(
                AuditNote::new(AuditEvent::ConsoleLogin).detail(format!("account={name}")),
                now_ms,
            )?;
            Ok(Login::LoggedIn(account))
        })
    }

    /// Records a failed login: `console.login-failed` with the account, or `unknown` when
    /// `account` is `None` (no such account — the name as typed is never stored). An
    /// enabled account's counter goes up; at `policy.max_failures` it is locked for
    /// `policy.lock_secs` (`console.locked`, the counter starts again) — in the same
    /// transaction. A failure while the account is locked changes and audits nothing.
    pub fn record_failed_login(
        &self,
        account: Option<&str>,
        policy: LockoutPolicy,
        now_ms: i64,
    ) -> Result<FailedLogin, LedgerError> {
        self.tx(|t| {
            let held = match account {
                Some(name) => t.account(name)?,
                None => None,
            };
            let Some(mut held) = held else {
                t.append_audit(failed_note("unknown"), now_ms)?;
                return Ok(FailedLogin::Counted);
            };
            if let Some(until_secs) = locked_until(&held, now_ms) {
                return Ok(FailedLogin::Locked { until_secs });
            }
            t.append_audit(failed_note(&held.name), now_ms)?;
            if held.disabled {
                return Ok(FailedLogin::Counted);
            }
            held.failed_logins = held.failed_logins.saturating_add(1);
            let mut outcome = FailedLogin::Counted;
            if held.failed_logins >= policy.max_failures {
                let until_secs = secs_of(now_ms).saturating_add(policy.lock_secs);
                held.failed_logins = 0;
                held.locked_until_secs = until_secs;
                t.append_audit(
                    AuditNote::new(AuditEvent::ConsoleLocked)
                        .detail(format!("account={} until={until_secs}", held.name)),
                    now_ms,
                )?;
                outcome = FailedLogin::Locked { until_secs };
            }
            t.put_account(&held)?;
            Ok(outcome)
        })
    }

    /// The raw `accounts` tree, for tests that look at what is stored on disk.
    #[doc(hidden)]
    pub fn accounts_tree(&self) -> &crate::db::Tree {
        &self.accounts
    }
}

fn failed_note(account: &str) -> AuditNote {
    AuditNote::new(AuditEvent::ConsoleLoginFailed).detail(format!("account={account}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DataKey, StoreOptions};

    const POLICY: LockoutPolicy = LockoutPolicy {
        max_failures: 5,
        lock_secs: 900,
    };

    fn lena(now_ms: i64) -> StoredAccount {
        StoredAccount {
            name: "l.jensen".into(),
            display_name: "Lars Jensen".into(),
            role: AccountRole::Caseworker.as_str().into(),
            password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
            created_at_ms: now_ms,
            updated_at_ms: now_ms,
            ..Default::default()
        }
    }

    fn key(byte: u8) -> DataKey {
        DataKey::from_hex(&format!("{byte:02x}").repeat(32)).expect("test")
    }

    #[test]
    fn roles_have_stable_names() {
        for role in AccountRole::ALL {
            assert_eq!(AccountRole::from_name(role.as_str()), Some(role));
        }
        assert_eq!(
            AccountRole::ALL.map(AccountRole::as_str),
            ["caseworker", "data-protection", "admin"]
        );
        assert_eq!(AccountRole::from_name("Admin"), None);
    }

    #[test]
    fn debug_never_shows_the_hash() {
        let shown = format!("{:?}", lena(1));
        assert!(shown.contains("l.jensen"), "{shown}");
        assert!(!shown.contains("argon2"), "{shown}");
    }

    #[test]
    fn failures_lock_and_a_success_resets() {
        let dir = tempfile::tempdir().expect("test");
        let ledger =
            Ledger::open_with(dir.path(), Some(&key(7)), StoreOptions::default()).expect("test");
        let t0 = 1_800_000_000_000;
        let account = lena(t0);
        ledger.add_account(&account, "admin", t0).expect("test");
        for _ in 0..4 {
            assert_eq!(
                ledger
                    .record_failed_login(Some("l.jensen"), POLICY, t0)
                    .expect("test"),
                FailedLogin::Counted
            );
        }
        let ok = ledger
            .record_login("l.jensen", &account.password_hash, t0)
            .expect("test");
        assert!(matches!(ok, Login::LoggedIn(a) if a.failed_logins == 0));
        for _ in 0..4 {
            ledger
                .record_failed_login(Some("l.jensen"), POLICY, t0)
                .expect("test");
        }
        let until = t0 / 1000 + 900;
        assert_eq!(
            ledger
                .record_failed_login(Some("l.jensen"), POLICY, t0)
                .expect("test"),
            FailedLogin::Locked { until_secs: until }
        );
        assert_eq!(
            ledger
                .record_login("l.jensen", &account.password_hash, t0 + 899_999)
                .expect("test"),
            Login::Locked { until_secs: until }
        );
        assert!(matches!(
            ledger
                .record_login("l.jensen", &account.password_hash, t0 + 900_000)
                .expect("test"),
            Login::LoggedIn(_)
        ));
        let events: Vec<String> = ledger
            .audit_entries()
            .expect("test")
            .into_iter()
            .map(|e| e.event)
            .collect();
        assert_eq!(events.first().map(String::as_str), Some("account.added"));
        assert_eq!(
            events.iter().filter(|e| *e == "console.locked").count(),
            1,
            "{events:?}"
        );
    }

    /// The accounts tree is sealed, rekeyed with the rest, and carried by a backup.
    #[test]
    fn accounts_are_sealed_rekeyed_and_backed_up() {
        let dir = tempfile::tempdir().expect("test");
        let store = dir.path().join("store");
        let ledger =
            Ledger::open_with(&store, Some(&key(1)), StoreOptions::default()).expect("test");
        ledger.add_account(&lena(5), "admin", 5).expect("test");
        for kv in ledger.accounts_tree().iter() {
            let (_, v) = kv.expect("test");
            assert!(crate::at_rest::is_sealed(&v), "stored unsealed");
            assert!(
                !v.windows(6).any(|w| w == b"argon2"),
                "the hash is readable on disk"
            );
        }
        let archive = dir.path().join("backup.kzb");
        ledger
            .export(
                crate::BackupManifest::default(),
                std::fs::File::create(&archive).expect("test"),
            )
            .expect("test");
        assert!(ledger.rekey(&key(2)).expect("test") >= 1);
        let rekeyed =
            Ledger::open_with(&store, Some(&key(2)), StoreOptions::default()).expect("test");
        assert_eq!(
            rekeyed.account("l.jensen").expect("test"),
            Some(lena(5)),
            "the account reads under the new key"
        );
        drop(rekeyed);
        let restored = dir.path().join("restored");
        crate::backup::restore(&archive, &restored).expect("test");
        let restored =
            Ledger::open_with(&restored, Some(&key(1)), StoreOptions::default()).expect("test");
        assert_eq!(restored.accounts().expect("test"), vec![lena(5)]);
    }
}
