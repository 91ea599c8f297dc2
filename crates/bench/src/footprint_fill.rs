//! `footprint`: the test data and the fill of the Jugendamt's store (see `footprint.rs`).

use crate::common::{self as bench, JA, JC};
use crate::footprint::*;
use crate::footprint_report::thousands;
use anyhow::{bail, Context};
use kurzdraht_envelope::{ids, sign_receipt, sign_receipt_batch, SigningKey};
use kurzdraht_ledger::{Accepted, ConsentEffect, InboxRecord, Outgoing};
use kurzdraht_node::config::NodeConfig;
use kurzdraht_node::{clock, Node};
use kurzdraht_proto::v1::{self as pb, message_body::Body, MessageKind};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------- test data

pub(crate) const GIVEN: [&str; 16] = [
    "Lena", "Finn", "Mia", "Jonas", "Lea", "Luca", "Emma", "Paul", "Hannah", "Ben", "Sophie",
    "Elias", "Marie", "Noah", "Lina", "Felix",
];
pub(crate) const FAMILY: [&str; 16] = [
    "Hansen",
    "Petersen",
    "Jensen",
    "Schmidt",
    "Möller",
    "Schulz",
    "Thomsen",
    "Lange",
    "Meyer",
    "Nissen",
    "Carstensen",
    "Wulf",
    "Koch",
    "Brandt",
    "Voss",
    "Lorenzen",
];
pub(crate) const STREETS: [&str; 8] = [
    "Kurhausstraße",
    "Hamburger Straße",
    "Kirchstraße",
    "Lübecker Straße",
    "Ulzburger Straße",
    "Segeberger Chaussee",
    "Rathausallee",
    "Ohechaussee",
];
pub(crate) const PLACES: [(&str, &str); 4] = [
    ("23795", "Bad Segeberg"),
    ("22846", "Norderstedt"),
    ("24568", "Kaltenkirchen"),
    ("24576", "Bad Bramstedt"),
];
pub(crate) const CASEWORKERS: [&str; 4] =
    ["Herr Jensen", "Frau Sievers", "Frau Ahrens", "Herr Lüthje"];

/// Person `i`: 18 to 24 years old in `year`, with an address and the Jobcenter's case number.
pub(crate) fn subject(i: usize, year: i32) -> pb::Subject {
    let (postal_code, city) = PLACES[i % PLACES.len()];
    pb::Subject {
        given_name: GIVEN[i % GIVEN.len()].into(),
        family_name: FAMILY[(i / GIVEN.len()) % FAMILY.len()].into(),
        date_of_birth: format!(
            "{:04}-{:02}-{:02}",
            year - 19 - (i % 6) as i32,
            1 + i % 12,
            1 + (i / 12) % 28
        ),
        address: Some(pb::Address {
            street: format!("{} {}", STREETS[(i / 7) % STREETS.len()], 1 + i % 120),
            postal_code: postal_code.into(),
            city: city.into(),
        }),
        case_references: vec![pb::CaseReference {
            agency: JC.into(),
            reference: format!("JC-SE-U25-{i:07}"),
        }],
    }
}

/// What a consent for the move-out procedure covers; the Jugendamt's certification carries
/// the family situation.
pub(crate) fn categories() -> Vec<i32> {
    [
        pb::DataCategory::Identity,
        pb::DataCategory::Address,
        pb::DataCategory::CaseReferences,
        pb::DataCategory::HousingSituation,
        pb::DataCategory::FamilySituation,
    ]
    .map(|c| c as i32)
    .to_vec()
}

