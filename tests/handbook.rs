//! deploy/HANDBOOK.md's commands run as written. Each fenced block after a
//! `<!-- handbook-test: NAME -->` marker is taken out of the handbook (the handbook stays the
//! one source) and run with bash on a host laid out like a production one — a temporary
//! directory standing for `/`, holding `/etc/kurzdraht`, `/var/lib/kurzdraht` and
//! `/usr/local/bin/kurzdraht` — of the Jobcenter, whose two peers run beside it as real
//! `kurzdraht serve` processes. What a host has and a test machine has not is played by small
//! bash stand-ins: `systemctl start|stop|restart|is-active kurzdraht` starts and stops the
//! node as the unit would (SIGTERM, waiting for the end), `runuser -u kurzdraht --` runs the
//! command as is, `chown` does nothing, `journalctl` prints the node's log; `gpg` and
//! `timedatectl` are skipped. Every block must end with exit status 0, and each test then
//! checks what the block was meant to do.

use kurzdraht_client::{self as client, AgencyClient, ClientConfig};
use kurzdraht_proto::v1 as pb;
use kurzdraht_testkit::*;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// The handbook's block after `<!-- handbook-test: name -->`.
fn block(name: &str) -> String {
    let handbook = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/HANDBOOK.md"),
    )
    .expect("deploy/HANDBOOK.md");
    let marker = format!("<!-- handbook-test: {name} -->");
    let (_, rest) = handbook
        .split_once(&marker)
        .unwrap_or_else(|| panic!("no {marker} in the handbook"));
    let rest = rest
        .trim_start()
        .strip_prefix("```sh\n")
        .unwrap_or_else(|| panic!("a ```sh block right after {marker}"));
    let (body, _) = rest.split_once("```").expect("the block's end");
    body.to_string()
}

/// One test at a time: a peer the test stops frees its port, which another test's `pki
/// init` could pick meanwhile.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// What stands in for systemd, util-linux and the tools a test machine lacks.
const STAND_INS: &str = r#"
set -euo pipefail
kurzdraht() { "$ROOT/usr/local/bin/kurzdraht" "$@"; }
runuser() { while [ "$1" != "--" ]; do shift; done; shift; "$@"; }
chown() { :; }
gpg() { :; }
timedatectl() { :; }
journalctl() { cat "$NODE_LOG"; }
_started() { [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }
_start() {
  setsid "$ROOT/usr/local/bin/kurzdraht" serve --log-format json --config "$ROOT/etc/kurzdraht/node.toml" >>"$NODE_LOG" 2>&1 </dev/null &
  echo $! >"$PIDFILE"
  for _ in $(seq 600); do
    if (exec 3<>"/dev/tcp/${API%:*}/${API#*:}") 2>/dev/null; then return 0; fi
    _started || { echo "kurzdraht ended at its start" >&2; return 1; }
    sleep 0.05
  done
  echo "kurzdraht did not listen within 30 s" >&2; return 1
}
_stop() {
  _started || return 0
  local pid; pid=$(cat "$PIDFILE")
  kill -TERM "$pid"
  while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
  rm -f "$PIDFILE"
}
systemctl() {
  case "$1" in
    start) _start ;;
    stop) _stop ;;
    restart) _stop; _start ;;
    is-active) _started && echo active ;;
    daemon-reload|enable) : ;;
    *) echo "systemctl stand-in: $1 not played" >&2; return 1 ;;
  esac
}
"#;

/// The Jobcenter's host (its files where production has them, under `root`) and its two
/// peers, running from the federation `pki init` made.
struct Hosts {
    _dir: tempfile::TempDir,
    fed: PathBuf,
    root: PathBuf,
    api: SocketAddr,
    /// The peers' `serve` processes (killed when dropped).
    peers: Vec<(String, Option<ServeProcess>)>,
}

/// Kills the peers, then the Jobcenter's node, which the handbook's `systemctl start`
/// stand-in started (not a child of the test: the block under test starts it, by its pid
/// file), before the temporary directory goes.
impl Drop for Hosts {
    fn drop(&mut self) {
        self.peers.clear();
        if let Ok(pid) = std::fs::read_to_string(self.root.join("run/kurzdraht.pid")) {
            let _ = Command::new("kill").args(["-KILL", pid.trim()]).status();
        }
    }
}

fn setting(toml: &str, key: &str) -> String {
    toml.lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{key} = ")))
        .unwrap_or_else(|| panic!("no {key} in node.toml"))
        .trim_matches('"')
        .to_string()
}

