//! What the client commands print: the node's answers as JSON (the canonical protobuf
//! mapping with RFC 3339 times beside the millisecond ones), and the access report as text.

use kurzdraht_node::clock;
use kurzdraht_proto::v1 as pb;

/// An answer of the node as JSON: the canonical protobuf JSON mapping (`kurzdraht-proto`'s
/// `serde` feature: lowerCamelCase names, enum value names, base64 bytes, 64-bit integers as
/// strings, fields with default values printed too), plus for every timestamp field
/// `…Ms` (milliseconds since the Unix epoch) that is not 0 a sibling without the `Ms` suffix
/// holding the same instant in RFC 3339 (UTC), e.g. `"validUntil": "2027-04-30T21:59:59.999Z"`.
pub(crate) fn to_json<T: serde::Serialize>(value: &T) -> anyhow::Result<serde_json::Value> {
    let mut json = serde_json::to_value(value)?;
    add_rfc3339_times(&mut json);
    Ok(json)
}

/// Adds the RFC 3339 sibling of every non-zero `…Ms` timestamp, at every depth. A sibling
/// never replaces a field of the message (none is named like one; see the test).
fn add_rfc3339_times(json: &mut serde_json::Value) {
    use serde_json::Value;
    match json {
        Value::Object(fields) => {
            let times: Vec<(String, String)> = fields
                .iter()
                .filter_map(|(name, value)| {
                    let at = name.strip_suffix("Ms").filter(|at| !at.is_empty())?;
                    let ms: i64 = value.as_str()?.parse().ok()?;
                    if ms == 0 || fields.contains_key(at) {
                        return None;
                    }
                    Some((at.to_string(), rfc3339_of_ms(ms)?))
                })
                .collect();
            for value in fields.values_mut() {
                add_rfc3339_times(value);
            }
            for (at, time) in times {
                fields.insert(at, Value::String(time));
            }
        }
        Value::Array(items) => items.iter_mut().for_each(add_rfc3339_times),
        _ => {}
    }
}

/// `ms` (since the Unix epoch) in RFC 3339, UTC, with milliseconds where they are not 0.
pub(crate) fn rfc3339_of_ms(ms: i64) -> Option<String> {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()?
        .format(&time::format_description::well_known::Rfc3339)
        .ok()
}

pub(crate) fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(&to_json(value)?)?);
    Ok(())
}

/// The answer as JSON with the idempotency key it was given under (`idempotencyKey`).
pub(crate) fn print_keyed_json<T: serde::Serialize>(value: &T, key: &str) -> anyhow::Result<()> {
    let mut json = to_json(value)?;
    if let Some(fields) = json.as_object_mut() {
        fields.insert("idempotencyKey".into(), key.into());
    }
    println!("{}", serde_json::to_string_pretty(&json)?);
    Ok(())
}

/// The access report as text for the person concerned.
pub fn render_report(r: &pb::SubjectAccessReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Access report (Art. 15 GDPR) of {} at {}",
        r.agency,
        clock::format_ms(r.generated_at_ms)
    );
    let _ = writeln!(out, "Consents ({}):", r.consents.len());
    for e in &r.consents {
        let Some(c) = &e.consent else { continue };
        let state = pb::ConsentState::try_from(e.state)
            .map(|s| s.as_str_name())
            .unwrap_or("?");
        let purposes: Vec<&str> = c
            .purposes
            .iter()
            .filter_map(|p| pb::Purpose::try_from(*p).ok().map(|p| p.as_str_name()))
            .collect();
        let categories: Vec<&str> = c
            .categories
            .iter()
            .filter_map(|p| pb::DataCategory::try_from(*p).ok().map(|p| p.as_str_name()))
            .collect();
        let _ = writeln!(
            out,
            "  {} {state}: recorded by {} on {}, for {} to {}, covering {}",
            c.consent_id,
            c.recording_agency,
            clock::format_ms(c.recorded_at_ms),
            purposes.join(", "),
            c.recipients.join(", "),
            categories.join(", ")
        );
    }
    let _ = writeln!(out, "Messages ({}):", r.messages.len());
    for m in &r.messages {
        let kind = pb::MessageKind::try_from(m.kind)
            .map(|k| k.as_str_name())
            .unwrap_or("?");
        let state = if m.direction == "sent" {
            pb::DeliveryState::try_from(m.state)
                .map(|s| format!(" ({})", s.as_str_name()))
                .unwrap_or_default()
        } else {
            String::new()
        };
        let arrow = if m.direction == "sent" { "to" } else { "from" };
        let _ = writeln!(
            out,
            "  {} {kind} {} {arrow} {}{state} under consent {}",
            clock::format_ms(m.at_ms),
            m.direction,
            m.counterpart,
            m.consent_id
        );
    }
    let _ = writeln!(out, "Refusals ({}):", r.refusals.len());
    for f in &r.refusals {
        let kind = pb::MessageKind::try_from(f.kind)
            .map(|k| k.as_str_name())
            .unwrap_or("?");
        let _ = writeln!(
            out,
            "  {} {} {kind} ({}) {} under consent {}",
            clock::format_ms(f.at_ms),
            f.event,
            f.reason,
            f.counterpart,
            f.consent_id
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_nonzero_ms_time_gets_an_rfc3339_sibling_at_every_depth() {
        let mut v = json!({
            "createdAtMs": "1795950777743",
            "validFromMs": "0",
            "attempts": 3,
            "nested": {"atMs": "1700000000000", "at": "kept"},
            "items": [{"receivedAtMs": "-1000"}, {"closedAtMs": "not a number"}],
            "Ms": "5",
        });
        add_rfc3339_times(&mut v);
        assert_eq!(
            v,
            json!({
                "createdAtMs": "1795950777743",
                "createdAt": "2026-11-29T11:12:57.743Z",
                "validFromMs": "0",
                "attempts": 3,
                "nested": {"atMs": "1700000000000", "at": "kept"},
                "items": [
                    {"receivedAtMs": "-1000", "receivedAt": "1969-12-31T23:59:59Z"},
                    {"closedAtMs": "not a number"}
                ],
                "Ms": "5",
            })
        );
    }

    /// The canonical mapping of a whole answer: enum names, base64 bytes, int64 as strings,
    /// default values printed, lowerCamelCase names.
    #[test]
    fn answers_print_in_the_canonical_mapping() {
        let status = pb::MessageStatus {
            message_id: "m".into(),
            state: pb::DeliveryState::Delivered as i32,
            updated_at_ms: 1_795_950_777_000,
            receipt: Some(pb::SignedReceipt {
                receipt: vec![0xff, 0x00, 0x10],
                ..Default::default()
            }),
            ..Default::default()
        };
        let v = to_json(&status).expect("test");
        assert_eq!(v["messageId"], "m");
        assert_eq!(v["state"], "DELIVERED");
        assert_eq!(v["updatedAtMs"], "1795950777000");
        assert_eq!(v["updatedAt"], "2026-11-29T11:12:57Z");
        assert_eq!(v["receipt"]["receipt"], "/wAQ");
        assert_eq!(v["attempts"], 0, "default values are printed");
        assert_eq!(v["kind"], "MESSAGE_KIND_UNSPECIFIED");
        assert!(v.get("submittedAt").is_none(), "no sibling for 0");
    }
}