/// Consent `i` as the Jobcenter records it at `at_ms` (valid for two years).
pub(crate) fn consent_record(i: usize, at_ms: i64, year: i32) -> pb::ConsentRecord {
    let mut evidence = [0u8; 32];
    evidence[..8].copy_from_slice(&Rng(i as u64).next().to_be_bytes());
    evidence[8..16].copy_from_slice(&Rng(!(i as u64)).next().to_be_bytes());
    pb::ConsentRecord {
        consent_id: ids::new_id(),
        subject: Some(subject(i, year)),
        given_by: pb::ConsentGiver::Person as i32,
        recording_agency: JC.into(),
        recipients: vec![JA.into()],
        purposes: vec![pb::Purpose::U25MoveOut as i32],
        valid_from_ms: at_ms,
        valid_until_ms: at_ms + 2 * 365 * clock::DAY_MS,
        evidence_reference: format!("JC-SE/Einwilligung/{}/{i:07}", year - 1),
        recorded_by: CASEWORKERS[i % CASEWORKERS.len()].into(),
        recorded_at_ms: at_ms,
        categories: categories(),
        legal_basis: pb::LegalBasis::ConsentGdpr61ASgbX67b as i32,
        form: pb::ConsentForm::Written as i32,
        evidence_sha256: evidence.to_vec(),
        ..Default::default()
    }
}

pub(crate) fn certification_request(
    subject: pb::Subject,
    respond_by: String,
    i: usize,
) -> pb::MessageBody {
    pb::MessageBody {
        body: Some(Body::CertificationRequest(pb::CertificationRequest {
            subject: Some(subject),
            reason: bench::REASON.into(),
            respond_by,
            caseworker: CASEWORKERS[i % CASEWORKERS.len()].into(),
        })),
    }
}

pub(crate) fn move_out_certification(subject: pb::Subject, today: String) -> pb::MessageBody {
    pb::MessageBody {
        body: Some(Body::MoveOutCertification(pb::MoveOutCertification {
            subject: Some(subject),
            outcome: pb::CertificationOutcome::Supported as i32,
            ground: pb::MoveOutGround::SeriousSocialReasons as i32,
            statement: "Rückverweis in das Elternhaus nicht zumutbar; Auszug aus schwerwiegenden sozialen Gründen erforderlich.".into(),
            interview_date: today,
            issuing_caseworker: "Frau Sievers".into(),
            health_note: String::new(),
        })),
    }
}

/// SplitMix64: reproducible picks without a dependency.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

pub(crate) fn this_year() -> i32 {
    clock::date_of_ms(clock::now_ms())
        .map(|d| d.year())
        .unwrap_or(2026)
}

pub(crate) fn today() -> String {
    clock::date_of_ms(clock::now_ms())
        .map(|d| d.to_string())
        .unwrap_or_default()
}

// ---------------------------------------------------------------- the fill

/// One DeliverBatch as the Jugendamt stores it: records with their receipts, and effects.
pub(crate) struct Batch {
    pub(crate) items: Vec<(InboxRecord, ConsentEffect)>,
    pub(crate) received_at_ms: i64,
    pub(crate) consents: bool,
}

/// Seals the envelopes on its own thread, so that sealing and writing overlap.
pub(crate) struct Source {
    pub(crate) jc_key: SigningKey,
    pub(crate) ja_key: SigningKey,
    pub(crate) consents: usize,
    pub(crate) messages: usize,
    pub(crate) deadline: Duration,
    pub(crate) start_ms: i64,
    pub(crate) year: i32,
}

/// What the sealing thread kept: ids for the load, one envelope size of each kind.
#[derive(Default)]
pub(crate) struct Produced {
    pub(crate) consent_sample: Vec<String>,
    pub(crate) message_sample: Vec<String>,
    pub(crate) notice_bytes: usize,
    pub(crate) request_bytes: usize,
}

impl Source {
    /// When record `i` of `n` was sealed: spread evenly over the past [`HISTORY_MS`].
    pub(crate) fn at(&self, i: usize, n: usize) -> i64 {
        self.start_ms + (i128::from(HISTORY_MS) * i as i128 / n.max(1) as i128) as i64
    }

    /// Received as the node stores an accepted envelope (the receipt follows per batch).
    pub(crate) fn received(out: Outgoing, kind: MessageKind) -> InboxRecord {
        InboxRecord {
            message_id: out.message_id,
            sender: JC.into(),
            kind: kind as i32,
            envelope_sha256: out.envelope_sha256.to_vec(),
            envelope: Some(out.envelope),
            created_at_ms: out.submitted_at_ms,
            consent_id: out.consent_id,
            ..Default::default()
        }
    }

