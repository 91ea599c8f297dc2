//! The project's licence as catalogues of public-sector software read it: `LICENSE` holds the
//! EUPL-1.2, every crate declares it (through the workspace), and `publiccode.yml` says the
//! same licence, version and address as the workspace's `Cargo.toml`.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lies in the workspace")
        .to_path_buf()
}

fn read(name: &str) -> String {
    std::fs::read_to_string(root().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The value of `key` in the section `section` of a simple YAML or TOML file: the first line
/// `key: value` / `key = "value"` after the line that opens the section (`""`: the top level),
/// quotes removed.
fn value_in(text: &str, section: &str, key: &str) -> Option<String> {
    let mut lines = text.lines();
    if !section.is_empty() {
        lines.find(|l| l.trim_end() == section)?;
    }
    lines.find_map(|l| {
        let l = l.trim();
        let rest = l.strip_prefix(key)?.trim_start().strip_prefix([':', '='])?;
        Some(rest.trim().trim_matches('"').to_string())
    })
}

#[test]
fn the_licence_is_the_eupl_everywhere() {
    let cargo = read("Cargo.toml");
    let publiccode = read("publiccode.yml");
    let licence = value_in(&cargo, "[workspace.package]", "license").expect("workspace licence");
    assert_eq!(licence, "EUPL-1.2");
    assert_eq!(
        value_in(&publiccode, "legal:", "license").as_deref(),
        Some(licence.as_str()),
        "publiccode.yml legal.license"
    );
    let text = read("LICENSE");
    assert!(
        text.starts_with("# EUROPÄISCHE UNION PUBLIC LICENCE v. 1.2"),
        "LICENSE holds the EUPL v. 1.2 (the official German version)"
    );
    // Every crate takes the workspace's licence (none declares another or none).
    let mut manifests = vec![root().join("tests/Cargo.toml")];
    for entry in std::fs::read_dir(root().join("crates")).expect("crates/") {
        manifests.push(entry.expect("entry").path().join("Cargo.toml"));
    }
    for manifest in manifests {
        let text = std::fs::read_to_string(&manifest).expect("manifest");
        assert!(
            text.lines().any(|l| l.trim() == "license.workspace = true"),
            "{} does not take the workspace licence",
            manifest.display()
        );
    }
}

#[test]
fn publiccode_says_what_the_workspace_says() {
    let cargo = read("Cargo.toml");
    let publiccode = read("publiccode.yml");
    let top = |key| value_in(&publiccode, "", key);
    assert_eq!(top("publiccodeYmlVersion").as_deref(), Some("0.4"));
    assert_eq!(top("name").as_deref(), Some("kurzdraht"));
    assert_eq!(
        top("softwareVersion"),
        value_in(&cargo, "[workspace.package]", "version"),
        "publiccode.yml softwareVersion"
    );
    assert_eq!(
        top("url"),
        value_in(&cargo, "[workspace.package]", "repository"),
        "publiccode.yml url"
    );
    // Both descriptions are there, the German one first (the users' language).
    let de = publiccode.find("\n  de:\n").expect("a German description");
    let en = publiccode
        .find("\n  en:\n")
        .expect("an English description");
    assert!(de < en);
}
