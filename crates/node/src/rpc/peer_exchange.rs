//! The PeerExchange service (tonic): identifies the calling agency from its verified client
//! certificate and admits it within its concurrency cap before the request's body is read
//! ([`Admitted`]), then within its rate (each envelope of a batch counts), and hands the
//! envelope(s) to [`Reception::receive`](crate::service::Reception::receive) / `receive_batch`; the reconciliation calls
//! (`ListDelivered`, `FetchDelivered`) answer about deliveries to the calling agency only,
//! `ListReceived` about envelopes the calling agency sent only (`reconciliation`).

use crate::{node::Node, rpc::peer_limits::AuditAllowance, tls, NodeError};
use kurzdraht_ledger::AuditEvent;
use kurzdraht_proto::v1::peer_exchange_server::{PeerExchange, PeerExchangeServer};
use kurzdraht_proto::v1::{
    delivery_outcome::Outcome, BatchOutcome, DeliveryOutcome, DeliveryRefusal, EnvelopeBatch,
    FetchDeliveredRequest, FetchDeliveredResponse, ListDeliveredRequest, ListDeliveredResponse,
    ListReceivedRequest, ListReceivedResponse, MessageKind, SignedEnvelope, SignedReceipt,
};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::{Request, Response, Status};
use tower::Service;

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
}

/// The agency a call comes from, as [`Admitted`] found it in the client certificate.
#[derive(Debug, Clone)]
struct CallingAgency(String);

/// The PeerExchange service as served: before tonic reads a request's body, the caller is
/// identified by its client certificate and let in within its agency's concurrency cap
/// ([`crate::rpc::peer_limits::PeerLimits::enter`], the node's [`crate::shared::Shared::peer_limits`]); a caller
/// nobody can identify, or one over its cap, is answered at once and its body is never
/// buffered. So what one peer can make the node hold is at most `peer_concurrent_requests`
/// requests of at most [`transport_limit`] bytes each, however many streams and
/// connections it opens.
///
/// A call is admitted when the task hyper spawned for its stream first runs, not in the
/// order its headers arrived: of calls whose headers come in together, any may be the one
/// turned away (tokio runs the most recently spawned task first).
#[derive(Clone)]
pub struct Admitted {
    inner: PeerExchangeServer<PeerService>,
    node: Node,
    unidentified: Arc<AuditAllowance>,
}

pub fn service(node: Node) -> Admitted {
    let max = transport_limit(&node.limits().envelope);
    let inner =
        PeerExchangeServer::new(PeerService { node: node.clone() }).max_decoding_message_size(max);
    Admitted {
        inner,
        node,
        unidentified: Default::default(),
    }
}

impl NamedService for Admitted {
    const NAME: &'static str = <PeerExchangeServer<PeerService> as NamedService>::NAME;
}

impl Admitted {
    /// The agency named by the caller's verified client certificate, if the directory in
    /// force does not list that certificate as revoked (checked on every call, so a newer
    /// directory refuses at once, also on a connection opened before). A caller without
    /// one, or with a revoked one, is refused before anything else; audited (and a revoked
    /// certificate logged with its agency and fingerprint) within the allowance of its
    /// remote address (a few, then one a minute), counted in the metrics always.
    fn calling_agency(&self, extensions: &http::Extensions) -> Result<String, NodeError> {
        let info = extensions.get::<TlsConnectInfo<TcpConnectInfo>>();
        let directory = self.node.directory();
        let leaf = info
            .and_then(|i| i.peer_certs())
            .and_then(|certs| certs.first().cloned());
        let named = leaf
            .as_ref()
            .ok_or_else(|| {
                NodeError::PermissionDenied("no client certificate was presented".into())
            })
            .and_then(|leaf| tls::agency_of_certificate(leaf, &directory));
        // The agency its certificate names, for the audit of a revoked one.
        let mut peer = String::new();
        let agency = named.and_then(|agency| {
            if let Some(leaf) = leaf.as_ref() {
                tls::check_not_revoked(leaf, &agency, &directory, "client")
                    .inspect_err(|_| peer.clone_from(&agency))?;
            }
            Ok(agency)
        });
        agency.inspect_err(|e| {
            let address = info.and_then(|i| i.get_ref().remote_addr()).map(|a| a.ip());
            if self.unidentified.allows(address, self.node.now_ms()) {
                if let (NodeError::CertificateRevoked(why), Some(leaf)) = (e, leaf.as_ref()) {
                    tracing::warn!(
                        fingerprint = %crate::directory::certificate_fingerprint(leaf),
                        directory_version = directory.version(),
                        reason = %why,
                        "refused a peer's client certificate: revoked in the directory"
                    );
                }
                self.node.audit_refusal(
                    AuditEvent::ReceptionRefused,
                    MessageKind::Unspecified,
                    &peer,
                    "",
                    e,
                );
            } else {
                self.node.metrics().refused(e.reason_code());
            }
        })
    }
}

