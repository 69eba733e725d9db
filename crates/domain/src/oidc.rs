//! OpenID Connect (SPEC §16), free of I/O: the client's settings, what the
//! provider's discovery document and key set say, a pending login (state,
//! nonce, PKCE verifier, where to return), the authorization URL, the
//! callback's checks, the token, refresh and revocation requests, the token
//! answer, the ID token's checks given a key set and the time, and the
//! logout URL. The adapter fetches; these rules decide.

use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use crate::exchange::{BodySize, UpstreamRequest};
use crate::headers::Headers;
use crate::method::Method;
use crate::ports::{Random, RandomError};
use crate::setting::SettingError;
use crate::token::Token;

/// Most pending logins kept at once (several tabs logging in).
pub const MAX_PENDING: usize = 3;

/// How long a pending login lives, in seconds (the login cookie's
/// `Max-Age`).
pub const PENDING_LIFETIME_S: i64 = 600;

/// Largest discovery document, key set or token answer read (256 KiB).
pub const MAX_PROVIDER_BODY: usize = 256 * 1024;

/// Clock difference tolerated between tokenjar and the provider when
/// checking an ID token's times, in seconds.
pub const CLOCK_SKEW_S: i64 = 60;

/// The client tokenjar is at the provider, as configured.
#[derive(Clone)]
pub struct OidcClient {
    issuer: String,
    client_id: String,
    client_secret: Option<String>,
    redirect_url: String,
    redirect_origin: String,
    redirect_path: String,
    scopes: Vec<String>,
    user_claims: Vec<String>,
    post_logout_redirect_url: Option<String>,
}

impl fmt::Debug for OidcClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OidcClient")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("redirect_url", &self.redirect_url)
            .field("scopes", &self.scopes)
            .field("user_claims", &self.user_claims)
            .finish_non_exhaustive()
    }
}

/// Whether `url` may be used for the provider: https, or http to a
/// loopback host (a provider on the same machine, as in tests).
fn secure_enough(url: &url::Url) -> bool {
    match url.scheme() {
        "https" => true,
        "http" => match url.host() {
            Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            None => false,
        },
        _ => false,
    }
}

