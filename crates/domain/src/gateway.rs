//! The request flow, top to bottom: route → admit → open cookie →
//! (tokenjar's own answer | plan → send through the [`Upstream`] port →
//! response rules) → reply. One [`Gateway`] per server worker; the [`Rules`]
//! are shared. A WebSocket handshake takes the same first steps and ends in
//! a [`WebSocketPlan`] for the adapter's relay.

use std::sync::Arc;

use base64::Engine as _;
use serde_json::json;

use crate::cookies::{Carried, CookieError, CookieJar, CookieState, Rejection, Session};
use crate::csrf::CsrfRules;
use crate::error::FlowError;
use crate::exchange::{
    BodySize, ClientRequest, Reply, ReplyBody, UpstreamBase, UpstreamRequest, UpstreamResponse,
};
use crate::forwarding::Forwarding;
use crate::headers::Headers;
use crate::login::{LoginError, LoginRules, MAX_LOGIN_BODY};
use crate::method::Method;
use crate::oidc::{
    return_to, AuthError, Discovered, IdTokenError, KeySet, Metadata, Oidc, PendingLogin, Prompt,
    TokenAnswer, CLOCK_SKEW_S, MAX_PROVIDER_BODY, PENDING_LIFETIME_S,
};
use crate::ports::{BodyReadError, Clock, Random, SessionStore, Upstream, UpstreamError};
use crate::refresh::{RefreshResult, RefreshRules, Renewal, Turn, Verdict};
use crate::relay;
use crate::routes::{Listener, PathError, Route, RouteClass, Routes};
use crate::store::{session_indexes, session_key, NoStore, StoreRules, SESSION_ID_BYTES};
use crate::text::contains;
use crate::token::{Grant, Token, TokenRules};
use crate::websocket::{self, WebSocketPlan};

/// Everything the flow decides by, built once from configuration.
#[derive(Clone, Debug)]
pub struct Rules {
    /// Route paths.
    pub routes: Routes,
    /// Where the API is.
    pub upstream: UpstreamBase,
    /// How the token goes upstream.
    pub token: TokenRules,
    /// Where the token is in the login response.
    pub login: LoginRules,
    /// The auth cookie.
    pub cookies: CookieJar,
    /// Cross-site request forgery defence.
    pub csrf: CsrfRules,
    /// Which peers may speak for the browser, and the public origin.
    pub forwarding: Forwarding,
    /// Token refresh (SPEC §14), when `refresh.path` is set or in OIDC
    /// mode.
    pub refresh: Option<RefreshRules>,
    /// OIDC mode (SPEC §16), when `oidc.issuer` is set.
    pub oidc: Option<Oidc>,
    /// Server-side sessions (SPEC §17), when `session.store` is `memory`
    /// or `redis`; `None`: the cookie holds the session.
    pub store: Option<StoreRules>,
}

/// How a login went, for logs and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoginResult {
    /// The cookie was set.
    Success,
    /// The API said no (non-2xx), passed through.
    Refused,
    /// The API said yes but its answer was unusable or never came.
    Failed,
}

impl LoginResult {
    /// The metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Refused => "refused",
            Self::Failed => "failed",
        }
    }
}

/// A finished request: the reply and what happened on the way, for the
/// adapter to log and count.
#[derive(Debug)]
pub struct Handled<B> {
    /// What goes back to the browser.
    pub reply: Reply<B>,
    /// The route class, for metrics.
    pub route: RouteClass,
    /// The error tokenjar answered with, if any (to be logged once).
    pub error: Option<FlowError>,
    /// A cookie that was sent but refused (and is being deleted).
    pub rejected_cookie: Option<Rejection>,
    /// Auth cookies that opened to different sessions: none was used and
    /// none is deleted (see [`CookieState::Conflicting`]).
    pub conflicting_cookies: bool,
    /// How a login went, on the login route.
    pub login: Option<LoginResult>,
    /// How the session's refresh went, when the request needed one.
    pub refresh: Option<RefreshResult>,
}

/// The request flow over an upstream `U`, a clock `C`, a random source
/// `R` and, for server-side sessions, a session store `S`.
pub struct Gateway<U, C, R, S = NoStore> {
    rules: Arc<Rules>,
    upstream: U,
    clock: C,
    random: R,
    store: S,
}

impl<U, C, R> Gateway<U, C, R, NoStore> {
    /// A gateway deciding by `rules`, sending through `upstream`, telling
    /// time by `clock` and sealing cookies with nonces from `random`; its
    /// sessions live in the cookie until [`with_store`](Self::with_store).
    pub fn new(rules: Arc<Rules>, upstream: U, clock: C, random: R) -> Self {
        Self {
            rules,
            upstream,
            clock,
            random,
            store: NoStore,
        }
    }

    /// The same gateway with its sessions in `store`, which the rules
    /// (`store`) then use.
    pub fn with_store<S: SessionStore>(self, store: S) -> Gateway<U, C, R, S> {
        Gateway {
            rules: self.rules,
            upstream: self.upstream,
            clock: self.clock,
            random: self.random,
            store,
        }
    }
}

impl<U: Upstream, C: Clock, R: Random, S: SessionStore> Gateway<U, C, R, S> {
    /// The rules in force.
    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// The upstream port (the readiness probe goes through it too).
    pub fn upstream(&self) -> &U {
        &self.upstream
    }

    /// The session store port (the readiness probe pings it).
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Where a raw path that arrived on `listener` goes: the one router
    /// ([`Routes::classify_on`]). Adapters call this first, serve the
    /// routes that need their own I/O (operator endpoints, the web app's
    /// files and built-in page) and hand the rest to
    /// [`dispatch`](Self::dispatch).
    ///
    /// # Errors
    /// [`PathError`] for a path that is refused.
    pub fn route(&self, listener: Listener, raw_path: &str) -> Result<Route, PathError> {
        self.rules.routes.classify_on(listener, raw_path)
    }

    /// Handles a request to the main listener end to end.
    pub async fn handle(&self, request: ClientRequest<U::RequestBody>) -> Handled<U::ResponseBody> {
        match self.route(Listener::Main, &request.path) {
            Ok(route) => self.dispatch(route, request).await,
            Err(error) => self.refuse(error),
        }
    }

    /// The answer to a path the router refused.
    pub fn refuse(&self, error: PathError) -> Handled<U::ResponseBody> {
        Self::failed(RouteClass::Api, error.into())
    }

