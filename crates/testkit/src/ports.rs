//! Free loopback ports for local federations: what `pki init`, the demo, the tests and the
//! benchmarks configure their nodes on.

use kurzdraht_node::pki::{segeberg, AgencySpec};
use std::net::SocketAddr;

/// `n` distinct free loopback addresses: all bound at once (so none repeats), then released
/// for the caller to configure. Another process may take one in between; for local
/// federations, demos and tests that is good enough.
pub fn free_loopback_addrs(n: usize) -> std::io::Result<Vec<SocketAddr>> {
    let listeners = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()?;
    listeners.iter().map(|l| l.local_addr()).collect()
}

/// The three Segeberg agencies on free loopback ports (peer, API and, with `metrics`, a
/// metrics port each).
pub fn segeberg_on_free_ports(metrics: bool) -> std::io::Result<Vec<AgencySpec>> {
    let a = free_loopback_addrs(9)?;
    let mut specs = segeberg([(a[0], a[1]), (a[3], a[4]), (a[6], a[7])]);
    if metrics {
        for (i, spec) in specs.iter_mut().enumerate() {
            spec.metrics_addr = Some(a[3 * i + 2]);
        }
    }
    Ok(specs)
}
