//! A bound on how long a request body may stall: a client that sends a complete head and then
//! stops short of its `Content-Length` would otherwise hold its connection (and one of
//! [`super::MAX_CONNECTIONS`]) for as long as it likes.
//!
//! [`StallTimeout`] wraps the body hyper hands over and fails it once no bytes have arrived for
//! its limit since the handler first asked for them (so a handler that waits for the store
//! before reading, or a client waiting for `100 Continue`, is not cut short). The handler's body
//! extractor then refuses the request, which serve answers as 408 in the service's shape and
//! closes. HTTP framing stays hyper's; this only times the frames.

use axum::body::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

/// The text of the error a stalled body ends with; serve finds it in the extractor's refusal.
pub const STALLED: &str = "the request body stopped arriving";

/// A body that fails with [`STALLED`] after `limit` without a frame.
pub struct StallTimeout<B> {
    body: B,
    limit: Duration,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    stalled: Arc<AtomicBool>,
}

impl<B> StallTimeout<B> {
    /// Wraps `body`; `stalled` is set once the limit has passed (the connection must close).
    pub fn new(body: B, limit: Duration, stalled: Arc<AtomicBool>) -> StallTimeout<B> {
        StallTimeout {
            body,
            limit,
            sleep: None,
            stalled,
        }
    }
}

impl<B> Body for StallTimeout<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if this.stalled.load(Ordering::Relaxed) {
            return Poll::Ready(Some(Err(stalled_error(this.limit))));
        }
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.sleep = None;
                Poll::Ready(frame.map(|r| r.map_err(Into::into)))
            }
            Poll::Pending => {
                let limit = this.limit;
                let sleep = this
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        this.stalled.store(true, Ordering::Relaxed);
                        Poll::Ready(Some(Err(stalled_error(limit))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

fn stalled_error(limit: Duration) -> axum::BoxError {
    format!("{STALLED}: nothing for {} s", limit.as_secs()).into()
}
