//! TLS below 1.2 is refused on both ports, asked for by a real OpenSSL client
//! (`openssl s_client`). On the peer port, which requires a client certificate of the
//! federation CA, every probe presents an agency's real certificate and key, so an old
//! version is refused for its version and not for a missing certificate. TLS 1.2 to each
//! port, with the same client settings, is the control that the probe works.

use kurzdraht_testkit::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// An agency's TLS certificate and key files, as `pki init` wrote them.
struct ClientCert {
    cert: PathBuf,
    key: PathBuf,
}

/// Runs `openssl s_client` against `addr` with `version` (e.g. "-tls1_1"), presenting
/// `client` if given; returns whether a TLS session was established, and the output.
fn handshake(
    addr: std::net::SocketAddr,
    version: &str,
    ca: &Path,
    client: Option<&ClientCert>,
) -> (bool, String) {
    let mut cmd = Command::new("openssl");
    cmd.args(["s_client", "-connect", &addr.to_string(), version])
        // let the client itself offer old versions and ciphers
        .args([
            "-cipher",
            "DEFAULT:@SECLEVEL=0",
            "-servername",
            JA,
            "-CAfile",
        ])
        .arg(ca);
    if let Some(c) = client {
        cmd.arg("-cert").arg(&c.cert).arg("-key").arg(&c.key);
    }
    let out = cmd
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
    // the Jobcenter's real identity, accepted by the Jugendamt's peer port
    let jobcenter = ClientCert {
        cert: h.fed.dir.join(JC).join("tls.pem"),
        key: h.fed.dir.join(JC).join("tls.key"),
    };
    for (port, addr, client) in [
        ("api", cfg.api_addr, None),
        ("peer", cfg.peer_addr, Some(&jobcenter)),
    ] {
        let (ok, text) = handshake(addr, "-tls1_2", &ca, client);
        assert!(
            ok,
            "control: TLS 1.2 to the {port} port should work:\n{text}"
        );
        assert!(text.contains("TLSv1.2"), "{text}");
        for version in ["-tls1", "-tls1_1"] {
            let (ok, text) = handshake(addr, version, &ca, client);
            assert!(!ok, "{version} to the {port} port was accepted:\n{text}");
            // refused at the hello, for the version: the server never got as far as
            // sending its certificate (let alone asking for the client's)
            assert!(
                text.contains("no peer certificate available"),
                "{version} to the {port} port failed after the hello:\n{text}"
            );
        }
    }
    // Without a certificate even TLS 1.2 fails on the peer port: the reason the probes
    // there must present one.
    let (ok, text) = handshake(cfg.peer_addr, "-tls1_2", &ca, None);
    assert!(
        !ok,
        "TLS 1.2 to the peer port without a client certificate was accepted:\n{text}"
    );
}
