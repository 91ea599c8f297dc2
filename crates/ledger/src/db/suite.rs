//! The adapter suite: what every engine behind the storage interface must do, checked on
//! real files in a temporary directory. An adapter runs it with
//! `crate::adapter_suite!(open)`, where `open(dir)` opens (or creates) its store in `dir`.

use super::{Batch, Db, TxStop};
use crate::error::LedgerError;
use std::path::Path;

/// Opens an adapter's store in a directory.
pub(crate) type Open = fn(&Path) -> Result<Db, LedgerError>;

/// One `#[test]` per check of the suite, each against the adapter opened by `$open`.
#[macro_export]
#[doc(hidden)]
macro_rules! adapter_suite {
    ($open:path) => {
        $crate::adapter_suite!(@tests $open;
            transactions_commit_all_or_nothing,
            an_aborted_transaction_leaves_nothing,
            a_transaction_reads_its_own_writes,
            conflicting_transactions_lose_no_update,
            ranges_keep_key_order_and_bounds,
            prefix_scans_find_exactly_their_prefix,
            remove_takes_the_entry_out,
            compare_and_swap_and_batches,
            ids_are_never_handed_out_twice,
            flushed_data_survives_a_reopen,
        );
    };
    (@tests $open:path; $($name:ident),+ $(,)?) => {
        $(
            #[test]
            fn $name() {
                $crate::db::suite::$name($open);
            }
        )+
    };
}

fn store(open: Open) -> (tempfile::TempDir, Db) {
    let dir = tempfile::tempdir().expect("test");
    let db = open(dir.path()).expect("test");
    (dir, db)
}

fn keys(entries: impl Iterator<Item = Result<(Vec<u8>, Vec<u8>), LedgerError>>) -> Vec<Vec<u8>> {
    entries.map(|kv| kv.expect("test").0).collect()
}

pub(crate) fn transactions_commit_all_or_nothing(open: Open) {
    let (_dir, db) = store(open);
    let (a, b) = (
        db.open_tree("a").expect("test"),
        db.open_tree("b").expect("test"),
    );
    let n = db
        .transaction(&[&a, &b], |tx| {
            tx.on(&a).insert(b"k", b"1")?;
            tx.on(&b).insert(b"k", b"2")?;
            Ok(7)
        })
        .expect("test");
    assert_eq!(n, 7, "the closure's result");
    assert_eq!(a.get(b"k").expect("test").as_deref(), Some(&b"1"[..]));
    assert_eq!(b.get(b"k").expect("test").as_deref(), Some(&b"2"[..]));
}

pub(crate) fn an_aborted_transaction_leaves_nothing(open: Open) {
    let (_dir, db) = store(open);
    let (a, b) = (
        db.open_tree("a").expect("test"),
        db.open_tree("b").expect("test"),
    );
    a.insert(b"kept", b"old").expect("test");
    let aborted = db.transaction(&[&a, &b], |tx| -> super::TxResult<()> {
        tx.on(&a).insert(b"kept", b"new")?;
        tx.on(&a).insert(b"new", b"x")?;
        tx.on(&b).insert(b"new", b"y")?;
        tx.on(&a).remove(b"kept")?;
        Err(TxStop::Abort(LedgerError::UnknownMessage {
            message_id: "m-1".into(),
        }))
    });
    match aborted {
        Err(LedgerError::UnknownMessage { message_id }) => assert_eq!(message_id, "m-1"),
        other => panic!("expected the closure's own error, got {other:?}"),
    }
    assert_eq!(a.get(b"kept").expect("test").as_deref(), Some(&b"old"[..]));
    assert!(a.get(b"new").expect("test").is_none());
    assert!(b.is_empty().expect("test"));
    assert_eq!(a.len().expect("test"), 1);
}

