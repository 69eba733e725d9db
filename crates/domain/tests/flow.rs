//! The whole request flow through the in-memory adapters, no socket:
//! login → proxied call → session → logout, and the ways each can fail.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;

use serde_json::{json, Value};
use tokenjar_domain::demo::DemoApi;
use tokenjar_domain::memory::{
    bytes_response, json_response, CookieStore, InMemoryUpstream, ManualClock, SeededRandom,
};
use tokenjar_domain::{
    ClientRequest, Clock, CookieJar, CookieKeys, CookiePolicy, CsrfRules, Forwarding, Gateway, Handled,
    Headers, LoginResult, LoginRules, Rejection, ReplyBody, RouteClass, Routes, Rules, TokenRules,
    UpstreamBase, UpstreamError, DEFAULT_NAME,
};

const NOW: i64 = 1_700_000_000;

fn rules(token: TokenRules, upstream: &str) -> Arc<Rules> {
    Arc::new(Rules {
        routes: Routes::new("/api", "/api/login", "/api/logout", "/api/session").unwrap(),
        upstream: UpstreamBase::parse(upstream).unwrap(),
        token,
        login: LoginRules::default(),
        cookies: CookieJar::new(
            CookiePolicy::default(),
            CookieKeys::generate(&SeededRandom::new(1)).unwrap(),
        ),
        csrf: CsrfRules::default(),
        forwarding: Forwarding::default(),
        refresh: None,
        oidc: None,
        store: None,
    })
}

struct App {
    gateway: Gateway<InMemoryUpstream, Arc<ManualClock>, SeededRandom>,
    clock: Arc<ManualClock>,
}

impl App {
    fn demo() -> Self {
        let clock = Arc::new(ManualClock::new(NOW));
        let upstream = DemoApi::new(3600, &SeededRandom::new(2))
            .unwrap()
            .into_upstream(clock.clone());
        Self::with(upstream, clock, TokenRules::default(), "http://api.internal:9000")
    }

    fn with(upstream: InMemoryUpstream, clock: Arc<ManualClock>, token: TokenRules, base: &str) -> Self {
        Self {
            gateway: Gateway::new(rules(token, base), upstream, clock.clone(), SeededRandom::new(3)),
            clock,
        }
    }

    fn answering(
        handler: impl Fn(
                &tokenjar_domain::memory::RecordedRequest,
            ) -> Result<tokenjar_domain::UpstreamResponse<Vec<u8>>, UpstreamError>
            + Send
            + Sync
            + 'static,
    ) -> Self {
        Self::with(
            InMemoryUpstream::new(handler),
            Arc::new(ManualClock::new(NOW)),
            TokenRules::default(),
            "http://api.internal:9000/v1",
        )
    }

