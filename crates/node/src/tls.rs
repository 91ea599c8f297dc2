//! TLS for both listeners and for outgoing peer connections (rustls with the `ring`
//! provider, through tonic). Every certificate is issued by the federation CA and names its
//! agency id as DNS subject alternative name; that name is how a node knows who is calling.
//!
//! Architecture invariant: the PeerExchange listener requires a client certificate of the
//! federation CA; the agency it names is the only sender whose envelopes it accepts.
//!
//! [`check_identity`] proves a node's own identity before it serves (and in `config check`):
//! its certificate names its agency and no other, chains to the federation CA and is valid
//! now, and its key is the certificate's.

use crate::{config::TlsMaterial, directory::Directory, pki, NodeError};
use rustls_pki_types::{pem::PemObject, CertificateDer, ServerName, UnixTime};
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

/// What [`check_identity`] proved about the node's certificate.
#[derive(Debug, Clone)]
pub struct ProvenIdentity {
    pub not_after: time::OffsetDateTime,
}

/// Proves that the TLS material is `agency`'s: the certificate names `agency` and no other
/// agency of `directory`, chains to the federation CA of `tls.ca_cert`, is valid at `now`
/// for server and client authentication, and `tls.key` is its key. Each failure is a
/// configuration error naming the file at fault.
pub fn check_identity(
    m: &TlsMaterial,
    agency: &str,
    directory: &Directory,
    now: std::time::SystemTime,
) -> Result<ProvenIdentity, NodeError> {
    let info = pki::certificate_info("tls.cert", &m.cert_pem)?;
    let others: Vec<&str> = info
        .names
        .iter()
        .map(String::as_str)
        .filter(|n| *n != agency && directory.get(n).is_some())
        .collect();
    if !info.names.iter().any(|n| n == agency) || !others.is_empty() {
        return Err(NodeError::config(
            "tls.cert",
            format!(
                "the certificate names [{}], not this node's agency {agency}: it is another agency's certificate",
                info.names.join(", ")
            ),
        ));
    }
    if pki::key_public_info("tls.key", &m.key_pem)? != info.public_key {
        return Err(NodeError::config(
            "tls.key",
            "is not the key of the certificate in tls.cert (another key pair's)",
        ));
    }
    let ca_der = CertificateDer::from_pem_slice(m.ca_pem.as_bytes())
        .map_err(|e| NodeError::config("tls.ca_cert", format!("holds no PEM certificate: {e}")))?;
    let anchor = webpki::anchor_from_trusted_cert(&ca_der).map_err(|e| {
        NodeError::config("tls.ca_cert", format!("is no usable CA certificate: {e}"))
    })?;
    let cert_der = CertificateDer::from_pem_slice(m.cert_pem.as_bytes())
        .map_err(|e| NodeError::config("tls.cert", format!("holds no PEM certificate: {e}")))?;
    let ee = webpki::EndEntityCert::try_from(&cert_der)
        .map_err(|e| NodeError::config("tls.cert", format!("is not a usable certificate: {e}")))?;
    let at = UnixTime::since_unix_epoch(
        now.duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default(),
    );
    for usage in [
        webpki::KeyUsage::server_auth(),
        webpki::KeyUsage::client_auth(),
    ] {
        ee.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            std::slice::from_ref(&anchor),
            &[],
            at,
            usage,
            None,
            None,
        )
        .map_err(|e| {
            let reason = match e {
                webpki::Error::CertExpired { .. } => format!(
                    "expired on {}: renew it (pki tls-request, signed by the federation CA)",
                    info.not_after.date()
                ),
                webpki::Error::CertNotValidYet { .. } => format!(
                    "is not valid before {} (is this host's clock right?)",
                    info.not_before
                ),
                // Another CA of the same name: found by name, its signature fails.
                webpki::Error::UnknownIssuer | webpki::Error::InvalidSignatureForPublicKey => {
                    "is not issued by the federation CA of tls.ca_cert".to_string()
                }
                other => format!("does not verify against the federation CA: {other}"),
            };
            NodeError::config("tls.cert", reason)
        })?;
    }
    Ok(ProvenIdentity {
        not_after: info.not_after,
    })
}
