//! The directory: every agency of the federation with its role, peer endpoint and pinned
//! Ed25519 keys. Today a TOML file signed off by the agencies; the node trusts nothing
//! about a peer that the directory does not say.

use crate::{policy::Role, NodeError};
use kurzdraht_envelope::{agency::validate_agency_id, VerifyingKey};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, Clone)]
pub struct Agency {
    pub id: String,
    pub name: String,
    pub role: Role,
    /// `https://host:port` of its PeerExchange.
    pub endpoint: String,
    /// Pinned keys; more than one while a key is being rotated.
    pub signing_keys: Vec<VerifyingKey>,
}

#[derive(Debug, Clone, Default)]
pub struct Directory {
    agencies: BTreeMap<String, Agency>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DirectoryFile {
    agency: Vec<AgencyEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AgencyEntry {
    id: String,
    name: String,
    role: Role,
    endpoint: String,
    signing_keys: Vec<String>,
}

impl Directory {
    pub fn load(path: &Path) -> Result<Self, NodeError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            NodeError::config("directory", format!("cannot read {}: {e}", path.display()))
        })?;
        Self::from_toml(&text)
    }

    pub fn from_toml(text: &str) -> Result<Self, NodeError> {
        let file: DirectoryFile = toml::from_str(text)
            .map_err(|e| NodeError::config("directory", e.message().to_string()))?;
        let mut agencies = BTreeMap::new();
        for (i, entry) in file.agency.into_iter().enumerate() {
            let key = |k: &str| format!("directory.agency[{i}].{k}");
            validate_agency_id("agency id", &entry.id)
                .map_err(|e| NodeError::config(key("id"), e.to_string()))?;
            if !(entry.endpoint.starts_with("https://")) {
                return Err(NodeError::config(
                    key("endpoint"),
                    "must be an https:// URL",
                ));
            }
            if entry.signing_keys.is_empty() {
                return Err(NodeError::config(key("signing_keys"), "lists no key"));
            }
            let signing_keys = entry
                .signing_keys
                .iter()
                .map(|k| VerifyingKey::from_hex(k))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| NodeError::config(key("signing_keys"), e.to_string()))?;
            let agency = Agency {
                id: entry.id.clone(),
                name: entry.name,
                role: entry.role,
                endpoint: entry.endpoint,
                signing_keys,
            };
            if agencies.insert(entry.id.clone(), agency).is_some() {
                return Err(NodeError::config(
                    key("id"),
                    format!("{} is listed twice", entry.id),
                ));
            }
        }
        Ok(Self { agencies })
    }

    pub fn get(&self, id: &str) -> Option<&Agency> {
        self.agencies.get(id)
    }

    pub fn agencies(&self) -> impl Iterator<Item = &Agency> {
        self.agencies.values()
    }

    /// The agency or an INVALID_ARGUMENT naming `field`.
    pub fn require(&self, field: &str, id: &str) -> Result<&Agency, NodeError> {
        self.get(id).ok_or_else(|| {
            NodeError::invalid(field, format!("{id:?} is not an agency in the directory"))
        })
    }
}
