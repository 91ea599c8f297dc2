//! `kurzdraht consent …`: recording, withdrawing, closing, showing and listing consents.

use crate::commands::{
    client_from, keyed_call, ClientArgs, ConsentCommand, FormArg, Giver, GrantArgs, KeyArgs,
    LegalBasisArg, PurposeArg,
};
use crate::exit;
use crate::output::{print_json, print_keyed_json};
use anyhow::Context;
use kurzdraht_client::{AgencyClient, ClientConfig};
use kurzdraht_node::clock;
use kurzdraht_proto::v1 as pb;
use std::process::ExitCode;

/// Runs one `consent` command against the node of `common`'s client.toml.
pub(crate) async fn run(common: ClientArgs, command: ConsentCommand) -> anyhow::Result<ExitCode> {
    let (mut client, config) = client_from(&common).await?;
    let client = &mut client;
    match command {
        ConsentCommand::Grant(args) => grant(client, &config, &common, args).await,
        ConsentCommand::Withdraw {
            consent_id,
            recorded_by,
            manner,
            once,
        } => withdraw(client, &common, consent_id, recorded_by, manner, once).await,
        ConsentCommand::Close { consent_id } => close(client, &common, consent_id).await,
        ConsentCommand::Evidence { message, consent } => {
            evidence(client, &common, message, consent).await
        }
        ConsentCommand::List { after, limit } => list(client, &common, after, limit).await,
    }
}

async fn grant(
    client: &mut AgencyClient,
    config: &ClientConfig,
    common: &ClientArgs,
    args: GrantArgs,
) -> anyhow::Result<ExitCode> {
    let GrantArgs {
        subject,
        given_by,
        guardian_name,
        recipients,
        purposes,
        valid_until,
        categories,
        legal_basis,
        form,
        evidence,
        evidence_file,
        supersedes,
        recorded_by,
        once,
    } = args;
    let key = once.key();
    let form_bytes = std::fs::read(&evidence_file)
        .with_context(|| format!("cannot read --evidence-file {}", evidence_file.display()))?;
    let evidence_sha256 = {
        use sha2::Digest;
        sha2::Sha256::digest(&form_bytes).to_vec()
    };
    // the last millisecond of that day in Germany
    let valid_until_ms = match valid_until {
        Some(d) => {
            let last_day = clock::parse_date("--valid-until", &d)?;
            let next_day = last_day
                .next_day()
                .context("--valid-until lies too far in the future")?;
            clock::german_start_of_day_ms(next_day) - 1
        }
        None => 0,
    };
    let req = pb::RecordConsentRequest {
        subject: Some(subject.to_subject(&config.agency)),
        given_by: match given_by {
            Giver::Person => pb::ConsentGiver::Person as i32,
            Giver::Guardian => pb::ConsentGiver::Guardian as i32,
        },
        guardian_name,
        recipients,
        purposes: purposes
            .iter()
            .map(|p| match p {
                PurposeArg::U25MoveOut => pb::Purpose::U25MoveOut as i32,
                PurposeArg::QualificationMeasure => pb::Purpose::QualificationMeasure as i32,
            })
            .collect(),
        valid_from_ms: 0,
        valid_until_ms,
        evidence_reference: evidence,
        recorded_by,
        categories: categories.iter().map(|c| c.to_pb() as i32).collect(),
        legal_basis: match legal_basis {
            LegalBasisArg::Consent => pb::LegalBasis::ConsentGdpr61ASgbX67b,
            LegalBasisArg::ExplicitConsent => pb::LegalBasis::ExplicitConsentGdpr92A,
        } as i32,
        form: match form {
            FormArg::Written => pb::ConsentForm::Written,
            FormArg::Electronic => pb::ConsentForm::Electronic,
        } as i32,
        evidence_sha256,
        supersedes: supersedes.unwrap_or_default(),
        idempotency_key: key.clone(),
    };
    let resp = keyed_call(&key, client.record_consent(req)).await?;
    if common.json {
        print_keyed_json(&resp, &key)?;
    } else if let Some(c) = &resp.consent {
        println!(
            "consent {} recorded, valid until {}",
            c.consent_id,
            clock::format_ms(c.valid_until_ms)
        );
        for id in &resp.notice_message_ids {
            println!("  notice queued: {id}");
        }
        println!("  idempotency key: {key}");
    }
    Ok(exit::OK)
}

