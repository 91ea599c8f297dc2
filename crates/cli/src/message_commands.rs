//! `kurzdraht send|status|inbox|ack|subject …`: the IT system's messages, their status,
//! the inbox (listed, followed or exported) and a person's access report or erasure.

use crate::commands::{client_from, keyed_call, ClientArgs, SendCommand, SubjectCommand};
use crate::exit;
use crate::output::{print_json, print_keyed_json, render_report, to_json};
use anyhow::Context;
use kurzdraht_client::AgencyClient;
use kurzdraht_node::clock;
use kurzdraht_proto::v1 as pb;
use std::path::PathBuf;
use std::process::ExitCode;

pub(crate) async fn send(common: ClientArgs, message: SendCommand) -> anyhow::Result<ExitCode> {
    let (mut client, config) = client_from(&common).await?;
    let (routing, body) = message.into_body(&config.agency);
    let key = routing.once.key();
    let req = pb::SubmitRequest {
        recipient: routing.to,
        consent_id: routing.consent,
        in_reply_to: routing.in_reply_to,
        body: Some(pb::MessageBody { body: Some(body) }),
        idempotency_key: key.clone(),
    };
    let resp = keyed_call(&key, client.submit(req)).await?;
    if common.json {
        print_keyed_json(&resp, &key)?;
    } else {
        println!(
            "{} queued (durable in the outbox; idempotency key {key})",
            resp.message_id
        );
    }
    Ok(exit::OK)
}

pub(crate) async fn status(common: ClientArgs, message_id: String) -> anyhow::Result<ExitCode> {
    let (mut client, _) = client_from(&common).await?;
    let s = client
        .get_status(pb::GetStatusRequest { message_id })
        .await?
        .into_inner();
    if common.json {
        print_json(&s)?;
    } else {
        let state = pb::DeliveryState::try_from(s.state)
            .map(|s| s.as_str_name())
            .unwrap_or("?");
        println!(
            "{} to {}: {state} after {} attempt(s){}{}",
            s.message_id,
            s.recipient,
            s.attempts,
            if s.detail.is_empty() {
                String::new()
            } else {
                format!(" — {}", s.detail)
            },
            if s.receipt.is_some() {
                "; signed receipt held"
            } else {
                ""
            }
        );
    }
    Ok(exit::OK)
}

pub(crate) async fn inbox(
    common: ClientArgs,
    after: u64,
    follow: bool,
    unacknowledged: bool,
    export: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let (mut client, _) = client_from(&common).await?;
    if let Some(path) = export {
        return export_inbox(&mut client, after, unacknowledged, &path).await;
    }
    let mut stream = client
        .read_inbox(pb::ReadInboxRequest {
            after_seq: after,
            follow,
            unacknowledged_only: unacknowledged,
        })
        .await?
        .into_inner();
    let mut n = 0u64;
    while let Some(item) = stream.message().await? {
        n += 1;
        if common.json {
            println!("{}", serde_json::to_string(&to_json(&item)?)?);
        } else if let Some(n) = &item.notice {
            let state = pb::DeliveryState::try_from(n.state)
                .map(|s| s.as_str_name())
                .unwrap_or("?");
            println!(
                "#{} notice: {} to {} was not delivered: {state} — {}",
                item.seq, n.message_id, n.recipient, n.detail
            );
        } else {
            let kind = pb::MessageKind::try_from(item.kind)
                .map(|k| k.as_str_name())
                .unwrap_or("?");
            println!(
                "#{} {} {kind} from {} at {}{}",
                item.seq,
                item.message_id,
                item.sender,
                clock::format_ms(item.received_at_ms),
                if item.acknowledged {
                    " (acknowledged)"
                } else {
                    ""
                }
            );
        }
    }
    if !common.json {
        eprintln!("{n} message(s)");
    }
    Ok(exit::OK)
}

pub(crate) async fn ack(common: ClientArgs, message_id: String) -> anyhow::Result<ExitCode> {
    let (mut client, _) = client_from(&common).await?;
    let r = client
        .acknowledge(pb::AcknowledgeRequest {
            message_id: message_id.clone(),
        })
        .await?
        .into_inner();
    if common.json {
        print_json(&r)?;
    } else {
        println!("{message_id} acknowledged");
    }
    Ok(exit::OK)
}

pub(crate) async fn subject(
    common: ClientArgs,
    command: SubjectCommand,
) -> anyhow::Result<ExitCode> {
    let (mut client, _) = client_from(&common).await?;
    match command {
        SubjectCommand::Report {
            given_name,
            family_name,
            date_of_birth,
        } => {
            let report = client
                .subject_access_report(pb::SubjectAccessRequest {
                    given_name,
                    family_name,
                    date_of_birth,
                })
                .await?
                .into_inner();
            if common.json {
                print_json(&report)?;
            } else {
                print!("{}", render_report(&report));
            }
        }
        SubjectCommand::Erase {
            given_name,
            family_name,
            date_of_birth,
        } => {
            let r = client
                .erase_subject(pb::SubjectAccessRequest {
                    given_name,
                    family_name,
                    date_of_birth,
                })
                .await?
                .into_inner();
            if common.json {
                print_json(&r)?;
            } else {
                println!(
                    "erased from {} consent(s); {} message bod(ies) deleted; signed headers kept as proof",
                    r.consent_ids.len(),
                    r.bodies_erased
                );
            }
        }
    }
    Ok(exit::OK)
}

/// How often an export reports progress.
const PROGRESS_EVERY: u64 = 250;

/// Writes the inbox as JSON lines to `path` (to a temporary file first, renamed when
/// complete, so a broken export never looks finished), reporting progress on stderr.
async fn export_inbox(
    client: &mut AgencyClient,
    after: u64,
    unacknowledged: bool,
    path: &std::path::Path,
) -> anyhow::Result<ExitCode> {
    use std::io::Write;
    let partial = path.with_extension("partial");
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(&partial)
            .with_context(|| format!("cannot create {}", partial.display()))?,
    );
    let mut stream = client
        .read_inbox(pb::ReadInboxRequest {
            after_seq: after,
            follow: false,
            unacknowledged_only: unacknowledged,
        })
        .await?
        .into_inner();
    let started = std::time::Instant::now();
    let mut n = 0u64;
    let mut last_seq = after;
    while let Some(item) = stream.message().await? {
        serde_json::to_writer(&mut out, &to_json(&item)?)?;
        out.write_all(b"\n")?;
        n += 1;
        last_seq = item.seq;
        if n.is_multiple_of(PROGRESS_EVERY) {
            eprintln!(
                "exported {n} messages (up to #{last_seq}), {:.1} s",
                started.elapsed().as_secs_f64()
            );
        }
    }
    out.flush()?;
    out.into_inner()
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", partial.display()))?
        .sync_all()?;
    std::fs::rename(&partial, path)?;
    eprintln!(
        "exported {n} messages to {} (next export: --after {last_seq})",
        path.display()
    );
    Ok(exit::OK)
}