    /// Handles a request whose route is already known. The routes an
    /// adapter serves itself (operator endpoints, the web app's pages) have
    /// nothing behind them here: they get the answer of a path outside
    /// every route (404).
    pub async fn dispatch(
        &self,
        route: Route,
        request: ClientRequest<U::RequestBody>,
    ) -> Handled<U::ResponseBody> {
        let class = route.class();
        // Before anything else: a forged request must not even log out.
        if let Err(error) = self.admit_to(&route, &request) {
            return Self::failed(class, error);
        }
        let now = self.clock.now();
        let (cookie, session_id) = match self.open_session(&request.headers, now).await {
            Ok(opened) => opened,
            Err(error) => return Self::failed(class, error),
        };
        let rejected_cookie = match cookie {
            CookieState::Rejected(why) => Some(why),
            _ => None,
        };
        let conflicting_cookies = matches!(cookie, CookieState::Conflicting);
        // Which auth cookies (whole and chunks) were sent, by name: needed
        // only where cookies are written, so the header is not read twice
        // on every call.
        let refreshing = match (&self.rules.refresh, &cookie, &route) {
            (Some(rules), CookieState::Valid(session), Route::Proxy { login: false, .. })
                if RefreshRules::can_refresh(session) =>
            {
                Some((rules, session))
            }
            _ => None,
        };
        let writes = rejected_cookie.is_some()
            || refreshing.is_some()
            || matches!(
                route,
                Route::Logout | Route::Proxy { login: true, .. } | Route::OidcCallback
            );
        let carried = if writes {
            self.rules.cookies.carried(request.headers.get_all("cookie"))
        } else {
            Carried::default()
        };

        let mut refresh = None;
        let (result, login) = match route {
            Route::Session => (self.session(&request.method, &cookie), None),
            Route::Logout => (
                self.logout(request, &cookie, carried, session_id.as_deref())
                    .await,
                None,
            ),
            Route::OidcLogin => (self.oidc_login(&request, now), None),
            // Ending sessions the provider names needs a session store
            // (SPEC §17); with the stateless cookie the route is 404, so a
            // provider configured to call it learns that at once.
            Route::BackchannelLogout => (Err(FlowError::NotFound), None),
            Route::OidcCallback => {
                let (reply, outcome) = self.oidc_callback(&request, carried, now).await;
                (Ok(reply), Some(outcome))
            }
            Route::Outside
            | Route::Ops(_)
            | Route::OpsNotFound
            | Route::PageForwarded
            | Route::PageFile
            | Route::PageBuiltIn
            | Route::PageMissing => (Err(FlowError::NotFound), None),
            Route::Proxy { rest, login: false } => match refreshing {
                Some((rules, session)) => {
                    let (result, outcome) = self
                        .proxy_refreshing(
                            rules,
                            request,
                            &rest,
                            (session, session_id.as_deref()),
                            carried,
                            now,
                        )
                        .await;
                    refresh = outcome;
                    (result, None)
                }
                None => (
                    self.proxy(&self.rules.upstream, request, &rest, cookie.token())
                        .await,
                    None,
                ),
            },
            Route::Proxy { rest, login: true } => {
                let result = self
                    .login(
                        request,
                        &rest,
                        cookie.token(),
                        session_id.as_deref(),
                        carried,
                        now,
                    )
                    .await;
                let outcome = match &result {
                    Ok(reply) if (200..300).contains(&reply.status) => LoginResult::Success,
                    Ok(_) => LoginResult::Refused,
                    Err(_) => LoginResult::Failed,
                };
                (result, Some(outcome))
            }
        };

        let (mut reply, error) = settle(result);
        // A refused refresh ends the session: every cookie of it goes, and
        // its stored session (best effort: it expires by itself anyway).
        if matches!(error, Some(FlowError::SessionExpired)) {
            for removal in self.rules.cookies.removals(carried) {
                reply.headers.append("set-cookie", removal);
            }
            if let Some(id) = &session_id {
                let _ = self.store.delete(&session_key(id)).await;
            }
        }
        // A cookie that failed to open is deleted, every chunk of it too,
        // unless this very reply already writes the cookies (a login or a
        // logout, which replace or delete whatever was sent).
        if rejected_cookie.is_some() && !self.writes_cookie(&reply.headers) {
            for removal in self.rules.cookies.removals(carried) {
                reply.headers.append("set-cookie", removal);
            }
        }
        Handled {
            reply,
            route: class,
            error,
            rejected_cookie,
            conflicting_cookies,
            login,
            refresh,
        }
    }

    /// The request's session (SPEC §6), and in store mode (SPEC §17) the id
    /// of the stored session it came from. The cookie opens as always; in
    /// store mode it holds only an id, and the session is the store's value
    /// under it: gone or unopenable there (logged out, expired, a hostile
    /// value), the cookie counts as rejected and is deleted.
    ///
    /// # Errors
    /// [`FlowError::SessionStore`] when a session cookie came but the store
    /// could not be asked (503: the session may well be there).
    async fn open_session(
        &self,
        headers: &Headers,
        now: i64,
    ) -> Result<(CookieState, Option<String>), FlowError> {
        let cookie = self.rules.cookies.open(headers.get_all("cookie"), now);
        let (Some(_), CookieState::Valid(held)) = (&self.rules.store, &cookie) else {
            return Ok((cookie, None));
        };
        let id = held.token.expose();
        let Some(value) = self.store.get(&session_key(id)).await? else {
            return Ok((CookieState::Rejected(Rejection::Expired), None));
        };
        Ok(match self.rules.cookies.open_stored(&value, now) {
            Ok(session) => (CookieState::Valid(session), Some(id.to_owned())),
            Err(why) => (CookieState::Rejected(why), None),
        })
    }

    /// Issues the session of `grant` (SPEC §6, §15): sealed into the
    /// cookie, or in store mode (SPEC §17) sealed into the store under
    /// `session_id` (a fresh random id when `None`: a login, so an id is
    /// never carried over from before one), with a TTL of the session's
    /// lifetime, and the cookie holding only the id. The cookies the
    /// request `carried` that the new ones do not overwrite are deleted.
    ///
    /// # Errors
    /// [`FlowError::Cookie`] when the session cannot be kept in cookies or
    /// the id made; [`FlowError::SessionStore`] when the store failed.
    async fn issue(
        &self,
        grant: &Grant,
        now: i64,
        carried: Carried,
        session_id: Option<&str>,
    ) -> Result<crate::cookies::IssuedCookie, FlowError> {
        let Some(store) = &self.rules.store else {
            return Ok(self
                .rules
                .cookies
                .issue_replacing(grant, now, &self.random, carried)?);
        };
        let id = match session_id {
            Some(id) => id.to_owned(),
            None => {
                let mut bytes = [0u8; SESSION_ID_BYTES];
                self.random.fill(&mut bytes).map_err(CookieError::from)?;
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
            }
        };
        let expires_at = self.keep(store, grant, &id, now).await?;
        let held = Grant {
            access: Token::new(id).map_err(CookieError::from)?,
            refresh: None,
            access_expires_at: Some(expires_at),
            profile: None,
        };
        Ok(self
            .rules
            .cookies
            .issue_replacing(&held, now, &self.random, carried)?)
    }

    /// The provider's back-channel logout (SPEC §16, OpenID Connect
    /// Back-Channel Logout 1.0) at `routes.backchannel_logout`, given the
    /// request's method and its whole (small) form body: the
    /// `logout_token` checked like an ID token plus its own rules, used
    /// once (its `jti` is remembered in the store for its lifetime), and
    /// every stored session of its `sid` (else its `sub`) ended at once, on
    /// every instance sharing the store. 200 with no body; 400
    /// `bad_request` for a missing, invalid or replayed token; 404 without
    /// a session store (the sessions are in browsers' cookies, out of
    /// reach). No CSRF rule: the provider calls it, server to server.
    pub async fn backchannel_logout(&self, method: &Method, body: &[u8]) -> Handled<U::ResponseBody> {
        let (reply, error) = settle(self.end_provider_sessions(method, body).await);
        Handled {
            reply,
            route: RouteClass::Logout,
            error,
            rejected_cookie: None,
            conflicting_cookies: false,
            login: None,
            refresh: None,
        }
    }

