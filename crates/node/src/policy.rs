//! Policy: which role may send which kind of message to which role, the U25 rule, the
//! purpose each kind serves, and the field rules of every message body. Pure functions,
//! applied by the sender at submission and again by the receiver.
//!
//! | kind                     | sender    | recipient | purpose               |
//! |--------------------------|-----------|-----------|-----------------------|
//! | `CertificationRequest`   | Jobcenter | Jugendamt | u25-move-out          |
//! | `MoveOutCertification`   | Jugendamt | Jobcenter | u25-move-out          |
//! | `MoveOutDecision`        | Jobcenter | Jugendamt | u25-move-out          |
//! | `QualificationReferral`  | Jobcenter | Jugendamt | qualification-measure |
//! | `ReferralResponse`       | Jugendamt | Jobcenter | qualification-measure |
//! | `ConsentNotice`, `ConsentWithdrawal` | any | any other | (carried by the consent itself) |

use crate::{clock, NodeError};
use kurzdraht_proto::v1::{
    message_body::Body, CertificationOutcome, DecisionOutcome, MessageBody, MessageKind,
    MoveOutGround, Purpose, ReferralOutcome, Subject,
};
use serde::Deserialize;
use time::Date;

/// An agency's role in the federation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Jobcenter,
    Jugendamt,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Jobcenter => "jobcenter",
            Role::Jugendamt => "jugendamt",
        }
    }
}

/// Both move-out and qualification flows are for people under this age on the message date.
pub const AGE_LIMIT: i32 = 25;
/// From this age a person gives consent personally; below it, a guardian does.
pub const CONSENT_AGE: i32 = 15;

/// The longest name (of a person, a caseworker, a measure), in characters.
pub const MAX_NAME: usize = 200;
/// The longest free text (a reason, a statement, a note), in characters.
pub const MAX_TEXT: usize = 2_000;

/// The purpose a kind of message serves; `None` for consent notices and withdrawals.
pub fn purpose_of(kind: MessageKind) -> Option<Purpose> {
    match kind {
        MessageKind::CertificationRequest
        | MessageKind::MoveOutCertification
        | MessageKind::MoveOutDecision => Some(Purpose::U25MoveOut),
        MessageKind::QualificationReferral | MessageKind::ReferralResponse => {
            Some(Purpose::QualificationMeasure)
        }
        MessageKind::ConsentNotice | MessageKind::ConsentWithdrawal | MessageKind::Unspecified => {
            None
        }
    }
}

/// The roles a kind travels between, `(sender, recipient)`; `None` for consent messages.
pub fn roles_for(kind: MessageKind) -> Option<(Role, Role)> {
    use Role::*;
    match kind {
        MessageKind::CertificationRequest
        | MessageKind::MoveOutDecision
        | MessageKind::QualificationReferral => Some((Jobcenter, Jugendamt)),
        MessageKind::MoveOutCertification | MessageKind::ReferralResponse => {
            Some((Jugendamt, Jobcenter))
        }
        _ => None,
    }
}

/// May an agency of role `sender` send `kind` to one of role `recipient`?
pub fn check_roles(kind: MessageKind, sender: Role, recipient: Role) -> Result<(), NodeError> {
    if kind == MessageKind::Unspecified {
        return Err(NodeError::invalid("kind", "is not a known message kind"));
    }
    let Some((from, to)) = roles_for(kind) else {
        return Ok(());
    };
    if sender != from {
        return Err(NodeError::PermissionDenied(format!(
            "only a {} may send {kind:?}; the sender is a {}",
            from.as_str(),
            sender.as_str()
        )));
    }
    if recipient != to {
        return Err(NodeError::PermissionDenied(format!(
            "{kind:?} goes to a {}; the recipient is a {}",
            to.as_str(),
            recipient.as_str()
        )));
    }
    Ok(())
}

/// Age in whole years on `on`.
pub fn age_on(date_of_birth: Date, on: Date) -> i32 {
    let mut age = on.year() - date_of_birth.year();
    if (on.month() as u8, on.day()) < (date_of_birth.month() as u8, date_of_birth.day()) {
        age -= 1;
    }
    age
}

