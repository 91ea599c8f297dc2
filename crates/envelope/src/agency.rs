//! Agency ids: lower-case ASCII letters, digits and hyphens, as the directory spells them
//! (e.g. `jobcenter-segeberg`). The same string is the DNS name in the agency's TLS certificate.

use crate::EnvelopeError;

/// Longest agency id accepted.
pub const MAX_AGENCY_ID_LEN: usize = 63;

/// Checks that `value` is a well-formed agency id; `field` names it in the error.
pub fn validate_agency_id(field: &'static str, value: &str) -> Result<(), EnvelopeError> {
    if value.is_empty() {
        return Err(EnvelopeError::malformed(field, "is empty"));
    }
    if value.len() > MAX_AGENCY_ID_LEN {
        return Err(EnvelopeError::malformed(
            field,
            format!("is longer than {MAX_AGENCY_ID_LEN} characters"),
        ));
    }
    let ok_chars = value
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !ok_chars || value.starts_with('-') || value.ends_with('-') {
        return Err(EnvelopeError::malformed(
            field,
            "must be lower-case letters, digits and inner hyphens",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_three_agencies() {
        for id in [
            "jobcenter-segeberg",
            "jugendamt-kreis-segeberg",
            "jugendamt-norderstedt",
        ] {
            assert_eq!(validate_agency_id("agency", id), Ok(()));
        }
    }

    #[test]
    fn refuses_malformed_ids() {
        for id in [
            "",
            "Jobcenter",
            "job center",
            "-x",
            "x-",
            "a.b",
            &"a".repeat(64),
        ] {
            assert!(validate_agency_id("agency", id).is_err(), "{id:?}");
        }
    }
}
