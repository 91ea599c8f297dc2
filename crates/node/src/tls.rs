//! TLS for both listeners and for outgoing peer connections (rustls with the `ring`
//! provider, through tonic). Every certificate is issued by the federation CA and names its
//! agency id as DNS subject alternative name; that name is how a node knows who is calling.
//!
//! Architecture invariant: the PeerExchange listener requires a client certificate of the
//! federation CA; the agency it names is the only sender whose envelopes it accepts.

use crate::{config::TlsMaterial, directory::Directory, NodeError};
use rustls_pki_types::{CertificateDer, ServerName};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// How long a caller may take to complete the TLS handshake on either port; the
/// connection (and its slot, see [`crate::connection_limits`]) is dropped after that.
pub const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

fn identity(m: &TlsMaterial) -> Identity {
    Identity::from_pem(&m.cert_pem, &m.key_pem)
}

/// The PeerExchange listener: mutual TLS, client certificates of the federation CA only.
pub fn peer_server_tls(m: &TlsMaterial) -> ServerTlsConfig {
    ServerTlsConfig::new()
        .identity(identity(m))
        .client_ca_root(Certificate::from_pem(&m.ca_pem))
        .client_auth_optional(false)
        .timeout(HANDSHAKE_TIMEOUT)
}

/// The AgencyApi listener: server-authenticated TLS; callers authenticate with a token.
pub fn api_server_tls(m: &TlsMaterial) -> ServerTlsConfig {
    ServerTlsConfig::new()
        .identity(identity(m))
        .timeout(HANDSHAKE_TIMEOUT)
}

/// Outgoing connection to `peer`: presents this node's certificate and accepts only a
/// server certificate of the federation CA that names `peer`.
pub fn peer_client_tls(m: &TlsMaterial, peer: &str) -> ClientTlsConfig {
    ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&m.ca_pem))
        .identity(identity(m))
        .domain_name(peer)
}

/// An IT system's connection to its node's AgencyApi.
pub fn api_client_tls(ca_pem: &str, agency: &str) -> ClientTlsConfig {
    ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name(agency)
}

/// The agency a (chain-verified) client certificate names: exactly one directory entry.
pub fn agency_of_certificate(
    cert: &CertificateDer<'_>,
    directory: &Directory,
) -> Result<String, NodeError> {
    let ee = webpki::EndEntityCert::try_from(cert)
        .map_err(|e| NodeError::PermissionDenied(format!("unreadable client certificate: {e}")))?;
    let mut named = directory.agencies().filter(|a| {
        ServerName::try_from(a.id.as_str())
            .map(|n| ee.verify_is_valid_for_subject_name(&n).is_ok())
            .unwrap_or(false)
    });
    match (named.next(), named.next()) {
        (Some(a), None) => Ok(a.id.clone()),
        (None, _) => Err(NodeError::PermissionDenied(
            "the client certificate names no agency of the directory".into(),
        )),
        (Some(_), Some(_)) => Err(NodeError::PermissionDenied(
            "the client certificate names more than one agency".into(),
        )),
    }
}
