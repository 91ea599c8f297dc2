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

/// The requests that carry a password show it as `<redacted>` (no log or panic message can
/// hold it).
mod redacted {
    use super::v1::{AddAccountRequest, SetAccountPasswordRequest};
    use std::fmt;

    impl fmt::Debug for AddAccountRequest {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("AddAccountRequest")
                .field("name", &self.name)
                .field("display_name", &self.display_name)
                .field("role", &self.role)
                .field("password", &"<redacted>")
                .finish()
        }
    }

    impl fmt::Debug for SetAccountPasswordRequest {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("SetAccountPasswordRequest")
                .field("name", &self.name)
                .field("password", &"<redacted>")
                .finish()
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn passwords_are_not_shown() {
            let add = AddAccountRequest {
                name: "l.jensen".into(),
                password: "geheim-geheim-42".into(),
                ..Default::default()
            };
            let set = SetAccountPasswordRequest {
                name: "l.jensen".into(),
                password: "geheim-geheim-42".into(),
            };
            for shown in [format!("{add:?}"), format!("{set:?}")] {
                assert!(
                    shown.contains("l.jensen") && !shown.contains("geheim"),
                    "{shown}"
                );
            }
        }
    }
}

/// The encoded `FileDescriptorSet` of the contract, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/kurzdraht_descriptor.bin"));

pub use prost::Message;