impl OidcClient {
    /// The client of `issuer` called `client_id` (with `client_secret`, or
    /// `""` for a public client), whose callback is `redirect_url`.
    ///
    /// # Errors
    /// Every problem, each naming its key.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        issuer: &str,
        client_id: &str,
        client_secret: &str,
        redirect_url: &str,
        scopes: &[String],
        user_claims: &[String],
        post_logout_redirect_url: &str,
    ) -> Result<Self, Vec<SettingError>> {
        let mut problems = Vec::new();
        match url::Url::parse(issuer) {
            Ok(url) if secure_enough(&url) && url.query().is_none() && url.fragment().is_none() => {}
            Ok(_) => problems.push(SettingError::new(
                "issuer",
                format!("{issuer:?} must be https (http only to a loopback host), without query or fragment"),
            )),
            Err(e) => problems.push(SettingError::new(
                "issuer",
                format!("{issuer:?} is not a URL: {e}"),
            )),
        }
        if client_id.is_empty() {
            problems.push(SettingError::new("client_id", "must be set in OIDC mode"));
        }
        let (redirect_origin, redirect_path) = match url::Url::parse(redirect_url) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.fragment().is_none() => {
                (url.origin().ascii_serialization(), url.path().to_owned())
            }
            _ => {
                problems.push(SettingError::new(
                    "redirect_url",
                    format!("{redirect_url:?} must be an absolute http(s) URL, e.g. https://app.example.com/api/callback"),
                ));
                (String::new(), String::new())
            }
        };
        if !scopes.iter().any(|s| s == "openid") {
            problems.push(SettingError::new("scopes", "must include \"openid\""));
        }
        if let Some(bad) = scopes.iter().find(|s| {
            s.is_empty()
                || s.bytes()
                    .any(|b| b <= b' ' || b == b'"' || b == b'\\' || b >= 0x7f)
        }) {
            problems.push(SettingError::new(
                "scopes",
                format!("{bad:?} is not a scope token"),
            ));
        }
        if !post_logout_redirect_url.is_empty() && url::Url::parse(post_logout_redirect_url).is_err() {
            problems.push(SettingError::new(
                "post_logout_redirect_url",
                format!("{post_logout_redirect_url:?} is not an absolute URL"),
            ));
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Self {
            issuer: issuer.to_owned(),
            client_id: client_id.to_owned(),
            client_secret: (!client_secret.is_empty()).then(|| client_secret.to_owned()),
            redirect_url: redirect_url.to_owned(),
            redirect_origin,
            redirect_path,
            scopes: scopes.to_vec(),
            user_claims: user_claims.to_vec(),
            post_logout_redirect_url: (!post_logout_redirect_url.is_empty())
                .then(|| post_logout_redirect_url.to_owned()),
        })
    }

    /// The issuer, as configured.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The discovery document's URL.
    pub fn discovery_url(&self) -> String {
        format!(
            "{}/.well-known/openid-configuration",
            self.issuer.trim_end_matches('/')
        )
    }

    /// The callback's origin (`https://app.example.com`): where the web app
    /// must be opened, so that the login cookie comes back with the callback.
    pub fn redirect_origin(&self) -> &str {
        &self.redirect_origin
    }

    /// The callback's path (tokenjar's route for it).
    pub fn redirect_path(&self) -> &str {
        &self.redirect_path
    }

    /// The ID-token claims kept in the session and shown by the session
    /// route.
    pub fn user_claims(&self) -> &[String] {
        &self.user_claims
    }

    /// Where the browser goes to log in: the authorization endpoint with
    /// the code flow's parameters, S256 PKCE, `state`, `nonce`, and
    /// `prompt` when given.
    pub fn authorization_url(
        &self,
        provider: &Metadata,
        pending: &PendingLogin,
        prompt: Option<Prompt>,
    ) -> String {
        let mut url = provider.authorization_endpoint.clone();
        {
            let mut query = url.query_pairs_mut();
            query
                .append_pair("response_type", "code")
                .append_pair("client_id", &self.client_id)
                .append_pair("redirect_uri", &self.redirect_url)
                .append_pair("scope", &self.scopes.join(" "))
                .append_pair("state", &pending.state)
                .append_pair("nonce", &pending.nonce)
                .append_pair("code_challenge", &pending.challenge())
                .append_pair("code_challenge_method", "S256");
            if let Some(prompt) = prompt {
                query.append_pair("prompt", prompt.as_str());
            }
        }
        url.into()
    }

    /// Checks a callback's query against the pending logins at `now`:
    /// the provider's `error`, the `state` (one of `pending`, still
    /// current), and `iss` (RFC 9207: must be the issuer when given, and
    /// must be given when the provider says it sends it). The index of the
    /// pending login and the code.
    ///
    /// # Errors
    /// [`AuthError`], whose [`code`](AuthError::code) goes to `auth_error`.
    pub fn check_callback(
        &self,
        provider: &Metadata,
        query: &str,
        pending: &[PendingLogin],
        now: i64,
    ) -> Result<(usize, String), AuthError> {
        let mut code = None;
        let mut state = None;
        let mut iss = None;
        let mut error = None;
        for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
            let slot = match name.as_ref() {
                "code" => &mut code,
                "state" => &mut state,
                "iss" => &mut iss,
                "error" => &mut error,
                _ => continue,
            };
            if slot.is_some() {
                // A repeated parameter: which one counts is ambiguous.
                return Err(AuthError::InvalidRequest);
            }
            *slot = Some(value.into_owned());
        }
        let state = state.ok_or(AuthError::InvalidState)?;
        let index = pending
            .iter()
            .position(|p| bool::from(p.state.as_bytes().ct_eq(state.as_bytes())))
            .ok_or(AuthError::InvalidState)?;
        let login = &pending[index];
        if now.saturating_sub(login.created_at) > PENDING_LIFETIME_S {
            return Err(AuthError::InvalidState);
        }
        match (&iss, provider.iss_parameter_supported) {
            (Some(iss), _) if *iss != provider.issuer => return Err(AuthError::InvalidIssuer),
            (None, true) => return Err(AuthError::InvalidIssuer),
            _ => {}
        }
        if let Some(error) = error {
            return Err(AuthError::Provider(ErrorCode::sanitise(&error)));
        }
        let code = code.filter(|c| !c.is_empty()).ok_or(AuthError::InvalidRequest)?;
        Ok((index, code))
    }

    /// The code exchange: `POST token_endpoint` with the verifier.
    pub fn token_request(&self, provider: &Metadata, code: &str, verifier: &str) -> UpstreamRequest<Vec<u8>> {
        self.form(
            provider.token_endpoint.as_str(),
            &[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", &self.redirect_url),
                ("code_verifier", verifier),
            ],
        )
    }

    /// The `refresh_token` grant.
    pub fn refresh_request(&self, provider: &Metadata, refresh: &Token) -> UpstreamRequest<Vec<u8>> {
        self.form(
            provider.token_endpoint.as_str(),
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh.expose()),
            ],
        )
    }

    /// The revocation of a refresh token (RFC 7009), when the provider has
    /// a revocation endpoint.
    pub fn revocation_request(
        &self,
        provider: &Metadata,
        refresh: &Token,
    ) -> Option<UpstreamRequest<Vec<u8>>> {
        let endpoint = provider.revocation_endpoint.as_ref()?;
        Some(self.form(
            endpoint.as_str(),
            &[("token", refresh.expose()), ("token_type_hint", "refresh_token")],
        ))
    }

    /// A form `POST` to the provider, authenticated as the client:
    /// `client_secret_basic` with a secret (RFC 6749 §2.3.1: both parts
    /// form-encoded first), else the `client_id` in the form.
    fn form(&self, url: &str, pairs: &[(&str, &str)]) -> UpstreamRequest<Vec<u8>> {
        let mut form = url::form_urlencoded::Serializer::new(String::new());
        for (name, value) in pairs {
            form.append_pair(name, value);
        }
        let mut headers = Headers::new();
        headers.append("content-type", "application/x-www-form-urlencoded");
        headers.append("accept", "application/json");
        match &self.client_secret {
            Some(secret) => {
                let encode = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
                let credentials = format!("{}:{}", encode(&self.client_id), encode(secret));
                headers.append(
                    "authorization",
                    format!(
                        "Basic {}",
                        base64::engine::general_purpose::STANDARD.encode(credentials)
                    ),
                );
            }
            None => {
                form.append_pair("client_id", &self.client_id);
            }
        }
        let body = form.finish().into_bytes();
        UpstreamRequest {
            method: Method::Post,
            url: url.to_owned(),
            headers,
            body_size: BodySize::Sized(body.len() as u64),
            body,
        }
    }

    /// Where the page sends the browser to end the session at the provider
    /// (RP-initiated logout), when it has an end-session endpoint.
    pub fn logout_url(&self, provider: &Metadata) -> Option<String> {
        let mut url = provider.end_session_endpoint.clone()?;
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("client_id", &self.client_id);
            if let Some(after) = &self.post_logout_redirect_url {
                query.append_pair("post_logout_redirect_uri", after);
            }
        }
        Some(url.into())
    }

    /// Checks an ID token at `now` against `keys`: its signature (by the
    /// key its `kid` names, with an algorithm that key allows: never
    /// `none`, never HMAC), `iss`, `aud` (and `azp` when there are several
    /// audiences), `exp` and `iat` (with [`CLOCK_SKEW_S`]) and `nonce`.
    /// Returns the claims the session keeps.
    ///
    /// # Errors
    /// [`IdTokenError`]; [`IdTokenError::UnknownKey`] tells the caller to
    /// fetch the key set again (the provider may have rotated its keys).
    pub fn validate_id_token(
        &self,
        keys: &KeySet,
        token: &str,
        nonce: &str,
        now: i64,
    ) -> Result<IdClaims, IdTokenError> {
        let claims = self.verified_claims(keys, token)?;
        let str_claim = |name: &str| claims.get(name).and_then(Value::as_str);
        let int_claim = |name: &str| claims.get(name).and_then(Value::as_i64);
        let exp = int_claim("exp").ok_or(IdTokenError::Expired)?;
        if now >= exp.saturating_add(CLOCK_SKEW_S) {
            return Err(IdTokenError::Expired);
        }
        let iat = int_claim("iat").ok_or(IdTokenError::Malformed)?;
        if iat > now.saturating_add(CLOCK_SKEW_S) {
            return Err(IdTokenError::Expired);
        }
        let sent_nonce = str_claim("nonce").unwrap_or_default();
        if !bool::from(sent_nonce.as_bytes().ct_eq(nonce.as_bytes())) || nonce.is_empty() {
            return Err(IdTokenError::Nonce);
        }
        let sub = str_claim("sub")
            .filter(|s| !s.is_empty())
            .ok_or(IdTokenError::Malformed)?;
        let mut user = Map::new();
        for name in &self.user_claims {
            if let Some(value) = claims.get(name) {
                user.insert(name.clone(), value.clone());
            }
        }
        Ok(IdClaims {
            sub: sub.to_owned(),
            sid: str_claim("sid").map(str::to_owned),
            user,
        })
    }

    /// Checks a back-channel logout token (OpenID Connect Back-Channel
    /// Logout 1.0, SPEC §16) against the provider's `keys` at `now`: the
    /// ID token's signature, `iss`, `aud` and `azp` rules; `iat` not in the
    /// future and `exp`, when present, not past; the back-channel logout
    /// event; no `nonce` (which would make it an ID token); a `jti`; and a
    /// `sid` or `sub` naming whom to log out. Its `sid` and `sub`.
    ///
    /// # Errors
    /// The first check that failed ([`IdTokenError::Malformed`] for the
    /// logout token's own claims).
    pub fn validate_logout_token(
        &self,
        keys: &KeySet,
        token: &str,
        now: i64,
    ) -> Result<LogoutClaims, IdTokenError> {
        let claims = self.verified_claims(keys, token)?;
        let str_claim = |name: &str| {
            claims
                .get(name)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        let int_claim = |name: &str| claims.get(name).and_then(Value::as_i64);
        let iat = int_claim("iat").ok_or(IdTokenError::Malformed)?;
        if iat > now.saturating_add(CLOCK_SKEW_S) {
            return Err(IdTokenError::Expired);
        }
        if let Some(exp) = claims.get("exp") {
            let exp = exp.as_i64().ok_or(IdTokenError::Malformed)?;
            if now >= exp.saturating_add(CLOCK_SKEW_S) {
                return Err(IdTokenError::Expired);
            }
        }
        let event = claims
            .get("events")
            .and_then(|events| events.get(BACKCHANNEL_LOGOUT_EVENT));
        if !event.is_some_and(Value::is_object) || claims.contains_key("nonce") {
            return Err(IdTokenError::Malformed);
        }
        let jti = str_claim("jti").ok_or(IdTokenError::Malformed)?;
        let (sid, sub) = (str_claim("sid"), str_claim("sub"));
        if sid.is_none() && sub.is_none() {
            return Err(IdTokenError::Malformed);
        }
        Ok(LogoutClaims {
            sid,
            sub,
            jti,
            exp: int_claim("exp"),
        })
    }

    /// A JWT's claims once its signature verifies with the key its `kid`
    /// names, by an algorithm that key allows, and its `iss`, `aud` and
    /// `azp` are this client's provider and this client.
    fn verified_claims(&self, keys: &KeySet, token: &str) -> Result<Map<String, Value>, IdTokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| IdTokenError::Malformed)?;
        let key = keys.find(header.kid.as_deref()).ok_or(IdTokenError::UnknownKey)?;
        if !key.algorithms.contains(&header.alg) {
            return Err(IdTokenError::Algorithm);
        }
        let mut validation = Validation::new(header.alg);
        validation.algorithms = vec![header.alg];
        // Times are checked below against the clock port: the library
        // would read the system clock.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.required_spec_claims.clear();
        validation.set_audience(&[&self.client_id]);
        validation.set_issuer(&[&self.issuer]);
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            match e.kind() {
                ErrorKind::InvalidSignature => IdTokenError::Signature,
                ErrorKind::InvalidAudience => IdTokenError::Audience,
                ErrorKind::InvalidIssuer => IdTokenError::Issuer,
                ErrorKind::InvalidAlgorithm => IdTokenError::Algorithm,
                _ => IdTokenError::Malformed,
            }
        })?;
        let claims = data.claims;
        let str_claim = |name: &str| claims.get(name).and_then(Value::as_str);
        // `aud` and `iss` are present: the library refused their absence.
        if let Some(Value::Array(audiences)) = claims.get("aud") {
            if audiences.len() > 1 && str_claim("azp") != Some(self.client_id.as_str()) {
                return Err(IdTokenError::Audience);
            }
        }
        if let Some(azp) = str_claim("azp") {
            if azp != self.client_id {
                return Err(IdTokenError::Audience);
            }
        }
        Ok(claims)
    }
}

