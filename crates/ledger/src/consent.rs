//! The consent decision: may a message about `subject` go from `sender` to `recipient` for
//! `purpose` at time `at_ms`? A pure function over one stored consent, so that it can be
//! tested exhaustively; the store only looks the consent up.
//!
//! A consent covers transfers between the agency that recorded it (the controller) and each
//! agency it names — not between two named agencies. A withdrawal or a superseding record
//! that is *held* refuses whatever the clocks say: its timestamp is for reports, not for the
//! decision (a clock stepped back, or a peer's clock, must not reopen a withdrawn consent).
//! Health data (Art. 9 GDPR) needs a consent whose legal basis is explicit consent.
//!
//! The checks run in a fixed order, and the first that fails is the reason given:
//! no consent → withdrawn → superseded → erased → expired → not yet valid → other subject → other
//! recipient → other sender → not with the controller → other purpose → category not
//! covered → health without explicit consent.

use crate::records::StoredConsent;
use kurzdraht_proto::v1::{ConsentState, DataCategory, LegalBasis, Purpose, Subject};

/// Why the ledger refuses a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConsentRefusal {
    /// No consent with the cited id is held here (or none was cited).
    NoConsent,
    /// A withdrawal of the consent is held (whatever its timestamp).
    Withdrawn,
    /// A later consent that replaces this one is held (whatever its timestamp).
    Superseded,
    /// The person was erased from this consent here (Art. 17 GDPR).
    Erased,
    /// The consent's validity ended before the time of the check.
    Expired,
    /// The consent's validity begins after the time of the check.
    NotYetValid,
    /// The consent is about another person.
    OtherSubject,
    /// The consent does not name the recipient.
    OtherRecipient,
    /// The consent does not cover the sending agency.
    OtherSender,
    /// Both agencies are named by the consent, but neither recorded it: a consent covers
    /// transfers between its controller and each agency it names, not between those.
    NotWithController,
    /// The consent does not name the purpose of this kind of message.
    OtherPurpose,
    /// The message carries a category of data the consent does not cover.
    CategoryNotCovered,
    /// The message carries health data, but the consent's legal basis is not explicit
    /// consent under Art. 9(2)(a) GDPR.
    HealthNotExplicit,
}

impl ConsentRefusal {
    /// A stable code, used in errors, status details and the audit chain.
    pub fn code(self) -> &'static str {
        match self {
            Self::NoConsent => "no-consent",
            Self::Withdrawn => "consent-withdrawn",
            Self::Superseded => "consent-superseded",
            Self::Erased => "consent-erased",
            Self::Expired => "consent-expired",
            Self::NotYetValid => "consent-not-yet-valid",
            Self::OtherSubject => "consent-other-subject",
            Self::OtherRecipient => "consent-other-recipient",
            Self::OtherSender => "consent-other-sender",
            Self::NotWithController => "consent-not-with-controller",
            Self::OtherPurpose => "consent-other-purpose",
            Self::CategoryNotCovered => "consent-category-not-covered",
            Self::HealthNotExplicit => "consent-health-not-explicit",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Self::NoConsent => "no consent is recorded for this message",
            Self::Withdrawn => "the consent has been withdrawn",
            Self::Superseded => "the consent has been replaced by a later one; cite that one",
            Self::Erased => "the person's data was erased from this consent here",
            Self::Expired => "the consent has expired",
            Self::NotYetValid => "the consent is not yet in force",
            Self::OtherSubject => "the consent is about another person",
            Self::OtherRecipient => "the consent does not name this recipient",
            Self::OtherSender => "the consent does not cover the sending agency",
            Self::NotWithController => {
                "the consent covers transfers with the agency that recorded it, not between the agencies it names"
            }
            Self::OtherPurpose => "the consent does not cover the purpose of this message",
            Self::CategoryNotCovered => {
                "the message carries a category of data the consent does not cover"
            }
            Self::HealthNotExplicit => {
                "health data needs a consent given explicitly under Art. 9(2)(a) GDPR"
            }
        }
    }
}

impl std::fmt::Display for ConsentRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.describe(), self.code())
    }
}

/// The question put to the ledger.
#[derive(Debug, Clone, Copy)]
pub struct ConsentQuery<'a> {
    pub subject: &'a Subject,
    pub sender: &'a str,
    pub recipient: &'a str,
    pub purpose: Purpose,
    /// The categories of data the message carries (`DataCategory` values).
    pub categories: &'a [i32],
    pub at_ms: i64,
}

