//! The exit codes of `kurzdraht serve` and `kurzdraht config check` are the ones
//! deploy/HANDBOOK.md's table promises (systemd's `RestartPreventExitStatus=` relies on
//! them): each code of the table is provoked here with the real binary on real files, and
//! the table lists exactly the codes provoked.

use kurzdraht_testkit::binary;
use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const AGENCY: &str = "jobcenter-segeberg";

/// The codes in the handbook's exit-code table.
fn documented_codes() -> BTreeSet<i32> {
    let handbook = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/HANDBOOK.md"),
    )
    .expect("deploy/HANDBOOK.md");
    let table = handbook
        .split_once("<!-- exit-codes:begin -->")
        .and_then(|(_, rest)| rest.split_once("<!-- exit-codes:end -->"))
        .map(|(table, _)| table)
        .expect("the exit-codes markers in the handbook");
    table
        .lines()
        .filter_map(|l| l.strip_prefix("| "))
        .filter_map(|l| l.split(" |").next())
        .filter_map(|code| code.trim().parse().ok())
        .collect()
}

/// A federation made by `pki init` in a fresh directory; returns it and the Jobcenter's
/// node.toml.
fn federation() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let out = Command::new(binary())
        .args(["pki", "init", "--dir"])
        .arg(dir.path())
        .output()
        .expect("run pki init");
    assert!(out.status.success(), "pki init: {out:?}");
    let node_toml = dir.path().join(AGENCY).join("node.toml");
    (dir, node_toml)
}

fn setting<'a>(toml: &'a str, key: &str) -> &'a str {
    toml.lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{key} = ")))
        .unwrap_or_else(|| panic!("no {key} in node.toml"))
        .trim_matches('"')
}

fn api_addr(node_toml: &Path) -> SocketAddr {
    let toml = std::fs::read_to_string(node_toml).expect("read node.toml");
    setting(&toml, "api").parse().expect("api address")
}

fn edit(node_toml: &Path, from: &str, to: &str) {
    let toml = std::fs::read_to_string(node_toml).expect("read node.toml");
    assert!(toml.contains(from), "node.toml has no {from:?}");
    std::fs::write(node_toml, toml.replacen(from, to, 1)).expect("write node.toml");
}

fn serve(node_toml: &Path) -> Child {
    Command::new(binary())
        .args(["serve", "--config"])
        .arg(node_toml)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start kurzdraht serve")
}

/// Runs `serve` to its end (it must end by itself within 30 s).
fn serve_to_end(node_toml: &Path) -> Output {
    let mut child = serve(node_toml);
    let started = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if started.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("serve did not end within 30 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().expect("output")
}

fn config_check(node_toml: &Path) -> Output {
    Command::new(binary())
        .args(["config", "check"])
        .arg(node_toml)
        .output()
        .expect("run config check")
}

fn code(out: &Output) -> i32 {
    out.status.code().expect("an exit code, not a signal")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn serve_and_config_check_end_with_the_documented_codes() {
    let mut seen = BTreeSet::new();
    let (dir, node_toml) = federation();

    // 0: a valid configuration; a node stopped by SIGTERM.
    let out = config_check(&node_toml);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let mut node = serve(&node_toml);
    let api = api_addr(&node_toml);
    let started = Instant::now();
    while TcpStream::connect(api).is_err() {
        assert!(
            node.try_wait().expect("wait").is_none(),
            "serve ended early"
        );
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "serve never listened"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // 9: the store's lock is held by the running node.
    let copy = dir.path().join(AGENCY).join("second.toml");
    std::fs::copy(&node_toml, &copy).expect("copy node.toml");
    let toml = std::fs::read_to_string(&copy).expect("read");
    let addrs = kurzdraht_testkit::free_loopback_addrs(3).expect("free ports");
    let toml = toml
        .replacen(setting(&toml, "peer"), &addrs[0].to_string(), 1)
        .replacen(setting(&toml, "api"), &addrs[1].to_string(), 1);
    let toml = toml.replacen(setting(&toml, "listen"), &addrs[2].to_string(), 1);
    std::fs::write(&copy, toml).expect("write");
    let out = serve_to_end(&copy);
    assert_eq!(code(&out), 9, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("in use by another process"),
        "{}",
        stderr(&out)
    );
    seen.insert(9);

    let pid = node.id().to_string();
    let kill = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(kill.success());
    let out = node.wait_with_output().expect("wait");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    seen.insert(0);

    // 5: a peer not reached (the two Jugendämter are not running).
    let out = Command::new(binary())
        .args(["config", "check", "--reach-peers"])
        .arg(&node_toml)
        .output()
        .expect("run config check --reach-peers");
    assert_eq!(code(&out), 5, "{}", stderr(&out));
    seen.insert(5);

    // 9: a listen address held by another process.
    let held = TcpListener::bind(api).expect("hold the API port");
    let out = serve_to_end(&node_toml);
    assert_eq!(code(&out), 9, "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("listen.api: cannot listen on {api}")),
        "{}",
        stderr(&out)
    );
    drop(held);

    // 2: a wrong command line.
    let out = Command::new(binary())
        .args(["serve", "--no-such-option"])
        .output()
        .expect("run");
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    seen.insert(2);

    // 8: the store is sealed with another data key.
    let other_key = dir.path().join(AGENCY).join("other-data.key");
    std::fs::write(&other_key, format!("{}\n", "ab".repeat(32))).expect("write key");
    set_owner_only(&other_key);
    let with_other_key = dir.path().join(AGENCY).join("other-key.toml");
    std::fs::copy(&node_toml, &with_other_key).expect("copy");
    edit(
        &with_other_key,
        "data_key_file = \"data.key\"",
        "data_key_file = \"other-data.key\"",
    );
    let out = serve_to_end(&with_other_key);
    assert_eq!(code(&out), 8, "{}", stderr(&out));
    seen.insert(8);

    // 1: another failure — the data directory is a file.
    let blocked = dir.path().join(AGENCY).join("blocked.toml");
    std::fs::copy(&node_toml, &blocked).expect("copy");
    std::fs::write(dir.path().join(AGENCY).join("not-a-dir"), b"x").expect("write");
    edit(&blocked, "data_dir = \"data\"", "data_dir = \"not-a-dir\"");
    let out = serve_to_end(&blocked);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    seen.insert(1);

    // 4: an invalid configuration, for both commands; the message names the key.
    edit(&node_toml, "deadline_secs = 604800", "deadline_secs = 0");
    let out = config_check(&node_toml);
    assert_eq!(code(&out), 4, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("delivery.deadline_secs"),
        "{}",
        stderr(&out)
    );
    let out = serve_to_end(&node_toml);
    assert_eq!(code(&out), 4, "{}", stderr(&out));
    seen.insert(4);

    assert_eq!(
        seen,
        documented_codes(),
        "the handbook's table and the codes seen"
    );
}

#[cfg(unix)]
fn set_owner_only(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
}
