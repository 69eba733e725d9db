//! A real OpenID Provider for the OIDC login tests (SPEC §16):
//! `tests/oidc/provider.mjs` (npm's oidc-provider) as a child process on a
//! free loopback port, its test counters, key rotation, and a user agent that
//! drives its login, consent and logout pages over plain HTTP.
//!
//! Needs Node.js and `npm ci --prefix tests/oidc` (`make oidc-deps`; CI runs
//! it). Without them a test skips with that hint, except under `CI=true`,
//! where it fails.

use std::io::{BufRead as _, BufReader, Read as _};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;

use crate::app::Reply;
use crate::external::{find_program, in_ci};
use crate::raw::raw_request;
use crate::workspace_root;

/// Longest wait for the provider's ready line (Node starts it in about a
/// second; a loaded machine is slower).
const START_WAIT: Duration = Duration::from_secs(30);

/// Most redirects one login or logout may take before the helper gives up
/// (a loop would otherwise never end).
const MAX_STEPS: usize = 20;

/// The password the login form is sent with: the development login pages
/// accept any.
const PASSWORD: &str = "any-password";

/// The provider's one client and token lifetimes.
#[derive(Debug, Clone)]
pub struct ProviderSettings {
    /// The loopback port to listen on; 0: a free one. A fixed port lets a
    /// test start tokenjar against a provider that is not up yet.
    pub port: u16,
    /// The client's `client_id`.
    pub client_id: String,
    /// The client's secret (`client_secret_basic`); `None`: a public client
    /// (`token_endpoint_auth_method: none`, PKCE alone).
    pub client_secret: Option<String>,
    /// The client's `redirect_uris`; at least one.
    pub redirect_uris: Vec<String>,
    /// The client's `post_logout_redirect_uris`.
    pub post_logout_redirect_uris: Vec<String>,
    /// The client's `backchannel_logout_uri` (with
    /// `backchannel_logout_session_required`, so logout tokens carry `sid`).
    pub backchannel_logout_uri: Option<String>,
    /// Access token lifetime in seconds.
    pub access_token_ttl: u64,
    /// ID token lifetime in seconds.
    pub id_token_ttl: u64,
    /// Refresh token lifetime in seconds.
    pub refresh_token_ttl: u64,
}

impl ProviderSettings {
    /// A confidential client `tokenjar` with secret `tokenjar-secret` and
    /// one redirect URI; the provider's short default lifetimes.
    pub fn new(redirect_uri: &str) -> Self {
        Self {
            port: 0,
            client_id: "tokenjar".to_owned(),
            client_secret: Some("tokenjar-secret".to_owned()),
            redirect_uris: vec![redirect_uri.to_owned()],
            post_logout_redirect_uris: Vec::new(),
            backchannel_logout_uri: None,
            access_token_ttl: 60,
            id_token_ttl: 300,
            refresh_token_ttl: 86_400,
        }
    }
}

/// What the provider did since it started (its `/test/counters`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counters {
    /// Successful token requests with `grant_type=authorization_code`.
    pub code_exchanges: u64,
    /// Successful token requests with `grant_type=refresh_token`.
    pub refreshes: u64,
    /// Refused token requests with `grant_type=authorization_code`.
    pub code_exchange_errors: u64,
    /// Refused token requests with `grant_type=refresh_token`.
    pub refresh_errors: u64,
    /// Requests to the revocation endpoint (accepted or not).
    pub revocations: u64,
    /// Completed RP-initiated logouts.
    pub end_sessions: u64,
    /// Back-channel logout tokens the client's endpoint accepted (2xx).
    pub backchannel_logouts: u64,
    /// Back-channel logout deliveries that failed.
    pub backchannel_logout_errors: u64,
    /// Grants revoked (a replayed refresh token, a revocation, a logout).
    pub grants_revoked: u64,
    /// Signing key rotations (`OidcProvider::rotate_keys`).
    pub key_rotations: u64,
}