    async fn end_provider_sessions(
        &self,
        method: &Method,
        body: &[u8],
    ) -> Result<Reply<U::ResponseBody>, FlowError> {
        let (Some(oidc), Some(_)) = (&self.rules.oidc, &self.rules.store) else {
            return Err(FlowError::NotFound);
        };
        if *method != Method::Post {
            return Err(FlowError::MethodNotAllowed { allow: "POST" });
        }
        let mut tokens = url::form_urlencoded::parse(body).filter(|(name, _)| name == "logout_token");
        let (Some((_, token)), None) = (tokens.next(), tokens.next()) else {
            return Err(FlowError::BadRequest("The request needs one logout_token."));
        };
        let discovered = oidc.discovered().ok_or_else(|| {
            FlowError::ProviderUnavailable("the provider has not been discovered yet".into())
        })?;
        let now = self.clock.now();
        let claims = match oidc.client.validate_logout_token(&discovered.keys, &token, now) {
            Err(IdTokenError::UnknownKey) => match self.refetch_keys(oidc, &discovered.metadata, now).await {
                Some(keys) => oidc.client.validate_logout_token(&keys, &token, now),
                None => Err(IdTokenError::UnknownKey),
            },
            other => other,
        }
        .map_err(|_| FlowError::BadRequest("The logout token is not valid."))?;
        // Once only: a replayed token (seen by any instance) ends nothing.
        let remembered_s = claims
            .exp
            .map_or(LOGOUT_TOKEN_MEMORY_S, |exp| exp.saturating_sub(now).max(1))
            .saturating_add(CLOCK_SKEW_S);
        let jti = format!("jti:{}", hex_sha256(claims.jti.as_bytes()));
        let ttl_ms = u64::try_from(remembered_s).unwrap_or(1).saturating_mul(1000);
        if !self.store.put_new(&jti, b"1", ttl_ms).await? {
            return Err(FlowError::BadRequest("The logout token was used before."));
        }
        let index = match (&claims.sid, &claims.sub) {
            (Some(sid), _) => format!("sid:{sid}"),
            (None, Some(sub)) => format!("sub:{sub}"),
            (None, None) => return Err(FlowError::BadRequest("The logout token names no one.")),
        };
        self.store.delete_indexed(&index).await?;
        Ok(no_store(Reply {
            status: 200,
            headers: Headers::new(),
            body: ReplyBody::Full(Vec::new()),
        }))
    }

    /// Whether a request on `route` is a WebSocket handshake to proxy
    /// (SPEC §13): one that asks to upgrade to `websocket`, under the
    /// prefix, not to the login route (which is only ever an ordinary,
    /// intercepted call). Such a request goes to
    /// [`websocket`](Self::websocket) instead of
    /// [`dispatch`](Self::dispatch).
    pub fn is_websocket<B>(&self, route: &Route, request: &ClientRequest<B>) -> bool {
        matches!(route, Route::Proxy { login: false, .. })
            && websocket::is_handshake(&request.method, &request.headers)
    }

    /// Plans the API's side of a WebSocket handshake
    /// ([`is_websocket`](Self::is_websocket)), or answers the browser's
    /// with a refusal: the rules every request meets ([`admit`](Self::admit)),
    /// then the `Origin` rule that stands in for CSRF's header, then the
    /// cookie's token on the API's handshake (without a valid cookie the
    /// handshake goes on without a token, like any API call). A session
    /// due for a refresh is refreshed first, as for any API call (SPEC
    /// §14); its new cookies go into the plan's reply headers.
    ///
    /// # Errors
    /// The refusal to answer with, as any request's.
    pub async fn websocket<B>(
        &self,
        route: &Route,
        request: ClientRequest<B>,
    ) -> Result<WebSocketPlan, Handled<U::ResponseBody>> {
        let class = route.class();
        let Route::Proxy { rest, login: false } = route else {
            return Err(Self::failed(class, FlowError::NotFound));
        };
        if let Err(error) = self.admit_to(route, &request) {
            return Err(Self::failed(class, error));
        }
        let own = || {
            self.rules
                .forwarding
                .origin(&request.headers, request.peer, request.scheme)
        };
        if let Err(refusal) = self.rules.csrf.check_handshake_origin(&request.headers, own) {
            return Err(Self::failed(class, refusal.into()));
        }
        let now = self.clock.now();
        let (cookie, session_id) = self
            .open_session(&request.headers, now)
            .await
            .map_err(|error| Self::failed(class, error))?;
        let rejected_cookie = match cookie {
            CookieState::Rejected(why) => Some(why),
            _ => None,
        };
        let session_left_s = match &cookie {
            CookieState::Valid(session) => session
                .expires_at
                .map(|end| u64::try_from(end.saturating_sub(now)).unwrap_or(0)),
            _ => None,
        };
        let due = match (&self.rules.refresh, &cookie) {
            (Some(rules), CookieState::Valid(session)) if rules.is_due(session, now) => {
                Some((rules, session))
            }
            _ => None,
        };
        let carried = if rejected_cookie.is_some() || due.is_some() {
            self.rules.cookies.carried(request.headers.get_all("cookie"))
        } else {
            Carried::default()
        };
        let mut reply_headers = Headers::new();
        let mut refresh = None;
        let mut renewed = None;
        if let Some((rules, session)) = due {
            let request_id = request.headers.get_str("x-request-id");
            let (renewal, result) = self
                .renew(rules, session, None, session_id.as_deref(), request_id)
                .await;
            refresh = Some(result);
            let refused = |error: FlowError| {
                let mut handled = Self::failed(class, error);
                handled.refresh = refresh;
                handled
            };
            match renewal {
                Renewal::Renewed(grant) => {
                    let issued = self
                        .issue(&grant, self.clock.now(), carried, session_id.as_deref())
                        .await
                        .map_err(refused)?;
                    for set_cookie in issued.set_cookies {
                        reply_headers.append("set-cookie", set_cookie);
                    }
                    renewed = Some(grant);
                }
                Renewal::Refused => {
                    let mut handled = refused(FlowError::SessionExpired);
                    for removal in self.rules.cookies.removals(carried) {
                        handled.reply.headers.append("set-cookie", removal);
                    }
                    return Err(handled);
                }
                Renewal::Failed(error) => return Err(refused(error)),
            }
        }
        let url = self.rules.upstream.websocket_url(rest, request.query.as_deref());
        let mut headers = relay::request_headers(
            request.headers,
            request.peer,
            request.scheme,
            &self.rules.forwarding,
        );
        websocket::strip_handshake(&mut headers);
        let token = renewed.as_ref().map(|grant| &grant.access).or(cookie.token());
        self.rules.token.apply(&mut headers, token);
        if rejected_cookie.is_some() {
            for removal in self.rules.cookies.removals(carried) {
                reply_headers.append("set-cookie", removal);
            }
        }
        Ok(WebSocketPlan {
            url,
            headers,
            session_left_s,
            reply_headers,
            rejected_cookie,
            conflicting_cookies: matches!(cookie, CookieState::Conflicting),
            refresh,
        })
    }

    /// The rules every request meets before it is served, as the error to
    /// answer with: no `TRACE` or `CONNECT`, addressed to the public origin
    /// when one is set, and the CSRF rules. The gateway applies them to
    /// every route it handles; an adapter that serves a route itself (the
    /// web app's files) calls this first.
    ///
    /// # Errors
    /// The [`FlowError`] to answer with.
    pub fn admit<B>(&self, request: &ClientRequest<B>) -> Result<(), FlowError> {
        self.admit_to(&Route::Outside, request)
    }

