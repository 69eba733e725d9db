//! WebSocket handshakes (SPEC §13): which requests are one, and the plan of
//! the handshake tokenjar makes to the API in the browser's place. The
//! `Origin` rule that stands in for the CSRF header is
//! [`crate::CsrfRules::check_handshake_origin`], beside the other origin
//! rules; [`crate::Gateway::websocket`] puts them together.

use crate::cookies::Rejection;
use crate::headers::Headers;
use crate::method::Method;

/// Headers of the browser's handshake that belong to its own connection to
/// tokenjar: the API's handshake gets a key and version of the WebSocket
/// client's own making. Extensions are never offered upstream: with
/// `permessage-deflate` a frame's size would no longer be the message's,
/// and `websocket.max_message_bytes` would limit compressed bytes.
const HANDSHAKE_OWN: [&str; 3] = [
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-extensions",
];

/// Whether a request asks for a WebSocket (RFC 6455 §4.1): a `GET` whose
/// `Upgrade` lists `websocket` and whose `Connection` lists `upgrade`
/// (browsers send `Upgrade` alone, or with `keep-alive`), any case.
pub fn is_handshake(method: &Method, headers: &Headers) -> bool {
    *method == Method::Get
        && lists(headers, "upgrade", "websocket")
        && lists(headers, "connection", "upgrade")
}

/// Whether a comma-separated header `name` has `token` among its elements.
fn lists(headers: &Headers, name: &str, token: &str) -> bool {
    headers.get_all(name).any(|value| {
        value
            .split(|&b| b == b',')
            .any(|element| element.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    })
}

/// Removes the handshake headers the upstream WebSocket client makes itself
/// (see [`HANDSHAKE_OWN`]); `Sec-WebSocket-Protocol` stays, so that the API
/// chooses among the browser's subprotocols.
pub(crate) fn strip_handshake(headers: &mut Headers) {
    headers.retain(|name, _| !HANDSHAKE_OWN.contains(&name));
}

/// The handshake to make to the API for an admitted browser handshake, and
/// what the adapter needs to hold the socket open.
#[derive(Debug)]
pub struct WebSocketPlan {
    /// `ws://` or `wss://` (after `upstream.url`'s `http` or `https`), the
    /// same path and query as any API call.
    pub url: String,
    /// The headers of the API's handshake: the rules of SPEC §3 (no
    /// `Cookie`, no hop-by-hop, `X-Forwarded-*`), the cookie's token, the
    /// browser's `Sec-WebSocket-Protocol`; no key, version or extensions.
    pub headers: Headers,
    /// Seconds the session had left when the handshake was planned, when
    /// its end is known: the socket is closed with 1008 (policy violation)
    /// when they are up, so that the app reconnects with a fresh session.
    pub session_left_s: Option<u64>,
    /// Headers for the browser's answer, whatever it is (the deletion of a
    /// cookie that failed to open, or a refreshed session's cookies).
    pub reply_headers: Headers,
    /// A cookie that was sent but refused (and is being deleted).
    pub rejected_cookie: Option<Rejection>,
    /// Auth cookies that opened to different sessions: none was used.
    pub conflicting_cookies: bool,
    /// How the session's refresh went, when the handshake needed one.
    pub refresh: Option<crate::refresh::RefreshResult>,
}

/// A WebSocket close code that tokenjar itself sends (RFC 6455 §7.4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseCode {
    /// 1001: tokenjar is shutting down.
    GoingAway,
    /// 1002: a side sent a broken frame.
    Protocol,
    /// 1007: a text message that is not UTF-8.
    InvalidText,
    /// 1008: the session ended (its token expired).
    Policy,
    /// 1009: a message over `websocket.max_message_bytes`.
    TooBig,
}

impl CloseCode {
    /// The code on the wire.
    pub fn code(self) -> u16 {
        match self {
            Self::GoingAway => 1001,
            Self::Protocol => 1002,
            Self::InvalidText => 1007,
            Self::Policy => 1008,
            Self::TooBig => 1009,
        }
    }

