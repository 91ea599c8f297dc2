//! The client's one error type: a configuration it cannot use, or a node it cannot reach.
//! A node's refusal of a call is not an error of this crate: it is the `tonic::Status`
//! the call returns, read with [`crate::status`].

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// `client.toml` or a file it names cannot be used; `key` names the setting.
    #[error("configuration: {key}: {reason}")]
    Config { key: String, reason: String },
    /// The node could not be reached or the TLS handshake failed.
    #[error("transport: {0}")]
    Transport(#[from] tonic::transport::Error),
}

impl ClientError {
    pub fn config(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Config {
            key: key.into(),
            reason: reason.into(),
        }
    }
}
