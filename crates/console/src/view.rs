//! What the templates show: the frame around every page (office, signed-in account,
//! navigation), the pages' models, and the German words for the protocol's values (kinds,
//! purposes, dates in German time).

use askama::Template;
use kurzdraht_node::directory::Directory;
use kurzdraht_proto::v1::message_body::Body;
use kurzdraht_proto::v1::{
    CertificationOutcome, DecisionOutcome, InboxItem, MessageKind, Purpose, ReferralOutcome,
    Subject,
};
use time::{Date, Month, OffsetDateTime, UtcOffset};

/// The signed-in account as the frame shows it.
#[derive(Debug, Clone)]
pub struct FrameAccount {
    pub display_name: String,
    pub role_label: &'static str,
}

#[derive(Debug, Clone)]
pub struct NavItem {
    pub href: &'static str,
    pub label: &'static str,
    pub current: bool,
}

/// The frame of every page.
#[derive(Debug, Clone)]
pub struct Frame {
    /// The office's name from the directory.
    pub office: String,
    pub account: Option<FrameAccount>,
    pub nav: Vec<NavItem>,
    /// The session's CSRF token, for the sign-out form and the page's forms.
    pub csrf: String,
}

impl Frame {
    /// The frame of a page shown before sign-in.
    pub fn anonymous(office: &str) -> Self {
        Self {
            office: office.to_string(),
            account: None,
            nav: vec![],
            csrf: String::new(),
        }
    }
}

#[derive(Template)]
#[template(path = "error.html")]
pub struct ErrorPage {
    pub frame: Frame,
    pub title: String,
    pub what: String,
    pub next: String,
}

impl ErrorPage {
    pub fn new(title: &str, what: &str, next: &str) -> Self {
        Self {
            frame: Frame::anonymous(""),
            title: title.into(),
            what: what.into(),
            next: next.into(),
        }
    }
}

/// The German name of a message kind.
pub fn kind_label(kind: i32) -> &'static str {
    match MessageKind::try_from(kind).unwrap_or(MessageKind::Unspecified) {
        MessageKind::CertificationRequest => "Anfrage zur Bescheinigung (Auszug U25)",
        MessageKind::MoveOutCertification => "Stellungnahme des Jugendamts (Auszug U25)",
        MessageKind::MoveOutDecision => "Entscheidung über die Zusicherung (Auszug U25)",
        MessageKind::QualificationReferral => "Zuweisung in eine Qualifizierungsmaßnahme",
        MessageKind::ReferralResponse => "Antwort auf eine Zuweisung",
        MessageKind::ConsentNotice => "Einwilligung (Mitteilung)",
        MessageKind::ConsentWithdrawal => "Widerruf einer Einwilligung",
        MessageKind::Unspecified => "Unbekannte Nachrichtenart",
    }
}

/// The kinds a person can filter the Posteingang by: (value in the URL, label).
pub fn kind_choices() -> Vec<(&'static str, &'static str)> {
    [
        MessageKind::CertificationRequest,
        MessageKind::MoveOutCertification,
        MessageKind::MoveOutDecision,
        MessageKind::QualificationReferral,
        MessageKind::ReferralResponse,
        MessageKind::ConsentNotice,
        MessageKind::ConsentWithdrawal,
    ]
    .into_iter()
    .map(|k| (kind_slug(k), kind_label(k as i32)))
    .collect()
}

/// A kind's name in URLs.
pub fn kind_slug(kind: MessageKind) -> &'static str {
    match kind {
        MessageKind::CertificationRequest => "anfrage",
        MessageKind::MoveOutCertification => "stellungnahme",
        MessageKind::MoveOutDecision => "entscheidung",
        MessageKind::QualificationReferral => "zuweisung",
        MessageKind::ReferralResponse => "zuweisungsantwort",
        MessageKind::ConsentNotice => "einwilligung",
        MessageKind::ConsentWithdrawal => "widerruf",
        MessageKind::Unspecified => "",
    }
}

/// The kind of a URL's name.
pub fn kind_of_slug(slug: &str) -> Option<MessageKind> {
    (1..=7)
        .filter_map(|k| MessageKind::try_from(k).ok())
        .find(|k| kind_slug(*k) == slug)
}

