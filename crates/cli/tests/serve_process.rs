//! `kurzdraht serve` as an operator runs it, in a real process: the log level is set by
//! `--log-level`, else `KURZDRAHT_LOG`, else `RUST_LOG`, else info; relative paths in
//! node.toml resolve against the file's directory, not the working directory.

use kurzdraht_testkit::ServeProcess;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_kurzdraht");
/// The longest a node may take to start or to stop.
const BOUND: Duration = Duration::from_secs(30);

/// A federation made by `pki init`, and an empty working directory elsewhere.
struct Setup {
    _dir: tempfile::TempDir,
    fed: PathBuf,
    elsewhere: PathBuf,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().expect("temp dir");
    let fed = dir.path().join("fed");
    let init = Command::new(BIN)
        .args(["pki", "init", "--dir"])
        .arg(&fed)
        .output()
        .expect("pki init");
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).expect("a working directory");
    Setup {
        _dir: dir,
        fed,
        elsewhere,
    }
}

/// The API address in a node.toml written by `pki init` (`api = "127.0.0.1:PORT"`).
fn api_addr(node_toml: &Path) -> std::net::SocketAddr {
    let text = std::fs::read_to_string(node_toml).expect("node.toml");
    let line = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("api = "))
        .expect("an api address");
    line.trim_matches('"').parse().expect("a socket address")
}

/// How a `serve` run ended: its exit code and everything it wrote on stderr.
struct Run {
    code: Option<i32>,
    stderr: String,
}

/// Runs `serve --config ../fed/jobcenter-segeberg/node.toml` (relative to `elsewhere`, the
/// working directory) with `args` and only the environment variables `env` of the log
/// ones; once its API port answers, stops it with SIGTERM (a graceful stop, so its log is
/// complete) and returns how it ended. A run that fails to start returns at once.
fn serve(s: &Setup, args: &[&str], env: &[(&str, &str)]) -> Run {
    let node_toml = s.fed.join("jobcenter-segeberg/node.toml");
    let log_path = s.fed.join("serve.log");
    let mut builder = ServeProcess::builder(
        "the Jobcenter",
        Path::new("../fed/jobcenter-segeberg/node.toml"),
        log_path.clone(),
    )
    .program(BIN)
    .current_dir(&s.elsewhere)
    .args(args.iter().copied())
    .env_remove("KURZDRAHT_LOG")
    .env_remove("RUST_LOG");
    for (k, v) in env {
        builder = builder.env(k, v);
    }
    let mut node = builder.spawn().expect("spawn serve");
    let addr = api_addr(&node_toml);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let code = runtime.block_on(async {
        match node.wait_listening(addr, BOUND).await {
            Ok(()) => node.stop_status(BOUND).await.expect("serve stops").code(),
            // it ended at its start: how?
            Err(e) => node
                .exited()
                .expect("wait")
                .unwrap_or_else(|| panic!("{e}"))
                .code(),
        }
    });
    Run {
        code,
        stderr: std::fs::read_to_string(&log_path).expect("the log"),
    }
}

const SERVING: &str = "node serving";

#[test]
fn the_log_level_is_set_by_the_flag_else_kurzdraht_log_else_rust_log() {
    let s = setup();
    let logs = |what: &str, args: &[&str], env: &[(&str, &str)], expected: bool| {
        let run = serve(&s, args, env);
        assert_eq!(run.code, Some(0), "{what}: {}", run.stderr);
        assert_eq!(
            run.stderr.contains(SERVING),
            expected,
            "{what}: {SERVING:?} expected {expected}, stderr:\n{}",
            run.stderr
        );
    };
    // positive control: serve's default level is info
    logs("the default", &[], &[], true);
    logs("--log-level warn", &["--log-level", "warn"], &[], false);
    logs(
        "KURZDRAHT_LOG=warn",
        &[],
        &[("KURZDRAHT_LOG", "warn")],
        false,
    );
    logs("RUST_LOG=warn", &[], &[("RUST_LOG", "warn")], false);
    logs(
        "a filter by target",
        &["--log-level", "warn,kurzdraht_node=info"],
        &[],
        true,
    );
    // precedence: the flag beats KURZDRAHT_LOG beats RUST_LOG
    logs(
        "KURZDRAHT_LOG=info over RUST_LOG=warn",
        &[],
        &[("KURZDRAHT_LOG", "info"), ("RUST_LOG", "warn")],
        true,
    );
    logs(
        "KURZDRAHT_LOG=warn over RUST_LOG=info",
        &[],
        &[("KURZDRAHT_LOG", "warn"), ("RUST_LOG", "info")],
        false,
    );
    logs(
        "--log-level info over KURZDRAHT_LOG=warn",
        &["--log-level", "info"],
        &[("KURZDRAHT_LOG", "warn"), ("RUST_LOG", "warn")],
        true,
    );
    // debug shows more than info
    let debug = serve(&s, &["--log-level", "debug"], &[]);
    assert!(debug.stderr.contains("DEBUG"), "{}", debug.stderr);
    assert!(!serve(&s, &[], &[]).stderr.contains("DEBUG"));

    // a variable that is no level is a usage error naming it; the node does not start
    let bad = serve(&s, &[], &[("RUST_LOG", "wran")]);
    assert_eq!(bad.code, Some(2), "{}", bad.stderr);
    assert!(bad.stderr.contains("RUST_LOG"), "{}", bad.stderr);
    let bad = serve(&s, &["--log-level", "wran"], &[]);
    assert_eq!(bad.code, Some(2), "{}", bad.stderr);
    assert!(bad.stderr.contains("--log-level"), "{}", bad.stderr);
}

/// Every path in node.toml written by `pki init` is relative (`data`, `../ca.pem`,
/// `tls.pem`, …); a node started from another working directory finds them beside the
/// file and creates its store there, leaving the working directory untouched.
#[test]
fn relative_paths_in_node_toml_resolve_against_its_directory() {
    let s = setup();
    let node_toml =
        std::fs::read_to_string(s.fed.join("jobcenter-segeberg/node.toml")).expect("node.toml");
    assert!(node_toml.contains("data_dir = \"data\""), "{node_toml}");
    assert!(node_toml.contains("ca_cert = \"../ca.pem\""), "{node_toml}");
    let run = serve(&s, &[], &[]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(run.stderr.contains(SERVING), "{}", run.stderr);
    assert!(
        s.fed.join("jobcenter-segeberg/data").is_dir(),
        "the store lies beside node.toml"
    );
    let left: Vec<_> = std::fs::read_dir(&s.elsewhere)
        .expect("the working directory")
        .collect();
    assert!(left.is_empty(), "the working directory got {left:?}");
}
