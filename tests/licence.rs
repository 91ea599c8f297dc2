//! The project's licence as catalogues of public-sector software read it: `LICENSE` holds the
//! EUPL-1.2, every crate declares it (through the workspace), and `publiccode.yml` says the
//! same licence, version and address as the workspace's `Cargo.toml`. Vendored third-party
//! files (the console's KERN UX assets, the test harness's axe-core) are exactly what their
//! README says: each file with its SHA-256, each with its licence file beside it.

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

/// The `members = [...]` of the workspace's Cargo.toml (one line).
fn workspace_members(cargo: &str) -> Vec<String> {
    let line = cargo
        .lines()
        .find(|l| l.trim_start().starts_with("members"))
        .expect("a members line");
    let list = line
        .split_once('[')
        .and_then(|(_, rest)| rest.split_once(']'))
        .expect("members = [...] on one line")
        .0;
    list.split(',')
        .map(|m| m.trim().trim_matches('"').to_string())
        .filter(|m| !m.is_empty())
        .collect()
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
    // Every crate takes the workspace's licence (none declares another or none): every
    // workspace member and every directory under crates/ with a Cargo.toml (a directory
    // without one, such as a crate's assets arriving before its code, is no crate).
    let mut manifests: Vec<PathBuf> = workspace_members(&cargo)
        .iter()
        .map(|m| root().join(m).join("Cargo.toml"))
        .collect();
    assert!(
        manifests.contains(&root().join("tests/Cargo.toml")),
        "the workspace's members: {manifests:?}"
    );
    for entry in std::fs::read_dir(root().join("crates")).expect("crates/") {
        let manifest = entry.expect("entry").path().join("Cargo.toml");
        if manifest.is_file() && !manifests.contains(&manifest) {
            manifests.push(manifest);
        }
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

/// One row of a vendored-assets README's table:
/// `| file | what | origin | licence | licence file | SHA-256 |`.
#[derive(Debug)]
struct Vendored {
    file: String,
    origin: String,
    licence: String,
    licence_file: String,
    sha256: String,
}

/// The rows of `<dir>/README.md`'s table (paths relative to `dir`).
fn vendored(dir: &str) -> Vec<Vendored> {
    let readme = read(&format!("{dir}/README.md"));
    readme
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| {
            let cells: Vec<&str> = l
                .trim_matches('|')
                .split('|')
                .map(|c| c.trim().trim_matches('`'))
                .collect();
            assert_eq!(cells.len(), 6, "{dir}/README.md: a row of six cells: {l}");
            Vendored {
                file: cells[0].into(),
                origin: cells[2].into(),
                licence: cells[3].into(),
                licence_file: cells[4].into(),
                sha256: cells[5].into(),
            }
        })
        .collect()
}

/// Every file under `dir` but its README.md, relative to `dir`, sorted.
fn files_under(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                todo.push(path);
            } else {
                let rel = path.strip_prefix(dir).expect("under dir");
                let rel = rel.to_str().expect("UTF-8 path").to_string();
                if rel != "README.md" {
                    found.push(rel);
                }
            }
        }
    }
    found.sort();
    found
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The vendored files of `dir` are exactly the README's rows, each with its SHA-256, from a
/// package at an exact version, with a licence file that is itself a row; the licence files
/// are `licence_files` (each starting as given).
fn check_vendored(dir: &str, licence_files: &[(&str, &str)]) {
    let rows = vendored(dir);
    let listed: Vec<String> = {
        let mut l: Vec<String> = rows.iter().map(|r| r.file.clone()).collect();
        l.sort();
        l
    };
    assert_eq!(
        files_under(&root().join(dir)),
        listed,
        "{dir}: the files there and the README's rows"
    );
    for row in &rows {
        let path = root().join(dir).join(&row.file);
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(
            sha256_hex(&bytes),
            row.sha256,
            "{dir}/{}: SHA-256",
            row.file
        );
        let (package, version) = row
            .origin
            .rsplit_once('@')
            .unwrap_or_else(|| panic!("{dir}/{}: origin package@version", row.file));
        assert!(
            !package.is_empty() && version.split('.').count() == 3,
            "{dir}/{}: origin {:?} names no exact version",
            row.file,
            row.origin
        );
        assert!(!row.licence.is_empty(), "{dir}/{}: a licence", row.file);
        assert!(
            licence_files.iter().any(|(f, _)| *f == row.licence_file),
            "{dir}/{}: licence file {:?} is none of {licence_files:?}",
            row.file,
            row.licence_file
        );
    }
    for (file, start) in licence_files {
        assert!(
            rows.iter().any(|r| r.file == *file),
            "{dir}: licence file {file} is not listed"
        );
        let text = read(&format!("{dir}/{file}"));
        assert!(text.contains(start), "{dir}/{file} is not the {start:?}");
    }
}

