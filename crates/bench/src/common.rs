//! What the benchmarks share: the machine, formatting, sealed test data, /proc readings.

use anyhow::{bail, Context};
use kurzdraht_envelope::{ids, SigningKey};
use kurzdraht_ledger::Outgoing;
use kurzdraht_node::sealing::Sealing;
use kurzdraht_node::{clock, pki};
use kurzdraht_proto::v1::{self as pb, message_body::Body, MessageKind};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub(crate) const JC: &str = "jobcenter-segeberg";
pub(crate) const JA: &str = "jugendamt-kreis-segeberg";
/// Payload size of the envelope the commit benchmark stores.
pub(crate) const COMMIT_PAYLOAD_BYTES: usize = 1024;
/// How often the restart benchmark asks the Jobcenter node for a status.
pub(crate) const POLL: Duration = Duration::from_millis(5);

// ---------------------------------------------------------------- the machine

pub(crate) fn command_output(program: &str, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !text.is_empty()).then_some(text)
}

pub(crate) fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

pub(crate) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|t| t.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "n/a".into())
}

/// The file system holding `dir`: (mount point, type, device), from /proc/mounts.
pub(crate) fn file_system(dir: &Path) -> String {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let Ok(mounts) = std::fs::read_to_string("/proc/mounts") else {
        return "unknown file system".into();
    };
    let best = mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 3).then(|| (f[1].to_string(), f[2].to_string(), f[0].to_string()))
        })
        .filter(|(mount, _, _)| dir.starts_with(mount))
        .max_by_key(|(mount, _, _)| mount.len());
    match best {
        Some((mount, fstype, dev)) if fstype == "tmpfs" || fstype == "ramfs" => format!(
            "{fstype} ({dev} on {mount}) — WARNING: in memory, fsync costs nothing here; use --dir"
        ),
        Some((mount, fstype, dev)) => format!("{fstype} ({dev} on {mount})"),
        None => "unknown file system".into(),
    }
}

pub(crate) fn print_machine(base: &Path) {
    let nproc = command_output("nproc", &[]).unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.to_string())
            .unwrap_or_else(|_| "?".into())
    });
    let arch = command_output("uname", &["-m"]).unwrap_or_else(|| std::env::consts::ARCH.into());
    let kernel = command_output("uname", &["-sr"]).unwrap_or_else(|| std::env::consts::OS.into());
    println!(
        "machine:    nproc {nproc}, {arch}, {}, {kernel}",
        cpu_model()
    );
    println!("stores in:  {} — {}", base.display(), file_system(base));
    println!(
        "build:      {}",
        if cfg!(debug_assertions) {
            "DEBUG (numbers are not representative; use --release)"
        } else {
            "release"
        }
    );
    println!("load avg:   {} (1/5/15 min, at start)", load_average());
}

pub(crate) fn base_dir(dir: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let base = dir.unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&base).with_context(|| format!("creating {}", base.display()))?;
    Ok(base)
}

/// A Segeberg federation (`pki init` on free loopback ports) in a fresh temporary directory
/// under `dir` (default: the system temp directory), removed when dropped.
pub(crate) struct TempFederation {
    tmp: tempfile::TempDir,
    files: Vec<pki::AgencyFiles>,
}

impl TempFederation {
    pub(crate) fn create(dir: Option<PathBuf>, bench: &str) -> anyhow::Result<Self> {
        Self::create_with(dir, bench, |_| Ok(()))
    }

    /// [`TempFederation::create`] with the agencies' specs changed by `edit` before
    /// `pki init` (e.g. a console listener).
    pub(crate) fn create_with(
        dir: Option<PathBuf>,
        bench: &str,
        edit: impl FnOnce(&mut [pki::AgencySpec]) -> anyhow::Result<()>,
    ) -> anyhow::Result<Self> {
        let tmp = tempfile::Builder::new()
            .prefix(&format!("kurzdraht-bench-{bench}-"))
            .tempdir_in(base_dir(dir)?)?;
        let mut specs = kurzdraht_testkit::segeberg_on_free_ports(false)?;
        edit(&mut specs)?;
        let files = pki::init(&tmp.path().join("federation"), &specs)?;
        Ok(Self { tmp, files })
    }

