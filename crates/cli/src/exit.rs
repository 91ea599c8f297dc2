//! Exit codes, distinct for refused, invalid, unreachable, unauthenticated and "does not
//! verify".

use std::process::ExitCode;
use tonic::Code;

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

/// The exit code for a gRPC status code.
pub fn for_status(code: Code) -> ExitCode {
    match code {
        Code::Ok => OK,
        Code::FailedPrecondition | Code::PermissionDenied => ExitCode::from(3),
        Code::InvalidArgument | Code::OutOfRange | Code::AlreadyExists | Code::NotFound => {
            ExitCode::from(4)
        }
        Code::Unavailable | Code::DeadlineExceeded => ExitCode::from(5),
        Code::Unauthenticated => ExitCode::from(6),
        _ => OTHER,
    }
}

/// The exit code for an error that ended a command.
pub fn code_of(e: &anyhow::Error) -> ExitCode {
    if let Some(s) = e.downcast_ref::<tonic::Status>() {
        return for_status(s.code());
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
