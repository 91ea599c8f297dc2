//! The key ceremony of deploy/README.md §1 run with the real binary, one directory per host
//! (CA, federation operator, each agency), and the helpers the tests that use it share:
//! running the binary, handing public files between hosts, starting real `serve`
//! processes, client commands, metrics. Used by `ceremony.rs` and `fourth_agency.rs`.

#![allow(dead_code)] // each test file uses its own part

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_kurzdraht");
pub const JC: &str = "jobcenter-segeberg";
pub const JA: &str = "jugendamt-kreis-segeberg";
pub const JN: &str = "jugendamt-norderstedt";
/// The longest any single wait may take.
pub const BOUND: Duration = Duration::from_secs(30);

pub fn kd(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("KURZDRAHT_CLIENT")
        .output()
        .expect("run kurzdraht")
}

pub fn text(o: &[u8]) -> String {
    String::from_utf8_lossy(o).into_owned()
}

/// Runs a command that must succeed; its stdout.
pub fn ok(args: &[&str]) -> String {
    let out = kd(args);
    assert!(
        out.status.success(),
        "kurzdraht {}: exit {:?}\n{}{}",
        args.join(" "),
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

pub fn s(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

/// Hands a public file from one host to another (what a USB stick or e-mail does).
pub fn hand_over(from: &Path, to: &Path) {
    std::fs::copy(from, to).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
}

/// Replaces a file as `install` does (a new file renamed over the old one).
pub fn replace(from: &Path, to: &Path) {
    let tmp = to.with_extension("incoming");
    std::fs::copy(from, &tmp).expect("copy");
    std::fs::rename(&tmp, to).expect("rename");
}

/// An agency's node host: its directory, and where its node serves metrics.
pub struct Agency {
    pub id: &'static str,
    pub dir: PathBuf,
    pub metrics: SocketAddr,
}

pub struct Ceremony {
    pub _root: tempfile::TempDir,
    pub root: PathBuf,
    pub ca: PathBuf,
    pub operator: PathBuf,
    pub agencies: Vec<Agency>,
}

impl Ceremony {
    pub fn agency(&self, id: &str) -> &Agency {
        self.agencies.iter().find(|a| a.id == id).expect("agency")
    }
}

pub use kurzdraht_testkit::free_addrs;

/// The ceremony of deploy/README.md §1, each step in the directory of the host it runs on.
pub fn ceremony() -> Ceremony {
    let root_dir = tempfile::tempdir().expect("temp dir");
    let root = root_dir.path().to_path_buf();
    let ca = root.join("ca-host");
    let operator = root.join("operator-host");
    let addrs = free_addrs(9);
    let specs: [AgencySpec<'_>; 3] = [
        (JC, "Jobcenter Kreis Segeberg", "jobcenter", &["ars:01060"]),
        (JA, "Jugendamt Kreis Segeberg", "jugendamt", &["ars:01060"]),
        (
            JN,
            "Jugendamt der Stadt Norderstedt",
            "jugendamt",
            &[
                "plz:22844",
                "plz:22846",
                "plz:22848",
                "plz:22850",
                "plz:22851",
            ],
        ),
    ];
    // 1. The CA (offline machine) and the operator make their keys.
    ok(&["pki", "ca-init", "--dir", s(&ca)]);
    ok(&["pki", "operator-key", "--dir", s(&operator)]);
    // 2. Each agency, on its own host: its keys, request, entry and configurations; the
    //    request goes to the CA, the entry to the operator.
    let agencies: Vec<Agency> = specs
        .into_iter()
        .enumerate()
        .map(|(i, spec)| {
            let addrs = [addrs[3 * i], addrs[3 * i + 1], addrs[3 * i + 2]];
            agency_host(&root, &ca, &operator, spec, addrs)
        })
        .collect();
    // 3. The CA signs each request; the certificate and ca.pem go to the agency.
    for a in &agencies {
        ca_signs(&ca, a);
    }
    // 4. The operator assembles and signs the directory; it and operator.pub go to every
    //    agency.
    let directory = operator.join("directory.toml");
    let mut args = vec![
        "directory".to_string(),
        "assemble".into(),
        "--version".into(),
        "1".into(),
        "--out".into(),
        s(&directory).into(),
    ];
    for a in &agencies {
        args.push(s(&operator.join(format!("{}.entry.toml", a.id))).into());
    }
    ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    ok(&[
        "directory",
        "sign",
        "--key",
        s(&operator.join("operator.key")),
        s(&directory),
    ]);
    for a in &agencies {
        hand_over(&directory, &a.dir.join("directory.toml"));
        hand_over(
            &operator.join("directory.toml.sig"),
            &a.dir.join("directory.toml.sig"),
        );
        hand_over(&operator.join("operator.pub"), &a.dir.join("operator.pub"));
    }
    Ceremony {
        _root: root_dir,
        root,
        ca,
        operator,
        agencies,
    }
}

/// An agency's id, name, role and competence entries, as `pki agency-keys` takes them.
pub type AgencySpec<'a> = (&'static str, &'a str, &'a str, &'a [&'a str]);

/// On a new agency host under `root` (`<id>-host`): `pki agency-keys` with the peer, API
/// and metrics addresses `addrs`; its certificate request is handed to the CA host, its
/// directory entry to the operator host.
pub fn agency_host(
    root: &Path,
    ca: &Path,
    operator: &Path,
    (id, name, role, competence): AgencySpec<'_>,
    [peer, api, metrics]: [SocketAddr; 3],
) -> Agency {
    let dir = root.join(format!("{id}-host"));
    let endpoint = format!("https://{peer}");
    let (peer_s, api_s, metrics_s) = (peer.to_string(), api.to_string(), metrics.to_string());
    let mut args = vec![
        "pki",
        "agency-keys",
        "--agency",
        id,
        "--name",
        name,
        "--role",
        role,
        "--endpoint",
        &endpoint,
        "--peer-listen",
        &peer_s,
        "--api-listen",
        &api_s,
        "--metrics-listen",
        &metrics_s,
        "--dir",
        s(&dir),
    ];
    for c in competence {
        args.extend(["--competence", c]);
    }
    ok(&args);
    hand_over(&dir.join("tls.csr"), &ca.join(format!("{id}.csr")));
    let entry = format!("{id}.entry.toml");
    hand_over(&dir.join(&entry), &operator.join(&entry));
    Agency { id, dir, metrics }
}

/// On the CA host: `pki sign-request` for the agency's request; the certificate and ca.pem
/// are handed to the agency's host.
pub fn ca_signs(ca: &Path, a: &Agency) {
    let cert = ca.join(format!("{}.pem", a.id));
    ok(&[
        "pki",
        "sign-request",
        "--ca-key",
        s(&ca.join("ca.key")),
        "--ca-cert",
        s(&ca.join("ca.pem")),
        "--csr",
        s(&ca.join(format!("{}.csr", a.id))),
        "--agency",
        a.id,
        "--out",
        s(&cert),
    ]);
    hand_over(&cert, &a.dir.join("tls.pem"));
    hand_over(&ca.join("ca.pem"), &a.dir.join("ca.pem"));
}

/// The running nodes, killed when the test ends.
pub struct Nodes(pub BTreeMap<&'static str, Child>);

impl Drop for Nodes {
    fn drop(&mut self) {
        for c in self.0.values_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn serve(a: &Agency) -> Child {
    let log = std::fs::File::create(a.dir.join("serve.log")).expect("log");
    Command::new(BIN)
        .args(["serve", "--config", s(&a.dir.join("node.toml"))])
        .env_remove("KURZDRAHT_LOG")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("serve")
}

/// Waits until `kurzdraht health --config` says the node serves.
pub fn wait_healthy(a: &Agency) {
    let started = Instant::now();
    loop {
        let out = kd(&["health", "--config", s(&a.dir.join("node.toml"))]);
        if out.status.success() {
            return;
        }
        assert!(
            started.elapsed() < BOUND,
            "{} did not come up: {}\n{}",
            a.id,
            text(&out.stderr),
            std::fs::read_to_string(a.dir.join("serve.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn client(a: &Agency, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .arg("--client")
        .arg(a.dir.join("client.toml"))
        .output()
        .expect("run kurzdraht")
}

pub fn json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        text(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON")
}

pub use kurzdraht_testkit::LENA_CLI as LENA;

/// Records Lena's written consent at `jc`, naming `recipient`; its id.
pub fn grant_consent(jc: &Agency, form: &Path, recipient: &str) -> String {
    let mut args = vec!["consent", "grant", "--json"];
    args.extend(kurzdraht_testkit::lena_written_consent_cli(
        recipient,
        s(form),
    ));
    json(&client(jc, &args))["consent"]["consentId"]
        .as_str()
        .expect("consent id")
        .to_string()
}

/// A certification request about Lena from `jc` to `to`; its message id.
pub fn send(jc: &Agency, to: &str, consent: &str) -> String {
    let mut args = vec![
        "send",
        "certification-request",
        "--json",
        "--to",
        to,
        "--consent",
        consent,
    ];
    args.extend(LENA);
    args.extend([
        "--reason",
        "Antrag auf Zusicherung",
        "--caseworker",
        "Herr Jensen",
    ]);
    json(&client(jc, &args))["messageId"]
        .as_str()
        .expect("message id")
        .to_string()
}

/// Waits until the message leaves the outbox (DELIVERED, REJECTED, …); its status.
pub fn wait_final(jc: &Agency, id: &str) -> serde_json::Value {
    let started = Instant::now();
    loop {
        let v = json(&client(jc, &["status", "--json", id]));
        let state = v["state"].as_str().unwrap_or("").to_string();
        if !matches!(
            state.as_str(),
            "QUEUED" | "IN_FLIGHT" | "SENDING" | "RETRYING"
        ) {
            return v;
        }
        assert!(started.elapsed() < BOUND, "{id} still {state}: {v}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The node's metrics (plain HTTP), as `name{labels}` → value.
pub fn scrape(addr: SocketAddr) -> BTreeMap<String, f64> {
    let mut stream = std::net::TcpStream::connect(addr).expect("metrics");
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .expect("request");
    let mut body = String::new();
    stream.read_to_string(&mut body).expect("answer");
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

pub fn metric(a: &Agency, key: &str) -> f64 {
    scrape(a.metrics).get(key).copied().unwrap_or(f64::NAN)
}

pub fn hangup(child: &Child) {
    let status = Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .expect("kill -HUP");
    assert!(status.success());
}

pub fn wait_metric(a: &Agency, key: &str, value: f64) {
    let started = Instant::now();
    while metric(a, key) != value {
        assert!(
            started.elapsed() < BOUND,
            "{}: {key} is {}, not {value}\n{}",
            a.id,
            metric(a, key),
            std::fs::read_to_string(a.dir.join("serve.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn sigterm_and_wait(child: &mut Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill -TERM");
    assert!(status.success());
    let started = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        assert!(started.elapsed() < BOUND, "the node did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
}
