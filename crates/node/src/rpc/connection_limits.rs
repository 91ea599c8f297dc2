//! What a peer or an IT system can hold open on the node's two ports (`[limits]`, one
//! [`PortLimits`] per port), so that a flood of connections or streams keeps the node's
//! memory bounded:
//!
//! - connections: at most `connections` at once per port ([`bounded`]); further ones are
//!   not accepted until one closes (they wait in the kernel's backlog, costing the node
//!   nothing); a TLS handshake must finish within [`crate::tls::HANDSHAKE_TIMEOUT`];
//! - HTTP/2 streams: at most `streams_per_connection` open per connection
//!   (`SETTINGS_MAX_CONCURRENT_STREAMS`; the transport refuses more with
//!   `REFUSED_STREAM`), and a connection whose streams the node had to reset more than
//!   [`LOCAL_RESETS_PER_CONNECTION`] times is closed (`GOAWAY`, `ENHANCE_YOUR_CALM`);
//! - calls: on the AgencyApi at most `concurrent_requests_per_connection` running per
//!   connection (more wait unread; what they can hold is the connection's flow-control
//!   window); on PeerExchange per calling agency, before decoding
//!   ([`crate::rpc::peer_exchange::Admitted`]);
//! - headers: at most `max_header_list_bytes` per request;
//! - time: a call must be answered (its request body read) within `request_timeout`; a
//!   connection is pinged every `keepalive_interval` and closed when a ping is not
//!   answered within `keepalive_timeout`.
//!
//! Request bodies are bounded by each service's decoding limit
//! ([`crate::rpc::peer_exchange::transport_limit`]).

use crate::config::PortLimits;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_stream::{Stream, StreamExt};
use tonic::transport::server::Connected;
use tonic::transport::Server;

/// Streams of one connection the node may reset for the caller's faults (refused streams
/// included) before it closes the connection. hyper's default; tonic would switch it off.
pub const LOCAL_RESETS_PER_CONNECTION: usize = 1024;

/// A server for one port with that port's bounds.
pub fn server(port: &PortLimits) -> Server {
    let server = Server::builder()
        .max_concurrent_streams(port.streams_per_connection)
        .http2_max_header_list_size(port.max_header_list_bytes)
        .http2_keepalive_interval(Some(port.keepalive_interval))
        .http2_keepalive_timeout(Some(port.keepalive_timeout))
        .http2_max_local_error_reset_streams(Some(LOCAL_RESETS_PER_CONNECTION))
        .timeout(port.request_timeout);
    match port.concurrent_requests_per_connection {
        Some(limit) => server.concurrency_limit_per_connection(limit),
        None => server,
    }
}

/// An accepted connection holding one of its port's connection slots until it is dropped.
pub struct Bounded<IO> {
    io: IO,
    _slot: OwnedSemaphorePermit,
}

/// Accepts from `incoming` only while fewer than `max` of its connections are open.
pub fn bounded<S, IO>(incoming: S, max: usize) -> impl Stream<Item = io::Result<Bounded<IO>>>
where
    S: Stream<Item = io::Result<IO>> + Unpin,
{
    let slots = Arc::new(Semaphore::new(max.max(1)));
    futures_util::stream::unfold((incoming, slots), |(mut incoming, slots)| async move {
        // The semaphore is never closed.
        let slot = slots.clone().acquire_owned().await.ok()?;
        let next = incoming.next().await?;
        Some((
            next.map(|io| Bounded { io, _slot: slot }),
            (incoming, slots),
        ))
    })
}

impl<IO: Connected> Connected for Bounded<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Bounded<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Bounded<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}
