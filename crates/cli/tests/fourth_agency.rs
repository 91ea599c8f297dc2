//! Adding a fourth agency to a running federation, as an operator does it (the handbook's
//! "Adding a fourth agency"): the three Segeberg agencies run from the key ceremony; the
//! Jugendamt der Stadt Neumünster makes its keys and request on its own host, the CA signs,
//! the operator assembles version 2 from version 1 and the new entry (`directory assemble
//! --from`), signs it and hands it to all four hosts. The running nodes refuse version 2
//! while running (a new agency needs a restart) and the new agency stays unknown to them;
//! the new node starts, the three are restarted one after another, and then a case message
//! and its answer flow between the Jobcenter and the new Jugendamt under a consent naming
//! it, while the policy still keeps Jugendamt from Jugendamt.

mod ceremony_hosts;

use ceremony_hosts::*;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Output;

/// The fourth agency: a Jugendamt of the neighbouring kreisfreie Stadt Neumünster.
const JNM: &str = "jugendamt-neumuenster";
/// Neumünster: its official region key and its postal codes.
const NEUMUENSTER: &[&str] = &[
    "ars:01004",
    "plz:24534",
    "plz:24536",
    "plz:24537",
    "plz:24539",
];

/// Lena's consent recorded at the Jobcenter for the move-out flow with `recipient`, covering
/// what the request and the certification carry.
fn grant_move_out_consent(jc: &Agency, form: &Path, recipient: &str) -> Output {
    let mut args = vec!["consent", "grant", "--json"];
    args.extend(LENA);
    args.extend([
        "--recipient",
        recipient,
        "--purpose",
        "u25-move-out",
        "--category",
        "identity",
        "--category",
        "housing-situation",
        "--category",
        "family-situation",
        "--form",
        "written",
        "--evidence",
        "JC-SE/0816",
        "--recorded-by",
        "Herr Jensen",
        "--evidence-file",
        s(form),
    ]);
    client(jc, &args)
}

/// The Jugendamt's certification answering `request`, to `to`.
fn certify(ja: &Agency, to: &str, consent: &str, request: &str) -> Output {
    let mut args = vec![
        "send",
        "move-out-certification",
        "--json",
        "--to",
        to,
        "--consent",
        consent,
        "--in-reply-to",
        request,
    ];
    args.extend(LENA);
    args.extend([
        "--outcome",
        "supported",
        "--ground",
        "serious-social-reasons",
        "--statement",
        "Das Zusammenleben im Elternhaus ist nicht mehr zumutbar.",
        "--interview-date",
        "2026-11-20",
        "--caseworker",
        "Frau Petersen",
    ]);
    client(ja, &args)
}

/// A refusal by the node: the exit code and what stderr says.
fn assert_refused(out: &Output, code: i32, parts: &[&str]) {
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{}{err}", text(&out.stdout));
    for part in parts {
        assert!(err.contains(part), "{part:?} not in: {err}");
    }
}

/// The id at `pointer` (a JSON pointer) in a command's `--json` answer.
fn id_of(out: &Output, pointer: &str) -> String {
    json(out)
        .pointer(pointer)
        .and_then(|v| v.as_str())
        .expect(pointer)
        .to_string()
}

fn directory_fingerprint_metric(a: &Agency) -> String {
    scrape(a.metrics)
        .keys()
        .find(|k| k.starts_with("kurzdraht_directory_info{"))
        .cloned()
        .unwrap_or_default()
}

/// What the node of `a` logged since it last started.
fn log_of(a: &Agency) -> String {
    std::fs::read_to_string(a.dir.join("serve.log")).unwrap_or_default()
}

