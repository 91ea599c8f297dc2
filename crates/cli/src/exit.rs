//! Exit codes, distinct for refused, invalid, unreachable, unauthenticated and "does not
//! verify".

use kurzdraht_client::status::{reason_of, retry_class, Retry};
use std::process::ExitCode;
use tonic::{Code, Status};

pub const OK: ExitCode = ExitCode::SUCCESS;
pub const OTHER: ExitCode = ExitCode::FAILURE;

/// The store cannot be used by this version or key (deploy/HANDBOOK.md, "Exit codes").
pub fn store_unusable() -> ExitCode {
    ExitCode::from(8)
}
/// Something the node needs is held by another process: the store's lock, a listen address.
pub fn in_use() -> ExitCode {
    ExitCode::from(9)
}

/// The exit code for a store error that ended a command.
fn for_store(e: &kurzdraht_ledger::LedgerError) -> ExitCode {
    use kurzdraht_ledger::LedgerError as L;
    match e {
        L::Locked { .. } => in_use(),
        L::NewerStore { .. } | L::BadDataKey { .. } | L::NoDataKey => store_unusable(),
        _ => OTHER,
    }
}

/// A signature or chain that does not verify: `consent evidence` on a notice that does not
/// verify, `directory verify` on a bad signature, `audit verify` on a broken chain.
pub fn unverified() -> ExitCode {
    ExitCode::from(7)
}

/// The exit code for a node's refusal. Whether it is worth repeating is decided by the one
/// classification the delivery worker uses too (`kurzdraht_client::status::retry_class`):
/// every transient refusal is 5 ("not now, try again"); a final one says whose fault it is.
pub fn for_status(status: &Status) -> ExitCode {
    exit_for(status.code(), reason_of(status))
}

/// [`for_status`] on its parts (pure, for the table test).
fn exit_for(code: Code, reason: Option<&str>) -> ExitCode {
    if code == Code::Ok {
        return OK;
    }
    match retry_class(code, reason) {
        Retry::Transient => ExitCode::from(5),
        Retry::Final => match code {
            Code::FailedPrecondition | Code::PermissionDenied => ExitCode::from(3),
            Code::InvalidArgument
            | Code::OutOfRange
            | Code::AlreadyExists
            | Code::NotFound
            | Code::ResourceExhausted => ExitCode::from(4),
            Code::Unauthenticated => ExitCode::from(6),
            _ => OTHER,
        },
    }
}

/// The exit code for an error that ended a command.
pub fn code_of(e: &anyhow::Error) -> ExitCode {
    if let Some(s) = e.downcast_ref::<tonic::Status>() {
        return for_status(s);
    }
    if let Some(c) = e.downcast_ref::<kurzdraht_client::ClientError>() {
        return match c {
            kurzdraht_client::ClientError::Transport(_) => ExitCode::from(5),
            kurzdraht_client::ClientError::Config { .. } => ExitCode::from(4),
        };
    }
    if let Some(l) = e.downcast_ref::<kurzdraht_ledger::LedgerError>() {
        return match l {
            kurzdraht_ledger::LedgerError::AuditBroken { .. } => unverified(),
            l => for_store(l),
        };
    }
    if let Some(n) = e.downcast_ref::<kurzdraht_node::NodeError>() {
        return match n {
            kurzdraht_node::NodeError::Ledger(kurzdraht_ledger::LedgerError::AuditBroken {
                ..
            }) => unverified(),
            kurzdraht_node::NodeError::Transport(_) => ExitCode::from(5),
            kurzdraht_node::NodeError::Ledger(l) => for_store(l),
            kurzdraht_node::NodeError::Listen { .. } => in_use(),
            kurzdraht_node::NodeError::Invalid { .. }
            | kurzdraht_node::NodeError::Config { .. } => ExitCode::from(4),
            _ => OTHER,
        };
    }
    OTHER
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every status code with and without the reasons that change its meaning: a refusal
    /// worth repeating is 5 exactly when the delivery worker would retry it.
    #[test]
    fn exit_codes_follow_the_one_classification() {
        let reasons = [
            None,
            Some("too-large"),
            Some("rate-limited"),
            Some("certificate-revoked"),
            Some("clock-skew"),
            Some("consent-withdrawn"),
        ];
        for n in 1..=16 {
            let code = Code::from_i32(n);
            for reason in reasons {
                let exit = exit_for(code, reason);
                let transient = retry_class(code, reason) == Retry::Transient;
                assert_eq!(exit == ExitCode::from(5), transient, "{code:?} {reason:?}");
            }
        }
        assert_eq!(exit_for(Code::Ok, None), OK);
        assert_eq!(
            exit_for(Code::FailedPrecondition, Some("consent-withdrawn")),
            ExitCode::from(3)
        );
        assert_eq!(exit_for(Code::InvalidArgument, None), ExitCode::from(4));
        assert_eq!(
            exit_for(Code::ResourceExhausted, Some("too-large")),
            ExitCode::from(4)
        );
        assert_eq!(
            exit_for(Code::ResourceExhausted, Some("rate-limited")),
            ExitCode::from(5)
        );
        assert_eq!(exit_for(Code::Unavailable, None), ExitCode::from(5));
        assert_eq!(exit_for(Code::Unauthenticated, None), ExitCode::from(6));
        assert_eq!(exit_for(Code::Unimplemented, None), OTHER);
    }
}
