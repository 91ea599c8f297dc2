//! The key ceremony between separate authorities, as deploy/README.md §1 describes it, with
//! the real binary and real files: a CA directory, an operator directory and one directory
//! per agency stand for five hosts; only public files move between them. Then the three
//! nodes run from those directories (real processes, mutual TLS on loopback) and deliver a
//! message; the operator's directory updates reach them without a restart; `config check`
//! refuses a node holding another agency's certificate; `audit verify` leaves the store as
//! it was.

mod ceremony_hosts;

use ceremony_hosts::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

/// Every regular file under `dir` (no symbolic link may be there), with its bytes.
fn files_under(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let entry = entry.expect("entry");
        let kind = entry.file_type().expect("type");
        assert!(
            !kind.is_symlink(),
            "{} is a symbolic link",
            entry.path().display()
        );
        if kind.is_dir() {
            out.extend(files_under(&entry.path()));
        } else {
            out.insert(entry.path(), std::fs::read(entry.path()).expect("read"));
        }
    }
    out
}

/// What identifies a secret wherever it is copied: its PEM body or its hex, without white
/// space.
fn core(secret: &[u8]) -> String {
    text(secret)
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<String>()
        .split_whitespace()
        .collect()
}

/// The secret files of each host's directory (file names as the ceremony writes them).
fn secrets_of(c: &Ceremony) -> Vec<(PathBuf, Vec<PathBuf>)> {
    let mut hosts = vec![
        (c.ca.clone(), vec![c.ca.join("ca.key")]),
        (c.operator.clone(), vec![c.operator.join("operator.key")]),
    ];
    for a in &c.agencies {
        let mut secrets = vec![
            a.dir.join("tls.key"),
            a.dir.join("data.key"),
            a.dir.join("api-token"),
        ];
        let signing: Vec<PathBuf> = std::fs::read_dir(&a.dir)
            .expect("dir")
            .map(|e| e.expect("entry").path())
            .filter(|p| {
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                name.starts_with("signing-") && name.ends_with(".key")
            })
            .collect();
        assert_eq!(signing.len(), 1, "{}: one dated signing key", a.id);
        secrets.extend(signing);
        hosts.push((a.dir.clone(), secrets));
    }
    hosts
}

/// (a) No secret of one host is in (or readable from) another's directory: every secret
/// file is mode 0600, and no file of any other directory holds its bytes.
fn assert_no_secret_leaves_its_host(c: &Ceremony) {
    use std::os::unix::fs::PermissionsExt;
    let hosts = secrets_of(c);
    let all: Vec<(PathBuf, BTreeMap<PathBuf, Vec<u8>>)> = hosts
        .iter()
        .map(|(dir, _)| (dir.clone(), files_under(dir)))
        .collect();
    // the five directories are all there is
    let listed: Vec<PathBuf> = std::fs::read_dir(&c.root)
        .expect("root")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(listed.len(), 5, "{listed:?}");
    let mut checked = 0;
    for (owner, secrets) in &hosts {
        for secret in secrets {
            let mode = std::fs::metadata(secret)
                .expect("meta")
                .permissions()
                .mode()
                & 0o777;
            assert_eq!(mode, 0o600, "{} has mode {mode:o}", secret.display());
            let bytes = std::fs::read(secret).expect("secret");
            let needle = core(&bytes);
            assert!(needle.len() >= 64, "{}: {needle}", secret.display());
            for (dir, files) in &all {
                for (path, content) in files {
                    if path == secret {
                        continue;
                    }
                    let hay: String = text(content).split_whitespace().collect();
                    assert!(
                        !hay.contains(&needle) && content != &bytes,
                        "the secret {} of {} is in {} (host {})",
                        secret.display(),
                        owner.display(),
                        path.display(),
                        dir.display()
                    );
                }
            }
            checked += 1;
        }
    }
    // CA key, operator key, and four secrets per agency
    assert_eq!(checked, 2 + 3 * 4);
}

/// The operator's next directory version: `edit` of the current one, version raised,
/// signed (`directory sign`), handed to every agency host, and each node told (SIGHUP).
fn publish(c: &Ceremony, nodes: &Nodes, version: u64, edit: impl Fn(&str) -> String) {
    let path = c.operator.join("directory.toml");
    let old = std::fs::read_to_string(&path).expect("directory");
    let new = edit(&old).replacen(
        &format!("version = {}", version - 1),
        &format!("version = {version}"),
        1,
    );
    assert_ne!(new, old);
    std::fs::write(&path, new).expect("write");
    ok(&[
        "directory",
        "sign",
        "--key",
        s(&c.operator.join("operator.key")),
        s(&path),
    ]);
    for a in &c.agencies {
        replace(
            &c.operator.join("directory.toml.sig"),
            &a.dir.join("directory.toml.sig"),
        );
        replace(&path, &a.dir.join("directory.toml"));
        hangup(&nodes.0[a.id]);
    }
}