pub(crate) fn a_transaction_reads_its_own_writes(open: Open) {
    let (_dir, db) = store(open);
    let a = db.open_tree("a").expect("test");
    a.insert(b"gone", b"1").expect("test");
    db.transaction(&[&a], |tx| {
        let t = tx.on(&a);
        assert_eq!(t.insert(b"k", b"1")?, None);
        assert_eq!(t.get(b"k")?.as_deref(), Some(&b"1"[..]));
        assert_eq!(t.insert(b"k", b"2")?.as_deref(), Some(&b"1"[..]));
        assert_eq!(t.remove(b"gone")?.as_deref(), Some(&b"1"[..]));
        assert_eq!(t.get(b"gone")?, None);
        Ok(())
    })
    .expect("test");
    assert_eq!(a.get(b"k").expect("test").as_deref(), Some(&b"2"[..]));
    assert!(a.get(b"gone").expect("test").is_none());
}

/// Transactions on several threads increment one counter, each yielding between its read
/// and its write: none may lose another's increment. (An engine that runs one transaction
/// at a time never reports a conflict; one that runs them optimistically must see the
/// conflict and run the loser again, [`TxStop::Conflict`].)
pub(crate) fn conflicting_transactions_lose_no_update(open: Open) {
    let (_dir, db) = store(open);
    let a = db.open_tree("a").expect("test");
    let (threads, each) = (4, 50u64);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                for _ in 0..each {
                    db.transaction(&[&a], |tx| {
                        let t = tx.on(&a);
                        let n = t
                            .get(b"n")?
                            .map(|v| u64::from_be_bytes(v.try_into().expect("test")))
                            .unwrap_or(0);
                        // let another thread in between the read and the write
                        std::thread::yield_now();
                        t.insert(b"n", (n + 1).to_be_bytes())?;
                        Ok(())
                    })
                    .expect("test");
                }
            });
        }
    });
    let n = a.get(b"n").expect("test").expect("test");
    assert_eq!(
        u64::from_be_bytes(n.try_into().expect("test")),
        threads * each
    );
}

pub(crate) fn ranges_keep_key_order_and_bounds(open: Open) {
    let (_dir, db) = store(open);
    let a = db.open_tree("a").expect("test");
    for k in [&b"c"[..], b"a", b"b\xff", b"b", b"", b"d\x00"] {
        a.insert(k, k).expect("test");
    }
    let all: Vec<Vec<u8>> = [&b""[..], b"a", b"b", b"b\xff", b"c", b"d\x00"]
        .map(<[u8]>::to_vec)
        .to_vec();
    assert_eq!(keys(a.iter()), all, "ascending byte order");
    let values: Vec<_> = a.iter().map(|kv| kv.expect("test")).collect();
    assert!(
        values.iter().all(|(k, v)| k == v),
        "each key with its value"
    );
    assert_eq!(
        keys(a.range(&b"b"[..]..&b"c"[..])),
        [b"b".to_vec(), b"b\xff".to_vec()]
    );
    assert_eq!(
        keys(a.range(&b"b"[..]..=&b"c"[..])),
        [b"b".to_vec(), b"b\xff".to_vec(), b"c".to_vec()]
    );
    assert_eq!(keys(a.range(&b"b\x00"[..]..)), all[3..].to_vec());
    assert_eq!(keys(a.range(..&b"b"[..])), all[..2].to_vec());
    assert_eq!(keys(a.range(&b"x"[..]..)), Vec::<Vec<u8>>::new());
    assert_eq!(
        keys(a.range(&b"a"[..]..).take(2)),
        [b"a".to_vec(), b"b".to_vec()],
        "read lazily from the start"
    );
    let reversed = |v: &[Vec<u8>]| v.iter().rev().cloned().collect::<Vec<_>>();
    assert_eq!(keys(a.range_rev::<&[u8]>(..)), reversed(&all), "descending");
    assert_eq!(
        keys(a.range_rev(&b"b"[..]..&b"c"[..])),
        [b"b\xff".to_vec(), b"b".to_vec()],
        "descending within the bounds, the end excluded"
    );
    assert_eq!(
        keys(a.range_rev(..=&b"b"[..]).take(2)),
        [b"b".to_vec(), b"a".to_vec()],
        "read lazily from the end, the end included"
    );
}