    /// Where logs and other files of the run go.
    pub(crate) fn path(&self) -> &Path {
        self.tmp.path()
    }

    pub(crate) fn files_of(&self, id: &str) -> anyhow::Result<&pki::AgencyFiles> {
        self.files
            .iter()
            .find(|f| f.id == id)
            .with_context(|| format!("pki init wrote no {id}"))
    }

    /// Adds `line` at the top of `section` (e.g. "[limits]") of `id`'s node.toml.
    pub(crate) fn configure(&self, id: &str, section: &str, line: &str) -> anyhow::Result<()> {
        let path = &self.files_of(id)?.node_config;
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let header = format!("{section}\n");
        if !text.contains(&header) {
            bail!("{} has no {section} section", path.display());
        }
        let text = text.replacen(&header, &format!("{header}{line}\n"), 1);
        pki::replace_file(path, &text)?;
        Ok(())
    }
}

// ---------------------------------------------------------------- formatting

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

pub(crate) fn fmt_duration(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{:.1} ms", ms(d))
    } else {
        format!("{:.2} s", d.as_secs_f64())
    }
}

pub(crate) fn fmt_bytes(b: u64) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    if b as f64 >= MIB {
        format!("{:.1} MiB", b as f64 / MIB)
    } else {
        format!("{:.1} KiB", b as f64 / 1024.0)
    }
}

pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

// ---------------------------------------------------------------- sealed test data

/// A subject who is 20 today (so the U25 rule holds whenever the benchmark runs).
pub(crate) fn subject() -> pb::Subject {
    subject_of_person(0)
}

/// Person `i` of a benchmark: Lena Hansen, Lena Hansen-B, … (letters only, as names are).
pub(crate) fn subject_of_person(i: usize) -> pb::Subject {
    let mut family = "Hansen".to_string();
    if i > 0 {
        family.push('-');
        let mut n = i;
        let mut suffix = Vec::new();
        while n > 0 {
            suffix.push(char::from(b'a' + (n % 26) as u8));
            n /= 26;
        }
        let suffix: String = suffix.into_iter().rev().collect();
        let mut chars = suffix.chars();
        if let Some(first) = chars.next() {
            family.push(first.to_ascii_uppercase());
            family.extend(chars);
        }
    }
    let year = clock::date_of_ms(clock::now_ms())
        .map(|d| d.year())
        .unwrap_or(2026);
    pb::Subject {
        given_name: "Lena".into(),
        family_name: family,
        date_of_birth: format!("{:04}-01-15", year - 20),
        address: Some(pb::Address {
            street: "Kurhausstraße 7".into(),
            postal_code: "23795".into(),
            city: "Bad Segeberg".into(),
        }),
        case_references: vec![pb::CaseReference {
            agency: JC.into(),
            reference: "JC-SE-U25-0815".into(),
        }],
    }
}

pub(crate) fn certification_request(reason: String) -> pb::MessageBody {
    certification_request_about(subject(), reason)
}

pub(crate) fn certification_request_about(subject: pb::Subject, reason: String) -> pb::MessageBody {
    let today = clock::date_of_ms(clock::now_ms())
        .map(|d| d.to_string())
        .unwrap_or_default();
    pb::MessageBody {
        body: Some(Body::CertificationRequest(pb::CertificationRequest {
            subject: Some(subject),
            reason,
            respond_by: today,
            caseworker: "Herr Jensen".into(),
        })),
    }
}

/// The evidence reference of the benchmarks' consents.
pub(crate) const BENCH_EVIDENCE: &str = "JC-SE/Einwilligung/2026/0815 (unterschriebenes Formular)";

/// The categories of data the benchmarks' consents cover: those of a CertificationRequest.
pub(crate) fn bench_categories() -> Vec<i32> {
    [
        pb::DataCategory::Identity,
        pb::DataCategory::Address,
        pb::DataCategory::CaseReferences,
        pb::DataCategory::HousingSituation,
    ]
    .map(|c| c as i32)
    .to_vec()
}

