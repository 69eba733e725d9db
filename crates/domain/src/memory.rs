//! In-memory adapters of the ports (feature `test-util`): an API that
//! answers from a function and records what it was sent, a clock that moves
//! only when told, a reproducible random source, and a browser's cookie
//! store for one site. With them the whole
//! [`crate::Gateway`] flow runs without a socket and gives the same bytes
//! every run.

use std::collections::BTreeMap;
use std::future::{ready, Future};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use serde_json::Value;

use crate::exchange::{BodySize, UpstreamRequest, UpstreamResponse};
use crate::headers::Headers;
use crate::ports::{BodyReadError, Clock, Random, RandomError, Upstream, UpstreamError};

/// What the in-memory API received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedRequest {
    /// Method.
    pub method: String,
    /// Absolute URL.
    pub url: String,
    /// Headers.
    pub headers: Headers,
    /// Body framing.
    pub body_size: BodySize,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl RecordedRequest {
    /// The URL's path and query (what follows the origin).
    pub fn path(&self) -> &str {
        let after_scheme = self.url.split_once("://").map_or(self.url.as_str(), |(_, r)| r);
        after_scheme.find('/').map_or("/", |i| &after_scheme[i..])
    }
}

type Handler = dyn Fn(&RecordedRequest) -> Result<UpstreamResponse<Vec<u8>>, UpstreamError> + Send + Sync;

/// An API made of a function. Bodies are byte vectors.
pub struct InMemoryUpstream {
    handler: Box<Handler>,
    recorded: Mutex<Vec<RecordedRequest>>,
    record: bool,
}

impl InMemoryUpstream {
    /// An API that answers every request with `handler`.
    pub fn new(
        handler: impl Fn(&RecordedRequest) -> Result<UpstreamResponse<Vec<u8>>, UpstreamError>
            + Send
            + Sync
            + 'static,
    ) -> Self {
        Self {
            handler: Box::new(handler),
            recorded: Mutex::new(Vec::new()),
            record: true,
        }
    }

