//! `client.toml`: how an IT system reaches its node, and the secret-file rule it shares
//! with the node (a secret is read only from a file no other user may read).

use crate::ClientError;
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientFile {
    agency: String,
    endpoint: String,
    ca_cert: PathBuf,
    token_file: PathBuf,
}

/// How an IT system reaches its node.
#[derive(Clone)]
pub struct ClientConfig {
    pub agency: String,
    pub endpoint: String,
    pub ca_pem: String,
    pub(crate) token: String,
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("agency", &self.agency)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl ClientConfig {
    /// Reads `client.toml`; the files it names are relative to its directory.
    pub fn load(path: &Path) -> Result<Self, ClientError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ClientError::config("client", format!("cannot read {}: {e}", path.display()))
        })?;
        let file: ClientFile = toml::from_str(&text)
            .map_err(|e| ClientError::config("client.toml", e.message().to_string()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let ca_pem = std::fs::read_to_string(base.join(&file.ca_cert)).map_err(|e| {
            ClientError::config(
                "ca_cert",
                format!("cannot read {}: {e}", file.ca_cert.display()),
            )
        })?;
        let token = read_secret("token_file", &base.join(&file.token_file))?
            .trim()
            .to_string();
        Ok(Self {
            agency: file.agency,
            endpoint: file.endpoint,
            ca_pem,
            token,
        })
    }

    /// A configuration with an explicit token (tests of wrong tokens).
    pub fn with_token(&self, token: &str) -> Self {
        Self {
            token: token.to_string(),
            ..self.clone()
        }
    }
}

/// Reads a secret (a key, a token) from a file only its owner may read; `key` names the
/// setting in errors. Refuses a file other users may read, before reading it.
pub fn read_secret(key: &str, path: &Path) -> Result<String, ClientError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(path).map_err(|e| {
            ClientError::config(key, format!("cannot read {}: {e}", path.display()))
        })?;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(ClientError::config(
                key,
                format!(
                    "{} may be read by other users (mode {:o}); restrict it to the owner (chmod 600)",
                    path.display(),
                    meta.permissions().mode() & 0o777
                ),
            ));
        }
    }
    std::fs::read_to_string(path)
        .map_err(|e| ClientError::config(key, format!("cannot read {}: {e}", path.display())))
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn write(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        path
    }

    fn client_dir(token_mode: u32) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), "ca.pem", "CA", 0o644);
        write(dir.path(), "api.token", "secret-token\n", token_mode);
        write(
            dir.path(),
            "client.toml",
            "agency = \"jobcenter-segeberg\"\nendpoint = \"https://127.0.0.1:1\"\n\
             ca_cert = \"ca.pem\"\ntoken_file = \"api.token\"\n",
            0o644,
        );
        dir
    }

    #[test]
    fn loads_a_client_file_relative_to_its_directory() {
        let dir = client_dir(0o600);
        let config = ClientConfig::load(&dir.path().join("client.toml")).expect("load");
        assert_eq!(config.agency, "jobcenter-segeberg");
        assert_eq!(config.ca_pem, "CA");
        assert_eq!(config.token, "secret-token");
        // The token never shows in the debug output.
        assert!(!format!("{config:?}").contains("secret-token"));
    }

    #[test]
    fn refuses_a_token_others_may_read_naming_the_setting() {
        let dir = client_dir(0o640);
        let err = ClientConfig::load(&dir.path().join("client.toml")).expect_err("refused");
        match err {
            ClientError::Config { key, reason } => {
                assert_eq!(key, "token_file");
                assert!(reason.contains("chmod 600"), "{reason}");
            }
            other => panic!("{other}"),
        }
    }

    #[test]
    fn refuses_an_unknown_setting() {
        let dir = client_dir(0o600);
        let path = dir.path().join("client.toml");
        let mut text = std::fs::read_to_string(&path).expect("read");
        text.push_str("tokn = \"x\"\n");
        std::fs::write(&path, text).expect("write");
        let err = ClientConfig::load(&path).expect_err("refused");
        assert!(
            matches!(&err, ClientError::Config { key, .. } if key == "client.toml"),
            "{err}"
        );
    }
}
