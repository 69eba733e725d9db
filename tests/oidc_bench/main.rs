//! `oidc-bench`, the OIDC side of `bench/run.sh` (SPEC §16): a fast fake
//! OpenID Provider to put tokenjar in front of, a load generator doing
//! whole logins (tokenjar's login route, the provider's authorization
//! endpoint, tokenjar's callback) and printing its result in wrk's format,
//! and one login printing the session's `Cookie` header for wrk.
//!
//! ```text
//! oidc-bench provider PORT
//! oidc-bench logins TOKENJAR_URL CONNECTIONS SECONDS
//! oidc-bench login TOKENJAR_URL
//! ```
//!
//! The provider keeps no state and checks nothing (not PKCE, not the
//! client's secret): the bench measures tokenjar, and every microsecond
//! the provider spends is taken from the load generator beside it. The
//! authorization code is the login's nonce (base64url), so that `/token`
//! can put it in the ID token without remembering anything. The access
//! token is signed once at start: its content does not change tokenjar's
//! work, and a second signature per login would only slow the load side.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix_web::http::header;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use bytes::Bytes;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

/// The signing key's id, in the JWKS and in every token's header.
const KID: &str = "oidc-bench-1";
/// Bytes of claims in the access token: real providers' tokens carry the
/// user's roles and groups, and reach several KB with a few dozen of each.
const ACCESS_CLAIMS_BYTES: usize = 3 * 1024;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: oidc-bench provider PORT | oidc-bench logins TOKENJAR_URL CONNECTIONS SECONDS \
                 | oidc-bench login TOKENJAR_URL";
    match (args.first().map(String::as_str), args.len()) {
        (Some("provider"), 2) => {
            let port: u16 = args[1].parse().expect(usage);
            actix_rt::System::new()
                .block_on(provider(port))
                .expect("the provider failed");
        }
        (Some("logins"), 4) => {
            let load = Load {
                base: args[1].trim_end_matches('/').to_owned(),
                connections: args[2].parse().expect(usage),
                duration: Duration::from_secs(args[3].parse().expect(usage)),
            };
            actix_rt::System::new().block_on(load.run());
        }
        (Some("login"), 2) => {
            let base = args[1].trim_end_matches('/').to_owned();
            let cookies = actix_rt::System::new().block_on(async move { login(&client(), &base).await });
            match cookies {
                Ok(cookies) => println!("{}", cookies.join("; ")),
                Err(why) => {
                    eprintln!("oidc-bench: the login failed: {why}");
                    std::process::exit(1);
                }
            }
        }
        _ => {
            eprintln!("{usage}");
            std::process::exit(2);
        }
    }
}

/// What the provider answers with, made once at start.
struct Provider {
    issuer: String,
    key: EncodingKey,
    discovery: Bytes,
    jwks: Bytes,
    access_token: String,
    /// Makes each login's refresh token and `sid` its own.
    logins: AtomicU64,
}

/// Serves the provider on one worker; prints the access token it hands
/// out on stdout (the bench gives nginx the same one in clear).
async fn provider(port: u16) -> std::io::Result<()> {
    let issuer = format!("http://127.0.0.1:{port}");
    let pair = rcgen::KeyPair::generate().expect("a P-256 key");
    // 0x04 || x || y: the uncompressed point.
    let point = pair.public_key_raw();
    let jwks = json!({"keys": [{
        "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": KID,
        "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
        "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
    }]});
    let discovery = json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/authorize"),
        "token_endpoint": format!("{issuer}/token"),
        "jwks_uri": format!("{issuer}/jwks"),
        "response_types_supported": ["code"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        // /authorize sends `iss` back (RFC 9207), so tokenjar checks it.
        "authorization_response_iss_parameter_supported": true,
    });
    let key = EncodingKey::from_ec_der(&pair.serialize_der());
    let access_token = access_token(&issuer, &key);
    let provider = web::Data::new(Provider {
        issuer,
        key,
        discovery: Bytes::from(discovery.to_string()),
        jwks: Bytes::from(jwks.to_string()),
        access_token,
        logins: AtomicU64::new(0),
    });
    let server = HttpServer::new({
        let provider = provider.clone();
        move || {
            App::new()
                .app_data(provider.clone())
                .route(
                    "/.well-known/openid-configuration",
                    web::get().to(discovery_document),
                )
                .route("/jwks", web::get().to(key_set))
                .route("/authorize", web::get().to(authorize))
                .route("/token", web::post().to(token))
        }
    })
    .workers(1)
    .bind(("127.0.0.1", port))?;
    println!("{}", provider.access_token);
    eprintln!(
        "oidc-bench: provider {} up, access token {} bytes",
        provider.issuer,
        provider.access_token.len()
    );
    server.run().await
}

