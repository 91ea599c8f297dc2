//! The operator's files in `deploy/` are real: each agency's production `node.toml` and the
//! directory template load with the node's own configuration parser (which refuses unknown
//! keys), once their placeholders are filled with what `kurzdraht pki init` made and their
//! production paths point at it; with a placeholder left, the node refuses to start. The
//! per-agency systemd units keep every hardening directive of `deploy/kurzdraht.service`.

use kurzdraht_node::config::NodeConfig;
use kurzdraht_node::directory::Directory;
use kurzdraht_node::pki;
use kurzdraht_tests::{JA, JC, JN};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

const AGENCIES: [&str; 3] = [JC, JA, JN];

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// A federation made by `pki init`, whose keys and tokens fill the deploy templates.
fn federation(root: &Path) -> PathBuf {
    let dir = root.join("fed");
    let lo = |p: u16| -> SocketAddr { SocketAddr::from(([127, 0, 0, 1], p)) };
    pki::init(
        &dir,
        &pki::segeberg([
            (lo(17443), lo(17444)),
            (lo(27443), lo(27444)),
            (lo(37443), lo(37444)),
        ]),
    )
    .expect("pki init");
    dir
}

/// The `sha256 = "..."` of the token line `pki init` wrote into `agency`'s node.toml.
fn token_hash(fed: &Path, agency: &str) -> String {
    let text = read(&fed.join(agency).join("node.toml"));
    let at = text.find("sha256 = \"").expect("a token hash") + "sha256 = \"".len();
    text[at..at + 64].to_string()
}

/// deploy/directory.toml with each placeholder replaced by the key `pki init` made.
fn filled_directory(fed: &Path) -> String {
    let made = Directory::load(&fed.join("directory.toml")).expect("pki's directory");
    let mut text = read(&deploy_dir().join("directory.toml"));
    for agency in AGENCIES {
        let placeholder = format!("REPLACE-WITH-{}-SIGNING-KEY", agency.to_uppercase());
        assert!(text.contains(&placeholder), "{placeholder} in the template");
        let key = made.get(agency).expect("agency").signing_keys[0].to_hex();
        text = text.replace(&placeholder, &key);
    }
    assert!(
        !text
            .lines()
            .any(|l| !l.trim_start().starts_with('#') && l.contains("REPLACE")),
        "a placeholder is left"
    );
    text
}

/// `agency`'s deploy node.toml with its production paths pointing into `fed`.
fn rewritten_node_toml(fed: &Path, agency: &str, directory: &Path) -> String {
    let text = read(&deploy_dir().join(agency).join("node.toml"));
    let own = fed.join(agency);
    let text = text
        .replace(
            "\"/etc/kurzdraht/directory.toml\"",
            &format!("{:?}", directory.display().to_string()),
        )
        .replace(
            "\"/etc/kurzdraht/ca.pem\"",
            &format!("{:?}", fed.join("ca.pem").display().to_string()),
        )
        .replace(
            "\"/var/lib/kurzdraht\"",
            &format!("{:?}", own.join("data").display().to_string()),
        )
        .replace("\"/etc/kurzdraht/", &format!("\"{}/", own.display()));
    // Every path was one of the production paths above.
    for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
        assert!(
            !line.contains("/etc/") && !line.contains("/var/"),
            "{agency}: a path outside /etc/kurzdraht and /var/lib/kurzdraht: {line}"
        );
    }
    text
}

#[test]
fn every_deploy_node_toml_loads_with_the_real_parser() {
    let tmp = tempfile::tempdir().unwrap();
    let fed = federation(tmp.path());
    let directory = tmp.path().join("directory.toml");
    std::fs::write(&directory, filled_directory(&fed)).unwrap();
    for agency in AGENCIES {
        let placeholder = format!("REPLACE-WITH-SHA256-OF-{}-API-TOKEN", agency.to_uppercase());
        let text = rewritten_node_toml(&fed, agency, &directory);
        assert!(text.contains(&placeholder), "{agency}: {placeholder}");
        let text = text.replace(&placeholder, &token_hash(&fed, agency));
        let path = fed.join(agency).join("node.deploy.toml");
        std::fs::write(&path, &text).unwrap();
        let c = NodeConfig::load(&path)
            .unwrap_or_else(|e| panic!("deploy/{agency}/node.toml does not load: {e}"));
        assert_eq!(c.agency, agency);
        assert_eq!(c.peer_addr, "0.0.0.0:7443".parse().unwrap());
        assert_eq!(c.api_addr, "0.0.0.0:7444".parse().unwrap());
        assert_eq!(c.metrics_addr, Some("127.0.0.1:9464".parse().unwrap()));
        assert_eq!(c.data_dir, fed.join(agency).join("data"));
        assert_eq!(c.api_tokens.len(), 1);
        assert_eq!(c.api_tokens[0].client, format!("{agency}-it"));
        assert_eq!(c.delivery.deadline.as_secs(), 7 * 24 * 3600);
        for a in AGENCIES {
            assert_eq!(
                c.directory.get(a).expect("in the directory").endpoint,
                format!("https://{a}.kurzdraht.example:7443")
            );
        }
    }
}

