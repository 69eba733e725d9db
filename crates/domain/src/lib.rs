//! tokenjar's rules, free of I/O: how the auth cookie is sealed and opened, how
//! a login response gives up its token, where each request path goes, how a
//! browser request becomes an upstream request, and the request flow that ties
//! them together behind ports.
//!
//! The crate has no actix, awc or tokio dependency, and reads neither the
//! clock nor the operating system's random generator itself: time and
//! randomness come in through the [`Clock`] and [`Random`] ports, the API
//! through the [`Upstream`] port. A server-side renderer or any other Rust
//! program can use [`CookieJar`] and [`TokenRules`] to open the auth cookie
//! from a `Cookie` header and build the upstream header exactly as the proxy
//! does.
//!
//! Features: `test-util` adds the `memory` module (in-memory adapters of the
//! ports, so that the whole [`Gateway`] flow runs in tests without a socket)
//! and the `oracle` module; `demo` adds the `demo` module (the demo API of
//! `tokenjar demo`).
//!
//! ```
//! use tokenjar_domain::{CookieJar, CookieKeys, CookiePolicy, CookieState, Random, RandomError};
//!
//! /// Randomness comes from the caller: the operating system's generator in
//! /// production, anything reproducible in a test.
//! struct Dice;
//! impl Random for Dice {
//!     fn fill(&self, dest: &mut [u8]) -> Result<(), RandomError> {
//!         dest.fill(4);
//!         Ok(())
//!     }
//! }
//!
//! let jar = CookieJar::new(CookiePolicy::default(), CookieKeys::generate(&Dice).unwrap());
//! let issued = jar.issue(&"tok".parse().unwrap(), 1_000, &Dice).unwrap();
//! // The browser sends back `name=value` (a short token needs one cookie).
//! let header = issued.set_cookies[0].split(';').next().unwrap().to_owned();
//! match jar.open([header.as_bytes()], 1_000) {
//!     CookieState::Valid(session) => assert_eq!(session.token.expose(), "tok"),
//!     other => panic!("{other:?}"),
//! }
//! ```

mod cookies;
mod csrf;
#[cfg(feature = "demo")]
pub mod demo;
mod error;
mod exchange;
mod forwarding;
mod gateway;
mod headers;
mod login;
#[cfg(any(test, feature = "test-util"))]
pub mod memory;
mod method;
mod oidc;
#[cfg(feature = "test-util")]
pub mod oracle;
mod ports;
mod refresh;
mod relay;
pub mod request_id;
mod routes;
mod setting;
mod store;
mod text;
mod token;
mod websocket;

pub use cookies::{
    Carried, CookieError, CookieJar, CookieKeys, CookiePolicy, CookieState, IssuedCookie, KeyError, Part,
    Rejection, SameSite, Session, CHUNK_BYTES, DEFAULT_MAX_CHUNKS, DEFAULT_NAME, KEY_LEN, MAX_CHUNKS_LIMIT,
    MAX_COOKIE_BYTES,
};
pub use csrf::{CsrfRefusal, CsrfRules, OriginRefusal};
pub use error::{ErrorBody, ErrorKind, FlowError};
pub use exchange::{
    BodySize, ClientRequest, Reply, ReplyBody, UpstreamBase, UpstreamRequest, UpstreamResponse, UrlError,
};
pub use forwarding::{Cidr, Forwarding};
pub use gateway::{Gateway, Handled, LoginResult, Rules};
pub use headers::Headers;
pub use login::{Login, LoginError, LoginRules, MAX_LOGIN_BODY};
pub use method::Method;
pub use oidc::{
    return_to, AuthError, Discovered, ErrorCode, IdClaims, IdTokenError, KeySet, LogoutClaims, Metadata,
    Oidc, OidcClient, PendingLogin, Prompt, ProviderError, TokenAnswer, BACKCHANNEL_LOGOUT_EVENT,
    CLOCK_SKEW_S, KEY_REFETCH_S, MAX_PENDING, MAX_PROVIDER_BODY, PENDING_LIFETIME_S,
};
pub use ports::{
    BodyReadError, Clock, Random, RandomError, SessionStore, StoreError, Upstream, UpstreamError,
};
pub use refresh::{
    Lease, RefreshResult, RefreshRules, Refreshes, Renewal, Turn, Verdict, Waiting, MAX_REMEMBERED,
    MAX_REMEMBERED_BYTES,
};
pub use relay::{request_headers, response_headers};
pub use routes::{Listener, Op, Pages, PathError, Route, RouteClass, Routes};
pub use setting::SettingError;
pub use store::{
    session_indexes, session_key, MemoryStore, NoStore, StoreRules, DEFAULT_STORED_LIFETIME_S,
    MAX_MEMORY_KEYS, SESSION_ID_BYTES,
};
pub use token::{Grant, Token, TokenError, TokenRules, MAX_TOKEN_LEN};
pub use websocket::{is_handshake, CloseCode, MessageSize, WebSocketPlan};