/// Least time between two fetches of the key set for an unknown `kid`, in
/// seconds: a flood of tokens naming made-up keys must not become a flood
/// of requests to the provider.
pub const KEY_REFETCH_S: i64 = 60;

/// OIDC mode as the flow sees it: the client, and what has been discovered
/// of the provider, shared by every worker (filled by the adapter's
/// discovery at start, and again when the provider rotates its keys).
#[derive(Clone)]
pub struct Oidc {
    /// The client settings.
    pub client: OidcClient,
    state: Arc<ProviderState>,
}

#[derive(Default)]
struct ProviderState {
    discovered: RwLock<Option<Arc<Discovered>>>,
    keys_fetched_at: AtomicI64,
}

/// The provider's metadata and keys, once fetched.
#[derive(Debug)]
pub struct Discovered {
    /// The discovery document.
    pub metadata: Metadata,
    /// The signing keys.
    pub keys: KeySet,
}

impl fmt::Debug for Oidc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Oidc")
            .field("client", &self.client)
            .field("discovered", &self.discovered().is_some())
            .finish()
    }
}

impl Oidc {
    /// OIDC mode for `client`, nothing discovered yet.
    pub fn new(client: OidcClient) -> Self {
        Self {
            client,
            state: Arc::default(),
        }
    }

    /// What is known of the provider; `None` until discovery succeeded.
    pub fn discovered(&self) -> Option<Arc<Discovered>> {
        self.state
            .discovered
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Records a discovery made at `now`.
    pub fn set_discovered(&self, discovered: Discovered, now: i64) {
        self.state.keys_fetched_at.store(now, Ordering::SeqCst);
        *self
            .state
            .discovered
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(discovered));
    }

    /// Replaces the keys (fetched at `now`), keeping the metadata.
    pub fn set_keys(&self, keys: KeySet, now: i64) {
        let mut slot = self
            .state
            .discovered
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(current) = slot.as_ref() {
            *slot = Some(Arc::new(Discovered {
                metadata: current.metadata.clone(),
                keys,
            }));
            self.state.keys_fetched_at.store(now, Ordering::SeqCst);
        }
    }

    /// Whether the key set may be fetched again at `now` (at most once per
    /// [`KEY_REFETCH_S`]); a `true` claims the turn.
    pub fn may_refetch_keys(&self, now: i64) -> bool {
        let last = self.state.keys_fetched_at.load(Ordering::SeqCst);
        now.saturating_sub(last) >= KEY_REFETCH_S
            && self
                .state
                .keys_fetched_at
                .compare_exchange(last, now, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
    }

    /// The pending logins' cookie name for an auth cookie called `name`.
    pub fn login_cookie_name(name: &str) -> String {
        format!("{name}-login")
    }
}

/// The provider, as its discovery document describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Metadata {
    /// The issuer (the configured one: checked equal).
    pub issuer: String,
    /// Where the browser logs in.
    pub authorization_endpoint: url::Url,
    /// Where codes and refresh tokens are exchanged.
    pub token_endpoint: url::Url,
    /// The provider's signing keys.
    pub jwks_uri: url::Url,
    /// RFC 7009 revocation, if offered.
    pub revocation_endpoint: Option<url::Url>,
    /// RP-initiated logout, if offered.
    pub end_session_endpoint: Option<url::Url>,
    /// The provider puts `iss` in its authorization answers (RFC 9207).
    pub iss_parameter_supported: bool,
}

impl Metadata {
    /// Reads a discovery document for `client`. Every endpoint must be
    /// https (http only on loopback), and the issuer must be the configured
    /// one exactly (OpenID Connect Discovery §4.3): a document naming
    /// another issuer is a mix-up.
    ///
    /// # Errors
    /// [`ProviderError`] saying what is wrong.
    pub fn parse(body: &[u8], client: &OidcClient) -> Result<Self, ProviderError> {
        if body.len() > MAX_PROVIDER_BODY {
            return Err(ProviderError::TooLarge);
        }
        let doc: Value = serde_json::from_slice(body).map_err(|_| ProviderError::NotJson)?;
        let issuer = doc.get("issuer").and_then(Value::as_str).unwrap_or_default();
        if issuer != client.issuer {
            return Err(ProviderError::IssuerMismatch);
        }
        let endpoint = |name: &'static str| -> Result<Option<url::Url>, ProviderError> {
            match doc.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => match url::Url::parse(s) {
                    Ok(url) if secure_enough(&url) && url.fragment().is_none() => Ok(Some(url)),
                    _ => Err(ProviderError::BadEndpoint(name)),
                },
                Some(_) => Err(ProviderError::BadEndpoint(name)),
            }
        };
        let required = |name: &'static str| endpoint(name)?.ok_or(ProviderError::MissingEndpoint(name));
        if let Some(Value::Array(methods)) = doc.get("code_challenge_methods_supported") {
            if !methods.iter().any(|m| m == "S256") {
                return Err(ProviderError::NoPkce);
            }
        }
        Ok(Self {
            issuer: issuer.to_owned(),
            authorization_endpoint: required("authorization_endpoint")?,
            token_endpoint: required("token_endpoint")?,
            jwks_uri: required("jwks_uri")?,
            revocation_endpoint: endpoint("revocation_endpoint")?,
            end_session_endpoint: endpoint("end_session_endpoint")?,
            iss_parameter_supported: doc
                .get("authorization_response_iss_parameter_supported")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        })
    }
}

/// The provider's public signing keys, each with the algorithms it may
/// verify.
#[derive(Clone, Default)]
pub struct KeySet {
    keys: Vec<SigningKey>,
}

#[derive(Clone)]
struct SigningKey {
    kid: Option<String>,
    algorithms: Vec<Algorithm>,
    key: DecodingKey,
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.keys.iter().map(|k| (&k.kid, &k.algorithms)))
            .finish()
    }
}

