//! The federation operator's signature over the directory: Ed25519 over
//! `"kurzdraht/v1/directory\0" ‖ the directory file's exact bytes`, so a node trusts the
//! pinned keys, endpoints and roles only as the operator published them. The domain prefix
//! keeps a directory signature from ever passing for an envelope or receipt signature.

use crate::{SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

/// What a directory signature covers before the file's bytes.
pub const DIRECTORY_DOMAIN: &[u8] = b"kurzdraht/v1/directory\0";

fn signed_bytes(directory: &[u8]) -> Vec<u8> {
    let mut input = Vec::with_capacity(DIRECTORY_DOMAIN.len() + directory.len());
    input.extend_from_slice(DIRECTORY_DOMAIN);
    input.extend_from_slice(directory);
    input
}

/// The operator's signature over a directory file's bytes.
pub fn sign_directory(directory: &[u8], operator: &SigningKey) -> [u8; 64] {
    operator.sign(&signed_bytes(directory))
}

/// Whether `signature` is `operator`'s signature over exactly these bytes.
pub fn verify_directory(directory: &[u8], signature: &[u8], operator: &VerifyingKey) -> bool {
    operator.verify(&signed_bytes(directory), signature)
}

/// The directory's fingerprint: SHA-256 of the file's bytes — what three organisations
/// compare to see that they run the same directory.
pub fn directory_fingerprint(directory: &[u8]) -> [u8; 32] {
    Sha256::digest(directory).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_covers_exactly_the_bytes_and_the_operator() {
        let operator = SigningKey::generate().expect("test fixture");
        let other = SigningKey::generate().expect("test fixture");
        let text = b"version = 1\n";
        let sig = sign_directory(text, &operator);
        assert!(verify_directory(text, &sig, &operator.verifying_key()));
        assert!(!verify_directory(
            b"version = 2\n",
            &sig,
            &operator.verifying_key()
        ));
        assert!(!verify_directory(text, &sig, &other.verifying_key()));
        // an envelope signature over the same bytes is no directory signature
        assert!(!verify_directory(
            text,
            &operator.sign(text),
            &operator.verifying_key()
        ));
    }
}