/// The provider process; killed on drop. Its stdin is a pipe held here, so
/// the provider also exits when the test process dies without dropping it.
#[derive(Debug)]
pub struct OidcProvider {
    child: Child,
    _stdin: ChildStdin,
    issuer: String,
    addr: SocketAddr,
    stderr: Arc<Mutex<String>>,
    /// The user agent's cookies for the provider (name, value): one browser,
    /// so a second login finds the provider's session.
    cookies: Mutex<Vec<(String, String)>>,
}

impl OidcProvider {
    /// Starts the provider with `settings` on a free loopback port and waits
    /// for its ready line. `None` (after printing why) when Node.js or
    /// `tests/oidc/node_modules` is missing; under `CI=true` that panics.
    pub fn start(settings: &ProviderSettings) -> Option<Self> {
        let node = find_program("node", &["/usr/bin/node"]);
        let dir = workspace_root().join("tests/oidc");
        let installed = dir.join("node_modules/oidc-provider/package.json").is_file();
        let problem = match (&node, installed) {
            (None, _) => "Node.js not installed (apt-get install nodejs npm, then `npm ci --prefix tests/oidc`)",
            (Some(_), false) => "the test OpenID Provider is not installed (run `npm ci --prefix tests/oidc` or `make oidc-deps`)",
            (Some(_), true) => "",
        };
        if !problem.is_empty() {
            assert!(!in_ci(), "CI=true forbids skipping: {problem}");
            println!("skipped: {problem}");
            return None;
        }
        Some(Self::spawn(&node?, &dir, settings))
    }

