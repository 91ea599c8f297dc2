//! Refusals the transport makes before the node sees a request, answered as the contract
//! says. tonic refuses a message over a port's decoding limit with OUT_OF_RANGE and bytes it
//! cannot decode with INTERNAL; the contract says RESOURCE_EXHAUSTED/`too-large` and
//! INVALID_ARGUMENT/`malformed` (a client's fault is never INTERNAL). This module owns the
//! response layer that rewrites such a status wherever it travels: in the response headers
//! (a trailers-only answer, as for every refused unary call) and in the trailers (a status
//! after response messages, as on a stream). Which status becomes which is decided in
//! `error::transport_refusal`, the status itself built by `From<NodeError> for Status`.

use crate::error::{transport_refusal, REASON_METADATA};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::task::{Context, Poll};
use tonic::codegen::Bytes;
use tonic::{Code, Status};

/// The layer that puts every response of a port through [`to_contract`].
pub type Layer = tower::util::MapResponseLayer<
    fn(http::Response<tonic::body::Body>) -> http::Response<ContractBody>,
>;

/// The response layer both ports are served with.
pub fn layer() -> Layer {
    tower::util::MapResponseLayer::new(to_contract)
}

/// Rewrites a transport refusal in the headers now and in the trailers when they come.
pub fn to_contract(response: http::Response<tonic::body::Body>) -> http::Response<ContractBody> {
    let (mut parts, body) = response.into_parts();
    rewrite(&mut parts.headers);
    http::Response::from_parts(parts, ContractBody { inner: body })
}

/// A response body whose trailers pass through [`rewrite`].
#[derive(Debug)]
pub struct ContractBody {
    inner: tonic::body::Body,
}

impl Body for ContractBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        Pin::new(&mut self.inner).poll_frame(cx).map(|frame| {
            frame.map(|frame| {
                frame.map(|mut frame| {
                    if let Some(trailers) = frame.trailers_mut() {
                        rewrite(trailers);
                    }
                    frame
                })
            })
        })
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Replaces a transport refusal among `headers` (headers or trailers) by the contract's
/// status; leaves every other status, and headers without one, as they are.
pub fn rewrite(headers: &mut HeaderMap) {
    let Some(code) = headers
        .get("grpc-status")
        .map(|v| Code::from_bytes(v.as_bytes()))
    else {
        return;
    };
    if !matches!(code, Code::OutOfRange | Code::Internal) {
        return;
    }
    let message = headers
        .get("grpc-message")
        .map(|v| percent_decoded(v.as_bytes()))
        .unwrap_or_default();
    let has_reason = headers.contains_key(REASON_METADATA);
    let Some(refusal) = transport_refusal(code, &message, has_reason) else {
        return;
    };
    for name in ["grpc-status", "grpc-message", "grpc-status-details-bin"] {
        headers.remove(name);
    }
    // Cannot fail: the message is text and the reason a plain token.
    let _ = Status::from(refusal).add_header(headers);
}

/// The text of a `grpc-message` value (percent-encoded UTF-8, gRPC over HTTP/2).
fn percent_decoded(raw: &[u8]) -> String {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (raw[i], raw.get(i + 1), raw.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push(((hex(h).unwrap_or(0) << 4) | hex(l).unwrap_or(0)) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    fn status_headers(code: Code, message: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        Status::new(code, message)
            .add_header(&mut h)
            .expect("headers");
        h
    }

    fn status_of(h: &HeaderMap) -> (Code, String, Option<String>) {
        let s = Status::from_header_map(h).expect("a status");
        (
            s.code(),
            s.message().to_string(),
            crate::error::reason_of(&s).map(str::to_string),
        )
    }

    /// A body of given frames, as a streaming response of tonic ends: messages, then the
    /// status in the trailers.
    struct Frames(VecDeque<Frame<Bytes>>);

    impl Body for Frames {
        type Data = Bytes;
        type Error = Status;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
            Poll::Ready(self.0.pop_front().map(Ok))
        }
    }

    async fn trailers_after_message(code: Code, message: &str) -> HeaderMap {
        use futures_util::future::poll_fn;
        let body = Frames(VecDeque::from([
            Frame::data(Bytes::from_static(b"\0\0\0\0\0")),
            Frame::trailers(status_headers(code, message)),
        ]));
        let response = to_contract(http::Response::new(tonic::body::Body::new(body)));
        let mut body = response.into_body();
        let mut trailers = None;
        while let Some(frame) = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
            if let Ok(t) = frame.expect("a frame").into_trailers() {
                trailers = Some(t);
            }
        }
        trailers.expect("trailers")
    }

    #[tokio::test]
    async fn a_refusal_in_the_trailers_is_rewritten_too() {
        let t = trailers_after_message(
            Code::OutOfRange,
            "Error, decoded message length too large: found 9 bytes, the limit is: 4 bytes",
        )
        .await;
        let (code, message, reason) = status_of(&t);
        assert_eq!(
            (code, reason.as_deref()),
            (Code::ResourceExhausted, Some("too-large"))
        );
        assert!(message.contains("the limit is: 4 bytes"), "{message}");
        let t = trailers_after_message(
            Code::Internal,
            "failed to decode Protobuf message: Subject.given_name: invalid string value: data is not UTF-8 encoded",
        )
        .await;
        let (code, message, reason) = status_of(&t);
        assert_eq!(
            (code, reason.as_deref()),
            (Code::InvalidArgument, Some("malformed"))
        );
        assert!(message.contains("Subject.given_name"), "{message}");
        // The node's own statuses pass untouched, an INTERNAL of the node included.
        let t =
            trailers_after_message(Code::Internal, "internal error in the node; see its log").await;
        assert_eq!(status_of(&t).0, Code::Internal);
        let t = trailers_after_message(Code::Ok, "").await;
        assert_eq!(status_of(&t).0, Code::Ok);
    }

    #[test]
    fn the_nodes_own_statuses_are_left_alone() {
        let mut h = HeaderMap::new();
        Status::from(crate::NodeError::Internal("a bug".into()))
            .add_header(&mut h)
            .expect("headers");
        let before = h.clone();
        rewrite(&mut h);
        assert_eq!(h, before);
        // Even with a decoder's wording: a status with a reason is the node's.
        let mut h = status_headers(Code::Internal, "failed to decode Protobuf message: x");
        h.insert(REASON_METADATA, http::HeaderValue::from_static("internal"));
        let before = h.clone();
        rewrite(&mut h);
        assert_eq!(h, before);
    }

    #[test]
    fn grpc_messages_are_percent_decoded() {
        assert_eq!(percent_decoded(b"a%20b%C3%A4%zz%"), "a bä%zz%");
    }
}
