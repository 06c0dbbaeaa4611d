//! Bodies through filters: a whole body buffered up to a limit for the
//! filters that asked to see it whole, and [`Filtered`], which runs the body
//! phases of the filters that stream a body as each chunk passes.

use super::chain::{Run, Side};
use super::message::Chunk;
use crate::upstream::body::BoxError;
use bytes::Bytes;
use http::HeaderMap;
use http::header::CONTENT_LENGTH;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

/// Why a body could not be buffered.
#[derive(Debug)]
pub enum BufferError {
    /// It is (or says it is) longer than the limit.
    TooLarge,
    /// The peer's body failed.
    Failed(BoxError),
}

/// Reads a whole body, refusing it at once if its declared length is over
/// `limit` and as soon as more than `limit` bytes arrive.
pub async fn buffer<B>(body: B, headers: &HeaderMap, limit: usize) -> Result<Chunk, BufferError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let declared = headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(BufferError::TooLarge);
    }
    let collected = Limited::new(body, limit)
        .collect()
        .await
        .map_err(|e| if e.is::<LengthLimitError>() { BufferError::TooLarge } else { BufferError::Failed(e) })?;
    let trailers = collected.trailers().cloned();
    Ok(Chunk { data: collected.to_bytes(), end: true, trailers })
}

/// Fixes the framing headers of a message whose whole body filters have seen:
/// the new length, or none (chunked) when trailers follow, with `Trailer`
/// naming them (an HTTP/1.1 peer is sent only the trailers it declares).
pub fn set_length(headers: &mut HeaderMap, chunk: &Chunk) {
    if let Some(trailers) = &chunk.trailers {
        headers.remove(CONTENT_LENGTH);
        let names: Vec<&str> = trailers.keys().map(|k| k.as_str()).collect();
        if let Ok(v) = http::HeaderValue::from_str(&names.join(", ")) {
            headers.insert(http::header::TRAILER, v);
        }
    } else if !chunk.data.is_empty() || headers.contains_key(CONTENT_LENGTH) {
        headers.insert(CONTENT_LENGTH, chunk.data.len().into());
    }
}

/// A filter ended a streamed body (a reply or a fail-closed failure in a streamed phase).
#[derive(Debug, thiserror::Error)]
#[error("a filter ended the body")]
pub struct Aborted;

/// A body whose chunks pass through the body phases of the filters that
/// stream it. The last call has `end-of-stream` set (with the trailers, if
/// any), even when the body ends without a final data frame.
pub struct Filtered<B> {
    inner: B,
    run: Run,
    side: Side,
    ended: bool,
    trailers: Option<HeaderMap>,
}

impl<B> Filtered<B> {
    /// Runs `side`'s streamed body phases of `run` over `inner`.
    pub fn new(inner: B, run: Run, side: Side) -> Self {
        Filtered { inner, run, side, ended: false, trailers: None }
    }

    fn pass(&mut self, chunk: Chunk) -> Result<Bytes, BoxError> {
        let out = self.run.on_chunk(self.side, chunk).ok_or_else(|| Box::new(Aborted) as BoxError)?;
        if out.end {
            self.ended = true;
            self.trailers = out.trailers;
        }
        Ok(out.data)
    }
}

impl<B> Body for Filtered<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            if this.ended {
                return Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))));
            }
            let chunk = match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => Chunk { data, end: this.inner.is_end_stream(), trailers: None },
                    Err(frame) => match frame.into_trailers() {
                        Ok(trailers) => Chunk { data: Bytes::new(), end: true, trailers: Some(trailers) },
                        Err(_) => continue,
                    },
                },
                Some(Err(e)) => return Poll::Ready(Some(Err(e.into()))),
                None => Chunk { data: Bytes::new(), end: true, trailers: None },
            };
            let data = match this.pass(chunk) {
                Ok(data) => data,
                Err(e) => return Poll::Ready(Some(Err(e))),
            };
            if !data.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(data))));
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}