    fn spawn(node: &Path, dir: &Path, settings: &ProviderSettings) -> Self {
        let mut command = Command::new(node);
        command
            .arg(dir.join("provider.mjs"))
            .current_dir(dir)
            .env("OIDC_PORT", settings.port.to_string())
            .env("OIDC_CLIENT_ID", &settings.client_id)
            .env(
                "OIDC_CLIENT_SECRET",
                settings.client_secret.as_deref().unwrap_or(""),
            )
            .env("OIDC_REDIRECT_URIS", settings.redirect_uris.join(" "))
            .env(
                "OIDC_POST_LOGOUT_REDIRECT_URIS",
                settings.post_logout_redirect_uris.join(" "),
            )
            .env(
                "OIDC_BACKCHANNEL_LOGOUT_URI",
                settings.backchannel_logout_uri.as_deref().unwrap_or(""),
            )
            .env("OIDC_ACCESS_TOKEN_TTL", settings.access_token_ttl.to_string())
            .env("OIDC_ID_TOKEN_TTL", settings.id_token_ttl.to_string())
            .env("OIDC_REFRESH_TOKEN_TTL", settings.refresh_token_ttl.to_string())
            // oidc-provider reads NODE_ENV; "production" would change nothing
            // we use, but keep the run the same wherever it is started.
            .env_remove("NODE_ENV")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .unwrap_or_else(|err| panic!("could not start {}: {err}", node.display()));
        let stdin = child.stdin.take().expect("piped stdin");

        // stderr is kept for failure messages; read on a thread so a chatty
        // provider never blocks on a full pipe.
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().expect("piped stderr");
        let sink = Arc::clone(&stderr);
        std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&chunk[..n]));
            }
        });

        // The ready line, then stdout drained for the same reason.
        let (ready_tx, ready_rx) = mpsc::channel();
        let stdout = child.stdout.take().expect("piped stdout");
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if !sent {
                    if let Some(issuer) = line.strip_prefix("listening ") {
                        let _ = ready_tx.send(issuer.trim().to_owned());
                        sent = true;
                    }
                }
            }
        });
        let issuer = match ready_rx.recv_timeout(START_WAIT) {
            Ok(issuer) => issuer,
            Err(_) => {
                let _ = child.kill();
                let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
                panic!(
                    "the OpenID Provider did not start within {START_WAIT:?} ({status}):\n{}",
                    stderr.lock().unwrap()
                );
            }
        };
        let addr = issuer
            .strip_prefix("http://")
            .and_then(|hostport| hostport.parse().ok())
            .unwrap_or_else(|| panic!("unexpected issuer {issuer:?}"));
        Self {
            child,
            _stdin: stdin,
            issuer,
            addr,
            stderr,
            cookies: Mutex::new(Vec::new()),
        }
    }

    /// The issuer, `http://127.0.0.1:PORT` (no trailing slash).
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The loopback address the provider listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The issuer followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.issuer)
    }

    /// What the provider wrote to stderr so far (its warnings and errors).
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// The discovery document (`/.well-known/openid-configuration`).
    pub fn discovery(&self) -> serde_json::Value {
        let reply = self.get("/.well-known/openid-configuration", &[]);
        assert_eq!(reply.status, 200, "discovery: {}", reply.text());
        json(&reply)
    }

    /// The provider's signing keys (its JWKS).
    pub fn jwks(&self) -> serde_json::Value {
        let reply = self.get("/jwks", &[]);
        assert_eq!(reply.status, 200, "jwks: {}", reply.text());
        json(&reply)
    }

    /// What the provider did so far.
    pub fn counters(&self) -> Counters {
        let reply = self.get("/test/counters", &[]);
        assert_eq!(reply.status, 200, "counters: {}", reply.text());
        let value = json(&reply);
        let n = |table: &str, key: Option<&str>| {
            let entry = &value[table];
            let entry = key.map_or(entry, |key| &entry[key]);
            entry.as_u64().unwrap_or(0)
        };
        Counters {
            code_exchanges: n("token", Some("authorization_code")),
            refreshes: n("token", Some("refresh_token")),
            code_exchange_errors: n("token_errors", Some("authorization_code")),
            refresh_errors: n("token_errors", Some("refresh_token")),
            revocations: n("revocation", None),
            end_sessions: n("end_session", None),
            backchannel_logouts: n("backchannel_logout", None),
            backchannel_logout_errors: n("backchannel_logout_errors", None),
            grants_revoked: n("grants_revoked", None),
            key_rotations: n("key_rotations", None),
        }
    }

    /// A new RS256 signing key signs from now on; the JWKS serves it first
    /// and keeps the old keys (tokens signed before stay verifiable).
    /// Returns the new JWKS.
    pub fn rotate_keys(&self) -> serde_json::Value {
        let reply = self.request("POST", "/test/rotate-keys", &[], None);
        assert_eq!(reply.status, 200, "rotate-keys: {}", reply.text());
        json(&reply)
    }

    /// Logs in as `alice`: see [`OidcProvider::login_as`].
    pub fn login(&self, authorization_url: &str) -> String {
        self.login_as(authorization_url, "alice")
    }

    /// Opens `authorization_url` (the provider's authorization endpoint with
    /// the client's parameters) as a browser would: follows the provider's
    /// redirects, fills in its login form as `user` and accepts its consent
    /// form, and returns the first redirect that leaves the provider (the
    /// client's redirect URI with `code`, `state` and `iss`, or `error`)
    /// without following it. Cookies persist across calls, so a second
    /// login finds the provider's session (no login form then).
    pub fn login_as(&self, authorization_url: &str, user: &str) -> String {
        let mut url = authorization_url.to_owned();
        for _ in 0..MAX_STEPS {
            let path = self.path_of(&url);
            let reply = self.get(&path, &[]);
            if let Some(next) = self.redirect(&reply) {
                match self.off_provider(&next) {
                    Some(done) => return done,
                    None => url = next,
                }
                continue;
            }
            assert_eq!(
                reply.status,
                200,
                "{path} answered neither a redirect nor a page: {}",
                reply.text()
            );
            // An interaction page: its form says which prompt it is.
            let page = reply.text();
            let action = form_attribute(&page, "action")
                .unwrap_or_else(|| panic!("no form on the page of {path}:\n{page}"));
            let prompt = hidden_input(&page, "prompt")
                .unwrap_or_else(|| panic!("no prompt in the form of {path}:\n{page}"));
            let form: Vec<(&str, &str)> = match prompt.as_str() {
                "login" => vec![("prompt", "login"), ("login", user), ("password", PASSWORD)],
                "consent" => vec![("prompt", "consent")],
                other => panic!("unknown interaction prompt {other:?} at {path}"),
            };
            let reply = self.post_form(&self.path_of(&action), &form, None);
            let next = self
                .redirect(&reply)
                .unwrap_or_else(|| panic!("submitting {prompt} answered {}: {}", reply.status, reply.text()));
            match self.off_provider(&next) {
                Some(done) => return done,
                None => url = next,
            }
        }
        panic!("the login took more than {MAX_STEPS} steps");
    }

    /// Opens `end_session_url` (the provider's end-session endpoint with
    /// `client_id`, `post_logout_redirect_uri`, …) as a browser would with
    /// the cookies of earlier logins, confirms the logout form, and returns
    /// where the provider sends the browser last: the post-logout redirect
    /// URI (not followed), or the provider's own "signed out" page URL.
    pub fn logout(&self, end_session_url: &str) -> String {
        let mut url = end_session_url.to_owned();
        for _ in 0..MAX_STEPS {
            let path = self.path_of(&url);
            let reply = self.get(&path, &[]);
            if let Some(next) = self.redirect(&reply) {
                match self.off_provider(&next) {
                    Some(done) => return done,
                    None => url = next,
                }
                continue;
            }
            assert_eq!(reply.status, 200, "{path}: {}", reply.text());
            let page = reply.text();
            let Some(xsrf) = hidden_input(&page, "xsrf") else {
                // No confirmation form: the provider's closing page.
                return url;
            };
            let action = form_attribute(&page, "action")
                .unwrap_or_else(|| panic!("no form on the logout page:\n{page}"));
            let form = [("xsrf", xsrf.as_str()), ("logout", "yes")];
            let reply = self.post_form(&self.path_of(&action), &form, None);
            let next = self.redirect(&reply).unwrap_or_else(|| {
                panic!(
                    "confirming the logout answered {}: {}",
                    reply.status,
                    reply.text()
                )
            });
            match self.off_provider(&next) {
                Some(done) => return done,
                None => url = next,
            }
        }
        panic!("the logout took more than {MAX_STEPS} steps");
    }

    /// Forgets the user agent's cookies: the next login starts without the
    /// provider's session, as in a new browser.
    pub fn forget_cookies(&self) {
        self.cookies.lock().unwrap().clear();
    }

    /// `GET path` (with the user agent's cookies), extra headers added.
    pub fn get(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        self.request("GET", path, headers, None)
    }

    /// `POST path` with an `application/x-www-form-urlencoded` body (with
    /// the user agent's cookies), and HTTP Basic client authentication when
    /// `basic` is `(client_id, client_secret)` (`client_secret_basic`:
    /// each part form-encoded first, RFC 6749 §2.3.1).
    pub fn post_form(&self, path: &str, form: &[(&str, &str)], basic: Option<(&str, &str)>) -> Reply {
        let body = form_encode(form);
        let authorization = basic.map(|(id, secret)| {
            let pair = format!("{}:{}", form_component(id), form_component(secret));
            format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(pair))
        });
        let mut headers = vec![("content-type", "application/x-www-form-urlencoded")];
        if let Some(value) = authorization.as_deref() {
            headers.push(("authorization", value));
        }
        self.request("POST", path, &headers, Some(body.as_bytes()))
    }

    /// One request over a fresh connection; `Set-Cookie` answers update
    /// the user agent's cookies.
    fn request(&self, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> Reply {
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
            self.addr
        );
        let cookie = self
            .cookies
            .lock()
            .unwrap()
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect::<Vec<_>>()
            .join("; ");
        if !cookie.is_empty() {
            head.push_str(&format!("Cookie: {cookie}\r\n"));
        }
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        if let Some(body) = body {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(body.unwrap_or_default());
        let reply = raw_request(self.addr, &bytes);
        self.keep_cookies(&reply);
        reply
    }

    /// Stores the reply's cookies; one set to expire is removed. Paths are
    /// ignored: every cookie goes back on every request, which the provider
    /// accepts (it names its cookies per interaction where it matters).
    fn keep_cookies(&self, reply: &Reply) {
        let mut jar = self.cookies.lock().unwrap();
        for (_, set_cookie) in reply.headers.iter().filter(|(n, _)| n == "set-cookie") {
            let mut parts = set_cookie.split(';');
            let Some((name, value)) = parts.next().and_then(|pair| pair.split_once('=')) else {
                continue;
            };
            let (name, value) = (name.trim().to_owned(), value.trim().to_owned());
            let expired = value.is_empty()
                || parts.any(|attribute| {
                    let attribute = attribute.trim().to_ascii_lowercase();
                    attribute == "max-age=0" || attribute.starts_with("expires=thu, 01 jan 1970")
                });
            jar.retain(|(existing, _)| *existing != name);
            if !expired {
                jar.push((name, value));
            }
        }
    }

    /// The `Location` of a redirect, made absolute against the issuer.
    fn redirect(&self, reply: &Reply) -> Option<String> {
        if !(300..400).contains(&reply.status) {
            return None;
        }
        let location = reply.header("location")?;
        Some(if location.starts_with('/') {
            self.url(location)
        } else {
            location.to_owned()
        })
    }

    /// `Some(url)` when `url` is not the provider's (the helper stops there).
    fn off_provider(&self, url: &str) -> Option<String> {
        let own = url == self.issuer || url.starts_with(&format!("{}/", self.issuer));
        (!own).then(|| url.to_owned())
    }

    /// The path and query of one of the provider's URLs (absolute or a path).
    fn path_of(&self, url: &str) -> String {
        if url.starts_with('/') {
            return url.to_owned();
        }
        let rest = url
            .strip_prefix(&self.issuer)
            .unwrap_or_else(|| panic!("{url} is not on the provider {}", self.issuer));
        if rest.is_empty() {
            "/".to_owned()
        } else {
            rest.to_owned()
        }
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The reply's body as JSON.
fn json(reply: &Reply) -> serde_json::Value {
    serde_json::from_slice(&reply.body).unwrap_or_else(|err| panic!("not JSON ({err}): {}", reply.text()))
}

/// `application/x-www-form-urlencoded` of `pairs`.
pub fn form_encode(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(name, value)| format!("{}={}", form_component(name), form_component(value)))
        .collect::<Vec<_>>()
        .join("&")
}

/// One form-encoded component: unreserved characters as they are, every
/// other byte percent-encoded (space too, never `+`, so the same encoding
/// serves URL query strings).
pub fn form_component(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The decoded `(name, value)` pairs of a URL's query (or of a form body).
pub fn query_pairs(url: &str) -> Vec<(String, String)> {
    let query = url.split_once('?').map_or(url, |(_, query)| query);
    let query = query.split('#').next().unwrap_or("");
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(name), percent_decode(value))
        })
        .collect()
}

