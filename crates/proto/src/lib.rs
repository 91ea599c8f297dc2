//! The wire contract of kurzdraht, generated from `proto/kurzdraht/v1/`.
//!
//! Messages are always generated (prost only). The tonic client and server for
//! `PeerExchange` and `AgencyApi` are generated with the `grpc` feature, so crates that only
//! sign, verify or store messages (`kurzdraht-envelope`, `kurzdraht-ledger`) never see tonic.

#![forbid(unsafe_code)]

/// `kurzdraht.v1`: envelope, message bodies, and the two services.
pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    include!(concat!(env!("OUT_DIR"), "/kurzdraht.v1.rs"));
    // Feature `serde`: the canonical protobuf JSON mapping (pbjson).
    #[cfg(feature = "serde")]
    include!(concat!(env!("OUT_DIR"), "/kurzdraht.v1.serde.rs"));
}

/// The encoded `FileDescriptorSet` of the contract, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/kurzdraht_descriptor.bin"));

pub use prost::Message;