    /// The close reason sent with it (short: a control frame holds 123
    /// bytes of reason).
    pub fn reason(self) -> &'static str {
        match self {
            Self::GoingAway => "tokenjar is shutting down",
            Self::Protocol => "protocol error",
            Self::InvalidText => "text message is not UTF-8",
            Self::Policy => "the session has expired",
            Self::TooBig => "message too big",
        }
    }
}

/// Counts a message's bytes as its frames pass, against a limit: the limit
/// holds for the whole message, however many continuation frames carry it.
#[derive(Clone, Copy, Debug)]
pub struct MessageSize {
    limit: u64,
    seen: u64,
}

impl MessageSize {
    /// A counter for messages of at most `limit` bytes.
    pub fn new(limit: u64) -> Self {
        Self { limit, seen: 0 }
    }

    /// Takes a frame of `len` payload bytes; `first` when it starts a
    /// message (a text or binary frame, or a first fragment). False once
    /// the message is over the limit.
    pub fn frame(&mut self, first: bool, len: usize) -> bool {
        if first {
            self.seen = 0;
        }
        self.seen = self.seen.saturating_add(len as u64);
        self.seen <= self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Headers {
        pairs.iter().map(|(n, v)| (*n, *v)).collect()
    }

    /// A method, the request's headers, and whether it is a handshake.
    type Case = (&'static str, &'static [(&'static str, &'static str)], bool);

    #[test]
    fn a_handshake_is_a_get_that_asks_to_upgrade_to_websocket() {
        let cases: &[Case] = &[
            (
                "GET",
                &[("upgrade", "websocket"), ("connection", "Upgrade")],
                true,
            ),
            (
                "GET",
                &[("upgrade", "WebSocket"), ("connection", "keep-alive, Upgrade")],
                true,
            ),
            (
                "GET",
                &[("upgrade", "h2c, websocket"), ("connection", "upgrade")],
                true,
            ),
            (
                "GET",
                &[
                    ("upgrade", "websocket"),
                    ("connection", "keep-alive"),
                    ("connection", "upgrade"),
                ],
                true,
            ),
            (
                "POST",
                &[("upgrade", "websocket"), ("connection", "upgrade")],
                false,
            ),
            ("GET", &[("upgrade", "websocket")], false),
            ("GET", &[("connection", "upgrade")], false),
            ("GET", &[("upgrade", "h2c"), ("connection", "upgrade")], false),
            (
                "GET",
                &[("upgrade", "websockets"), ("connection", "upgrade")],
                false,
            ),
            (
                "GET",
                &[("upgrade", "websocket"), ("connection", "upgraded")],
                false,
            ),
            ("GET", &[], false),
        ];
        for (method, headers, expected) in cases {
            assert_eq!(
                is_handshake(&(*method).into(), &h(headers)),
                *expected,
                "{method} {headers:?}"
            );
        }
    }

    #[test]
    fn the_clients_own_handshake_headers_stay_behind() {
        let mut headers = h(&[
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("sec-websocket-version", "13"),
            (
                "sec-websocket-extensions",
                "permessage-deflate; client_max_window_bits",
            ),
            ("sec-websocket-protocol", "chat, superchat"),
            ("origin", "http://app.example"),
        ]);
        strip_handshake(&mut headers);
        assert_eq!(
            headers,
            h(&[
                ("sec-websocket-protocol", "chat, superchat"),
                ("origin", "http://app.example")
            ])
        );
    }

    #[test]
    fn the_limit_holds_for_the_whole_message() {
        let mut size = MessageSize::new(10);
        assert!(size.frame(true, 10));
        // A new message starts from zero.
        assert!(size.frame(true, 4));
        assert!(size.frame(false, 4));
        assert!(size.frame(false, 2));
        assert!(!size.frame(false, 1));
        assert!(size.frame(true, 0));
        assert!(!size.frame(true, 11));
    }

    #[test]
    fn close_codes_are_rfc_6455s() {
        for (code, wire) in [
            (CloseCode::GoingAway, 1001),
            (CloseCode::Protocol, 1002),
            (CloseCode::InvalidText, 1007),
            (CloseCode::Policy, 1008),
            (CloseCode::TooBig, 1009),
        ] {
            assert_eq!(code.code(), wire);
            assert!(code.reason().len() <= 123);
        }
    }
}
