//! The independent Python client (tests/python): its packages and running its scripts.

use crate::process::workspace;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How to install what the independent Python client needs.
pub const INSTALL: &str =
    "python3 -m pip install grpcio==1.85.1 grpcio-tools==1.85.1 grpcio-reflection==1.85.1";

fn python_has_grpc() -> bool {
    Command::new("python3")
        .args(["-c", "import grpc, grpc_tools.protoc, grpc_reflection"])
        .output()
        .unwrap_or_else(|e| {
            panic!("python3 is needed for the independent-client test ({e}); install it, then run `{INSTALL}`")
        })
        .status
        .success()
}

/// Makes sure python3 can import grpc and grpc_tools: installs the pinned versions with pip
/// when they are missing, and fails, naming the install step, when that does not work.
pub fn require_python_grpc() {
    if python_has_grpc() {
        return;
    }
    let out = Command::new("python3")
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .args([
            "grpcio==1.85.1",
            "grpcio-tools==1.85.1",
            "grpcio-reflection==1.85.1",
        ])
        .output()
        .unwrap_or_else(|e| panic!("cannot run pip ({e}); run `{INSTALL}`"));
    assert!(
        out.status.success() && python_has_grpc(),
        "python3 cannot import grpcio/grpcio-tools/grpcio-reflection and installing them failed: run `{INSTALL}`\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs tests/python/client_test.py with the IT system's client.toml (its token from the
/// client.toml's token_file) to completion, at most `within`; returns its stdout.
pub fn run_python_client(client_toml: &Path, recipient: &str, within: Duration) -> String {
    let repo = workspace();
    run_python_script(
        "client_test.py",
        &[
            "--client".as_ref(),
            client_toml.as_os_str(),
            "--recipient".as_ref(),
            recipient.as_ref(),
            "--proto-dir".as_ref(),
            repo.join("proto").as_os_str(),
        ],
        within,
    )
}

/// Runs tests/python/`script` with `args` to completion, at most `within`; fails unless
/// it exits 0; returns its stdout.
pub fn run_python_script(script: &str, args: &[&std::ffi::OsStr], within: Duration) -> String {
    let repo = workspace();
    let script = repo.join("tests/python").join(script);
    let mut child = Command::new("python3")
        .arg(&script)
        .args(args)
        .env_remove("KURZDRAHT_TOKEN")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", script.display()));
    let started = Instant::now();
    while child.try_wait().expect("wait for python3").is_none() {
        if started.elapsed() > within {
            let _ = child.kill();
            let out = child.wait_with_output().expect("python3's output");
            panic!(
                "{} did not finish within {within:?}\n{}",
                script.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("python3's output");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        script.display(),
        out.status
    );
    eprintln!("{stderr}");
    stdout
}

/// A `key=value` line the Python client printed.
pub fn printed<'a>(stdout: &'a str, key: &str) -> &'a str {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("client_test.py printed no {key}:\n{stdout}"))
}
