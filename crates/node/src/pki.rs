//! Keys, certificates and the signed directory of a federation: made where they are used.
//!
//! **The ceremony between separate authorities** (`deploy/README.md`, §1), each step on its
//! own host, only public files moving between them:
//!
//! | who, where | command | secrets it makes (stay there) | public files it hands on |
//! |---|---|---|---|
//! | federation CA (offline machine) | `pki ca-init` | `ca.key` | `ca.pem` → every node host |
//! | federation operator | `pki operator-key` | `operator.key` | `operator.pub` → every node host |
//! | each agency's node host | `pki agency-keys` ([`agency_keys`]) | `tls.key`, `signing-YYYY-MM.key`, `data.key`, `api-token` | `tls.csr` → CA; `<agency>.entry.toml` → operator |
//! | federation CA | `pki sign-request` ([`sign_request`]) | – | `tls.pem` → that agency |
//! | federation operator | `directory assemble`, `directory sign` | – | `directory.toml` + `.sig` → every node host |
//!
//! **`pki init`** ([`init`]) makes all of it on one machine — every agency's secrets in one
//! place — as a shortcut for the demo and the tests only:
//!
//! ```text
//! DIR/ca.pem  ca.key                 federation CA
//! DIR/operator.pub  operator.key     federation operator (signs the directory)
//! DIR/directory.toml  .sig           agencies, roles, endpoints, competence, pinned keys
//! DIR/<agency>/node.toml             the node's configuration
//! DIR/<agency>/tls.pem tls.key       the agency's certificate (server and client) and key
//! DIR/<agency>/signing.key           Ed25519 seed (hex)
//! DIR/<agency>/data.key              ChaCha20-Poly1305 key sealing personal data in the store
//! DIR/<agency>/api-token             the IT system's bearer token (node.toml holds its hash)
//! DIR/<agency>/client.toml           how the IT system reaches the node
//! ```
//! Secret files are written with mode 0600, and no file is ever overwritten.
//!
//! Certificates: the CA's is valid 10 years ([`CA_VALIDITY_DAYS`]), an agency's one year by
//! default and at most 13 months ([`CERTIFICATE_VALIDITY_DAYS`], [`MAX_CERTIFICATE_DAYS`]).
//! Renewal is a new request from the agency's host (`pki tls-request`, with a new key or
//! `--reuse-key` the one in use) signed again by the CA (`pki sign-request`).
//!
//! Split by concern: `pki/certificates.rs` (the CA, requests, signing them, reading certificates),
//! `pki/keys.rs` (an agency's and the operator's keys, directory entries and signed directories),
//! `pki/setup.rs` (node.toml and client.toml, `pki agency-keys`, `pki init`); everything is
//! re-exported here as `pki::…`.

mod certificates;
mod keys;
mod setup;

pub use certificates::*;
pub use keys::*;
pub use setup::*;

use crate::{policy::Role, NodeError};
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// How long the federation CA's certificate is valid.
pub const CA_VALIDITY_DAYS: i64 = 3650;
/// How long an agency's TLS certificate is valid by default (renew it before: `config check`
/// warns 60 days ahead, the metric `kurzdraht_certificate_expiry_seconds` counts down).
pub const CERTIFICATE_VALIDITY_DAYS: i64 = 365;
/// The longest validity `sign-request` gives an agency's certificate: 13 months (a year and
/// a month of overlap for the renewal).
pub const MAX_CERTIFICATE_DAYS: i64 = 396;

/// One agency to set up.
#[derive(Debug, Clone)]
pub struct AgencySpec {
    pub id: String,
    pub name: String,
    pub role: Role,
    pub peer_addr: SocketAddr,
    pub api_addr: SocketAddr,
    /// Where the node serves Prometheus metrics (plain HTTP); `None`: a commented example.
    pub metrics_addr: Option<SocketAddr>,
    /// Where the node serves its console (HTTPS); `None`: a commented example.
    pub console_addr: Option<SocketAddr>,
    /// Its entries of `competence` in the directory (`plz:…`, `ars:…`).
    pub competence: Vec<String>,
}

