//! The PeerExchange service (tonic): identifies the calling agency from its verified client
//! certificate, admits it within its limits (each envelope of a batch counts) and hands the
//! envelope(s) to [`Node::receive`] / [`Node::receive_batch`].

use crate::{node::Node, peer_limits::PeerLimits, tls, NodeError};
use kurzdraht_ledger::AuditEvent;
use kurzdraht_proto::v1::peer_exchange_server::{PeerExchange, PeerExchangeServer};
use kurzdraht_proto::v1::{
    delivery_outcome::Outcome, BatchOutcome, DeliveryOutcome, DeliveryRefusal, EnvelopeBatch,
    MessageKind, SignedEnvelope, SignedReceipt,
};
use tonic::{Request, Response, Status};

/// The most envelopes one DeliverBatch may carry.
pub const MAX_BATCH_ENVELOPES: usize = 256;
/// The most bytes of envelopes a sender puts in one DeliverBatch (a batch always holds at
/// least one envelope, which may be as large as the envelope limits allow).
pub const MAX_BATCH_BYTES: usize = 1024 * 1024;

/// The largest request the peer port decodes at all: one envelope at its limits plus 1 KiB,
/// or a full batch, whichever is more. Anything larger is refused by the transport before
/// the node sees it (RESOURCE_EXHAUSTED, too-large; not audited).
pub fn transport_limit(envelope: &kurzdraht_envelope::Limits) -> usize {
    (envelope.max_header_bytes + envelope.max_payload_bytes + 1024).max(MAX_BATCH_BYTES + 64 * 1024)
}

/// The outcome of one envelope of a batch: its receipt, or its refusal answered as a unary
/// Deliver would have answered it (the status, built in the one place errors become
/// statuses, taken apart into the outcome).
pub fn outcome_of(answer: Result<SignedReceipt, NodeError>) -> DeliveryOutcome {
    DeliveryOutcome {
        outcome: Some(match answer {
            Ok(receipt) => Outcome::Receipt(receipt),
            Err(e) => Outcome::Refusal(refusal(e)),
        }),
    }
}

fn refusal(e: NodeError) -> DeliveryRefusal {
    let status = Status::from(e);
    DeliveryRefusal {
        code: status.code() as i32,
        reason: crate::error::reason_of(&status)
            .unwrap_or_default()
            .to_string(),
        message: status.message().to_string(),
    }
}

pub struct PeerService {
    node: Node,
    limits: PeerLimits,
}

pub fn service(node: Node) -> PeerExchangeServer<PeerService> {
    let l = node.limits();
    let limits = PeerLimits::new(l.peer_requests_per_second, l.peer_concurrent_requests);
    let max = transport_limit(&l.envelope);
    PeerExchangeServer::new(PeerService { node, limits }).max_decoding_message_size(max)
}

impl PeerService {
    /// The agency named by the caller's verified client certificate; a caller without one
    /// is refused (and audited) before anything else.
    fn calling_agency<T>(&self, req: &Request<T>) -> Result<String, Status> {
        let agency = req
            .peer_certs()
            .and_then(|certs| certs.first().cloned())
            .ok_or_else(|| {
                NodeError::PermissionDenied("no client certificate was presented".into())
            })
            .and_then(|leaf| tls::agency_of_certificate(&leaf, self.node.directory()));
        agency.map_err(|e| {
            // Refused before reception: audited like every other refusal (no peer known).
            self.node.audit_refusal(
                AuditEvent::ReceptionRefused,
                MessageKind::Unspecified,
                "",
                "",
                &e,
            );
            e.into()
        })
    }
}

#[tonic::async_trait]
impl PeerExchange for PeerService {
    async fn deliver(
        &self,
        req: Request<SignedEnvelope>,
    ) -> Result<Response<SignedReceipt>, Status> {
        let agency = self.calling_agency(&req)?;
        // Over its limits a peer is turned away before any work; not audited, so that a flood
        // cannot flood the audit chain too.
        let _admission = self.limits.admit(&agency, 1).inspect_err(|e| {
            tracing::debug!(peer = %agency, reason = %e, "peer over its limits");
        })?;
        let receipt = self.node.receive(&agency, req.into_inner()).await?;
        Ok(Response::new(receipt))
    }

    async fn deliver_batch(
        &self,
        req: Request<EnvelopeBatch>,
    ) -> Result<Response<BatchOutcome>, Status> {
        let agency = self.calling_agency(&req)?;
        let envelopes = req.into_inner().envelopes;
        if envelopes.len() > MAX_BATCH_ENVELOPES {
            return Err(NodeError::invalid(
                "envelopes",
                format!(
                    "holds {} envelopes, over the limit of {MAX_BATCH_ENVELOPES}",
                    envelopes.len()
                ),
            )
            .into());
        }
        let _admission = self
            .limits
            .admit(&agency, envelopes.len())
            .inspect_err(|e| {
                tracing::debug!(peer = %agency, reason = %e, "peer over its limits");
            })?;
        let outcomes = self
            .node
            .receive_batch(&agency, envelopes)
            .await
            .into_iter()
            .map(outcome_of)
            .collect();
        Ok(Response::new(BatchOutcome { outcomes }))
    }
}
