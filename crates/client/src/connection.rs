//! A connected AgencyApi client: TLS to the node (its certificate must name the agency),
//! and the bearer token on every call.

use crate::{ClientConfig, ClientError};
use kurzdraht_proto::v1::{agency_api_client::AgencyApiClient, ConsentEntry, ListConsentsRequest};
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Request, Status};

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

/// TLS to an agency's AgencyApi: the federation's CA, and a certificate naming the agency.
pub fn api_client_tls(ca_pem: &str, agency: &str) -> ClientTlsConfig {
    ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name(agency)
}

/// Connects to the node's AgencyApi over TLS.
pub async fn connect(config: &ClientConfig) -> Result<AgencyClient, ClientError> {
    let channel = Endpoint::from_shared(config.endpoint.clone())
        .map_err(|e| ClientError::config("endpoint", e.to_string()))?
        .tls_config(api_client_tls(&config.ca_pem, &config.agency))?
        .connect()
        .await?;
    let value = format!("Bearer {}", config.token)
        .parse()
        .map_err(|_| ClientError::config("token_file", "the token is not valid ASCII"))?;
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