    /// Sends a request as the app's own page would (with the CSRF header).
    fn send(&self, method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Handled<Vec<u8>> {
        let mut with_csrf = headers.to_vec();
        with_csrf.push(("x-csrf", "1"));
        self.send_bare(method, target, &with_csrf, body)
    }

    fn send_bare(
        &self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Handled<Vec<u8>> {
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
            None => (target.to_owned(), None),
        };
        let mut all: Headers = headers.iter().map(|(n, v)| (*n, *v)).collect();
        all.append("host", "app.example");
        if !body.is_empty() {
            all.append("content-length", body.len().to_string());
        }
        let request = ClientRequest {
            method: method.into(),
            path,
            query,
            headers: all,
            peer: Some("192.0.2.7".parse().unwrap()),
            scheme: "http",
            body: body.to_vec(),
        };
        pollster::block_on(self.gateway.handle(request))
    }

    fn recorded(&self) -> Vec<tokenjar_domain::memory::RecordedRequest> {
        self.gateway.upstream().requests()
    }
}

fn body_of(handled: &Handled<Vec<u8>>) -> Vec<u8> {
    match &handled.reply.body {
        ReplyBody::Full(b) => b.clone(),
        ReplyBody::Stream { body, .. } => body.clone(),
    }
}

fn json_of(handled: &Handled<Vec<u8>>) -> Value {
    serde_json::from_slice(&body_of(handled)).unwrap()
}

fn set_cookies(handled: &Handled<Vec<u8>>) -> Vec<String> {
    handled
        .reply
        .headers
        .get_all("set-cookie")
        .map(|v| String::from_utf8(v.to_vec()).unwrap())
        .collect()
}

/// The `Cookie` header a browser sends back for a `Set-Cookie`.
fn cookie_header(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().to_owned()
}

fn everything_sent(handled: &Handled<Vec<u8>>) -> Vec<u8> {
    let mut all = body_of(handled);
    for (n, v) in handled.reply.headers.iter() {
        all.extend_from_slice(n.as_bytes());
        all.extend_from_slice(v);
    }
    all
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

const DEMO_LOGIN: &[u8] = br#"{"username":"demo","password":"demo"}"#;

#[test]
fn login_call_session_logout() {
    let app = App::demo();

    // Not logged in yet.
    let me = app.send("GET", "/api/me", &[], b"");
    assert_eq!(me.reply.status, 401);
    let session = app.send("GET", "/api/session", &[], b"");
    assert_eq!(json_of(&session), json!({"loggedIn": false}));

    // Login: the token goes into the cookie, not to the browser.
    let login = app.send(
        "POST",
        "/api/login",
        &[("content-type", "application/json")],
        DEMO_LOGIN,
    );
    assert_eq!(login.reply.status, 200);
    assert_eq!(login.route, RouteClass::Login);
    assert_eq!(login.login, Some(LoginResult::Success));
    let body = json_of(&login);
    assert_eq!(body, json!({"user": {"name": "demo"}, "loggedIn": true}));
    let sent = app.recorded();
    assert_eq!(sent[1].url, "http://api.internal:9000/login");
    assert_eq!(sent[1].body, DEMO_LOGIN);
    let cookies = set_cookies(&login);
    assert_eq!(cookies.len(), 1);
    assert!(cookies[0].contains("HttpOnly"));
    assert!(cookies[0].contains("Max-Age=3600"), "{}", cookies[0]);
    let cookie = cookie_header(&cookies[0]);

    // The proxied call carries the token in `auth-token`.
    let me = app.send("GET", "/api/me", &[("cookie", &cookie)], b"");
    assert_eq!(me.reply.status, 200);
    assert_eq!(json_of(&me), json!({"name": "demo"}));
    let sent = app.recorded().pop().unwrap();
    let token = sent.headers.get_str("auth-token").unwrap().to_owned();
    assert!(token.split('.').count() == 3, "a JWT reached the API");
    assert!(
        !contains(&everything_sent(&login), &token),
        "token leaked in the login reply"
    );
    assert!(!cookie.contains(&token), "cookie holds the token in clear");
    assert!(!sent.headers.contains("cookie"));

    // Session reports the JWT's expiry.
    let session = app.send("GET", "/api/session", &[("cookie", &cookie)], b"");
    assert_eq!(
        json_of(&session),
        json!({"loggedIn": true, "expiresAt": NOW + 3600, "refreshable": false})
    );
    assert!(!contains(&everything_sent(&session), &token));

    // Logout deletes the cookie; the browser then sends none.
    let logout = app.send("POST", "/api/logout", &[("cookie", &cookie)], b"");
    assert_eq!(logout.reply.status, 200);
    assert_eq!(json_of(&logout), json!({"loggedIn": false}));
    let removal = set_cookies(&logout);
    assert_eq!(removal.len(), 1);
    assert!(removal[0].starts_with(&format!("{DEFAULT_NAME}=;")) && removal[0].contains("Max-Age=0"));
    let me = app.send("GET", "/api/me", &[], b"");
    assert_eq!(me.reply.status, 401);
}

#[test]
fn a_session_ends_when_its_expiry_passes() {
    let app = App::demo();
    let login = app.send("POST", "/api/login", &[], DEMO_LOGIN);
    let cookie = cookie_header(&set_cookies(&login)[0]);
    app.clock.advance(3599);
    let ok = app.send("GET", "/api/session", &[("cookie", &cookie)], b"");
    assert_eq!(json_of(&ok)["loggedIn"], true);
    app.clock.advance(1);
    let over = app.send("GET", "/api/session", &[("cookie", &cookie)], b"");
    assert_eq!(json_of(&over), json!({"loggedIn": false}));
    assert!(
        set_cookies(&over)[0].contains("Max-Age=0"),
        "expired cookie deleted"
    );
    assert!(over.rejected_cookie.is_some());
    assert_eq!(app.clock.now(), NOW + 3600);
}

#[test]
fn a_cookie_that_fails_to_open_counts_as_none_and_is_deleted() {
    let app = App::demo();
    for bad in ["garbage", "%ff", "\"\""] {
        let bad = &format!("{DEFAULT_NAME}={bad}");
        let me = app.send(
            "GET",
            "/api/me",
            &[("cookie", bad), ("auth-token", "forged")],
            b"",
        );
        assert_eq!(me.reply.status, 401, "{bad}");
        let sent = app.recorded().pop().unwrap();
        assert!(
            !sent.headers.contains("auth-token"),
            "{bad}: forged header reached the API"
        );
        let deleted = set_cookies(&me);
        assert_eq!(deleted.len(), 1, "{bad}");
        assert!(deleted[0].contains("Max-Age=0"));

        let session = app.send("GET", "/api/session", &[("cookie", bad)], b"");
        assert_eq!(json_of(&session), json!({"loggedIn": false}));
        assert!(set_cookies(&session)[0].contains("Max-Age=0"));
    }
}

#[test]
fn two_sessions_in_one_request_send_no_token_and_delete_nothing() {
    let app = App::demo();
    // Two people log in: the attacker tosses their cookie into the victim's browser.
    let login = |app: &App| cookie_header(&set_cookies(&app.send("POST", "/api/login", &[], DEMO_LOGIN))[0]);
    let attacker = login(&app);
    let victim = login(&app);
    for (case, cookies) in [
        ("attacker first", vec![format!("{attacker}; {victim}")]),
        ("victim first", vec![format!("{victim}; {attacker}")]),
        ("one Cookie header each", vec![attacker.clone(), victim.clone()]),
    ] {
        let headers: Vec<(&str, &str)> = cookies.iter().map(|c| ("cookie", c.as_str())).collect();
        let me = app.send("GET", "/api/me", &headers, b"");
        let sent = app.recorded().pop().unwrap();
        assert!(
            !sent.headers.contains("auth-token"),
            "{case}: a token went upstream"
        );
        assert_eq!(me.reply.status, 401, "{case}: the demo API saw no session");
        assert!(set_cookies(&me).is_empty(), "{case}: {:?}", set_cookies(&me));
        assert!(me.conflicting_cookies, "{case}");
        assert_eq!(me.rejected_cookie, None, "{case}");

        let session = app.send("GET", "/api/session", &headers, b"");
        assert_eq!(json_of(&session), json!({"loggedIn": false}), "{case}");
        assert!(
            set_cookies(&session).is_empty(),
            "{case}: {:?}",
            set_cookies(&session)
        );
        assert!(session.conflicting_cookies, "{case}");
    }
    // Each alone is a session, so the test is not passing for a duller reason.
    for cookie in [&attacker, &victim] {
        let session = app.send("GET", "/api/session", &[("cookie", cookie)], b"");
        assert_eq!(json_of(&session)["loggedIn"], true);
        assert!(!session.conflicting_cookies);
    }
}

#[test]
fn junk_before_a_session_neither_hides_nor_deletes_it() {
    let app = App::demo();
    let victim = cookie_header(&set_cookies(&app.send("POST", "/api/login", &[], DEMO_LOGIN))[0]);
    let token = {
        app.send("GET", "/api/me", &[("cookie", &victim)], b"");
        app.recorded()
            .pop()
            .unwrap()
            .headers
            .get_str("auth-token")
            .unwrap()
            .to_owned()
    };
    for junk in [4, 100] {
        let stuffed: Vec<String> = (0..junk).map(|i| format!("{DEFAULT_NAME}=junk{i}")).collect();
        let cookie = format!("{}; {victim}", stuffed.join("; "));
        let me = app.send("GET", "/api/me", &[("cookie", &cookie)], b"");
        assert_eq!(me.reply.status, 200, "{junk} junk values");
        let sent = app.recorded().pop().unwrap();
        assert_eq!(sent.headers.get_str("auth-token"), Some(token.as_str()), "{junk}");
        assert!(set_cookies(&me).is_empty(), "{junk}: {:?}", set_cookies(&me));
        assert_eq!(me.rejected_cookie, None);
    }
}

#[test]
fn a_login_over_a_bad_cookie_sets_only_the_new_cookie() {
    let app = App::demo();
    let login = app.send(
        "POST",
        "/api/login",
        &[("cookie", &format!("{DEFAULT_NAME}=garbage"))],
        DEMO_LOGIN,
    );
    let cookies = set_cookies(&login);
    assert_eq!(cookies.len(), 1, "{cookies:?}");
    assert!(!cookies[0].contains("Max-Age=0"));
}

#[test]
fn proxied_requests_reach_the_planned_url_with_the_planned_headers() {
    let app = App::answering(|_| Ok(json_response(200, &json!({"ok": true}))));
    let reply = app.send(
        "PUT",
        "/api/users/7?x=1",
        &[
            ("cookie", "theme=dark"),
            ("auth-token", "forged"),
            ("connection", "x-hop"),
            ("x-hop", "1"),
            ("x-forwarded-for", "203.0.113.9"),
            ("accept", "application/json"),
        ],
        b"payload",
    );
    assert_eq!(reply.reply.status, 200);
    let sent = app.recorded().pop().unwrap();
    assert_eq!(sent.method, "PUT");
    assert_eq!(sent.url, "http://api.internal:9000/v1/users/7?x=1");
    assert_eq!(sent.body, b"payload");
    assert_eq!(sent.body_size, tokenjar_domain::BodySize::Sized(7));
    let names: Vec<&str> = sent.headers.iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "accept",
            "x-csrf",
            "x-forwarded-for",
            "x-forwarded-proto",
            "x-forwarded-host"
        ]
    );
    // The client's own X-Forwarded-For is replaced: its peer is no proxy.
    assert_eq!(sent.headers.get_str("x-forwarded-for"), Some("192.0.2.7"));
    assert_eq!(sent.headers.get_str("x-forwarded-host"), Some("app.example"));
}

