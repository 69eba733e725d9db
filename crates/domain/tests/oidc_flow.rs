//! OIDC mode through the whole request flow (SPEC §16), in memory: an
//! OpenID provider made of a function (discovery, keys, the token endpoint
//! with PKCE checks and rotating refresh tokens, revocation), a browser's
//! cookie store, and the login, callback, API call, refresh and logout.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair as _, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use tokenjar_domain::memory::{
    json_response, CookieStore, InMemoryUpstream, ManualClock, RecordedRequest, SeededRandom,
};
use tokenjar_domain::{
    ClientRequest, Clock, CookieJar, CookieKeys, CookiePolicy, CsrfRules, Forwarding, Gateway, Handled,
    Headers, LoginResult, LoginRules, Oidc, OidcClient, RefreshRules, ReplyBody, Routes, Rules, TokenRules,
    UpstreamBase, UpstreamError, UpstreamResponse,
};

const NOW: i64 = 1_700_000_000;
const ISSUER: &str = "http://127.0.0.1:4000";
const CALLBACK: &str = "https://app.example/api/callback";

/// A signing key of the provider's: its PKCS#8 and its JWK.
struct SigningKey {
    kid: String,
    pkcs8: Vec<u8>,
    jwk: Value,
}

impl SigningKey {
    fn new(kid: &str) -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
        let point = pair.public_key().as_ref();
        Self {
            kid: kid.to_owned(),
            pkcs8: pkcs8.as_ref().to_vec(),
            jwk: json!({
                "kty": "EC", "crv": "P-256", "kid": kid, "use": "sig", "alg": "ES256",
                "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
            }),
        }
    }

    fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &EncodingKey::from_ec_der(&self.pkcs8)).unwrap()
    }
}

/// A change to an ID token's claims before signing.
type Tamper = Box<dyn Fn(&mut Value) + Send>;

/// What the provider remembers of an authorization it granted.
struct Grant {
    nonce: String,
    challenge: String,
    user: String,
}

/// The provider: discovery, keys, authorization (simulated by
/// [`Provider::authorize`]), the token endpoint, revocation.
struct Provider {
    clock: Arc<ManualClock>,
    keys: Mutex<Vec<SigningKey>>,
    /// The key ID tokens are signed with (may be one not yet published).
    signer: Mutex<SigningKey>,
    codes: Mutex<HashMap<String, Grant>>,
    refresh: Mutex<HashMap<String, (String, bool)>>,
    issued: AtomicUsize,
    refresh_calls: AtomicUsize,
    jwks_fetches: AtomicUsize,
    revoked: Mutex<Vec<String>>,
    /// Mutates the ID token's claims before signing (attacks).
    tamper: Mutex<Option<Tamper>>,
    down: std::sync::atomic::AtomicBool,
}

impl Provider {
    fn new(clock: Arc<ManualClock>) -> Arc<Self> {
        let key = SigningKey::new("k1");
        let signer = SigningKey {
            kid: key.kid.clone(),
            pkcs8: key.pkcs8.clone(),
            jwk: key.jwk.clone(),
        };
        Arc::new(Self {
            clock,
            keys: Mutex::new(vec![key]),
            signer: Mutex::new(signer),
            codes: Mutex::new(HashMap::new()),
            refresh: Mutex::new(HashMap::new()),
            issued: AtomicUsize::new(0),
            refresh_calls: AtomicUsize::new(0),
            jwks_fetches: AtomicUsize::new(0),
            revoked: Mutex::new(Vec::new()),
            tamper: Mutex::new(None),
            down: std::sync::atomic::AtomicBool::new(false),
        })
    }

    fn fresh(&self, kind: &str) -> String {
        format!("{kind}-{}", self.issued.fetch_add(1, Ordering::SeqCst))
    }

    /// The user logs in at the authorization URL: the callback URL the
    /// provider sends the browser to.
    fn authorize(&self, authorization_url: &str, user: &str) -> String {
        let url = url::Url::parse(authorization_url).unwrap();
        let q: HashMap<String, String> = url.query_pairs().into_owned().collect();
        assert_eq!(q["code_challenge_method"], "S256");
        let code = self.fresh("code");
        self.codes.lock().unwrap().insert(
            code.clone(),
            Grant {
                nonce: q["nonce"].clone(),
                challenge: q["code_challenge"].clone(),
                user: user.to_owned(),
            },
        );
        format!(
            "{}?code={code}&state={}&iss={}",
            q["redirect_uri"],
            q["state"],
            url::form_urlencoded::byte_serialize(ISSUER.as_bytes()).collect::<String>()
        )
    }

