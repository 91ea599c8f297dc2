//! A link the tests can freeze: a TCP forwarder between two nodes on loopback that passes
//! bytes unchanged (mutual TLS runs end to end through it) until it is paused; while paused
//! it keeps reading but forwards nothing, counting what it holds back — a receiver frozen
//! mid-batch, as seen from the sender. Resuming forwards what was held, in order.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A running link; dropping it stops accepting (open connections end with their peers).
pub struct FrozenLink {
    pub addr: SocketAddr,
    paused: watch::Sender<bool>,
    held: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl FrozenLink {
    /// Forwards every connection to a fresh loopback port to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the link");
        let addr = listener.local_addr().expect("the link's address");
        let paused = watch::channel(false).0;
        let held = Arc::new(AtomicUsize::new(0));
        let (rx, counter) = (paused.subscribe(), held.clone());
        let task = tokio::spawn(async move {
            while let Ok((down, _)) = listener.accept().await {
                let Ok(up) = TcpStream::connect(upstream).await else {
                    continue;
                };
                let _ = (down.set_nodelay(true), up.set_nodelay(true));
                let (down_r, down_w) = down.into_split();
                let (up_r, up_w) = up.into_split();
                tokio::spawn(pump(down_r, up_w, rx.clone(), counter.clone()));
                tokio::spawn(pump(up_r, down_w, rx.clone(), counter.clone()));
            }
        });
        Self {
            addr,
            paused,
            held,
            task,
        }
    }

    /// Stops forwarding in both directions.
    pub fn pause(&self) {
        self.held.store(0, Ordering::SeqCst);
        self.paused.send_replace(true);
    }

    /// Forwards what was held back, and everything after it.
    pub fn resume(&self) {
        self.paused.send_replace(false);
    }

    /// Bytes read but held back since the last pause.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::SeqCst)
    }
}

impl Drop for FrozenLink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies `from` to `to`; while paused, keeps reading (so the sender sees its writes go
/// out) but holds everything back, and forwards it in order on resume.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut paused: watch::Receiver<bool>,
    held: Arc<AtomicUsize>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut pending: Vec<u8> = Vec::new();
    loop {
        tokio::select! {
            read = from.read(&mut buf) => {
                let n = match read {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                if *paused.borrow() {
                    held.fetch_add(n, Ordering::SeqCst);
                    pending.extend_from_slice(&buf[..n]);
                    continue;
                }
                if to.write_all(&pending).await.is_err() || to.write_all(&buf[..n]).await.is_err() {
                    break;
                }
                pending.clear();
            }
            changed = paused.changed(), if !pending.is_empty() => {
                if changed.is_err() {
                    break;
                }
                if !*paused.borrow() {
                    if to.write_all(&pending).await.is_err() {
                        break;
                    }
                    pending.clear();
                }
            }
        }
    }
    let _ = to.write_all(&pending).await;
    let _ = to.shutdown().await;
}