impl KeySet {
    /// Reads a JWKS. Keys for encryption, symmetric keys (`oct`: an HMAC
    /// "key" a verifier would share with everyone) and keys that do not
    /// parse are left out; a key's algorithms follow its type and curve,
    /// narrowed to its `alg` when it names one.
    ///
    /// # Errors
    /// [`ProviderError`] when the body is not a key set or holds no usable
    /// key.
    pub fn parse(body: &[u8]) -> Result<Self, ProviderError> {
        if body.len() > MAX_PROVIDER_BODY {
            return Err(ProviderError::TooLarge);
        }
        // Parsed key by key: one key of a type this version does not know
        // must not make the whole set unreadable.
        let doc: Value = serde_json::from_slice(body).map_err(|_| ProviderError::NotJson)?;
        let entries = doc
            .get("keys")
            .and_then(Value::as_array)
            .ok_or(ProviderError::NoKeys)?;
        let mut keys = Vec::new();
        for entry in entries {
            let Ok(set) = serde_json::from_value::<JwkSet>(serde_json::json!({ "keys": [entry] })) else {
                continue;
            };
            let Some(jwk) = set.keys.first() else { continue };
            if matches!(jwk.common.public_key_use, Some(ref u) if *u != PublicKeyUse::Signature) {
                continue;
            }
            let family: Vec<Algorithm> = match &jwk.algorithm {
                AlgorithmParameters::RSA(_) => vec![
                    Algorithm::RS256,
                    Algorithm::RS384,
                    Algorithm::RS512,
                    Algorithm::PS256,
                    Algorithm::PS384,
                    Algorithm::PS512,
                ],
                AlgorithmParameters::EllipticCurve(p) => match p.curve {
                    EllipticCurve::P256 => vec![Algorithm::ES256],
                    EllipticCurve::P384 => vec![Algorithm::ES384],
                    _ => continue,
                },
                AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
                    vec![Algorithm::EdDSA]
                }
                AlgorithmParameters::OctetKeyPair(_) | AlgorithmParameters::OctetKey(_) => continue,
            };
            let algorithms: Vec<Algorithm> = match jwk.common.key_algorithm {
                None => family,
                Some(named) => family.into_iter().filter(|a| same_algorithm(*a, named)).collect(),
            };
            if algorithms.is_empty() {
                continue;
            }
            let Ok(key) = DecodingKey::from_jwk(jwk) else {
                continue;
            };
            keys.push(SigningKey {
                kid: jwk.common.key_id.clone(),
                algorithms,
                key,
            });
        }
        if keys.is_empty() {
            return Err(ProviderError::NoKeys);
        }
        Ok(Self { keys })
    }

    /// The key `kid` names; without a `kid`, the one key when there is one.
    fn find(&self, kid: Option<&str>) -> Option<&SigningKey> {
        match kid {
            Some(kid) => self.keys.iter().find(|k| k.kid.as_deref() == Some(kid)),
            None if self.keys.len() == 1 => self.keys.first(),
            None => None,
        }
    }

    /// How many keys are usable.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no key is usable.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Whether a JWK's `alg` names `algorithm`.
fn same_algorithm(algorithm: Algorithm, named: KeyAlgorithm) -> bool {
    matches!(
        (algorithm, named),
        (Algorithm::RS256, KeyAlgorithm::RS256)
            | (Algorithm::RS384, KeyAlgorithm::RS384)
            | (Algorithm::RS512, KeyAlgorithm::RS512)
            | (Algorithm::PS256, KeyAlgorithm::PS256)
            | (Algorithm::PS384, KeyAlgorithm::PS384)
            | (Algorithm::PS512, KeyAlgorithm::PS512)
            | (Algorithm::ES256, KeyAlgorithm::ES256)
            | (Algorithm::ES384, KeyAlgorithm::ES384)
            | (Algorithm::EdDSA, KeyAlgorithm::EdDSA)
    )
}

/// What an ID token said that the session keeps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdClaims {
    /// The user at the provider.
    pub sub: String,
    /// The provider's session, for back-channel logout.
    pub sid: Option<String>,
    /// The configured `oidc.user_claims` the token held.
    pub user: Map<String, Value>,
}

/// The event claim that makes a JWT a back-channel logout token.
pub const BACKCHANNEL_LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// What a valid back-channel logout token names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogoutClaims {
    /// The provider's session to end, when given.
    pub sid: Option<String>,
    /// The user whose sessions to end, when given.
    pub sub: Option<String>,
    /// The token's id: seen once only.
    pub jti: String,
    /// When the token expires, when it says.
    pub exp: Option<i64>,
}

/// A login under way: what the callback must match, and where to go after.
#[derive(Clone, PartialEq, Eq)]
pub struct PendingLogin {
    /// The `state` sent to the provider.
    pub state: String,
    /// The `nonce` the ID token must carry.
    pub nonce: String,
    /// The PKCE verifier.
    pub verifier: String,
    /// The path to return to.
    pub return_to: String,
    /// When the login started (Unix seconds).
    pub created_at: i64,
}

impl fmt::Debug for PendingLogin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingLogin")
            .field("return_to", &self.return_to)
            .field("created_at", &self.created_at)
            .finish_non_exhaustive()
    }
}

impl PendingLogin {
    /// A login started at `now` returning to `return_to`: 32 random bytes
    /// each for the state, the nonce and the verifier.
    ///
    /// # Errors
    /// [`RandomError`] when no random bytes could be had.
    pub fn new(random: &dyn Random, return_to: String, now: i64) -> Result<Self, RandomError> {
        let fresh = || -> Result<String, RandomError> {
            let mut bytes = [0; 32];
            random.fill(&mut bytes)?;
            Ok(URL_SAFE_NO_PAD.encode(bytes))
        };
        Ok(Self {
            state: fresh()?,
            nonce: fresh()?,
            verifier: fresh()?,
            return_to,
            created_at: now,
        })
    }

    /// The S256 challenge of the verifier (RFC 7636 §4.2).
    pub fn challenge(&self) -> String {
        URL_SAFE_NO_PAD.encode(Sha256::digest(self.verifier.as_bytes()))
    }

    /// The pending logins a login cookie holds, at `now`: expired ones and
    /// anything malformed left out.
    pub fn list_from(text: &str, now: i64) -> Vec<Self> {
        let Ok(Value::Array(items)) = serde_json::from_str::<Value>(text) else {
            return Vec::new();
        };
        items
            .iter()
            .filter_map(|item| {
                let field = |name: &str| item.get(name).and_then(Value::as_str).map(str::to_owned);
                Some(Self {
                    state: field("s")?,
                    nonce: field("n")?,
                    verifier: field("v")?,
                    return_to: field("r")?,
                    created_at: item.get("t").and_then(Value::as_i64)?,
                })
            })
            .filter(|p| now.saturating_sub(p.created_at) <= PENDING_LIFETIME_S)
            .take(MAX_PENDING)
            .collect()
    }

    /// The text a login cookie holds for `list` (at most [`MAX_PENDING`],
    /// the newest last).
    pub fn list_to(list: &[Self]) -> String {
        let start = list.len().saturating_sub(MAX_PENDING);
        Value::Array(
            list[start..]
                .iter()
                .map(|p| {
                    serde_json::json!({
                        "s": p.state, "n": p.nonce, "v": p.verifier, "r": p.return_to, "t": p.created_at
                    })
                })
                .collect(),
        )
        .to_string()
    }
}

/// `prompt` values passed on to the provider.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prompt {
    /// `none`: no interaction; fails if the user must log in.
    None,
    /// `login`: log in again.
    Login,
    /// `consent`: ask for consent again.
    Consent,
    /// `select_account`: let the user pick an account.
    SelectAccount,
}

impl Prompt {
    /// The value on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Login => "login",
            Self::Consent => "consent",
            Self::SelectAccount => "select_account",
        }
    }

    /// A `prompt` query value; `None` for any other.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "none" => Some(Self::None),
            "login" => Some(Self::Login),
            "consent" => Some(Self::Consent),
            "select_account" => Some(Self::SelectAccount),
            _ => None,
        }
    }
}

/// Bytes a `Location` header should not carry raw.
const LOCATION_UNSAFE: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'<')
    .add(b'>')
    .add(b'`');