/// The offset of German time at `utc` (the node's rule: [`kurzdraht_node::clock`]).
pub fn german_offset(utc: OffsetDateTime) -> UtcOffset {
    let hours = if kurzdraht_node::clock::german_summer_time(utc) {
        2
    } else {
        1
    };
    UtcOffset::from_hms(hours, 0, 0).unwrap_or(UtcOffset::UTC)
}

/// `ms` since the epoch as German date and time, `29.11.2026, 19:05`.
pub fn german_datetime(ms: i64) -> String {
    let Ok(utc) = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000) else {
        return String::from("–");
    };
    let t = utc.to_offset(german_offset(utc));
    format!(
        "{:02}.{:02}.{}, {:02}:{:02}",
        t.day(),
        u8::from(t.month()),
        t.year(),
        t.hour(),
        t.minute()
    )
}

/// An ISO date (`2026-12-24`) as a German date (`24.12.2026`); other text as it is.
pub fn german_date(iso: &str) -> String {
    let parts: Vec<&str> = iso.split('-').collect();
    match parts.as_slice() {
        [y, m, d] if y.len() == 4 && m.len() == 2 && d.len() == 2 => format!("{d}.{m}.{y}"),
        _ => iso.to_string(),
    }
}

/// A date as a person types it — `TT.MM.JJJJ` (also `T.M.JJJJ`) or `JJJJ-MM-TT` — as an
/// ISO date, if it is one.
pub fn parse_date(text: &str) -> Option<String> {
    let text = text.trim();
    let (y, m, d) = if let Some((d, rest)) = text.split_once('.') {
        let (m, y) = rest.split_once('.')?;
        (y, m, d)
    } else {
        let mut parts = text.splitn(3, '-');
        (parts.next()?, parts.next()?, parts.next()?)
    };
    let number = |s: &str, len: std::ops::RangeInclusive<usize>| {
        (len.contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u32>().ok())
            .flatten()
    };
    let (y, m, d) = (number(y, 4..=4)?, number(m, 1..=2)?, number(d, 1..=2)?);
    let month = Month::try_from(u8::try_from(m).ok()?).ok()?;
    let date =
        Date::from_calendar_date(i32::try_from(y).ok()?, month, u8::try_from(d).ok()?).ok()?;
    Some(format!(
        "{:04}-{:02}-{:02}",
        date.year(),
        u8::from(date.month()),
        date.day()
    ))
}

/// The German name of a consent's state.
pub fn consent_state_label(state: i32) -> &'static str {
    use kurzdraht_proto::v1::ConsentState as S;
    match S::try_from(state).unwrap_or(S::Unspecified) {
        S::ConsentInForce => "gültig",
        S::ConsentNotYetValid => "noch nicht gültig",
        S::ConsentExpired => "abgelaufen",
        S::ConsentWithdrawn => "widerrufen",
        S::ConsentSuperseded => "durch eine neuere ersetzt",
        S::Unspecified => "–",
    }
}

/// The German name of a sent message's delivery state.
pub fn delivery_state_label(state: i32) -> &'static str {
    use kurzdraht_proto::v1::DeliveryState as S;
    match S::try_from(state).unwrap_or(S::Unspecified) {
        S::Queued => "wartet auf Zustellung",
        S::Delivered => "zugestellt (Empfang bestätigt)",
        S::Refused => "nicht gesendet: Einwilligung galt nicht mehr",
        S::Rejected => "von der Empfängerin abgelehnt",
        S::Expired => "nicht zugestellt (Frist abgelaufen)",
        S::Unspecified => "–",
    }
}

/// An agency's name as the directory gives it, else its id.
pub fn agency_name(directory: &Directory, id: &str) -> String {
    directory
        .get(id)
        .map(|a| a.name.clone())
        .unwrap_or_else(|| id.to_string())
}