#[test]
fn the_token_goes_in_the_configured_header_with_its_scheme() {
    let clock = Arc::new(ManualClock::new(NOW));
    let upstream = DemoApi::new(60, &SeededRandom::new(2))
        .unwrap()
        .into_upstream(clock.clone());
    let app = App::with(
        upstream,
        clock,
        TokenRules::new("Authorization", "Bearer").unwrap(),
        "http://api.internal:9000",
    );
    let login = app.send("POST", "/api/login", &[], DEMO_LOGIN);
    let cookie = cookie_header(&set_cookies(&login)[0]);
    app.send(
        "GET",
        "/api/me",
        &[("cookie", &cookie), ("authorization", "Bearer forged")],
        b"",
    );
    let sent = app.recorded().pop().unwrap();
    let values: Vec<&[u8]> = sent.headers.get_all("authorization").collect();
    assert_eq!(values.len(), 1);
    assert!(
        values[0].starts_with(b"Bearer ey"),
        "{:?}",
        String::from_utf8_lossy(values[0])
    );
}

#[test]
fn api_responses_pass_through_minus_hops_and_the_auth_cookie() {
    let app = App::answering(|_| {
        let mut response = bytes_response(201, "text/plain", b"made".to_vec());
        response
            .headers
            .append("set-cookie", format!("{DEFAULT_NAME}=from-api; Path=/"));
        response.headers.append("set-cookie", "theme=dark");
        response.headers.append("connection", "x-hop");
        response.headers.append("x-hop", "1");
        response.headers.append("keep-alive", "timeout=5");
        Ok(response)
    });
    let reply = app.send("POST", "/api/things", &[], b"x");
    assert_eq!(reply.reply.status, 201);
    assert_eq!(body_of(&reply), b"made");
    assert_eq!(set_cookies(&reply), ["theme=dark"]);
    assert!(!reply.reply.headers.contains("x-hop"));
    assert!(!reply.reply.headers.contains("keep-alive"));
    assert!(matches!(
        reply.reply.body,
        ReplyBody::Stream {
            size: tokenjar_domain::BodySize::Sized(4),
            ..
        }
    ));
}

