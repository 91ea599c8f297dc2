//! Antworten: the answer to a received message — an Anfrage is answered by a Stellungnahme,
//! a Stellungnahme by an Entscheidung, a Zuweisung by an Antwort — as the form of
//! [`super::send`], prefilled from the message it answers: the young person, the consent
//! it was sent under, `in_reply_to`, and its sender as the recipient. Sent by the same POST.

use super::send::{self, SendForm};
use crate::app::Console;
use crate::signed_in::{SignedIn, CASEWORK};
use crate::ConsoleError;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use kurzdraht_node::policy;
use kurzdraht_proto::v1::{InboxItem, MessageKind};

/// The kind that answers `kind`, if it has one.
pub fn answer_of(kind: MessageKind) -> Option<MessageKind> {
    match kind {
        MessageKind::CertificationRequest => Some(MessageKind::MoveOutCertification),
        MessageKind::MoveOutCertification => Some(MessageKind::MoveOutDecision),
        MessageKind::QualificationReferral => Some(MessageKind::ReferralResponse),
        _ => None,
    }
}

/// The path of the answer form of `item`, when this office answers it (the policy lets
/// this office's role send the answering kind, and the body is still held).
pub fn reply_href(console: &Console, item: &InboxItem) -> Option<String> {
    let kind = MessageKind::try_from(item.kind).ok()?;
    let answer = answer_of(kind)?;
    let role = console.node.directory().get(console.node.agency())?.role;
    let (from, _) = policy::roles_for(answer)?;
    (from == role && item.body.is_some() && item.notice.is_none())
        .then(|| format!("/nachricht/{}/antworten", item.message_id))
}

/// `GET /nachricht/{id}/antworten`: the answer's form, prefilled.
pub async fn form(
    State(console): State<Console>,
    signed_in: SignedIn,
    Path(id): Path<String>,
) -> Result<Response, ConsoleError> {
    signed_in.require(CASEWORK, "Antworten")?;
    let item = console.node.inbox().open(&id, &signed_in.client())?;
    if reply_href(&console, &item).is_none() {
        return Err(ConsoleError::NotFound(format!("answer to {id}")));
    }
    let answer = MessageKind::try_from(item.kind)
        .ok()
        .and_then(answer_of)
        .ok_or_else(|| ConsoleError::NotFound(format!("answer to {id}")))?;
    let to = policy::roles_for(answer)
        .map(|(_, to)| to)
        .ok_or_else(|| ConsoleError::NotFound(format!("answer to {id}")))?;
    let mut prefilled = SendForm {
        art: crate::view::kind_slug(answer).to_string(),
        antwort_auf: item.message_id.clone(),
        empfaenger: item.sender.clone(),
        einwilligung: item.consent_id.clone(),
        ..Default::default()
    };
    if let Some(s) = super::inbox::subject_of(&item) {
        prefilled.vorname = s.given_name.clone();
        prefilled.nachname = s.family_name.clone();
        prefilled.geburtsdatum = s.date_of_birth.clone();
        if let Some(a) = &s.address {
            prefilled.strasse = a.street.clone();
            prefilled.plz = a.postal_code.clone();
            prefilled.ort = a.city.clone();
        }
    }
    let view = send::form_view(&console, &signed_in, answer, to, prefilled, None, None)?;
    send::render(&console, &signed_in, Some(view), StatusCode::OK)
}
