//! A delaying TCP forwarder for `kurzdraht-bench e2e --link-delay-ms`: it stands between two peers on
//! loopback and holds every chunk for a fixed time in each direction, as a wide-area link
//! between two agencies' data centres would. Bytes pass unchanged (mutual TLS runs end to
//! end through it) and in order.

use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Forwards every connection to `listener` to `upstream`, each chunk `delay` late in both
/// directions; runs until the task is aborted.
pub(crate) async fn forward(listener: TcpListener, upstream: SocketAddr, delay: Duration) {
    while let Ok((downstream, _)) = listener.accept().await {
        tokio::spawn(async move {
            let Ok(up) = TcpStream::connect(upstream).await else {
                return;
            };
            let _ = (downstream.set_nodelay(true), up.set_nodelay(true));
            let (down_r, down_w) = downstream.into_split();
            let (up_r, up_w) = up.into_split();
            tokio::join!(pump(down_r, up_w, delay), pump(up_r, down_w, delay));
        });
    }
}

/// Copies `from` to `to`, each chunk `delay` after it was read.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let reader = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx
                        .send((Instant::now() + delay, buf[..n].to_vec()))
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
    };
    let writer = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}
