//! Keys and the directory: an agency's signing key, data key and API token, the federation
//! operator's key, an agency's directory entry, and assembling, extending, versioning and
//! signing the directory.

use super::{random_token, refuse_existing, replace_file, token_hash, write_file, AgencySpec};
use crate::{directory::Directory, NodeError};
use kurzdraht_envelope::{sign_directory, SigningKey};
use std::path::Path;
use time::OffsetDateTime;

/// Writes a new Ed25519 signing key (hex seed, mode 0600) to `path`, which must not exist;
/// returns its public key (hex) for the directory's `signing_keys`.
pub fn new_signing_key(path: &Path) -> Result<String, NodeError> {
    refuse_existing(path)?;
    let key = SigningKey::generate()?;
    write_file(path, &format!("{}\n", key.to_hex()), true)?;
    Ok(key.verifying_key().to_hex())
}

/// Writes a new data key (64 hex digits and a line feed, mode 0600) to `path`.
pub fn new_data_key(path: &Path) -> Result<(), NodeError> {
    refuse_existing(path)?;
    let key = kurzdraht_ledger::DataKey::generate()?;
    write_file(path, &format!("{}\n", key.to_hex()), true)
}

/// Writes a new API token (mode 0600) to `path`; returns the `[api] tokens` entry naming
/// `client` with the token's SHA-256, for node.toml.
pub fn new_api_token(path: &Path, client: &str) -> Result<String, NodeError> {
    refuse_existing(path)?;
    let token = random_token()?;
    write_file(path, &format!("{token}\n"), true)?;
    Ok(format!(
        "{{ client = \"{client}\", sha256 = \"{}\" }}",
        token_hash(&token)
    ))
}

/// The federation operator's key pair: `dir/operator.key` (mode 0600) and
/// `dir/operator.pub`; returns the public key (hex).
pub fn new_operator_key(dir: &Path) -> Result<String, NodeError> {
    let secret = dir.join("operator.key");
    let public = dir.join("operator.pub");
    refuse_existing(&secret)?;
    refuse_existing(&public)?;
    let key = SigningKey::generate()?;
    write_file(&secret, &format!("{}\n", key.to_hex()), true)?;
    let hex = key.verifying_key().to_hex();
    write_file(&public, &format!("{hex}\n"), false)?;
    Ok(hex)
}

/// Signs the directory file at `path` with the operator key (hex seed) after validating it,
/// and writes the signature beside it (`<path>.sig`, replacing an older one). Returns the
/// directory as signed.
pub fn sign_directory_file(path: &Path, operator_seed: &str) -> Result<Directory, NodeError> {
    let operator = SigningKey::from_hex(operator_seed)
        .map_err(|e| NodeError::config("--key", e.to_string()))?;
    let text = std::fs::read_to_string(path).map_err(|e| {
        NodeError::config("directory", format!("cannot read {}: {e}", path.display()))
    })?;
    let directory = Directory::from_toml(&text)?;
    let signature = sign_directory(text.as_bytes(), &operator);
    replace_file(
        &crate::directory::signature_path(path),
        &crate::directory::signature_file(&signature, &operator.verifying_key()),
    )?;
    Ok(directory)
}

/// `text` with its `version = …` line set to `version`.
pub fn with_version(text: &str, version: u64) -> Result<String, NodeError> {
    let mut found = false;
    let lines: Vec<String> = text
        .lines()
        .map(|l| {
            if !found && l.trim_start().starts_with("version") && l.contains('=') {
                found = true;
                format!("version = {version}")
            } else {
                l.to_string()
            }
        })
        .collect();
    if !found {
        return Err(NodeError::config("directory.version", "is missing"));
    }
    Ok(lines.join("\n") + "\n")
}

/// For a federation made by [`init`] in `dir` (demos, tests, benchmarks): replaces its
/// directory by `edit` of it at the next version, signed with `dir/operator.key`.
pub fn update_directory(
    dir: &Path,
    edit: impl FnOnce(&str) -> String,
) -> Result<Directory, NodeError> {
    let path = dir.join("directory.toml");
    let text = std::fs::read_to_string(&path).map_err(|e| {
        NodeError::config("directory", format!("cannot read {}: {e}", path.display()))
    })?;
    let version = Directory::from_toml(&text)?.version() + 1;
    replace_file(&path, &with_version(&edit(&text), version)?)?;
    let operator = crate::config::read_secret("operator.key", &dir.join("operator.key"))?;
    sign_directory_file(&path, &operator)
}

/// A signing key's file name with the month it was made, e.g. `signing-2026-11.key`, so
/// that a rotation never needs to overwrite or rename one.
pub fn dated_signing_key_name() -> String {
    let today = OffsetDateTime::now_utc().date();
    format!(
        "signing-{}-{:02}.key",
        today.year(),
        u8::from(today.month())
    )
}

/// An agency's entry for the directory, as `pki agency-keys` hands it to the federation
/// operator: an `[[agency]]` table, so `directory assemble` (or appending it to a directory)
/// takes it as it is.
pub fn entry_toml(spec: &AgencySpec, endpoint: &str, signing_public: &str) -> String {
    let competence = spec
        .competence
        .iter()
        .map(|c| format!("\"{c}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "[[agency]]\nid = \"{id}\"\nname = \"{name}\"\nrole = \"{role}\"\nendpoint = \"{endpoint}\"\n\
         competence = [{competence}]\nsigning_keys = [{{ key = \"{signing_public}\", state = \"active\" }}]\n",
        id = spec.id,
        name = spec.name,
        role = spec.role.as_str(),
    )
}

/// A directory of version `version` from the agencies' entries ([`entry_toml`]), validated.
pub fn assemble_directory(version: u64, entries: &[String]) -> Result<String, NodeError> {
    let mut text = format!(
        "# kurzdraht directory: every agency, its role, peer endpoint, competence and pinned keys.\n\
         # Signed by the federation operator (directory.toml.sig); raise the version with every change.\n\
         version = {version}\n"
    );
    for entry in entries {
        text.push('\n');
        text.push_str(entry.trim_end());
        text.push('\n');
    }
    Directory::from_toml(&text)?;
    Ok(text)
}

/// The next directory version: every agency of `current` (a directory's text) as it stands
/// there — with its keys in their states, retired and revoked ones too — and then the new
/// agencies' entries, under `version`, which must be higher than `current`'s. Validated
/// like any directory: an agency listed twice, or a place claimed by two agencies of one
/// role, is refused.
pub fn extend_directory(
    current: &str,
    version: u64,
    entries: &[String],
) -> Result<String, NodeError> {
    let in_force = Directory::from_toml(current)?;
    if version <= in_force.version() {
        return Err(NodeError::config(
            "--version",
            format!(
                "must be higher than version {} of the current directory",
                in_force.version()
            ),
        ));
    }
    // `version` is a top-level key, so it stands before the first `[[agency]]`; everything
    // from there on is the agencies, taken as they are written.
    let mut offset = 0;
    let mut agencies = None;
    for line in current.split_inclusive('\n') {
        if line.trim_start().starts_with("[[agency]]") {
            agencies = Some(&current[offset..]);
            break;
        }
        offset += line.len();
    }
    let agencies = agencies
        .ok_or_else(|| NodeError::config("--from", "the current directory lists no agency"))?;
    let mut texts = vec![agencies.to_string()];
    texts.extend(entries.iter().cloned());
    assemble_directory(version, &texts)
}
