//! Compiles `proto/kurzdraht/v1/*.proto` with protox (pure Rust; no system protoc) and
//! generates prost messages, plus tonic services when the `grpc` feature is on.

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
    std::fs::write(
        out.join("kurzdraht_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    let serde = std::env::var_os("CARGO_FEATURE_SERDE").is_some();
    let mut builder = tonic_prost_build::configure();
    if serde {
        builder = builder.type_attribute(".", "#[derive(serde::Serialize)]");
    }
    builder
        .build_server(grpc)
        .build_client(grpc)
        .compile_fds(fds)?;
    Ok(())
}
