//! The client's request body as a stream for the upstream client: counted
//! as it passes so that `server.max_body_bytes` holds without buffering,
//! cut when the client pauses longer than `server.client_body_timeout_ms`,
//! and readable whole first when it is small (so that a slow upload never
//! holds an API connection).

use std::cell::Cell;
use std::future::{poll_fn, Future as _};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_rt::time::{sleep, Instant, Sleep};
use actix_web::dev::Payload;
use actix_web::error::PayloadError;
use bytes::{Bytes, BytesMut};
use futures_core::Stream;

/// What went wrong with a request body, as flags read after an upstream
/// exchange failed (awc only reports that the body stream failed).
#[derive(Clone, Debug, Default)]
pub struct BodyFlags(Rc<Flags>);

/// The flags themselves, in one allocation per request.
#[derive(Debug, Default)]
struct Flags {
    exceeded: Cell<bool>,
    timed_out: Cell<bool>,
}

impl BodyFlags {
    /// The body went over `server.max_body_bytes`.
    pub fn exceeded(&self) -> bool {
        self.0.exceeded.get()
    }

    /// The client paused longer than `server.client_body_timeout_ms`.
    pub fn timed_out(&self) -> bool {
        self.0.timed_out.get()
    }
}

/// A request body on its way upstream, cut off past a byte limit or after
/// a pause that is too long.
pub struct RequestBody {
    payload: Payload,
    remaining: Option<u64>,
    flags: BodyFlags,
    idle: Duration,
    /// Armed while the client is awaited; made on the first wait only, so
    /// a body that is already there costs no timer.
    timer: Option<Pin<Box<Sleep>>>,
    /// Bytes read ahead (by [`read_up_to`](Self::read_up_to)), handed out
    /// before the rest of the payload.
    prefix: Option<Bytes>,
}

impl RequestBody {
    /// Wraps a payload; `limit` of `None` means no limit; `idle` is the
    /// longest pause allowed between two reads.
    pub fn new(payload: Payload, limit: Option<u64>, idle: Duration) -> Self {
        Self {
            payload,
            remaining: limit,
            flags: BodyFlags::default(),
            idle,
            timer: None,
            prefix: None,
        }
    }

    /// Flags that tell, after the upstream exchange failed, a too-large or
    /// stalled body from a broken one.
    pub fn flags(&self) -> BodyFlags {
        self.flags.clone()
    }

    /// Reads the body whole if it ends within `limit` bytes: `Some(body)`.
    /// A longer one gives `None`, and what was read is kept to be streamed
    /// first.
    ///
    /// # Errors
    /// The stream's failure (over the size limit, stalled, broken).
    pub async fn read_up_to(&mut self, limit: u64) -> Result<Option<Bytes>, PayloadError> {
        let mut collected = BytesMut::new();
        loop {
            match poll_fn(|cx| Pin::new(&mut *self).poll_next(cx)).await {
                None => return Ok(Some(collected.freeze())),
                Some(Err(e)) => return Err(e),
                Some(Ok(chunk)) => {
                    collected.extend_from_slice(&chunk);
                    if collected.len() as u64 > limit {
                        self.prefix = Some(collected.freeze());
                        return Ok(None);
                    }
                }
            }
        }
    }

    fn poll_payload(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, PayloadError>>> {
        let polled = Pin::new(&mut self.payload).poll_next(cx);
        if polled.is_ready() {
            // The client moved: the next wait starts a fresh pause.
            if let Some(timer) = self.timer.as_mut() {
                timer.as_mut().reset(Instant::now() + self.idle);
            }
            return polled;
        }
        let idle = self.idle;
        let timer = self.timer.get_or_insert_with(|| Box::pin(sleep(idle)));
        if timer.as_mut().poll(cx).is_ready() {
            self.flags.0.timed_out.set(true);
            return Poll::Ready(Some(Err(PayloadError::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client paused its request body too long",
            )))));
        }
        Poll::Pending
    }
}

impl Stream for RequestBody {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.flags.exceeded() || this.flags.timed_out() {
            return Poll::Ready(None);
        }
        if let Some(prefix) = this.prefix.take() {
            return Poll::Ready(Some(Ok(prefix)));
        }
        match this.poll_payload(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                if let Some(remaining) = this.remaining.as_mut() {
                    let len = chunk.len() as u64;
                    if len > *remaining {
                        this.flags.0.exceeded.set(true);
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