    fn tokens(&self, user: &str, nonce: &str) -> Value {
        let access = self.fresh("access");
        let refresh = self.fresh("refresh");
        self.refresh
            .lock()
            .unwrap()
            .insert(refresh.clone(), (user.to_owned(), true));
        let now = self.clock.now();
        let mut claims = json!({
            "iss": ISSUER, "aud": "tokenjar", "sub": user, "sid": format!("sid-{user}"), "nonce": nonce,
            "exp": now + 300, "iat": now, "name": format!("User {user}"), "email": format!("{user}@example.org"),
        });
        if let Some(tamper) = self.tamper.lock().unwrap().as_ref() {
            tamper(&mut claims);
        }
        let id_token = self.signer.lock().unwrap().sign(&claims);
        json!({
            "access_token": access, "token_type": "Bearer", "expires_in": 60,
            "refresh_token": refresh, "id_token": id_token,
        })
    }

    fn handle(&self, request: &RecordedRequest) -> Result<UpstreamResponse<Vec<u8>>, UpstreamError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(UpstreamError::Unavailable("connection refused".into()));
        }
        let form: HashMap<String, String> = url::form_urlencoded::parse(&request.body).into_owned().collect();
        match request.path() {
            "/.well-known/openid-configuration" => Ok(json_response(
                200,
                &json!({
                    "issuer": ISSUER,
                    "authorization_endpoint": format!("{ISSUER}/auth"),
                    "token_endpoint": format!("{ISSUER}/token"),
                    "jwks_uri": format!("{ISSUER}/jwks"),
                    "revocation_endpoint": format!("{ISSUER}/token/revocation"),
                    "end_session_endpoint": format!("{ISSUER}/session/end"),
                    "code_challenge_methods_supported": ["S256"],
                    "authorization_response_iss_parameter_supported": true,
                }),
            )),
            "/jwks" => {
                self.jwks_fetches.fetch_add(1, Ordering::SeqCst);
                let keys: Vec<Value> = self.keys.lock().unwrap().iter().map(|k| k.jwk.clone()).collect();
                Ok(json_response(200, &json!({ "keys": keys })))
            }
            "/token" => {
                let basic = base64::engine::general_purpose::STANDARD.encode("tokenjar:secret");
                if request.headers.get_str("authorization") != Some(format!("Basic {basic}").as_str()) {
                    return Ok(json_response(401, &json!({"error": "invalid_client"})));
                }
                match form.get("grant_type").map(String::as_str) {
                    Some("authorization_code") => {
                        let Some(grant) = self.codes.lock().unwrap().remove(&form["code"]) else {
                            return Ok(json_response(400, &json!({"error": "invalid_grant"})));
                        };
                        let verifier = form.get("code_verifier").cloned().unwrap_or_default();
                        if URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes())) != grant.challenge {
                            return Ok(json_response(400, &json!({"error": "invalid_grant"})));
                        }
                        assert_eq!(form["redirect_uri"], CALLBACK);
                        Ok(json_response(200, &self.tokens(&grant.user, &grant.nonce)))
                    }
                    Some("refresh_token") => {
                        self.refresh_calls.fetch_add(1, Ordering::SeqCst);
                        let mut all = self.refresh.lock().unwrap();
                        let Some((user, live)) = all.get(&form["refresh_token"]).cloned() else {
                            return Ok(json_response(400, &json!({"error": "invalid_grant"})));
                        };
                        if !live {
                            return Ok(json_response(400, &json!({"error": "invalid_grant"})));
                        }
                        all.insert(form["refresh_token"].clone(), (user.clone(), false));
                        drop(all);
                        let mut answer = self.tokens(&user, "");
                        answer.as_object_mut().unwrap().remove("id_token");
                        Ok(json_response(200, &answer))
                    }
                    _ => Ok(json_response(400, &json!({"error": "unsupported_grant_type"}))),
                }
            }
            "/token/revocation" => {
                self.revoked.lock().unwrap().push(form["token"].clone());
                Ok(json_response(200, &json!({})))
            }
            // The API.
            _ => Ok(json_response(200, &json!({"ok": true}))),
        }
    }
}

struct App {
    gateway: Gateway<InMemoryUpstream, Arc<ManualClock>, SeededRandom>,
    provider: Arc<Provider>,
    clock: Arc<ManualClock>,
    oidc: Oidc,
}