#[test]
fn login_spellings_are_all_intercepted() {
    let app = App::answering(|_| Ok(json_response(200, &json!({"authToken": "tok-abc-123"}))));
    for path in [
        "/api/login",
        "/api/LOGIN",
        "/api/login/",
        "/api//login",
        "/api/login?next=/",
        "/api/%6cogin",
    ] {
        let reply = app.send("POST", path, &[], b"{}");
        assert_eq!(reply.reply.status, 200, "{path}");
        assert!(
            !contains(&everything_sent(&reply), "tok-abc-123"),
            "{path} leaked the token"
        );
        assert_eq!(set_cookies(&reply).len(), 1, "{path}");
    }
}

#[test]
fn login_response_headers_never_carry_the_token() {
    let app = App::answering(|_| {
        let mut response = json_response(200, &json!({"authToken": "tok-abc-123", "id": 1}));
        response.headers.append("x-debug-token", "tok-abc-123");
        response.headers.append("set-cookie", "shadow=tok-abc-123");
        response.headers.append("etag", "\"v1\"");
        response.headers.append("x-kept", "yes");
        Ok(response)
    });
    let reply = app.send("POST", "/api/login", &[], b"{}");
    assert_eq!(reply.reply.status, 200);
    assert!(!contains(&everything_sent(&reply), "tok-abc-123"));
    assert_eq!(reply.reply.headers.get_str("x-kept"), Some("yes"));
    assert_eq!(
        reply.reply.headers.get_str("content-type"),
        Some("application/json")
    );
    assert_eq!(reply.reply.headers.get_str("cache-control"), Some("no-store"));
    assert!(!reply.reply.headers.contains("etag"));
    let sent = app.recorded().pop().unwrap();
    assert!(!sent.headers.contains("accept-encoding"));
}

