//! Ed25519 keys. A signing key lives in a key file as 64 hex digits of its 32-byte seed;
//! a verifying key is pinned in the directory as 64 hex digits. Neither `Debug` nor any
//! error message ever shows a signing key.

use crate::EnvelopeError;
use ed25519_dalek::Signer;

/// An agency's Ed25519 signing key.
#[derive(Clone)]
pub struct SigningKey(ed25519_dalek::SigningKey);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey(public {})", self.verifying_key().to_hex())
    }
}

impl SigningKey {
    /// A fresh key from the operating system's random source.
    pub fn generate() -> Result<Self, EnvelopeError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed)
            .map_err(|e| EnvelopeError::malformed("signing key", format!("no randomness: {e}")))?;
        Ok(Self(ed25519_dalek::SigningKey::from_bytes(&seed)))
    }

    /// Reads the hex seed of a key file (surrounding white space allowed).
    pub fn from_hex(text: &str) -> Result<Self, EnvelopeError> {
        let bytes = decode_32(text.trim())
            .map_err(|reason| EnvelopeError::malformed("signing key", reason))?;
        Ok(Self(ed25519_dalek::SigningKey::from_bytes(&bytes)))
    }

    /// The hex seed, for writing a key file.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0.to_bytes())
    }

    pub fn verifying_key(&self) -> VerifyingKey {
        VerifyingKey(self.0.verifying_key())
    }

    pub(crate) fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.0.sign(message).to_bytes()
    }
}

/// A pinned Ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct VerifyingKey(ed25519_dalek::VerifyingKey);

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VerifyingKey({})", self.to_hex())
    }
}

impl VerifyingKey {
    pub fn from_hex(text: &str) -> Result<Self, EnvelopeError> {
        let bytes = decode_32(text.trim())
            .map_err(|reason| EnvelopeError::malformed("verifying key", reason))?;
        ed25519_dalek::VerifyingKey::from_bytes(&bytes)
            .map(Self)
            .map_err(|_| EnvelopeError::malformed("verifying key", "is not a valid Ed25519 point"))
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0.to_bytes())
    }

    /// Strict verification (no malleable or small-order signatures).
    pub(crate) fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        let Ok(sig) = ed25519_dalek::Signature::from_slice(signature) else {
            return false;
        };
        self.0.verify_strict(message, &sig).is_ok()
    }
}

fn decode_32(text: &str) -> Result<[u8; 32], &'static str> {
    let bytes = hex::decode(text).map_err(|_| "is not hex")?;
    bytes
        .try_into()
        .map_err(|_| "is not 32 bytes (64 hex digits)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let key = SigningKey::generate().expect("test fixture");
        let again = SigningKey::from_hex(&format!("{}\n", key.to_hex())).expect("test fixture");
        assert_eq!(key.verifying_key(), again.verifying_key());
        let pubkey = VerifyingKey::from_hex(&key.verifying_key().to_hex()).expect("test fixture");
        assert_eq!(pubkey, key.verifying_key());
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let key = SigningKey::generate().expect("test fixture");
        assert!(!format!("{key:?}").contains(&key.to_hex()));
    }

    #[test]
    fn refuses_bad_hex() {
        assert!(SigningKey::from_hex("zz").is_err());
        assert!(SigningKey::from_hex("abcd").is_err());
        assert!(VerifyingKey::from_hex(&"00".repeat(31)).is_err());
    }
}
