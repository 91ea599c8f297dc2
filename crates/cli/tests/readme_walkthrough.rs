//! The README's walkthrough ("Running nodes yourself") runs as written: this test takes the
//! fenced block between `<!-- walkthrough:begin -->` and `<!-- walkthrough:end -->` out of
//! README.md (the README stays the one source) and runs it line by line in a fresh
//! directory, each command with bash, `$B` being this build's binary.
//!
//! What a person's shell does, the test does itself: `cargo build --release` and
//! `B=target/release/kurzdraht` are not run (cargo built the binary for this test);
//! `export K=V` sets K for the following lines; a line ending in `&` starts a background
//! node and waits until its API port answers; `kill %1 %2 …` sends those nodes SIGTERM,
//! and `wait` waits until every background node has ended, demanding a clean exit (without
//! it the next command may find a store still open); `<CONSENT_ID>` and `<MESSAGE_ID>` are
//! taken from the
//! `consentId` and `messageId` of the `--json` answers before them. A command that reads
//! the inbox is repeated until it lists the message (delivery takes a moment; a person
//! would look again). Every other line must exit 0.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_kurzdraht");
/// The longest a node may take to start or to stop, and a message to arrive.
const BOUND: Duration = Duration::from_secs(30);

/// The walkthrough's lines (continuations joined), from README.md.
fn walkthrough() -> Vec<String> {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"))
            .expect("README.md");
    let block = readme
        .split_once("<!-- walkthrough:begin -->")
        .and_then(|(_, rest)| rest.split_once("<!-- walkthrough:end -->"))
        .map(|(block, _)| block)
        .expect("the walkthrough markers in README.md");
    let body = block
        .trim()
        .strip_prefix("```sh")
        .and_then(|b| b.strip_suffix("```"))
        .expect("one ```sh fenced block between the markers");
    let mut lines = Vec::new();
    let mut current = String::new();
    for line in body.lines() {
        match line.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(line);
                lines.push(std::mem::take(&mut current));
            }
        }
    }
    assert!(current.is_empty(), "a continuation at the end of the block");
    lines
}

/// `line` without its comment (a `#` at its start or after a blank, outside quotes).
fn without_comment(line: &str) -> &str {
    let (mut single, mut double, mut prev_blank) = (false, false, true);
    for (i, c) in line.char_indices() {
        match c {
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            '#' if !single && !double && prev_blank => return &line[..i],
            _ => {}
        }
        prev_blank = c.is_whitespace();
    }
    line
}

/// The commands of a line separated by `;` outside quotes.
fn commands(line: &str) -> Vec<String> {
    let (mut single, mut double) = (false, false);
    let mut out = vec![String::new()];
    for c in line.chars() {
        match c {
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            ';' if !single && !double => {
                out.push(String::new());
                continue;
            }
            _ => {}
        }
        out.last_mut().expect("a command").push(c);
    }
    out.into_iter()
        .map(|c| c.trim().to_string())
        .filter(|c| !c.is_empty())
        .collect()
}

/// The API address in a node.toml that `pki init` wrote (`api = "127.0.0.1:PORT"`).
fn api_addr(node_toml: &Path) -> std::net::SocketAddr {
    let text = std::fs::read_to_string(node_toml)
        .unwrap_or_else(|e| panic!("{}: {e}", node_toml.display()));
    text.lines()
        .find_map(|l| l.trim().strip_prefix("api = "))
        .expect("an api address")
        .trim_matches('"')
        .parse()
        .expect("a socket address")
}

/// The shell of the walkthrough: its directory, exported variables, background jobs and
/// the placeholders learnt so far.
struct Shell {
    dir: PathBuf,
    env: BTreeMap<String, String>,
    jobs: Vec<(String, Child, PathBuf)>,
    placeholders: BTreeMap<&'static str, String>,
}

