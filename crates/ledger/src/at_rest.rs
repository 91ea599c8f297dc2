//! Encryption at rest: the values of the trees that hold personal data (`consents`,
//! `inbox`, `outbox`; `requests` too, whose request hashes are hashes over it) are sealed with ChaCha20-Poly1305 under the node's data key, which
//! lives in a file outside the data directory. A copy of the data directory alone reveals no
//! names. The audit chain and message status hold no personal data and stay readable, so
//! `kurzdraht audit verify` needs no key.
//!
//! Stored form: `"kd1"` ‖ 12-byte random nonce ‖ ciphertext ‖ tag. The associated data is
//! the tree name and the record's key, so a sealed value cannot be moved to another key.

use crate::LedgerError;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};

const MAGIC: &[u8] = b"kd1";

/// A node's 32-byte data key. Never printed.
#[derive(Clone)]
pub struct DataKey([u8; 32]);

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(..)")
    }
}

impl DataKey {
    pub fn generate() -> Result<Self, LedgerError> {
        let mut k = [0u8; 32];
        getrandom::fill(&mut k).map_err(|e| LedgerError::corrupt("randomness", e))?;
        Ok(Self(k))
    }

    /// Reads 64 hex digits (surrounding white space allowed).
    pub fn from_hex(text: &str) -> Result<Self, LedgerError> {
        let bytes = hex::decode(text.trim())
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or(LedgerError::BadDataKey {
                reason: "must be 64 hex digits",
            })?;
        Ok(Self(bytes))
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

fn key_bytes(key: Option<&DataKey>) -> Option<&[u8; 32]> {
    key.map(|k| &k.0)
}

/// Whether a stored value is sealed (as [`AtRest::seal`] writes it).
pub(crate) fn is_sealed(stored: &[u8]) -> bool {
    stored.starts_with(MAGIC)
}

/// Seals and opens values of the encrypted trees; without a key it can do neither.
pub(crate) struct AtRest {
    key: Option<LessSafeKey>,
    /// Tags a person for the person index (HMAC-SHA256 under a key derived from the data
    /// key): names and dates of birth are guessable, so a plain hash would reveal them.
    person: Option<ring::hmac::Key>,
}

fn aad(tree: &str, key: &[u8]) -> Vec<u8> {
    let mut a = Vec::with_capacity(tree.len() + 1 + key.len());
    a.extend_from_slice(tree.as_bytes());
    a.push(0);
    a.extend_from_slice(key);
    a
}

impl AtRest {
    pub(crate) fn new(key: Option<&DataKey>) -> Result<Self, LedgerError> {
        let key_of = key;
        let key = key
            .map(|k| {
                UnboundKey::new(&CHACHA20_POLY1305, &k.0)
                    .map(LessSafeKey::new)
                    .map_err(|_| LedgerError::BadDataKey {
                        reason: "not a ChaCha20-Poly1305 key",
                    })
            })
            .transpose()?;
        let person = key_bytes(key_of).map(|k| {
            let derived = ring::hmac::sign(
                &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, k),
                b"kurzdraht/v1/person-index",
            );
            ring::hmac::Key::new(ring::hmac::HMAC_SHA256, derived.as_ref())
        });
        Ok(Self { key, person })
    }

    /// The person index's tag of `normalised` (a person as `consent::person_of` writes
    /// it); `None` without the data key.
    pub(crate) fn person_tag(&self, normalised: &[u8]) -> Option<[u8; 32]> {
        let tag = ring::hmac::sign(self.person.as_ref()?, normalised);
        <[u8; 32]>::try_from(tag.as_ref()).ok()
    }

    pub(crate) fn has_key(&self) -> bool {
        self.key.is_some()
    }

    pub(crate) fn seal(
        &self,
        tree: &str,
        key: &[u8],
        plain: &[u8],
    ) -> Result<Vec<u8>, LedgerError> {
        let k = self.key.as_ref().ok_or(LedgerError::NoDataKey)?;
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|e| LedgerError::corrupt("randomness", e))?;
        let mut body = plain.to_vec();
        k.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad(tree, key)),
            &mut body,
        )
        .map_err(|_| LedgerError::corrupt("encryption", "seal failed"))?;
        let mut out = Vec::with_capacity(MAGIC.len() + NONCE_LEN + body.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&body);
        Ok(out)
    }

    pub(crate) fn open(
        &self,
        tree: &'static str,
        key: &[u8],
        stored: &[u8],
    ) -> Result<Vec<u8>, LedgerError> {
        let k = self.key.as_ref().ok_or(LedgerError::NoDataKey)?;
        let rest = stored
            .strip_prefix(MAGIC)
            .ok_or_else(|| LedgerError::corrupt(tree, "value is not sealed"))?;
        if rest.len() < NONCE_LEN {
            return Err(LedgerError::corrupt(tree, "sealed value too short"));
        }
        let (nonce, body) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce)
            .map_err(|_| LedgerError::corrupt(tree, "bad nonce"))?;
        let mut body = body.to_vec();
        let plain = k
            .open_in_place(nonce, Aad::from(aad(tree, key)), &mut body)
            .map_err(|_| {
                LedgerError::corrupt(tree, "does not decrypt (wrong data key or tampered)")
            })?;
        Ok(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_binding() {
        let key = DataKey::generate().expect("test fixture");
        let at = AtRest::new(Some(&key)).expect("test fixture");
        let sealed = at
            .seal("consents", b"id-1", b"Lena Hansen")
            .expect("test fixture");
        assert!(!sealed.windows(5).any(|w| w == b"Hanse"));
        assert_eq!(
            at.open("consents", b"id-1", &sealed).expect("test fixture"),
            b"Lena Hansen"
        );
        assert!(
            at.open("consents", b"id-2", &sealed).is_err(),
            "bound to its key"
        );
        assert!(
            at.open("inbox", b"id-1", &sealed).is_err(),
            "bound to its tree"
        );
        let other =
            AtRest::new(Some(&DataKey::generate().expect("test fixture"))).expect("test fixture");
        assert!(
            other.open("consents", b"id-1", &sealed).is_err(),
            "wrong key"
        );
        let none = AtRest::new(None).expect("test fixture");
        assert!(matches!(
            none.open("consents", b"id-1", &sealed),
            Err(LedgerError::NoDataKey)
        ));
        assert!(format!("{key:?}").len() < 20);
        assert_eq!(
            DataKey::from_hex(&key.to_hex()).expect("test fixture").0,
            key.0
        );
    }
}
