//! The test OpenID Provider itself (tests/oidc/provider.mjs driven by
//! support/oidc_provider.rs), no tokenjar involved: discovery, the
//! authorization-code flow with PKCE, refresh-token rotation and reuse
//! detection, the counters, key rotation and logout. The OIDC login tests
//! (SPEC §16) rely on every behaviour checked here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read as _, Write as _};
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::Duration;

use base64::Engine as _;
use serde_json::Value;
use tokenjar_e2e::oidc_provider::{form_component, query_param, OidcProvider, ProviderSettings};

/// The client's redirect URI: nothing listens there, the helper stops at it.
const REDIRECT_URI: &str = "http://127.0.0.1:9/auth/callback";

/// Where the provider sends the browser after logout (not followed).
const POST_LOGOUT_URI: &str = "http://127.0.0.1:9/";

/// The PKCE verifier every test uses (43 characters, RFC 7636 §4.1).
const VERIFIER: &str = "tokenjar-test-verifier-0123456789abcdefghijk";

fn start() -> Option<OidcProvider> {
    start_with(None)
}

/// The provider, with a back-channel logout URI when given (which also puts
/// `sid` in ID tokens).
fn start_with(backchannel_logout_uri: Option<String>) -> Option<OidcProvider> {
    let mut settings = ProviderSettings::new(REDIRECT_URI);
    settings.post_logout_redirect_uris = vec![POST_LOGOUT_URI.to_owned()];
    settings.backchannel_logout_uri = backchannel_logout_uri;
    OidcProvider::start(&settings)
}

/// A one-shot back-channel logout endpoint: its URL, and the body of the
/// first request it gets (answered 200).
fn backchannel_endpoint() -> (String, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/backchannel", listener.local_addr().expect("address"));
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let Ok((mut stream, _)) = listener.accept() else {
            return;
        };
        let mut bytes = Vec::new();
        let mut chunk = [0u8; 4096];
        // The head, then the body by Content-Length.
        let body = loop {
            let n = stream.read(&mut chunk).unwrap_or(0);
            if n == 0 {
                return;
            }
            bytes.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&bytes).into_owned();
            let Some((head, body)) = text.split_once("\r\n\r\n") else {
                continue;
            };
            let length = head
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if body.len() >= length {
                break body.to_owned();
            }
        };
        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        let _ = tx.send(body);
    });
    (url, rx)
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The authorization request tokenjar will send: code flow, S256 challenge
/// of `VERIFIER`, state and nonce.
fn authorization_url(provider: &OidcProvider, state: &str, nonce: &str) -> String {
    let challenge = b64url(ring::digest::digest(&ring::digest::SHA256, VERIFIER.as_bytes()).as_ref());
    let params = [
        ("response_type", "code"),
        ("client_id", "tokenjar"),
        ("redirect_uri", REDIRECT_URI),
        ("scope", "openid profile email"),
        ("state", state),
        ("nonce", nonce),
        ("code_challenge", &challenge),
        ("code_challenge_method", "S256"),
    ];
    let query: Vec<String> = params
        .iter()
        .map(|(name, value)| format!("{name}={}", form_component(value)))
        .collect();
    format!(
        "{}?{}",
        provider.discovery()["authorization_endpoint"].as_str().unwrap(),
        query.join("&")
    )
}

/// A token request with `client_secret_basic`: (status, JSON body).
fn token(provider: &OidcProvider, form: &[(&str, &str)]) -> (u16, Value) {
    let reply = provider.post_form("/token", form, Some(("tokenjar", "tokenjar-secret")));
    let body = serde_json::from_slice(&reply.body).unwrap_or_else(|_| panic!("token: {}", reply.text()));
    (reply.status, body)
}

/// Logs in and exchanges the code: the token response.
fn log_in(provider: &OidcProvider) -> Value {
    let callback = provider.login(&authorization_url(provider, "state-1", "nonce-1"));
    let code = query_param(&callback, "code").unwrap_or_else(|| panic!("no code in {callback}"));
    let (status, body) = token(
        provider,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT_URI),
            ("code_verifier", VERIFIER),
        ],
    );
    assert_eq!(status, 200, "code exchange: {body}");
    body
}

/// A JWT's header and payload (the signature is not checked here).
fn jwt_parts(jwt: &str) -> (Value, Value) {
    let mut parts = jwt.split('.');
    let mut decode = || {
        let part = parts.next().expect("a JWT part");
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .expect("base64url JWT part");
        serde_json::from_slice::<Value>(&bytes).expect("JSON JWT part")
    };
    (decode(), decode())
}

fn refresh(provider: &OidcProvider, refresh_token: &str) -> (u16, Value) {
    token(
        provider,
        &[("grant_type", "refresh_token"), ("refresh_token", refresh_token)],
    )
}

