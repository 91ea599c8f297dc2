//! TLS below 1.2 is refused on both ports, asked for by a real OpenSSL client
//! (`openssl s_client`), with TLS 1.2 on the API port as the control that the probe works.

use kurzdraht_tests::*;
use std::process::{Command, Stdio};

/// Runs `openssl s_client` against `addr` with `version` (e.g. "-tls1_1"); returns whether
/// a TLS session was established, and the output.
fn handshake(addr: std::net::SocketAddr, version: &str, ca: &std::path::Path) -> (bool, String) {
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &addr.to_string(), version])
        // let the client itself offer old versions and ciphers
        .args([
            "-cipher",
            "DEFAULT:@SECLEVEL=0",
            "-servername",
            JA,
            "-CAfile",
        ])
        .arg(ca)
        .stdin(Stdio::null())
        .output()
        .expect("openssl must be installed (Debian package openssl)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let established = text.contains("New, TLSv1") || text.contains("Protocol  : TLSv1");
    (established && out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_below_1_2_is_refused() {
    let h = start().await;
    let cfg = h.fed.config(JA).unwrap();
    let ca = h.fed.dir.join("ca.pem");
    let (ok, text) = handshake(cfg.api_addr, "-tls1_2", &ca);
    assert!(ok, "control: TLS 1.2 to the API port should work:\n{text}");
    assert!(text.contains("TLSv1.2"), "{text}");
    for (port, addr) in [("api", cfg.api_addr), ("peer", cfg.peer_addr)] {
        for version in ["-tls1", "-tls1_1"] {
            let (ok, text) = handshake(addr, version, &ca);
            assert!(!ok, "{version} to the {port} port was accepted:\n{text}");
        }
    }
}