/// An access token shaped like a real provider's: the user, the client,
/// scopes, and realm roles, client roles and groups until the claims are
/// [`ACCESS_CLAIMS_BYTES`] long. Valid for a day (the API never checks it).
fn access_token(issuer: &str, key: &EncodingKey) -> String {
    let now = now();
    let mut claims = json!({
        "iss": issuer, "sub": "bench-user", "aud": ["tokenjar-api", "account"], "azp": "tokenjar",
        "typ": "Bearer", "exp": now + 86_400, "iat": now, "auth_time": now,
        "jti": format!("bench-access-{now}"),
        "scope": "openid profile email offline_access",
        "name": "Bench User", "email": "bench.user@example.com", "email_verified": true,
        "preferred_username": "bench.user",
        "realm_access": {"roles": ["offline_access", "uma_authorization", "default-roles-bench"]},
        "resource_access": {
            "account": {"roles": ["manage-account", "manage-account-links", "view-profile"]},
            "tokenjar-api": {"roles": []},
        },
        "groups": [],
    });
    let areas = [
        "orders",
        "invoices",
        "customers",
        "reports",
        "inventory",
        "shipping",
    ];
    for i in 0.. {
        if claims.to_string().len() >= ACCESS_CLAIMS_BYTES {
            break;
        }
        let area = areas[i % areas.len()];
        let push = |value: &mut Value, item: String| value.as_array_mut().unwrap().push(Value::String(item));
        match i % 3 {
            0 => push(
                &mut claims["realm_access"]["roles"],
                format!("app-{area}-user-{i:02}"),
            ),
            1 => push(
                &mut claims["resource_access"]["tokenjar-api"]["roles"],
                format!("{area}:{}", if i % 2 == 0 { "read" } else { "write" }),
            ),
            _ => push(
                &mut claims["groups"],
                format!("/acme/{area}/region-{:02}/team-{i:02}", i % 7),
            ),
        }
    }
    sign(key, &claims)
}

fn sign(key: &EncodingKey, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(KID.to_owned());
    jsonwebtoken::encode(&header, claims, key).expect("ES256 signing")
}

fn now() -> i64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    i64::try_from(since.as_secs()).unwrap()
}

fn json_answer(body: Bytes) -> HttpResponse {
    HttpResponse::Ok().content_type("application/json").body(body)
}

async fn discovery_document(provider: web::Data<Provider>) -> HttpResponse {
    json_answer(provider.discovery.clone())
}

async fn key_set(provider: web::Data<Provider>) -> HttpResponse {
    json_answer(provider.jwks.clone())
}

/// The user is always logged in already: straight back to the client's
/// callback, the nonce carried in the code.
async fn authorize(
    provider: web::Data<Provider>,
    query: web::Query<HashMap<String, String>>,
) -> HttpResponse {
    let (Some(redirect), Some(state), Some(nonce)) =
        (query.get("redirect_uri"), query.get("state"), query.get("nonce"))
    else {
        return HttpResponse::BadRequest().body("redirect_uri, state and nonce are required");
    };
    let code = URL_SAFE_NO_PAD.encode(nonce);
    let location = format!(
        "{redirect}?code={}&state={}&iss={}",
        encode(&code),
        encode(state),
        encode(&provider.issuer)
    );
    HttpResponse::Found()
        .insert_header((header::LOCATION, location))
        .finish()
}

/// The code exchange (an ID token with the code's nonce) and the refresh
/// grant (the same tokens again, no ID token).
async fn token(
    provider: web::Data<Provider>,
    request: HttpRequest,
    form: web::Form<HashMap<String, String>>,
) -> HttpResponse {
    let refused = |error: &str| HttpResponse::BadRequest().json(json!({ "error": error }));
    let n = provider.logins.fetch_add(1, Ordering::Relaxed);
    let mut answer = json!({
        "access_token": provider.access_token,
        "token_type": "Bearer",
        "expires_in": 3600,
        "refresh_token": format!("bench-refresh-{:016x}-{n:08}", now()),
        "scope": "openid profile email offline_access",
    });
    match form.get("grant_type").map(String::as_str) {
        Some("authorization_code") => {
            let Some(nonce) = form
                .get("code")
                .and_then(|code| URL_SAFE_NO_PAD.decode(code).ok())
                .and_then(|nonce| String::from_utf8(nonce).ok())
            else {
                return refused("invalid_grant");
            };
            let now = now();
            let claims = json!({
                "iss": provider.issuer, "aud": client_id(&request, &form), "sub": "bench-user",
                "exp": now + 300, "iat": now, "auth_time": now, "nonce": nonce,
                "sid": format!("bench-session-{n:08}"),
                "name": "Bench User", "email": "bench.user@example.com",
                "preferred_username": "bench.user",
            });
            answer["id_token"] = Value::String(sign(&provider.key, &claims));
        }
        Some("refresh_token") => {}
        _ => return refused("unsupported_grant_type"),
    }
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(answer)
}

/// The client as it authenticated: `client_secret_basic`, else the form's
/// `client_id` (a public client).
fn client_id(request: &HttpRequest, form: &HashMap<String, String>) -> String {
    request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|v| STANDARD.decode(v).ok())
        .and_then(|v| String::from_utf8(v).ok())
        .and_then(|v| v.split_once(':').map(|(id, _)| id.to_owned()))
        .or_else(|| form.get("client_id").cloned())
        .unwrap_or_default()
}