impl Drop for Shell {
    fn drop(&mut self) {
        for (_, child, _) in &mut self.jobs {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Shell {
    fn bash(&self, command: &str) -> Command {
        let mut cmd = Command::new("bash");
        cmd.arg("-c")
            .arg(command)
            .current_dir(&self.dir)
            .env_remove("KURZDRAHT_CLIENT")
            .env_remove("KURZDRAHT_LOG")
            .env_remove("RUST_LOG")
            .env("B", BIN)
            .envs(&self.env);
        cmd
    }

    /// `command` with the placeholders filled in; every placeholder must be known.
    fn substituted(&self, command: &str) -> String {
        let mut out = command.to_string();
        for (name, value) in &self.placeholders {
            out = out.replace(name, value);
        }
        if let Some(start) = out.find("<") {
            let rest = &out[start..];
            if let Some(end) = rest.find('>') {
                let name = &rest[..=end];
                if name[1..name.len() - 1]
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c == '_')
                {
                    panic!("{name} in `{command}` is not known from the answers before it");
                }
            }
        }
        out
    }

    fn run(&mut self, command: &str) {
        if command == "cargo build --release" || command == "B=target/release/kurzdraht" {
            return; // cargo built $B for this test
        }
        if let Some(assignment) = command.strip_prefix("export ") {
            let (k, v) = assignment.split_once('=').expect("export K=V");
            self.env.insert(k.into(), v.trim_matches('"').into());
            return;
        }
        if let Some(jobs) = command.strip_prefix("kill ") {
            for job in jobs.split_whitespace() {
                let n: usize = job
                    .strip_prefix('%')
                    .and_then(|n| n.parse().ok())
                    .expect("kill %N");
                self.terminate(n);
            }
            return;
        }
        if command == "wait" {
            self.wait_all();
            return;
        }
        let command = self.substituted(command);
        if let Some(background) = command.strip_suffix('&') {
            self.start(background.trim());
            return;
        }
        let reads_inbox = command.split_whitespace().any(|w| w == "inbox");
        let started = Instant::now();
        let out = loop {
            let out = self.bash(&command).output().expect("bash");
            let listed = match self.placeholders.get("<MESSAGE_ID>") {
                Some(id) => String::from_utf8_lossy(&out.stdout).contains(id.as_str()),
                None => true,
            };
            if !out.status.success() || !reads_inbox || listed {
                break out;
            }
            assert!(
                started.elapsed() < BOUND,
                "`{command}` did not list the message within {BOUND:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        assert!(out.status.success(), "`{command}` failed: {}", shown(&out));
        self.learn(&out.stdout);
    }

    /// Takes `<CONSENT_ID>` and `<MESSAGE_ID>` from a `--json` answer.
    fn learn(&mut self, stdout: &[u8]) {
        let Ok(answer) = serde_json::from_slice::<serde_json::Value>(stdout) else {
            return;
        };
        if let Some(id) = answer["consent"]["consentId"].as_str() {
            self.placeholders.entry("<CONSENT_ID>").or_insert(id.into());
        }
        if let Some(id) = answer["messageId"].as_str() {
            self.placeholders.entry("<MESSAGE_ID>").or_insert(id.into());
        }
    }

    /// Starts a background `serve` and waits until its API port answers.
    fn start(&mut self, command: &str) {
        let config = command
            .split_whitespace()
            .skip_while(|w| *w != "--config")
            .nth(1)
            .expect("a background command is a `serve --config FILE`");
        let addr = api_addr(&self.dir.join(config));
        let log = self.dir.join(format!("job{}.log", self.jobs.len() + 1));
        let mut child = self
            .bash(&format!("exec {command}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("a log file"))
            .spawn()
            .expect("bash");
        let started = Instant::now();
        while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if let Some(status) = child.try_wait().expect("wait") {
                panic!("`{command}` ended ({status}): {}", read(&log));
            }
            assert!(started.elapsed() < BOUND, "`{command}` did not come up");
            std::thread::sleep(Duration::from_millis(20));
        }
        self.jobs.push((command.to_string(), child, log));
    }

    /// `kill %n`: SIGTERM to the n-th background job.
    fn terminate(&mut self, n: usize) {
        let (_, child, _) = self
            .jobs
            .get_mut(n - 1)
            .unwrap_or_else(|| panic!("no job %{n}"));
        let term = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill");
        assert!(term.success());
    }

    /// `wait`: every background job has ended, each with exit code 0.
    fn wait_all(&mut self) {
        let started = Instant::now();
        for (command, child, log) in &mut self.jobs {
            let status = loop {
                if let Some(status) = child.try_wait().expect("wait") {
                    break status;
                }
                assert!(started.elapsed() < BOUND, "`{command}` did not stop");
                std::thread::sleep(Duration::from_millis(20));
            };
            assert!(
                status.success(),
                "`{command}` ended {status}: {}",
                read(log)
            );
        }
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn shown(out: &Output) -> String {
    format!(
        "{}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn the_readme_walkthrough_runs_as_written() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut shell = Shell {
        dir: dir.path().to_path_buf(),
        env: BTreeMap::new(),
        jobs: Vec::new(),
        placeholders: BTreeMap::new(),
    };
    let mut ran = Vec::new();
    for line in walkthrough() {
        for command in commands(without_comment(&line)) {
            shell.run(&command);
            ran.push(command);
        }
    }
    // The walkthrough is what this test expects to run: three nodes, both placeholders,
    // all stopped, the audit chain verified last.
    assert_eq!(shell.jobs.len(), 3, "three background nodes");
    for (command, child, _) in &mut shell.jobs {
        assert!(
            child.try_wait().expect("wait").is_some(),
            "`{command}` still runs"
        );
    }
    assert_eq!(
        shell.placeholders.keys().copied().collect::<Vec<_>>(),
        ["<CONSENT_ID>", "<MESSAGE_ID>"]
    );
    assert!(
        ran.last().is_some_and(|c| c.contains("audit verify")),
        "{ran:?}"
    );
    assert!(ran.iter().any(|c| c == "wait"), "{ran:?}");
    assert!(ran.len() > 15, "{ran:?}");
}

#[test]
fn comments_and_separators_are_read_as_a_shell_reads_them() {
    assert_eq!(without_comment("a # b"), "a ");
    assert_eq!(without_comment("a \"# b\" c # d"), "a \"# b\" c ");
    assert_eq!(
        without_comment("printf 'x#y' > f  # z"),
        "printf 'x#y' > f  "
    );
    assert_eq!(without_comment("a#b"), "a#b");
    assert_eq!(
        commands("kill %1 %2; $B audit 'a;b'"),
        ["kill %1 %2", "$B audit 'a;b'"]
    );
}