#[test]
fn discovery_names_every_endpoint_tokenjar_uses() {
    let Some(provider) = start() else { return };
    let doc = provider.discovery();
    assert_eq!(doc["issuer"], provider.issuer());
    for (field, path) in [
        ("authorization_endpoint", "/auth"),
        ("token_endpoint", "/token"),
        ("jwks_uri", "/jwks"),
        ("revocation_endpoint", "/token/revocation"),
        ("end_session_endpoint", "/session/end"),
    ] {
        assert_eq!(doc[field], provider.url(path), "{field}");
    }
    assert_eq!(doc["authorization_response_iss_parameter_supported"], true);
    assert_eq!(doc["backchannel_logout_supported"], true);
    assert_eq!(
        doc["code_challenge_methods_supported"],
        serde_json::json!(["S256"])
    );
    assert_eq!(doc["response_types_supported"], serde_json::json!(["code"]));
    let keys = provider.jwks()["keys"].as_array().cloned().unwrap_or_default();
    assert_eq!(keys.len(), 1, "one signing key: {keys:?}");
    assert_eq!(keys[0]["alg"], "RS256");
}

#[test]
fn code_flow_with_pkce_issues_tokens_and_id_token_claims() {
    let Some(provider) = start_with(Some("http://127.0.0.1:9/backchannel".to_owned())) else {
        return;
    };
    let callback = provider.login_as(&authorization_url(&provider, "state-1", "nonce-1"), "bob");
    assert!(callback.starts_with(&format!("{REDIRECT_URI}?")), "{callback}");
    assert_eq!(query_param(&callback, "state").as_deref(), Some("state-1"));
    assert_eq!(query_param(&callback, "iss").as_deref(), Some(provider.issuer()));
    let code = query_param(&callback, "code").expect("code");

    let exchange = |verifier: &str| {
        token(
            &provider,
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", REDIRECT_URI),
                ("code_verifier", verifier),
            ],
        )
    };
    // A wrong verifier is refused (and, by the package's rule, a code is
    // good for one try only, so it is tried last with the right one).
    let (status, body) = exchange("wrong-verifier-wrong-verifier-wrong-verifier");
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "{body}"
    );

    let callback = provider.login_as(&authorization_url(&provider, "state-2", "nonce-2"), "bob");
    let code = query_param(&callback, "code").expect("code");
    let (status, body) = token(
        &provider,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT_URI),
            ("code_verifier", VERIFIER),
        ],
    );
    assert_eq!(status, 200, "{body}");
    for field in ["access_token", "refresh_token", "id_token"] {
        assert!(
            body[field].as_str().is_some_and(|t| !t.is_empty()),
            "{field}: {body}"
        );
    }
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 60);

    let (header, claims) = jwt_parts(body["id_token"].as_str().unwrap());
    assert_eq!(header["alg"], "RS256");
    assert_eq!(header["kid"], provider.jwks()["keys"][0]["kid"]);
    assert_eq!(claims["iss"], provider.issuer());
    assert_eq!(claims["aud"], "tokenjar");
    assert_eq!(claims["nonce"], "nonce-2");
    assert_eq!(claims["sub"], "bob");
    assert_eq!(claims["preferred_username"], "bob");
    assert_eq!(claims["email"], "bob@example.test");
    assert!(
        claims["name"].as_str().is_some_and(|n| n.contains("bob")),
        "{claims}"
    );
    assert!(claims["sid"].is_string(), "sid for back-channel logout: {claims}");

    let counters = provider.counters();
    assert_eq!(
        (counters.code_exchanges, counters.code_exchange_errors),
        (1, 1),
        "{counters:?}"
    );
}

#[test]
fn pkce_is_required() {
    let Some(provider) = start() else { return };
    let url = authorization_url(&provider, "s", "n");
    let without: Vec<&str> = url
        .split('&')
        .filter(|p| !p.starts_with("code_challenge"))
        .collect();
    let callback = provider.login(&without.join("&"));
    assert_eq!(
        query_param(&callback, "error").as_deref(),
        Some("invalid_request"),
        "{callback}"
    );
    assert_eq!(query_param(&callback, "iss").as_deref(), Some(provider.issuer()));
}

#[test]
fn refresh_rotates_and_a_replay_revokes_the_grant() {
    let Some(provider) = start() else { return };
    let first = log_in(&provider);
    let old = first["refresh_token"].as_str().unwrap().to_owned();

    let (status, second) = refresh(&provider, &old);
    assert_eq!(status, 200, "{second}");
    let new = second["refresh_token"]
        .as_str()
        .expect("a rotated refresh token")
        .to_owned();
    assert_ne!(new, old);
    assert_ne!(second["access_token"], first["access_token"]);
    assert!(second["id_token"].is_string(), "{second}");

    // The old token replayed: refused, and the whole grant with it.
    let (status, body) = refresh(&provider, &old);
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "{body}"
    );
    let (status, body) = refresh(&provider, &new);
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "{body}"
    );

    let counters = provider.counters();
    assert_eq!(counters.code_exchanges, 1, "{counters:?}");
    assert_eq!(
        (counters.refreshes, counters.refresh_errors),
        (1, 2),
        "{counters:?}"
    );
    assert!(counters.grants_revoked >= 1, "{counters:?}");
}

