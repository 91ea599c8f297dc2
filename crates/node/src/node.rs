//! [`Node`]: one agency's running node. It opens the store, builds the shared handles
//! ([`Shared`]) and the services over them ([`crate::service`]), and holds them; it does
//! no work of its own. Cheap to clone; the tonic services and the workers share it.

use crate::clock::{Clock, SystemClock};
use crate::config::NodeConfig;
use crate::service::{
    Accounts, Answers, Backup, Cases, Inbox, Reception, Reconciliation, Reports, Retention,
    Submission,
};
use crate::shared::Shared;
use crate::NodeError;
use std::sync::Arc;

/// One agency's node: its shared handles and its services.
///
/// `Node` dereferences to its [`Shared`] handles (`node.ledger()`, `node.agency()`,
/// `node.directory()`, …); the work is reached through the services
/// (`node.submission().submit(..)`).
#[derive(Clone)]
pub struct Node {
    shared: Shared,
    submission: Submission,
    reception: Reception,
    inbox: Inbox,
    retention: Retention,
    reports: Reports,
    reconciliation: Reconciliation,
    backup: Backup,
    accounts: Accounts,
    cases: Cases,
}

impl Node {
    /// Opens the node's store and prepares it to serve, on the system clock.
    pub fn open(config: &NodeConfig) -> Result<Self, NodeError> {
        Self::open_with_clock(config, Arc::new(SystemClock))
    }

    /// Opens the node with the clock it takes its time from (tests step a manual one).
    pub fn open_with_clock(config: &NodeConfig, clock: Arc<dyn Clock>) -> Result<Self, NodeError> {
        let shared = Shared::open_with_clock(config, clock)?;
        let answers = Answers::new(shared.clone());
        let reception = Reception::new(shared.clone());
        Ok(Self {
            submission: Submission::new(shared.clone(), answers.clone()),
            inbox: Inbox::new(shared.clone()),
            retention: Retention::new(shared.clone(), answers),
            reports: Reports::new(shared.clone()),
            reconciliation: Reconciliation::new(shared.clone(), reception.clone()),
            backup: Backup::new(shared.clone()),
            accounts: Accounts::new(shared.clone()),
            cases: Cases::new(shared.clone()),
            reception,
            shared,
        })
    }

    /// The handles every service shares (also reached by dereferencing the node).
    pub fn shared(&self) -> &Shared {
        &self.shared
    }
    /// Consents recorded, withdrawn or replaced, messages submitted and their status.
    pub fn submission(&self) -> &Submission {
        &self.submission
    }
    /// Envelopes received from peers.
    pub fn reception(&self) -> &Reception {
        &self.reception
    }
    /// The inbox the IT systems read and acknowledge.
    pub fn inbox(&self) -> &Inbox {
        &self.inbox
    }
    /// Closing cases, deleting bodies after the retention period, erasure.
    pub fn retention(&self) -> &Retention {
        &self.retention
    }
    /// The cases (a person's consent chain and its messages), for the console's Fälle.
    pub fn cases(&self) -> &Cases {
        &self.cases
    }
    /// The Art. 15 access report, the evidence of a consent, the audit chain's pages.
    pub fn reports(&self) -> &Reports {
        &self.reports
    }
    /// Receiving again what peers delivered since a restored backup.
    pub fn reconciliation(&self) -> &Reconciliation {
        &self.reconciliation
    }
    /// Online backups.
    pub fn backup(&self) -> &Backup {
        &self.backup
    }
    /// The console's accounts and the login check.
    pub fn accounts(&self) -> &Accounts {
        &self.accounts
    }
}

impl std::ops::Deref for Node {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.shared
    }
}