/// Agencies' names, comma-separated.
pub fn agency_names(directory: &Directory, ids: &[String]) -> String {
    ids.iter()
        .map(|id| agency_name(directory, id))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Purposes in German, semicolon-separated.
pub fn purposes_text(purposes: &[i32]) -> String {
    purposes
        .iter()
        .map(|p| purpose_label(*p))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The German name of a purpose.
pub fn purpose_label(purpose: i32) -> &'static str {
    match Purpose::try_from(purpose).unwrap_or(Purpose::Unspecified) {
        Purpose::U25MoveOut => "Auszug unter 25 (§ 22 Abs. 5 SGB II)",
        Purpose::QualificationMeasure => "Qualifizierungsmaßnahme",
        Purpose::Unspecified => "–",
    }
}

fn subject_fields(out: &mut Vec<(&'static str, String)>, s: Option<&Subject>) {
    let Some(s) = s else { return };
    out.push((
        "Junge Person",
        format!("{} {}", s.given_name, s.family_name),
    ));
    out.push(("Geburtsdatum", german_date(&s.date_of_birth)));
    if let Some(a) = &s.address {
        out.push((
            "Anschrift",
            format!("{}, {} {}", a.street, a.postal_code, a.city),
        ));
    }
}

fn push(out: &mut Vec<(&'static str, String)>, label: &'static str, value: &str) {
    if !value.is_empty() {
        out.push((label, value.to_string()));
    }
}

/// The fields of a received message as label and value, in German, for its page.
pub fn body_fields(item: &InboxItem) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if let Some(n) = &item.notice {
        push(&mut out, "Nicht zugestellte Nachricht", &n.message_id);
        push(&mut out, "Empfängerin", &n.recipient);
        return out;
    }
    let Some(body) = item.body.as_ref().and_then(|b| b.body.as_ref()) else {
        out.push((
            "Inhalt",
            "Der Inhalt wurde gelöscht (Aufbewahrungsfrist oder Löschung).".into(),
        ));
        return out;
    };
    match body {
        Body::CertificationRequest(m) => {
            subject_fields(&mut out, m.subject.as_ref());
            push(&mut out, "Anlass", &m.reason);
            push(&mut out, "Antwort erbeten bis", &german_date(&m.respond_by));
            push(&mut out, "Sachbearbeitung", &m.caseworker);
        }
        Body::MoveOutCertification(m) => {
            subject_fields(&mut out, m.subject.as_ref());
            push(&mut out, "Ergebnis", certification_outcome(m.outcome));
            push(&mut out, "Stellungnahme", &m.statement);
            push(&mut out, "Gespräch am", &german_date(&m.interview_date));
            push(&mut out, "Ausgestellt von", &m.issuing_caseworker);
            push(&mut out, "Hinweis zur Gesundheit", &m.health_note);
        }
        Body::MoveOutDecision(m) => {
            subject_fields(&mut out, m.subject.as_ref());
            push(&mut out, "Entscheidung", decision_outcome(m.outcome));
            push(&mut out, "Entschieden am", &german_date(&m.decision_date));
            push(
                &mut out,
                "Mietvertrag vom",
                &german_date(&m.tenancy_contract_date),
            );
            push(&mut out, "Sachbearbeitung", &m.caseworker);
        }
        Body::QualificationReferral(m) => {
            subject_fields(&mut out, m.subject.as_ref());
            push(&mut out, "Anlass", &m.reason);
            push(&mut out, "Maßnahme", &m.measure);
            push(&mut out, "Kontakt", &m.contact);
            push(&mut out, "Antwort erbeten bis", &german_date(&m.respond_by));
        }
        Body::ReferralResponse(m) => {
            subject_fields(&mut out, m.subject.as_ref());
            push(&mut out, "Antwort", referral_outcome(m.outcome));
            push(&mut out, "Hinweis", &m.note);
            push(&mut out, "Sachbearbeitung", &m.caseworker);
        }
        Body::ConsentNotice(m) => {
            if let Some(c) = &m.consent {
                subject_fields(&mut out, c.subject.as_ref());
                let purposes: Vec<&str> = c.purposes.iter().map(|p| purpose_label(*p)).collect();
                push(&mut out, "Zwecke", &purposes.join("; "));
                push(&mut out, "Gültig ab", &german_datetime(c.valid_from_ms));
                push(&mut out, "Gültig bis", &german_datetime(c.valid_until_ms));
                push(&mut out, "Erfasst von", &c.recorded_by);
            }
        }
        Body::ConsentWithdrawal(m) => {
            if let Some(w) = &m.withdrawal {
                push(&mut out, "Einwilligung", &w.consent_id);
                push(
                    &mut out,
                    "Widerrufen am",
                    &german_datetime(w.withdrawn_at_ms),
                );
                push(&mut out, "Art des Widerrufs", &w.manner);
            }
        }
    }
    push(&mut out, "Einwilligung (Kennung)", &item.consent_id);
    out
}

fn certification_outcome(o: i32) -> &'static str {
    match CertificationOutcome::try_from(o).unwrap_or(CertificationOutcome::Unspecified) {
        CertificationOutcome::Supported => "Auszug befürwortet",
        CertificationOutcome::NotSupported => "Auszug nicht befürwortet",
        CertificationOutcome::NotCompetentForwarded => "Nicht zuständig, weitergeleitet",
        CertificationOutcome::Unspecified => "–",
    }
}

fn decision_outcome(o: i32) -> &'static str {
    match DecisionOutcome::try_from(o).unwrap_or(DecisionOutcome::Unspecified) {
        DecisionOutcome::AssuranceGranted => "Zusicherung erteilt",
        DecisionOutcome::AssuranceRefused => "Zusicherung abgelehnt",
        DecisionOutcome::AssuranceWaived => "Zusicherung nicht erforderlich",
        DecisionOutcome::Unspecified => "–",
    }
}

