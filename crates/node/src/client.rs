//! The IT system's side: `client.toml` and a connected AgencyApi client that sends the
//! bearer token with every call. Used by the CLI, the demo and the tests.

use crate::{config::read_secret, tls, NodeError};
use kurzdraht_proto::v1::{agency_api_client::AgencyApiClient, ConsentEntry, ListConsentsRequest};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};

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
    token: String,
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
    pub fn load(path: &Path) -> Result<Self, NodeError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            NodeError::config("client", format!("cannot read {}: {e}", path.display()))
        })?;
        let file: ClientFile = toml::from_str(&text)
            .map_err(|e| NodeError::config("client.toml", e.message().to_string()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let ca_pem = std::fs::read_to_string(base.join(&file.ca_cert)).map_err(|e| {
            NodeError::config(
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

/// Adds `authorization: Bearer <token>` to every request.
#[derive(Clone)]
pub struct BearerToken(MetadataValue<tonic::metadata::Ascii>);

impl tonic::service::Interceptor for BearerToken {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}

pub type AgencyClient = AgencyApiClient<InterceptedService<Channel, BearerToken>>;

/// Connects to the node's AgencyApi over TLS.
pub async fn connect(config: &ClientConfig) -> Result<AgencyClient, NodeError> {
    let channel = Endpoint::from_shared(config.endpoint.clone())
        .map_err(|e| NodeError::config("endpoint", e.to_string()))?
        .tls_config(tls::api_client_tls(&config.ca_pem, &config.agency))?
        .connect()
        .await?;
    let value = format!("Bearer {}", config.token)
        .parse()
        .map_err(|_| NodeError::config("token_file", "the token is not valid ASCII"))?;
    Ok(AgencyApiClient::with_interceptor(
        channel,
        BearerToken(value),
    ))
}

/// Every consent the node holds, read page by page (ListConsents hands out at most 1,000
/// at a time).
pub async fn all_consents(client: &mut AgencyClient) -> Result<Vec<ConsentEntry>, Status> {
    let mut all = Vec::new();
    let mut after = String::new();
    loop {
        let page = client
            .list_consents(ListConsentsRequest { after, limit: 1000 })
            .await?
            .into_inner();
        all.extend(page.consents);
        if page.next_after.is_empty() {
            return Ok(all);
        }
        after = page.next_after;
    }
}
