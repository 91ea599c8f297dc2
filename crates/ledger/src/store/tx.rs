//! The transaction: [`Tx`] is every tree of the store inside one engine transaction, with
//! the data key; [`Ledger::tx`] runs one (under the write pause an online backup takes).
//! Sealed values are read and written here, in a transaction and outside one.

use super::{decode, Ledger};
use crate::{
    at_rest::AtRest,
    db::{Tree, TxTree},
    error::LedgerError,
};
use prost::Message;

pub(super) use crate::db::{TxResult, TxStop};

pub(super) struct Tx<'a> {
    pub(super) at_rest: &'a AtRest,
    pub(super) consents: TxTree<'a>,
    pub(super) outbox: TxTree<'a>,
    pub(super) messages: TxTree<'a>,
    pub(super) inbox: TxTree<'a>,
    pub(super) inbox_seq: TxTree<'a>,
    pub(super) audit: TxTree<'a>,
    pub(super) meta: TxTree<'a>,
    pub(super) retention: TxTree<'a>,
    pub(super) requests: TxTree<'a>,
    pub(super) delivered: TxTree<'a>,
    pub(super) accounts: TxTree<'a>,
    pub(super) cases: TxTree<'a>,
}

/// Ends the transaction without writing anything, with `e`.
pub(super) fn abort<T>(e: LedgerError) -> TxResult<T> {
    Err(TxStop::Abort(e))
}

pub(super) fn tx_decode<T: Message + Default>(what: &'static str, bytes: &[u8]) -> TxResult<T> {
    Ok(decode(what, bytes)?)
}

impl Tx<'_> {
    /// Reads and opens a sealed value of `tree` (named `name`).
    pub(super) fn get_sealed<T: Message + Default>(
        &self,
        tree: TxTree<'_>,
        name: &'static str,
        key: &[u8],
    ) -> TxResult<Option<T>> {
        match tree.get(key)? {
            None => Ok(None),
            Some(v) => {
                let plain = self.at_rest.open(name, key, &v)?;
                tx_decode(name, &plain).map(Some)
            }
        }
    }

    /// Seals and writes a value of `tree` (named `name`).
    pub(super) fn put_sealed<T: Message>(
        &self,
        tree: TxTree<'_>,
        name: &'static str,
        key: &[u8],
        value: &T,
    ) -> TxResult<()> {
        let sealed = self.at_rest.seal(name, key, &value.encode_to_vec())?;
        tree.insert(key, sealed)?;
        Ok(())
    }
}

impl Ledger {
    pub(super) fn open_sealed<T: Message + Default>(
        &self,
        name: &'static str,
        key: &[u8],
        stored: &[u8],
    ) -> Result<T, LedgerError> {
        decode(name, &self.at_rest.open(name, key, stored)?)
    }

    pub(super) fn get_sealed<T: Message + Default>(
        &self,
        tree: &Tree,
        name: &'static str,
        key: &[u8],
    ) -> Result<Option<T>, LedgerError> {
        tree.get(key)?
            .map(|v| self.open_sealed(name, key, &v))
            .transpose()
    }

    /// Held by every write for reading: an online backup waits for writes in progress and
    /// holds new ones back while it copies.
    pub(super) fn write_guard(&self) -> std::sync::RwLockReadGuard<'_, ()> {
        // A panic while holding it leaves no state of its own behind.
        self.writes.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` in one transaction over every tree (see [`crate::db::Db::transaction`]:
    /// all or nothing; `f` may run again after a conflict).
    pub(super) fn tx<R>(&self, f: impl Fn(&Tx<'_>) -> TxResult<R>) -> Result<R, LedgerError> {
        let _writing = self.write_guard();
        let trees = [
            &self.consents,
            &self.outbox,
            &self.messages,
            &self.inbox,
            &self.inbox_seq,
            &self.audit,
            &self.meta,
            &self.retention,
            &self.requests,
            &self.delivered,
            &self.accounts,
            &self.cases,
        ];
        self.db.transaction(&trees, |tx| {
            f(&Tx {
                at_rest: &self.at_rest,
                consents: tx.on(&self.consents),
                outbox: tx.on(&self.outbox),
                messages: tx.on(&self.messages),
                inbox: tx.on(&self.inbox),
                inbox_seq: tx.on(&self.inbox_seq),
                audit: tx.on(&self.audit),
                meta: tx.on(&self.meta),
                retention: tx.on(&self.retention),
                requests: tx.on(&self.requests),
                delivered: tx.on(&self.delivered),
                accounts: tx.on(&self.accounts),
                cases: tx.on(&self.cases),
            })
        })
    }

    /// Outbox sequence numbers for `n` messages (taken outside the transaction: the engine's
    /// id generator is not transactional; a retried transaction keeps them). Also order the
    /// kept deliveries of one millisecond. A store restored from a backup starts the
    /// engine's generator anew, so they begin above every number the backup held (`meta/seq_floor`,
    /// written by the restore).
    pub(super) fn outbox_seqs(&self, n: usize) -> Result<Vec<u64>, LedgerError> {
        (0..n)
            .map(|_| Ok(self.db.generate_id()?.saturating_add(self.seq_floor)))
            .collect()
    }
}
