//! The federation operator's signature over a directory file: the `.sig` file beside it
//! (written by `kurzdraht directory sign`) and its check against the pinned operator key.

use crate::NodeError;
use kurzdraht_envelope::{verify_directory, VerifyingKey};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The file beside a directory that holds its signature: `<directory file>.sig`.
pub fn signature_path(directory: &Path) -> PathBuf {
    let mut name = directory.as_os_str().to_owned();
    name.push(".sig");
    PathBuf::from(name)
}

/// The operator's signature file, as `kurzdraht directory sign` writes it.
pub fn signature_file(signature: &[u8; 64], operator: &VerifyingKey) -> String {
    format!(
        "# The federation operator's signature over the directory file beside it\n\
         # (kurzdraht directory sign; check it with kurzdraht directory verify).\n\
         operator_key = \"{}\"\nsignature = \"{}\"\n",
        operator.to_hex(),
        hex::encode(signature)
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignatureFile {
    operator_key: String,
    signature: String,
}

/// Why a directory's signature does not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureProblem {
    /// The signature file is missing or not a signature file.
    Unreadable(String),
    /// Signed by another operator key than the one pinned.
    OtherOperator { signed_by: String },
    /// The signature does not verify: the file was changed after it was signed.
    DoesNotVerify,
}

impl std::fmt::Display for SignatureProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unreadable(why) => f.write_str(why),
            Self::OtherOperator { signed_by } => write!(
                f,
                "it is signed by operator key {signed_by}, not by the operator key this node pins"
            ),
            Self::DoesNotVerify => f.write_str(
                "its signature does not verify: the file was changed after it was signed",
            ),
        }
    }
}

/// Checks the operator's signature (the text of a `.sig` file) over a directory's bytes.
pub fn check_signature(
    directory: &[u8],
    signature_text: &str,
    operator: &VerifyingKey,
) -> Result<(), SignatureProblem> {
    let file: SignatureFile = toml::from_str(signature_text).map_err(|e| {
        SignatureProblem::Unreadable(format!("not a signature file: {}", e.message()))
    })?;
    let signed_by = VerifyingKey::from_hex(&file.operator_key)
        .map_err(|e| SignatureProblem::Unreadable(format!("operator_key: {e}")))?;
    if signed_by != *operator {
        return Err(SignatureProblem::OtherOperator {
            signed_by: file.operator_key,
        });
    }
    let signature = hex::decode(file.signature.trim())
        .map_err(|_| SignatureProblem::Unreadable("signature: is not hex".into()))?;
    if verify_directory(directory, &signature, operator) {
        Ok(())
    } else {
        Err(SignatureProblem::DoesNotVerify)
    }
}

/// Reads an Ed25519 public key file (64 hex digits), e.g. the operator's `operator.pub`.
pub fn read_public_key(key: &str, path: &Path) -> Result<VerifyingKey, NodeError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| NodeError::config(key, format!("cannot read {}: {e}", path.display())))?;
    VerifyingKey::from_hex(&text)
        .map_err(|e| NodeError::config(key, format!("{}: {e}", path.display())))
}
