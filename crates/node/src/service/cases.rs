//! The cases for the people in the offices (the console's Fälle): a case is one young
//! person as a consent's chain of supersession holds them, with every message sent and
//! received under it (the ledger's case index), newest activity first. For each message:
//! its kind, the other office, when, where a sent one is (queued, delivered with receipt,
//! refused with the reason), its deadline (`respond_by`) if it asks for an answer; and
//! which questions are overdue ([`overdue`], a pure function of the messages and today).

use crate::clock;
use crate::shared::Shared;
use crate::NodeError;
use kurzdraht_ledger::{CaseRef, Direction, StoredConsent};
use kurzdraht_proto::v1::{message_body::Body, MessageBody, MessageKind, Subject};
use prost::Message;
use std::collections::BTreeSet;

/// One message of a case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseMessage {
    pub message_id: String,
    pub kind: i32,
    pub direction: Direction,
    /// The office it went to or came from.
    pub counterpart: String,
    /// Submitted (sent) or received.
    pub at_ms: i64,
    /// A sent message's delivery state (`DeliveryState`); 0 for a received one.
    pub state: i32,
    /// Why a sent message was refused, rejected or expired.
    pub detail: String,
    /// When a sent message's receipt was stored.
    pub receipt_stored: bool,
    /// A received message was marked done.
    pub acknowledged: bool,
    /// The date an answer is asked for (`YYYY-MM-DD`), when the body is still held.
    pub respond_by: String,
    pub consent_id: String,
}

/// A case in the list.
#[derive(Debug, Clone)]
pub struct CaseSummary {
    /// The case's name: its root consent's id.
    pub root: String,
    pub latest_ms: i64,
    /// The person, from the latest consent of the chain (`None` when erased here).
    pub person: Option<Subject>,
    pub purposes: Vec<i32>,
    pub messages: usize,
    pub overdue: usize,
}

/// A case with its consents and messages.
#[derive(Debug, Clone)]
pub struct CaseView {
    pub root: String,
    pub person: Option<Subject>,
    /// The chain's consents, oldest first.
    pub consents: Vec<StoredConsent>,
    /// In time order.
    pub messages: Vec<CaseMessage>,
    /// The ids of the questions overdue today.
    pub overdue: BTreeSet<String>,
}

/// The kind that answers a question of `kind`, if it is one.
pub fn answer_to(kind: i32) -> Option<MessageKind> {
    match MessageKind::try_from(kind).ok()? {
        MessageKind::CertificationRequest => Some(MessageKind::MoveOutCertification),
        MessageKind::QualificationReferral => Some(MessageKind::ReferralResponse),
        _ => None,
    }
}

/// The questions (requests and referrals with a `respond_by`) that no later message of
/// the case answers and whose date lies before `today` (`YYYY-MM-DD`; ISO dates compare as
/// text). `messages` in time order.
pub fn overdue(messages: &[CaseMessage], today: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, m) in messages.iter().enumerate() {
        let Some(answer) = answer_to(m.kind) else {
            continue;
        };
        if m.respond_by.is_empty() || m.respond_by.as_str() >= today {
            continue;
        }
        let answered = messages[i + 1..]
            .iter()
            .any(|later| later.kind == answer as i32);
        if !answered {
            out.insert(m.message_id.clone());
        }
    }
    out
}

fn respond_by_of(payload: &[u8]) -> String {
    match MessageBody::decode(payload).ok().and_then(|b| b.body) {
        Some(Body::CertificationRequest(r)) => r.respond_by,
        Some(Body::QualificationReferral(r)) => r.respond_by,
        _ => String::new(),
    }
}

/// The cases of this office.
#[derive(Clone)]
pub struct Cases {
    shared: Shared,
}

impl Cases {
    pub(crate) fn new(shared: Shared) -> Self {
        Self { shared }
    }

    fn today(&self) -> Result<String, NodeError> {
        let d = clock::german_date_of_ms(self.shared.now_ms())?;
        Ok(format!(
            "{:04}-{:02}-{:02}",
            d.year(),
            u8::from(d.month()),
            d.day()
        ))
    }

    /// The consents of the chain rooted at `root`, oldest first (following `superseded_by`).
    fn chain(&self, root: &str) -> Result<Vec<StoredConsent>, NodeError> {
        let ledger = self.shared.ledger();
        let mut out = Vec::new();
        let mut next = root.to_string();
        let mut seen = BTreeSet::new();
        while !next.is_empty() && seen.insert(next.clone()) {
            let Some(c) = ledger.consent(&next)? else {
                break;
            };
            next = c.superseded_by.clone();
            out.push(c);
        }
        Ok(out)
    }