#[test]
fn a_placeholder_left_in_place_stops_the_node() {
    let tmp = tempfile::tempdir().unwrap();
    let fed = federation(tmp.path());
    // The token placeholder (with a filled directory).
    let directory = tmp.path().join("directory.toml");
    std::fs::write(&directory, filled_directory(&fed)).unwrap();
    let path = fed.join(JC).join("node.deploy.toml");
    std::fs::write(&path, rewritten_node_toml(&fed, JC, &directory)).unwrap();
    let e = NodeConfig::load(&path).unwrap_err().to_string();
    assert!(e.contains("api.tokens[0].sha256"), "{e}");
    // The key placeholders of the directory template.
    let template = tmp.path().join("template.toml");
    std::fs::copy(deploy_dir().join("directory.toml"), &template).unwrap();
    let e = Directory::load(&template).unwrap_err().to_string();
    assert!(e.contains("signing_keys"), "{e}");
}

/// The `Key=value` lines of one section of a unit file.
fn directives(unit: &str, section: &str) -> Vec<String> {
    let mut inside = false;
    let mut out = Vec::new();
    for line in unit.lines().map(str::trim) {
        if line.starts_with('[') {
            inside = line == format!("[{section}]");
        } else if inside && !line.is_empty() && !line.starts_with('#') {
            out.push(line.to_string());
        }
    }
    out
}

#[test]
fn each_agency_unit_keeps_the_hardening_of_the_base_unit() {
    let base = read(&deploy_dir().join("kurzdraht.service"));
    for agency in AGENCIES {
        let unit = read(&deploy_dir().join(agency).join("kurzdraht.service"));
        let service = directives(&unit, "Service");
        for d in directives(&base, "Service") {
            assert!(service.contains(&d), "{agency}'s unit lacks {d}");
        }
        for d in [
            "User=kurzdraht",
            "ProtectSystem=strict",
            "StateDirectory=kurzdraht",
            "Restart=on-failure",
            "NoNewPrivileges=yes",
            "ExecStart=/usr/local/bin/kurzdraht serve --config /etc/kurzdraht/node.toml",
        ] {
            assert!(service.iter().any(|s| s == d), "{agency}: {d}");
        }
        let unit_section = directives(&unit, "Unit");
        assert!(
            unit_section
                .iter()
                .any(|d| d.starts_with("Description=") && d.contains(agency)),
            "{agency}: the Description names the agency"
        );
        assert_eq!(
            directives(&unit, "Install"),
            vec!["WantedBy=multi-user.target"]
        );
    }
}

#[test]
fn the_containerfile_is_multi_stage_non_root_with_a_data_volume() {
    let text = read(&deploy_dir().join("Containerfile"));
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .collect();
    let from: Vec<&&str> = lines.iter().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(from.len(), 2, "{from:?}");
    assert!(from[0].starts_with("FROM rust:") && from[0].ends_with(" AS build"));
    assert_eq!(*from[1], "FROM debian:bookworm-slim");
    assert!(lines.contains(&"USER 10001:10001"));
    assert!(lines.contains(&"VOLUME [\"/var/lib/kurzdraht\"]"));
    assert!(lines.contains(&"EXPOSE 7443/tcp 7444/tcp 9464/tcp"));
    assert!(lines.contains(
        &"ENTRYPOINT [\"/usr/local/bin/kurzdraht\", \"serve\", \"--config\", \"/etc/kurzdraht/node.toml\"]"
    ));
}

