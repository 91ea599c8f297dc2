//! The real `kurzdraht` binary for process-level tests and benchmarks: where it is (built
//! once when missing or older than the sources).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::SystemTime;

/// The workspace's root directory (where `Cargo.toml`, `proto/` and `tests/` are).
pub fn workspace() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

/// The `kurzdraht` binary of this test's or benchmark's profile (`target/<profile>/kurzdraht`;
/// a test executable lies in `target/<profile>/deps`, a binary in `target/<profile>`).
///
/// `cargo test --workspace` builds it before any test runs. When only one package is
/// tested (`cargo test -p kurzdraht-tests`) or run (`cargo run -p kurzdraht-bench`) it may be
/// missing or older than the sources; then it is built once with
/// `cargo build -p kurzdraht-cli --bin kurzdraht`.
pub fn binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let exe = std::env::current_exe().expect("the executable's path");
        let parent = exe
            .parent()
            .expect("the executable lies in <target>/<profile>");
        // target/<profile>/deps/crash-<hash>, or target/<profile>/kurzdraht-bench
        let profile_dir = match parent.file_name() {
            Some(name) if name == "deps" => parent.parent().expect("<target>/<profile>/deps"),
            _ => parent,
        };
        let binary = profile_dir.join(format!("kurzdraht{}", std::env::consts::EXE_SUFFIX));
        let workspace = workspace();
        if needs_build(&binary, workspace) {
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let mut cmd = Command::new(cargo);
            cmd.current_dir(workspace)
                .args(["build", "-p", "kurzdraht-cli", "--bin", "kurzdraht"]);
            match profile_dir.file_name().and_then(|n| n.to_str()) {
                Some("debug") | None => {}
                Some(profile) => {
                    cmd.args(["--profile", profile]);
                }
            }
            if let Some(target) = profile_dir.parent() {
                cmd.arg("--target-dir").arg(target);
            }
            let status = cmd.status().expect("run cargo build");
            assert!(
                status.success(),
                "cargo build of the kurzdraht binary failed"
            );
        }
        assert!(binary.is_file(), "{} does not exist", binary.display());
        binary
    })
}

/// Whether the binary is missing or older than any source it is built from.
fn needs_build(binary: &Path, workspace: &Path) -> bool {
    let Ok(built) = binary.metadata().and_then(|m| m.modified()) else {
        return true;
    };
    let mut newest = SystemTime::UNIX_EPOCH;
    let mut dirs = vec![workspace.join("crates"), workspace.join("proto")];
    for file in ["Cargo.toml", "Cargo.lock"] {
        if let Ok(t) = workspace.join(file).metadata().and_then(|m| m.modified()) {
            newest = newest.max(t);
        }
    }
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            if meta.is_dir() {
                if !["tests", "target", "testkit", "bench"]
                    .iter()
                    .any(|n| name == *n)
                {
                    dirs.push(path);
                }
            } else if path
                .extension()
                .is_some_and(|e| e == "rs" || e == "proto" || e == "toml")
            {
                if let Ok(t) = meta.modified() {
                    newest = newest.max(t);
                }
            }
        }
    }
    newest > built
}