    fn message(&self, id: &str, direction: Direction) -> Result<Option<CaseMessage>, NodeError> {
        let ledger = self.shared.ledger();
        match direction {
            Direction::Sent => {
                let Some(status) = ledger.message(id)?.and_then(|r| r.status) else {
                    return Ok(None);
                };
                let respond_by = match answer_to(status.kind) {
                    Some(_) => ledger
                        .kept_delivery(id)?
                        .and_then(|k| k.envelope)
                        .map(|e| respond_by_of(&e.payload))
                        .unwrap_or_default(),
                    None => String::new(),
                };
                Ok(Some(CaseMessage {
                    message_id: status.message_id,
                    kind: status.kind,
                    direction,
                    counterpart: status.recipient,
                    at_ms: status.submitted_at_ms,
                    state: status.state,
                    detail: status.detail,
                    receipt_stored: status.receipt.is_some(),
                    acknowledged: false,
                    respond_by,
                    consent_id: status.consent_id,
                }))
            }
            Direction::Received => {
                let Some(r) = ledger.inbox_record(id)? else {
                    return Ok(None);
                };
                let respond_by = match (answer_to(r.kind), &r.envelope) {
                    (Some(_), Some(e)) if r.body_erased_at_ms == 0 => respond_by_of(&e.payload),
                    _ => String::new(),
                };
                Ok(Some(CaseMessage {
                    message_id: r.message_id,
                    kind: r.kind,
                    direction,
                    counterpart: r.sender,
                    at_ms: r.received_at_ms,
                    state: 0,
                    detail: String::new(),
                    receipt_stored: true,
                    acknowledged: r.acknowledged,
                    respond_by,
                    consent_id: r.consent_id,
                }))
            }
        }
    }

    fn messages(&self, root: &str) -> Result<Vec<CaseMessage>, NodeError> {
        let mut out = Vec::new();
        for (id, direction) in self.shared.ledger().case_messages(root)? {
            if let Some(m) = self.message(&id, direction)? {
                // the consent's own notices and withdrawals are not the case's messages
                if kurzdraht_ledger::carries_case(m.kind) {
                    out.push(m);
                }
            }
        }
        out.sort_by(|a, b| (a.at_ms, &a.message_id).cmp(&(b.at_ms, &b.message_id)));
        Ok(out)
    }

    /// Up to `limit` cases, latest activity first, after the case `before` of the previous
    /// page.
    pub fn recent(
        &self,
        before: Option<&CaseRef>,
        limit: usize,
    ) -> Result<Vec<CaseSummary>, NodeError> {
        let today = self.today()?;
        let mut out = Vec::new();
        for case in self
            .shared
            .ledger()
            .recent_cases(before, limit.clamp(1, 200))?
        {
            let chain = self.chain(&case.root)?;
            let latest = chain.last().and_then(|c| c.record.as_ref());
            let messages = self.messages(&case.root)?;
            out.push(CaseSummary {
                person: latest.and_then(|r| r.subject.clone()),
                purposes: latest.map(|r| r.purposes.clone()).unwrap_or_default(),
                messages: messages.len(),
                overdue: overdue(&messages, &today).len(),
                root: case.root,
                latest_ms: case.latest_ms,
            });
        }
        Ok(out)
    }

    /// One case: its consents and messages, and what is overdue today.
    pub fn case(&self, root: &str) -> Result<CaseView, NodeError> {
        kurzdraht_envelope::ids::parse_id("case", root)
            .map_err(|e| NodeError::invalid("case", e.to_string()))?;
        let consents = self.chain(root)?;
        if consents.is_empty() {
            return Err(NodeError::NotFound(format!("no case {root}")));
        }
        let messages = self.messages(root)?;
        let overdue = overdue(&messages, &self.today()?);
        Ok(CaseView {
            root: root.to_string(),
            person: consents
                .last()
                .and_then(|c| c.record.as_ref())
                .and_then(|r| r.subject.clone()),
            consents,
            messages,
            overdue,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(id: &str, kind: MessageKind, respond_by: &str) -> CaseMessage {
        CaseMessage {
            message_id: id.into(),
            kind: kind as i32,
            direction: Direction::Sent,
            counterpart: String::new(),
            at_ms: 0,
            state: 0,
            detail: String::new(),
            receipt_stored: false,
            acknowledged: false,
            respond_by: respond_by.into(),
            consent_id: String::new(),
        }
    }

    #[test]
    fn a_question_is_overdue_after_its_date_until_an_answer_follows() {
        use MessageKind::*;
        let asked = m("q", CertificationRequest, "2026-12-01");
        let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        assert_eq!(
            overdue(std::slice::from_ref(&asked), "2026-12-01"),
            set(&[]),
            "on the day"
        );
        assert_eq!(
            overdue(std::slice::from_ref(&asked), "2026-12-02"),
            set(&["q"])
        );
        let answered = [asked.clone(), m("a", MoveOutCertification, "")];
        assert_eq!(overdue(&answered, "2027-01-01"), set(&[]));
        // an answer before the question does not answer it
        let before = [m("a", MoveOutCertification, ""), asked.clone()];
        assert_eq!(overdue(&before, "2027-01-01"), set(&["q"]));
        // the wrong kind does not answer it
        let wrong = [asked.clone(), m("r", ReferralResponse, "")];
        assert_eq!(overdue(&wrong, "2027-01-01"), set(&["q"]));
        // a referral and its response
        let referral = [
            m("z", QualificationReferral, "2026-11-30"),
            m("x", ReferralResponse, ""),
        ];
        assert_eq!(overdue(&referral[..1], "2026-12-01"), set(&["z"]));
        assert_eq!(overdue(&referral, "2026-12-01"), set(&[]));
        // without a date nothing is overdue; other kinds never are
        assert_eq!(
            overdue(&[m("q", CertificationRequest, "")], "2030-01-01"),
            set(&[])
        );
        assert_eq!(
            overdue(&[m("d", MoveOutDecision, "2020-01-01")], "2030-01-01"),
            set(&[])
        );
    }
}
