//! tokenjar's rules, free of I/O: how the auth cookie is sealed and opened, how
//! a login response gives up its token, how a browser request becomes an
//! upstream request, and the request flow that ties them together behind ports.
//!
//! The crate has no actix, awc or tokio dependency. A server-side renderer or
//! any other Rust program can use [`CookieJar`] and [`TokenRules`] to open the
//! auth cookie from a `Cookie` header and build the upstream header exactly as
//! the proxy does, and [`memory`] holds in-memory adapters so that the whole
//! [`Gateway`] flow runs in tests without a socket.
//!
//! ```
//! use tokenjar_domain::{CookieJar, CookiePolicy, CookieKeys, CookieState, SameSite};
//!
//! let keys = CookieKeys::generate();
//! let jar = CookieJar::new(CookiePolicy::default(), keys);
//! let issued = jar.issue(&"tok".parse().unwrap(), 1_000).unwrap();
//! // The browser sends back `name=value`.
//! let header = issued.set_cookie.split(';').next().unwrap().to_owned();
//! match jar.open([header.as_bytes()], 1_000) {
//!     CookieState::Valid(session) => assert_eq!(session.token.expose(), "tok"),
//!     other => panic!("{other:?}"),
//! }
//! # let _ = SameSite::Lax;
//! ```

pub mod cookies;
pub mod csrf;
pub mod error;
pub mod flow;
pub mod forwarding;
pub mod headers;
pub mod login;
pub mod memory;
#[cfg(feature = "test-util")]
pub mod oracle;
pub mod path;
pub mod plan;
pub mod ports;
pub mod request_id;
mod text;
pub mod token;

pub use cookies::{
    CookieJar, CookieKeys, CookiePolicy, CookieState, IssuedCookie, KeyError, SameSite, Session,
};
pub use csrf::{CsrfRefusal, CsrfRules};
pub use error::{ErrorBody, FlowError, SettingError};
pub use flow::{Gateway, Handled, Rules};
pub use forwarding::{Cidr, Forwarding};
pub use headers::Headers;
pub use login::{LoginError, LoginRules};
pub use path::{PathError, Route, RouteClass, Routes};
pub use plan::{
    BodySize, ClientRequest, Reply, ReplyBody, UpstreamBase, UpstreamRequest, UpstreamResponse, UrlError,
};
pub use ports::{BodyReadError, Clock, Upstream, UpstreamError};
pub use token::{Token, TokenError, TokenRules};
