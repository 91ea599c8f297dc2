//! The PeerExchange service (tonic): identifies the calling agency from its verified client
//! certificate and hands the envelope to [`Node::receive`].

use crate::{node::Node, peer_limits::PeerLimits, tls, NodeError};
use kurzdraht_ledger::AuditEvent;
use kurzdraht_proto::v1::peer_exchange_server::{PeerExchange, PeerExchangeServer};
use kurzdraht_proto::v1::{MessageKind, SignedEnvelope, SignedReceipt};
use tonic::{Request, Response, Status};

pub struct PeerService {
    node: Node,
    limits: PeerLimits,
}

pub fn service(node: Node, max_message_bytes: usize) -> PeerExchangeServer<PeerService> {
    let l = node.limits();
    let limits = PeerLimits::new(l.peer_requests_per_second, l.peer_concurrent_requests);
    PeerExchangeServer::new(PeerService { node, limits })
        .max_decoding_message_size(max_message_bytes)
}

#[tonic::async_trait]
impl PeerExchange for PeerService {
    async fn deliver(
        &self,
        req: Request<SignedEnvelope>,
    ) -> Result<Response<SignedReceipt>, Status> {
        let agency = req
            .peer_certs()
            .and_then(|certs| certs.first().cloned())
            .ok_or_else(|| {
                NodeError::PermissionDenied("no client certificate was presented".into())
            })
            .and_then(|leaf| tls::agency_of_certificate(&leaf, self.node.directory()));
        let agency = match agency {
            Ok(agency) => agency,
            Err(e) => {
                // Refused before reception: audited like every other refusal (no peer known).
                self.node.audit_refusal(
                    AuditEvent::ReceptionRefused,
                    MessageKind::Unspecified,
                    "",
                    "",
                    &e,
                );
                return Err(e.into());
            }
        };
        // Over its limits a peer is turned away before any work; not audited, so that a flood
        // cannot flood the audit chain too.
        let _admission = self.limits.admit(&agency).inspect_err(|e| {
            tracing::debug!(peer = %agency, reason = %e, "peer over its limits");
        })?;
        let receipt = self.node.receive(&agency, req.into_inner()).await?;
        Ok(Response::new(receipt))
    }
}