/// The decision. `Ok(())` means the consent allows the message.
pub fn evaluate(
    consent: Option<&StoredConsent>,
    query: &ConsentQuery<'_>,
) -> Result<(), ConsentRefusal> {
    let stored = consent.ok_or(ConsentRefusal::NoConsent)?;
    let record = stored.record.as_ref().ok_or(ConsentRefusal::NoConsent)?;
    if stored.withdrawal.is_some() {
        return Err(ConsentRefusal::Withdrawn);
    }
    if !stored.superseded_by.is_empty() {
        return Err(ConsentRefusal::Superseded);
    }
    if stored.erased_at_ms > 0 {
        return Err(ConsentRefusal::Erased);
    }
    if query.at_ms > record.valid_until_ms {
        return Err(ConsentRefusal::Expired);
    }
    if query.at_ms < record.valid_from_ms {
        return Err(ConsentRefusal::NotYetValid);
    }
    match &record.subject {
        Some(s) if same_person(s, query.subject) => {}
        _ => return Err(ConsentRefusal::OtherSubject),
    }
    let controller = record.recording_agency.as_str();
    let named = |agency: &str| record.recipients.iter().any(|r| r == agency);
    if query.recipient != controller && !named(query.recipient) {
        return Err(ConsentRefusal::OtherRecipient);
    }
    if query.sender != controller && !named(query.sender) {
        return Err(ConsentRefusal::OtherSender);
    }
    let with_controller = (query.sender == controller && named(query.recipient))
        || (query.recipient == controller && named(query.sender));
    if !with_controller {
        return Err(ConsentRefusal::NotWithController);
    }
    if !record.purposes.contains(&(query.purpose as i32)) {
        return Err(ConsentRefusal::OtherPurpose);
    }
    if !query
        .categories
        .iter()
        .all(|c| record.categories.contains(c))
    {
        return Err(ConsentRefusal::CategoryNotCovered);
    }
    if query.categories.contains(&(DataCategory::Health as i32))
        && record.legal_basis != LegalBasis::ExplicitConsentGdpr92A as i32
    {
        return Err(ConsentRefusal::HealthNotExplicit);
    }
    Ok(())
}

/// Whether two subjects are the same person: same given and family name (ignoring case and
/// surrounding white space) and the same date of birth. Addresses and case references may
/// differ between agencies and over time.
pub fn same_person(a: &Subject, b: &Subject) -> bool {
    person_of(a) == person_of(b)
}

/// A person as [`same_person`] compares them: given name, family name (white space collapsed,
/// lower case) and date of birth, each ended by a zero byte. What the person index tags.
pub fn person_of(s: &Subject) -> Vec<u8> {
    fn norm(s: &str) -> String {
        s.split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .to_lowercase()
    }
    let mut out = Vec::new();
    for part in [
        norm(&s.given_name),
        norm(&s.family_name),
        s.date_of_birth.trim().to_string(),
    ] {
        out.extend_from_slice(part.as_bytes());
        out.push(0);
    }
    out
}

