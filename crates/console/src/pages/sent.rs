//! Gesendete Nachricht (`/gesendet/{id}`): where a message this office sent is — in the
//! queue, delivered with the receiver's signed receipt (its time), refused or rejected with
//! the reason explained in German, or expired — and the consent it was sent under.

use super::html;
use crate::app::Console;
use crate::refusal::{self, Explanation};
use crate::signed_in::{SignedIn, CASEWORK};
use crate::view::{self, Frame};
use crate::ConsoleError;
use askama::Template;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use kurzdraht_proto::v1::DeliveryState;

#[derive(Template)]
#[template(path = "sent.html")]
struct SentPage {
    frame: Frame,
    message_id: String,
    kind: &'static str,
    recipient: String,
    submitted: String,
    state: &'static str,
    /// When the receipt says it arrived.
    delivered: Option<String>,
    reason: Option<Explanation>,
    attempts: u32,
    consent_id: String,
}

/// The German name of a delivery state.
fn state_label(state: i32) -> &'static str {
    match DeliveryState::try_from(state).unwrap_or(DeliveryState::Unspecified) {
        DeliveryState::Queued => "In der Warteschlange",
        DeliveryState::Delivered => "Zugestellt mit Empfangsbestätigung",
        DeliveryState::Refused => "Nicht gesendet (abgelehnt)",
        DeliveryState::Rejected => "Von der Empfängerin abgelehnt",
        DeliveryState::Expired => "Abgelaufen – nicht rechtzeitig zugestellt",
        DeliveryState::Unspecified => "Unbekannt",
    }
}

/// The time in a signed receipt.
fn receipt_time(receipt: &kurzdraht_proto::v1::SignedReceipt) -> Option<i64> {
    use prost::Message;
    kurzdraht_proto::v1::Receipt::decode(receipt.receipt.as_slice())
        .ok()
        .map(|r| r.received_at_ms)
}

/// `GET /gesendet/{id}`: where a sent message is.
pub async fn show(
    State(console): State<Console>,
    signed_in: SignedIn,
    Path(id): Path<String>,
) -> Result<Response, ConsoleError> {
    signed_in.require(CASEWORK, "Gesendete Nachricht")?;
    let status = console.node.submission().status(&id)?;
    let recipient = console
        .node
        .directory()
        .get(&status.recipient)
        .map(|a| a.name.clone())
        .unwrap_or_else(|| status.recipient.clone());
    let failed = matches!(
        DeliveryState::try_from(status.state),
        Ok(DeliveryState::Refused | DeliveryState::Rejected)
    );
    let reason = failed.then(|| {
        let code: String = status
            .detail
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || *c == '-')
            .collect();
        refusal::explain(&code)
    });
    let delivered = match DeliveryState::try_from(status.state) {
        Ok(DeliveryState::Delivered) => status
            .receipt
            .as_ref()
            .and_then(receipt_time)
            .map(view::german_datetime),
        _ => None,
    };
    Ok(html(SentPage {
        frame: signed_in.frame(&console, ""),
        kind: view::kind_label(status.kind),
        recipient,
        submitted: view::german_datetime(status.submitted_at_ms),
        state: state_label(status.state),
        delivered,
        reason,
        attempts: status.attempts,
        consent_id: status.consent_id.clone(),
        message_id: status.message_id,
    })?
    .into_response())
}