    /// Signs the batch's receipts as reception does (one alone, more under one signature)
    /// and hands it to the writer; false once the writer is gone.
    pub(crate) fn send(
        &self,
        items: &mut Vec<(InboxRecord, ConsentEffect)>,
        consents: bool,
        tx: &SyncSender<Batch>,
    ) -> bool {
        if items.is_empty() {
            return true;
        }
        let received_at_ms = items
            .iter()
            .map(|(r, _)| r.created_at_ms)
            .max()
            .unwrap_or_default()
            + TRANSIT_MS;
        let receipts: Vec<pb::Receipt> = items
            .iter()
            .map(|(r, _)| pb::Receipt {
                message_id: r.message_id.clone(),
                envelope_sha256: r.envelope_sha256.clone(),
                sender: JC.into(),
                receiver: JA.into(),
                received_at_ms,
            })
            .collect();
        let signed = match receipts.as_slice() {
            [one] => vec![sign_receipt(one, &self.ja_key)],
            many => sign_receipt_batch(many, JC, JA, received_at_ms, &self.ja_key),
        };
        let mut items = std::mem::replace(items, Vec::with_capacity(FILL_BATCH));
        for ((record, _), receipt) in items.iter_mut().zip(signed) {
            record.received_at_ms = received_at_ms;
            record.receipt = Some(receipt);
        }
        tx.send(Batch {
            items,
            received_at_ms,
            consents,
        })
        .is_ok()
    }

    pub(crate) fn run(self, tx: SyncSender<Batch>) -> Produced {
        let mut produced = Produced::default();
        let mut items = Vec::with_capacity(FILL_BATCH);
        let mut consent_ids = Vec::with_capacity(self.consents);
        let every = (self.consents / SAMPLE).max(1);
        for i in 0..self.consents {
            let at = self.at(i, self.consents);
            let record = consent_record(i, at, self.year);
            let body = pb::MessageBody {
                body: Some(Body::ConsentNotice(pb::ConsentNotice {
                    consent: Some(record.clone()),
                })),
            };
            let out = bench::seal_outgoing(
                &self.jc_key,
                JC,
                MessageKind::ConsentNotice,
                JA,
                &record.consent_id,
                &body,
                at,
                self.deadline,
            );
            produced.notice_bytes = bench::envelope_bytes(&out);
            if i % every == 0 && produced.consent_sample.len() < SAMPLE {
                produced.consent_sample.push(record.consent_id.clone());
            }
            consent_ids.push(record.consent_id.clone());
            items.push((
                Self::received(out, MessageKind::ConsentNotice),
                ConsentEffect::Record(record),
            ));
            if items.len() == FILL_BATCH && !self.send(&mut items, true, &tx) {
                return produced;
            }
        }
        if !self.send(&mut items, true, &tx) {
            return produced;
        }
        let mut rng = Rng(0x5e6e_be26);
        let every = (self.messages / SAMPLE).max(1);
        for k in 0..self.messages {
            let at = self.at(k, self.messages);
            let c = rng.below(self.consents);
            let respond_by = clock::date_of_ms(at + 14 * clock::DAY_MS)
                .map(|d| d.to_string())
                .unwrap_or_default();
            let body = certification_request(subject(c, self.year), respond_by, k);
            let out = bench::seal_outgoing(
                &self.jc_key,
                JC,
                MessageKind::CertificationRequest,
                JA,
                &consent_ids[c],
                &body,
                at,
                self.deadline,
            );
            produced.request_bytes = bench::envelope_bytes(&out);
            if k % every == 0 && produced.message_sample.len() < SAMPLE {
                produced.message_sample.push(out.message_id.clone());
            }
            items.push((
                Self::received(out, MessageKind::CertificationRequest),
                ConsentEffect::None,
            ));
            if items.len() == FILL_BATCH && !self.send(&mut items, false, &tx) {
                return produced;
            }
        }
        self.send(&mut items, false, &tx);
        produced
    }
}

/// The filled store.
pub(crate) struct Filled {
    pub(crate) consents: usize,
    pub(crate) messages: usize,
    pub(crate) consents_time: Duration,
    pub(crate) messages_time: Duration,
    pub(crate) flush: Duration,
    pub(crate) total: Duration,
    pub(crate) size_on_disk: u64,
    pub(crate) files: u64,
    pub(crate) produced: Produced,
}