pub(crate) fn prefix_scans_find_exactly_their_prefix(open: Open) {
    let (_dir, db) = store(open);
    let a = db.open_tree("a").expect("test");
    for k in [
        &b"peer\x00\x01\x02"[..],
        b"peer\x00\x01\x01",
        b"peer\x00\x02",
        b"peer\x01",
        b"pee",
        b"peer",
        b"\xff\xff\x01",
        b"\xff\xff",
        b"\xff",
    ] {
        a.insert(k, b"").expect("test");
    }
    assert_eq!(
        keys(a.scan_prefix(b"peer\x00\x01")),
        [b"peer\x00\x01\x01".to_vec(), b"peer\x00\x01\x02".to_vec()]
    );
    assert_eq!(keys(a.scan_prefix(b"peer\x00")).len(), 3);
    assert_eq!(keys(a.scan_prefix(b"peer")).len(), 5);
    assert_eq!(
        keys(a.scan_prefix(b"\xff\xff")),
        [b"\xff\xff".to_vec(), b"\xff\xff\x01".to_vec()],
        "a prefix of 0xff bytes has no successor: scanned to the end"
    );
    assert_eq!(keys(a.scan_prefix(b"")).len(), 9);
    assert!(keys(a.scan_prefix(b"q")).is_empty());
}

pub(crate) fn remove_takes_the_entry_out(open: Open) {
    let (_dir, db) = store(open);
    let a = db.open_tree("a").expect("test");
    a.insert(b"k", b"v").expect("test");
    a.insert(b"l", b"w").expect("test");
    assert_eq!(a.remove(b"k").expect("test").as_deref(), Some(&b"v"[..]));
    assert_eq!(a.remove(b"k").expect("test"), None, "already gone");
    assert!(!a.contains_key(b"k").expect("test"));
    assert_eq!(keys(a.iter()), [b"l".to_vec()]);
    assert_eq!(a.len().expect("test"), 1);
}

pub(crate) fn compare_and_swap_and_batches(open: Open) {
    let (_dir, db) = store(open);
    let a = db.open_tree("a").expect("test");
    assert!(a.compare_and_swap(b"k", None, Some(b"1")).expect("test"));
    assert!(
        !a.compare_and_swap(b"k", None, Some(b"2")).expect("test"),
        "not absent"
    );
    assert!(
        !a.compare_and_swap(b"k", Some(b"9"), None).expect("test"),
        "not 9"
    );
    assert!(a.compare_and_swap(b"k", Some(b"1"), None).expect("test"));
    assert!(a.is_empty().expect("test"));
    let mut batch = Batch::default();
    batch.insert(b"x", b"1");
    batch.insert(b"y", b"2");
    batch.remove(b"x");
    a.apply_batch(batch).expect("test");
    assert_eq!(keys(a.iter()), [b"y".to_vec()], "in the order written");
}

pub(crate) fn ids_are_never_handed_out_twice(open: Open) {
    let dir = tempfile::tempdir().expect("test");
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..2 {
        let db = open(dir.path()).expect("test");
        for _ in 0..100 {
            assert!(
                seen.insert(db.generate_id().expect("test")),
                "an id came twice"
            );
        }
        db.flush().expect("test");
    }
}

pub(crate) fn flushed_data_survives_a_reopen(open: Open) {
    let dir = tempfile::tempdir().expect("test");
    {
        let db = open(dir.path()).expect("test");
        let (a, b) = (
            db.open_tree("a").expect("test"),
            db.open_tree("b").expect("test"),
        );
        a.insert(b"plain", b"1").expect("test");
        db.transaction(&[&a, &b], |tx| {
            tx.on(&a).insert(b"in-tx", b"2")?;
            tx.on(&b).insert(b"in-tx", b"3")?;
            Ok(())
        })
        .expect("test");
        db.sync().expect("test");
        db.flush().expect("test");
    }
    let db = open(dir.path()).expect("test");
    let names = db.tree_names().expect("test");
    assert!(
        names.contains(&b"a".to_vec()) && names.contains(&b"b".to_vec()),
        "{names:?}"
    );
    let (a, b) = (
        db.open_tree("a").expect("test"),
        db.open_tree("b").expect("test"),
    );
    assert_eq!(
        keys(a.iter()),
        [b"in-tx".to_vec(), b"plain".to_vec()],
        "both writes, in order"
    );
    assert_eq!(b.get(b"in-tx").expect("test").as_deref(), Some(&b"3"[..]));
    assert!(db.size_on_disk().expect("test") > 0);
}
