//! Micro-benchmarks of the domain work tokenjar does on every proxied
//! request: open the sealed cookie from a browser's `Cookie` header, route
//! the path, plan the upstream request, build the token header — and the
//! whole in-memory flow around them.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use tokenjar_domain::memory::{json_response, InMemoryUpstream, ManualClock, SeededRandom};
use tokenjar_domain::{
    request_headers, ClientRequest, CookieJar, CookieKeys, CookiePolicy, CsrfRules, Forwarding, Gateway,
    Headers, LoginRules, Routes, Rules, Token, TokenRules, UpstreamBase,
};

/// The allocator the tokenjar binary uses, so the numbers are the deployed ones.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const NOW: i64 = 1_700_000_000;
const JWT: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJiZW5jaCIsImV4cCI6NDEwMjQ0NDgwMH0.c2lnbmF0dXJlLWJ5LXRoZS1hcGk";

fn rules() -> Rules {
    Rules {
        routes: Routes::new("/api", "/api/login", "/api/logout", "/api/session").unwrap(),
        upstream: UpstreamBase::parse("http://127.0.0.1:9090/v1").unwrap(),
        token: TokenRules::default(),
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
    }
}

/// What a browser typically sends with an API call.
fn browser_headers(cookie_header: &str) -> Headers {
    [
        ("host", "app.example.com"),
        ("user-agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0 Safari/537.36"),
        ("accept", "application/json"),
        ("accept-language", "en-GB,en;q=0.9"),
        ("accept-encoding", "gzip, deflate, br"),
        ("referer", "https://app.example.com/dashboard"),
        ("sec-fetch-site", "same-origin"),
        ("sec-fetch-mode", "cors"),
        ("connection", "keep-alive"),
        ("cookie", cookie_header),
    ]
    .into_iter()
    .collect()
}

fn benches(c: &mut Criterion) {
    let rules = rules();
    let token: Token = JWT.parse().unwrap();
    let issued = rules.cookies.issue(&token, NOW, &SeededRandom::new(2)).unwrap();
    let pair = issued.set_cookies[0].split(';').next().unwrap().to_owned();
    let cookie_header = format!("theme=dark; _ga=GA1.1.123456789.1700000000; {pair}; lang=en");
    let headers = browser_headers(&cookie_header);

    c.bench_function("open sealed cookie from Cookie header", |b| {
        b.iter(|| black_box(rules.cookies.open(black_box(headers.get_all("cookie")), NOW)))
    });
    c.bench_function("route the path", |b| {
        b.iter(|| black_box(rules.routes.classify(black_box("/api/users/7/orders"))))
    });
    c.bench_function("plan upstream headers and URL", |b| {
        b.iter(|| {
            let peer = Some([127, 0, 0, 1].into());
            let mut planned = request_headers(black_box(headers.clone()), peer, "http", &rules.forwarding);
            rules.token.apply(&mut planned, Some(&token));
            black_box((planned, rules.upstream.url("/users/7/orders", Some("page=2"))))
        })
    });
    c.bench_function("build the token header value", |b| {
        b.iter(|| black_box(rules.token.header_value(black_box(&token))))
    });

    let clock = Arc::new(ManualClock::new(NOW));
    let upstream = InMemoryUpstream::new(|_| Ok(json_response(200, &serde_json::json!({"ok": true}))))
        .without_recording();
    let gateway = Gateway::new(Arc::new(rules.clone()), upstream, clock, SeededRandom::new(3));
    c.bench_function("whole flow: proxied GET with sealed cookie (in memory)", |b| {
        b.iter(|| {
            let request = ClientRequest {
                method: "GET".into(),
                path: "/api/users/7/orders".to_owned(),
                query: Some("page=2".to_owned()),
                headers: headers.clone(),
                peer: Some([127, 0, 0, 1].into()),
                scheme: "http",
                body: Vec::new(),
            };
            black_box(pollster::block_on(gateway.handle(request)))
        })
    });
}

criterion_group!(per_request, benches);
criterion_main!(per_request);
