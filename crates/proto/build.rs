//! Compiles `proto/kurzdraht/v1/*.proto` with protox (pure Rust; no system protoc) and
//! generates prost messages, plus tonic services when the `grpc` feature is on, plus (feature
//! `serde`) pbjson's serde impls following the canonical protobuf JSON mapping.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = [
        "envelope.proto",
        "messages.proto",
        "peer.proto",
        "agency.proto",
    ]
    .map(|f| root.join("kurzdraht/v1").join(f));
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    let fds = protox::compile(&files, [&root])?;
    let grpc = std::env::var_os("CARGO_FEATURE_GRPC").is_some();
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptor = prost::Message::encode_to_vec(&fds);
    std::fs::write(out.join("kurzdraht_descriptor.bin"), &descriptor)?;
    #[cfg(feature = "serde")]
    canonical_json(&descriptor)?;
    tonic_prost_build::configure()
        // They carry a password: their Debug (in lib.rs) leaves it out.
        .skip_debug([
            ".kurzdraht.v1.AddAccountRequest",
            ".kurzdraht.v1.SetAccountPasswordRequest",
        ])
        .build_server(grpc)
        .build_client(grpc)
        .compile_fds(fds)?;
    Ok(())
}

/// `kurzdraht.v1.serde.rs`: Serialize and Deserialize for every message and enum, by the
/// canonical protobuf JSON mapping (lowerCamelCase names, enum value names, base64 bytes,
/// 64-bit integers as strings), printing fields that have their default value too (the
/// mapping's "always print fields with no presence" option), so a script sees every field.
#[cfg(feature = "serde")]
fn canonical_json(descriptor: &[u8]) -> Result<(), Box<dyn std::error::Error>> {
    pbjson_build::Builder::new()
        .register_descriptors(descriptor)?
        .emit_fields()
        .build(&[".kurzdraht.v1"])?;
    Ok(())
}