pub(crate) const REASON: &str = "Antrag auf Zusicherung nach § 22 Abs. 5 SGB II; Stellungnahme zur Notwendigkeit des Auszugs erbeten.";

/// Seals `body` from `sender` and describes it for the outbox: the node's own sealing
/// ([`kurzdraht_node::sealing::seal_outgoing`]), not in reply to anything.
#[allow(clippy::too_many_arguments)]
pub(crate) fn seal_outgoing(
    key: &SigningKey,
    sender: &str,
    kind: MessageKind,
    recipient: &str,
    consent_id: &str,
    body: &pb::MessageBody,
    now_ms: i64,
    deadline: Duration,
) -> Outgoing {
    let sealing = Sealing {
        sender,
        kind,
        recipient,
        consent_id,
        in_reply_to: "",
        now_ms,
        deadline,
    };
    kurzdraht_node::sealing::seal_outgoing(key, sealing, body)
}

pub(crate) fn envelope_bytes(out: &Outgoing) -> usize {
    let e = &out.envelope;
    e.header.len() + e.payload.len() + e.signature.len() + e.signer.len()
}

/// One real CertificationRequest envelope whose payload is about [`COMMIT_PAYLOAD_BYTES`].
pub(crate) fn commit_template() -> anyhow::Result<Outgoing> {
    let key = SigningKey::generate()?;
    let consent_id = ids::new_id();
    let reason = padded_reason(&key, &consent_id, COMMIT_PAYLOAD_BYTES);
    Ok(seal_outgoing(
        &key,
        JC,
        MessageKind::CertificationRequest,
        JA,
        &consent_id,
        &certification_request(reason),
        clock::now_ms(),
        Duration::from_secs(7 * 24 * 3600),
    ))
}

/// A reason text that makes a sealed CertificationRequest's payload about `target` bytes.
pub(crate) fn padded_reason(key: &SigningKey, consent_id: &str, target: usize) -> String {
    let bare = seal_outgoing(
        key,
        JC,
        MessageKind::CertificationRequest,
        JA,
        consent_id,
        &certification_request(String::new()),
        clock::now_ms(),
        Duration::from_secs(7 * 24 * 3600),
    )
    .envelope
    .payload
    .len();
    // field tag + two-byte length prefix + the text
    let pad = target.saturating_sub(bare + 3);
    let mut reason = String::new();
    while reason.len() < pad {
        reason.push_str(REASON);
        reason.push(' ');
    }
    let cut = (0..=pad.min(reason.len()))
        .rev()
        .find(|i| reason.is_char_boundary(*i))
        .unwrap_or(0);
    reason.truncate(cut);
    reason
}

// ---------------------------------------------------------------- /proc readings

/// Clock ticks per second of /proc/<pid>/stat (`getconf CLK_TCK`, else the usual 100).
pub(crate) fn clock_ticks() -> f64 {
    command_output("getconf", &["CLK_TCK"])
        .and_then(|t| t.parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

/// utime + stime of a process (all its threads) in clock ticks; `pid` "self" for this one.
pub(crate) fn cpu_ticks(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name in parentheses: field 3 (state) onwards; utime is 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// Peak resident set size (VmHWM) of a process, in bytes.
pub(crate) fn peak_rss(pid: &str) -> Option<u64> {
    proc_status_bytes(pid, "VmHWM")
}

/// A kB figure of /proc/<pid>/status (e.g. "VmRSS", "VmHWM"), in bytes.
pub(crate) fn proc_status_bytes(pid: &str, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status
        .lines()
        .find(|l| l.strip_prefix(field).is_some_and(|r| r.starts_with(':')))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Resets a process's VmHWM to its current RSS (`echo 5 > /proc/<pid>/clear_refs`), so that
/// the next reading is the peak of one run; false where the kernel does not allow it.
pub(crate) fn reset_peak_rss(pid: &str) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}
