//! What `bench e2e` prints: its parameters before the runs, and the report after them (the
//! runs' table, baseline versus kurzdraht, the delivery retries, the targets).

use super::{E2eOutcome, E2ePlan, E2eRun, WARM_UP};
use crate::{common::*, e2e::fmt_opt_bytes};
use kurzdraht_node::config::NodeConfig;

/// Prints what is measured, how, and on which machine.
pub(super) fn print_parameters(
    fed: &TempFederation,
    plan: &E2ePlan,
    peer_rate: Option<u32>,
    ja: &NodeConfig,
) {
    let E2ePlan {
        seconds,
        concurrency,
        persons,
        ..
    } = plan;
    println!("kurzdraht-bench e2e — baseline (bare tonic call over mutual TLS) vs. the full kurzdraht path");
    print_machine(fed.path());
    println!(
        "parameters: {seconds} s per run, concurrency {}, {WARM_UP} warm-up calls/messages before each run, {persons} persons (one consent each; caller k writes about person k mod {persons})",
        concurrency
            .iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("nodes:      Jobcenter and Jugendamt Kreis Segeberg as two `kurzdraht serve` processes of this binary,");
    println!(
        "            real PKI (pki init), default node.toml{} (log level info to a file; Jugendamt admits {} deliveries/s, {} in flight per peer)",
        if peer_rate.is_some() { " except --peer-rate" } else { "" },
        ja.limits.peer_requests_per_second,
        ja.limits.peer_concurrent_requests
    );
    println!("baseline:   a PeerExchange server in this process that answers Deliver at once with an empty receipt,");
    println!("            served with the Jugendamt's peer TLS config (mutual TLS), called with a client built like the");
    println!("            delivery worker's (Jobcenter's certificate), one shared HTTP/2 channel; latency = call round trip");
    println!("kurzdraht:  Submit (Jobcenter AgencyApi, TLS + token) → consent check → durable outbox → signed envelope →");
    println!("            DeliverBatch (one FIFO worker per delivery lane of the peer — a person's consent chain and messages share a lane —,");
    println!("            up to 256 due messages per batch) → verify, consent check,");
    println!("            durable inbox → receipts under one signature per batch, each verified and stored by the Jobcenter;");
    println!("            one shared HTTP/2 channel for the callers, a second for the WatchStatus stream;");
    println!("            latency = when the WatchStatus stream showed DELIVERED (published after the Jobcenter's flush) − Submit start");
    println!("            each caller waits for DELIVERED before its next Submit (closed loop)");
}

/// Prints the report: every run, baseline versus kurzdraht, the retries, the targets, the inbox.
pub(super) fn print_report(plan: &E2ePlan, ja: &NodeConfig, outcome: &E2eOutcome) {
    let E2eOutcome {
        runs,
        resettable,
        received,
        retries,
    } = outcome;
    let received = *received;
    let persons = plan.persons;
    print_runs(runs, *resettable, plan.ticks);
    let (ratio_at_max, p99_at_1) = print_comparison(&plan.concurrency, runs);
    println!();
    let retries: Vec<String> = retries
        .iter()
        .map(|(c, n, rate)| format!("c={c}: {n} ({rate} RESOURCE_EXHAUSTED)"))
        .collect();
    println!(
        "Jobcenter delivery retries during the kurzdraht runs (from its log): {}",
        retries.join(", ")
    );
    println!(
        "  (RESOURCE_EXHAUSTED: refused by the Jugendamt's per-peer admission, limits.peer_requests_per_second = {}, burst one second's worth)",
        ja.limits.peer_requests_per_second
    );
    println!();
    print_targets(ratio_at_max, p99_at_1);
    let submitted: usize = runs
        .iter()
        .filter(|r| r.mode == "kurzdraht")
        .map(|r| r.latencies.len() + WARM_UP)
        .sum();
    println!(
        "Jugendamt inbox holds {received} messages: {submitted} requests (measured + warm-up) + {persons} consent notices = {} — {}",
        submitted + persons,
        if received == submitted + persons { "as expected" } else { "MISMATCH" }
    );
    println!("load avg:   {} (1/5/15 min, at end)", load_average());
}

/// The table of every run: throughput, latency percentiles, and each process's CPU and peak RSS.
fn print_runs(runs: &[E2eRun], resettable: bool, ticks: f64) {
    println!();
    println!(
        "{:<10} {:>5} {:>8} {:>8} {:>9} {:>8} {:>8} {:>9}   {:<22} {:>14} {:>10}",
        "mode",
        "conc",
        "messages",
        "seconds",
        "msg/s",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "process",
        "CPU s/1k msgs",
        "peak RSS"
    );
    for r in runs {
        let n = r.latencies.len();
        for (i, u) in r.usage.iter().enumerate() {
            let cpu = u.cpu_secs.map_or_else(
                || "n/a".into(),
                |s| format!("{:.3}", s * 1000.0 / n.max(1) as f64),
            );
            let figures = if i == 0 {
                format!(
                    "{:<10} {:>5} {:>8} {:>8.2} {:>9.1} {:>8.2} {:>8.2} {:>9.2}",
                    r.mode,
                    r.concurrency,
                    n,
                    r.elapsed.as_secs_f64(),
                    r.rate(),
                    ms(percentile(&r.latencies, 50.0)),
                    ms(percentile(&r.latencies, 99.0)),
                    ms(percentile(&r.latencies, 99.9)),
                )
            } else {
                format!("{:72}", "")
            };
            println!(
                "{figures}   {:<22} {:>14} {:>10}",
                u.label,
                cpu,
                fmt_opt_bytes(u.peak_rss)
            );
        }
    }
    println!(
        "(peak RSS: VmHWM {}; CPU: utime+stime from /proc/<pid>/stat at {ticks} ticks/s, all threads)",
        if resettable {
            "reset before each run, so each figure is that run's peak"
        } else {
            "could not be reset here, so each figure is the process's peak so far"
        }
    );
}

/// Baseline versus kurzdraht msg/s per concurrency; returns the ratio at concurrency 128 and
/// kurzdraht's p99 (ms) at concurrency 1, where measured.
fn print_comparison(concurrency: &[usize], runs: &[E2eRun]) -> (Option<f64>, Option<f64>) {
    println!();
    println!(
        "{:>5} {:>12} {:>13} {:>16}",
        "conc", "baseline/s", "kurzdraht/s", "kurzdraht/base"
    );
    let mut ratio_at_max = None;
    let mut p99_at_1 = None;
    for &c in concurrency {
        let find = |m: &str| runs.iter().find(|r| r.mode == m && r.concurrency == c);
        if let (Some(b), Some(k)) = (find("baseline"), find("kurzdraht")) {
            let ratio = k.rate() / b.rate().max(1e-9);
            println!(
                "{c:>5} {:>12.1} {:>13.1} {:>15.2}%",
                b.rate(),
                k.rate(),
                ratio * 100.0
            );
            if c == 128 {
                ratio_at_max = Some(ratio);
            }
            if c == 1 {
                p99_at_1 = Some(ms(percentile(&k.latencies, 99.0)));
            }
        }
    }
    (ratio_at_max, p99_at_1)
}

/// The targets: kurzdraht ≥ 50% of baseline at concurrency 128, p99 < 5 ms at 1.
fn print_targets(ratio_at_max: Option<f64>, p99_at_1: Option<f64>) {
    println!("targets of the issue:");
    match ratio_at_max {
        Some(r) => println!(
            "  kurzdraht ≥ 50% of baseline msg/s at concurrency 128: {:.2}% — {}",
            r * 100.0,
            if r >= 0.5 { "met" } else { "NOT met" }
        ),
        None => println!(
            "  kurzdraht ≥ 50% of baseline msg/s at concurrency 128: not measured (no run at 128)"
        ),
    }
    match p99_at_1 {
        Some(p) => println!(
            "  kurzdraht p99 < 5 ms at concurrency 1: {p:.2} ms — {}",
            if p < 5.0 { "met" } else { "NOT met" }
        ),
        None => println!("  kurzdraht p99 < 5 ms at concurrency 1: not measured (no run at 1)"),
    }
}
