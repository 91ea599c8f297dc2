//! The Merkle tree of a batch of receipts (RFC 9162, section 2.1): one signature covers a
//! whole batch, and each receipt stays provable alone by its inclusion path.
//!
//! Leaf hash = SHA-256(0x00 || leaf), interior node = SHA-256(0x01 || left || right); a tree
//! of n leaves splits at the largest power of two below n. Built bottom-up, a lone last node
//! of a level moves up unchanged, which gives the same tree.

use sha2::{Digest, Sha256};

/// A SHA-256 digest.
pub type Hash = [u8; 32];

/// The hash of one leaf.
pub fn leaf_hash(leaf: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(leaf);
    h.finalize().into()
}

fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// A built tree: its levels, leaves first, root last.
#[derive(Debug, Clone)]
pub struct Tree {
    levels: Vec<Vec<Hash>>,
}

impl Tree {
    /// Builds the tree over `leaves` (already leaf-hashed). `None` for no leaves: an empty
    /// batch has nothing to sign.
    pub fn build(leaves: Vec<Hash>) -> Option<Self> {
        if leaves.is_empty() {
            return None;
        }
        let mut levels = vec![leaves];
        while let Some(level) = levels.last().filter(|l| l.len() > 1) {
            let next = level
                .chunks(2)
                .map(|pair| match pair {
                    [left, right] => node_hash(left, right),
                    // chunks(2) yields one or two: a lone last node moves up unchanged
                    lone => lone.first().copied().unwrap_or_default(),
                })
                .collect();
            levels.push(next);
        }
        Some(Self { levels })
    }

    pub fn root(&self) -> Hash {
        self.levels
            .last()
            .and_then(|l| l.first())
            .copied()
            .unwrap_or_default()
    }