/// The first value of query parameter `name` in `url`.
pub fn query_param(url: &str, name: &str) -> Option<String> {
    query_pairs(url)
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v)
}

/// Percent-decoding, with `+` as a space (form encoding).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(byte) => {
                        out.push(byte);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The value of attribute `name` of the page's first `<form>`, unescaped.
fn form_attribute(page: &str, name: &str) -> Option<String> {
    let form = &page[page.find("<form")?..];
    let tag = &form[..form.find('>')?];
    attribute(tag, name)
}

/// The value of the hidden input named `name`, unescaped.
fn hidden_input(page: &str, name: &str) -> Option<String> {
    page.match_indices("<input")
        .map(|(at, _)| &page[at..at + page[at..].find('>').unwrap_or(page.len() - at)])
        .find(|tag| attribute(tag, "name").as_deref() == Some(name))
        .and_then(|tag| attribute(tag, "value"))
}

/// The double-quoted value of attribute `name` in one tag's text.
fn attribute(tag: &str, name: &str) -> Option<String> {
    let needle = format!(" {name}=\"");
    let start = tag.find(&needle)? + needle.len();
    let end = start + tag[start..].find('"')?;
    Some(html_unescape(&tag[start..end]))
}

/// The HTML character references the provider's pages use in attributes.
fn html_unescape(text: &str) -> String {
    text.replace("&amp;", "&")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&#x27;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
}
