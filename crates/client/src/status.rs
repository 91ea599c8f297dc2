//! Reading a refusal: the reason code a status carries, and the one classification of a
//! received status into "try the same again later" or "final". The node's delivery worker
//! retries by it, the CLI picks its exit codes by it, and an IT system can act on it alike.

use tonic::{Code, Status};

/// The metadata key that carries a refusal's stable reason code.
pub const REASON_METADATA: &str = "kurzdraht-reason";

/// What a refusal means for whoever sent the refused request: try the same again later, or
/// never.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Try again later: the same request may succeed (peer down, overloaded, clocks apart).
    Transient,
    /// The same request will be refused again: a final answer.
    Final,
}

/// Classifies a refusal by its reason code first — one status code can mean both (e.g.
/// RESOURCE_EXHAUSTED is `rate-limited`, transient, or `too-large`, final) — and by its
/// status code where the reason is missing or unknown (an older peer, or the transport).
pub fn retry_class(code: Code, reason: Option<&str>) -> Retry {
    match reason {
        Some("too-large") => return Retry::Final,
        Some(
            "rate-limited"
            | "clock-skew"
            | "retry"
            | "watch-lagged"
            | "not-stored"
            | "certificate-revoked",
        ) => return Retry::Transient,
        _ => {}
    }
    match code {
        Code::InvalidArgument
        | Code::PermissionDenied
        | Code::FailedPrecondition
        | Code::Unauthenticated
        | Code::AlreadyExists
        | Code::NotFound
        | Code::Unimplemented
        | Code::OutOfRange => Retry::Final,
        _ => Retry::Transient,
    }
}

/// The reason code a status carries, if any.
pub fn reason_of(status: &Status) -> Option<&str> {
    status
        .metadata()
        .get(REASON_METADATA)
        .and_then(|v| v.to_str().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every status code, without a reason: the final ones are exactly the caller's faults.
    #[test]
    fn without_a_reason_the_code_decides() {
        let finals = [
            Code::InvalidArgument,
            Code::PermissionDenied,
            Code::FailedPrecondition,
            Code::Unauthenticated,
            Code::AlreadyExists,
            Code::NotFound,
            Code::Unimplemented,
            Code::OutOfRange,
        ];
        for n in 0..=16 {
            let code = Code::from_i32(n);
            let want = if finals.contains(&code) {
                Retry::Final
            } else {
                Retry::Transient
            };
            assert_eq!(retry_class(code, None), want, "{code:?}");
            // A reason this version does not know changes nothing.
            assert_eq!(retry_class(code, Some("from-a-later-version")), want);
        }
    }

    /// A known reason overrides its code both ways.
    #[test]
    fn a_known_reason_decides_before_the_code() {
        assert_eq!(
            retry_class(Code::ResourceExhausted, Some("too-large")),
            Retry::Final
        );
        assert_eq!(
            retry_class(Code::ResourceExhausted, Some("rate-limited")),
            Retry::Transient
        );
        assert_eq!(
            retry_class(Code::PermissionDenied, Some("certificate-revoked")),
            Retry::Transient
        );
        assert_eq!(
            retry_class(Code::Unavailable, Some("clock-skew")),
            Retry::Transient
        );
    }

    #[test]
    fn the_reason_is_read_from_the_metadata() {
        let mut status = Status::failed_precondition("no consent");
        assert_eq!(reason_of(&status), None);
        status
            .metadata_mut()
            .insert(REASON_METADATA, "consent-withdrawn".parse().expect("ascii"));
        assert_eq!(reason_of(&status), Some("consent-withdrawn"));
    }
}
