//! `footprint`: the tables and the verdict (see `footprint.rs`).

use crate::common::{self as bench};
use crate::footprint::*;
use crate::footprint_fill::*;
use std::time::Duration;

// ---------------------------------------------------------------- the tables

pub(crate) fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub(crate) fn opt_bytes(b: Option<u64>) -> String {
    b.map_or_else(|| "n/a".into(), bench::fmt_bytes)
}

pub(crate) fn opt_secs(s: Option<f64>) -> String {
    s.map_or_else(|| "n/a".into(), |s| format!("{s:.2} s"))
}

pub(crate) fn row(label: &str, value: String) {
    println!("  {label:<50} {value}");
}

pub(crate) fn report(f: &Filled, m: &Measured) {
    report_store(f);
    report_memory(m);
    report_load(m);
    report_summary(f, m);
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

/// The filled store of the Jugendamt: what it holds, how long the fill took, its size.
fn report_store(f: &Filled) {
    let inbox = f.records();
    let audit = 2 * f.consents + f.messages;
    println!();
    println!("store of the Jugendamt (filled directly, sealed at rest with the node's data key)");
    row(
        "consents (replicated, each with its signed notice)",
        thousands(f.consents),
    );
    row(
        "received CertificationRequests (with receipts)",
        thousands(f.messages),
    );
    row(
        "inbox records (the notices and the requests)",
        thousands(inbox),
    );
    row("audit entries the fill wrote", thousands(audit));
    row(
        "envelope: ConsentNotice / CertificationRequest",
        format!(
            "{} B / {} B",
            f.produced.notice_bytes, f.produced.request_bytes
        ),
    );
    row(
        "fill time (seal + store, one flush)",
        format!(
            "{:.1} s — consents {:.1} s ({:.0}/s), messages {:.1} s ({:.0}/s), flush {}",
            f.total.as_secs_f64(),
            f.consents_time.as_secs_f64(),
            rate(f.consents, f.consents_time),
            f.messages_time.as_secs_f64(),
            rate(f.messages, f.messages_time),
            bench::fmt_duration(f.flush)
        ),
    );
    row(
        "store size: sled size_on_disk / files",
        format!(
            "{} / {}",
            bench::fmt_bytes(f.size_on_disk),
            bench::fmt_bytes(f.files)
        ),
    );
}

/// Memory (and CPU) of the `kurzdraht serve` processes at each point, and the RSS samples.
fn report_memory(m: &Measured) {
    println!();
    println!(
        "{:<70} {:>11} {:>11} {:>10}",
        "memory of the `kurzdraht serve` processes", "VmRSS", "VmHWM", "CPU"
    );
    let line = |label: String, r: &Reading| {
        println!(
            "  {label:<68} {:>11} {:>11} {:>10}",
            opt_bytes(r.rss),
            opt_bytes(r.hwm),
            opt_secs(r.cpu_secs)
        );
    };
    line(
        format!(
            "Jugendamt, at its first answer ({:.2} s after start)",
            m.answering_after.as_secs_f64()
        ),
        &m.at_answer,
    );
    line(
        format!(
            "Jugendamt, quiet after {:.1} s idle (HWM: the start-up peak)",
            m.idle_for.as_secs_f64()
        ),
        &m.after_idle,
    );
    let ncalls: usize = m.calls.values().map(Vec::len).sum();
    line(
        format!(
            "Jugendamt, after {:.1} s of load, {} calls (HWM: {})",
            m.load_elapsed.as_secs_f64(),
            thousands(ncalls),
            if m.reset {
                "peak under load"
            } else {
                "peak since start"
            }
        ),
        &m.after_load,
    );
    line(
        "Jobcenter (the peer, empty store), at the end".into(),
        &m.peer,
    );
    println!(
        "  (CPU: utime + stime since the process started; VmHWM reset before the load: {})",
        if m.reset { "yes" } else { "not allowed here" }
    );

    let in_phase = |from: Duration, to: Duration| {
        m.samples
            .iter()
            .filter(|(t, _)| *t >= from && *t <= to)
            .map(|(_, b)| *b)
            .max()
    };
    println!(
        "  RSS sampled every {} ms: highest before the load {}, during the load {}",
        SAMPLE_EVERY.as_millis(),
        opt_bytes(in_phase(Duration::ZERO, m.load_from)),
        opt_bytes(in_phase(m.load_from, m.load_to))
    );
    println!(
        "  RSS over time (s after start: MiB): {}",
        timeline(&m.samples)
    );
}

/// The load on the Jugendamt: calls, rates and latencies per operation.
fn report_load(m: &Measured) {
    println!();
    println!(
        "{:<44} {:>8} {:>9} {:>9} {:>9}",
        "load on the Jugendamt", "calls", "calls/s", "p50 ms", "p99 ms"
    );
    for (op, l) in &m.calls {
        println!(
            "  {:<42} {:>8} {:>9.1} {:>9.2} {:>9.2}",
            op.label(),
            thousands(l.len()),
            rate(l.len(), m.load_elapsed),
            bench::ms(bench::percentile(l, 50.0)),
            bench::ms(bench::percentile(l, 99.0))
        );
    }
    println!(
        "  submitted messages DELIVERED to the Jobcenter: {} of {}",
        m.submitted - m.undelivered,
        m.submitted
    );
}

/// The summary and the verdict against the 100 MB target.
fn report_summary(f: &Filled, m: &Measured) {
    let peak = [m.after_idle.hwm, m.after_load.hwm]
        .into_iter()
        .flatten()
        .max();
    let limit = format!("100 MB ({})", bench::fmt_bytes(TARGET_BYTES));
    println!();
    println!("summary");
    row(
        "records",
        format!(
            "{} consents + {} messages",
            thousands(f.consents),
            thousands(f.messages)
        ),
    );
    row("store size on disk", bench::fmt_bytes(f.size_on_disk));
    row("fill time", format!("{:.1} s", f.total.as_secs_f64()));
    row(
        "node RSS after open (first answer / after idle)",
        format!(
            "{} / {}",
            opt_bytes(m.at_answer.rss),
            opt_bytes(m.after_idle.rss)
        ),
    );
    row(
        "node peak RSS: start-up / under load",
        format!(
            "{} / {}",
            opt_bytes(m.after_idle.hwm),
            opt_bytes(m.after_load.hwm)
        ),
    );
    row("node RSS after the load", opt_bytes(m.after_load.rss));
    match peak {
        Some(peak) => println!(
            "verdict: node peak RSS {} {} {limit} — {}",
            bench::fmt_bytes(peak),
            if peak < TARGET_BYTES { "<" } else { "≥" },
            if peak < TARGET_BYTES {
                "met"
            } else {
                "NOT met"
            }
        ),
        None => println!("verdict: not measured (no /proc/<pid>/status here)"),
    }
}

/// About 30 evenly spaced samples as "t:MiB".
pub(crate) fn timeline(samples: &[(Duration, u64)]) -> String {
    let step = samples.len().div_ceil(30).max(1);
    let mut points: Vec<String> = samples
        .iter()
        .step_by(step)
        .map(|(t, b)| format!("{:.1}:{:.0}", t.as_secs_f64(), *b as f64 / 1048576.0))
        .collect();
    if let Some((t, b)) = samples.last() {
        if !(samples.len() - 1).is_multiple_of(step) {
            points.push(format!(
                "{:.1}:{:.0}",
                t.as_secs_f64(),
                *b as f64 / 1048576.0
            ));
        }
    }
    points.join(" ")
}
