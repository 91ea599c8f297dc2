//! [`Shared`]: the handles every service of a node shares — its identity, directory, keys,
//! ledger, clock, metrics and the signals that wake delivery workers and inbox readers.
//! Cheap to clone; [`crate::Node`] builds it and hands it to each service.

use crate::clock::Clock;
use crate::config::{
    DeliverySettings, NodeConfig, ReceptionLimits, RetentionSettings, TlsMaterial,
};
use crate::{
    directory::Directory, metrics::Metrics, policy::Role, rpc::peer_limits::PeerLimits, NodeError,
};
use kurzdraht_envelope::SigningKey;
use kurzdraht_ledger::{AuditEvent, AuditNote, Ledger, Outgoing, StoreOptions, DELIVERY_LANES};
use kurzdraht_proto::v1::{MessageBody, MessageKind, MessageStatus};
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::{broadcast, watch, Notify, OwnedRwLockWriteGuard, RwLock};

/// How many final statuses a status watcher may fall behind before its stream ends (the
/// buffer is allocated up front: ~290 bytes a slot, so 8,192 slots ≈ 2.4 MB).
pub const STATUS_WATCH_BUFFER: usize = 8_192;

#[derive(Clone)]
pub struct Shared {
    inner: Arc<Inner>,
}

struct Inner {
    agency: String,
    role: Role,
    /// The directory in force; a newer version replaces it while the node runs
    /// ([`crate::directory_update`]). Readers take the `Arc` and keep one version for
    /// what they decide.
    directory: std::sync::RwLock<Arc<Directory>>,
    /// Per peer: whether the last probe reached it (mutual TLS and health); absent before
    /// the first probe.
    reachable: std::sync::Mutex<BTreeMap<String, bool>>,
    ledger: Ledger,
    key: SigningKey,
    tls: TlsMaterial,
    /// When the node's TLS certificate expires (ms since the epoch).
    certificate_not_after_ms: i64,
    delivery: DeliverySettings,
    limits: ReceptionLimits,
    retention: RetentionSettings,
    data_dir: std::path::PathBuf,
    /// Held while a backup is taken and streamed: one at a time.
    backup_slot: Arc<tokio::sync::Mutex<()>>,
    /// Per peer, one signal per delivery lane.
    outbox_signals: BTreeMap<String, Vec<Arc<Notify>>>,
    /// Per peer, one gate per delivery lane: a delivery round holds it for reading from
    /// its consent check until its outcomes are stored; a withdrawal, a replacement or an
    /// erasure holds it for writing until it is stored.
    lane_gates: BTreeMap<String, Vec<Arc<RwLock<()>>>>,
    /// Messages committed to the outbox whose submission is not yet answered (their flush
    /// may still fail): delivery does not send them before they are confirmed.
    unconfirmed: std::sync::Mutex<std::collections::HashSet<String>>,
    /// Signalled whenever held messages are released (confirmed or undone).
    released: Notify,
    inbox_signal: watch::Sender<u64>,
    status_events: broadcast::Sender<MessageStatus>,
    closing: watch::Sender<bool>,
    metrics: Metrics,
    /// Per calling agency: its requests in flight on the PeerExchange port and its rate.
    peer_limits: PeerLimits,
    clock: Arc<dyn Clock>,
}

