//! The ports: what the request flow needs from the outside world (the API,
//! the session store, the time, randomness), as traits that the adapters
//! implement for real and the `memory` module (feature `test-util`) in
//! memory; the memory session store is a real option (`session.store =
//! "memory"`), so it lives in `store`, outside the test utilities.

use std::future::Future;
use std::sync::Arc;

use crate::exchange::{UpstreamRequest, UpstreamResponse};

/// The real API behind tokenjar.
///
/// Futures carry no `Send` bound: the actix adapter's HTTP client lives on
/// one worker thread and is not `Send`.
pub trait Upstream {
    /// The request body stream the server adapter hands over.
    type RequestBody;
    /// The response body stream handed back to the server adapter.
    type ResponseBody;

    /// Sends one request and resolves when the API's response head arrived;
    /// the body keeps streaming afterwards.
    ///
    /// # Errors
    /// [`UpstreamError`] when no complete response head arrived.
    fn send(
        &self,
        request: UpstreamRequest<Self::RequestBody>,
    ) -> impl Future<Output = Result<UpstreamResponse<Self::ResponseBody>, UpstreamError>>;

    /// Sends one request whose body is all at hand: tokenjar's own calls
    /// (a token refresh, a revocation) and a bodiless request sent again
    /// after a refresh. Resolves as [`send`](Self::send) does.
    ///
    /// # Errors
    /// [`UpstreamError`] when no complete response head arrived.
    fn send_bytes(
        &self,
        request: UpstreamRequest<Vec<u8>>,
    ) -> impl Future<Output = Result<UpstreamResponse<Self::ResponseBody>, UpstreamError>>;

    /// Reads a whole response body of at most `limit` bytes (used for the
    /// login and refresh answers, which must be parsed, and to drain an
    /// answer that is thrown away).
    ///
    /// # Errors
    /// [`BodyReadError::TooLarge`] past `limit`, or the stream's failure.
    fn read_body(
        &self,
        body: Self::ResponseBody,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<u8>, BodyReadError>>;

    /// Asks the API whether it answers at all (`GET url`, no cookie, no
    /// token), for the readiness probe: the status of any complete answer.
    ///
    /// # Errors
    /// [`UpstreamError`] when no complete response head arrived.
    fn probe(&self, url: &str) -> impl Future<Output = Result<u16, UpstreamError>>;
}

/// Where sessions live when the cookie holds only their id (SPEC §17,
/// `session.store = "memory" | "redis"`): [`crate::MemoryStore`] in one
/// process, the Redis adapter across instances.
///
/// Values arrive sealed by the domain, so a store never holds a token in
/// clear. Keys are the domain's; an adapter may put a prefix before them
/// (`session.redis_prefix`). Every key written has an expiry. Futures carry
/// no `Send` bound, like [`Upstream`]'s.
pub trait SessionStore {
    /// The value at `key`; `None` when there is none or it expired.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be asked.
    fn get(&self, key: &str) -> impl Future<Output = Result<Option<Vec<u8>>, StoreError>>;

    /// Sets `key` to `value` for `ttl_ms` milliseconds, and adds `key` to
    /// each set named in `indexes` (a session's `sid` and `sub`, for
    /// back-channel logout), each set kept at least as long as `key`. One
    /// round trip where the store allows; nothing written half.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be asked.
    fn put(
        &self,
        key: &str,
        value: &[u8],
        ttl_ms: u64,
        indexes: &[String],
    ) -> impl Future<Output = Result<(), StoreError>>;

    /// Sets `key` to `value` for `ttl_ms` only if `key` holds nothing (a
    /// lease, like Redis's `SET NX PX`); true when it was set.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be asked.
    fn put_new(&self, key: &str, value: &[u8], ttl_ms: u64)
        -> impl Future<Output = Result<bool, StoreError>>;

    /// Deletes `key` when it still holds `value` (a lease given back only
    /// by its holder); true when it was deleted.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be asked.
    fn delete_if(&self, key: &str, value: &[u8]) -> impl Future<Output = Result<bool, StoreError>>;

    /// Deletes `key`; a missing key is not an error.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be asked.
    fn delete(&self, key: &str) -> impl Future<Output = Result<(), StoreError>>;

    /// Deletes every key in the set `index`, and the set itself; the number
    /// of keys that were deleted.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be asked.
    fn delete_indexed(&self, index: &str) -> impl Future<Output = Result<u64, StoreError>>;

    /// Whether the store answers, for the readiness probe.
    ///
    /// # Errors
    /// [`StoreError`] when it does not.
    fn ping(&self) -> impl Future<Output = Result<(), StoreError>>;

    /// Waits about `ms` milliseconds before the store is asked again: the
    /// pace at which an instance polls for a refresh another instance
    /// holds the lease of. A store of one process, where that never
    /// happens, may return at once.
    fn pause(&self, ms: u64) -> impl Future<Output = ()>;
}

/// The session store could not be asked. The detail comes from the store's
/// client and never holds a session's value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// Unreachable, refused, timed out, or answered something unusable.
    #[error("the session store is unavailable: {0}")]
    Unavailable(String),
}

/// Wall-clock time, for cookie lifetimes.
pub trait Clock {
    /// Seconds since the Unix epoch.
    fn now(&self) -> i64;
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    fn now(&self) -> i64 {
        (**self).now()
    }
}

/// Unpredictable bytes: cookie nonces and fresh keys. Passed in rather
/// than read from the operating system here, as rustls' crypto provider
/// passes in its `secure_random`, so that the rules stay free of I/O and a
/// test can make every value the flow produces reproducible.
pub trait Random {
    /// Fills `dest` with random bytes, from a cryptographically secure
    /// source in production.
    ///
    /// # Errors
    /// [`RandomError`] when no random bytes could be had.
    fn fill(&self, dest: &mut [u8]) -> Result<(), RandomError>;
}

impl<R: Random + ?Sized> Random for Arc<R> {
    fn fill(&self, dest: &mut [u8]) -> Result<(), RandomError> {
        (**self).fill(dest)
    }
}

/// The random source failed (the operating system's generator could not
/// be read).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no random bytes could be had")]
pub struct RandomError;

/// Why an upstream exchange failed before a response head arrived.
/// The detail strings come from the transport and never hold a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    /// The API refused, reset or closed the connection.
    #[error("the API is unavailable: {0}")]
    Unavailable(String),
    /// The API did not answer within the configured time.
    #[error("the API did not answer in time")]
    Timeout,
    /// The client's request body went over `server.max_body_bytes`.
    #[error("the request body is over the configured limit")]
    RequestBodyTooLarge,
    /// The client paused its request body longer than allowed
    /// (`server.client_body_timeout_ms`).
    #[error("the client paused its request body too long")]
    RequestBodyTimeout,
    /// The client's request body failed (the client went away mid-upload,
    /// or sent a malformed body).
    #[error("the request body could not be read: {0}")]
    RequestBody(String),
}

/// Why a response body could not be read whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyReadError {
    /// Longer than the limit.
    #[error("the body is over the limit")]
    TooLarge,
    /// The API did not finish the body in time.
    #[error("the body did not arrive in time")]
    Timeout,
    /// The API closed the connection before the body's end (fewer bytes
    /// than its `Content-Length`, or a chunked body without its last chunk).
    #[error("the API cut the body short")]
    Incomplete,
    /// The stream broke.
    #[error("the body stream failed: {0}")]
    Failed(String),
}
