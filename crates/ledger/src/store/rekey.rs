//! Rotating a stopped store's data key: every sealed value of `consents`, `inbox`, `outbox`,
//! `requests`, `delivered` and `accounts` (and the key check in `meta`) opened with the current key and sealed
//! again under the new one, in one transaction — the store is sealed under the old key or
//! the new, never a mix. Values that are not sealed (the `requests` time index) stay as
//! they are. The transaction holds every re-sealed value in memory until it commits: allow
//! about twice the store's size in memory.

use super::{Ledger, KEY_CHECK};
use crate::at_rest::{is_sealed, AtRest, DataKey};
use crate::{db::Value, LedgerError};

/// The trees whose values are sealed, by name (the name is part of each seal's associated
/// data).
const SEALED_TREES: [&str; 6] = [
    "consents",
    "inbox",
    "outbox",
    "requests",
    "delivered",
    "accounts",
];

impl Ledger {
    /// Seals the whole store under `new` (the ledger must be open with its current key) and
    /// flushes; returns how many values were sealed again. The ledger is consumed: open the
    /// store again with the new key.
    pub fn rekey(self, new: &DataKey) -> Result<u64, LedgerError> {
        if !self.at_rest.has_key() {
            return Err(LedgerError::NoDataKey);
        }
        let next = AtRest::new(Some(new))?;
        let trees = [
            &self.consents,
            &self.inbox,
            &self.outbox,
            &self.requests,
            &self.delivered,
            &self.accounts,
        ];
        let mut resealed: Vec<(usize, Value, Vec<u8>)> = Vec::new();
        for (i, (name, tree)) in SEALED_TREES.into_iter().zip(trees).enumerate() {
            for item in tree.iter() {
                let (key, value) = item?;
                if !is_sealed(&value) {
                    continue;
                }
                let plain = self.at_rest.open(name, &key, &value)?;
                let sealed = next.seal(name, &key, &plain)?;
                resealed.push((i, key, sealed));
            }
        }
        let check = next.seal("meta", KEY_CHECK, b"kurzdraht data key")?;
        // The person index's tags are keyed by the data key: dropped here, built again under
        // the new key at the next open.
        let stale_tags = self.person_index_keys()?;
        self.tx(|t| {
            for k in &stale_tags {
                t.cases.remove(k)?;
            }
            t.meta.remove(super::cases::BUILT)?;
            let views = [
                t.consents,
                t.inbox,
                t.outbox,
                t.requests,
                t.delivered,
                t.accounts,
            ];
            for (i, key, value) in &resealed {
                let view = views
                    .get(*i)
                    .ok_or_else(|| LedgerError::corrupt("rekey", "no such tree"))?;
                view.insert(key, value.as_slice())?;
            }
            t.meta.insert(KEY_CHECK, check.as_slice())?;
            Ok(())
        })?;
        self.db.flush()?;
        Ok(resealed.len() as u64)
    }
}