#[test]
fn vendored_console_assets_are_what_their_readme_says() {
    check_vendored(
        "crates/console/assets",
        &[
            (
                "kern/LICENSE.md",
                "# EUROPÄISCHE UNION PUBLIC LICENCE v. 1.2",
            ),
            ("kern/fonts/OFL.txt", "SIL OPEN FONT LICENSE Version 1.1"),
        ],
    );
    // KERN's own files are EUPL, the fonts OFL.
    for row in vendored("crates/console/assets") {
        let expected = if row.file.ends_with(".woff2") || row.file.ends_with("OFL.txt") {
            "OFL-1.1"
        } else {
            "EUPL-1.2"
        };
        assert_eq!(row.licence, expected, "{}", row.file);
    }
}

#[test]
fn vendored_axe_is_what_its_readme_says() {
    check_vendored(
        "crates/testkit/assets",
        &[
            ("axe/LICENSE", "Mozilla Public License, version 2.0"),
            ("axe/LICENSE-3RD-PARTY.txt", "MIT License"),
        ],
    );
    let axe = read("crates/testkit/assets/axe/axe.min.js");
    let origin = vendored("crates/testkit/assets")
        .into_iter()
        .find(|r| r.file == "axe/axe.min.js")
        .expect("axe.min.js listed")
        .origin;
    let version = origin.strip_prefix("axe-core@").expect("from axe-core");
    assert!(
        axe.starts_with(&format!("/*! axe v{version}\n")),
        "axe.min.js is axe {version}"
    );
}

/// The `url(...)` targets in a stylesheet, quotes removed.
fn css_urls(css: &str) -> Vec<String> {
    css.split("url(")
        .skip(1)
        .map(|rest| {
            let end = rest.find(')').expect("url(...) closed");
            rest[..end].trim().trim_matches(['"', '\'']).to_string()
        })
        .collect()
}

#[test]
fn kern_stylesheets_refer_only_to_vendored_files() {
    let dir = "crates/console/assets";
    let rows = vendored(dir);
    // kern.min.css fetches nothing: no @import, only inline data: URLs.
    let kern = read(&format!("{dir}/kern/kern.min.css"));
    assert!(!kern.contains("@import"), "kern.min.css imports nothing");
    let urls = css_urls(&kern);
    assert!(!urls.is_empty());
    for url in &urls {
        assert!(url.starts_with("data:"), "kern.min.css refers to {url}");
    }
    // fira-sans.css refers to each vendored woff2, relative to itself, and to nothing else.
    let fonts = read(&format!("{dir}/kern/fonts/fira-sans.css"));
    let mut referred: Vec<String> = css_urls(&fonts)
        .iter()
        .map(|u| {
            let rel = u
                .strip_prefix("./")
                .unwrap_or_else(|| panic!("fira-sans.css: {u} is not relative"));
            format!("kern/fonts/{rel}")
        })
        .collect();
    referred.sort();
    let mut woff2: Vec<String> = rows
        .iter()
        .map(|r| r.file.clone())
        .filter(|f| f.ends_with(".woff2"))
        .collect();
    woff2.sort();
    assert_eq!(woff2.len(), 10, "Fira Sans 300–700, upright and italic");
    assert_eq!(
        referred, woff2,
        "fira-sans.css's url()s and the vendored fonts"
    );
}