    fn admit_to<B>(&self, route: &Route, request: &ClientRequest<B>) -> Result<(), FlowError> {
        if matches!(request.method, Method::Trace | Method::Connect) {
            // TRACE echoes the request (cookies included) back to a page;
            // CONNECT would make tokenjar a tunnel. Neither is an API call.
            return Err(FlowError::MethodNotAllowed {
                allow: "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS",
            });
        }
        if !self
            .rules
            .forwarding
            .addressed_here(&request.headers, request.peer)
        {
            return Err(FlowError::BadRequest("The request is addressed to another site."));
        }
        let own = || {
            self.rules
                .forwarding
                .origin(&request.headers, request.peer, request.scheme)
        };
        let csrf = &self.rules.csrf;
        let checked = if matches!(route, Route::Proxy { login: true, .. }) {
            csrf.check_every_method(&request.method, &request.headers, own)
        } else if matches!(route, Route::BackchannelLogout) {
            // The provider calls it server to server (SPEC §16: no CSRF
            // rule); the logout token it carries is the credential.
            Ok(())
        } else {
            csrf.check(&request.method, &request.headers, own)
        };
        checked.map_err(FlowError::from)
    }

    fn failed(route: RouteClass, error: FlowError) -> Handled<U::ResponseBody> {
        Handled {
            reply: error.reply(),
            route,
            error: Some(error),
            rejected_cookie: None,
            conflicting_cookies: false,
            login: None,
            refresh: None,
        }
    }

    /// Whether the reply already sets or deletes an auth cookie (`<name>`
    /// or a chunk): tokenjar's own, since the API's were dropped.
    fn writes_cookie(&self, headers: &Headers) -> bool {
        headers.get_all("set-cookie").any(|v| {
            v.iter()
                .position(|&b| b == b'=')
                .and_then(|end| std::str::from_utf8(v.get(..end)?).ok())
                .is_some_and(|name| self.rules.cookies.is_own(name))
        })
    }

    fn session(&self, method: &Method, cookie: &CookieState) -> Result<Reply<U::ResponseBody>, FlowError> {
        FlowError::read_only(method)?;
        let body = match cookie {
            CookieState::Valid(session) => {
                let mut body = json!({
                    "loggedIn": true,
                    "expiresAt": session.access_expires_at.or(session.expires_at),
                    "refreshable": self.rules.refresh.is_some() && RefreshRules::can_refresh(session),
                });
                if self.rules.oidc.is_some() {
                    // The user's claims the ID token held (SPEC §16).
                    let user = session
                        .profile
                        .as_deref()
                        .and_then(|p| serde_json::from_str::<serde_json::Value>(p).ok())
                        .and_then(|p| p.get("user").cloned())
                        .unwrap_or_else(|| json!({}));
                    body["user"] = user;
                }
                body
            }
            _ => json!({ "loggedIn": false }),
        };
        Ok(no_store(Reply::json(200, &body)))
    }

    /// `GET routes.login` in OIDC mode (SPEC §16): a new pending login in
    /// the login cookie (beside at most two others), and a 302 to the
    /// provider. `returnTo` must be a path on this origin, `prompt` one the
    /// spec names; either otherwise is 400.
    fn oidc_login(
        &self,
        request: &ClientRequest<U::RequestBody>,
        now: i64,
    ) -> Result<Reply<U::ResponseBody>, FlowError> {
        let Some(oidc) = &self.rules.oidc else {
            return Err(FlowError::NotFound);
        };
        if !matches!(request.method, Method::Get | Method::Head) {
            return Err(FlowError::MethodNotAllowed { allow: "GET, HEAD" });
        }
        let mut wanted_return = None;
        let mut prompt = None;
        for (name, value) in
            url::form_urlencoded::parse(request.query.as_deref().unwrap_or_default().as_bytes())
        {
            match name.as_ref() {
                "returnTo" if wanted_return.is_none() => wanted_return = Some(value.into_owned()),
                "prompt" if prompt.is_none() => {
                    prompt = Some(Prompt::parse(&value).ok_or(FlowError::BadRequest(
                        "prompt is not one of none, login, consent, select_account.",
                    ))?);
                }
                "returnTo" | "prompt" => {
                    return Err(FlowError::BadRequest("A login parameter is given twice."))
                }
                _ => {}
            }
        }
        let back = return_to(wanted_return.as_deref())
            .map_err(|_| FlowError::BadRequest("returnTo must be a path on this site."))?;
        let discovered = oidc.discovered().ok_or_else(|| {
            FlowError::ProviderUnavailable("the provider has not been discovered yet".into())
        })?;
        let pending = PendingLogin::new(&self.random, back, now).map_err(CookieError::from)?;
        let location = oidc
            .client
            .authorization_url(&discovered.metadata, &pending, prompt);
        let mut logins = self.pending_logins(&request.headers, now).0;
        logins.push(pending);
        let mut reply = redirect(&location);
        reply.headers.append("set-cookie", self.login_cookie(&logins)?);
        Ok(reply)
    }

    /// The pending logins the request's login cookie holds at `now`, and
    /// whether one was sent.
    fn pending_logins(&self, headers: &Headers, now: i64) -> (Vec<PendingLogin>, bool) {
        let name = Oidc::login_cookie_name(self.rules.cookies.name());
        let (text, sent) = self.rules.cookies.read_other(&name, headers.get_all("cookie"));
        (
            text.map_or_else(Vec::new, |t| PendingLogin::list_from(&t, now)),
            sent,
        )
    }

    /// The `Set-Cookie` that stores `logins`, or deletes the login cookie
    /// when there are none.
    fn login_cookie(&self, logins: &[PendingLogin]) -> Result<String, FlowError> {
        let name = Oidc::login_cookie_name(self.rules.cookies.name());
        let lax = crate::cookies::SameSite::Lax;
        if logins.is_empty() {
            return Ok(self.rules.cookies.render_other(&name, String::new(), lax, 0));
        }
        let sealed = self
            .rules
            .cookies
            .seal_other(&name, &PendingLogin::list_to(logins), &self.random)?;
        Ok(self
            .rules
            .cookies
            .render_other(&name, sealed, lax, PENDING_LIFETIME_S))
    }

    /// The provider's answer at the callback (SPEC §16): always a 302, to
    /// the login's `returnTo` with a session, or to `/?auth_error=<code>`
    /// without one.
    async fn oidc_callback(
        &self,
        request: &ClientRequest<U::RequestBody>,
        carried: Carried,
        now: i64,
    ) -> (Reply<U::ResponseBody>, LoginResult) {
        let Some(oidc) = &self.rules.oidc else {
            return (FlowError::NotFound.reply(), LoginResult::Failed);
        };
        let (mut logins, sent) = self.pending_logins(&request.headers, now);
        let result = self
            .complete_login(oidc, request, &mut logins, carried, now)
            .await;
        let (mut reply, outcome) = match result {
            Ok((location, set_cookies)) => {
                let mut reply = redirect(&location);
                for set_cookie in set_cookies {
                    reply.headers.append("set-cookie", set_cookie);
                }
                (reply, LoginResult::Success)
            }
            Err(error) => {
                let outcome = match error {
                    AuthError::Provider(_) => LoginResult::Refused,
                    _ => LoginResult::Failed,
                };
                let location = format!(
                    "/?auth_error={}",
                    url::form_urlencoded::byte_serialize(error.code().as_bytes()).collect::<String>()
                );
                (redirect(&location), outcome)
            }
        };
        if sent {
            match self.login_cookie(&logins) {
                Ok(set_cookie) => reply.headers.append("set-cookie", set_cookie),
                Err(error) => return (error.reply(), LoginResult::Failed),
            }
        }
        (reply, outcome)
    }