/// The state of a consent at `at_ms`, for listings. A held withdrawal or replacement
/// decides, whatever its timestamp (as in [`evaluate`]).
pub fn state_at(stored: &StoredConsent, at_ms: i64) -> ConsentState {
    let Some(record) = &stored.record else {
        return ConsentState::Unspecified;
    };
    if stored.withdrawal.is_some() {
        ConsentState::ConsentWithdrawn
    } else if !stored.superseded_by.is_empty() {
        ConsentState::ConsentSuperseded
    } else if at_ms > record.valid_until_ms {
        ConsentState::ConsentExpired
    } else if at_ms < record.valid_from_ms {
        ConsentState::ConsentNotYetValid
    } else {
        ConsentState::ConsentInForce
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kurzdraht_proto::v1::ConsentRecord;
    use kurzdraht_proto::v1::ConsentWithdrawalRecord;
    use proptest::prelude::*;

    const JC: &str = "jobcenter-segeberg";
    const JA: &str = "jugendamt-kreis-segeberg";
    const JN: &str = "jugendamt-norderstedt";

    fn subject(name: &str) -> Subject {
        Subject {
            given_name: name.into(),
            family_name: "Muster".into(),
            date_of_birth: "2004-03-01".into(),
            ..Default::default()
        }
    }

    fn consent() -> StoredConsent {
        StoredConsent {
            record: Some(ConsentRecord {
                consent_id: "c".into(),
                subject: Some(subject("Lena")),
                recording_agency: JC.into(),
                recipients: vec![JA.into()],
                purposes: vec![Purpose::U25MoveOut as i32],
                categories: vec![IDENTITY, HOUSING],
                valid_from_ms: 1_000,
                valid_until_ms: 2_000,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    const IDENTITY: i32 = DataCategory::Identity as i32;
    const HOUSING: i32 = DataCategory::HousingSituation as i32;
    const HEALTH: i32 = DataCategory::Health as i32;

    fn query(s: &Subject) -> ConsentQuery<'_> {
        ConsentQuery {
            subject: s,
            sender: JC,
            recipient: JA,
            purpose: Purpose::U25MoveOut,
            categories: &[IDENTITY, HOUSING],
            at_ms: 1_500,
        }
    }

    #[test]
    fn each_refusal_reason() {
        let s = subject("Lena");
        let c = consent();
        assert_eq!(evaluate(Some(&c), &query(&s)), Ok(()));
        // the Jugendamt may answer the recording Jobcenter
        let back = ConsentQuery {
            sender: JA,
            recipient: JC,
            ..query(&s)
        };
        assert_eq!(evaluate(Some(&c), &back), Ok(()));
        assert_eq!(evaluate(None, &query(&s)), Err(ConsentRefusal::NoConsent));
        let mut w = c.clone();
        w.withdrawal = Some(ConsentWithdrawalRecord {
            withdrawn_at_ms: 1_400,
            ..Default::default()
        });
        assert_eq!(
            evaluate(Some(&w), &query(&s)),
            Err(ConsentRefusal::Withdrawn)
        );
        let late = ConsentQuery {
            at_ms: 2_001,
            ..query(&s)
        };
        assert_eq!(evaluate(Some(&c), &late), Err(ConsentRefusal::Expired));
        let early = ConsentQuery {
            at_ms: 999,
            ..query(&s)
        };
        assert_eq!(evaluate(Some(&c), &early), Err(ConsentRefusal::NotYetValid));
        let other = subject("Mia");
        assert_eq!(
            evaluate(Some(&c), &query(&other)),
            Err(ConsentRefusal::OtherSubject)
        );
        let to_jn = ConsentQuery {
            recipient: JN,
            ..query(&s)
        };
        assert_eq!(
            evaluate(Some(&c), &to_jn),
            Err(ConsentRefusal::OtherRecipient)
        );
        let from_jn = ConsentQuery {
            sender: JN,
            recipient: JC,
            ..query(&s)
        };
        assert_eq!(
            evaluate(Some(&c), &from_jn),
            Err(ConsentRefusal::OtherSender)
        );
        let q = ConsentQuery {
            purpose: Purpose::QualificationMeasure,
            ..query(&s)
        };
        assert_eq!(evaluate(Some(&c), &q), Err(ConsentRefusal::OtherPurpose));
        let q = ConsentQuery {
            categories: &[IDENTITY, HEALTH],
            ..query(&s)
        };
        assert_eq!(
            evaluate(Some(&c), &q),
            Err(ConsentRefusal::CategoryNotCovered)
        );
        let mut superseded = c.clone();
        superseded.superseded_by = "c2".into();
        superseded.superseded_at_ms = 1_500;
        assert_eq!(
            evaluate(Some(&superseded), &query(&s)),
            Err(ConsentRefusal::Superseded)
        );
        assert_eq!(
            state_at(&superseded, 1_500),
            ConsentState::ConsentSuperseded
        );
        assert_eq!(state_at(&c, 1_500), ConsentState::ConsentInForce);
    }

    /// A clock stepped back (or a peer's clock ahead) must not reopen a withdrawn or
    /// replaced consent: what is held decides, the timestamp does not.
    #[test]
    fn a_held_withdrawal_or_replacement_refuses_whatever_its_timestamp() {
        let s = subject("Lena");
        let c = consent();
        let mut w = c.clone();
        w.withdrawal = Some(ConsentWithdrawalRecord {
            withdrawn_at_ms: 1_000_000, // stamped by a clock far ahead
            ..Default::default()
        });
        assert_eq!(evaluate(Some(&c), &query(&s)), Ok(()));
        assert_eq!(
            evaluate(Some(&w), &query(&s)),
            Err(ConsentRefusal::Withdrawn)
        );
        assert_eq!(state_at(&w, 1_500), ConsentState::ConsentWithdrawn);
        let mut r = c.clone();
        r.superseded_by = "c2".into();
        r.superseded_at_ms = 1_000_000;
        assert_eq!(
            evaluate(Some(&r), &query(&s)),
            Err(ConsentRefusal::Superseded)
        );
        assert_eq!(state_at(&r, 1_500), ConsentState::ConsentSuperseded);
    }

    /// Two agencies a consent names may not exchange data under it: only the controller
    /// and each of them may.
    #[test]
    fn named_agencies_may_not_send_to_each_other() {
        let s = subject("Lena");
        let mut c = consent();
        if let Some(r) = c.record.as_mut() {
            r.recipients = vec![JA.into(), JN.into()];
        }
        for (sender, recipient) in [(JC, JA), (JA, JC), (JC, JN), (JN, JC)] {
            let q = ConsentQuery {
                sender,
                recipient,
                ..query(&s)
            };
            assert_eq!(evaluate(Some(&c), &q), Ok(()), "{sender} -> {recipient}");
        }
        for (sender, recipient) in [(JA, JN), (JN, JA)] {
            let q = ConsentQuery {
                sender,
                recipient,
                ..query(&s)
            };
            assert_eq!(
                evaluate(Some(&c), &q),
                Err(ConsentRefusal::NotWithController),
                "{sender} -> {recipient}"
            );
        }
    }

    /// Health data needs explicit consent (Art. 9(2)(a) GDPR) in the decision itself, not
    /// only when a consent is recorded here: a replicated record may say otherwise.
    #[test]
    fn health_data_needs_an_explicit_legal_basis() {
        let s = subject("Lena");
        let mut c = consent();
        if let Some(r) = c.record.as_mut() {
            r.categories = vec![IDENTITY, HEALTH];
            r.legal_basis = LegalBasis::ConsentGdpr61ASgbX67b as i32;
        }
        let q = ConsentQuery {
            categories: &[IDENTITY, HEALTH],
            ..query(&s)
        };
        assert_eq!(
            evaluate(Some(&c), &q),
            Err(ConsentRefusal::HealthNotExplicit)
        );
        let without_health = ConsentQuery {
            categories: &[IDENTITY],
            ..query(&s)
        };
        assert_eq!(evaluate(Some(&c), &without_health), Ok(()));
        if let Some(r) = c.record.as_mut() {
            r.legal_basis = LegalBasis::ExplicitConsentGdpr92A as i32;
        }
        assert_eq!(evaluate(Some(&c), &q), Ok(()));
    }

    #[test]
    fn same_person_ignores_case_space_and_address() {
        let mut a = subject("Lena");
        let mut b = subject("  LENA ");
        a.address = Some(Default::default());
        b.case_references.push(Default::default());
        assert!(same_person(&a, &b));
        b.date_of_birth = "2004-03-02".into();
        assert!(!same_person(&a, &b));
    }

    fn agency() -> impl Strategy<Value = &'static str> {
        prop_oneof![Just(JC), Just(JA), Just(JN)]
    }

    proptest! {
        /// The decision is Ok exactly when every condition holds, whatever the inputs. The
        /// oracle is written from the rules (design.md §7), not from the code: the consent
        /// is in force when nothing withdraws or replaces it and the time lies in its
        /// validity; the transfer is allowed when one side is the controller and the other
        /// a named agency.
        #[test]
        fn ok_iff_all_conditions_hold(
            from in 0i64..100, len in 0i64..100, at in 0i64..250,
            withdrawn in proptest::option::of(0i64..250),
            recording in agency(), recipients in proptest::collection::vec(agency(), 0..3),
            purposes in proptest::collection::vec(1i32..3, 0..3),
            sender in agency(), recipient in agency(), purpose in 1i32..3,
            same in any::<bool>(),
            covered_categories in proptest::collection::vec(1i32..9, 0..4),
            carried in proptest::collection::vec(1i32..9, 0..4),
            superseded in proptest::option::of(0i64..250),
            explicit in any::<bool>(),
        ) {
            let basis = if explicit {
                LegalBasis::ExplicitConsentGdpr92A
            } else {
                LegalBasis::ConsentGdpr61ASgbX67b
            };
            let c = StoredConsent {
                record: Some(ConsentRecord {
                    subject: Some(subject("Lena")),
                    recording_agency: recording.into(),
                    recipients: recipients.iter().map(|s| s.to_string()).collect(),
                    purposes: purposes.clone(),
                    categories: covered_categories.clone(),
                    legal_basis: basis as i32,
                    valid_from_ms: from,
                    valid_until_ms: from + len,
                    ..Default::default()
                }),
                withdrawal: withdrawn.map(|t| ConsentWithdrawalRecord { withdrawn_at_ms: t, ..Default::default() }),
                superseded_by: superseded.map(|_| "later".to_string()).unwrap_or_default(),
                superseded_at_ms: superseded.unwrap_or(0),
                ..Default::default()
            };
            let s = if same { subject("Lena") } else { subject("Mia") };
            let purpose = Purpose::try_from(purpose).expect("test");
            let q = ConsentQuery { subject: &s, sender, recipient, purpose, categories: &carried, at_ms: at };
            let in_force = withdrawn.is_none() && superseded.is_none()
                && (from..=from + len).contains(&at);
            let pairs: Vec<(&str, &str)> = recipients
                .iter()
                .flat_map(|r| [(recording, *r), (*r, recording)])
                .collect();
            let carries_health = carried.contains(&(DataCategory::Health as i32));
            let all = in_force && same
                && pairs.contains(&(sender, recipient))
                && purposes.contains(&(purpose as i32))
                && carried.iter().all(|c| covered_categories.contains(c))
                && (!carries_health || explicit);
            prop_assert_eq!(evaluate(Some(&c), &q).is_ok(), all);
            prop_assert_eq!(state_at(&c, at) == ConsentState::ConsentInForce, in_force);
        }
    }
}