#[test]
fn refused_logins_pass_through_without_a_cookie() {
    let app = App::demo();
    let reply = app.send(
        "POST",
        "/api/login",
        &[],
        br#"{"username":"demo","password":"no"}"#,
    );
    assert_eq!(reply.reply.status, 401);
    assert_eq!(json_of(&reply), json!({"error": "bad credentials"}));
    assert!(set_cookies(&reply).is_empty());
    assert_eq!(reply.login, Some(LoginResult::Refused));
}

#[test]
fn unusable_login_answers_are_502_without_a_cookie() {
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("text/html", b"<html>".to_vec(), ""),
        ("application/json", br#"{"user":1}"#.to_vec(), ""),
        ("application/json", br#"{"authToken":42}"#.to_vec(), ""),
        ("application/json", br#"{"authToken":"a\r\nb"}"#.to_vec(), ""),
        (
            "application/json",
            {
                let mut big = br#"{"authToken":"t","pad":""#.to_vec();
                big.resize(2 * 1024 * 1024, b'x');
                big
            },
            "",
        ),
        ("application/json", br#"{"authToken":"tok-1"}"#.to_vec(), "gzip"),
    ];
    for (content_type, body, encoding) in cases {
        let encoding = encoding.to_owned();
        let app = App::answering(move |_| {
            let mut response = bytes_response(200, content_type, body.clone());
            if !encoding.is_empty() {
                response.headers.append("content-encoding", encoding.clone());
            }
            Ok(response)
        });
        let reply = app.send("POST", "/api/login", &[], b"{}");
        assert_eq!(reply.reply.status, 502);
        assert_eq!(json_of(&reply)["error"], "bad_login_response");
        assert!(set_cookies(&reply).is_empty());
        assert_eq!(reply.login, Some(LoginResult::Failed));
    }
}

#[test]
fn upstream_failures_map_to_spec_errors() {
    let cases = [
        (
            UpstreamError::Unavailable("connection refused".into()),
            502,
            "upstream_unavailable",
        ),
        (UpstreamError::Timeout, 504, "upstream_timeout"),
        (UpstreamError::RequestBodyTooLarge, 413, "payload_too_large"),
    ];
    for (error, status, code) in cases {
        let app = App::answering(move |_| Err(error.clone()));
        let reply = app.send("GET", "/api/x", &[], b"");
        assert_eq!(reply.reply.status, status);
        assert_eq!(json_of(&reply)["error"], code);
        assert!(reply.error.is_some());
    }
}

#[test]
fn tokenjars_own_routes_and_refusals() {
    let app = App::answering(|_| Ok(json_response(200, &json!({}))));
    let cases = [
        ("GET", "/apix", 404, Some("not_found")),
        ("GET", "/", 404, Some("not_found")),
        ("GET", "/api/../admin", 400, Some("bad_request")),
        ("GET", "/api/%2e%2e/admin", 400, Some("bad_request")),
        ("GET", "/api/a%2Fb", 400, Some("bad_request")),
        ("GET", "/api/logout", 405, Some("method_not_allowed")),
        ("DELETE", "/api/session", 405, Some("method_not_allowed")),
        ("HEAD", "/api/session", 200, None),
        ("POST", "/api/logout", 200, None),
    ];
    for (method, path, status, code) in cases {
        let reply = app.send(method, path, &[], b"");
        assert_eq!(reply.reply.status, status, "{method} {path}");
        if let Some(code) = code {
            assert_eq!(json_of(&reply)["error"], code, "{method} {path}");
        }
    }
    assert!(app.recorded().is_empty(), "none of these reach the API");
    let reply = app.send("GET", "/api/logout", &[], b"");
    assert_eq!(reply.reply.headers.get_str("allow"), Some("POST"));
}

#[test]
fn forged_requests_are_refused_before_anything_happens() {
    let app = App::demo();
    let login = app.send("POST", "/api/login", &[], DEMO_LOGIN);
    let cookie = cookie_header(&set_cookies(&login)[0]);
    let before = app.recorded().len();
    type Case<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>);
    let forged: [Case; 4] = [
        ("POST", "/api/logout", vec![("cookie", &cookie)]),
        ("POST", "/api/login", vec![]),
        (
            "DELETE",
            "/api/things/1",
            vec![
                ("cookie", &cookie),
                ("x-csrf", "1"),
                ("origin", "https://evil.example"),
            ],
        ),
        (
            "PUT",
            "/api/things/1",
            vec![
                ("cookie", &cookie),
                ("x-csrf", "1"),
                ("sec-fetch-site", "cross-site"),
            ],
        ),
    ];
    for (method, path, headers) in forged {
        let reply = app.send_bare(method, path, &headers, b"{}");
        assert_eq!(reply.reply.status, 403, "{method} {path}");
        assert_eq!(json_of(&reply)["error"], "csrf");
        assert!(
            set_cookies(&reply).is_empty(),
            "{method} {path} touched the cookie"
        );
    }
    assert_eq!(app.recorded().len(), before, "a forged request reached the API");
    // The page's own requests, with its origin, pass.
    let own = app.send(
        "POST",
        "/api/logout",
        &[("cookie", &cookie), ("origin", "http://app.example")],
        b"",
    );
    assert_eq!(own.reply.status, 200);
}

impl App {
    /// A browser's WebSocket handshake to `target` with `headers` (`Host`
    /// `app.example` added): its plan, or the refusal.
    fn handshake(
        &self,
        target: &str,
        headers: &[(&str, &str)],
    ) -> Result<tokenjar_domain::WebSocketPlan, Handled<Vec<u8>>> {
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
            None => (target.to_owned(), None),
        };
        let mut all: Headers = [
            ("host", "app.example"),
            ("upgrade", "websocket"),
            ("connection", "Upgrade"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("sec-websocket-version", "13"),
            ("sec-websocket-extensions", "permessage-deflate"),
        ]
        .into_iter()
        .collect();
        for (n, v) in headers {
            all.append(*n, *v);
        }
        let request = ClientRequest {
            method: "GET".into(),
            path,
            query,
            headers: all,
            peer: Some("192.0.2.7".parse().unwrap()),
            scheme: "http",
            body: Vec::<u8>::new(),
        };
        let route = self
            .gateway
            .route(tokenjar_domain::Listener::Main, &request.path)
            .unwrap();
        assert!(
            self.gateway.is_websocket(&route, &request),
            "{target} is a handshake"
        );
        pollster::block_on(self.gateway.websocket(&route, request))
    }
}

const OWN_ORIGIN: (&str, &str) = ("origin", "http://app.example");

#[test]
fn a_websocket_handshake_carries_the_cookies_token_and_nothing_of_the_browsers_connection() {
    let app = App::demo();
    let login = app.send("POST", "/api/login", &[], DEMO_LOGIN);
    let cookie = cookie_header(&set_cookies(&login)[0]);
    let session = json_of(&app.send("GET", "/api/session", &[("cookie", &cookie)], b""));
    assert_eq!(session["loggedIn"], true);
    app.clock.advance(600);

    let plan = app
        .handshake(
            "/api/chat/room?x=1",
            &[
                ("cookie", &cookie),
                OWN_ORIGIN,
                ("sec-websocket-protocol", "chat.v2, chat.v1"),
                ("auth-token", "forged"),
            ],
        )
        .unwrap();
    assert_eq!(plan.url, "ws://api.internal:9000/chat/room?x=1");
    let issued = app.recorded().pop().unwrap();
    assert_eq!(issued.url, "http://api.internal:9000/login");
    let sent = &plan.headers;
    let tokens: Vec<&[u8]> = sent.get_all("auth-token").collect();
    assert_eq!(tokens.len(), 1);
    assert_ne!(tokens[0], b"forged");
    for gone in [
        "cookie",
        "host",
        "upgrade",
        "connection",
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-extensions",
    ] {
        assert!(!sent.contains(gone), "{gone} must not reach the API");
    }
    assert_eq!(sent.get_str("sec-websocket-protocol"), Some("chat.v2, chat.v1"));
    assert_eq!(sent.get_str("origin"), Some("http://app.example"));
    assert_eq!(sent.get_str("x-forwarded-for"), Some("192.0.2.7"));
    // The demo's tokens live an hour; ten minutes have passed.
    assert_eq!(plan.session_left_s, Some(3000));
    assert!(plan.reply_headers.is_empty());
    assert!(plan.rejected_cookie.is_none());
}

#[test]
fn a_websocket_handshake_without_a_usable_cookie_goes_on_without_a_token() {
    let app = App::demo();
    let plain = app.handshake("/api/chat", &[OWN_ORIGIN]).unwrap();
    assert!(!plain.headers.contains("auth-token"));
    assert_eq!(plain.session_left_s, None);
    assert!(plain.reply_headers.is_empty());

    let bad = format!("{DEFAULT_NAME}=garbage");
    let rejected = app
        .handshake("/api/chat", &[OWN_ORIGIN, ("cookie", &bad)])
        .unwrap();
    assert!(!rejected.headers.contains("auth-token"));
    assert!(rejected.rejected_cookie.is_some());
    let removal = rejected.reply_headers.get_str("set-cookie").unwrap();
    assert!(removal.contains("Max-Age=0"), "{removal}");
}

#[test]
fn a_websocket_handshake_needs_an_allowed_origin_not_the_csrf_header() {
    let app = App::demo();
    for headers in [
        &[("origin", "http://evil.example"), ("x-csrf", "1")][..],
        &[("x-csrf", "1")][..],
        &[("origin", "null")][..],
    ] {
        let refused = app.handshake("/api/chat", headers).unwrap_err();
        assert_eq!(refused.reply.status, 403, "{headers:?}");
        assert_eq!(json_of(&refused)["error"], "origin", "{headers:?}");
    }
    assert!(app.recorded().is_empty());
}

#[test]
fn only_upgrades_under_the_prefix_and_off_the_login_route_are_websockets() {
    let app = App::demo();
    let headers: Headers = [("upgrade", "websocket"), ("connection", "upgrade")]
        .into_iter()
        .collect();
    for (path, expected) in [
        ("/api/chat", true),
        ("/api", true),
        ("/api/login", false),
        ("/api/LOGIN/", false),
        ("/api/session", false),
        ("/elsewhere", false),
    ] {
        let request = ClientRequest {
            method: "GET".into(),
            path: path.to_owned(),
            query: None,
            headers: headers.clone(),
            peer: None,
            scheme: "http",
            body: Vec::<u8>::new(),
        };
        let route = app.gateway.route(tokenjar_domain::Listener::Main, path).unwrap();
        assert_eq!(app.gateway.is_websocket(&route, &request), expected, "{path}");
    }
}

/// A token of `len` printable bytes, no JWT.
fn long_token(len: usize) -> String {
    (0..len)
        .map(|i| char::from(b'a' + u8::try_from(i % 26).unwrap()))
        .collect()
}

/// An API whose login answers with `token` and whose other routes answer
/// 200, each trying to set an auth chunk cookie of its own.
fn api_issuing(token: String) -> App {
    App::answering(move |request| {
        let mut response = if request.url.ends_with("/login") {
            json_response(200, &json!({ "authToken": token }))
        } else {
            json_response(200, &json!({ "ok": true }))
        };
        response
            .headers
            .append("set-cookie", format!("{DEFAULT_NAME}.1=planted; Path=/"));
        Ok(response)
    })
}

#[test]
fn a_ten_kilobyte_token_travels_in_chunk_cookies() {
    let token = long_token(10_000);
    let app = api_issuing(token.clone());
    let mut browser = CookieStore::new();
    // A whole cookie left from an earlier, smaller session.
    browser.set(DEFAULT_NAME, "stale");

    let login = app.send("POST", "/api/login", &[("cookie", &browser.header())], b"{}");
    assert_eq!(login.reply.status, 200);
    assert_eq!(login.login, Some(LoginResult::Success));
    assert!(!contains(&everything_sent(&login), &token));
    let cookies = set_cookies(&login);
    browser.apply(&cookies);
    let chunk = |i: usize| format!("{DEFAULT_NAME}.{i}");
    assert_eq!(browser.names(), [chunk(0), chunk(1), chunk(2), chunk(3)]);
    // The API's own `.1` was dropped: the one `.1` set is tokenjar's.
    assert!(!cookies.iter().any(|c| c.contains("planted")), "{cookies:?}");
    assert!(cookies.iter().all(|c| c.contains("HttpOnly")));

    let call = app.send("GET", "/api/things", &[("cookie", &browser.header())], b"");
    assert_eq!(call.reply.status, 200);
    assert!(set_cookies(&call).is_empty(), "the API cannot plant a chunk");
    let sent = app.recorded().pop().unwrap();
    assert_eq!(sent.headers.get_str("auth-token"), Some(token.as_str()));
    assert!(!sent.headers.contains("cookie"));

    let session = app.send("GET", "/api/session", &[("cookie", &browser.header())], b"");
    assert_eq!(json_of(&session)["loggedIn"], true);

    let logout = app.send("POST", "/api/logout", &[("cookie", &browser.header())], b"");
    assert_eq!(logout.reply.status, 200);
    let removals = set_cookies(&logout);
    assert!(removals.iter().all(|c| c.contains("Max-Age=0")), "{removals:?}");
    browser.apply(&removals);
    assert!(browser.names().is_empty(), "{:?}", browser.names());
    let call = app.send("GET", "/api/things", &[("cookie", &browser.header())], b"");
    assert_eq!(
        app.recorded().pop().unwrap().headers.get_str("auth-token"),
        None,
        "{}",
        call.reply.status
    );
}

#[test]
fn a_spoiled_chunked_session_counts_as_none_and_every_cookie_goes() {
    let app = api_issuing(long_token(10_000));
    let mut browser = CookieStore::new();
    browser.apply(set_cookies(&app.send("POST", "/api/login", &[], b"{}")));
    browser.set(&format!("{DEFAULT_NAME}.2"), "AAAA");
    let call = app.send("GET", "/api/things", &[("cookie", &browser.header())], b"");
    assert_eq!(call.rejected_cookie, Some(Rejection::Unopenable));
    assert_eq!(app.recorded().pop().unwrap().headers.get_str("auth-token"), None);
    browser.apply(set_cookies(&call));
    assert!(browser.names().is_empty(), "{:?}", browser.names());
}

#[test]
fn a_token_too_large_for_the_cookies_is_502_token_too_large_without_a_cookie() {
    // 20 KB needs six cookies (four allowed); 70 KB is past any token.
    for len in [20_000, 70_000] {
        let app = api_issuing(long_token(len));
        let mut browser = CookieStore::new();
        browser.set(DEFAULT_NAME, "stale");
        let login = app.send("POST", "/api/login", &[("cookie", &browser.header())], b"{}");
        assert_eq!(login.reply.status, 502, "{len}");
        assert_eq!(json_of(&login)["error"], "token_too_large");
        let message = json_of(&login)["message"].as_str().unwrap().to_owned();
        assert!(message.contains("session.store"), "{message}");
        assert_eq!(login.login, Some(LoginResult::Failed));
        // No session cookie: only the deletion of the old, unopenable one.
        let cookies = set_cookies(&login);
        assert!(cookies.iter().all(|c| c.contains("Max-Age=0")), "{cookies:?}");
        assert!(!contains(&everything_sent(&login), &long_token(len)));
    }
}