    pub fn len(&self) -> usize {
        self.levels.first().map_or(0, Vec::len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The inclusion path of leaf `index`: sibling hashes from the leaf up (levels where the
    /// node is a lone last one contribute nothing). Empty for an index outside the tree.
    pub fn path(&self, index: usize) -> Vec<Hash> {
        if index >= self.len() {
            return Vec::new();
        }
        let mut path = Vec::new();
        let mut i = index;
        for level in &self.levels[..self.levels.len() - 1] {
            if let Some(sibling) = level.get(i ^ 1) {
                path.push(*sibling);
            }
            i /= 2;
        }
        path
    }
}

/// Whether `leaf` (already leaf-hashed) is leaf `index` of a tree of `size` leaves with
/// `root`, by `path` (RFC 9162, section 2.1.3.2).
pub fn verify_inclusion(leaf: &Hash, index: u64, size: u64, path: &[Hash], root: &Hash) -> bool {
    if index >= size {
        return false;
    }
    let (mut f, mut s) = (index, size - 1);
    let mut r = *leaf;
    for p in path {
        if s == 0 {
            return false;
        }
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    s == 0 && r == *root
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The recursive definition of RFC 9162, as the reference.
    fn mth(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => Sha256::digest([]).into(),
            1 => leaves[0],
            n => {
                let k = largest_power_of_two_below(n);
                node_hash(&mth(&leaves[..k]), &mth(&leaves[k..]))
            }
        }
    }

    fn reference_path(m: usize, leaves: &[Hash]) -> Vec<Hash> {
        let n = leaves.len();
        if n <= 1 {
            return Vec::new();
        }
        let k = largest_power_of_two_below(n);
        if m < k {
            let mut p = reference_path(m, &leaves[..k]);
            p.push(mth(&leaves[k..]));
            p
        } else {
            let mut p = reference_path(m - k, &leaves[k..]);
            p.push(mth(&leaves[..k]));
            p
        }
    }

    fn largest_power_of_two_below(n: usize) -> usize {
        let mut k = 1;
        while k * 2 < n {
            k *= 2;
        }
        k
    }

    /// The root that `path` proves for `leaf` at index `m` of a tree of `n` leaves, read
    /// off the recursive definition (the last path element is the sibling subtree at the
    /// top); `None` if the path does not fit the shape of that tree.
    fn root_from_path(leaf: &Hash, m: usize, n: usize, path: &[Hash]) -> Option<Hash> {
        if m >= n {
            return None;
        }
        if n == 1 {
            return path.is_empty().then_some(*leaf);
        }
        let (sibling, below) = path.split_last()?;
        let k = largest_power_of_two_below(n);
        if m < k {
            Some(node_hash(&root_from_path(leaf, m, k, below)?, sibling))
        } else {
            Some(node_hash(
                sibling,
                &root_from_path(leaf, m - k, n - k, below)?,
            ))
        }
    }

    /// Whether leaf `m`'s proof in a tree of `n` leaves, claimed for a tree of `size`
    /// leaves, is accepted; checked against the definition.
    ///
    /// A wrong size is refused unless the path has the same shape in both trees (leaf 0 of
    /// 3 and of 4, say): the proof binds the leaf to the root, the size only shapes the
    /// path. Receipts sign size and root together, so that is no way around the check.
    fn accepted_with_size(l: &[Hash], m: usize, path: &[Hash], root: &Hash, size: usize) -> bool {
        let accepted = verify_inclusion(&l[m], m as u64, size as u64, path, root);
        let by_definition = root_from_path(&l[m], m, size, path) == Some(*root);
        assert_eq!(
            accepted,
            by_definition,
            "leaf {m} of {} claimed in a tree of {size}",
            l.len()
        );
        accepted
    }

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n)
            .map(|i| leaf_hash(&(i as u64).to_be_bytes()))
            .collect()
    }

    #[test]
    fn empty_batch_has_no_tree() {
        assert!(Tree::build(Vec::new()).is_none());
    }

    #[test]
    fn matches_the_rfc_definition_for_every_size_up_to_300() {
        let (mut refused, mut claims) = (0, 0);
        for n in 1..=300 {
            let l = leaves(n);
            let tree = Tree::build(l.clone()).expect("non-empty");
            assert_eq!(tree.root(), mth(&l), "root of {n}");
            for m in 0..n {
                let path = tree.path(m);
                assert_eq!(path, reference_path(m, &l), "path {m} of {n}");
                assert!(verify_inclusion(
                    &l[m],
                    m as u64,
                    n as u64,
                    &path,
                    &tree.root()
                ));
                assert_eq!(root_from_path(&l[m], m, n, &path), Some(tree.root()));
                // the same proof claimed for a tree one leaf smaller or larger
                for size in [n - 1, n + 1] {
                    claims += 1;
                    if !accepted_with_size(&l, m, &path, &tree.root(), size) {
                        refused += 1;
                    }
                }
            }
        }
        // both outcomes occur: a size that changes the path's shape (for a leaf on the
        // right edge) and one that does not
        assert!(
            refused > 0 && refused < claims,
            "{refused} of {claims} wrong sizes refused"
        );
    }

    #[test]
    fn a_wrong_size_is_refused_where_it_changes_the_path() {
        let check = |n: usize, m: usize, size: usize| {
            let l = leaves(n);
            let tree = Tree::build(l.clone()).expect("non-empty");
            accepted_with_size(&l, m, &tree.path(m), &tree.root(), size)
        };
        // leaf 2 of 3 is a right child in a tree of 4, a promoted node in one of 3
        assert!(!check(3, 2, 4));
        // the path is one element too short for 5 leaves, one too long for 4
        assert!(!check(4, 0, 5));
        assert!(!check(5, 0, 4));
        // the index lies outside the smaller tree
        assert!(!check(4, 3, 3));
        // leaf 0 has the same path shape in trees of 3 and 4 leaves
        assert!(check(3, 0, 4));
        assert!(check(4, 0, 3));
    }

    proptest! {
        #[test]
        fn a_wrong_leaf_index_path_or_size_is_refused_as_defined(
            n in 1usize..200,
            m in 0usize..200,
            other in 0usize..200,
            flip in 0usize..(32 * 8),
        ) {
            let m = m % n;
            let l = leaves(n);
            let tree = Tree::build(l.clone()).expect("non-empty");
            let root = tree.root();
            let path = tree.path(m);
            prop_assert!(verify_inclusion(&l[m], m as u64, n as u64, &path, &root));
            // another leaf at this position
            let stranger = leaf_hash(b"not in the batch");
            prop_assert!(!verify_inclusion(&stranger, m as u64, n as u64, &path, &root));
            // the same leaf claimed at another position
            if other % n != m {
                prop_assert!(!verify_inclusion(&l[m], (other % n) as u64, n as u64, &path, &root));
            }
            // any bit of any path element flipped
            if !path.is_empty() {
                let mut bad = path.clone();
                let at = flip % (bad.len() * 32 * 8);
                bad[at / 256][(at % 256) / 8] ^= 1 << (at % 8);
                prop_assert!(!verify_inclusion(&l[m], m as u64, n as u64, &bad, &root));
            }
            // a path with an element dropped or added
            if !path.is_empty() {
                prop_assert!(!verify_inclusion(&l[m], m as u64, n as u64, &path[1..], &root));
            }
            let mut longer = path.clone();
            longer.push(stranger);
            prop_assert!(!verify_inclusion(&l[m], m as u64, n as u64, &longer, &root));
            // an index outside the tree
            prop_assert!(!verify_inclusion(&l[m], n as u64, n as u64, &path, &root));
            // a size one too large or too small: refused unless the path has the same
            // shape in that tree (see `accepted_with_size`)
            accepted_with_size(&l, m, &path, &root, n + 1);
            accepted_with_size(&l, m, &path, &root, n - 1);
        }
    }
}
