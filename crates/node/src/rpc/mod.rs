//! The tonic layer: the two gRPC services and what is served around them. Each service
//! method is thin — it decodes the request, calls one of the node's services
//! ([`crate::service`]) and turns an error into a status through the one conversion,
//! `From<NodeError> for Status` in [`crate::error`].
//!
//! - [`agency_api`]: the AgencyApi for the agency's IT systems, behind its bearer tokens.
//! - [`peer_exchange`]: the PeerExchange for peer nodes, behind mutual TLS, admitted per
//!   calling agency within [`peer_limits`].
//! - [`transport_refusals`]: what tonic refuses before a service sees it (on both ports),
//!   answered as the contract says (`too-large`, `malformed`).
//! - [`connection_limits`]: what a caller can hold open on either port.
//! - [`health`]: grpc.health.v1 (probing the store) and server reflection.

pub mod agency_api;
pub mod connection_limits;
pub mod health;
pub mod peer_exchange;
pub mod peer_limits;
pub mod transport_refusals;
