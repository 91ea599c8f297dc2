//! Message and consent ids: UUIDv7 (time-ordered), in their hyphenated text form.

use crate::EnvelopeError;
use uuid::Uuid;

/// A new UUIDv7 in hyphenated lower-case form.
pub fn new_id() -> String {
    Uuid::now_v7().hyphenated().to_string()
}

/// Parses a UUIDv7 in its canonical hyphenated form; `field` names it in the error.
pub fn parse_id(field: &'static str, value: &str) -> Result<Uuid, EnvelopeError> {
    if value.is_empty() {
        return Err(EnvelopeError::malformed(field, "is empty"));
    }
    let id =
        Uuid::try_parse(value).map_err(|_| EnvelopeError::malformed(field, "is not a UUID"))?;
    if id.get_version_num() != 7 {
        return Err(EnvelopeError::malformed(field, "is not a UUIDv7"));
    }
    if id.hyphenated().to_string() != value {
        return Err(EnvelopeError::malformed(
            field,
            "must be the lower-case hyphenated form",
        ));
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_ids_parse_and_are_ordered() {
        let a = new_id();
        let b = new_id();
        assert!(parse_id("id", &a).is_ok());
        assert!(a < b, "UUIDv7 are time-ordered");
    }

    #[test]
    fn refuses_other_forms() {
        assert!(parse_id("id", "").is_err());
        assert!(parse_id("id", "not-a-uuid").is_err());
        // a v4 uuid
        assert!(parse_id("id", "9f0e7a3c-3c1e-4b7a-9d2f-1b2c3d4e5f60").is_err());
        let upper = new_id().to_uppercase();
        assert!(parse_id("id", &upper).is_err());
    }
}