/// The three agencies of Kreis Segeberg, with the given (peer, api) addresses and no
/// metrics listener (set `metrics_addr` for one). The Norderstedt office is competent for
/// Norderstedt's postal codes and region key, the Kreis office for the rest of the county.
pub fn segeberg(addrs: [(SocketAddr, SocketAddr); 3]) -> Vec<AgencySpec> {
    let names: [(&str, &str, Role, &[&str]); 3] = [
        (
            "jobcenter-segeberg",
            "Jobcenter Kreis Segeberg",
            Role::Jobcenter,
            &["ars:01060"],
        ),
        (
            "jugendamt-kreis-segeberg",
            "Jugendamt Kreis Segeberg",
            Role::Jugendamt,
            KREIS_SEGEBERG_OFFICE,
        ),
        (
            "jugendamt-norderstedt",
            "Jugendamt der Stadt Norderstedt",
            Role::Jugendamt,
            &[
                "plz:22844",
                "plz:22846",
                "plz:22848",
                "plz:22850",
                "plz:22851",
                "ars:010600063063",
            ],
        ),
    ];
    names
        .into_iter()
        .zip(addrs)
        .map(
            |((id, name, role, competence), (peer_addr, api_addr))| AgencySpec {
                id: id.into(),
                name: name.into(),
                role,
                peer_addr,
                api_addr,
                metrics_addr: None,
                console_addr: None,
                competence: competence.iter().map(|c| c.to_string()).collect(),
            },
        )
        .collect()
}

/// The competence of the Kreis office: the Kreis (`ars:01060`) and the postal codes of the
/// Kreis outside Norderstedt, so that a proposal from a postal code alone finds it. Only
/// codes whose area lies wholly or mostly in the Kreis are listed; a code shared with a
/// neighbouring Kreis (23845 with Stormarn, 24619 with Plön) goes to this office, and one
/// mostly outside (23863 Kayhude, 23719 Glasau, 24634 Padenstedt, …) is left out: the region
/// key then decides, or the caseworker chooses. Compiled from the Deutsche Post's
/// assignment of postal codes to municipalities; check it against the current list before
/// a real directory is signed.
const KREIS_SEGEBERG_OFFICE: &[&str] = &[
    "ars:01060",
    "plz:23795", // Bad Segeberg, Fahrenkrug, Groß Rönnau, Schackendorf, Traventhal, …
    "plz:23812", // Wahlstedt
    "plz:23813", // Nehms, Blunk
    "plz:23815", // Geschendorf, Strukdorf, Westerrade
    "plz:23816", // Leezen, Bebensee, Groß Niendorf, Neversdorf
    "plz:23818", // Neuengörs
    "plz:23820", // Pronstorf
    "plz:23821", // Rohlstorf
    "plz:23823", // Seedorf
    "plz:23824", // Damsdorf, Tensfeld
    "plz:23826", // Bark, Fredesdorf, Todesfelde
    "plz:23827", // Wensin, Krems II, Travenhorst
    "plz:23829", // Wittenborn, Kükels, Mözen
    "plz:23845", // Itzstedt, Oering, Seth, Bahrenhof, Bühnsdorf, Dreggers (Grabau: Stormarn)
    "plz:23866", // Nahe
    "plz:23867", // Sülfeld
    "plz:24558", // Henstedt-Ulzburg, Wakendorf II
    "plz:24568", // Kaltenkirchen, Kattendorf, Oersdorf, Winsen, Nützen
    "plz:24576", // Bad Bramstedt, Bimöhlen, Hagen, Hitzhusen, Mönkloh, Weddelbrook, …
    "plz:24598", // Boostedt, Heidmühlen, Latendorf
    "plz:24610", // Trappenkamp, Gönnebek
    "plz:24619", // Bornhöved, Tarbek (Rendswühren: Plön)
    "plz:24623", // Großenaspe
    "plz:24626", // Groß Kummerfeld
    "plz:24628", // Hartenholm
    "plz:24629", // Kisdorf
    "plz:24632", // Lentföhrden, Heidmoor
    "plz:24635", // Rickling, Daldorf
    "plz:24638", // Schmalensee
    "plz:24640", // Schmalfeld, Hasenmoor
    "plz:24641", // Sievershütten, Stuvenborn, Hüttblek
    "plz:24643", // Struvenhütten
    "plz:24649", // Wiemersdorf, Fuhlendorf
    "plz:25479", // Ellerau
    "plz:25486", // Alveslohe
];