/// The signing key a node.toml of `pki agency-keys` names, as its public key (hex).
fn signing_public(a: &Agency) -> String {
    let node_toml = std::fs::read_to_string(a.dir.join("node.toml")).expect("node.toml");
    let name = node_toml
        .lines()
        .find_map(|l| l.trim().strip_prefix("key_file = "))
        .expect("key_file")
        .trim_matches('"');
    let seed = std::fs::read_to_string(a.dir.join(name)).expect("signing key");
    kurzdraht_envelope::SigningKey::from_hex(&seed)
        .expect("a key")
        .verifying_key()
        .to_hex()
}

/// Each file of a store with its bytes and modification time.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (Vec<u8>, SystemTime)> {
    files_under(dir)
        .into_iter()
        .map(|(p, bytes)| {
            let mtime = std::fs::metadata(&p)
                .and_then(|m| m.modified())
                .expect("mtime");
            (p, (bytes, mtime))
        })
        .collect()
}

/// (a) The ceremony in five directories leaves every secret on its host, and the nodes run
/// from those directories deliver a message. (c) The operator's newer directory versions
/// are taken without a restart — a retired key still proves old evidence but its new
/// envelopes are refused, a revoked key proves nothing — and an older version is refused
/// while running and at start. (d) `consent evidence` exits 7 when the notice's signature
/// no longer verifies. `audit verify` leaves the store's files as they were.
#[test]
fn the_ceremony_keeps_secrets_apart_and_its_nodes_deliver_and_follow_the_directory() {
    let started = Instant::now();
    let c = ceremony();
    assert_no_secret_leaves_its_host(&c);
    let jc = c.agency(JC);
    let ja = c.agency(JA);

    // The Jobcenter probes its peers every second (default 30 s).
    let jc_toml = jc.dir.join("node.toml");
    let jc_config = std::fs::read_to_string(&jc_toml).expect("node.toml");
    assert_eq!(jc_config.matches("[delivery]\n").count(), 1);
    std::fs::write(
        &jc_toml,
        jc_config.replace("[delivery]\n", "[delivery]\npeer_probe_secs = 1\n"),
    )
    .expect("write node.toml");
    // The three nodes, each from its own host's directory.
    let mut nodes = Nodes(BTreeMap::new());
    for a in &c.agencies {
        nodes.0.insert(a.id, serve(a));
    }
    for a in &c.agencies {
        wait_healthy(a);
    }
    // Every node reaches every peer (mutual TLS and health).
    let check = ok(&[
        "config",
        "check",
        "--reach-peers",
        s(&jc.dir.join("node.toml")),
    ]);
    assert!(check.contains(&format!("reached      {JA}")), "{check}");
    assert!(check.contains(&format!("reached      {JN}")), "{check}");
    assert!(check.contains("version 1, fingerprint "), "{check}");
    let v1_fingerprint = check
        .split("version 1, fingerprint ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .expect("a fingerprint")
        .to_string();
    assert_eq!(v1_fingerprint.len(), 64, "{check}");
    // ... the one each node logged at start
    for a in &c.agencies {
        let log = std::fs::read_to_string(a.dir.join("serve.log")).expect("log");
        assert!(
            log.lines()
                .any(|l| l.contains("directory in force") && l.contains(&v1_fingerprint)),
            "{}: {log}",
            a.id
        );
    }
    let form = c.root.join(format!("{JC}-host")).join("einwilligung.pdf");
    std::fs::write(&form, b"Einwilligung, unterschrieben").expect("form");
    let consent = grant_consent(jc, &form, JA);
    let first = send(jc, JA, &consent);
    let status = wait_final(jc, &first);
    assert_eq!(status["state"], "DELIVERED", "{status}");
    eprintln!(
        "from an empty directory to the first delivered message (ceremony, three nodes, consent, send): {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let fingerprint = |a: &Agency| {
        scrape(a.metrics)
            .keys()
            .find(|k| k.starts_with("kurzdraht_directory_info{"))
            .cloned()
            .expect("directory info")
    };
    // the same directory in force on all three
    assert_eq!(fingerprint(jc), fingerprint(ja));
    assert_eq!(fingerprint(ja), fingerprint(c.agency(JN)));
    assert_eq!(metric(ja, "kurzdraht_directory_version"), 1.0);
    wait_metric(
        jc,
        &format!("kurzdraht_peer_reachable{{peer=\"{JA}\"}}"),
        1.0,
    );
    // positive control of (d): the Jobcenter's notice verifies at the Jugendamt
    let evidence = client(ja, &["consent", "evidence", "--message", &first]);
    assert_eq!(
        evidence.status.code(),
        Some(0),
        "{}",
        text(&evidence.stderr)
    );
    assert!(text(&evidence.stdout).contains("signature verified"));

    // The versions the operator publishes; version 1 kept to be put back later.
    let v1 = c.root.join("directory-v1.toml");
    std::fs::copy(c.operator.join("directory.toml"), &v1).expect("keep v1");
    std::fs::copy(
        c.operator.join("directory.toml.sig"),
        c.root.join("directory-v1.toml.sig"),
    )
    .expect("keep v1 sig");
    let jc_key = signing_public(jc);
    let active = format!("{{ key = \"{jc_key}\", state = \"active\" }}");
    let today =
        kurzdraht_node::clock::german_date_of_ms(kurzdraht_node::clock::now_ms()).expect("today");

    // (c) Version 2 retires the Jobcenter's key (since today), taken without a restart.
    publish(&c, &nodes, 2, |t| {
        t.replace(
            &active,
            &format!("{{ key = \"{jc_key}\", state = \"retired\", since = \"{today}\" }}"),
        )
    });
    wait_metric(ja, "kurzdraht_directory_version", 2.0);
    // a new envelope signed with the retired key is refused ...
    let second = send(jc, JA, &consent);
    let status = wait_final(jc, &second);
    assert_eq!(status["state"], "REJECTED", "{status}");
    assert!(
        status["detail"]
            .as_str()
            .unwrap_or("")
            .contains("Unauthenticated (bad-signature)"),
        "{status}"
    );
    let log = std::fs::read_to_string(ja.dir.join("serve.log")).expect("log");
    assert!(
        log.contains(&format!("that is retired since {today}")),
        "{log}"
    );
    // ... while the evidence it signed before still verifies.
    let evidence = client(ja, &["consent", "evidence", "--message", &first]);
    assert_eq!(
        evidence.status.code(),
        Some(0),
        "{}",
        text(&evidence.stderr)
    );
    assert!(text(&evidence.stdout).contains("signature verified"));

    // (d) Version 3 revokes it: the evidence it signed proves nothing, exit 7.
    publish(&c, &nodes, 3, |t| {
        t.replace(
            &format!("state = \"retired\", since = \"{today}\""),
            &format!("state = \"revoked\", since = \"{today}\""),
        )
    });
    wait_metric(ja, "kurzdraht_directory_version", 3.0);
    let evidence = client(ja, &["consent", "evidence", "--message", &first]);
    assert_eq!(
        evidence.status.code(),
        Some(7),
        "{}{}",
        text(&evidence.stdout),
        text(&evidence.stderr)
    );
    assert!(
        text(&evidence.stderr).contains(&format!("revoked on {today}")),
        "{}",
        text(&evidence.stderr)
    );

    // (c) Version 1 put back on the Jugendamt's host: refused while running ...
    let refused_before = metric(ja, "kurzdraht_directory_updates_total{outcome=\"refused\"}");
    replace(
        &c.root.join("directory-v1.toml.sig"),
        &ja.dir.join("directory.toml.sig"),
    );
    replace(&v1, &ja.dir.join("directory.toml"));
    hangup(&nodes.0[JA]);
    wait_metric(
        ja,
        "kurzdraht_directory_updates_total{outcome=\"refused\"}",
        refused_before + 1.0,
    );
    assert_eq!(metric(ja, "kurzdraht_directory_version"), 3.0);
    let evidence = client(ja, &["consent", "evidence", "--message", &first]);
    assert_eq!(
        evidence.status.code(),
        Some(7),
        "{}",
        text(&evidence.stderr)
    );
    // ... and at start (config check and serve).
    let mut node = nodes.0.remove(JA).expect("node");
    sigterm_and_wait(&mut node);
    // The Jugendamt down: health and --reach-peers say so (exit 5), the metric turns 0.
    let down = kd(&["health", "--config", s(&ja.dir.join("node.toml"))]);
    assert_eq!(down.status.code(), Some(5), "{}", text(&down.stderr));
    // (the Norderstedt office's check: the Jobcenter's own is refused since its key was
    // revoked)
    let jn_toml = c.agency(JN).dir.join("node.toml");
    let reach = kd(&["config", "check", "--reach-peers", s(&jn_toml)]);
    assert_eq!(reach.status.code(), Some(5), "{}", text(&reach.stderr));
    assert!(
        text(&reach.stdout).contains(&format!("NOT reached  {JA}")),
        "{}",
        text(&reach.stdout)
    );
    assert!(
        text(&reach.stdout).contains(&format!("reached      {JC}")),
        "{}",
        text(&reach.stdout)
    );
    wait_metric(
        jc,
        &format!("kurzdraht_peer_reachable{{peer=\"{JA}\"}}"),
        0.0,
    );
    let ja_toml = ja.dir.join("node.toml");
    for args in [
        vec!["config", "check", s(&ja_toml)],
        vec!["serve", "--config", s(&ja_toml)],
    ] {
        let out = kd(&args);
        assert_eq!(
            out.status.code(),
            Some(4),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stderr).contains("is version 1, older than version 3"),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }

    // `audit verify` on the stopped store leaves every file as it was.
    let data = ja.dir.join("data");
    let before = snapshot(&data);
    assert!(before.len() > 2, "{:?}", before.keys());
    let verified = ok(&["audit", "verify", "--config", s(&ja_toml)]);
    assert!(verified.contains("verifies"), "{verified}");
    let after = snapshot(&data);
    let changed: Vec<&PathBuf> = before
        .keys()
        .chain(after.keys())
        .filter(|p| before.get(*p) != after.get(*p))
        .collect();
    assert!(changed.is_empty(), "audit verify changed {changed:?}");

    // The data key rotated (deploy/README.md §6): the store sealed again under a new dated
    // key; the old key no longer opens it, the new one reads what was received.
    replace(
        &c.operator.join("directory.toml.sig"),
        &ja.dir.join("directory.toml.sig"),
    );
    replace(
        &c.operator.join("directory.toml"),
        &ja.dir.join("directory.toml"),
    );
    let new_key = ja.dir.join("data-2027-05.key");
    ok(&["pki", "data-key", "--out", s(&new_key)]);
    let rekeyed = ok(&[
        "pki",
        "rekey-store",
        "--config",
        s(&ja_toml),
        "--new-key",
        s(&new_key),
    ]);
    assert!(rekeyed.contains("values sealed again"), "{rekeyed}");
    let out = kd(&["serve", "--config", s(&ja_toml)]);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("sealed with another data key"),
        "{}",
        text(&out.stderr)
    );
    let node_toml = std::fs::read_to_string(&ja_toml).expect("node.toml");
    assert_eq!(node_toml.matches("data_key_file = \"data.key\"").count(), 1);
    std::fs::write(
        &ja_toml,
        node_toml.replace(
            "data_key_file = \"data.key\"",
            "data_key_file = \"data-2027-05.key\"",
        ),
    )
    .expect("write node.toml");
    nodes.0.insert(JA, serve(ja));
    wait_healthy(ja);
    let inbox = client(ja, &["inbox", "--json"]);
    assert_eq!(inbox.status.code(), Some(0), "{}", text(&inbox.stderr));
    assert!(
        text(&inbox.stdout).contains(&first),
        "{}",
        text(&inbox.stdout)
    );
    assert!(
        text(&inbox.stdout).contains("Lena"),
        "{}",
        text(&inbox.stdout)
    );
}

