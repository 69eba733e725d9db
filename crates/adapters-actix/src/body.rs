//! The client's request body as a stream for the upstream client, counted
//! as it passes so that `server.max_body_bytes` holds without buffering.

use std::cell::Cell;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use actix_web::dev::Payload;
use actix_web::error::PayloadError;
use bytes::Bytes;
use futures_core::Stream;

/// A request body on its way upstream, cut off past a byte limit.
pub struct RequestBody {
    payload: Payload,
    remaining: Option<u64>,
    exceeded: Rc<Cell<bool>>,
}

impl RequestBody {
    /// Wraps a payload; `limit` of `None` means no limit.
    pub fn new(payload: Payload, limit: Option<u64>) -> Self {
        Self {
            payload,
            remaining: limit,
            exceeded: Rc::new(Cell::new(false)),
        }
    }

    /// A flag that turns true once the limit was passed; read after the
    /// upstream exchange failed to tell a too-large body from a broken one.
    pub fn exceeded_flag(&self) -> Rc<Cell<bool>> {
        Rc::clone(&self.exceeded)
    }
}

impl Stream for RequestBody {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.exceeded.get() {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.payload).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                if let Some(remaining) = this.remaining.as_mut() {
                    let len = chunk.len() as u64;
                    if len > *remaining {
                        this.exceeded.set(true);
                        return Poll::Ready(Some(Err(PayloadError::Overflow)));
                    }
                    *remaining -= len;
                }
                Poll::Ready(Some(Ok(chunk)))
            }
            other => other,
        }
    }
}