impl App {
    fn new() -> Self {
        let clock = Arc::new(ManualClock::new(NOW));
        let provider = Provider::new(clock.clone());
        let list = |items: &[&str]| items.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let client = OidcClient::new(
            ISSUER,
            "tokenjar",
            "secret",
            CALLBACK,
            &list(&["openid", "profile", "email", "offline_access"]),
            &list(&["sub", "name", "email"]),
            "https://app.example/",
        )
        .unwrap();
        let oidc = Oidc::new(client);
        let rules = Arc::new(Rules {
            routes: Routes::new("/api", "/api/login", "/api/logout", "/api/session")
                .unwrap()
                .with_oidc("/api/callback")
                .unwrap(),
            upstream: UpstreamBase::parse("http://api.internal:9000").unwrap(),
            token: TokenRules::default(),
            login: LoginRules::default(),
            cookies: CookieJar::new(
                CookiePolicy::default(),
                CookieKeys::generate(&SeededRandom::new(1)).unwrap(),
            ),
            csrf: CsrfRules::default(),
            forwarding: Forwarding::default(),
            refresh: Some(RefreshRules::for_provider(30, 30)),
            oidc: Some(oidc.clone()),
            store: None,
        });
        let handler = provider.clone();
        let gateway = Gateway::new(
            rules,
            InMemoryUpstream::new(move |request| handler.handle(request)),
            clock.clone(),
            SeededRandom::new(3),
        );
        Self {
            gateway,
            provider,
            clock,
            oidc,
        }
    }

    fn discovered() -> Self {
        let app = Self::new();
        pollster::block_on(app.gateway.discover()).unwrap();
        app
    }

    fn send(&self, browser: &mut CookieStore, method: &str, target: &str) -> Handled<Vec<u8>> {
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
            None => (target.to_owned(), None),
        };
        let mut headers = Headers::new();
        headers.append("host", "app.example");
        headers.append("x-csrf", "1");
        let cookie = browser.header();
        if !cookie.is_empty() {
            headers.append("cookie", cookie);
        }
        let request = ClientRequest {
            method: method.into(),
            path,
            query,
            headers,
            peer: Some("192.0.2.7".parse().unwrap()),
            scheme: "https",
            body: Vec::new(),
        };
        let handled = pollster::block_on(self.gateway.handle(request));
        browser.apply(handled.reply.headers.get_all("set-cookie"));
        handled
    }

    /// `GET /api/login?…`: the provider's URL it redirects to.
    fn start_login(&self, browser: &mut CookieStore, query: &str) -> String {
        let login = self.send(browser, "GET", &format!("/api/login{query}"));
        assert_eq!(login.reply.status, 302, "{:?}", body(&login));
        location(&login)
    }

    /// The callback path and query of a provider's redirect.
    fn callback(&self, browser: &mut CookieStore, callback_url: &str) -> Handled<Vec<u8>> {
        let path = callback_url.strip_prefix("https://app.example").unwrap();
        self.send(browser, "GET", path)
    }

    fn log_in(&self, browser: &mut CookieStore, user: &str) -> Handled<Vec<u8>> {
        let at_provider = self.start_login(browser, "?returnTo=/home");
        let back = self.provider.authorize(&at_provider, user);
        self.callback(browser, &back)
    }
}

fn location(handled: &Handled<Vec<u8>>) -> String {
    handled.reply.headers.get_str("location").unwrap().to_owned()
}

fn body(handled: &Handled<Vec<u8>>) -> Value {
    let bytes = match &handled.reply.body {
        ReplyBody::Full(b) => b,
        ReplyBody::Stream { body, .. } => body,
    };
    serde_json::from_slice(bytes).unwrap_or(Value::Null)
}

fn set_cookie_for(handled: &Handled<Vec<u8>>, name: &str) -> Vec<String> {
    handled
        .reply
        .headers
        .get_all("set-cookie")
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .filter(|v| v.starts_with(&format!("{name}=")))
        .collect()
}

const LOGIN_COOKIE: &str = "__Host-auth-token-login";

#[test]
fn the_login_route_redirects_to_the_provider_with_a_pending_login() {
    let app = App::discovered();
    let mut browser = CookieStore::new();
    let login = app.send(&mut browser, "GET", "/api/login?returnTo=%2Fhome&prompt=consent");
    assert_eq!(login.reply.status, 302);
    let url = url::Url::parse(&location(&login)).unwrap();
    assert_eq!(url.path(), "/auth");
    let q: HashMap<String, String> = url.query_pairs().into_owned().collect();
    assert_eq!(
        (q["client_id"].as_str(), q["prompt"].as_str()),
        ("tokenjar", "consent")
    );
    let cookie = set_cookie_for(&login, LOGIN_COOKIE);
    assert_eq!(cookie.len(), 1);
    for attribute in ["HttpOnly", "SameSite=Lax", "Max-Age=600", "Secure", "Path=/"] {
        assert!(cookie[0].contains(attribute), "{attribute} in {}", cookie[0]);
    }
    assert!(!cookie[0].contains(&q["state"]), "the pending login is sealed");
    assert_eq!(login.reply.headers.get_str("cache-control"), Some("no-store"));
    assert_eq!(app.send(&mut browser, "POST", "/api/login").reply.status, 405);
}

