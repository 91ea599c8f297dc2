//! The operator's files in `deploy/` are real: each agency's production `node.toml` and the
//! directory template load with the node's own configuration parser (which refuses unknown
//! keys), once their placeholders are filled with what `kurzdraht pki init` made and their
//! production paths point at it; with a placeholder left, the node refuses to start. The
//! per-agency systemd units keep every hardening directive of `deploy/kurzdraht.service`.
//!
//! And they run: `three_nodes_run_from_the_deploy_configs` starts the three nodes from the
//! deploy files, changed only where the host decides (paths, ports, the token hash), as
//! separate processes with the command lines of their units, and uses them as an operator
//! would: health check, the independent Python client, metrics, SIGTERM.

use kurzdraht_client::connection::api_client_tls;
use kurzdraht_client::{connect, ClientConfig};
use kurzdraht_node::config::NodeConfig;
use kurzdraht_node::directory::Directory;
use kurzdraht_node::pki;
use kurzdraht_proto::v1 as pb;
use kurzdraht_testkit::{
    binary, printed, require_python_grpc, run_python_client, wait_for_state, ServeBuilder,
    ServeProcess, JA, JC, JN,
};
use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use std::time::{Duration, Instant};
use tonic::transport::Endpoint;
use tonic_health::pb::{
    health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
};

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
    let made = Directory::from_toml(&read(&fed.join("directory.toml"))).expect("pki's directory");
    let mut text = read(&deploy_dir().join("directory.toml"));
    for agency in AGENCIES {
        let placeholder = format!("REPLACE-WITH-{}-SIGNING-KEY", agency.to_uppercase());
        assert!(text.contains(&placeholder), "{placeholder} in the template");
        let key = made.get(agency).expect("agency").active_keys()[0].to_hex();
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

/// Writes `text` as the directory at `path`, signed with the operator key of `fed` (as the
/// federation operator does with `kurzdraht directory sign`).
fn sign_as_operator(fed: &Path, path: &Path, text: &str) {
    let _ = std::fs::remove_file(path);
    pki::write_file(path, text, false).unwrap();
    let operator = read(&fed.join("operator.key"));
    pki::sign_directory_file(path, &operator).expect("the directory signs");
}

/// The signing key file placeholder of the deploy node.toml files.
const SIGNING_KEY_PLACEHOLDER: &str = "\"/etc/kurzdraht/signing-REPLACE-WITH-YYYY-MM.key\"";

/// `agency`'s deploy node.toml with its production paths pointing into `fed` (the signing
/// key placeholder at the key `pki init` made).
fn rewritten_node_toml(fed: &Path, agency: &str, directory: &Path) -> String {
    let text = read(&deploy_dir().join(agency).join("node.toml"));
    let own = fed.join(agency);
    assert_eq!(text.matches(SIGNING_KEY_PLACEHOLDER).count(), 1);
    let text = text
        .replace(
            "\"/etc/kurzdraht/directory.toml\"",
            &format!("{:?}", directory.display().to_string()),
        )
        .replace(
            "\"/etc/kurzdraht/operator.pub\"",
            &format!("{:?}", fed.join("operator.pub").display().to_string()),
        )
        .replace(
            "\"/etc/kurzdraht/ca.pem\"",
            &format!("{:?}", fed.join("ca.pem").display().to_string()),
        )
        .replace(
            SIGNING_KEY_PLACEHOLDER,
            &format!("{:?}", own.join("signing.key").display().to_string()),
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
    sign_as_operator(&fed, &directory, &filled_directory(&fed));
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
    sign_as_operator(&fed, &directory, &filled_directory(&fed));
    let path = fed.join(JC).join("node.deploy.toml");
    let text = rewritten_node_toml(&fed, JC, &directory);
    std::fs::write(&path, &text).unwrap();
    let e = NodeConfig::load(&path).unwrap_err().to_string();
    assert!(e.contains("api.tokens[0].sha256"), "{e}");
    // The signing key file placeholder.
    let own_key = format!(
        "{:?}",
        fed.join(JC).join("signing.key").display().to_string()
    );
    std::fs::write(
        &path,
        text.replace(&own_key, SIGNING_KEY_PLACEHOLDER).replace(
            "REPLACE-WITH-SHA256-OF-JOBCENTER-SEGEBERG-API-TOKEN",
            &token_hash(&fed, JC),
        ),
    )
    .unwrap();
    let e = NodeConfig::load(&path).unwrap_err().to_string();
    assert!(
        e.contains("signing.key_file") && e.contains("REPLACE-WITH-YYYY-MM"),
        "{e}"
    );
    // The key placeholders of the directory template.
    let e = Directory::from_toml(&read(&deploy_dir().join("directory.toml")))
        .unwrap_err()
        .to_string();
    assert!(e.contains("signing_keys[0].key"), "{e}");
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
            "ExecStart=/usr/local/bin/kurzdraht serve --log-format json --config /etc/kurzdraht/node.toml",
            "RestartPreventExitStatus=4 8",
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

/// The rotations deploy/README.md describes (§6), on three running nodes: a new TLS key and
/// certificate (request on the node's host, signed by the CA) is accepted by the peers at
/// once, only the rotating node restarts; a new signing key (dated file) is refused until
/// the directory lists it, the peers take the directory that lists it without a restart,
/// and once the old key is retired new messages still go and the evidence it signed still
/// verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_and_signing_keys_rotate_as_the_readme_says() {
    use kurzdraht_testkit::*;
    let mut h = start().await;
    let fed = h.fed.dir.clone();
    let jc_dir = fed.join(JC);
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

    // TLS: `pki tls-request` on the node's host, `pki sign-request` at the CA; only the
    // Jobcenter restarts, with [tls] pointing at the new files.
    let (csr, key) = pki::tls_request(JC, "Jobcenter Kreis Segeberg").unwrap();
    pki::write_file(&jc_dir.join("tls-2028-10.key"), &key, true).unwrap();
    let ca_key = kurzdraht_node::config::read_secret("ca.key", &fed.join("ca.key")).unwrap();
    let cert = pki::sign_request(&read(&fed.join("ca.pem")), &ca_key, &csr, JC, 365).unwrap();
    pki::write_file(&jc_dir.join("tls-2028-10.pem"), &cert, false).unwrap();
    h.stop(JC).await;
    edit(
        &jc_dir.join("node.toml"),
        "cert = \"tls.pem\"",
        "cert = \"tls-2028-10.pem\"",
    );
    edit(
        &jc_dir.join("node.toml"),
        "key = \"tls.key\"",
        "key = \"tls-2028-10.key\"",
    );
    h.restart(JC).await;
    let mut jc = h.client(JC).await;
    // The Jugendamt accepts the new certificate as a client certificate ...
    let id = submit_ok(&mut jc, JA, &consent, request()).await;
    wait_for_state(&jc, &id, pb::DeliveryState::Delivered).await;
    // ... and as the Jobcenter's server certificate.
    let mut ja = h.client(JA).await;
    let back = submit_ok(&mut ja, JC, &consent, move_out_certification(&lena)).await;
    wait_for_state(&ja, &back, pb::DeliveryState::Delivered).await;

    // Signing key, step 1: a new key in a dated file.
    let new_public = pki::new_signing_key(&jc_dir.join("signing-2027-05.key")).unwrap();
    let old_public = h
        .fed
        .config(JC)
        .unwrap()
        .signing_key
        .verifying_key()
        .to_hex();
    // Switched to before the directory lists it, the node refuses to start.
    h.stop(JC).await;
    edit(
        &jc_dir.join("node.toml"),
        "key_file = \"signing.key\"",
        "key_file = \"signing-2027-05.key\"",
    );
    let refused = h.fed.start_node(JC).await.unwrap_err().to_string();
    assert!(refused.contains("not pinned"), "{refused}");
    // Step 2: the operator lists it as active beside the old one; the running Jugendämter
    // take the new version without a restart.
    let old_entry = format!("{{ key = \"{old_public}\", state = \"active\" }}");
    let listed = h
        .fed
        .update_directory(|text| {
            text.replace(
                &old_entry,
                &format!("{old_entry}, {{ key = \"{new_public}\", state = \"active\" }}"),
            )
        })
        .await
        .unwrap();
    for peer in [JA, JN] {
        assert_eq!(h.node(peer).directory().version(), listed.version());
    }
    // Step 3: the Jobcenter restarts with the new key.
    h.restart(JC).await;
    let mut jc = h.client(JC).await;
    let id = submit_ok(&mut jc, JA, &consent, request()).await;
    wait_for_state(&jc, &id, pb::DeliveryState::Delivered).await;
    // Step 4: the old key retired (from today): new messages still go, and the consent
    // notice it signed still proves the consent at the Jugendamt.
    let today = today();
    h.fed
        .update_directory(|text| {
            text.replace(
                &old_entry,
                &format!("{{ key = \"{old_public}\", state = \"retired\", since = \"{today}\" }}"),
            )
        })
        .await
        .unwrap();
    let id = submit_ok(&mut jc, JA, &consent, request()).await;
    wait_for_state(&jc, &id, pb::DeliveryState::Delivered).await;
    let mut ja = h.client(JA).await;
    let evidence = ja
        .get_consent_evidence(pb::GetConsentEvidenceRequest {
            about: Some(pb::get_consent_evidence_request::About::ConsentId(
                consent.clone(),
            )),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        evidence.signature_verified,
        "{}",
        evidence.signature_problem
    );
}

// ---- three nodes from the deploy files, started as their systemd units start them ----

/// The longest any single wait of `three_nodes_run_from_the_deploy_configs` may take.
const BOUND: Duration = Duration::from_secs(20);
/// The environment systemd gives a service (no `KURZDRAHT_LOG`, no `NO_COLOR`: defaults).
const SYSTEMD_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The entries of a flat TOML file (sections of `key = value` lines, as the deploy files
/// are): `(section, key, value)` in file order. Panics on any other kind of line.
fn toml_entries(text: &str) -> Vec<(String, String, String)> {
    let mut section = String::new();
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_string();
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("not a `key = value` line: {line:?}"));
        out.push((
            section.clone(),
            key.trim().to_string(),
            value.trim().to_string(),
        ));
    }
    out
}

/// Sets `key = value` in `[section]`; the key must occur there exactly once.
fn set_in_section(text: &str, section: &str, key: &str, value: &str) -> String {
    let mut current = String::new();
    let mut replaced = 0;
    let mut out = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if let Some(name) = trimmed.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = name.to_string();
        }
        let is_key = trimmed
            .strip_prefix(key)
            .is_some_and(|rest| rest.trim_start().starts_with('='));
        if current == section && is_key && !trimmed.starts_with('#') {
            out.push_str(&format!("{key} = {value}"));
            replaced += 1;
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    assert_eq!(replaced, 1, "`{key} =` in [{section}]");
    out
}

/// What the host decides for one node: where `/etc/kurzdraht` and `/var/lib/kurzdraht` are,
/// and the addresses it listens on.
struct Host {
    agency: &'static str,
    etc: PathBuf,
    data: PathBuf,
    /// The agency's IT system: client.toml, api-token, ca.pem.
    it: PathBuf,
    peer: SocketAddr,
    api: SocketAddr,
    metrics: SocketAddr,
}

/// The keys of a deploy node.toml that the host decides; every other entry stays as is.
const HOST_KEYS: [(&str, &str); 12] = [
    ("", "data_dir"),
    ("directory", "file"),
    ("directory", "operator_key"),
    ("listen", "peer"),
    ("listen", "api"),
    ("metrics", "listen"),
    ("tls", "ca_cert"),
    ("tls", "cert"),
    ("tls", "key"),
    ("signing", "key_file"),
    ("storage", "data_key_file"),
    ("api", "tokens"),
];

/// `deploy/<agency>/node.toml` with only what the host decides rewritten: the production
/// paths, the listen addresses and the token hash placeholder. Asserts that nothing else
/// changed: the same sections and keys in the same order, equal values outside
/// [`HOST_KEYS`], no production path and no placeholder left.
fn host_node_toml(deploy: &str, host: &Host, token_sha256: &str) -> String {
    let path = |p: &Path| {
        let s = p.display().to_string();
        assert!(!s.contains(['"', '\\']), "a TOML-safe path: {s}");
        s
    };
    let placeholder = format!(
        "REPLACE-WITH-SHA256-OF-{}-API-TOKEN",
        host.agency.to_uppercase()
    );
    assert_eq!(deploy.matches(&placeholder).count(), 1, "{placeholder}");
    let mut text = deploy
        .replace(
            SIGNING_KEY_PLACEHOLDER,
            &format!("\"/etc/kurzdraht/{}\"", pki::dated_signing_key_name()),
        )
        .replace("\"/etc/kurzdraht/", &format!("\"{}/", path(&host.etc)))
        .replace(
            "\"/var/lib/kurzdraht\"",
            &format!("\"{}\"", path(&host.data)),
        )
        .replace(&placeholder, token_sha256);
    text = set_in_section(&text, "listen", "peer", &format!("\"{}\"", host.peer));
    text = set_in_section(&text, "listen", "api", &format!("\"{}\"", host.api));
    text = set_in_section(&text, "metrics", "listen", &format!("\"{}\"", host.metrics));

    let before = toml_entries(deploy);
    let after = toml_entries(&text);
    let keys = |e: &[(String, String, String)]| -> Vec<(String, String)> {
        e.iter().map(|(s, k, _)| (s.clone(), k.clone())).collect()
    };
    assert_eq!(
        keys(&before),
        keys(&after),
        "{}: the same sections and keys",
        host.agency
    );
    for ((section, key, old), (_, _, new)) in before.iter().zip(&after) {
        if !HOST_KEYS.contains(&(section.as_str(), key.as_str())) {
            assert_eq!(old, new, "{}: [{section}] {key} changed", host.agency);
        }
        assert!(
            !new.contains("\"/etc/kurzdraht")
                && !new.contains("\"/var/lib/kurzdraht")
                && !new.contains("REPLACE"),
            "{}: [{section}] {key} = {new} still holds a production path or a placeholder",
            host.agency
        );
    }
    text
}

/// The files of `/etc/kurzdraht` besides node.toml and the directory, by the names the
/// deploy configuration uses: (name, where `pki init` put it, secret).
fn etc_files(fed: &Path, agency: &str) -> [(String, PathBuf, bool); 6] {
    let own = fed.join(agency);
    [
        ("ca.pem".into(), fed.join("ca.pem"), false),
        ("operator.pub".into(), fed.join("operator.pub"), false),
        ("tls.pem".into(), own.join("tls.pem"), false),
        ("tls.key".into(), own.join("tls.key"), true),
        (pki::dated_signing_key_name(), own.join("signing.key"), true),
        ("data.key".into(), own.join("data.key"), true),
    ]
}

/// `install -m <mode> contents path`.
fn install(path: &Path, contents: &str, mode: u32) {
    pki::write_file(path, contents, mode & 0o077 == 0)
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn mkdir(path: &Path, mode: u32) {
    std::fs::create_dir_all(path).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The command line of `directive` (`ExecStart`, `ExecStartPre`) in the unit's [Service],
/// with the production binary and configuration paths replaced by `binary` and `config`;
/// any other production path in it fails the test.
fn unit_command(unit: &str, directive: &str, binary: &Path, config: &Path) -> Vec<String> {
    let prefix = format!("{directive}=");
    let lines: Vec<String> = directives(unit, "Service")
        .into_iter()
        .filter_map(|d| d.strip_prefix(&prefix).map(str::to_string))
        .collect();
    assert_eq!(lines.len(), 1, "one {directive}= line: {lines:?}");
    let words: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        words[0], "/usr/local/bin/kurzdraht",
        "{directive}: the installed binary, without systemd prefixes"
    );
    let mut argv = vec![binary.display().to_string()];
    for w in &words[1..] {
        assert!(
            !w.contains(['$', '%', '"', '\'', '\\']),
            "{directive}: {w:?} needs systemd's expansion or quoting"
        );
        if *w == "/etc/kurzdraht/node.toml" {
            argv.push(config.display().to_string());
        } else {
            assert!(
                !w.starts_with('/'),
                "{directive}: an unexpected production path {w}"
            );
            argv.push(w.to_string());
        }
    }
    argv
}

/// `argv` as systemd runs it: empty environment but PATH, working directory `/`, stdin
/// from /dev/null, stdout and stderr to `log` (the journal).
fn systemd_command(argv: &[String], log: &Path) -> Command {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("open the log");
    let err = out.try_clone().expect("clone the log handle");
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .env_clear()
        .env("PATH", SYSTEMD_PATH)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    cmd
}

/// The node's `ExecStart` process as systemd runs it (see [`systemd_command`]), its output
/// appended to `log` (the journal, after ExecStartPre's).
fn systemd_unit(agency: &str, argv: &[String], config: &Path, log: &Path) -> ServeBuilder {
    ServeProcess::builder(agency, config, log.to_path_buf())
        .command_line(argv)
        .env_clear()
        .env("PATH", SYSTEMD_PATH)
        .current_dir("/")
        .append_log()
}

/// Waits until grpc.health.v1 on the node's API port reports SERVING for the node and both
/// of its services, asked without a token as a load balancer would.
async fn wait_serving(unit: &mut ServeProcess, client: &ClientConfig) {
    unit.wait_ready(BOUND, || async {
        let channel = Endpoint::from_shared(client.endpoint.clone())
            .map_err(|e| e.to_string())?
            .tls_config(api_client_tls(&client.ca_pem, &client.agency))
            .map_err(|e| e.to_string())?
            .connect()
            .await
            .map_err(|e| e.to_string())?;
        for service in ["", "kurzdraht.v1.AgencyApi", "kurzdraht.v1.PeerExchange"] {
            let r = HealthClient::new(channel.clone())
                .check(HealthCheckRequest {
                    service: service.into(),
                })
                .await
                .map_err(|s| s.to_string())?
                .into_inner();
            if r.status != ServingStatus::Serving as i32 {
                return Err(format!("health of {service:?}: status {}", r.status));
            }
        }
        Ok(())
    })
    .await
    .expect("health reports SERVING");
}

/// `GET /metrics` over a plain TCP connection; the samples by `name{labels}`.
fn scrape(addr: SocketAddr) -> BTreeMap<String, f64> {
    let mut stream =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect to metrics");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).expect("the metrics answer");
    let (head, body) = raw.split_once("\r\n\r\n").expect("headers and a body");
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    for family in ["kurzdraht_submissions_total", "kurzdraht_deliveries_total"] {
        assert!(
            body.contains(&format!("# TYPE {family} counter")),
            "{family} declared a counter:\n{body}"
        );
    }
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (name, value) = l.rsplit_once(' ').expect("`name value`");
            (name.to_string(), value.parse().expect("a number"))
        })
        .collect()
}

fn sample(s: &BTreeMap<String, f64>, key: &str) -> f64 {
    s.get(key).copied().unwrap_or(0.0)
}

/// Scrapes until `key` reaches at least `value` (at most [`BOUND`]).
async fn wait_for_sample(addr: SocketAddr, key: &str, value: f64) -> BTreeMap<String, f64> {
    let started = Instant::now();
    loop {
        let s = tokio::task::spawn_blocking(move || scrape(addr))
            .await
            .expect("scrape");
        if sample(&s, key) >= value {
            return s;
        }
        assert!(
            started.elapsed() < BOUND,
            "{key} did not reach {value} within {BOUND:?}: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The "done when": the three nodes start from the deploy/ configurations — changed
/// only where the host decides: /etc/kurzdraht, /var/lib/kurzdraht, the listen addresses,
/// the token hash — as separate processes with their units' ExecStartPre and ExecStart
/// command lines; they report SERVING; the Python client test passes against the Jobcenter;
/// its metrics port shows the submission and the deliveries counted; SIGTERM stops each
/// node with exit code 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_run_from_the_deploy_configs() {
    require_python_grpc();
    let binary = binary();
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let a = kurzdraht_testkit::free_addrs(9);
    // Keys, certificates from `pki init` (its own configurations are not used).
    let fed = tmp.path().join("pki");
    pki::init(
        &fed,
        &pki::segeberg([(a[0], a[1]), (a[3], a[4]), (a[6], a[7])]),
    )
    .expect("pki init");
    let hosts: Vec<Host> = AGENCIES
        .iter()
        .enumerate()
        .map(|(i, agency)| {
            let root = tmp.path().join(agency);
            Host {
                agency,
                etc: root.join("etc"),
                data: root.join("data"),
                it: root.join("it"),
                peer: a[3 * i],
                api: a[3 * i + 1],
                metrics: a[3 * i + 2],
            }
        })
        .collect();

    // The directory: the template with the real signing keys and the hosts' endpoints,
    // signed by the federation operator.
    let made = Directory::from_toml(&read(&fed.join("directory.toml"))).expect("pki's directory");
    let mut directory = read(&deploy_dir().join("directory.toml"));
    for h in &hosts {
        let key = format!("REPLACE-WITH-{}-SIGNING-KEY", h.agency.to_uppercase());
        let endpoint = format!("https://{}.kurzdraht.example:7443", h.agency);
        for placeholder in [&key, &endpoint] {
            assert_eq!(
                directory.matches(placeholder.as_str()).count(),
                1,
                "{placeholder}"
            );
        }
        let public = made.get(h.agency).expect("agency").active_keys()[0].to_hex();
        directory = directory
            .replace(&key, &public)
            .replace(&endpoint, &format!("https://{}", h.peer));
    }
    assert!(
        !directory.lines().any(|l| !l.trim_start().starts_with('#')
            && (l.contains("REPLACE") || l.contains("kurzdraht.example"))),
        "directory.toml: a line left as in the template"
    );
    let signed = tmp.path().join("directory.toml");
    sign_as_operator(&fed, &signed, &directory);
    let signature = read(&kurzdraht_node::directory::signature_path(&signed));

    // Each host's /etc/kurzdraht, /var/lib/kurzdraht (StateDirectoryMode=0700) and IT system.
    for h in &hosts {
        let deploy = read(&deploy_dir().join(h.agency).join("node.toml"));
        mkdir(&h.etc, 0o755);
        mkdir(&h.data, 0o700);
        mkdir(&h.it, 0o700);
        install(&h.etc.join("directory.toml"), &directory, 0o644);
        install(&h.etc.join("directory.toml.sig"), &signature, 0o644);
        for (name, from, secret) in etc_files(&fed, h.agency) {
            install(
                &h.etc.join(name),
                &read(&from),
                if secret { 0o600 } else { 0o644 },
            );
        }
        // Every /etc/kurzdraht file the deploy config names is installed.
        let named = deploy.replace(
            SIGNING_KEY_PLACEHOLDER,
            &format!("\"/etc/kurzdraht/{}\"", pki::dated_signing_key_name()),
        );
        for (_, key, value) in toml_entries(&named) {
            if let Some(name) = value.trim_matches('"').strip_prefix("/etc/kurzdraht/") {
                assert!(
                    h.etc.join(name).is_file(),
                    "{}: {key} = {value} not installed",
                    h.agency
                );
            }
        }
        let token = pki::random_token().expect("a token");
        install(
            &h.etc.join("node.toml"),
            &host_node_toml(&deploy, h, &pki::token_hash(&token)),
            0o644,
        );
        install(&h.it.join("api-token"), &format!("{token}\n"), 0o600);
        install(&h.it.join("ca.pem"), &read(&fed.join("ca.pem")), 0o644);
        install(
            &h.it.join("client.toml"),
            &format!(
                "agency = \"{}\"\nendpoint = \"https://{}\"\nca_cert = \"ca.pem\"\ntoken_file = \"api-token\"\n",
                h.agency, h.api
            ),
            0o644,
        );
        let c = NodeConfig::load(&h.etc.join("node.toml")).expect("the host's node.toml");
        assert_eq!(
            (c.peer_addr, c.api_addr, c.metrics_addr),
            (h.peer, h.api, Some(h.metrics))
        );
        assert_eq!(c.data_dir, h.data);
    }

    // Start each node as its unit does: ExecStartPre (config check), then ExecStart.
    let mut units = Vec::new();
    for h in &hosts {
        let unit = read(&deploy_dir().join(h.agency).join("kurzdraht.service"));
        let config = h.etc.join("node.toml");
        let log = h.etc.parent().expect("host root").join("journal.log");
        let pre = unit_command(&unit, "ExecStartPre", binary, &config);
        let out = systemd_command(&pre, &log)
            .status()
            .expect("run ExecStartPre");
        assert!(
            out.success(),
            "{}: ExecStartPre {pre:?}: {out}\n{}",
            h.agency,
            read(&log)
        );
        assert!(
            read(&log).contains("valid"),
            "{}: config check says valid",
            h.agency
        );
        let start = unit_command(&unit, "ExecStart", binary, &config);
        let unit = systemd_unit(h.agency, &start, &config, &log)
            .spawn()
            .unwrap_or_else(|e| panic!("{}: ExecStart {start:?}: {e}", h.agency));
        units.push(unit);
    }
    let clients: Vec<ClientConfig> = hosts
        .iter()
        .map(|h| ClientConfig::load(&h.it.join("client.toml")).expect("client.toml"))
        .collect();
    for (unit, client) in units.iter_mut().zip(&clients) {
        wait_serving(unit, client).await;
        assert!(
            unit.log_text().contains("node serving"),
            "{}: the journal says \"node serving\"",
            unit.agency()
        );
    }
    let up = started.elapsed();

    // The Jobcenter's metrics, before and after the Python client's consent and request.
    let (jc, ja) = (&hosts[0], &hosts[1]);
    assert_eq!((jc.agency, ja.agency), (JC, JA));
    let jc_metrics = jc.metrics;
    let before = tokio::task::spawn_blocking(move || scrape(jc_metrics))
        .await
        .expect("scrape");
    let client_toml = jc.it.join("client.toml");
    let stdout = tokio::task::spawn_blocking(move || run_python_client(&client_toml, JA, BOUND))
        .await
        .expect("the Python client's task");
    let message = printed(&stdout, "message_id");
    let notice = printed(&stdout, "notice_message_id");
    let api = connect(&clients[0]).await.expect("the Jobcenter's API");
    wait_for_state(&api, notice, pb::DeliveryState::Delivered).await;
    let status = wait_for_state(&api, message, pb::DeliveryState::Delivered).await;
    assert_eq!(status.consent_id, printed(&stdout, "consent_id"));

    const SUBMISSIONS: &str = "kurzdraht_submissions_total";
    const DELIVERIES: &str = "kurzdraht_deliveries_total";
    const NO_CONSENT: &str = "kurzdraht_refusals_total{reason=\"no-consent\"}";
    let after = wait_for_sample(jc.metrics, DELIVERIES, sample(&before, DELIVERIES) + 2.0).await;
    // One request accepted; it and the consent notice delivered; one refused for want of consent.
    assert_eq!(
        sample(&after, SUBMISSIONS),
        sample(&before, SUBMISSIONS) + 1.0
    );
    assert_eq!(
        sample(&after, DELIVERIES),
        sample(&before, DELIVERIES) + 2.0
    );
    assert_eq!(
        sample(&after, NO_CONSENT),
        sample(&before, NO_CONSENT) + 1.0
    );
    let received = wait_for_sample(ja.metrics, "kurzdraht_received_total", 2.0).await;
    assert_eq!(sample(&received, "kurzdraht_received_total"), 2.0);

    // systemctl stop: SIGTERM to each, exit code 0.
    for unit in &units {
        unit.sigterm().expect("kill -TERM");
    }
    for unit in &mut units {
        let status = unit.wait_exit(BOUND).await.expect("SIGTERM ends the node");
        assert_eq!(
            status.code(),
            Some(0),
            "{}: SIGTERM ends with {status}\n{}",
            unit.agency(),
            unit.log_tail(30)
        );
        assert!(
            unit.log_text().contains("stopped"),
            "{}: the journal says \"stopped\"",
            unit.agency()
        );
    }
    eprintln!(
        "three nodes from deploy/: serving after {up:?}, all done in {:?}; {SUBMISSIONS} {} -> {}, {DELIVERIES} {} -> {}",
        started.elapsed(),
        sample(&before, SUBMISSIONS),
        sample(&after, SUBMISSIONS),
        sample(&before, DELIVERIES),
        sample(&after, DELIVERIES),
    );
}