/// The oldest a person in a record or a message may be, in years: a date of birth further
/// back is a typing error, not a person.
pub const MAX_AGE: i32 = 120;

/// A date of birth must lie on or before `on` (the day of the record or message) and not
/// more than [`MAX_AGE`] years before it. `on` is passed in: the caller knows which day
/// counts (the record's or the message's, read from the node's clock).
pub fn check_date_of_birth(field: &str, date_of_birth: Date, on: Date) -> Result<(), NodeError> {
    if date_of_birth > on {
        return Err(NodeError::invalid(
            field,
            format!("lies in the future (after {on})"),
        ));
    }
    if age_on(date_of_birth, on) > MAX_AGE {
        return Err(NodeError::invalid(
            field,
            format!("lies more than {MAX_AGE} years back"),
        ));
    }
    Ok(())
}

/// The U25 rule: the subject is under 25 on the message date (the German calendar date of
/// the message's creation, [`clock::german_date_of_ms`]). On the 25th birthday the person
/// is 25: refused. A person 25 or older is refused with its own reason (`over-age`), not
/// as a malformed field.
pub fn check_under_25(date_of_birth: Date, message_date: Date) -> Result<(), NodeError> {
    let field = "body.subject.date_of_birth";
    check_date_of_birth(field, date_of_birth, message_date)?;
    if age_on(date_of_birth, message_date) >= AGE_LIMIT {
        return Err(NodeError::OverAge {
            field: field.into(),
            reason: "the person is 25 or older on the message date; the U25 flows do not apply"
                .into(),
        });
    }
    Ok(())
}

/// A name (of a person, a caseworker, a measure, a place) or a reference: one line, no
/// control character at all, not even a line break.
pub(crate) fn required_name(field: &str, value: &str, max: usize) -> Result<(), NodeError> {
    not_blank(field, value)?;
    optional_name(field, value, max)
}

pub(crate) fn optional_name(field: &str, value: &str, max: usize) -> Result<(), NodeError> {
    within(field, value, max)?;
    if value
        .chars()
        .any(|c| c.is_control() || is_line_separator(c))
    {
        return Err(NodeError::invalid(
            field,
            "contains a control character or a line break (a name is one line)",
        ));
    }
    Ok(())
}

/// A free text (a reason, a statement, a note): line breaks allowed, no other control
/// character.
pub(crate) fn required_text(field: &str, value: &str, max: usize) -> Result<(), NodeError> {
    not_blank(field, value)?;
    optional_text(field, value, max)
}

pub(crate) fn optional_text(field: &str, value: &str, max: usize) -> Result<(), NodeError> {
    within(field, value, max)?;
    if value
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\r')
    {
        return Err(NodeError::invalid(
            field,
            "contains control characters (only line breaks are allowed)",
        ));
    }
    Ok(())
}

fn not_blank(field: &str, value: &str) -> Result<(), NodeError> {
    if value.trim().is_empty() {
        return Err(NodeError::invalid(field, "is required"));
    }
    Ok(())
}

fn within(field: &str, value: &str, max: usize) -> Result<(), NodeError> {
    if value.chars().count() > max {
        return Err(NodeError::invalid(
            field,
            format!("is longer than {max} characters"),
        ));
    }
    Ok(())
}

/// U+2028 and U+2029 break lines like a newline without being control characters.
fn is_line_separator(c: char) -> bool {
    matches!(c, '\u{2028}' | '\u{2029}')
}

fn optional_date(field: &str, value: &str) -> Result<(), NodeError> {
    if value.is_empty() {
        return Ok(());
    }
    clock::parse_date(field, value).map(|_| ())
}

fn known_enum<E: TryFrom<i32>>(field: &str, value: i32) -> Result<(), NodeError> {
    if value == 0 || E::try_from(value).is_err() {
        return Err(NodeError::invalid(field, "is unspecified or unknown"));
    }
    Ok(())
}