/// Percent-encodes a query value (everything but RFC 3986's unreserved).
fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// A client that shows every redirect instead of following it (each step
/// of the login is checked), with a keep-alive pool of its own.
fn client() -> awc::Client {
    awc::Client::builder()
        .disable_redirects()
        .timeout(Duration::from_secs(10))
        .finish()
}

/// One whole login through tokenjar at `base`: its session cookies
/// (`name=value`), or what went wrong.
async fn login(client: &awc::Client, base: &str) -> Result<Vec<String>, String> {
    // tokenjar's login route: off to the provider, the pending login in a cookie.
    let (location, login_cookies) = step(client, &format!("{base}/api/login"), None).await?;
    // The provider: back to tokenjar's callback with a code.
    let (callback, _) = step(client, &location, None).await?;
    // The callback: the code exchanged, the ID token checked, the session set.
    let (landing, cookies) = step(client, &callback, Some(&login_cookies.join("; "))).await?;
    if landing.contains("auth_error") {
        return Err(format!("the callback refused the login: {landing}"));
    }
    let session: Vec<String> = cookies
        .into_iter()
        .filter(|c| {
            !c.split_once('=')
                .is_some_and(|(name, _)| name.ends_with("-login"))
        })
        .collect();
    if session.is_empty() {
        return Err("the callback set no session cookie".to_owned());
    }
    Ok(session)
}

/// A GET that must answer 302: its `Location` and the cookies it sets
/// (those with a value: the deleted ones are left out).
async fn step(
    client: &awc::Client,
    url: &str,
    cookie: Option<&str>,
) -> Result<(String, Vec<String>), String> {
    let mut request = client.get(url);
    if let Some(cookie) = cookie {
        request = request.insert_header((header::COOKIE, cookie));
    }
    let mut response = request.send().await.map_err(|e| format!("GET {url}: {e}"))?;
    // Read to the end, so that the connection goes back to the pool.
    let body = response.body().await.map_err(|e| format!("GET {url}: {e}"))?;
    if response.status() != awc::http::StatusCode::FOUND {
        return Err(format!(
            "GET {url}: {} {}",
            response.status(),
            String::from_utf8_lossy(&body)
        ));
    }
    let location = response
        .headers()
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| format!("GET {url}: a 302 without Location"))?
        .to_owned();
    let cookies = response
        .headers()
        .get_all(header::SET_COOKIE)
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .filter(|pair| pair.split_once('=').is_some_and(|(_, value)| !value.is_empty()))
        .map(str::to_owned)
        .collect();
    Ok((location, cookies))
}

struct Load {
    base: String,
    connections: usize,
    duration: Duration,
}

impl Load {
    /// Has each of `connections` tasks log in again and again until the
    /// time is up; prints wrk's summary, a login counted as a request.
    async fn run(self) {
        let latencies = Rc::new(RefCell::new(Vec::<u32>::with_capacity(1 << 20)));
        let failures = Rc::new(RefCell::new((0u64, None::<String>)));
        let started = Instant::now();
        let deadline = started + self.duration;
        let tasks = (0..self.connections).map(|_| {
            let latencies = Rc::clone(&latencies);
            let failures = Rc::clone(&failures);
            let base = self.base.clone();
            async move {
                let client = client();
                while Instant::now() < deadline {
                    let began = Instant::now();
                    match login(&client, &base).await {
                        Ok(_) => {
                            let micros = began.elapsed().as_micros().min(u128::from(u32::MAX));
                            latencies.borrow_mut().push(u32::try_from(micros).unwrap());
                        }
                        Err(why) => {
                            let mut failures = failures.borrow_mut();
                            failures.0 += 1;
                            failures.1.get_or_insert(why);
                        }
                    }
                }
            }
        });
        futures_util::future::join_all(tasks).await;
        let elapsed = started.elapsed().as_secs_f64();
        let mut latencies = latencies.take();
        latencies.sort_unstable();
        let at = |q: f64| {
            let i = ((latencies.len() as f64 - 1.0) * q).round() as usize;
            f64::from(latencies.get(i).copied().unwrap_or(0)) / 1000.0
        };
        let count = latencies.len();
        // wrk's summary lines, as bench/run.sh reads them; a failed login
        // is a "non-2xx or 3xx response".
        println!("  Latency Distribution");
        println!("     50%   {:.3}ms", at(0.50));
        println!("     99%   {:.3}ms", at(0.99));
        println!("  {count} requests in {elapsed:.2}s, 0.00B read");
        let (failed, first) = failures.take();
        if failed > 0 {
            println!("  Non-2xx or 3xx responses: {failed}");
            eprintln!(
                "oidc-bench: {failed} logins failed; the first: {}",
                first.unwrap_or_default()
            );
        }
        println!("Requests/sec: {:.2}", count as f64 / elapsed);
    }
}