impl Hosts {
    async fn new() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let fed = dir.path().join("fed");
        let out = Command::new(binary())
            .args(["pki", "init", "--dir"])
            .arg(&fed)
            .output()
            .expect("pki init");
        assert!(out.status.success(), "pki init: {out:?}");
        let root = dir.path().join("host");
        let etc = root.join("etc/kurzdraht");
        for d in ["etc/kurzdraht", "var/lib", "usr/local/bin", "root", "run"] {
            std::fs::create_dir_all(root.join(d)).expect("mkdir");
        }
        let own = fed.join(JC);
        for f in ["tls.pem", "tls.key", "signing.key", "data.key", "node.toml"] {
            std::fs::copy(own.join(f), etc.join(f)).expect("copy a file of the Jobcenter");
        }
        // The federation's public files (the CA's and the operator's keys stay with them).
        for entry in std::fs::read_dir(&fed).expect("read the federation") {
            let path = entry.expect("entry").path();
            let name = path
                .file_name()
                .expect("a name")
                .to_string_lossy()
                .to_string();
            if path.is_file() && !name.ends_with(".key") {
                std::fs::copy(&path, etc.join(&name)).expect("copy a shared file");
            }
        }
        let toml = std::fs::read_to_string(etc.join("node.toml")).expect("read node.toml");
        let data = root.join("var/lib/kurzdraht");
        let toml = toml
            .replace(
                "data_dir = \"data\"",
                &format!("data_dir = {:?}", data.display().to_string()),
            )
            .replace("\"../", "\"");
        let api: SocketAddr = setting(&toml, "api").parse().expect("api address");
        // The operator's admin token and client file (deploy/README.md, section 7, "Once").
        let token = "0f".repeat(32);
        let hash = hex_sha256(token.as_bytes());
        let toml = toml.replacen(
            "\" }]",
            &format!("\" }}, {{ client = \"operator\", sha256 = \"{hash}\", admin = true }}]"),
            1,
        );
        std::fs::write(etc.join("node.toml"), toml).expect("write node.toml");
        write_owner_only(&etc.join("operator-token"), &token);
        std::fs::write(
            etc.join("operator.toml"),
            format!(
                "agency = \"{JC}\"\nendpoint = \"https://{api}\"\nca_cert = {:?}\ntoken_file = {:?}\n",
                etc.join("ca.pem").display().to_string(),
                etc.join("operator-token").display().to_string()
            ),
        )
        .expect("write operator.toml");
        std::fs::create_dir_all(root.join("var/backups/kurzdraht")).expect("backup directory");
        std::fs::copy(binary(), root.join("usr/local/bin/kurzdraht")).expect("install");
        let mut hosts = Self {
            _dir: dir,
            fed,
            root,
            api,
            peers: vec![(JA.into(), None), (JN.into(), None)],
        };
        hosts.start_peer(JA).await;
        hosts.start_peer(JN).await;
        hosts
    }

    async fn start_peer(&mut self, agency: &str) {
        let config = self.fed.join(agency).join("node.toml");
        let api: SocketAddr = setting(&std::fs::read_to_string(&config).expect("read"), "api")
            .parse()
            .expect("api address");
        let log = self.fed.join(agency).join("serve.log");
        let mut peer = ServeProcess::spawn(agency, &config, log).expect("start a peer");
        peer.wait_listening(api, Duration::from_secs(30))
            .await
            .expect("a peer listens");
        let slot = self
            .peers
            .iter_mut()
            .find(|(a, _)| a == agency)
            .expect("a peer");
        slot.1 = Some(peer);
    }

    async fn stop_peer(&mut self, agency: &str) {
        let slot = self
            .peers
            .iter_mut()
            .find(|(a, _)| a == agency)
            .expect("a peer");
        if let Some(mut peer) = slot.1.take() {
            let status = peer
                .stop_status(kurzdraht_testkit::serve::STOP_TIMEOUT)
                .await
                .expect("SIGTERM stops the peer");
            assert_eq!(status.code(), Some(0), "{agency} stopped cleanly");
        }
    }

    /// Runs a handbook block on the Jobcenter's host, in `cwd` (the host's `/root`).
    fn run(&self, name: &str) -> Output {
        let root = self.root.display().to_string();
        let body = block(name)
            .replace("/etc/kurzdraht", &format!("{root}/etc/kurzdraht"))
            .replace("/var/lib/kurzdraht", &format!("{root}/var/lib/kurzdraht"))
            .replace("/usr/local/bin/", &format!("{root}/usr/local/bin/"))
            .replace("/var/backups/", &format!("{root}/var/backups/"))
            .replace("/root/", &format!("{root}/root/"));
        let out = self.shell(&body);
        assert!(
            out.status.success(),
            "handbook block {name} failed: {}\nstdout:\n{}\nstderr:\n{}\nnode log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(self.root.join("run/kurzdraht.log")).unwrap_or_default()
        );
        out
    }

    /// Runs `script` with the stand-ins on the Jobcenter's host, in its `/root`.
    fn shell(&self, script: &str) -> Output {
        Command::new("bash")
            .arg("-c")
            .arg(format!("{STAND_INS}\n{script}"))
            .current_dir(self.root.join("root"))
            .env("ROOT", &self.root)
            .env("API", self.api.to_string())
            .env("PIDFILE", self.root.join("run/kurzdraht.pid"))
            .env("NODE_LOG", self.root.join("run/kurzdraht.log"))
            .env_remove("KURZDRAHT_LOG")
            .env_remove("RUST_LOG")
            .output()
            .expect("bash")
    }

    /// Starts the Jobcenter's node the way the handbook's `systemctl start` does.
    fn start_jobcenter(&self) {
        let out = self.shell("systemctl start kurzdraht");
        assert!(out.status.success(), "start the Jobcenter: {out:?}");
    }

    fn jobcenter_pid(&self) -> String {
        std::fs::read_to_string(self.root.join("run/kurzdraht.pid"))
            .expect("the Jobcenter runs")
            .trim()
            .to_string()
    }

    async fn jobcenter_client(&self) -> AgencyClient {
        let config =
            ClientConfig::load(&self.fed.join(JC).join("client.toml")).expect("client.toml");
        client::connect(&config)
            .await
            .expect("connect to the Jobcenter's API")
    }
}