/// Checks a `returnTo` (already percent-decoded) as a path on this origin:
/// one `/` first, then no `/` or `\` second, no control characters or
/// backslashes anywhere (browsers read `\` as `/`), and nothing a browser
/// could read as another origin. `None` gives `/`.
///
/// # Errors
/// [`AuthError::InvalidReturnTo`] for anything else.
pub fn return_to(value: Option<&str>) -> Result<String, AuthError> {
    let Some(value) = value else {
        return Ok("/".to_owned());
    };
    let bytes = value.as_bytes();
    let ok = bytes.first() == Some(&b'/')
        && !matches!(bytes.get(1), Some(b'/' | b'\\'))
        && !bytes.iter().any(|&b| b < 0x20 || b == 0x7f || b == b'\\')
        && value.len() <= 2048;
    if !ok {
        return Err(AuthError::InvalidReturnTo);
    }
    // What a browser would make of it, resolved against a stand-in origin:
    // it must stay there.
    let base = url::Url::parse("https://tokenjar.invalid/").map_err(|_| AuthError::InvalidReturnTo)?;
    match base.join(value) {
        // Kept as given but with anything a `Location` header should not
        // carry raw (non-ASCII, spaces, quotes) percent-encoded.
        Ok(url) if url.origin() == base.origin() => {
            Ok(percent_encoding::utf8_percent_encode(value, LOCATION_UNSAFE).to_string())
        }
        _ => Err(AuthError::InvalidReturnTo),
    }
}

/// The provider's answer to a code exchange or a refresh.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenAnswer {
    /// The access token.
    pub access_token: Token,
    /// A refresh token, when issued.
    pub refresh_token: Option<Token>,
    /// The access token's lifetime in seconds, when given.
    pub expires_in: Option<u64>,
    /// The ID token (code exchange), not kept past validation.
    pub id_token: Option<String>,
}

impl TokenAnswer {
    /// Reads a token endpoint's answer.
    ///
    /// # Errors
    /// [`AuthError::Provider`] with the provider's `error` for a 4xx with
    /// one; [`AuthError::ProviderUnavailable`] for anything unusable.
    pub fn parse(status: u16, body: &[u8]) -> Result<Self, AuthError> {
        if body.len() > MAX_PROVIDER_BODY {
            return Err(AuthError::ProviderUnavailable);
        }
        let doc: Value = serde_json::from_slice(body).map_err(|_| AuthError::ProviderUnavailable)?;
        if !(200..300).contains(&status) {
            return Err(match doc.get("error").and_then(Value::as_str) {
                Some(error) if (400..500).contains(&status) => {
                    AuthError::Provider(ErrorCode::sanitise(error))
                }
                _ => AuthError::ProviderUnavailable,
            });
        }
        let token = |name: &str| -> Result<Option<Token>, AuthError> {
            match doc.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Token::new(s.clone())
                    .map(Some)
                    .map_err(|_| AuthError::ProviderUnavailable),
                Some(_) => Err(AuthError::ProviderUnavailable),
            }
        };
        let access_token = token("access_token")?.ok_or(AuthError::ProviderUnavailable)?;
        if let Some(kind) = doc.get("token_type").and_then(Value::as_str) {
            if !kind.eq_ignore_ascii_case("bearer") {
                return Err(AuthError::ProviderUnavailable);
            }
        }
        Ok(Self {
            access_token,
            refresh_token: token("refresh_token")?,
            expires_in: doc.get("expires_in").and_then(Value::as_u64),
            id_token: doc.get("id_token").and_then(Value::as_str).map(str::to_owned),
        })
    }
}

/// A provider's error code, kept to `[a-z0-9_]` (at most 64) so it can go
/// into a URL and a log line as it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorCode(String);

impl ErrorCode {
    fn sanitise(raw: &str) -> Self {
        let clean: String = raw
            .chars()
            .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
            .take(64)
            .collect();
        Self(if clean.is_empty() {
            "provider_error".to_owned()
        } else {
            clean
        })
    }

    /// The code.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Why a login failed; [`code`](Self::code) is the `auth_error` the page
/// gets.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The provider said no (`error=` on the callback, or a 4xx of its
    /// token endpoint).
    #[error("the provider answered {}", .0.as_str())]
    Provider(ErrorCode),
    /// No pending login has this `state` (unknown, replayed, another
    /// browser's, or too old).
    #[error("the callback's state matches no pending login")]
    InvalidState,
    /// `iss` is not the issuer, or missing though the provider sends it.
    #[error("the callback's iss is not the provider's")]
    InvalidIssuer,
    /// A callback without a code, or with a parameter twice.
    #[error("the callback is malformed")]
    InvalidRequest,
    /// The ID token failed a check.
    #[error("the ID token was refused: {0}")]
    InvalidToken(#[from] IdTokenError),
    /// The provider could not be reached or answered unusably.
    #[error("the provider is unavailable or answered unusably")]
    ProviderUnavailable,
    /// `returnTo` is not a path on this origin.
    #[error("returnTo is not a path on this origin")]
    InvalidReturnTo,
    /// The session could not be kept: the session store (SPEC §17) could
    /// not be asked, or the session outgrew the cookies.
    #[error("the session could not be kept")]
    SessionNotKept,
}

impl AuthError {
    /// The `auth_error` code.
    pub fn code(&self) -> &str {
        match self {
            Self::Provider(code) => code.as_str(),
            Self::InvalidState => "invalid_state",
            Self::InvalidIssuer | Self::InvalidToken(_) => "invalid_token",
            Self::InvalidRequest => "invalid_request",
            Self::ProviderUnavailable => "provider_unavailable",
            Self::InvalidReturnTo => "invalid_return_to",
            Self::SessionNotKept => "session_not_kept",
        }
    }
}

/// Why an ID token was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IdTokenError {
    /// Not a JWS JWT at all.
    #[error("malformed")]
    Malformed,
    /// No key of the set has its `kid`.
    #[error("signed by an unknown key")]
    UnknownKey,
    /// An algorithm its key does not allow (`none`, HMAC, another family).
    #[error("algorithm not allowed for its key")]
    Algorithm,
    /// The signature does not verify.
    #[error("bad signature")]
    Signature,
    /// `iss` is not the issuer.
    #[error("wrong issuer")]
    Issuer,
    /// `aud` does not hold the client, or `azp` is another's.
    #[error("wrong audience")]
    Audience,
    /// Expired, or issued in the future.
    #[error("expired or not yet valid")]
    Expired,
    /// `nonce` is not the login's.
    #[error("wrong nonce")]
    Nonce,
}