#[test]
fn a_whole_login_ends_with_a_session_and_no_token_in_the_browser() {
    let app = App::discovered();
    let mut browser = CookieStore::new();
    let back = app.log_in(&mut browser, "ada");
    assert_eq!(back.reply.status, 302);
    assert_eq!(location(&back), "/home");
    assert_eq!(back.login, Some(LoginResult::Success));
    assert_eq!(
        browser.names(),
        ["__Host-auth-token"],
        "the login cookie is gone: {:?}",
        browser.names()
    );
    let everything: String = back
        .reply
        .headers
        .iter()
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        .collect();
    assert!(
        !everything.contains("access-") && !everything.contains("refresh-") && !everything.contains("eyJ")
    );

    let session = app.send(&mut browser, "GET", "/api/session");
    assert_eq!(
        body(&session),
        json!({
            "loggedIn": true, "expiresAt": NOW + 60, "refreshable": true,
            "user": {"sub": "ada", "name": "User ada", "email": "ada@example.org"},
        })
    );
    let call = app.send(&mut browser, "GET", "/api/me");
    assert_eq!(call.reply.status, 200);
    let sent = app.gateway.upstream().requests();
    let api = sent.iter().rev().find(|r| r.path() == "/me").unwrap();
    assert!(api.headers.get_str("auth-token").unwrap().starts_with("access-"));
}

#[test]
fn three_tabs_log_in_at_once_and_a_fourth_drops_the_oldest() {
    let app = App::discovered();
    let mut browser = CookieStore::new();
    let urls: Vec<String> = (0..4)
        .map(|i| app.start_login(&mut browser, &format!("?returnTo=/tab{i}")))
        .collect();
    let callbacks: Vec<String> = urls.iter().map(|u| app.provider.authorize(u, "ada")).collect();
    // The first tab's login was pushed out by the fourth.
    assert_eq!(
        location(&app.callback(&mut browser, &callbacks[0])),
        "/?auth_error=invalid_state"
    );
    for i in [3, 1, 2] {
        let back = app.callback(&mut browser, &callbacks[i]);
        assert_eq!(location(&back), format!("/tab{i}"));
    }
    assert!(!browser.names().contains(&LOGIN_COOKIE), "no pending login left");
}

#[test]
fn a_replayed_or_foreign_callback_logs_no_one_in() {
    let app = App::discovered();
    let mut browser = CookieStore::new();
    let url = app.start_login(&mut browser, "");
    let back = app.provider.authorize(&url, "ada");
    let mut attacker = CookieStore::new();
    // Another browser's state: not in this browser's login cookie.
    app.start_login(&mut attacker, "");
    let stolen = app.callback(&mut attacker, &back);
    assert_eq!(location(&stolen), "/?auth_error=invalid_state");
    assert!(!attacker.names().contains(&"__Host-auth-token"));

    assert_eq!(app.callback(&mut browser, &back).reply.status, 302);
    let mut replay = browser.clone();
    replay.set(
        "__Host-auth-token",
        "x", // whatever the session, the replay must not make one
    );
    let again = app.callback(&mut replay, &back);
    assert_eq!(location(&again), "/?auth_error=invalid_state");
    assert_eq!(again.login, Some(LoginResult::Failed));
}

#[test]
fn the_providers_error_and_bad_id_tokens_end_at_auth_error() {
    let app = App::discovered();
    let mut browser = CookieStore::new();
    let url = app.start_login(&mut browser, "");
    let q: HashMap<String, String> = url::Url::parse(&url)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect();
    let denied = app.send(
        &mut browser,
        "GET",
        &format!(
            "/api/callback?error=access_denied&state={}&iss=http%3A%2F%2F127.0.0.1%3A4000",
            q["state"]
        ),
    );
    assert_eq!(location(&denied), "/?auth_error=access_denied");
    assert_eq!(denied.login, Some(LoginResult::Refused));

    for (what, tamper) in [
        (
            "nonce",
            Box::new(|c: &mut Value| c["nonce"] = json!("other")) as Box<dyn Fn(&mut Value) + Send>,
        ),
        (
            "audience",
            Box::new(|c: &mut Value| c["aud"] = json!("someone-else")),
        ),
        ("expired", Box::new(|c: &mut Value| c["exp"] = json!(NOW - 3600))),
        (
            "issuer",
            Box::new(|c: &mut Value| c["iss"] = json!("http://evil.example")),
        ),
    ] {
        *app.provider.tamper.lock().unwrap() = Some(tamper);
        let mut browser = CookieStore::new();
        let back = app.log_in(&mut browser, "ada");
        assert_eq!(location(&back), "/?auth_error=invalid_token", "{what}");
        assert!(!browser.names().contains(&"__Host-auth-token"), "{what}");
    }
}