fn hex_sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn write_owner_only(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).expect("write a secret");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod 600");
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_backup_holds_the_secrets_and_only_them_owner_only() {
    let _serial = SERIAL.lock().await;
    let hosts = Hosts::new().await;
    hosts.run("secrets-backup");
    let archives: Vec<PathBuf> = std::fs::read_dir(hosts.root.join("root"))
        .expect("read /root")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.to_string_lossy().ends_with(".tar.gz"))
        .collect();
    assert_eq!(archives.len(), 1, "{archives:?}");
    use std::os::unix::fs::PermissionsExt;
    let mode = archives[0].metadata().expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the archive of secrets is the owner's only");
    let listed = Command::new("tar")
        .arg("-tzf")
        .arg(&archives[0])
        .output()
        .expect("tar");
    let mut names: Vec<String> = stdout(&listed)
        .lines()
        .map(|l| l.trim_start_matches("./").to_string())
        .filter(|l| !l.is_empty())
        .collect();
    names.sort();
    assert_eq!(names, ["data.key", "signing.key", "tls.key"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_as_written_checks_the_new_binary_and_restarts_the_node() {
    let _serial = SERIAL.lock().await;
    let hosts = Hosts::new().await;
    hosts.start_jobcenter();
    let before = hosts.jobcenter_pid();
    std::fs::copy(binary(), hosts.root.join("root/kurzdraht-new")).expect("the new release");
    let out = hosts.run("upgrade");
    assert!(
        stdout(&out).contains("valid"),
        "config check of the new binary: {}",
        stdout(&out)
    );
    assert_eq!(stdout(&out).lines().last(), Some("active"));
    assert_ne!(hosts.jobcenter_pid(), before, "a new process serves");
    assert!(!hosts.root.join("usr/local/bin/kurzdraht.new").exists());
    // The backup taken first: one archive, the owner's only.
    let backups: Vec<PathBuf> = std::fs::read_dir(hosts.root.join("var/backups/kurzdraht"))
        .expect("read the backups")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(backups.len(), 1, "{backups:?}");
    assert!(
        backups[0].to_string_lossy().ends_with(".kzb"),
        "{backups:?}"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = backups[0].metadata().expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let mut jc = hosts.jobcenter_client().await;
    let s = subject("Lea", "Upgrade", &birthday_years_ago(19));
    consent_id(
        &mut jc,
        consent_request(&s, &[JA], &[pb::Purpose::U25MoveOut]),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_down_as_written_lists_extends_and_delivers_once_it_is_back() {
    let _serial = SERIAL.lock().await;
    let mut hosts = Hosts::new().await;
    hosts.start_jobcenter();
    hosts.stop_peer(JA).await;
    let mut jc = hosts.jobcenter_client().await;
    let s = subject("Lea", "Outage", &birthday_years_ago(19));
    let consent = consent_id(
        &mut jc,
        consent_request(&s, &[JA], &[pb::Purpose::U25MoveOut]),
    )
    .await;
    let message = submit_ok(&mut jc, JA, &consent, certification_request(&s, "Auszug")).await;
    drop(jc);

    let out = hosts.run("peer-down");
    let printed = stdout(&out);
    // The consent notice and the request wait for the Kreis' Jugendamt.
    assert!(printed.contains(&format!("{JA}: 2 queued")), "{printed}");
    assert!(
        printed.contains(&format!("{JA}: 0 queued messages now held until")),
        "{printed}"
    );
    assert!(printed.contains("2 already held as long"), "{printed}");

    hosts.start_peer(JA).await;
    // Retrying now, as the handbook says: a restart tries the peer at once.
    hosts.run("retry-now");
    let jc = hosts.jobcenter_client().await;
    wait_for_state(&jc, &message, pb::DeliveryState::Delivered).await;
}