#[test]
fn a_fourth_agency_joins_the_running_federation_after_restarts() {
    let c = ceremony();
    let mut nodes = Nodes(BTreeMap::new());
    for a in &c.agencies {
        nodes.0.insert(a.id, serve(a));
    }
    for a in &c.agencies {
        wait_healthy(a);
    }
    let jc = c.agency(JC);
    let form = jc.dir.join("einwilligung.pdf");
    std::fs::write(&form, b"Einwilligung, unterschrieben").expect("form");

    // Positive control: a consent naming a known Jugendamt is recorded.
    let known = id_of(&grant_move_out_consent(jc, &form, JA), "/consent/consentId");
    let first = send(jc, JA, &known);
    assert_eq!(wait_final(jc, &first)["state"], "DELIVERED");

    // 1. The new agency's host: its keys, request and entry (nothing secret leaves it).
    let addrs = free_addrs(3);
    let jnm = agency_host(
        &c.root,
        &c.ca,
        &c.operator,
        (
            JNM,
            "Jugendamt der Stadt Neumünster",
            "jugendamt",
            NEUMUENSTER,
        ),
        [addrs[0], addrs[1], addrs[2]],
    );

    // Before version 2: the Jobcenter knows no such agency.
    let refused = grant_move_out_consent(jc, &form, JNM);
    assert_refused(
        &refused,
        4,
        &[
            "invalid-argument",
            "recipients[0]",
            "\"jugendamt-neumuenster\" is not an agency in the directory",
        ],
    );
    let refused = client(jc, &{
        let mut args = vec![
            "send",
            "certification-request",
            "--to",
            JNM,
            "--consent",
            &known,
        ];
        args.extend(LENA);
        args.extend([
            "--reason",
            "Antrag auf Zusicherung",
            "--caseworker",
            "Herr Jensen",
        ]);
        args
    });
    let not_in_directory = [
        "invalid-argument",
        "recipient",
        "\"jugendamt-neumuenster\" is not an agency in the directory",
    ];
    assert_refused(&refused, 4, &not_in_directory);

    // 2. The CA signs its request; certificate and ca.pem go to the new host.
    ca_signs(&c.ca, &jnm);

    // 3. The operator: version 2 = version 1's agencies as they stand, and the new entry.
    let v2 = c.operator.join("directory-v2.toml");
    let assembled = ok(&[
        "directory",
        "assemble",
        "--version",
        "2",
        "--from",
        s(&c.operator.join("directory.toml")),
        "--out",
        s(&v2),
        s(&c.operator.join(format!("{JNM}.entry.toml"))),
    ]);
    assert!(
        assembled.contains("version 2 with 4 agencies (3 kept from"),
        "{assembled}"
    );
    ok(&[
        "directory",
        "sign",
        "--key",
        s(&c.operator.join("operator.key")),
        s(&v2),
    ]);
    let v2_sig = c.operator.join("directory-v2.toml.sig");
    // ... to the new host, with operator.pub ...
    hand_over(&v2, &jnm.dir.join("directory.toml"));
    hand_over(&v2_sig, &jnm.dir.join("directory.toml.sig"));
    hand_over(
        &c.operator.join("operator.pub"),
        &jnm.dir.join("operator.pub"),
    );
    // ... and to the three running hosts.
    let jnm_toml = jnm.dir.join("node.toml");
    let verified = ok(&["directory", "verify", "--config", s(&jnm_toml)]);
    assert!(verified.contains("version      2"), "{verified}");
    assert!(
        verified.contains(&format!("agency       {JNM} (jugendamt)")),
        "{verified}"
    );
    assert!(
        verified.contains("competent  ars:01004, plz:24534, plz:24536, plz:24537, plz:24539"),
        "{verified}"
    );
    let v2_fingerprint = verified
        .split("fingerprint  ")
        .nth(1)
        .and_then(|rest| rest.lines().next())
        .expect("fingerprint")
        .to_string();
    for a in &c.agencies {
        replace(&v2_sig, &a.dir.join("directory.toml.sig"));
        replace(&v2, &a.dir.join("directory.toml"));
    }

    // 4. A running node does not take a directory that adds an agency (SIGHUP): version 1
    //    stays in force and the send is refused as before.
    for a in &c.agencies {
        let refused_before = metric(a, "kurzdraht_directory_updates_total{outcome=\"refused\"}");
        hangup(&nodes.0[a.id]);
        wait_metric(
            a,
            "kurzdraht_directory_updates_total{outcome=\"refused\"}",
            refused_before + 1.0,
        );
        assert_eq!(metric(a, "kurzdraht_directory_version"), 1.0);
        assert!(
            log_of(a).contains(&format!(
                "version 2 needs a restart to take: it adds [{JNM}] and removes [] agencies"
            )),
            "{}: {}",
            a.id,
            log_of(a)
        );
    }
    let refused = grant_move_out_consent(jc, &form, JNM);
    assert_refused(
        &refused,
        4,
        &["recipients[0]", "is not an agency in the directory"],
    );
    // What the operator checks on each host: the node has run version 1 only.
    let seen = ok(&[
        "directory",
        "verify",
        "--config",
        s(&jc.dir.join("node.toml")),
    ]);
    assert!(seen.contains("this node has run version 1 ("), "{seen}");

    // 5. The new node starts (its config check passes); the three are restarted one after
    //    another, each healthy with version 2 before the next.
    let checked = ok(&["config", "check", s(&jnm_toml)]);
    assert!(checked.contains("version 2, fingerprint "), "{checked}");
    nodes.0.insert(JNM, serve(&jnm));
    wait_healthy(&jnm);
    for a in &c.agencies {
        let mut node = nodes.0.remove(a.id).expect("running");
        sigterm_and_wait(&mut node);
        nodes.0.insert(a.id, serve(a));
        wait_healthy(a);
        assert_eq!(metric(a, "kurzdraht_directory_version"), 2.0, "{}", a.id);
        let seen = ok(&[
            "directory",
            "verify",
            "--config",
            s(&a.dir.join("node.toml")),
        ]);
        assert!(
            seen.contains(&format!("this node has run version 2 ({v2_fingerprint})")),
            "{seen}"
        );
        assert!(
            log_of(a)
                .lines()
                .any(|l| l.contains("directory in force") && l.contains(&v2_fingerprint)),
            "{}: {}",
            a.id,
            log_of(a)
        );
    }
    // All four run the very file `directory verify` showed, the new competence area in it.
    for a in c.agencies.iter().chain([&jnm]) {
        let info = directory_fingerprint_metric(a);
        assert!(info.contains(&v2_fingerprint), "{}: {info}", a.id);
    }
    // The new node reaches every peer (mutual TLS with the certificate the CA signed).
    let reach = ok(&["config", "check", "--reach-peers", s(&jnm_toml)]);
    for id in [JC, JA, JN] {
        assert!(reach.contains(&format!("reached      {id}")), "{reach}");
    }

    // 6. A consent naming the new Jugendamt; the request flows there, the answer back.
    let consent = id_of(
        &grant_move_out_consent(jc, &form, JNM),
        "/consent/consentId",
    );
    let request = send(jc, JNM, &consent);
    let status = wait_final(jc, &request);
    assert_eq!(status["state"], "DELIVERED", "{status}");
    let inbox = client(&jnm, &["inbox", "--json"]);
    assert_eq!(inbox.status.code(), Some(0), "{}", text(&inbox.stderr));
    assert!(
        text(&inbox.stdout).contains(&request),
        "{}",
        text(&inbox.stdout)
    );
    let answer = id_of(&certify(&jnm, JC, &consent, &request), "/messageId");
    let status = wait_final(&jnm, &answer);
    assert_eq!(status["state"], "DELIVERED", "{status}");
    let inbox = client(jc, &["inbox", "--json"]);
    assert!(
        text(&inbox.stdout).contains(&answer),
        "{}",
        text(&inbox.stdout)
    );

    // The policy holds for the new agency as for the others: a Jugendamt's certification
    // goes to a Jobcenter, not to another Jugendamt.
    let refused = certify(&jnm, JA, &consent, &request);
    assert_refused(
        &refused,
        3,
        &[
            "permission-denied",
            "MoveOutCertification goes to a jobcenter; the recipient is a jugendamt",
        ],
    );
}