#[test]
fn return_to_must_be_a_path_here() {
    let app = App::discovered();
    let mut browser = CookieStore::new();
    for bad in [
        "%2F%2Fevil.example",
        "https%3A%2F%2Fevil.example",
        "%2F%5Cevil.example",
        "evil.example",
    ] {
        let login = app.send(&mut browser, "GET", &format!("/api/login?returnTo={bad}"));
        assert_eq!(login.reply.status, 400, "{bad}");
        assert_eq!(body(&login)["error"], "bad_request");
    }
}

#[test]
fn before_discovery_logins_fail_cleanly() {
    let app = App::new();
    let mut browser = CookieStore::new();
    let login = app.send(&mut browser, "GET", "/api/login");
    assert_eq!(login.reply.status, 502);
    assert_eq!(body(&login)["error"], "provider_unavailable");
    let callback = app.send(&mut browser, "GET", "/api/callback?code=x&state=y");
    assert_eq!(location(&callback), "/?auth_error=provider_unavailable");
    app.provider.down.store(true, Ordering::SeqCst);
    assert!(pollster::block_on(app.gateway.discover()).is_err());
    app.provider.down.store(false, Ordering::SeqCst);
    assert!(pollster::block_on(app.gateway.discover()).is_ok());
    assert!(app.oidc.discovered().is_some());
}

#[test]
fn a_rotated_signing_key_is_fetched_again_at_most_once_a_minute() {
    let app = App::discovered();
    assert_eq!(app.provider.jwks_fetches.load(Ordering::SeqCst), 1);
    let rotated = SigningKey::new("k2");
    app.provider.keys.lock().unwrap().push(SigningKey {
        kid: rotated.kid.clone(),
        pkcs8: rotated.pkcs8.clone(),
        jwk: rotated.jwk.clone(),
    });
    *app.provider.signer.lock().unwrap() = rotated;
    // Within a minute of the discovery: not fetched again.
    app.clock.advance(30);
    let mut browser = CookieStore::new();
    assert_eq!(
        location(&app.log_in(&mut browser, "ada")),
        "/?auth_error=invalid_token"
    );
    app.clock.advance(31);
    let mut browser = CookieStore::new();
    assert_eq!(location(&app.log_in(&mut browser, "ada")), "/home");
    assert_eq!(app.provider.jwks_fetches.load(Ordering::SeqCst), 2);
}

#[test]
fn sessions_refresh_at_the_provider_and_end_on_invalid_grant() {
    let app = App::discovered();
    let mut browser = CookieStore::new();
    app.log_in(&mut browser, "ada");
    let mut late = browser.clone();
    app.clock.advance(40);
    let call = app.send(&mut browser, "GET", "/api/me");
    assert_eq!(call.reply.status, 200);
    assert_eq!(app.provider.refresh_calls.load(Ordering::SeqCst), 1);
    let session = app.send(&mut browser, "GET", "/api/session");
    assert_eq!(
        body(&session)["user"]["sub"],
        "ada",
        "the profile survives the refresh"
    );

    // After the reuse window the old cookie spends the rotated refresh
    // token again: the provider says invalid_grant, the session is over.
    app.clock.advance(31);
    let replay = app.send(&mut late, "GET", "/api/me");
    assert_eq!(replay.reply.status, 401);
    assert_eq!(body(&replay)["error"], "session_expired");
}

#[test]
fn logout_revokes_at_the_provider_and_names_its_logout_url() {
    let app = App::discovered();
    let mut browser = CookieStore::new();
    app.log_in(&mut browser, "ada");
    let logout = app.send(&mut browser, "POST", "/api/logout");
    assert_eq!(logout.reply.status, 200);
    assert_eq!(
        body(&logout),
        json!({
            "loggedIn": false,
            "logoutUrl": "http://127.0.0.1:4000/session/end?client_id=tokenjar&post_logout_redirect_uri=https%3A%2F%2Fapp.example%2F",
        })
    );
    assert_eq!(app.provider.revoked.lock().unwrap().len(), 1);
    assert!(app.provider.revoked.lock().unwrap()[0].starts_with("refresh-"));
    assert!(browser.names().is_empty());
}
