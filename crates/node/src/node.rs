//! [`Node`]: one agency's node — its identity, directory, keys, ledger and the signals that
//! wake delivery workers and inbox readers. Cheap to clone; the services and workers share it.

use crate::config::{
    DeliverySettings, NodeConfig, ReceptionLimits, RetentionSettings, TlsMaterial,
};
use crate::{directory::Directory, metrics::Metrics, policy::Role, NodeError};
use kurzdraht_envelope::{seal, SigningKey};
use kurzdraht_ledger::{Ledger, Outgoing, StoreOptions, DELIVERY_LANES};
use kurzdraht_proto::v1::{EnvelopeHeader, MessageBody, MessageKind, MessageStatus};
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::{broadcast, watch, Notify};

/// How many final statuses a status watcher may fall behind before its stream ends (the
/// buffer is allocated up front: ~290 bytes a slot, so 8,192 slots ≈ 2.4 MB).
pub const STATUS_WATCH_BUFFER: usize = 8_192;

#[derive(Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

struct Inner {
    agency: String,
    role: Role,
    directory: Directory,
    ledger: Ledger,
    key: SigningKey,
    tls: TlsMaterial,
    delivery: DeliverySettings,
    limits: ReceptionLimits,
    retention: RetentionSettings,
    /// Per peer, one signal per delivery lane.
    outbox_signals: BTreeMap<String, Vec<Arc<Notify>>>,
    inbox_signal: watch::Sender<u64>,
    status_events: broadcast::Sender<MessageStatus>,
    closing: watch::Sender<bool>,
    metrics: Metrics,
}

impl Node {
    /// Opens the node's store and prepares it to serve.
    pub fn open(config: &NodeConfig) -> Result<Self, NodeError> {
        std::fs::create_dir_all(&config.data_dir)?;
        let ledger = Ledger::open_with(
            &config.data_dir,
            Some(&config.data_key),
            StoreOptions {
                cache_bytes: config.cache_bytes,
                ..Default::default()
            },
        )?;
        let outbox_signals = config
            .directory
            .agencies()
            .filter(|a| a.id != config.agency)
            .map(|a| {
                let lanes = (0..DELIVERY_LANES)
                    .map(|_| Arc::new(Notify::new()))
                    .collect();
                (a.id.clone(), lanes)
            })
            .collect();
        Ok(Self {
            inner: Arc::new(Inner {
                agency: config.agency.clone(),
                role: config.role,
                directory: config.directory.clone(),
                ledger,
                key: config.signing_key.clone(),
                tls: config.tls.clone(),
                delivery: config.delivery,
                limits: config.limits,
                retention: config.retention,
                outbox_signals,
                inbox_signal: watch::channel(0).0,
                status_events: broadcast::channel(STATUS_WATCH_BUFFER).0,
                closing: watch::channel(false).0,
                metrics: Metrics::default(),
            }),
        })
    }

    pub fn agency(&self) -> &str {
        &self.inner.agency
    }
    pub fn role(&self) -> Role {
        self.inner.role
    }
    pub fn directory(&self) -> &Directory {
        &self.inner.directory
    }
    pub fn ledger(&self) -> &Ledger {
        &self.inner.ledger
    }
    pub(crate) fn key(&self) -> &SigningKey {
        &self.inner.key
    }
    pub(crate) fn tls(&self) -> &TlsMaterial {
        &self.inner.tls
    }
    pub fn delivery_settings(&self) -> &DeliverySettings {
        &self.inner.delivery
    }
    pub fn limits(&self) -> &ReceptionLimits {
        &self.inner.limits
    }
    pub fn retention(&self) -> &RetentionSettings {
        &self.inner.retention
    }
    /// The node's counters (scraped on the metrics port).
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The peers this node delivers to, with the signals that wake the worker of each of
    /// their delivery lanes (indexed by lane).
    pub(crate) fn outbox_signals(&self) -> impl Iterator<Item = (&String, &Vec<Arc<Notify>>)> {
        self.inner.outbox_signals.iter()
    }

    /// Wakes the delivery workers of every lane of `peer`.
    pub(crate) fn wake(&self, peer: &str) {
        for n in self.inner.outbox_signals.get(peer).into_iter().flatten() {
            n.notify_one();
        }
    }

    /// Wakes the delivery worker of one lane of `peer`.
    pub(crate) fn wake_lane(&self, peer: &str, lane: u8) {
        if let Some(n) = self
            .inner
            .outbox_signals
            .get(peer)
            .and_then(|lanes| lanes.get(usize::from(lane)))
        {
            n.notify_one();
        }
    }

    pub(crate) fn inbox_changed(&self, seq: u64) {
        self.inner.inbox_signal.send_replace(seq);
    }

    /// Turns true when the node begins to shut down.
    /// Tells status watchers that a message reached its final state (durable by now).
    pub(crate) fn status_reached(&self, status: MessageStatus) {
        // No watcher: nobody to tell.
        let _ = self.inner.status_events.send(status);
    }

    /// Final statuses from now on, for WatchStatus.
    pub(crate) fn status_events(&self) -> broadcast::Receiver<MessageStatus> {
        self.inner.status_events.subscribe()
    }

    pub(crate) fn closing(&self) -> watch::Receiver<bool> {
        self.inner.closing.subscribe()
    }

    /// Begins shutdown: listeners stop accepting, workers and inbox streams end.
    pub(crate) fn close(&self) {
        self.inner.closing.send_replace(true);
    }

    pub(crate) fn inbox_watch(&self) -> watch::Receiver<u64> {
        self.inner.inbox_signal.subscribe()
    }

    /// Seals a message from this agency and describes it for the outbox.
    pub(crate) fn seal_outgoing(
        &self,
        kind: MessageKind,
        recipient: &str,
        consent_id: &str,
        in_reply_to: &str,
        body: &MessageBody,
        now_ms: i64,
    ) -> Outgoing {
        let message_id = kurzdraht_envelope::ids::new_id();
        let header = EnvelopeHeader {
            message_id: message_id.clone(),
            kind: kind as i32,
            sender: self.inner.agency.clone(),
            recipient: recipient.to_string(),
            created_at_ms: now_ms,
            payload_sha256: Vec::new(),
            consent_id: consent_id.to_string(),
            in_reply_to: in_reply_to.to_string(),
        };
        let envelope = seal(header, body, &self.inner.key);
        let deadline_ms = now_ms.saturating_add(self.inner.delivery.deadline.as_millis() as i64);
        Outgoing {
            envelope_sha256: kurzdraht_envelope::envelope_hash(&envelope),
            envelope,
            message_id,
            kind,
            recipient: recipient.to_string(),
            consent_id: consent_id.to_string(),
            submitted_at_ms: now_ms,
            deadline_ms,
        }
    }
}