    /// The same API, but forgetting what it was sent (for benchmarks, where
    /// the record would grow without bound).
    pub fn without_recording(mut self) -> Self {
        self.record = false;
        self
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.recorded
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Upstream for InMemoryUpstream {
    type RequestBody = Vec<u8>;
    type ResponseBody = Vec<u8>;

    fn send(
        &self,
        request: UpstreamRequest<Vec<u8>>,
    ) -> impl Future<Output = Result<UpstreamResponse<Vec<u8>>, UpstreamError>> {
        let recorded = RecordedRequest {
            method: request.method.as_str().to_owned(),
            url: request.url,
            headers: request.headers,
            body_size: request.body_size,
            body: request.body,
        };
        let answer = (self.handler)(&recorded);
        if self.record {
            self.recorded
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(recorded);
        }
        ready(answer)
    }

    fn send_bytes(
        &self,
        request: UpstreamRequest<Vec<u8>>,
    ) -> impl Future<Output = Result<UpstreamResponse<Vec<u8>>, UpstreamError>> {
        self.send(request)
    }

    fn read_body(&self, body: Vec<u8>, limit: usize) -> impl Future<Output = Result<Vec<u8>, BodyReadError>> {
        ready(if body.len() > limit {
            Err(BodyReadError::TooLarge)
        } else {
            Ok(body)
        })
    }

    /// A `GET url` with no headers, answered (and recorded) like any request.
    fn probe(&self, url: &str) -> impl Future<Output = Result<u16, UpstreamError>> {
        let request = UpstreamRequest {
            method: crate::Method::Get,
            url: url.to_owned(),
            headers: Headers::new(),
            body_size: BodySize::None,
            body: Vec::new(),
        };
        let sent = self.send(request);
        async move { sent.await.map(|response| response.status) }
    }
}

/// A response with a JSON body.
pub fn json_response(status: u16, body: &Value) -> UpstreamResponse<Vec<u8>> {
    bytes_response(status, "application/json", body.to_string().into_bytes())
}

/// A response with any body.
pub fn bytes_response(status: u16, content_type: &str, body: Vec<u8>) -> UpstreamResponse<Vec<u8>> {
    let mut headers = Headers::new();
    headers.append("content-type", content_type);
    UpstreamResponse {
        status,
        headers,
        body_size: BodySize::Sized(body.len() as u64),
        body,
    }
}

/// A clock that shows a set time and moves only when told.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    /// A clock showing `now` (Unix seconds).
    pub fn new(now: i64) -> Self {
        Self(AtomicI64::new(now))
    }

    /// Moves the clock forward by `seconds`.
    pub fn advance(&self, seconds: i64) {
        self.0.fetch_add(seconds, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Reproducible bytes for tests: a SplitMix64 stream from a seed. Not
/// secure, and not meant to be: it makes every nonce and key the flow
/// produces the same on every run, while successive values still differ.
#[derive(Debug, Default)]
pub struct SeededRandom(AtomicU64);

impl SeededRandom {
    /// A stream starting from `seed`.
    pub const fn new(seed: u64) -> Self {
        Self(AtomicU64::new(seed))
    }
}

impl Random for SeededRandom {
    fn fill(&self, dest: &mut [u8]) -> Result<(), RandomError> {
        const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;
        for chunk in dest.chunks_mut(8) {
            let mut z = self.0.fetch_add(GAMMA, Ordering::Relaxed).wrapping_add(GAMMA);
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            chunk.copy_from_slice(&z.to_le_bytes()[..chunk.len()]);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_random_repeats_per_seed_and_moves_on_each_fill() {
        let fill = |random: &SeededRandom| {
            let mut bytes = [0; 13];
            random.fill(&mut bytes).unwrap();
            bytes
        };
        let (a, b) = (SeededRandom::new(1), SeededRandom::new(1));
        let first = fill(&a);
        assert_eq!(first, fill(&b));
        assert_ne!(first, fill(&a));
        assert_ne!(first, fill(&SeededRandom::new(2)));
    }

    #[test]
    fn recorded_path_is_what_follows_the_origin() {
        let r = |url: &str| RecordedRequest {
            method: "GET".into(),
            url: url.into(),
            headers: Headers::new(),
            body_size: BodySize::None,
            body: Vec::new(),
        };
        assert_eq!(r("http://api:9/v1/x?y=1").path(), "/v1/x?y=1");
        assert_eq!(r("http://api:9").path(), "/");
    }
}

/// What a browser keeps of one site's cookies, enough to follow the auth
/// cookie and its chunks: each `Set-Cookie` stores its name's value, or
/// deletes it with `Max-Age=0`; [`header`](Self::header) sends them back in
/// name order, so `<name>.10` goes before `<name>.2` (browsers promise no
/// order, and a join must not depend on one).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CookieStore(BTreeMap<String, String>);

impl CookieStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes in `Set-Cookie` values as a browser would. One that does not
    /// parse is ignored, as a browser ignores it.
    pub fn apply<S: AsRef<[u8]>>(&mut self, set_cookies: impl IntoIterator<Item = S>) {
        for set_cookie in set_cookies {
            let text = crate::text::lossy_utf8(set_cookie.as_ref());
            let Ok(cookie) = cookie::Cookie::parse(text.as_ref()) else {
                continue;
            };
            if cookie
                .max_age()
                .is_some_and(|age| age.is_zero() || age.is_negative())
            {
                self.0.remove(cookie.name());
            } else {
                self.0.insert(cookie.name().to_owned(), cookie.value().to_owned());
            }
        }
    }

    /// The `Cookie` header the browser sends: every cookie, in name order.
    pub fn header(&self) -> String {
        self.0
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// The names held, in order.
    pub fn names(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }

    /// The value held for `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// Stores `value` under `name` directly, as a page or an attacker with
    /// access to the cookies could.
    pub fn set(&mut self, name: &str, value: &str) {
        self.0.insert(name.to_owned(), value.to_owned());
    }

    /// Forgets `name`.
    pub fn remove(&mut self, name: &str) {
        self.0.remove(name);
    }
}