/// What `init` wrote for one agency.
#[derive(Debug, Clone)]
pub struct AgencyFiles {
    pub id: String,
    pub dir: PathBuf,
    pub node_config: PathBuf,
    pub client_config: PathBuf,
}

fn pki_err(what: &str, e: impl std::fmt::Display) -> NodeError {
    NodeError::Certificate(format!("{what}: {e}"))
}

/// Writes a new file (never overwriting one); `secret` files get mode 0600 before any
/// content is written. Errors name the file.
pub fn write_file(path: &Path, contents: &str, secret: bool) -> Result<(), NodeError> {
    use std::io::Write;
    let failed = |e: std::io::Error| {
        NodeError::config("output", format!("cannot write {}: {e}", path.display()))
    };
    refuse_existing(path)?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options.open(path).map_err(failed)?;
    f.write_all(contents.as_bytes()).map_err(failed)?;
    f.sync_all().map_err(failed)?;
    Ok(())
}

/// Replaces a public file in place (an edited node.toml, a new directory): written beside
/// it and renamed over it, so a reader sees the old file or the new one.
pub fn replace_file(path: &Path, contents: &str) -> Result<(), NodeError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".new");
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    write_file(&tmp, contents, false)?;
    std::fs::rename(&tmp, path)
        .map_err(|e| NodeError::config("output", format!("cannot replace {}: {e}", path.display())))
}

/// A random token of 32 bytes, hex.
pub fn random_token() -> Result<String, NodeError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| pki_err("randomness", e))?;
    Ok(hex::encode(bytes))
}

pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.trim().as_bytes()))
}

