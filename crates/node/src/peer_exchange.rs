//! The PeerExchange service (tonic): identifies the calling agency from its verified client
//! certificate and hands the envelope to [`Node::receive`].

use crate::{node::Node, tls, NodeError};
use kurzdraht_proto::v1::peer_exchange_server::{PeerExchange, PeerExchangeServer};
use kurzdraht_proto::v1::{SignedEnvelope, SignedReceipt};
use tonic::{Request, Response, Status};

pub struct PeerService {
    node: Node,
}

pub fn service(node: Node, max_message_bytes: usize) -> PeerExchangeServer<PeerService> {
    PeerExchangeServer::new(PeerService { node }).max_decoding_message_size(max_message_bytes)
}

#[tonic::async_trait]
impl PeerExchange for PeerService {
    async fn deliver(
        &self,
        req: Request<SignedEnvelope>,
    ) -> Result<Response<SignedReceipt>, Status> {
        let certs = req.peer_certs().ok_or_else(|| {
            NodeError::PermissionDenied("no client certificate was presented".into())
        })?;
        let leaf = certs.first().ok_or_else(|| {
            NodeError::PermissionDenied("no client certificate was presented".into())
        })?;
        let agency = tls::agency_of_certificate(leaf, self.node.directory())?;
        let receipt = self.node.receive(&agency, req.into_inner()).await?;
        Ok(Response::new(receipt))
    }
}