    /// The callback's work: its checks, the code exchange, the ID token's
    /// checks, the session. The matched login leaves `logins` whatever
    /// happens after the match (its code cannot be used twice).
    async fn complete_login(
        &self,
        oidc: &Oidc,
        request: &ClientRequest<U::RequestBody>,
        logins: &mut Vec<PendingLogin>,
        carried: Carried,
        now: i64,
    ) -> Result<(String, Vec<String>), AuthError> {
        if request.method != Method::Get {
            return Err(AuthError::InvalidRequest);
        }
        let discovered = oidc.discovered().ok_or(AuthError::ProviderUnavailable)?;
        let query = request.query.as_deref().unwrap_or_default();
        let (index, code) = match oidc
            .client
            .check_callback(&discovered.metadata, query, logins, now)
        {
            Ok(found) => found,
            Err(error) => {
                // A provider's error or a wrong `iss` for a known state ends
                // that login too.
                if let Some(i) = state_of(query).and_then(|s| logins.iter().position(|l| l.state == s)) {
                    logins.remove(i);
                }
                return Err(error);
            }
        };
        let login = logins.remove(index);
        let exchange = oidc
            .client
            .token_request(&discovered.metadata, &code, &login.verifier);
        let answer = self.provider_call(exchange).await?;
        let id_token = answer
            .id_token
            .as_deref()
            .ok_or(AuthError::InvalidToken(IdTokenError::Malformed))?;
        let claims = match oidc
            .client
            .validate_id_token(&discovered.keys, id_token, &login.nonce, now)
        {
            Err(IdTokenError::UnknownKey) => {
                let keys = self.refetch_keys(oidc, &discovered.metadata, now).await;
                let keys = keys.ok_or(AuthError::InvalidToken(IdTokenError::UnknownKey))?;
                oidc.client
                    .validate_id_token(&keys, id_token, &login.nonce, now)?
            }
            other => other?,
        };
        let profile = json!({ "sub": claims.sub, "sid": claims.sid, "user": claims.user }).to_string();
        let access_expires_at = match answer.expires_in {
            Some(secs) => i64::try_from(secs).ok().and_then(|s| now.checked_add(s)),
            None => answer.access_token.jwt_exp(),
        };
        let grant = Grant {
            access: answer.access_token,
            refresh: answer.refresh_token,
            access_expires_at,
            profile: Some(profile),
        };
        let issued = self
            .issue(&grant, now, carried, None)
            .await
            .map_err(|_| AuthError::SessionNotKept)?;
        Ok((login.return_to, issued.set_cookies))
    }

    /// One call to the provider's token endpoint, its answer read.
    async fn provider_call(&self, request: UpstreamRequest<Vec<u8>>) -> Result<TokenAnswer, AuthError> {
        let response = self
            .upstream
            .send_bytes(request)
            .await
            .map_err(|_| AuthError::ProviderUnavailable)?;
        let status = response.status;
        let body = self
            .upstream
            .read_body(response.body, MAX_PROVIDER_BODY)
            .await
            .map_err(|_| AuthError::ProviderUnavailable)?;
        TokenAnswer::parse(status, &body)
    }

    /// Fetches the provider's key set again for an unknown `kid`, at most
    /// once per [`crate::KEY_REFETCH_S`]; the keys in force after.
    async fn refetch_keys(&self, oidc: &Oidc, metadata: &Metadata, now: i64) -> Option<KeySet> {
        if !oidc.may_refetch_keys(now) {
            return None;
        }
        let keys = self.fetch_json(metadata.jwks_uri.as_str()).await.ok()?;
        let keys = KeySet::parse(&keys).ok()?;
        oidc.set_keys(keys.clone(), now);
        Some(keys)
    }

