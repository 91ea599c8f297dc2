//! TLS for both listeners and for outgoing peer connections (rustls with the `ring`
//! provider, through tonic). Every certificate is issued by the federation CA and names its
//! agency id as DNS subject alternative name; that name is how a node knows who is calling.
//!
//! Architecture invariant: the PeerExchange listener requires a client certificate of the
//! federation CA; the agency it names is the only sender whose envelopes it accepts.
//!
//! Revoked certificates: the directory in force lists, per agency, TLS certificates no node
//! accepts any more (by SHA-256 of the DER form). The PeerExchange listener checks the
//! client certificate against it on every call ([`check_not_revoked`], from
//! `peer_exchange::Admitted`), so a directory taken without restart refuses at once, also on
//! connections already open. Outgoing peer connections ([`peer_endpoint`]) verify the
//! peer's server certificate with [`PeerServerVerifier`]: the CA's chain and name as before,
//! then the revocations of the directory in force at the handshake; the delivery transport
//! connects anew when a newer directory is in force, so an open connection to a peer whose
//! certificate was revoked carries nothing more.
//!
//! [`check_identity`] proves a node's own identity before it serves (and in `config check`):
//! its certificate names its agency and no other, chains to the federation CA and is valid
//! now, and its key is the certificate's.

use crate::{config::TlsMaterial, directory::Directory, pki, NodeError};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{pem::PemObject, CertificateDer, ServerName, UnixTime};
use std::sync::Arc;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig};

/// How long a caller may take to complete the TLS handshake on either port; the
/// connection (and its slot, see [`crate::rpc::connection_limits`]) is dropped after that.
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

/// Where an outgoing peer connection learns which certificates are revoked: the directory
/// in force at the handshake, and whom to tell of a refusal.
pub trait PeerTrust: Send + Sync + 'static {
    /// The directory in force now.
    fn directory_in_force(&self) -> Arc<Directory>;
    /// A peer presented a revoked server certificate (already logged).
    fn refused_revoked(&self) {}
}

/// A fixed directory (`config check --reach-peers`).
impl PeerTrust for Arc<Directory> {
    fn directory_in_force(&self) -> Arc<Directory> {
        self.clone()
    }
}

/// A running node: its directory in force; a refusal is counted as a refusal
/// `certificate-revoked` (`kurzdraht_refusals_total`).
impl PeerTrust for crate::shared::Shared {
    fn directory_in_force(&self) -> Arc<Directory> {
        self.directory()
    }
    fn refused_revoked(&self) {
        self.metrics().refused("certificate-revoked");
    }
}

/// Refuses the certificate `der` of `agency` (chain-verified, naming the agency) if the
/// directory lists it as revoked for that agency. `role` says which certificate it is
/// ("client" or "server"), for the message. The refusal names the agency and the
/// certificate's fingerprint, nothing else.
pub fn check_not_revoked(
    der: &[u8],
    agency: &str,
    directory: &Directory,
    role: &str,
) -> Result<(), NodeError> {
    let Some(revoked) = directory.get(agency).and_then(|a| a.revocation_of(der)) else {
        return Ok(());
    };
    Err(NodeError::CertificateRevoked(format!(
        "the {role} certificate of {agency} (sha256 {}) is revoked since {} in directory version {}: {agency} needs a renewed certificate",
        hex::encode(revoked.sha256),
        revoked.since,
        directory.version()
    )))
}

/// Verifies a peer's server certificate: the federation CA's chain and the peer's name
/// (rustls' WebPKI verifier), then that the directory in force does not list it as revoked
/// for the peer.
pub struct PeerServerVerifier {
    chain: Arc<WebPkiServerVerifier>,
    peer: String,
    trust: Arc<dyn PeerTrust>,
}

impl std::fmt::Debug for PeerServerVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerServerVerifier")
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

impl ServerCertVerifier for PeerServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified = self.chain.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        let directory = self.trust.directory_in_force();
        if let Err(e) = check_not_revoked(end_entity, &self.peer, &directory, "server") {
            tracing::warn!(
                peer = %self.peer,
                fingerprint = %crate::directory::certificate_fingerprint(end_entity),
                directory_version = directory.version(),
                reason = %e,
                "refused the peer's server certificate: revoked in the directory"
            );
            self.trust.refused_revoked();
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Revoked,
            ));
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.chain.supported_verify_schemes()
    }
}

/// `endpoint` set up for an outgoing connection to `peer` as a node makes it: presents this
/// node's certificate and accepts only a server certificate of the federation CA that names
/// `peer` and that the directory of `trust` does not list as revoked.
pub fn peer_endpoint(
    endpoint: Endpoint,
    m: &TlsMaterial,
    peer: &str,
    trust: Arc<dyn PeerTrust>,
) -> Result<Endpoint, NodeError> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(m.ca_pem.as_bytes()) {
        let ca = ca.map_err(|e| {
            NodeError::config("tls.ca_cert", format!("holds no PEM certificate: {e}"))
        })?;
        roots.add(ca).map_err(|e| {
            NodeError::config("tls.ca_cert", format!("is no usable CA certificate: {e}"))
        })?;
    }
    let chain = WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    .map_err(|e| NodeError::Tls(format!("the peer certificate verifier: {e}")))?;
    let verifier = PeerServerVerifier {
        chain,
        peer: peer.to_string(),
        trust,
    };
    Ok(endpoint.tls_config_with_verifier(
        ClientTlsConfig::new()
            .identity(identity(m))
            .domain_name(peer),
        Arc::new(verifier),
    )?)
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
/// for server and client authentication, is not revoked in `directory`, and `tls.key` is its
/// key. Each failure is a
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
    if let Some(revoked) = directory
        .get(agency)
        .and_then(|a| a.revocation_of(&cert_der))
    {
        return Err(NodeError::config(
            "tls.cert",
            format!(
                "is revoked since {} in directory version {} (sha256 {}): install a renewed certificate (pki tls-request with a new key, signed by the federation CA)",
                revoked.since,
                directory.version(),
                hex::encode(revoked.sha256)
            ),
        ));
    }
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