async fn withdraw(
    client: &mut AgencyClient,
    common: &ClientArgs,
    consent_id: String,
    recorded_by: String,
    manner: String,
    once: KeyArgs,
) -> anyhow::Result<ExitCode> {
    let key = once.key();
    let req = pb::WithdrawConsentRequest {
        consent_id,
        recorded_by,
        manner,
        idempotency_key: key.clone(),
    };
    let resp = keyed_call(&key, client.withdraw_consent(req)).await?;
    if common.json {
        print_keyed_json(&resp, &key)?;
    } else {
        println!(
            "consent withdrawn; {} notice(s) queued (idempotency key {key})",
            resp.notice_message_ids.len()
        );
    }
    Ok(exit::OK)
}

async fn close(
    client: &mut AgencyClient,
    common: &ClientArgs,
    consent_id: String,
) -> anyhow::Result<ExitCode> {
    let r = client
        .close_case(pb::CloseCaseRequest { consent_id })
        .await?
        .into_inner();
    if common.json {
        print_json(&r)?;
    } else {
        println!(
            "case closed at {}; message bodies deleted after {}",
            clock::format_ms(r.closed_at_ms),
            clock::format_ms(r.bodies_deleted_after_ms)
        );
    }
    Ok(exit::OK)
}

async fn evidence(
    client: &mut AgencyClient,
    common: &ClientArgs,
    message: Option<String>,
    consent: Option<String>,
) -> anyhow::Result<ExitCode> {
    use pb::get_consent_evidence_request::About;
    let about = match (message, consent) {
        (Some(m), _) => About::MessageId(m),
        (None, Some(c)) => About::ConsentId(c),
        (None, None) => anyhow::bail!("give --message or --consent"),
    };
    let e = client
        .get_consent_evidence(pb::GetConsentEvidenceRequest { about: Some(about) })
        .await?
        .into_inner();
    if common.json {
        print_json(&e)?;
    } else if let Some(c) = &e.consent {
        let state = pb::ConsentState::try_from(e.state)
            .map(|s| s.as_str_name())
            .unwrap_or("?");
        println!("consent {} ({state})", c.consent_id);
        println!(
            "  recorded by {} ({}) at {}",
            c.recording_agency,
            c.recorded_by,
            clock::format_ms(c.recorded_at_ms)
        );
        println!("  recipients {}", c.recipients.join(", "));
        println!(
            "  valid {} – {}",
            clock::format_ms(c.valid_from_ms),
            clock::format_ms(c.valid_until_ms)
        );
        println!(
            "  evidence {} (sha256 {})",
            c.evidence_reference,
            hex::encode(&c.evidence_sha256)
        );
        if let Some(w) = &e.withdrawal {
            println!(
                "  withdrawn at {} ({}, {})",
                clock::format_ms(w.withdrawn_at_ms),
                w.recorded_by,
                w.manner
            );
        }
        if !e.superseded_by.is_empty() {
            println!("  superseded by {}", e.superseded_by);
        }
        if e.signature_verified {
            println!(
                "  signed notice: signature verified against a key the directory pins for {}",
                c.recording_agency
            );
        } else {
            println!("  signed notice: NOT verified: {}", e.signature_problem);
        }
    }
    if !e.signature_verified {
        eprintln!(
            "error: the consent's signed notice does not verify: {}",
            e.signature_problem
        );
        return Ok(exit::unverified());
    }
    Ok(exit::OK)
}

async fn list(
    client: &mut AgencyClient,
    common: &ClientArgs,
    after: String,
    limit: u32,
) -> anyhow::Result<ExitCode> {
    let resp = client
        .list_consents(pb::ListConsentsRequest { after, limit })
        .await?
        .into_inner();
    if common.json {
        print_json(&resp)?;
    } else {
        for e in &resp.consents {
            let Some(c) = &e.consent else { continue };
            let state = pb::ConsentState::try_from(e.state)
                .map(|s| s.as_str_name())
                .unwrap_or("?");
            println!(
                "{}  {:<20} recorded by {} for {} until {}",
                c.consent_id,
                state,
                c.recording_agency,
                c.recipients.join(", "),
                clock::format_ms(c.valid_until_ms)
            );
        }
        if !resp.next_after.is_empty() {
            println!("next page: consent list --after {}", resp.next_after);
        }
    }
    Ok(exit::OK)
}