    /// A `GET` of a JSON document from the provider, its body read whole.
    async fn fetch_json(&self, url: &str) -> Result<Vec<u8>, String> {
        let mut headers = Headers::new();
        headers.append("accept", "application/json");
        let request = UpstreamRequest {
            method: Method::Get,
            url: url.to_owned(),
            headers,
            body_size: BodySize::None,
            body: Vec::new(),
        };
        let response = self
            .upstream
            .send_bytes(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status;
        let body = self
            .upstream
            .read_body(response.body, MAX_PROVIDER_BODY)
            .await
            .map_err(|e| e.to_string())?;
        if status != 200 {
            return Err(format!("answered {status}"));
        }
        Ok(body)
    }

    /// The `refresh_token` grant at the provider (SPEC §16): `invalid_grant`
    /// or any other refusal ends the session, as an API's refusal does.
    async fn refresh_at_provider(&self, oidc: &Oidc, refresh: &Token, profile: Option<&str>) -> Renewal {
        let unavailable = |why: &str| Renewal::Failed(FlowError::ProviderUnavailable(why.to_owned()));
        let Some(discovered) = oidc.discovered() else {
            return unavailable("the provider has not been discovered yet");
        };
        let request = oidc.client.refresh_request(&discovered.metadata, refresh);
        let response = match self.upstream.send_bytes(request).await {
            Ok(response) => response,
            Err(error) => return unavailable(&error.to_string()),
        };
        let status = response.status;
        let body = self.upstream.read_body(response.body, MAX_PROVIDER_BODY).await;
        match RefreshRules::verdict(status) {
            Verdict::Refused => return Renewal::Refused,
            Verdict::Failed => return unavailable(&format!("the token endpoint answered {status}")),
            Verdict::Read => {}
        }
        let Ok(body) = body else {
            return unavailable("the token endpoint's answer could not be read");
        };
        match TokenAnswer::parse(status, &body) {
            Ok(answer) => {
                let now = self.clock.now();
                let access_expires_at = match answer.expires_in {
                    Some(secs) => i64::try_from(secs).ok().and_then(|s| now.checked_add(s)),
                    None => answer.access_token.jwt_exp(),
                };
                Renewal::Renewed(Arc::new(Grant {
                    access: answer.access_token,
                    refresh: answer.refresh_token.or_else(|| Some(refresh.clone())),
                    access_expires_at,
                    profile: profile.map(str::to_owned),
                }))
            }
            Err(_) => unavailable("the token endpoint's answer is unusable"),
        }
    }

    /// Reads the provider's discovery document and key set (SPEC §16), for
    /// the adapter to call at start until it succeeds: until then the
    /// login routes answer `provider_unavailable` and `/readyz` 503.
    ///
    /// # Errors
    /// What went wrong, for the log (never a secret).
    pub async fn discover(&self) -> Result<(), String> {
        let Some(oidc) = &self.rules.oidc else {
            return Ok(());
        };
        let url = oidc.client.discovery_url();
        let body = self.fetch_json(&url).await.map_err(|e| format!("{url}: {e}"))?;
        let metadata = Metadata::parse(&body, &oidc.client).map_err(|e| format!("{url}: {e}"))?;
        let jwks = metadata.jwks_uri.to_string();
        let body = self.fetch_json(&jwks).await.map_err(|e| format!("{jwks}: {e}"))?;
        let keys = KeySet::parse(&body).map_err(|e| format!("{jwks}: {e}"))?;
        oidc.set_discovered(Discovered { metadata, keys }, self.clock.now());
        Ok(())
    }

    /// Deletes `<name>` and every chunk the request `carried`; with
    /// `refresh.revoke_path` set, first tells the API the session's refresh
    /// token (best effort: the logout goes on whatever the answer).
    async fn logout(
        &self,
        request: ClientRequest<U::RequestBody>,
        cookie: &CookieState,
        carried: Carried,
        session_id: Option<&str>,
    ) -> Result<Reply<U::ResponseBody>, FlowError> {
        if request.method != Method::Post {
            return Err(FlowError::MethodNotAllowed { allow: "POST" });
        }
        // A stored session ends first and at once (SPEC §17): a copy of
        // the cookie finds nothing from now on. If the store cannot be
        // asked, the logout fails rather than pretend.
        if let Some(id) = session_id {
            self.store.delete(&session_key(id)).await?;
        }
        let discovered = self.rules.oidc.as_ref().and_then(Oidc::discovered);
        let revocation = match (&self.rules.refresh, cookie, &self.rules.oidc, &discovered) {
            (
                _,
                CookieState::Valid(Session {
                    refresh: Some(refresh),
                    ..
                }),
                Some(oidc),
                Some(discovered),
            ) => oidc.client.revocation_request(&discovered.metadata, refresh),
            (
                Some(rules),
                CookieState::Valid(Session {
                    refresh: Some(refresh),
                    ..
                }),
                None,
                _,
            ) => rules.revocation(
                &self.rules.upstream,
                refresh,
                request.headers.get_str("x-request-id"),
            ),
            _ => None,
        };
        if let Some(revocation) = revocation {
            if let Ok(response) = self.upstream.send_bytes(revocation).await {
                // Read to its end so the connection can serve again; what
                // it says changes nothing.
                let _ = self.upstream.read_body(response.body, DRAINED_BODY).await;
            }
        }
        let body = match &self.rules.oidc {
            // Where the page sends the browser to end the provider's
            // session too.
            Some(oidc) => json!({
                "loggedIn": false,
                "logoutUrl": discovered.and_then(|d| oidc.client.logout_url(&d.metadata)),
            }),
            None => json!({ "loggedIn": false }),
        };
        let mut reply = no_store(Reply::json(200, &body));
        for removal in self.rules.cookies.removals(carried) {
            reply.headers.append("set-cookie", removal);
        }
        Ok(reply)
    }

    /// The upstream request for a path below `base`. The token, if any, is
    /// the cookie's; a client-sent one is always removed.
    fn plan(
        &self,
        base: &UpstreamBase,
        request: ClientRequest<U::RequestBody>,
        rest: &str,
        token: Option<&Token>,
    ) -> UpstreamRequest<U::RequestBody> {
        let body_size = BodySize::from_headers(&request.headers);
        let mut headers = relay::request_headers(
            request.headers,
            request.peer,
            request.scheme,
            &self.rules.forwarding,
        );
        self.rules.token.apply(&mut headers, token);
        UpstreamRequest {
            url: base.url(rest, request.query.as_deref()),
            body_size,
            method: request.method,
            headers,
            body: request.body,
        }
    }

    async fn proxy(
        &self,
        base: &UpstreamBase,
        request: ClientRequest<U::RequestBody>,
        rest: &str,
        token: Option<&Token>,
    ) -> Result<Reply<U::ResponseBody>, FlowError> {
        let planned = self.plan(base, request, rest, token);
        let response = self.upstream.send(planned).await?;
        refuse_unasked_switch(response.status)?;
        Ok(self.pass_through(response))
    }

    /// Forwards a request for the web app's own pages (a
    /// [`Route::PageForwarded`] path) to the app's server at `base`: CSRF-checked like every route,
    /// the same header rules as an API call, the path as it is, and never a
    /// token — the app server is not the API, and one that calls the API
    /// itself must not be handed a token as if tokenjar had vouched for it.
    pub async fn forward(
        &self,
        base: &UpstreamBase,
        mut request: ClientRequest<U::RequestBody>,
    ) -> Handled<U::ResponseBody> {
        let class = RouteClass::Frontend;
        if let Err(error) = self.admit_to(&Route::Outside, &request) {
            return Self::failed(class, error);
        }
        let path = std::mem::take(&mut request.path);
        let (reply, error) = settle(self.proxy(base, request, &path, None).await);
        Handled {
            reply,
            route: class,
            error,
            rejected_cookie: None,
            conflicting_cookies: false,
            login: None,
            refresh: None,
        }
    }

    /// An API call of a session that holds a refresh token (SPEC §14):
    /// refreshed first when its access token is due, and for a `GET`,
    /// `HEAD` or `OPTIONS` without a body that the API answers 401,
    /// refreshed and sent once more. A renewed session's cookies go out
    /// with the answer, replacing the ones the request `carried`; in store
    /// mode the renewed session goes back under its id.
    async fn proxy_refreshing(
        &self,
        rules: &RefreshRules,
        request: ClientRequest<U::RequestBody>,
        rest: &str,
        (session, session_id): (&Session, Option<&str>),
        carried: Carried,
        now: i64,
    ) -> (Result<Reply<U::ResponseBody>, FlowError>, Option<RefreshResult>) {
        let request_id = request.headers.get_str("x-request-id").map(str::to_owned);
        let mut outcome = None;
        let mut renewed = None;
        if rules.is_due(session, now) {
            let (renewal, result) = self
                .renew(rules, session, None, session_id, request_id.as_deref())
                .await;
            outcome = Some(result);
            match renewal {
                Renewal::Renewed(grant) => renewed = Some(grant),
                Renewal::Refused => return (Err(FlowError::SessionExpired), outcome),
                Renewal::Failed(error) => return (Err(error), outcome),
            }
        }
        let token = renewed.as_ref().map_or(&session.token, |grant| &grant.access);
        // Only a request that can be sent again as it was: no body, a
        // method without effects, and not already on fresh tokens.
        let retry = renewed.is_none()
            && matches!(request.method, Method::Get | Method::Head | Method::Options)
            && matches!(
                BodySize::from_headers(&request.headers),
                BodySize::None | BodySize::Sized(0)
            );
        let planned = self.plan(&self.rules.upstream, request, rest, Some(token));
        let again = retry.then(|| UpstreamRequest {
            method: planned.method.clone(),
            url: planned.url.clone(),
            headers: planned.headers.clone(),
            body_size: BodySize::None,
            body: Vec::new(),
        });
        let response = match self.upstream.send(planned).await {
            Ok(response) => response,
            Err(error) => return (Err(error.into()), outcome),
        };
        let response = match again.filter(|_| response.status == 401) {
            None => Ok(response),
            Some(mut again) => {
                // Read to its end so the connection can serve again.
                let _ = self.upstream.read_body(response.body, DRAINED_BODY).await;
                let (renewal, result) = self
                    .renew(rules, session, Some(token), session_id, request_id.as_deref())
                    .await;
                outcome = Some(result);
                match renewal {
                    Renewal::Renewed(grant) => {
                        self.rules.token.apply(&mut again.headers, Some(&grant.access));
                        renewed = Some(grant);
                        self.upstream.send_bytes(again).await.map_err(FlowError::from)
                    }
                    Renewal::Refused => Err(FlowError::SessionExpired),
                    Renewal::Failed(error) => Err(error),
                }
            }
        };
        let mut reply = match response.and_then(|r| refuse_unasked_switch(r.status).map(|()| r)) {
            Ok(response) => self.pass_through(response),
            Err(error) => return (Err(error), outcome),
        };
        if let Some(grant) = renewed {
            match self.issue(&grant, self.clock.now(), carried, session_id).await {
                Ok(issued) => {
                    for set_cookie in issued.set_cookies {
                        reply.headers.append("set-cookie", set_cookie);
                    }
                }
                Err(error) => return (Err(error), outcome),
            }
        }
        (Ok(reply), outcome)
    }

    /// The session's refresh, shared with every other request of the
    /// session in the process ([`crate::Refreshes`]): led by this request,
    /// or waited for, or handed over from one that just finished.
    /// `refused` is the access token the API answered 401 to, if that is
    /// why.
    async fn renew(
        &self,
        rules: &RefreshRules,
        session: &Session,
        refused: Option<&Token>,
        session_id: Option<&str>,
        request_id: Option<&str>,
    ) -> (Renewal, RefreshResult) {
        let Some(mut refresh) = session.refresh.clone() else {
            return (Renewal::Refused, RefreshResult::Refused);
        };
        // A request with an old cookie may have to follow a chain of
        // refreshes made meanwhile; a few links are all a browser can lag.
        let mut links = 0;
        loop {
            match rules.flights().turn(&refresh, self.clock.now(), refused) {
                Turn::Successor(grant) if links < MAX_SUCCESSORS => {
                    links += 1;
                    let Some(next) = grant.refresh.clone() else {
                        return (Renewal::Refused, RefreshResult::Refused);
                    };
                    refresh = next;
                }
                // Too long a chain: the session is as good as lost.
                Turn::Successor(_) => return (Renewal::Refused, RefreshResult::Refused),
                Turn::Reuse(renewal) => return shared(renewal),
                Turn::Wait(waiting) => {
                    if let Some(renewal) = waiting.await {
                        return shared(renewal);
                    }
                    // The leader was cancelled: take a turn again.
                }
                Turn::Lead(lease) => {
                    let profile = session.profile.as_deref();
                    let renewal = match (&self.rules.store, session_id) {
                        (Some(store), Some(id)) => {
                            self.refresh_across(store, rules, &refresh, (id, profile), request_id)
                                .await
                        }
                        _ => self.refresh(rules, &refresh, profile, request_id).await,
                    };
                    lease.finish(renewal.clone(), self.clock.now());
                    let result = match renewal {
                        Renewal::Renewed(_) => RefreshResult::Ok,
                        Renewal::Refused => RefreshResult::Refused,
                        Renewal::Failed(_) => RefreshResult::Failed,
                    };
                    return (renewal, result);
                }
            }
        }
    }

    /// A refresh of a stored session, single-flight across every instance
    /// sharing the store (SPEC §17): the instance that takes the store's
    /// lease on `refresh` makes the call and writes the new session under
    /// its id before giving the lease back; another waits, polling the
    /// stored session until it holds another refresh token (the result:
    /// no call of its own), is gone (the refresh was refused), or the lease
    /// ends (it tries to take it itself). Within one process the refresh
    /// table already shares one refresh, so only one request per instance
    /// gets here at a time.
    async fn refresh_across(
        &self,
        store: &StoreRules,
        rules: &RefreshRules,
        refresh: &Token,
        (id, profile): (&str, Option<&str>),
        request_id: Option<&str>,
    ) -> Renewal {
        let lock = format!("refresh:{}", hex_sha256(refresh.expose().as_bytes()));
        let mut holder = [0u8; 16];
        if self.random.fill(&mut holder).is_err() {
            return Renewal::Failed(CookieError::Random(crate::ports::RandomError).into());
        }
        let polls = (store.refresh_lease_ms / store.refresh_poll_ms.max(1)).max(1);
        for _ in 0..=polls {
            match self.store.put_new(&lock, &holder, store.refresh_lease_ms).await {
                Err(error) => return Renewal::Failed(error.into()),
                Ok(true) => {
                    // Another instance may have finished just before.
                    let renewal = match self.stored_successor(id, refresh).await {
                        Some(done) => done,
                        None => self.refresh(rules, refresh, profile, request_id).await,
                    };
                    let written = match &renewal {
                        Renewal::Renewed(grant) => {
                            self.keep(store, grant, id, self.clock.now()).await.map(drop)
                        }
                        _ => Ok(()),
                    };
                    let _ = self.store.delete_if(&lock, &holder).await;
                    return match written {
                        Ok(()) => renewal,
                        Err(error) => Renewal::Failed(error),
                    };
                }
                Ok(false) => {
                    self.store.pause(store.refresh_poll_ms).await;
                    if let Some(done) = self.stored_successor(id, refresh).await {
                        return done;
                    }
                }
            }
        }
        Renewal::Failed(FlowError::SessionStore(crate::ports::StoreError::Unavailable(
            "another instance held the refresh lease too long".into(),
        )))
    }

    /// What the store says of session `id` after a refresh of `refresh`
    /// elsewhere: its new tokens once it holds another refresh token,
    /// refused once it is gone; `None` while it is unchanged (or cannot be
    /// read now).
    async fn stored_successor(&self, id: &str, refresh: &Token) -> Option<Renewal> {
        let now = self.clock.now();
        match self.store.get(&session_key(id)).await {
            Ok(None) => Some(Renewal::Refused),
            Ok(Some(value)) => match self.rules.cookies.open_stored(&value, now) {
                Ok(stored)
                    if stored
                        .refresh
                        .as_ref()
                        .is_some_and(|r| r.expose() != refresh.expose()) =>
                {
                    Some(Renewal::Renewed(Arc::new(Grant {
                        access: stored.token,
                        refresh: stored.refresh,
                        access_expires_at: stored.access_expires_at,
                        profile: stored.profile,
                    })))
                }
                Ok(_) => None,
                Err(_) => Some(Renewal::Refused),
            },
            Err(_) => None,
        }
    }

    /// Writes the session of `grant` under `id` in the store at `now`, to
    /// live as long as the cookie would (a day when the tokens tell none);
    /// when it ends. Only called in store mode.
    async fn keep(&self, store: &StoreRules, grant: &Grant, id: &str, now: i64) -> Result<i64, FlowError> {
        let expires_at = self
            .rules
            .cookies
            .expires_at(grant, now)
            .unwrap_or_else(|| now.saturating_add(store.default_lifetime_s));
        let sealed = self
            .rules
            .cookies
            .seal_stored(grant, Some(expires_at), &self.random)?;
        let ttl_ms = u64::try_from(expires_at.saturating_sub(now))
            .unwrap_or(0)
            .max(1)
            .saturating_mul(1000);
        let indexes = session_indexes(grant.profile.as_deref());
        self.store
            .put(&session_key(id), sealed.as_bytes(), ttl_ms, &indexes)
            .await?;
        Ok(expires_at)
    }

    /// One refresh call to the API: spends `refresh` and reads the new
    /// tokens with the login's rules. An answer without a new refresh
    /// token keeps the old one; the session's `profile` goes on unchanged.
    async fn refresh(
        &self,
        rules: &RefreshRules,
        refresh: &Token,
        profile: Option<&str>,
        request_id: Option<&str>,
    ) -> Renewal {
        if let Some(oidc) = &self.rules.oidc {
            return self.refresh_at_provider(oidc, refresh, profile).await;
        }
        let mut request = rules.request(&self.rules.upstream, refresh, request_id);
        // The body must be parsed, so it must come uncompressed.
        request.headers.remove("accept-encoding");
        let response = match self.upstream.send_bytes(request).await {
            Ok(response) => response,
            Err(error) => return Renewal::Failed(error.into()),
        };
        let status = response.status;
        let encoded = response
            .headers
            .get_str("content-encoding")
            .is_some_and(|e| !e.trim().eq_ignore_ascii_case("identity"));
        let body = self.upstream.read_body(response.body, MAX_LOGIN_BODY).await;
        match RefreshRules::verdict(status) {
            Verdict::Refused => return Renewal::Refused,
            Verdict::Failed => {
                return Renewal::Failed(
                    UpstreamError::Unavailable(format!("the refresh was answered {status}")).into(),
                )
            }
            Verdict::Read => {}
        }
        let body = match body {
            Ok(body) => body,
            // Not a login's body: no `bad_login_response` for it.
            Err(BodyReadError::Timeout) => return Renewal::Failed(UpstreamError::Timeout.into()),
            Err(error) => {
                return Renewal::Failed(
                    UpstreamError::Unavailable(format!("the refresh answer's body: {error}")).into(),
                )
            }
        };
        if encoded {
            return Renewal::Failed(FlowError::BadRefresh(LoginError::Encoded));
        }
        match self.rules.login.extract(&body) {
            Ok(login) => {
                let mut grant = login.grant(self.clock.now());
                if grant.refresh.is_none() {
                    grant.refresh = Some(refresh.clone());
                }
                grant.profile = profile.map(str::to_owned);
                Renewal::Renewed(Arc::new(grant))
            }
            Err(error) => Renewal::Failed(FlowError::BadRefresh(error)),
        }
    }

    fn pass_through(&self, response: UpstreamResponse<U::ResponseBody>) -> Reply<U::ResponseBody> {
        Reply {
            status: response.status,
            headers: relay::response_headers(response.headers, self.rules.cookies.name()),
            body: ReplyBody::Stream {
                body: response.body,
                size: response.body_size,
            },
        }
    }

    /// A login: proxied like any call, but the answer is read whole. A 2xx
    /// one has its token moved into the cookie and the rest of its JSON
    /// passed on; any other passes through as it is, unless it too carries
    /// a token.
    async fn login(
        &self,
        request: ClientRequest<U::RequestBody>,
        rest: &str,
        token: Option<&Token>,
        session_id: Option<&str>,
        carried: Carried,
        now: i64,
    ) -> Result<Reply<U::ResponseBody>, FlowError> {
        let mut planned = self.plan(&self.rules.upstream, request, rest, token);
        // The body must be parsed, so it must come uncompressed. (The
        // upstream adapter asks for `identity` when no `Accept-Encoding` is
        // left: see docs/behaviour.md.)
        planned.headers.remove("accept-encoding");
        let response = self.upstream.send(planned).await?;
        refuse_unasked_switch(response.status)?;
        let encoded = response
            .headers
            .get_str("content-encoding")
            .is_some_and(|e| !e.trim().eq_ignore_ascii_case("identity"));
        if encoded {
            // Compressed against tokenjar's asking: it cannot be inspected.
            return Err(LoginError::Encoded.into());
        }
        let status = response.status;
        let headers = response.headers;
        let body = self.upstream.read_body(response.body, MAX_LOGIN_BODY).await?;
        if !(200..300).contains(&status) {
            if self.rules.login.holds_token(&body) {
                return Err(LoginError::TokenInRefusal.into());
            }
            return Ok(Reply {
                status,
                headers: relay::response_headers(headers, self.rules.cookies.name()),
                body: ReplyBody::Full(body),
            });
        }
        let mut login = self.rules.login.extract(&body)?;
        let reply_body = std::mem::take(&mut login.body);
        let grant = login.grant(now);
        let issued = self.issue(&grant, now, carried, None).await?;
        // A new login replaces the browser's stored session: the old one
        // ends rather than live on behind a cookie nobody holds.
        if let Some(old) = session_id {
            let _ = self.store.delete(&session_key(old)).await;
        }

        let secrets = [Some(&grant.access), grant.refresh.as_ref()];
        let mut headers = relay::response_headers(headers, self.rules.cookies.name());
        headers.retain(|name, value| {
            // The body is tokenjar's now, so the API's description of its
            // own body no longer holds; and no header may carry the token.
            !matches!(
                name,
                "content-type" | "content-encoding" | "etag" | "content-md5" | "digest"
            ) && !secrets
                .iter()
                .flatten()
                .any(|secret| contains(value, secret.expose().as_bytes()))
        });
        headers.append("content-type", "application/json");
        for set_cookie in issued.set_cookies {
            headers.append("set-cookie", set_cookie);
        }
        Ok(no_store(Reply {
            status: 200,
            headers,
            body: ReplyBody::Full(reply_body),
        }))
    }
}

/// An answer that switches protocols was never asked for (tokenjar forwards
/// no `Upgrade`), and passing it on would hand the browser a connection in
/// an unknown state: refused.
fn refuse_unasked_switch(status: u16) -> Result<(), FlowError> {
    if status == 101 {
        return Err(UpstreamError::Unavailable("the API switched protocols unasked".into()).into());
    }
    Ok(())
}

/// A route's outcome as the reply to send and the error to report, if any.
fn settle<B>(result: Result<Reply<B>, FlowError>) -> (Reply<B>, Option<FlowError>) {
    match result {
        Ok(reply) => (reply, None),
        Err(error) => (error.reply(), Some(error)),
    }
}

/// A 302 to `location`, never cached.
fn redirect<B>(location: &str) -> Reply<B> {
    let mut reply = no_store(Reply::json(302, &json!({})));
    reply.headers.set("location", location);
    reply
}

/// The `state` of a callback's query, if it has exactly one.
fn state_of(query: &str) -> Option<String> {
    let mut states = url::form_urlencoded::parse(query.as_bytes()).filter(|(name, _)| name == "state");
    let first = states.next()?.1.into_owned();
    states.next().is_none().then_some(first)
}

/// Another request's refresh result, as this request's.
fn shared(renewal: Renewal) -> (Renewal, RefreshResult) {
    let result = match renewal {
        Renewal::Renewed(_) => RefreshResult::Reused,
        Renewal::Refused => RefreshResult::Refused,
        Renewal::Failed(_) => RefreshResult::Failed,
    };
    (renewal, result)
}

/// Most refreshes made meanwhile that a request with an old cookie follows
/// (see [`Turn::Successor`]).
const MAX_SUCCESSORS: usize = 8;

/// Most of an answer read only to be thrown away (a 401 before a retry, a
/// revocation's): a longer one is left, and its connection with it.
const DRAINED_BODY: usize = 64 * 1024;

/// Session state must never be served from a cache.
/// How long a logout token's `jti` is remembered when the token has no
/// `exp`: ten minutes, longer than a provider retries a delivery.
const LOGOUT_TOKEN_MEMORY_S: i64 = 600;

/// The SHA-256 of `bytes`, in hex: a key of bounded length for a value the
/// provider chose.
fn hex_sha256(bytes: &[u8]) -> String {
    use sha2::{Digest as _, Sha256};
    Sha256::digest(bytes)
        .iter()
        .fold(String::with_capacity(64), |mut hex, b| {
            use std::fmt::Write as _;
            let _ = write!(hex, "{b:02x}");
            hex
        })
}

fn no_store<B>(mut reply: Reply<B>) -> Reply<B> {
    reply.headers.set("cache-control", "no-store");
    reply
}
