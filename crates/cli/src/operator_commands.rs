//! `kurzdraht backup|reconcile`: the operators' client commands (an admin token).

use crate::commands::{client_from, ClientArgs};
use crate::exit;
use crate::output::{print_json, rfc3339_of_ms};
use anyhow::Context;
use kurzdraht_client::AgencyClient;
use kurzdraht_proto::v1 as pb;
use std::path::PathBuf;
use std::process::ExitCode;

pub(crate) async fn backup(common: ClientArgs, out: PathBuf) -> anyhow::Result<ExitCode> {
    let (mut client, _) = client_from(&common).await?;
    let written = write_backup(&mut client, &out).await?;
    if common.json {
        print_json(&serde_json::json!({
            "file": out.display().to_string(),
            "bytes": written.bytes.to_string(),
            "agency": written.manifest.agency,
            "takenAtMs": written.manifest.taken_at_ms.to_string(),
        }))?;
    } else {
        println!(
            "backup of {} taken at {} written to {} ({} bytes, mode 0600)",
            written.manifest.agency,
            rfc3339_of_ms(written.manifest.taken_at_ms).unwrap_or_default(),
            out.display(),
            written.bytes
        );
    }
    Ok(exit::OK)
}

pub(crate) async fn reconcile(
    common: ClientArgs,
    peer: Option<String>,
    since: Option<String>,
) -> anyhow::Result<ExitCode> {
    let since_ms = match since {
        None => 0,
        Some(text) => parse_rfc3339_ms("--since", &text)?,
    };
    let (mut client, _) = client_from(&common).await?;
    let r = client
        .reconcile(pb::ReconcileRequest {
            peer: peer.unwrap_or_default(),
            since_ms,
        })
        .await?
        .into_inner();
    if common.json {
        print_json(&r)?;
    } else {
        for p in &r.peers {
            println!(
                "{}: listed {}, held already {}, received again {}, refused {}, unavailable {}{}{}",
                p.peer,
                p.listed,
                p.held,
                p.received,
                p.refused,
                p.unavailable,
                match p.sent_listed {
                    0 => String::new(),
                    n => format!(
                        "; sent by this node: listed {n}, withdrawals recorded again {}, consents recorded again {}, messages recorded again {}, unavailable {}",
                        p.withdrawals_restored,
                        p.consents_restored,
                        p.messages_restored,
                        p.sent_unavailable
                    ),
                },
                match p.error.as_str() {
                    "" => String::new(),
                    e => format!(" — stopped: {e}; run it again"),
                }
            );
        }
    }
    if r.peers.iter().any(|p| !p.error.is_empty()) {
        return Ok(ExitCode::from(5));
    }
    Ok(exit::OK)
}

/// A backup written by [`write_backup`].
struct WrittenBackup {
    bytes: u64,
    manifest: kurzdraht_ledger::BackupManifest,
}

/// Streams the node's backup into `out`: into `out.partial` (created mode 0600; neither
/// may exist), fsynced and checked whole (form and SHA-256), then renamed.
async fn write_backup(
    client: &mut AgencyClient,
    out: &std::path::Path,
) -> anyhow::Result<WrittenBackup> {
    use std::io::Write;
    if out.exists() {
        anyhow::bail!("{} exists; name a new file", out.display());
    }
    let mut partial_name = out.as_os_str().to_owned();
    partial_name.push(".partial");
    let partial = PathBuf::from(partial_name);
    let mut file = kurzdraht_node::service::backup::create_private(&partial)
        .with_context(|| format!("cannot create {}", partial.display()))?;
    let written = async {
        let mut stream = client.backup(pb::BackupRequest {}).await?.into_inner();
        let mut bytes = 0u64;
        while let Some(chunk) = stream.message().await? {
            file.write_all(&chunk.data)
                .with_context(|| format!("cannot write {}", partial.display()))?;
            bytes += chunk.data.len() as u64;
        }
        file.sync_all()
            .with_context(|| format!("cannot write {}", partial.display()))?;
        let manifest = kurzdraht_ledger::backup::check(&partial)
            .context("the archive received is not complete")?;
        std::fs::rename(&partial, out)
            .with_context(|| format!("cannot rename {} to {}", partial.display(), out.display()))?;
        anyhow::Ok(WrittenBackup { bytes, manifest })
    }
    .await;
    if written.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    written
}

/// Milliseconds since 1970 of an RFC 3339 time given as `flag`.
fn parse_rfc3339_ms(flag: &str, text: &str) -> anyhow::Result<i64> {
    let t = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|e| {
            kurzdraht_node::NodeError::invalid(
                flag,
                format!("is no RFC 3339 time ({e}), e.g. 2026-05-01T00:00:00Z"),
            )
        })?;
    Ok((t.unix_timestamp_nanos() / 1_000_000) as i64)
}