#[test]
fn revocation_ends_the_refresh_token() {
    let Some(provider) = start() else { return };
    let tokens = log_in(&provider);
    let refresh_token = tokens["refresh_token"].as_str().unwrap();
    let reply = provider.post_form(
        "/token/revocation",
        &[("token", refresh_token), ("token_type_hint", "refresh_token")],
        Some(("tokenjar", "tokenjar-secret")),
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    let (status, body) = refresh(&provider, refresh_token);
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "{body}"
    );
    assert_eq!(provider.counters().revocations, 1);
}

#[test]
fn rotated_keys_sign_new_tokens_and_old_keys_stay_published() {
    let Some(provider) = start() else { return };
    let old_kid = provider.jwks()["keys"][0]["kid"].clone();
    let jwks = provider.rotate_keys();
    let kids: Vec<Value> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].clone())
        .collect();
    assert_eq!(kids.len(), 2, "{jwks}");
    assert_eq!(kids[1], old_kid);
    assert_eq!(provider.jwks(), jwks, "the JWKS endpoint serves the new set");

    let tokens = log_in(&provider);
    let (header, _) = jwt_parts(tokens["id_token"].as_str().unwrap());
    assert_eq!(header["kid"], kids[0], "the new key signs");
    assert_eq!(provider.counters().key_rotations, 1);
}

#[test]
fn a_second_login_reuses_the_session_and_logout_ends_it() {
    let (backchannel, logout_tokens) = backchannel_endpoint();
    let Some(provider) = start_with(Some(backchannel)) else {
        return;
    };
    let tokens = log_in(&provider);
    let (_, id_claims) = jwt_parts(tokens["id_token"].as_str().unwrap());
    // The provider's session (cookies kept): straight back to the client.
    let again = provider.login_as(&authorization_url(&provider, "state-3", "nonce-3"), "ignored");
    assert!(query_param(&again, "code").is_some(), "{again}");

    let end_session = format!(
        "{}?client_id=tokenjar&post_logout_redirect_uri={}&state=bye",
        provider.url("/session/end"),
        form_component(POST_LOGOUT_URI)
    );
    let after = provider.logout(&end_session);
    assert!(after.starts_with(POST_LOGOUT_URI), "{after}");
    assert_eq!(query_param(&after, "state").as_deref(), Some("bye"));
    assert_eq!(provider.counters().end_sessions, 1);

    // The back-channel logout reached the client before the redirect: a
    // logout token for the same session.
    let body = logout_tokens
        .recv_timeout(Duration::from_secs(10))
        .expect("a back-channel logout request");
    let logout_token = query_param(&body, "logout_token").unwrap_or_else(|| panic!("{body}"));
    let (_, claims) = jwt_parts(&logout_token);
    assert_eq!(claims["sid"], id_claims["sid"], "{claims}");
    assert_eq!(claims["sub"], "alice");
    assert!(
        claims["events"]["http://schemas.openid.net/event/backchannel-logout"].is_object(),
        "{claims}"
    );
    assert_eq!(provider.counters().backchannel_logouts, 1);

    // The refresh token was bound to that session: logout ended it.
    let (status, body) = refresh(&provider, tokens["refresh_token"].as_str().unwrap());
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "{body}"
    );
}

#[test]
fn a_public_client_exchanges_with_pkce_alone() {
    let mut settings = ProviderSettings::new(REDIRECT_URI);
    settings.client_secret = None;
    let Some(provider) = OidcProvider::start(&settings) else {
        return;
    };
    let callback = provider.login(&authorization_url(&provider, "state-1", "nonce-1"));
    let code = query_param(&callback, "code").expect("code");
    let reply = provider.post_form(
        "/token",
        &[
            ("grant_type", "authorization_code"),
            ("client_id", "tokenjar"),
            ("code", &code),
            ("redirect_uri", REDIRECT_URI),
            ("code_verifier", VERIFIER),
        ],
        None,
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    let body: Value = serde_json::from_slice(&reply.body).expect("JSON");
    let refresh_token = body["refresh_token"]
        .as_str()
        .expect("a refresh token for a public client");
    let reply = provider.post_form(
        "/token",
        &[
            ("grant_type", "refresh_token"),
            ("client_id", "tokenjar"),
            ("refresh_token", refresh_token),
        ],
        None,
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
}