impl Shared {
    /// Opens the node's store and prepares the handles, on the clock the node takes its
    /// time from.
    pub(crate) fn open_with_clock(
        config: &NodeConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, NodeError> {
        std::fs::create_dir_all(&config.data_dir)?;
        crate::directory_update::check_not_older(&config.data_dir, &config.directory)?;
        crate::service::backup::remove_leftovers(&config.data_dir);
        let ledger = Ledger::open_with(
            &config.data_dir,
            Some(&config.data_key),
            StoreOptions {
                cache_bytes: config.cache_bytes,
                ..Default::default()
            },
        )?;
        crate::directory_update::record(&config.data_dir, &config.directory)?;
        let outbox_signals: BTreeMap<String, Vec<Arc<Notify>>> = config
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
        let lane_gates = outbox_signals
            .keys()
            .map(|peer: &String| {
                let gates = (0..DELIVERY_LANES)
                    .map(|_| Arc::new(RwLock::new(())))
                    .collect();
                (peer.clone(), gates)
            })
            .collect();
        Ok(Self {
            inner: Arc::new(Inner {
                agency: config.agency.clone(),
                role: config.role,
                directory: std::sync::RwLock::new(Arc::new(config.directory.clone())),
                reachable: Default::default(),
                ledger,
                key: config.signing_key.clone(),
                tls: config.tls.clone(),
                certificate_not_after_ms: (config.certificate_not_after.unix_timestamp_nanos()
                    / 1_000_000) as i64,
                delivery: config.delivery,
                limits: config.limits,
                retention: config.retention,
                data_dir: config.data_dir.clone(),
                backup_slot: Default::default(),
                outbox_signals,
                lane_gates,
                unconfirmed: Default::default(),
                released: Notify::new(),
                inbox_signal: watch::channel(0).0,
                status_events: broadcast::channel(STATUS_WATCH_BUFFER).0,
                closing: watch::channel(false).0,
                metrics: Metrics::default(),
                peer_limits: PeerLimits::new(
                    config.limits.peer_requests_per_second,
                    config.limits.peer_concurrent_requests,
                ),
                clock,
            }),
        })
    }

    pub fn agency(&self) -> &str {
        &self.inner.agency
    }
    pub fn role(&self) -> Role {
        self.inner.role
    }
    /// The directory in force now.
    pub fn directory(&self) -> Arc<Directory> {
        // A panic while holding the lock left a whole directory in place: still consistent.
        self.inner
            .directory
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Puts a newer directory in force (checked by [`crate::directory_update`]).
    pub(crate) fn set_directory(&self, directory: Arc<Directory>) {
        *self
            .inner
            .directory
            .write()
            .unwrap_or_else(|p| p.into_inner()) = directory;
    }

    /// Records whether a probe reached `peer`.
    pub(crate) fn set_reachable(&self, peer: &str, reached: bool) {
        self.inner
            .reachable
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(peer.to_string(), reached);
    }

    /// Per peer, whether the last probe reached it (peers not probed yet are absent).
    pub fn reachability(&self) -> BTreeMap<String, bool> {
        self.inner
            .reachable
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
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
    /// When the node's TLS certificate expires (ms since the epoch).
    pub fn certificate_not_after_ms(&self) -> i64 {
        self.inner.certificate_not_after_ms
    }
    pub fn delivery_settings(&self) -> &DeliverySettings {
        &self.inner.delivery
    }
    pub fn limits(&self) -> &ReceptionLimits {
        &self.inner.limits
    }
    pub fn retention_settings(&self) -> &RetentionSettings {
        &self.inner.retention
    }
    /// The store's directory.
    pub fn data_dir(&self) -> &std::path::Path {
        &self.inner.data_dir
    }
    pub(crate) fn backup_slot(&self) -> Arc<tokio::sync::Mutex<()>> {
        self.inner.backup_slot.clone()
    }
    /// The time now, as this node's clock tells it.
    pub fn now_ms(&self) -> i64 {
        self.inner.clock.now_ms()
    }

    /// The node's counters (scraped on the metrics port).
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }
    /// The per-peer admission of the PeerExchange port: slots in flight and rates.
    pub fn peer_limits(&self) -> &PeerLimits {
        &self.inner.peer_limits
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

    /// Wakes every delivery worker (e.g. after a test stepped the node's clock).
    pub fn wake_all(&self) {
        for n in self.inner.outbox_signals.values().flatten() {
            n.notify_one();
        }
    }

    fn unconfirmed_set(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<String>> {
        // A panic while holding it leaves a plain set of ids: still consistent.
        self.inner
            .unconfirmed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Holds these messages back from delivery until [`Shared::confirm`].
    pub(crate) fn hold_unconfirmed<'a>(&self, ids: impl IntoIterator<Item = &'a str>) {
        self.unconfirmed_set()
            .extend(ids.into_iter().map(str::to_string));
    }

    /// Releases messages held by [`Shared::hold_unconfirmed`].
    pub(crate) fn confirm<'a>(&self, ids: impl IntoIterator<Item = &'a str>) {
        {
            let mut set = self.unconfirmed_set();
            for id in ids {
                set.remove(id);
            }
        }
        self.inner.released.notify_waiters();
    }

    /// Waits until none of `ids` is held back any more (their submission was confirmed or
    /// undone), at most `within`; whether that happened.
    pub(crate) async fn wait_confirmed(&self, ids: &[String], within: std::time::Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let released = self.inner.released.notified();
            tokio::pin!(released);
            // Registered before the check: a release between the check and the wait wakes it.
            released.as_mut().enable();
            if !ids.iter().any(|id| self.is_unconfirmed(id)) {
                return true;
            }
            if tokio::time::timeout_at(deadline, released).await.is_err() {
                return false;
            }
        }
    }

    /// Whether delivery must still hold this message back.
    pub(crate) fn is_unconfirmed(&self, message_id: &str) -> bool {
        self.unconfirmed_set().contains(message_id)
    }

    /// The gate of one delivery lane of `peer`, which a delivery round holds for reading.
    pub(crate) fn lane_gate(&self, peer: &str, lane: u8) -> Option<Arc<RwLock<()>>> {
        self.inner
            .lane_gates
            .get(peer)
            .and_then(|gates| gates.get(usize::from(lane)))
            .cloned()
    }

    /// Waits until no delivery round is in flight on `lanes` (peer, lane) and holds them
    /// closed until the guards drop: what a withdrawal, a replacement or an erasure stores
    /// while it holds them is seen by every later round, and no round that checked the
    /// consent before is still sending. So once such a change is answered, nothing it stops
    /// can leave the node. Taken in one order (no deadlock between two such changes).
    pub(crate) async fn close_lanes(
        &self,
        lanes: impl IntoIterator<Item = (String, u8)>,
    ) -> Vec<OwnedRwLockWriteGuard<()>> {
        let lanes: std::collections::BTreeSet<(String, u8)> = lanes.into_iter().collect();
        let mut guards = Vec::with_capacity(lanes.len());
        for (peer, lane) in lanes {
            if let Some(gate) = self.lane_gate(&peer, lane) {
                guards.push(gate.write_owned().await);
            }
        }
        guards
    }

    /// The lanes (peer, lane) that messages under `record` can leave this node on: its lane
    /// to each agency it names, this one excepted.
    pub(crate) fn lanes_of(
        &self,
        record: &kurzdraht_proto::v1::ConsentRecord,
    ) -> Result<Vec<(String, u8)>, NodeError> {
        let lane = self.ledger().lane_of(&record.consent_id)?;
        Ok(std::iter::once(&record.recording_agency)
            .chain(&record.recipients)
            .filter(|a| *a != self.agency())
            .map(|a| (a.clone(), lane))
            .collect())
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

    /// Tells status watchers that a message reached its final state (durable by now).
    pub(crate) fn status_reached(&self, status: MessageStatus) {
        // No watcher: nobody to tell.
        let _ = self.inner.status_events.send(status);
    }

    /// Final statuses from now on, for WatchStatus.
    pub(crate) fn status_events(&self) -> broadcast::Receiver<MessageStatus> {
        self.inner.status_events.subscribe()
    }

    /// Turns true when the node begins to shut down.
    pub fn closing(&self) -> watch::Receiver<bool> {
        self.inner.closing.subscribe()
    }

    /// Begins shutdown: listeners stop accepting, workers and inbox streams end.
    pub(crate) fn close(&self) {
        self.inner.closing.send_replace(true);
    }

    pub(crate) fn inbox_watch(&self) -> watch::Receiver<u64> {
        self.inner.inbox_signal.subscribe()
    }

    /// Seals a message from this agency and describes it for the outbox. Refuses (final,
    /// `too-large`) what a peer's envelope limits would refuse — the federation's nodes share
    /// those limits (`[limits]`) — so that nothing queued can block its lane.
    pub(crate) fn seal_outgoing(
        &self,
        kind: MessageKind,
        recipient: &str,
        consent_id: &str,
        in_reply_to: &str,
        body: &MessageBody,
        now_ms: i64,
    ) -> Result<Outgoing, NodeError> {
        let out = crate::sealing::seal_outgoing(
            &self.inner.key,
            crate::sealing::Sealing {
                sender: &self.inner.agency,
                kind,
                recipient,
                consent_id,
                in_reply_to,
                now_ms,
                deadline: self.inner.delivery.deadline,
            },
            body,
        );
        let limits = &self.inner.limits.envelope;
        for (part, size, limit) in [
            ("header", out.envelope.header.len(), limits.max_header_bytes),
            ("body", out.envelope.payload.len(), limits.max_payload_bytes),
        ] {
            if size > limit {
                return Err(NodeError::TooLarge(format!(
                    "the message's {part} is {size} bytes once sealed, over the federation's limit of {limit}"
                )));
            }
        }
        Ok(out)
    }

    /// Records a refusal in the audit chain (codes only) and the log.
    pub(crate) fn audit_refusal(
        &self,
        event: AuditEvent,
        kind: MessageKind,
        peer: &str,
        consent_id: &str,
        e: &NodeError,
    ) {
        self.metrics().refused(e.reason_code());
        let note = AuditNote::new(event)
            .kind(kind as i32)
            .peer(peer)
            .consent(consent_id)
            .detail(e.reason_code());
        if let Err(err) = self.ledger().audit(note, self.now_ms()) {
            tracing::error!(error = %err, "could not audit a refusal");
        }
        tracing::info!(reason = e.reason_code(), kind = ?kind, peer, "refused");
        if let NodeError::KeyNotAccepted(why) = e {
            // Which key and its state in the directory (no personal data): what the
            // operators of both agencies need to act on.
            tracing::warn!(peer, detail = %why, "a peer signed with a key the directory does not accept");
        }
    }
}