/// Why the provider's discovery document or key set is unusable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// Larger than [`MAX_PROVIDER_BODY`].
    #[error("the document is too large")]
    TooLarge,
    /// Not JSON.
    #[error("the document is not JSON")]
    NotJson,
    /// The document names another issuer.
    #[error("the discovery document names another issuer than oidc.issuer")]
    IssuerMismatch,
    /// A required endpoint is missing.
    #[error("the discovery document has no {0}")]
    MissingEndpoint(&'static str),
    /// An endpoint is not an https URL (http only on loopback).
    #[error("the discovery document's {0} is not an https URL")]
    BadEndpoint(&'static str),
    /// The provider does not do S256 PKCE.
    #[error("the provider does not support S256 PKCE")]
    NoPkce,
    /// No usable signing key.
    #[error("the key set holds no usable signing key")]
    NoKeys,
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{EncodingKey, Header};
    use ring::rand::SystemRandom;
    use ring::signature::{EcdsaKeyPair, KeyPair as _, ECDSA_P256_SHA256_FIXED_SIGNING};
    use serde_json::json;

    use super::*;
    use crate::memory::SeededRandom;

    const NOW: i64 = 1_700_000_000;
    const ISSUER: &str = "http://127.0.0.1:4000";

    /// A P-256 key made for the test: its signing half and its JWK.
    struct TestKey {
        pkcs8: Vec<u8>,
        jwk: Value,
    }

    impl TestKey {
        fn new(kid: &str) -> Self {
            let rng = SystemRandom::new();
            let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
            let pair =
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
            let point = pair.public_key().as_ref();
            let jwk = json!({
                "kty": "EC", "crv": "P-256", "kid": kid, "use": "sig", "alg": "ES256",
                "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
                "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
            });
            Self {
                pkcs8: pkcs8.as_ref().to_vec(),
                jwk,
            }
        }

        fn sign(&self, kid: Option<&str>, claims: &Value) -> String {
            let mut header = Header::new(Algorithm::ES256);
            header.kid = kid.map(str::to_owned);
            jsonwebtoken::encode(&header, claims, &EncodingKey::from_ec_der(&self.pkcs8)).unwrap()
        }
    }

    fn client() -> OidcClient {
        let list = |items: &[&str]| items.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        OidcClient::new(
            ISSUER,
            "tokenjar",
            "s3cret:/",
            "https://app.example/api/callback",
            &list(&["openid", "profile", "offline_access"]),
            &list(&["sub", "name", "email"]),
            "https://app.example/",
        )
        .unwrap()
    }

    fn metadata() -> Metadata {
        let doc = json!({
            "issuer": ISSUER,
            "authorization_endpoint": format!("{ISSUER}/auth?x=1"),
            "token_endpoint": format!("{ISSUER}/token"),
            "jwks_uri": format!("{ISSUER}/jwks"),
            "revocation_endpoint": format!("{ISSUER}/token/revocation"),
            "end_session_endpoint": format!("{ISSUER}/session/end"),
            "code_challenge_methods_supported": ["S256"],
            "authorization_response_iss_parameter_supported": true,
        });
        Metadata::parse(doc.to_string().as_bytes(), &client()).unwrap()
    }

    fn claims(nonce: &str) -> Value {
        json!({
            "iss": ISSUER, "aud": "tokenjar", "sub": "ada", "sid": "s-1", "nonce": nonce,
            "exp": NOW + 300, "iat": NOW, "name": "Ada", "email": "ada@example.org", "secret": "x",
        })
    }

    fn keys(jwks: &[&Value]) -> KeySet {
        KeySet::parse(json!({ "keys": jwks }).to_string().as_bytes()).unwrap()
    }

    #[test]
    fn settings_are_checked() {
        let keys = |r: Result<OidcClient, Vec<SettingError>>| -> Vec<&str> {
            r.err().unwrap_or_default().iter().map(|e| e.key).collect()
        };
        let s = |v: &[&str]| v.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            keys(OidcClient::new(
                "http://idp.example",
                "",
                "",
                "/cb",
                &s(&["profile"]),
                &[],
                "x"
            )),
            [
                "issuer",
                "client_id",
                "redirect_url",
                "scopes",
                "post_logout_redirect_url"
            ]
        );
        assert!(OidcClient::new(
            "https://idp.example/realms/a",
            "c",
            "",
            "http://localhost/cb",
            &s(&["openid"]),
            &[],
            ""
        )
        .is_ok());
        assert!(OidcClient::new(
            "http://localhost:8080",
            "c",
            "",
            "http://localhost/cb",
            &s(&["openid"]),
            &[],
            ""
        )
        .is_ok());
        assert_eq!(
            keys(OidcClient::new(
                "https://idp.example",
                "c",
                "",
                "https://a/cb",
                &s(&["openid", "a b"]),
                &[],
                ""
            )),
            ["scopes"]
        );
    }

    #[test]
    fn discovery_is_read_and_checked() {
        let m = metadata();
        assert_eq!(m.token_endpoint.as_str(), "http://127.0.0.1:4000/token");
        assert!(m.iss_parameter_supported);
        let parse = |doc: Value| Metadata::parse(doc.to_string().as_bytes(), &client());
        let mut doc = json!({
            "issuer": ISSUER,
            "authorization_endpoint": format!("{ISSUER}/auth"),
            "token_endpoint": format!("{ISSUER}/token"),
            "jwks_uri": format!("{ISSUER}/jwks"),
        });
        assert!(parse(doc.clone()).is_ok());
        doc["issuer"] = json!("http://127.0.0.1:4000/");
        assert_eq!(parse(doc.clone()), Err(ProviderError::IssuerMismatch));
        doc["issuer"] = json!(ISSUER);
        doc["token_endpoint"] = json!("http://evil.example/token");
        assert_eq!(
            parse(doc.clone()),
            Err(ProviderError::BadEndpoint("token_endpoint"))
        );
        doc["token_endpoint"] = json!(42);
        assert_eq!(
            parse(doc.clone()),
            Err(ProviderError::BadEndpoint("token_endpoint"))
        );
        doc["token_endpoint"] = Value::Null;
        assert_eq!(
            parse(doc.clone()),
            Err(ProviderError::MissingEndpoint("token_endpoint"))
        );
        doc["token_endpoint"] = json!(format!("{ISSUER}/token"));
        doc["code_challenge_methods_supported"] = json!(["plain"]);
        assert_eq!(parse(doc), Err(ProviderError::NoPkce));
        assert_eq!(Metadata::parse(b"<html>", &client()), Err(ProviderError::NotJson));
    }

    #[test]
    fn the_authorization_url_carries_the_code_flow_and_pkce() {
        let pending = PendingLogin::new(&SeededRandom::new(1), "/after".into(), NOW).unwrap();
        let url =
            url::Url::parse(&client().authorization_url(&metadata(), &pending, Some(Prompt::Login))).unwrap();
        let q: std::collections::HashMap<String, String> = url.query_pairs().into_owned().collect();
        assert_eq!(q["x"], "1", "the endpoint's own query is kept");
        assert_eq!(q["response_type"], "code");
        assert_eq!(q["client_id"], "tokenjar");
        assert_eq!(q["redirect_uri"], "https://app.example/api/callback");
        assert_eq!(q["scope"], "openid profile offline_access");
        assert_eq!(q["state"], pending.state);
        assert_eq!(q["nonce"], pending.nonce);
        assert_eq!(q["code_challenge_method"], "S256");
        assert_eq!(q["prompt"], "login");
        assert_eq!(q["code_challenge"], pending.challenge());
        assert!(
            !url.as_str().contains(&pending.verifier),
            "the verifier stays home"
        );
    }

    #[test]
    fn the_s256_challenge_is_the_hash_of_the_verifier() {
        let mut pending = PendingLogin::new(&SeededRandom::new(1), "/".into(), NOW).unwrap();
        // Worked out independently (Python's hashlib and base64).
        pending.verifier = "dBjftJeZ4CVP-mJ92K9DoZ4ER4I1BVC5nTvZHLPdk3J".to_owned();
        assert_eq!(pending.challenge(), "pGMlA_lne3LI-dCGGSSpfan0RHBVR4u0XOdSJaWEgAQ");
        let fresh = PendingLogin::new(&SeededRandom::new(2), "/".into(), NOW).unwrap();
        assert_eq!(
            (fresh.state.len(), fresh.nonce.len(), fresh.verifier.len()),
            (43, 43, 43)
        );
        assert!(fresh.state != fresh.nonce && fresh.nonce != fresh.verifier);
    }

    fn pending(n: u64) -> Vec<PendingLogin> {
        (0..n)
            .map(|i| PendingLogin::new(&SeededRandom::new(10 + i), format!("/tab/{i}"), NOW).unwrap())
            .collect()
    }

    #[test]
    fn the_callback_matches_a_pending_login_and_the_issuer() {
        let (client, provider, logins) = (client(), metadata(), pending(3));
        let query =
            |state: &str, extra: &str| format!("code=c-1&state={state}&iss={}{extra}", urlenc(ISSUER));
        assert_eq!(
            client.check_callback(&provider, &query(&logins[1].state, ""), &logins, NOW + 5),
            Ok((1, "c-1".to_owned()))
        );
        let check = |q: String, now: i64| client.check_callback(&provider, &q, &logins, now);
        assert_eq!(check(query("nope", ""), NOW), Err(AuthError::InvalidState));
        assert_eq!(
            check(query(&logins[0].state, ""), NOW + PENDING_LIFETIME_S + 1),
            Err(AuthError::InvalidState)
        );
        assert_eq!(
            check(
                format!("code=c&state={}&iss=http%3A%2F%2Fevil.example", logins[0].state),
                NOW
            ),
            Err(AuthError::InvalidIssuer)
        );
        // The provider says it sends `iss`: its absence is a mix-up sign.
        assert_eq!(
            check(format!("code=c&state={}", logins[0].state), NOW),
            Err(AuthError::InvalidIssuer)
        );
        assert_eq!(
            check(query(&logins[0].state, "&state=x"), NOW),
            Err(AuthError::InvalidRequest)
        );
        assert_eq!(
            check(
                format!(
                    "error=access_denied&state={}&iss={}",
                    logins[0].state,
                    urlenc(ISSUER)
                ),
                NOW
            ),
            Err(AuthError::Provider(ErrorCode("access_denied".into())))
        );
        // An error with a hostile code is kept to a safe alphabet.
        let weird = check(
            format!(
                "error=%3Cscript%3E%0D%0AX&state={}&iss={}",
                logins[0].state,
                urlenc(ISSUER)
            ),
            NOW,
        );
        assert_eq!(weird.unwrap_err().code(), "script");
        assert_eq!(check(String::new(), NOW), Err(AuthError::InvalidState));
    }

    fn urlenc(s: &str) -> String {
        url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
    }

    #[test]
    fn pending_logins_round_trip_and_stay_few_and_fresh() {
        let mut logins = pending(3);
        logins.push(PendingLogin::new(&SeededRandom::new(99), "/four".into(), NOW + 1).unwrap());
        let text = PendingLogin::list_to(&logins);
        let back = PendingLogin::list_from(&text, NOW + 1);
        assert_eq!(back, logins[1..].to_vec(), "the oldest is dropped");
        assert!(PendingLogin::list_from(&text, NOW + PENDING_LIFETIME_S + 1).len() == 1);
        assert!(PendingLogin::list_from("garbage", NOW).is_empty());
        assert!(PendingLogin::list_from(r#"[{"s":1}]"#, NOW).is_empty());
        assert!(!format!("{:?}", logins[0]).contains(&logins[0].verifier));
    }

    #[test]
    fn requests_to_the_token_endpoint_authenticate_the_client() {
        let (client, provider) = (client(), metadata());
        let request = client.token_request(&provider, "c/1", "v-1");
        assert_eq!(request.url, "http://127.0.0.1:4000/token");
        let body = String::from_utf8(request.body.clone()).unwrap();
        assert_eq!(
            body,
            "grant_type=authorization_code&code=c%2F1&redirect_uri=https%3A%2F%2Fapp.example%2Fapi%2Fcallback&code_verifier=v-1"
        );
        // RFC 6749 §2.3.1: each part form-encoded, then base64.
        let basic = base64::engine::general_purpose::STANDARD.encode("tokenjar:s3cret%3A%2F");
        assert_eq!(
            request.headers.get_str("authorization"),
            Some(format!("Basic {basic}").as_str())
        );
        let refresh = client.refresh_request(&provider, &Token::new("r-1".into()).unwrap());
        assert_eq!(refresh.body, b"grant_type=refresh_token&refresh_token=r-1");
        let revoke = client
            .revocation_request(&provider, &Token::new("r-1".into()).unwrap())
            .unwrap();
        assert_eq!(revoke.url, "http://127.0.0.1:4000/token/revocation");

        let s = |v: &[&str]| v.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
        let public = OidcClient::new(ISSUER, "spa", "", "https://a/cb", &s(&["openid"]), &[], "").unwrap();
        let request = public.refresh_request(&provider, &Token::new("r".into()).unwrap());
        assert!(request.headers.get_str("authorization").is_none());
        assert!(String::from_utf8(request.body)
            .unwrap()
            .ends_with("&client_id=spa"));
    }

    #[test]
    fn the_logout_url_names_the_client_and_where_to_return() {
        assert_eq!(
            client().logout_url(&metadata()).as_deref(),
            Some("http://127.0.0.1:4000/session/end?client_id=tokenjar&post_logout_redirect_uri=https%3A%2F%2Fapp.example%2F")
        );
        let mut without = metadata();
        without.end_session_endpoint = None;
        assert_eq!(client().logout_url(&without), None);
    }

    #[test]
    fn return_to_must_stay_on_this_origin() {
        for good in ["/", "/a/b?c=d#e", "/%2F", "/a//b", "/.well-known"] {
            assert_eq!(return_to(Some(good)), Ok(good.to_owned()), "{good}");
        }
        assert_eq!(return_to(None), Ok("/".to_owned()));
        assert_eq!(
            return_to(Some("/café au lait")),
            Ok("/caf%C3%A9%20au%20lait".to_owned())
        );
        for bad in [
            "//evil.example",
            "/\\evil.example",
            "/\\/evil.example",
            "\\evil.example",
            "https://evil.example",
            "evil.example",
            "",
            "/\t/evil.example",
            "/\n/evil.example",
            "//%2Fevil.example",
            "javascript:alert(1)",
            " /x",
        ] {
            assert_eq!(return_to(Some(bad)), Err(AuthError::InvalidReturnTo), "{bad:?}");
        }
    }

    #[test]
    fn token_answers_are_read_and_errors_named() {
        let ok = TokenAnswer::parse(
            200,
            br#"{"access_token":"a","token_type":"Bearer","expires_in":60,"refresh_token":"r","id_token":"i"}"#,
        )
        .unwrap();
        assert_eq!(ok.access_token.expose(), "a");
        assert_eq!(
            ok.refresh_token.map(|t| t.expose().to_owned()).as_deref(),
            Some("r")
        );
        assert_eq!((ok.expires_in, ok.id_token.as_deref()), (Some(60), Some("i")));
        let err = |status, body: &str| TokenAnswer::parse(status, body.as_bytes()).unwrap_err();
        assert_eq!(err(400, r#"{"error":"invalid_grant"}"#).code(), "invalid_grant");
        assert_eq!(
            err(500, r#"{"error":"server_error"}"#),
            AuthError::ProviderUnavailable
        );
        assert_eq!(
            err(200, r#"{"token_type":"Bearer"}"#),
            AuthError::ProviderUnavailable
        );
        assert_eq!(
            err(200, r#"{"access_token":"a","token_type":"mac"}"#),
            AuthError::ProviderUnavailable
        );
        assert_eq!(
            err(
                200,
                r#"{"access_token":"a
X: y"}"#
            ),
            AuthError::ProviderUnavailable
        );
        assert_eq!(err(200, "<html>"), AuthError::ProviderUnavailable);
    }

    #[test]
    fn a_good_id_token_gives_its_claims() {
        let key = TestKey::new("k1");
        let set = keys(&[&key.jwk]);
        let token = key.sign(Some("k1"), &claims("n-1"));
        let got = client().validate_id_token(&set, &token, "n-1", NOW + 10).unwrap();
        assert_eq!(got.sub, "ada");
        assert_eq!(got.sid.as_deref(), Some("s-1"));
        assert_eq!(
            Value::Object(got.user),
            json!({"sub": "ada", "name": "Ada", "email": "ada@example.org"}),
            "only the configured claims"
        );
    }

    #[test]
    fn id_token_attacks_are_refused() {
        let key = TestKey::new("k1");
        let other = TestKey::new("k1");
        let set = keys(&[&key.jwk]);
        let client = client();
        let check = |token: &str| client.validate_id_token(&set, token, "n-1", NOW + 10);
        let with = |change: &dyn Fn(&mut Value)| {
            let mut c = claims("n-1");
            change(&mut c);
            key.sign(Some("k1"), &c)
        };
        assert_eq!(
            check(&with(&|c| c["aud"] = json!("someone-else"))),
            Err(IdTokenError::Audience)
        );
        assert_eq!(
            check(&with(&|c| c["aud"] = json!(["tokenjar", "other"]))),
            Err(IdTokenError::Audience)
        );
        assert!(check(&with(&|c| {
            c["aud"] = json!(["tokenjar", "other"]);
            c["azp"] = json!("tokenjar");
        }))
        .is_ok());
        assert_eq!(
            check(&with(&|c| c["azp"] = json!("other"))),
            Err(IdTokenError::Audience)
        );
        assert_eq!(
            check(&with(&|c| c["iss"] = json!("http://evil.example"))),
            Err(IdTokenError::Issuer)
        );
        assert_eq!(
            check(&with(&|c| c["nonce"] = json!("n-2"))),
            Err(IdTokenError::Nonce)
        );
        assert_eq!(
            check(&with(&|c| {
                c.as_object_mut().unwrap().remove("nonce");
            })),
            Err(IdTokenError::Nonce)
        );
        assert_eq!(
            check(&with(&|c| c["exp"] = json!(NOW - CLOCK_SKEW_S))),
            Err(IdTokenError::Expired)
        );
        assert_eq!(
            check(&with(&|c| c["iat"] = json!(NOW + 10 + CLOCK_SKEW_S + 1))),
            Err(IdTokenError::Expired)
        );
        assert_eq!(
            check(&with(&|c| {
                c.as_object_mut().unwrap().remove("exp");
            })),
            Err(IdTokenError::Expired)
        );
        // Signed by another key under the same kid (another issuer's key).
        assert_eq!(
            check(&other.sign(Some("k1"), &claims("n-1"))),
            Err(IdTokenError::Signature)
        );
        // A kid the set does not have: the caller refetches the keys.
        assert_eq!(
            check(&key.sign(Some("k2"), &claims("n-1"))),
            Err(IdTokenError::UnknownKey)
        );
        // `alg: none`, and HS256 "signed" with the public key's bytes.
        let payload = URL_SAFE_NO_PAD.encode(claims("n-1").to_string());
        let none = format!(
            "{}.{payload}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none","kid":"k1"}"#)
        );
        assert!(check(&none).is_err());
        let mut hs = Header::new(Algorithm::HS256);
        hs.kid = Some("k1".into());
        let public = key.jwk.to_string();
        let confused =
            jsonwebtoken::encode(&hs, &claims("n-1"), &EncodingKey::from_secret(public.as_bytes())).unwrap();
        assert_eq!(check(&confused), Err(IdTokenError::Algorithm));
        // A tampered payload.
        let good = key.sign(Some("k1"), &claims("n-1"));
        let parts: Vec<&str> = good.split('.').collect();
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            URL_SAFE_NO_PAD.encode(claims("n-1").to_string().replace("ada", "eve")),
            parts[2]
        );
        assert_eq!(check(&forged), Err(IdTokenError::Signature));
        assert_eq!(check("not a jwt"), Err(IdTokenError::Malformed));
    }

    #[test]
    fn logout_tokens_are_checked_like_id_tokens_and_as_logout_tokens() {
        let key = TestKey::new("k1");
        let set = keys(&[&key.jwk]);
        let client = client();
        let logout = || {
            json!({
                "iss": ISSUER, "aud": "tokenjar", "sub": "ada", "sid": "s-1", "iat": NOW,
                "exp": NOW + 120, "jti": "j-1",
                "events": { BACKCHANNEL_LOGOUT_EVENT: {} },
            })
        };
        let check = |c: &Value| client.validate_logout_token(&set, &key.sign(Some("k1"), c), NOW + 10);
        assert_eq!(
            check(&logout()),
            Ok(LogoutClaims {
                sid: Some("s-1".into()),
                sub: Some("ada".into()),
                jti: "j-1".into(),
                exp: Some(NOW + 120),
            })
        );
        let with = |change: &dyn Fn(&mut Value)| {
            let mut c = logout();
            change(&mut c);
            check(&c)
        };
        // A sid alone, or a sub alone, names whom to log out.
        assert!(with(&|c| {
            c.as_object_mut().unwrap().remove("sub");
        })
        .is_ok());
        assert!(with(&|c| {
            c.as_object_mut().unwrap().remove("exp");
        })
        .is_ok());
        type Change<'a> = &'a dyn Fn(&mut Value);
        let refused: [(&str, Change<'_>, IdTokenError); 9] = [
            ("no event", &|c| c["events"] = json!({}), IdTokenError::Malformed),
            (
                "the event not an object",
                &|c| c["events"] = json!({ BACKCHANNEL_LOGOUT_EVENT: "x" }),
                IdTokenError::Malformed,
            ),
            (
                "a nonce: an ID token",
                &|c| c["nonce"] = json!("n"),
                IdTokenError::Malformed,
            ),
            (
                "no jti",
                &|c| {
                    c.as_object_mut().unwrap().remove("jti");
                },
                IdTokenError::Malformed,
            ),
            (
                "neither sid nor sub",
                &|c| {
                    let c = c.as_object_mut().unwrap();
                    c.remove("sid");
                    c.remove("sub");
                },
                IdTokenError::Malformed,
            ),
            (
                "expired",
                &|c| c["exp"] = json!(NOW - 3600),
                IdTokenError::Expired,
            ),
            (
                "issued in the future",
                &|c| c["iat"] = json!(NOW + 3600),
                IdTokenError::Expired,
            ),
            (
                "another audience",
                &|c| c["aud"] = json!("other"),
                IdTokenError::Audience,
            ),
            (
                "another issuer",
                &|c| c["iss"] = json!("http://evil.example"),
                IdTokenError::Issuer,
            ),
        ];
        for (what, change, error) in refused {
            assert_eq!(with(change), Err(error), "{what}");
        }
        // Signed by another key under the served kid.
        let other = TestKey::new("k1");
        assert_eq!(
            client.validate_logout_token(&set, &other.sign(Some("k1"), &logout()), NOW),
            Err(IdTokenError::Signature)
        );
        // An ID token is not a logout token.
        assert!(client
            .validate_logout_token(&set, &key.sign(Some("k1"), &claims("n-1")), NOW)
            .is_err());
    }

    #[test]
    fn key_sets_keep_only_signing_keys_of_known_kinds() {
        let key = TestKey::new("k1");
        let mut enc = key.jwk.clone();
        enc["use"] = json!("enc");
        enc["kid"] = json!("e1");
        let set = keys(&[
            &key.jwk,
            &enc,
            &json!({"kty": "oct", "k": "c2VjcmV0", "kid": "h1"}),
            &json!({"kty": "RSA", "kid": "broken"}),
            &json!({"kty": "future-kind", "kid": "f1"}),
        ]);
        assert_eq!(set.len(), 1);
        assert_eq!(
            KeySet::parse(br#"{"keys":[]}"#).unwrap_err(),
            ProviderError::NoKeys
        );
        assert_eq!(KeySet::parse(b"[]").unwrap_err(), ProviderError::NoKeys);
        // Without a kid, the one key is used; with two keys, none is.
        let token = key.sign(None, &claims("n-1"));
        assert!(client().validate_id_token(&set, &token, "n-1", NOW).is_ok());
        let two = keys(&[&key.jwk, &TestKey::new("k2").jwk]);
        assert_eq!(
            client().validate_id_token(&two, &token, "n-1", NOW),
            Err(IdTokenError::UnknownKey)
        );
    }
}