/// Replaces `from` by `to` in the file at `path` (exactly once).
fn edit(path: &Path, from: &str, to: &str) {
    let text = read(path);
    assert_eq!(
        text.matches(from).count(),
        1,
        "{from:?} in {}",
        path.display()
    );
    std::fs::write(path, text.replacen(from, to, 1)).unwrap();
}

/// The rotations deploy/README.md describes, on three running nodes: a new TLS certificate
/// is accepted by the peers at once (only the rotating node restarts); a new signing key is
/// refused until the directory lists it, then works beside the old one, then alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_and_signing_keys_rotate_as_the_readme_says() {
    use kurzdraht_proto::v1 as pb;
    use kurzdraht_tests::*;
    let mut h = start().await;
    let fed = h.fed.dir.clone();
    let lena = subject("Lena", "Hansen", "2005-04-12");
    let mut jc = h.client(JC).await;
    let consent = consent_id(
        &mut jc,
        consent_request(&lena, &[JA], &[pb::Purpose::U25MoveOut]),
    )
    .await;
    let request = || certification_request(&lena, "Antrag auf Zusicherung");
    let id = submit_ok(&mut jc, JA, &consent, request()).await;
    wait_for_state(&jc, &id, pb::DeliveryState::Delivered).await;

    // A new certificate for the Jobcenter, from the CA key; only the Jobcenter restarts.
    let ca_key = kurzdraht_node::config::read_secret("ca.key", &fed.join("ca.key")).unwrap();
    let (cert, key) = pki::issue_certificate(&ca_key, JC, "Jobcenter Kreis Segeberg").unwrap();
    let old_cert = read(&fed.join(JC).join("tls.pem"));
    assert_ne!(cert, old_cert);
    h.stop(JC).await;
    pki::write_file(&fed.join(JC).join("tls.pem"), &cert, false).unwrap();
    pki::write_file(&fed.join(JC).join("tls.key"), &key, true).unwrap();
    h.restart(JC).await;
    let mut jc = h.client(JC).await;
    // The Jugendamt accepts the new certificate as a client certificate ...
    let id = submit_ok(&mut jc, JA, &consent, request()).await;
    wait_for_state(&jc, &id, pb::DeliveryState::Delivered).await;
    // ... and as the Jobcenter's server certificate.
    let mut ja = h.client(JA).await;
    let back = submit_ok(&mut ja, JC, &consent, move_out_certification(&lena)).await;
    wait_for_state(&ja, &back, pb::DeliveryState::Delivered).await;

    // A new signing key: refused while the directory does not list it.
    let new_public = pki::new_signing_key(&fed.join(JC).join("signing.key.new")).unwrap();
    let directory = fed.join("directory.toml");
    let old_public = h
        .fed
        .config(JC)
        .unwrap()
        .signing_key
        .verifying_key()
        .to_hex();
    h.stop(JC).await;
    edit(
        &fed.join(JC).join("node.toml"),
        "key_file = \"signing.key\"",
        "key_file = \"signing.key.new\"",
    );
    let refused = h.fed.start_node(JC).await.unwrap_err().to_string();
    assert!(refused.contains("not pinned"), "{refused}");
    // Listed beside the old key and distributed (the Jugendämter restart to read it).
    edit(
        &directory,
        &format!("signing_keys = [\"{old_public}\"]"),
        &format!("signing_keys = [\"{old_public}\", \"{new_public}\"]"),
    );
    for peer in [JA, JN] {
        h.stop(peer).await;
        h.restart(peer).await;
    }
    h.restart(JC).await;
    let mut jc = h.client(JC).await;
    let id = submit_ok(&mut jc, JA, &consent, request()).await;
    wait_for_state(&jc, &id, pb::DeliveryState::Delivered).await;
    // The old key removed later: the new one works alone.
    edit(
        &directory,
        &format!("[\"{old_public}\", \"{new_public}\"]"),
        &format!("[\"{new_public}\"]"),
    );
    for node in [JA, JN, JC] {
        h.stop(node).await;
        h.restart(node).await;
    }
    let mut jc = h.client(JC).await;
    let id = submit_ok(&mut jc, JA, &consent, request()).await;
    wait_for_state(&jc, &id, pb::DeliveryState::Delivered).await;
}