/// Checks a subject's fields and returns the date of birth.
pub fn validate_subject(prefix: &str, subject: Option<&Subject>) -> Result<Date, NodeError> {
    let s = subject.ok_or_else(|| NodeError::invalid(prefix, "is required"))?;
    required_name(&format!("{prefix}.given_name"), &s.given_name, MAX_NAME)?;
    required_name(&format!("{prefix}.family_name"), &s.family_name, MAX_NAME)?;
    let dob = clock::parse_date(&format!("{prefix}.date_of_birth"), &s.date_of_birth)?;
    if let Some(a) = &s.address {
        optional_name(&format!("{prefix}.address.street"), &a.street, MAX_NAME)?;
        optional_name(&format!("{prefix}.address.postal_code"), &a.postal_code, 16)?;
        optional_name(&format!("{prefix}.address.city"), &a.city, MAX_NAME)?;
    }
    if s.case_references.len() > 8 {
        return Err(NodeError::invalid(
            format!("{prefix}.case_references"),
            "has more than 8 entries",
        ));
    }
    for (i, r) in s.case_references.iter().enumerate() {
        required_name(
            &format!("{prefix}.case_references[{i}].agency"),
            &r.agency,
            64,
        )?;
        required_name(
            &format!("{prefix}.case_references[{i}].reference"),
            &r.reference,
            64,
        )?;
    }
    Ok(dob)
}

/// Checks the fields of a case message body (not consent messages) and returns the subject.
pub fn validate_case_body(body: &MessageBody) -> Result<&Subject, NodeError> {
    let Some(b) = &body.body else {
        return Err(NodeError::invalid("body", "is required"));
    };
    match b {
        Body::CertificationRequest(m) => {
            validate_subject("body.subject", m.subject.as_ref())?;
            required_text("body.reason", &m.reason, MAX_TEXT)?;
            optional_date("body.respond_by", &m.respond_by)?;
            required_name("body.caseworker", &m.caseworker, MAX_NAME)?;
        }
        Body::MoveOutCertification(m) => {
            validate_subject("body.subject", m.subject.as_ref())?;
            known_enum::<CertificationOutcome>("body.outcome", m.outcome)?;
            // A supported move-out names its ground; otherwise a ground is optional.
            if m.outcome == CertificationOutcome::Supported as i32 || m.ground != 0 {
                known_enum::<MoveOutGround>("body.ground", m.ground)?;
            }
            required_text("body.statement", &m.statement, MAX_TEXT)?;
            clock::parse_date("body.interview_date", &m.interview_date)?;
            required_name("body.issuing_caseworker", &m.issuing_caseworker, MAX_NAME)?;
            optional_text("body.health_note", &m.health_note, MAX_TEXT)?;
        }
        Body::MoveOutDecision(m) => {
            validate_subject("body.subject", m.subject.as_ref())?;
            known_enum::<DecisionOutcome>("body.outcome", m.outcome)?;
            if m.ground != 0 {
                known_enum::<MoveOutGround>("body.ground", m.ground)?;
            }
            clock::parse_date("body.decision_date", &m.decision_date)?;
            optional_date("body.tenancy_contract_date", &m.tenancy_contract_date)?;
            required_name("body.caseworker", &m.caseworker, MAX_NAME)?;
        }
        Body::QualificationReferral(m) => {
            validate_subject("body.subject", m.subject.as_ref())?;
            required_text("body.reason", &m.reason, MAX_TEXT)?;
            required_name("body.measure", &m.measure, MAX_NAME)?;
            required_name("body.contact", &m.contact, MAX_NAME)?;
            optional_date("body.respond_by", &m.respond_by)?;
        }
        Body::ReferralResponse(m) => {
            validate_subject("body.subject", m.subject.as_ref())?;
            known_enum::<ReferralOutcome>("body.outcome", m.outcome)?;
            optional_text("body.note", &m.note, MAX_TEXT)?;
            required_name("body.caseworker", &m.caseworker, MAX_NAME)?;
        }
        Body::ConsentNotice(_) | Body::ConsentWithdrawal(_) => {
            return Err(NodeError::invalid(
                "body",
                "consent notices and withdrawals are made by RecordConsent and WithdrawConsent",
            ))
        }
    }
    kurzdraht_envelope::body::subject_of(body)
        .ok_or_else(|| NodeError::invalid("body.subject", "is required"))
}