/// Refuses to overwrite `path` (a key must never be replaced by accident).
pub fn refuse_existing(path: &Path) -> Result<(), NodeError> {
    if path.exists() {
        return Err(NodeError::config(
            "output",
            format!("{} exists; choose a new file name", path.display()),
        ));
    }
    Ok(())
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::directory::Directory;
    use kurzdraht_envelope::SigningKey;

    fn entry(id: &str, role: &str, key: &str, competence: &str) -> String {
        format!(
            "[[agency]]\nid = \"{id}\"\nname = \"{id}\"\nrole = \"{role}\"\n\
             endpoint = \"https://{id}.example:7443\"\ncompetence = [{competence}]\n\
             signing_keys = [{key}]\n"
        )
    }

    /// The directory of `segeberg()` proposes the Norderstedt office for Norderstedt's postal
    /// codes and the Kreis office for the rest of the Kreis from the postal code alone; a
    /// code outside the Kreis finds no office; no postal code is claimed twice (the
    /// directory's overlap check reads it).
    #[test]
    fn segeberg_gives_every_postal_code_of_the_kreis_one_jugendamt() {
        let addr: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        let specs = segeberg([(addr, addr), (addr, addr), (addr, addr)]);
        let entries: Vec<String> = specs
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let key = SigningKey::from_hex(&hex::encode([i as u8 + 1; 32]))
                    .expect("a seed")
                    .verifying_key()
                    .to_hex();
                let competence: Vec<String> =
                    s.competence.iter().map(|c| format!("\"{c}\"")).collect();
                entry(
                    &s.id,
                    s.role.as_str(),
                    &format!("{{ key = \"{key}\", state = \"active\" }}"),
                    &competence.join(", "),
                )
            })
            .collect();
        let d = Directory::from_toml(&assemble_directory(1, &entries).expect("assembled"))
            .expect("a valid directory: no place claimed twice");
        let who = |plz: &str| {
            d.competent(Role::Jugendamt, plz, "")
                .map(|a| a.id.clone())
                .unwrap_or_default()
        };
        for plz in ["22844", "22846", "22848", "22850", "22851"] {
            assert_eq!(who(plz), "jugendamt-norderstedt", "{plz}");
        }
        for plz in [
            "23795", "23812", "24558", "24568", "24576", "25479", "25486",
        ] {
            assert_eq!(who(plz), "jugendamt-kreis-segeberg", "{plz}");
        }
        // Quickborn (Pinneberg), Bad Oldesloe (Stormarn), Neumünster, Hamburg: none
        for plz in ["25451", "23843", "24534", "20095"] {
            assert_eq!(who(plz), "", "{plz}");
        }
        let kreis = d.get("jugendamt-kreis-segeberg").expect("listed");
        assert_eq!(kreis.competence.len(), KREIS_SEGEBERG_OFFICE.len());
    }

    /// `directory assemble --from`: the agencies of the current version stay as they are
    /// (a retired key keeps its state and day), the new entry follows, the version rises.
    #[test]
    fn a_directory_is_extended_by_an_agency_keeping_every_key_state() {
        let key = |n: u8| {
            SigningKey::from_hex(&hex::encode([n; 32]))
                .expect("a seed")
                .verifying_key()
                .to_hex()
        };
        let current = assemble_directory(
            3,
            &[
                entry(
                    "jobcenter-segeberg",
                    "jobcenter",
                    &format!(
                        "{{ key = \"{}\", state = \"retired\", since = \"2026-11-01\" }}, {{ key = \"{}\", state = \"active\" }}",
                        key(1),
                        key(2)
                    ),
                    "\"ars:01060\"",
                ),
                entry(
                    "jugendamt-kreis-segeberg",
                    "jugendamt",
                    &format!("{{ key = \"{}\", state = \"active\" }}", key(3)),
                    "\"ars:01060\"",
                ),
            ],
        )
        .expect("version 3");
        let fourth = entry(
            "jugendamt-neumuenster",
            "jugendamt",
            &format!("{{ key = \"{}\", state = \"active\" }}", key(4)),
            "\"ars:01004\", \"plz:24534\"",
        );
        let next = extend_directory(&current, 4, std::slice::from_ref(&fourth)).expect("v4");
        let d = Directory::from_toml(&next).expect("valid");
        assert_eq!(d.version(), 4);
        let ids: Vec<&str> = d.agencies().map(|a| a.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "jobcenter-segeberg",
                "jugendamt-kreis-segeberg",
                "jugendamt-neumuenster"
            ]
        );
        let jc = d.get("jobcenter-segeberg").expect("jc");
        assert_eq!(jc.keys.len(), 2);
        assert_eq!(jc.keys[0].state.to_string(), "retired since 2026-11-01");
        let new = d.get("jugendamt-neumuenster").expect("new");
        assert_eq!(
            d.competent(Role::Jugendamt, "24534", "")
                .map(|a| a.id.as_str()),
            Some("jugendamt-neumuenster")
        );
        assert_eq!(new.competence.len(), 2);
        // the current agencies' text is kept byte for byte
        let agencies = &current[current.find("[[agency]]").expect("agency")..];
        assert!(next.contains(agencies.trim_end()), "{next}");
        // the version must rise
        for version in [3, 2] {
            let e = extend_directory(&current, version, std::slice::from_ref(&fourth)).unwrap_err();
            assert!(
                e.to_string().contains("--version")
                    && e.to_string().contains("higher than version 3"),
                "{e}"
            );
        }
        // an agency already there, or a place another Jugendamt holds, is refused
        let again = entry(
            "jugendamt-kreis-segeberg",
            "jugendamt",
            &format!("{{ key = \"{}\", state = \"active\" }}", key(5)),
            "",
        );
        let e = extend_directory(&current, 4, &[again]).unwrap_err();
        assert!(e.to_string().contains("listed twice"), "{e}");
        let clash = entry(
            "jugendamt-neumuenster",
            "jugendamt",
            &format!("{{ key = \"{}\", state = \"active\" }}", key(4)),
            "\"ars:01060\"",
        );
        let e = extend_directory(&current, 4, &[clash]).unwrap_err();
        assert!(
            e.to_string().contains(
                "ars:01060 is claimed by both jugendamt-kreis-segeberg and jugendamt-neumuenster"
            ),
            "{e}"
        );
    }

    #[test]
    fn the_ca_signs_only_a_request_naming_exactly_the_agency() {
        let (ca_pem, ca_key) = new_ca().expect("CA");
        let (request, key) = tls_request("jobcenter-segeberg", "Jobcenter").expect("request");
        let cert =
            sign_request(&ca_pem, &ca_key, &request, "jobcenter-segeberg", 365).expect("signed");
        let info = certificate_info("cert", &cert).expect("readable");
        assert_eq!(info.names, ["jobcenter-segeberg"]);
        assert_eq!(info.public_key, key_public_info("key", &key).expect("key"));
        let days = (info.not_after - info.not_before).whole_days();
        assert!((365..=366).contains(&days), "{days} days");
        // no longer than 13 months
        match sign_request(&ca_pem, &ca_key, &request, "jobcenter-segeberg", 397) {
            Err(NodeError::Config { key, .. }) => assert_eq!(key, "--days"),
            other => panic!("expected a refusal, got {other:?}"),
        }
        // renewal with the same key: a new request, the same public key
        let renewal = tls_request_for_key("jobcenter-segeberg", "Jobcenter", &key).expect("csr");
        let renewed =
            sign_request(&ca_pem, &ca_key, &renewal, "jobcenter-segeberg", 365).expect("signed");
        let renewed = certificate_info("cert", &renewed).expect("readable");
        assert_eq!(renewed.public_key, info.public_key);
        let ca = certificate_info("ca", &ca_pem).expect("readable");
        assert!(ca.is_ca);
        assert!((3650..=3651).contains(&(ca.not_after - ca.not_before).whole_days()));
        // a request for another agency is refused, naming what it names
        match sign_request(&ca_pem, &ca_key, &request, "jugendamt-norderstedt", 365) {
            Err(NodeError::Config { key, reason }) => {
                assert_eq!(key, "--csr");
                assert!(reason.contains("[jobcenter-segeberg]"), "{reason}");
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        // a CA key that is not the CA certificate's
        let (_, other_key) = new_ca().expect("CA");
        match sign_request(&ca_pem, &other_key, &request, "jobcenter-segeberg", 365) {
            Err(NodeError::Config { key, .. }) => assert_eq!(key, "--ca-key"),
            other => panic!("expected a refusal, got {other:?}"),
        }
        // a tampered request does not verify
        let tampered = request.replacen("MII", "MIJ", 1);
        assert!(sign_request(&ca_pem, &ca_key, &tampered, "jobcenter-segeberg", 365).is_err());
    }

    #[test]
    fn files_are_never_overwritten_and_errors_name_the_file() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("signing.key");
        new_signing_key(&path).expect("first");
        let before = std::fs::read(&path).expect("read");
        let e = new_signing_key(&path).expect_err("second");
        assert!(e.to_string().contains("signing.key exists"), "{e}");
        assert_eq!(std::fs::read(&path).expect("read"), before);
        let e = write_file(&dir.path().join("no/such/dir/x"), "x", false).expect_err("no dir");
        assert!(e.to_string().contains("no/such/dir/x"), "{e}");
    }
}