fn referral_outcome(o: i32) -> &'static str {
    match ReferralOutcome::try_from(o).unwrap_or(ReferralOutcome::Unspecified) {
        ReferralOutcome::Accepted => "Angenommen",
        ReferralOutcome::Declined => "Abgelehnt",
        ReferralOutcome::InProgress => "In Bearbeitung",
        ReferralOutcome::Finished => "Abgeschlossen",
        ReferralOutcome::Unspecified => "–",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(y: i32, m: Month, d: u8, h: u8, min: u8) -> i64 {
        let t = Date::from_calendar_date(y, m, d)
            .and_then(|d| d.with_hms(h, min, 0))
            .expect("test")
            .assume_utc();
        (t.unix_timestamp_nanos() / 1_000_000) as i64
    }

    #[test]
    fn german_time_switches_on_the_last_sundays_at_one_utc() {
        // 2026: summer time from 29 March 01:00 UTC to 25 October 01:00 UTC;
        // 2025: from 30 March to 26 October
        let cases = [
            ((2026, Month::March, 29, 0, 59), "29.03.2026, 01:59"),
            ((2026, Month::March, 29, 1, 0), "29.03.2026, 03:00"),
            ((2026, Month::October, 25, 0, 59), "25.10.2026, 02:59"),
            ((2026, Month::October, 25, 1, 0), "25.10.2026, 02:00"),
            ((2026, Month::November, 29, 18, 5), "29.11.2026, 19:05"),
            ((2027, Month::July, 1, 22, 30), "02.07.2027, 00:30"),
            ((2025, Month::March, 30, 1, 0), "30.03.2025, 03:00"),
            ((2025, Month::October, 26, 0, 0), "26.10.2025, 02:00"),
        ];
        for ((y, mo, d, h, mi), want) in cases {
            assert_eq!(german_datetime(ms(y, mo, d, h, mi)), want);
        }
    }

    #[test]
    fn kinds_have_german_names_and_slugs_both_ways() {
        for (slug, label) in kind_choices() {
            let kind = kind_of_slug(slug).expect("slug");
            assert_eq!(kind_label(kind as i32), label);
            assert!(!label.is_empty() && !slug.is_empty());
        }
        assert_eq!(kind_choices().len(), 7);
        assert_eq!(kind_of_slug(""), None);
        assert_eq!(kind_of_slug("x"), None);
        assert_eq!(kind_label(99), "Unbekannte Nachrichtenart");
    }

    #[test]
    fn typed_dates() {
        assert_eq!(parse_date("12.04.2005").as_deref(), Some("2005-04-12"));
        assert_eq!(parse_date(" 1.4.2005 ").as_deref(), Some("2005-04-01"));
        assert_eq!(parse_date("2005-04-12").as_deref(), Some("2005-04-12"));
        for bad in [
            "",
            "12.04.05",
            "31.02.2005",
            "12/04/2005",
            "2005-13-01",
            "a.b.cdef",
            "12.04.2005.1",
        ] {
            assert_eq!(parse_date(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn dates() {
        assert_eq!(german_date("2026-12-24"), "24.12.2026");
        assert_eq!(german_date(""), "");
        assert_eq!(german_date("bald"), "bald");
    }
}