/// (b) `config check` refuses a node holding another agency's certificate and key, or its
/// own certificate with another's key, naming the file and the reason; its own files pass.
#[test]
fn config_check_refuses_another_agencys_certificate_naming_the_file() {
    let c = ceremony();
    let jc = c.agency(JC);
    let ja = c.agency(JA);
    let node_toml = jc.dir.join("node.toml");
    // positive control
    let out = ok(&["config", "check", s(&node_toml)]);
    assert!(
        out.contains(&format!("names {JC}, chains to the federation CA")),
        "{out}"
    );
    assert!(out.contains("version 1, fingerprint "), "{out}");
    assert!(out.contains("(active)"), "{out}");
    // a misconfigured copy of the Jobcenter's host directory
    let wrong = c.root.join("misconfigured");
    std::fs::create_dir(&wrong).expect("dir");
    for (name, _) in files_under(&jc.dir) {
        let target = wrong.join(name.strip_prefix(&jc.dir).expect("under"));
        std::fs::copy(&name, &target).expect("copy");
    }
    let wrong_toml = wrong.join("node.toml");
    ok(&["config", "check", s(&wrong_toml)]);
    // the Jugendamt's certificate and key
    replace(&ja.dir.join("tls.pem"), &wrong.join("tls.pem"));
    replace(&ja.dir.join("tls.key"), &wrong.join("tls.key"));
    let out = kd(&["config", "check", s(&wrong_toml)]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(err.contains(s(&wrong.join("tls.pem"))), "{err}");
    assert!(
        err.contains(&format!("names [{JA}], not this node's agency {JC}")),
        "{err}"
    );
    // serve refuses the same way
    let out = kd(&["serve", "--config", s(&wrong_toml)]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    // its own certificate, the Jugendamt's key
    replace(&jc.dir.join("tls.pem"), &wrong.join("tls.pem"));
    let out = kd(&["config", "check", s(&wrong_toml)]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(err.contains(s(&wrong.join("tls.key"))), "{err}");
    assert!(err.contains("is not the key of the certificate"), "{err}");
    replace(&jc.dir.join("tls.key"), &wrong.join("tls.key"));
    ok(&["config", "check", s(&wrong_toml)]);

    // Renewal (deploy/README.md §6): a new request for the key in use, signed by the CA.
    let csr = wrong.join("tls-2027-10.csr");
    ok(&[
        "pki",
        "tls-request",
        "--agency",
        JC,
        "--name",
        "Jobcenter Kreis Segeberg",
        "--reuse-key",
        s(&wrong.join("tls.key")),
        "--csr-out",
        s(&csr),
    ]);
    let sign = |csr: &Path, out: &Path| {
        hand_over(csr, &c.ca.join("incoming.csr"));
        ok(&[
            "pki",
            "sign-request",
            "--ca-key",
            s(&c.ca.join("ca.key")),
            "--ca-cert",
            s(&c.ca.join("ca.pem")),
            "--csr",
            s(&c.ca.join("incoming.csr")),
            "--agency",
            JC,
            "--out",
            s(&c.ca.join("issued.pem")),
        ]);
        hand_over(&c.ca.join("issued.pem"), out);
        std::fs::remove_file(c.ca.join("incoming.csr")).expect("rm");
        std::fs::remove_file(c.ca.join("issued.pem")).expect("rm");
    };
    sign(&csr, &wrong.join("tls-2027-10.pem"));
    let toml_text = std::fs::read_to_string(&wrong_toml).expect("node.toml");
    std::fs::write(
        &wrong_toml,
        toml_text.replace("cert = \"tls.pem\"", "cert = \"tls-2027-10.pem\""),
    )
    .expect("write");
    let renewed = ok(&["config", "check", s(&wrong_toml)]);
    assert!(renewed.contains(&format!("names {JC}")), "{renewed}");
    // Rotation: a new key; its certificate with the old key is refused, with the new one
    // it passes.
    ok(&[
        "pki",
        "tls-request",
        "--agency",
        JC,
        "--name",
        "Jobcenter Kreis Segeberg",
        "--key-out",
        s(&wrong.join("tls-2027-11.key")),
        "--csr-out",
        s(&wrong.join("tls-2027-11.csr")),
    ]);
    sign(
        &wrong.join("tls-2027-11.csr"),
        &wrong.join("tls-2027-11.pem"),
    );
    let toml_text = std::fs::read_to_string(&wrong_toml).expect("node.toml");
    let toml_text = toml_text.replace("cert = \"tls-2027-10.pem\"", "cert = \"tls-2027-11.pem\"");
    std::fs::write(&wrong_toml, &toml_text).expect("write");
    let out = kd(&["config", "check", s(&wrong_toml)]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("tls.key"),
        "{}",
        text(&out.stderr)
    );
    std::fs::write(
        &wrong_toml,
        toml_text.replace("key = \"tls.key\"", "key = \"tls-2027-11.key\""),
    )
    .expect("write");
    ok(&["config", "check", s(&wrong_toml)]);

    // a directory changed after the operator signed it
    let dir_text = std::fs::read_to_string(wrong.join("directory.toml")).expect("dir");
    std::fs::write(
        wrong.join("directory.toml"),
        dir_text.replace("Jugendamt Kreis Segeberg", "Jugendamt Kreis Segeberg (neu)"),
    )
    .expect("write");
    let out = kd(&["config", "check", s(&wrong_toml)]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(err.contains("changed after it was signed"), "{err}");
    let out = kd(&["directory", "verify", "--config", s(&wrong_toml)]);
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));
}