impl Filled {
    pub(crate) fn records(&self) -> usize {
        self.consents + self.messages
    }
}

/// Prints progress at every tenth of the records.
pub(crate) struct Progress {
    pub(crate) total: usize,
    pub(crate) done: usize,
    pub(crate) next: usize,
    pub(crate) started: Instant,
    pub(crate) last: (usize, Instant),
}

impl Progress {
    pub(crate) fn new(total: usize) -> Self {
        let now = Instant::now();
        Self {
            total,
            done: 0,
            next: total.div_ceil(10),
            started: now,
            last: (0, now),
        }
    }

    pub(crate) fn add(&mut self, n: usize, what: &str) {
        self.done += n;
        if self.done < self.next && self.done < self.total {
            return;
        }
        let now = Instant::now();
        let secs = self.started.elapsed().as_secs_f64().max(1e-9);
        let recent = (self.done - self.last.0) as f64
            / now.duration_since(self.last.1).as_secs_f64().max(1e-9);
        eprintln!(
            "  {:>3}%  {} / {} records ({what}), {secs:.1} s, {:.0}/s overall, {recent:.0}/s lately",
            self.done * 100 / self.total.max(1),
            thousands(self.done),
            thousands(self.total),
            self.done as f64 / secs
        );
        self.last = (self.done, now);
        while self.next <= self.done {
            self.next += self.total.div_ceil(10).max(1);
        }
    }
}

/// Fills the Jugendamt's store: `consents` replicated consents, then `messages` received
/// CertificationRequests, as reception stores delivered batches; one flush at the end.
pub(crate) async fn fill(
    ja: &NodeConfig,
    jc: &NodeConfig,
    consents: usize,
    messages: usize,
) -> anyhow::Result<Filled> {
    let node = Node::open(ja).context("opening the Jugendamt's store as its node does")?;
    let ledger = node.ledger().clone();
    let source = Source {
        jc_key: jc.signing_key.clone(),
        ja_key: ja.signing_key.clone(),
        consents,
        messages,
        deadline: jc.delivery.deadline,
        start_ms: clock::now_ms() - HISTORY_MS,
        year: this_year(),
    };
    let started = Instant::now();
    let writer = ledger.clone();
    let written = tokio::task::spawn_blocking(move || {
        let (tx, rx) = sync_channel::<Batch>(FILL_QUEUE);
        let sealer = std::thread::Builder::new()
            .name("footprint-seal".into())
            .spawn(move || source.run(tx))
            .context("starting the sealing thread")?;
        let mut progress = Progress::new(consents + messages);
        let mut consents_done = None;
        for batch in rx {
            if !batch.consents && consents_done.is_none() {
                consents_done = Some(started.elapsed());
            }
            let stored = writer.accept_deliveries(&batch.items, batch.received_at_ms)?;
            if stored.len() != batch.items.len()
                || stored.iter().any(|a| !matches!(a, Accepted::Stored { .. }))
            {
                bail!("the store took a filled envelope as a duplicate");
            }
            let what = if batch.consents {
                "consents"
            } else {
                "messages"
            };
            progress.add(batch.items.len(), what);
        }
        let produced = sealer
            .join()
            .map_err(|_| anyhow::anyhow!("the sealing thread panicked"))?;
        anyhow::Ok((produced, consents_done.unwrap_or_else(|| started.elapsed())))
    })
    .await
    .context("the fill task")??;
    let (produced, consents_time) = written;
    let written_at = started.elapsed();
    let t = Instant::now();
    ledger.flush().await?;
    let flush = t.elapsed();
    let total = started.elapsed();
    let size_on_disk = ledger.size_on_disk()?;
    drop(ledger);
    drop(node);
    let files = crate::restart::dir_bytes(&ja.data_dir);
    eprintln!(
        "  filled in {:.1} s (final flush {})",
        total.as_secs_f64(),
        bench::fmt_duration(flush)
    );
    Ok(Filled {
        consents,
        messages,
        consents_time,
        messages_time: written_at.saturating_sub(consents_time),
        flush,
        total,
        size_on_disk,
        files,
        produced,
    })
}