/// Everything the policy says about one case message: roles, fields, and the U25 rule on
/// the message date: the German calendar date (Europe/Berlin) of `created_at_ms`. Returns
/// the subject the consent must cover.
pub fn admit_case_message(
    kind: MessageKind,
    sender: Role,
    recipient: Role,
    body: &MessageBody,
    created_at_ms: i64,
) -> Result<&Subject, NodeError> {
    check_roles(kind, sender, recipient)?;
    let subject = validate_case_body(body)?;
    let dob = clock::parse_date("body.subject.date_of_birth", &subject.date_of_birth)?;
    check_under_25(dob, clock::german_date_of_ms(created_at_ms)?)?;
    Ok(subject)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use time::Month;

    const ALL_KINDS: [MessageKind; 7] = [
        MessageKind::CertificationRequest,
        MessageKind::MoveOutCertification,
        MessageKind::MoveOutDecision,
        MessageKind::QualificationReferral,
        MessageKind::ReferralResponse,
        MessageKind::ConsentNotice,
        MessageKind::ConsentWithdrawal,
    ];

    #[test]
    fn role_table_is_exhaustive() {
        use Role::*;
        for kind in ALL_KINDS {
            for sender in [Jobcenter, Jugendamt] {
                for recipient in [Jobcenter, Jugendamt] {
                    let allowed = match kind {
                        MessageKind::CertificationRequest
                        | MessageKind::MoveOutDecision
                        | MessageKind::QualificationReferral => {
                            sender == Jobcenter && recipient == Jugendamt
                        }
                        MessageKind::MoveOutCertification | MessageKind::ReferralResponse => {
                            sender == Jugendamt && recipient == Jobcenter
                        }
                        _ => true,
                    };
                    let got = check_roles(kind, sender, recipient);
                    assert_eq!(got.is_ok(), allowed, "{kind:?} {sender:?}->{recipient:?}");
                    if let Err(e) = got {
                        assert!(matches!(e, NodeError::PermissionDenied(_)));
                    }
                }
            }
        }
        assert!(check_roles(MessageKind::Unspecified, Jobcenter, Jugendamt).is_err());
    }

    #[test]
    fn purposes() {
        assert_eq!(
            purpose_of(MessageKind::MoveOutDecision),
            Some(Purpose::U25MoveOut)
        );
        assert_eq!(
            purpose_of(MessageKind::ReferralResponse),
            Some(Purpose::QualificationMeasure)
        );
        assert_eq!(purpose_of(MessageKind::ConsentNotice), None);
    }

    fn date(y: i32, m: u8, d: u8) -> Date {
        Date::from_calendar_date(y, Month::try_from(m).expect("test"), d).expect("test")
    }

    #[test]
    fn u25_boundary() {
        let dob = date(2001, 6, 15);
        assert!(check_under_25(dob, date(2026, 6, 14)).is_ok());
        assert!(
            check_under_25(dob, date(2026, 6, 15)).is_err(),
            "25th birthday"
        );
        assert!(
            check_under_25(dob, date(2000, 1, 1)).is_err(),
            "born after the message"
        );
        // leap day birthdays turn 25 on 1 March in common years
        let leap = date(2004, 2, 29);
        assert!(check_under_25(leap, date(2029, 2, 28)).is_ok());
        assert!(check_under_25(leap, date(2029, 3, 1)).is_err());
    }

    /// A message body about a person born on `dob`, for `admit_case_message`.
    fn request_about(dob: &str) -> MessageBody {
        MessageBody {
            body: Some(Body::CertificationRequest(
                kurzdraht_proto::v1::CertificationRequest {
                    subject: Some(Subject {
                        given_name: "Lena".into(),
                        family_name: "Hansen".into(),
                        date_of_birth: dob.into(),
                        ..Default::default()
                    }),
                    reason: "Antrag auf Zusicherung".into(),
                    respond_by: String::new(),
                    caseworker: "Herr Jensen".into(),
                },
            )),
        }
    }

    fn ms_of(rfc3339: &str) -> i64 {
        let t =
            time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
                .expect("test");
        (t.unix_timestamp_nanos() / 1_000_000) as i64
    }

    /// The German date decides: a message created at 23:30 UTC on the eve of the 25th
    /// birthday is created on the birthday in Germany (00:30 CET / 01:30 CEST) and refused;
    /// one created a millisecond before German midnight is admitted.
    #[test]
    fn the_u25_rule_takes_the_german_date_of_the_message() {
        let admit = |dob: &str, at: &str| {
            admit_case_message(
                MessageKind::CertificationRequest,
                Role::Jobcenter,
                Role::Jugendamt,
                &request_about(dob),
                ms_of(at),
            )
            .map(|_| ())
        };
        // winter (CET, UTC+1): German midnight is 23:00 UTC
        assert!(admit("2001-03-10", "2026-03-09T22:59:59.999Z").is_ok());
        let e = admit("2001-03-10", "2026-03-09T23:00:00Z").unwrap_err();
        assert_eq!(e.reason_code(), "over-age");
        // summer (CEST, UTC+2): German midnight is 22:00 UTC
        assert!(admit("2001-06-15", "2026-06-14T21:59:59.999Z").is_ok());
        let e = admit("2001-06-15", "2026-06-14T22:00:00Z").unwrap_err();
        assert_eq!(e.reason_code(), "over-age");
        // the whole birthday in Germany is refused, up to its last millisecond
        let e = admit("2001-06-15", "2026-06-15T21:59:59.999Z").unwrap_err();
        assert_eq!(e.reason_code(), "over-age");
        // born "tomorrow" by the UTC date, but today in Germany: a valid date of birth
        assert!(admit("2026-06-15", "2026-06-14T22:30:00Z").is_ok());
        let e = admit("2026-06-15", "2026-06-14T21:30:00Z").unwrap_err();
        assert_eq!(e.reason_code(), "invalid-argument");
    }

    #[test]
    fn dates_of_birth_lie_in_the_past_and_at_most_120_years_back() {
        let today = date(2026, 3, 10);
        let f = "subject.date_of_birth";
        assert!(check_date_of_birth(f, today, today).is_ok(), "born today");
        assert!(
            check_date_of_birth(f, date(2026, 3, 11), today).is_err(),
            "tomorrow"
        );
        assert!(check_date_of_birth(f, date(2100, 1, 1), today).is_err());
        assert!(
            check_date_of_birth(f, date(1905, 3, 11), today).is_ok(),
            "120, 121 tomorrow"
        );
        assert!(
            check_date_of_birth(f, date(1905, 3, 10), today).is_err(),
            "121 today"
        );
        assert!(check_date_of_birth(f, date(1800, 1, 1), today).is_err());
        let Err(NodeError::Invalid { field, .. }) = check_date_of_birth(f, date(1800, 1, 1), today)
        else {
            panic!("not an invalid argument");
        };
        assert_eq!(field, f);
        // The U25 rule refuses the older person with its own reason, not as a bad field.
        let e = check_under_25(date(2001, 3, 10), today).unwrap_err();
        assert_eq!(e.reason_code(), "over-age");
        let e = check_under_25(date(2026, 3, 11), today).unwrap_err();
        assert_eq!(e.reason_code(), "invalid-argument");
    }

    #[test]
    fn names_are_one_line_texts_may_break_lines() {
        for bad in [
            "Lena\nMarie",
            "Lena\r",
            "Le\u{0}na",
            "Lena\t",
            "Lena\u{2028}Marie",
            "Le\u{85}na",
        ] {
            assert!(required_name("n", bad, MAX_NAME).is_err(), "{bad:?}");
            assert!(optional_name("n", bad, MAX_NAME).is_err(), "{bad:?}");
        }
        assert!(required_name("n", "Lena-Marie Ölsen", MAX_NAME).is_ok());
        assert!(required_text("t", "Erste Zeile\r\nZweite Zeile\n", MAX_TEXT).is_ok());
        for bad in ["a\u{0}b", "a\tb", "a\u{1b}b"] {
            assert!(required_text("t", bad, MAX_TEXT).is_err(), "{bad:?}");
        }
    }

    /// The age on `on` counted the long way: one year for every birthday from `dob` up to
    /// `on`, each birthday found with `time`'s calendar (`replace_year`). Someone born on
    /// 29 February has the birthday on 1 March in a common year: the day after 28 February.
    fn age_by_counting_birthdays(dob: Date, on: Date) -> i32 {
        let birthday = |year: i32| {
            dob.replace_year(year).unwrap_or_else(|_| {
                date(year, 2, 28)
                    .next_day()
                    .expect("the day after 28 February")
            })
        };
        let mut age = 0;
        while birthday(dob.year() + age + 1) <= on {
            age += 1;
        }
        age
    }

    #[test]
    fn the_counting_oracle_on_leap_day_births() {
        let leap = date(2004, 2, 29);
        assert_eq!(age_by_counting_birthdays(leap, date(2005, 2, 28)), 0);
        assert_eq!(age_by_counting_birthdays(leap, date(2005, 3, 1)), 1);
        assert_eq!(age_by_counting_birthdays(leap, date(2008, 2, 28)), 3);
        assert_eq!(age_by_counting_birthdays(leap, date(2008, 2, 29)), 4);
    }

    /// Every 29 February birth from 1904 to 2028, on every day from two before to two
    /// after each of its first 100 birthdays (in leap and in common years).
    #[test]
    fn leap_day_births_around_every_birthday() {
        for year in (1904..=2028).step_by(4) {
            let dob = date(year, 2, 29);
            for years in 0..=100 {
                for shift in -2..=2 {
                    let day = date(year + years, 2, 28) + time::Duration::days(1 + shift);
                    if day < dob {
                        continue;
                    }
                    let age = age_on(dob, day);
                    assert_eq!(
                        age,
                        age_by_counting_birthdays(dob, day),
                        "born {dob} on {day}"
                    );
                    assert_eq!(check_under_25(dob, day).is_ok(), age < 25, "on {day}");
                }
            }
        }
    }

    /// Any date of birth from 1900 to 2030, one case in four a 29 February.
    fn date_of_birth() -> impl Strategy<Value = Date> {
        let first = date(1900, 1, 1).to_julian_day();
        let last = date(2030, 12, 31).to_julian_day();
        prop_oneof![
            3 => (first..=last).prop_map(|d| Date::from_julian_day(d).expect("in range")),
            // 1904..=2028, every fourth year, are all leap years (2000 included)
            1 => (476i32..=507).prop_map(|k| date(4 * k, 2, 29)),
        ]
    }

    proptest! {
        #[test]
        fn age_matches_year_arithmetic(dob in date_of_birth(), add_days in 0i64..40_000) {
            let on = dob + time::Duration::days(add_days);
            let age = age_on(dob, on);
            prop_assert_eq!(age, age_by_counting_birthdays(dob, on), "born {} on {}", dob, on);
            prop_assert_eq!(check_under_25(dob, on).is_ok(), age < 25);
        }

        /// The same on the days around a birthday, where an off-by-one day would show.
        #[test]
        fn age_matches_around_birthdays(dob in date_of_birth(), years in 0i32..=100,
                                        shift in -2i64..=2) {
            // the day in the birthday's month of that year, e.g. 29 February of a common
            // year is 1 March
            let day = date(dob.year() + years, dob.month() as u8, 1)
                + time::Duration::days(i64::from(dob.day()) - 1 + shift);
            prop_assume!(day >= dob);
            let age = age_on(dob, day);
            prop_assert_eq!(age, age_by_counting_birthdays(dob, day), "born {} on {}", dob, day);
            prop_assert_eq!(check_under_25(dob, day).is_ok(), age < 25);
        }
    }
}
