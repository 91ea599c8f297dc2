//! Certificates: the federation CA, an agency's TLS key and certificate request, the CA
//! signing a request, and reading what a certificate says.

use super::{pki_err, CA_VALIDITY_DAYS, MAX_CERTIFICATE_DAYS};
use crate::NodeError;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, DnValue, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    PublicKeyData, SanType, SerialNumber,
};
use time::OffsetDateTime;

/// Valid from an hour ago (clocks differ a little) for `days`.
fn set_validity(params: &mut CertificateParams, days: i64) {
    let now = OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(days);
}

fn random_serial() -> Result<SerialNumber, NodeError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| pki_err("randomness", e))?;
    bytes[0] &= 0x7f; // positive
    bytes[0] |= 0x01; // and of full length
    Ok(SerialNumber::from_slice(&bytes))
}

/// A new federation CA: (certificate PEM, key PEM), valid [`CA_VALIDITY_DAYS`].
pub fn new_ca() -> Result<(String, String), NodeError> {
    let key = KeyPair::generate().map_err(|e| pki_err("CA key", e))?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| pki_err("CA", e))?;
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, "kurzdraht federation CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.serial_number = Some(random_serial()?);
    set_validity(&mut params, CA_VALIDITY_DAYS);
    let cert = params.self_signed(&key).map_err(|e| pki_err("CA", e))?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// A new TLS key and a certificate request naming agency `id` (its only DNS name) and
/// organisation `name`: (request PEM, key PEM). The key never leaves the agency's host.
pub fn tls_request(id: &str, name: &str) -> Result<(String, String), NodeError> {
    let key = KeyPair::generate().map_err(|e| pki_err("TLS key", e))?;
    let key_pem = key.serialize_pem();
    Ok((request_with_key(id, name, &key)?, key_pem))
}

/// A certificate request for agency `id` with the TLS key already in use (`key_pem`), to
/// renew its certificate without a new key (`pki tls-request --reuse-key`).
pub fn tls_request_for_key(id: &str, name: &str, key_pem: &str) -> Result<String, NodeError> {
    let key = KeyPair::from_pem(key_pem).map_err(|e| {
        NodeError::config("--reuse-key", format!("is not a readable private key: {e}"))
    })?;
    request_with_key(id, name, &key)
}

fn request_with_key(id: &str, name: &str, key: &KeyPair) -> Result<String, NodeError> {
    kurzdraht_envelope::agency::validate_agency_id("--agency", id)
        .map_err(|e| NodeError::config("--agency", e.to_string()))?;
    let mut params =
        CertificateParams::new(vec![id.to_string()]).map_err(|e| pki_err("request", e))?;
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, id);
    params
        .distinguished_name
        .push(DnType::OrganizationName, name);
    params
        .serialize_request(key)
        .and_then(|r| r.pem())
        .map_err(|e| pki_err("request", e))
}

/// What a certificate says, read from its PEM.
#[derive(Debug, Clone)]
pub struct CertificateInfo {
    /// Its DNS names (an agency certificate names exactly its agency id).
    pub names: Vec<String>,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    /// Its SubjectPublicKeyInfo (DER).
    pub public_key: Vec<u8>,
    /// Whether it is a CA certificate.
    pub is_ca: bool,
    /// Its fingerprint as the directory names it (SHA-256 of the DER form, hex).
    pub sha256: String,
}

/// Reads a certificate PEM; `key` names it in errors.
pub fn certificate_info(key: &str, pem: &str) -> Result<CertificateInfo, NodeError> {
    use rustls_pki_types::{pem::PemObject, CertificateDer};
    let der = CertificateDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| NodeError::config(key, format!("holds no PEM certificate: {e}")))?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| NodeError::config(key, format!("is not a readable certificate: {e}")))?;
    let names = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(CertificateInfo {
        names,
        not_before: cert.validity().not_before.to_datetime(),
        not_after: cert.validity().not_after.to_datetime(),
        public_key: cert.tbs_certificate.subject_pki.raw.to_vec(),
        is_ca: cert.is_ca(),
        sha256: crate::directory::certificate_fingerprint(&der),
    })
}

/// The SubjectPublicKeyInfo of a private key PEM.
pub fn key_public_info(key: &str, pem: &str) -> Result<Vec<u8>, NodeError> {
    let pair = KeyPair::from_pem(pem)
        .map_err(|e| NodeError::config(key, format!("is not a readable private key: {e}")))?;
    Ok(pair.subject_public_key_info())
}

fn organisation(dn: &DistinguishedName) -> Option<String> {
    match dn.get(&DnType::OrganizationName)? {
        DnValue::Utf8String(s) => Some(s.clone()),
        DnValue::PrintableString(s) => Some(s.as_str().to_string()),
        _ => None,
    }
}

/// The CA's part: a certificate for agency `agency` from its request, valid `days`, signed
/// with the CA key. The request must be validly signed and name exactly `agency`; of it only
/// its public key and organisation name are taken, every other field is the CA's.
pub fn sign_request(
    ca_cert_pem: &str,
    ca_key_pem: &str,
    request_pem: &str,
    agency: &str,
    days: i64,
) -> Result<String, NodeError> {
    kurzdraht_envelope::agency::validate_agency_id("--agency", agency)
        .map_err(|e| NodeError::config("--agency", e.to_string()))?;
    if !(1..=MAX_CERTIFICATE_DAYS).contains(&days) {
        return Err(NodeError::config(
            "--days",
            format!("must lie between 1 and {MAX_CERTIFICATE_DAYS} (13 months)"),
        ));
    }
    let ca = certificate_info("--ca-cert", ca_cert_pem)?;
    if !ca.is_ca {
        return Err(NodeError::config("--ca-cert", "is no CA certificate"));
    }
    if key_public_info("--ca-key", ca_key_pem)? != ca.public_key {
        return Err(NodeError::config(
            "--ca-key",
            "is not the key of the CA certificate given with --ca-cert",
        ));
    }
    let request = CertificateSigningRequestParams::from_pem(request_pem).map_err(|e| {
        NodeError::config(
            "--csr",
            format!("is not a validly signed certificate request: {e}"),
        )
    })?;
    let names: Vec<String> = request
        .params
        .subject_alt_names
        .iter()
        .map(|n| match n {
            SanType::DnsName(d) => d.as_str().to_string(),
            other => format!("{other:?}"),
        })
        .collect();
    if names != [agency] {
        return Err(NodeError::config(
            "--csr",
            format!(
                "the request names [{}], not exactly the agency {agency}",
                names.join(", ")
            ),
        ));
    }
    let name = organisation(&request.params.distinguished_name).unwrap_or_else(|| agency.into());
    let ca_key = KeyPair::from_pem(ca_key_pem).map_err(|e| pki_err("CA key", e))?;
    let issuer = Issuer::from_ca_cert_pem(ca_cert_pem, ca_key).map_err(|e| pki_err("CA", e))?;
    let mut params =
        CertificateParams::new(vec![agency.to_string()]).map_err(|e| pki_err("certificate", e))?;
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, agency);
    params
        .distinguished_name
        .push(DnType::OrganizationName, name);
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(random_serial()?);
    set_validity(&mut params, days);
    let cert = params
        .signed_by(&request.public_key, &issuer)
        .map_err(|e| pki_err("certificate", e))?;
    Ok(cert.pem())
}