impl Service<http::Request<Body>> for Admitted {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Service::<http::Request<Body>>::poll_ready(&mut self.inner, cx)
    }

    fn call(&mut self, mut req: http::Request<Body>) -> Self::Future {
        let admitted = self.calling_agency(req.extensions()).and_then(|agency| {
            // Over its cap a peer is turned away before its body is read; not audited, so
            // that a flood cannot flood the audit chain too.
            let admission = self.node.peer_limits().enter(&agency).inspect_err(|e| {
                tracing::debug!(peer = %agency, reason = %e, "peer over its limits");
            })?;
            Ok((agency, admission))
        });
        match admitted {
            Ok((agency, admission)) => {
                req.extensions_mut().insert(CallingAgency(agency));
                let answer = self.inner.call(req);
                Box::pin(async move {
                    let answer = answer.await;
                    drop(admission);
                    answer
                })
            }
            Err(e) => {
                let response = Status::from(e).into_http();
                Box::pin(std::future::ready(Ok(response)))
            }
        }
    }
}

impl PeerService {
    /// Takes `envelopes` from the calling agency's rate: over it, the call is turned away
    /// before any work, and not audited (a flood cannot flood the audit chain too).
    fn admit(&self, agency: &str, envelopes: usize) -> Result<(), Status> {
        self.node
            .peer_limits()
            .take(agency, envelopes)
            .inspect_err(|e| {
                tracing::debug!(peer = %agency, reason = %e, "peer over its limits");
            })?;
        Ok(())
    }
}

fn agency_of<T>(req: &Request<T>) -> Result<String, Status> {
    req.extensions()
        .get::<CallingAgency>()
        .map(|a| a.0.clone())
        .ok_or_else(|| {
            NodeError::PermissionDenied("the call was not admitted by its certificate".into())
                .into()
        })
}

#[tonic::async_trait]
impl PeerExchange for PeerService {
    async fn deliver(
        &self,
        req: Request<SignedEnvelope>,
    ) -> Result<Response<SignedReceipt>, Status> {
        let agency = agency_of(&req)?;
        // Over its rate a peer is turned away before any work; not audited (see above).
        self.admit(&agency, 1)?;
        let receipt = self
            .node
            .reception()
            .receive(&agency, req.into_inner())
            .await?;
        Ok(Response::new(receipt))
    }

    async fn deliver_batch(
        &self,
        req: Request<EnvelopeBatch>,
    ) -> Result<Response<BatchOutcome>, Status> {
        let agency = agency_of(&req)?;
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
        self.admit(&agency, envelopes.len())?;
        let outcomes = self
            .node
            .reception()
            .receive_batch(&agency, envelopes)
            .await
            .into_iter()
            .map(outcome_of)
            .collect();
        Ok(Response::new(BatchOutcome { outcomes }))
    }

    async fn list_delivered(
        &self,
        req: Request<ListDeliveredRequest>,
    ) -> Result<Response<ListDeliveredResponse>, Status> {
        let agency = agency_of(&req)?;
        self.admit(&agency, 1)?;
        Ok(Response::new(
            self.node
                .reconciliation()
                .list_delivered(&agency, req.get_ref())?,
        ))
    }

    async fn fetch_delivered(
        &self,
        req: Request<FetchDeliveredRequest>,
    ) -> Result<Response<FetchDeliveredResponse>, Status> {
        let agency = agency_of(&req)?;
        // Each id counts as an envelope of a batch would.
        let ids = req.get_ref().message_ids.len().max(1);
        if ids <= crate::service::reconciliation::FETCH_MAX_IDS {
            self.admit(&agency, ids)?;
        }
        Ok(Response::new(
            self.node
                .reconciliation()
                .fetch_delivered(&agency, req.get_ref())
                .await?,
        ))
    }

    async fn list_received(
        &self,
        req: Request<ListReceivedRequest>,
    ) -> Result<Response<ListReceivedResponse>, Status> {
        let agency = agency_of(&req)?;
        // Each envelope the page may hand back counts as an envelope of a batch would.
        let asked = match req.get_ref().limit as usize {
            0 => crate::service::reconciliation::RECEIVED_PAGE_DEFAULT,
            n => n,
        };
        if asked <= crate::service::reconciliation::RECEIVED_PAGE_MAX {
            self.admit(&agency, asked)?;
        }
        Ok(Response::new(
            self.node
                .reconciliation()
                .list_received(&agency, req.get_ref())
                .await?,
        ))
    }
}
