//! Where every request path goes: the one router. The operator endpoints,
//! tokenjar's own routes, the proxied API (the prefix stripped, unsafe paths
//! refused, the login route recognised however its path is spelled) and the
//! web app's pages are all decided here; the server adapter only matches on
//! the [`Route`] it is given.

use std::borrow::Cow;

use icu_normalizer::ComposingNormalizerBorrowed;
use percent_encoding::percent_decode;

use crate::setting::SettingError;

/// The routes tokenjar knows, normalised once at start-up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Routes {
    /// The proxied prefix without a trailing slash (`""` proxies everything).
    prefix: String,
    login: String,
    logout: String,
    session: String,
    pages: Pages,
    ops_listener: bool,
    /// OIDC mode: the callback's path (compared form); the login route is
    /// then tokenjar's own, not proxied.
    oidc_callback: Option<String>,
    /// OIDC mode: the back-channel logout's path (compared form).
    backchannel_logout: Option<String>,
}

/// What a request path is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// Forwarded to the API. `rest` is the path after the prefix, with
    /// repeated slashes collapsed (`""` or starting with `/`); `login` says
    /// whether it reaches the API's login endpoint.
    Proxy {
        /// Path to append to the upstream base path.
        rest: String,
        /// Whether the response must be intercepted as a login.
        login: bool,
    },
    /// Answered by tokenjar: log out.
    Logout,
    /// Answered by tokenjar: session state.
    Session,
    /// OIDC mode: start a login at the provider (`routes.login`).
    OidcLogin,
    /// OIDC mode: the provider's answer (the path of `oidc.redirect_url`).
    OidcCallback,
    /// OIDC mode: the provider's back-channel logout
    /// (`routes.backchannel_logout`, SPEC §16).
    BackchannelLogout,
    /// An operator endpoint.
    Ops(Op),
    /// A path on the operator listener that is no operator endpoint: 404,
    /// and nothing else is served there.
    OpsNotFound,
    /// A page of the web app, forwarded to its own server (`frontend.url`).
    PageForwarded,
    /// A page of the web app, from the folder (`frontend.dir`).
    PageFile,
    /// The built-in page (`tokenjar demo`).
    PageBuiltIn,
    /// Nothing at this path besides the built-in page: 404 for a read,
    /// 405 for anything else.
    PageMissing,
    /// Not a tokenjar route and no web app is configured: 404.
    Outside,
}

/// The operator endpoints, outside the API prefix (SPEC §9).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `/healthz`: the process runs.
    Health,
    /// `/readyz`: the API answers.
    Ready,
    /// `/metrics`: Prometheus text.
    Metrics,
}

impl Op {
    /// The endpoint at this exact path, if any.
    fn at(raw_path: &str) -> Option<Self> {
        match raw_path {
            "/healthz" => Some(Self::Health),
            "/readyz" => Some(Self::Ready),
            "/metrics" => Some(Self::Metrics),
            _ => None,
        }
    }
}

/// Where the web app's pages come from, as far as routing cares.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Pages {
    /// No web app: paths outside tokenjar's routes are 404.
    #[default]
    None,
    /// Forwarded to the app's own server (`frontend.url`).
    Forwarded,
    /// Files from a folder (`frontend.dir`).
    Files,
    /// One built-in page at `/` and `/index.html` (the demo).
    BuiltIn,
}

/// The listener a request arrived on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listener {
    /// `server.host`:`server.port`.
    Main,
    /// `ops.listen`, when set.
    Ops,
}

/// The route classes that requests are counted by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RouteClass {
    /// Proxied API call.
    Api,
    /// Proxied login.
    Login,
    /// tokenjar's logout.
    Logout,
    /// tokenjar's session.
    Session,
    /// The web app's own pages.
    Frontend,
    /// Probes and metrics.
    Ops,
}

impl RouteClass {
    /// The label used in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Api => "api",
            Self::Login => "login",
            Self::Logout => "logout",
            Self::Session => "session",
            Self::Frontend => "frontend",
            Self::Ops => "ops",
        }
    }
}

impl Route {
    /// The class this route is counted under.
    pub fn class(&self) -> RouteClass {
        match self {
            Self::Proxy { login: true, .. } | Self::OidcLogin | Self::OidcCallback => RouteClass::Login,
            Self::Proxy { .. } => RouteClass::Api,
            Self::Logout | Self::BackchannelLogout => RouteClass::Logout,
            Self::Session => RouteClass::Session,
            Self::Ops(_) | Self::OpsNotFound => RouteClass::Ops,
            Self::PageForwarded | Self::PageFile | Self::PageBuiltIn | Self::PageMissing | Self::Outside => {
                RouteClass::Frontend
            }
        }
    }
}

/// Why a request path is refused (400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// Not an absolute path.
    #[error("the request path must start with /")]
    NotAbsolute,
    /// A `.` or `..` segment, plain or percent-encoded.
    #[error("the request path holds a dot segment")]
    DotSegment,
    /// A `%2F` inside a segment, which the API could read as a separator.
    #[error("the request path holds an encoded slash")]
    EncodedSlash,
    /// A backslash, NUL or other control character.
    #[error("the request path holds a forbidden character")]
    ForbiddenCharacter,
}

impl Routes {
    /// Normalises the configured routes.
    ///
    /// # Errors
    /// Every problem found, each naming its `routes.*` key.
    pub fn new(prefix: &str, login: &str, logout: &str, session: &str) -> Result<Self, Vec<SettingError>> {
        let mut errors = Vec::new();
        let mut norm = |key: &'static str, value: &str| match normalise(value) {
            Ok(segments) => segments,
            Err(e) => {
                errors.push(SettingError {
                    key,
                    message: format!("{value:?}: {e}"),
                });
                String::new()
            }
        };
        let prefix_n = norm("prefix", prefix);
        let login_n = norm("login", login);
        let logout_n = norm("logout", logout);
        let session_n = norm("session", session);
        let prefix = prefix.trim_end_matches('/').to_owned();
        if errors.is_empty() {
            // Below the prefix both as compared and as matched: requests are
            // proxied by the prefix as spelled, so `/api.v2/login` under
            // `/api` (the same as `/api/login` once compared) is never proxied.
            let below = login_n.len() > prefix_n.len()
                && login_n.starts_with(&prefix_n)
                && login_n.as_bytes()[prefix_n.len()] == b'/'
                && login
                    .strip_prefix(prefix.as_str())
                    .is_some_and(|rest| rest.starts_with('/'));
            if !below {
                errors.push(SettingError {
                    key: "login",
                    message: format!(
                        "{login:?} must be below routes.prefix {:?} so that it is proxied",
                        prefix_or_root(&prefix)
                    ),
                });
            }
            let named = [
                ("login", &login_n),
                ("logout", &logout_n),
                ("session", &session_n),
            ];
            for (i, (key, a)) in named.iter().enumerate() {
                for (other, b) in &named[i + 1..] {
                    if a == b {
                        errors.push(SettingError {
                            key,
                            message: format!("is the same path as routes.{other}"),
                        });
                    }
                }
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Self {
            prefix,
            login: login_n,
            logout: logout_n,
            session: session_n,
            pages: Pages::None,
            ops_listener: false,
            oidc_callback: None,
            backchannel_logout: None,
        })
    }

    /// The same routes in OIDC mode (SPEC §16): `routes.login` and the
    /// callback at `callback` (the path of `oidc.redirect_url`) are
    /// answered by tokenjar.
    ///
    /// # Errors
    /// The `redirect_url` problem when the callback's path is unusable or
    /// another route's.
    pub fn with_oidc(mut self, callback: &str) -> Result<Self, Vec<SettingError>> {
        let refuse = |message: String| Err(vec![SettingError::new("redirect_url", message)]);
        let callback_n = match normalise(callback) {
            Ok(path) => path,
            Err(e) => return refuse(format!("its path {callback:?}: {e}")),
        };
        if [&self.login, &self.logout, &self.session].contains(&&callback_n) || Op::at(callback).is_some() {
            return refuse(format!("its path {callback:?} is another route's"));
        }
        self.oidc_callback = Some(callback_n);
        Ok(self)
    }

    /// The same routes with the provider's back-channel logout at `path`
    /// (`routes.backchannel_logout`), after [`Routes::with_oidc`].
    ///
    /// # Errors
    /// The `backchannel_logout` problem when the path is unusable or
    /// another route's.
    pub fn with_backchannel_logout(mut self, path: &str) -> Result<Self, Vec<SettingError>> {
        let refuse = |message: String| Err(vec![SettingError::new("backchannel_logout", message)]);
        let path_n = match normalise(path) {
            Ok(path_n) => path_n,
            Err(e) => return refuse(format!("{path:?}: {e}")),
        };
        let taken = [&self.login, &self.logout, &self.session].contains(&&path_n)
            || self.oidc_callback.as_ref() == Some(&path_n)
            || Op::at(path).is_some();
        if taken {
            return refuse(format!("{path:?} is another route's"));
        }
        self.backchannel_logout = Some(path_n);
        Ok(self)
    }

    /// The same routes, with the web app's pages from `pages` and, when
    /// `ops_listener`, the operator endpoints on a listener of their own
    /// (the main one then serves no `/metrics`).
    #[must_use]
    pub fn serving(mut self, pages: Pages, ops_listener: bool) -> Self {
        self.pages = pages;
        self.ops_listener = ops_listener;
        self
    }

    /// The proxied prefix as configured, `/` for everything.
    pub fn prefix(&self) -> &str {
        prefix_or_root(&self.prefix)
    }

    /// Classifies a raw (percent-encoded, as received) request path that
    /// arrived on the main listener.
    ///
    /// # Errors
    /// [`PathError`] for a path that is malformed or could escape the
    /// upstream base path.
    pub fn classify(&self, raw_path: &str) -> Result<Route, PathError> {
        self.classify_on(Listener::Main, raw_path)
    }

    /// Classifies a raw request path that arrived on `listener`. Operator
    /// endpoints are matched first and exactly; on the operator listener
    /// nothing else is served.
    ///
    /// # Errors
    /// [`PathError`] for a path that is malformed or could escape the
    /// upstream base path.
    pub fn classify_on(&self, listener: Listener, raw_path: &str) -> Result<Route, PathError> {
        let op = match Op::at(raw_path) {
            // With an operator listener, `/metrics` is served there only.
            Some(Op::Metrics) if self.ops_listener && listener == Listener::Main => None,
            op => op,
        };
        match (op, listener) {
            (Some(op), _) => return Ok(Route::Ops(op)),
            (None, Listener::Ops) => return Ok(Route::OpsNotFound),
            (None, Listener::Main) => {}
        }
        let segments = normalise(raw_path)?;
        let matches = |route: &str| segments == route;
        if matches(&self.logout) {
            return Ok(Route::Logout);
        }
        if matches(&self.session) {
            return Ok(Route::Session);
        }
        if let Some(callback) = &self.oidc_callback {
            if matches(callback) {
                return Ok(Route::OidcCallback);
            }
            if self.backchannel_logout.as_ref().is_some_and(|path| matches(path)) {
                return Ok(Route::BackchannelLogout);
            }
            if matches(&self.login) {
                return Ok(Route::OidcLogin);
            }
        }
        let rest = match raw_path.strip_prefix(self.prefix.as_str()) {
            Some(rest) if rest.is_empty() || rest.starts_with('/') => rest,
            _ => return Ok(self.page(raw_path)),
        };
        Ok(Route::Proxy {
            rest: collapse_slashes(rest),
            login: matches(&self.login),
        })
    }
}

impl Routes {
    /// A path outside tokenjar's routes: the web app's, if there is one.
    fn page(&self, raw_path: &str) -> Route {
        match self.pages {
            Pages::None => Route::Outside,
            Pages::Forwarded => Route::PageForwarded,
            Pages::Files => Route::PageFile,
            Pages::BuiltIn if matches!(raw_path, "/" | "/index.html") => Route::PageBuiltIn,
            Pages::BuiltIn => Route::PageMissing,
        }
    }
}

fn prefix_or_root(prefix: &str) -> &str {
    if prefix.is_empty() {
        "/"
    } else {
        prefix
    }
}

/// A path as the API's router may understand it, for comparing routes: each
/// segment percent-decoded, cut at its first `;` (servlet containers drop
/// `;parameters`) and its first `.` (format suffixes: Rails' `login.json`,
/// Spring's `login.*`), brought to NFKC and case-folded both ways, so that
/// routers comparing upper-case (Python's `.upper()`: `ı` → `I`, `ß` →
/// `SS`) and lower-case (`K` → `k`) are covered (see [`push_folded`]);
/// segments left empty dropped, joined as `/a/b` (`""` for the root).
/// Over-matching is the safe side: a spelling compared equal
/// to the login route is intercepted, one that a lenient router reads as its
/// login but compared unequal would hand the token to the page.
///
/// The configured routes go through the same function, so a login route
/// configured as `/api/login.php` compares as `/api/login`.
///
/// Refuses what could escape, judged on the segment before any cut. For an
/// ASCII path (nearly all), one allocation whatever the length.
fn normalise(raw: &str) -> Result<String, PathError> {
    if !raw.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    // The path alone, as received: a raw `?` or `#` would end it in the
    // upstream URL (so `/..?x` would become a dot segment there), and
    // whitespace is trimmed by URL parsers. The HTTP server never hands
    // these over; library callers might.
    if raw.bytes().any(|b| matches!(b, b'?' | b'#' | b' ' | b'\t')) {
        return Err(PathError::ForbiddenCharacter);
    }
    let mut out = String::with_capacity(raw.len());
    for segment in raw.split('/').filter(|s| !s.is_empty()) {
        let decoded: Cow<'_, [u8]> = percent_decode(segment.as_bytes()).into();
        if decoded.iter().any(|&b| b < 0x20 || b == 0x7f || b == b'\\') {
            return Err(PathError::ForbiddenCharacter);
        }
        if decoded.contains(&b'/') {
            return Err(PathError::EncodedSlash);
        }
        let text = crate::text::lossy_utf8(&decoded);
        let bare = text.split(';').next().unwrap_or_default();
        if bare == "." || bare == ".." || text == "." || text == ".." {
            return Err(PathError::DotSegment);
        }
        let start = out.len();
        out.push('/');
        if text.is_ascii() {
            push_ascii(&mut out, bare);
        } else {
            // NFKC once, both to refuse what it turns into an escape and to
            // compare by.
            let compat: String = ComposingNormalizerBorrowed::new_nfkc()
                .normalize_iter(text.chars())
                .collect();
            refuse_compatibility_escapes(&compat)?;
            push_folded(&mut out, &compat);
        }
        // A segment whose comparison form is empty is dropped
        // (`/api/;x/login` is `/api//login` to a servlet container, which
        // many then read as `/api/login`).
        if out.len() == start + 1 {
            out.truncate(start);
        }
    }
    Ok(out)
}

/// Refuses a segment whose compatibility form (NFKC) is an escape: `．．`
/// is `..`, `／` is `/`, `＼` is `\\`. An API that normalises paths that
/// way before resolving them would otherwise step out of the base path.
fn refuse_compatibility_escapes(compat: &str) -> Result<(), PathError> {
    if compat.contains('/') {
        return Err(PathError::EncodedSlash);
    }
    if compat.chars().any(|c| c == '\\' || c.is_control()) {
        return Err(PathError::ForbiddenCharacter);
    }
    let bare = compat.split(';').next().unwrap_or_default();
    if bare == "." || bare == ".." {
        return Err(PathError::DotSegment);
    }
    Ok(())
}

/// Appends the comparison form of an ASCII segment (already cut at `;`):
/// cut at the first `.`, lowercase. ASCII is NFKC-stable and folds to its
/// lower case, so nearly every path takes this one pass.
fn push_ascii(out: &mut String, bare: &str) {
    let name = bare.split('.').next().unwrap_or_default();
    out.extend(name.bytes().map(|b| char::from(b.to_ascii_lowercase())));
}

/// Appends the comparison form of a segment's compatibility form (NFKC, so
/// that fullwidth letters, ligatures, `ſ` and the Kelvin sign are the
/// letters a normalising router sees): cut at the first `.` or `;` (NFKC
/// turns `．` and `․` into `.`, `；` into `;`), each character case-folded
/// both ways. A zero-width or other invisible character is kept: NFKC keeps
/// it and no router's case comparison drops it, so that spelling is not
/// the route.
fn push_folded(out: &mut String, compat: &str) {
    for c in compat.chars().take_while(|&c| c != '.' && c != ';') {
        fold_case(out, c);
    }
}

/// Appends `c` case-folded: upper-cased then lower-cased, twice round.
fn fold_case(out: &mut String, c: char) {
    // `İ` lower-cases to `i` plus a combining dot in full, but to `i` in the
    // per-character (simple) mapping that Java's `equalsIgnoreCase` and
    // .NET's ordinal ignore-case comparisons use. It is the only character
    // whose full lower case is longer than one character.
    if c == '\u{130}' {
        out.push('i');
        return;
    }
    // The second round takes `ẞ` → `ß` on to `SS` → `ss`, as Python's
    // `.casefold()` does; for every other character it changes nothing.
    let folded = c
        .to_uppercase()
        .flat_map(char::to_lowercase)
        .flat_map(char::to_uppercase)
        .flat_map(char::to_lowercase);
    out.extend(folded);
}

/// `//a///b/` → `/a/b/`: empty segments carry no meaning for an API and
/// some frameworks treat them differently, so one spelling goes upstream.
fn collapse_slashes(rest: &str) -> String {
    let mut out = String::with_capacity(rest.len());
    for segment in rest.split('/').filter(|s| !s.is_empty()) {
        out.push('/');
        out.push_str(segment);
    }
    if rest.ends_with('/') {
        out.push('/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes() -> Routes {
        Routes::new("/api", "/api/login", "/api/logout", "/api/session").unwrap()
    }

    fn check(path: &str, expected: Result<Route, PathError>) {
        assert_eq!(routes().classify(path), expected, "{path}");
    }

    fn proxy(rest: &str, login: bool) -> Result<Route, PathError> {
        Ok(Route::Proxy {
            rest: rest.to_owned(),
            login,
        })
    }

    #[test]
    fn prefix_is_stripped_and_rest_kept() {
        check("/api", proxy("", false));
        check("/api/", proxy("/", false));
        check("/api/users/7", proxy("/users/7", false));
        check("/api/users/7/", proxy("/users/7/", false));
        check("/api//x", proxy("/x", false));
        check("/api/a//b///", proxy("/a/b/", false));
        check("/api/caf%C3%A9/%20x", proxy("/caf%C3%A9/%20x", false));
        check("/api/a%3Bb", proxy("/a%3Bb", false));
    }

    #[test]
    fn every_path_has_one_answer_on_each_listener() {
        use Listener::{Main, Ops as OpsListener};
        // (pages, ops listener, listener, path, route)
        let cases = [
            (Pages::None, false, Main, "/healthz", Ok(Route::Ops(Op::Health))),
            (Pages::None, false, Main, "/readyz", Ok(Route::Ops(Op::Ready))),
            (Pages::None, false, Main, "/metrics", Ok(Route::Ops(Op::Metrics))),
            (Pages::None, true, Main, "/healthz", Ok(Route::Ops(Op::Health))),
            (Pages::None, true, Main, "/metrics", Ok(Route::Outside)),
            (
                Pages::None,
                true,
                OpsListener,
                "/metrics",
                Ok(Route::Ops(Op::Metrics)),
            ),
            (
                Pages::None,
                true,
                OpsListener,
                "/api/users",
                Ok(Route::OpsNotFound),
            ),
            (Pages::None, true, OpsListener, "/a/../b", Ok(Route::OpsNotFound)),
            (Pages::None, false, Main, "/healthz/", Ok(Route::Outside)),
            (Pages::None, false, Main, "/api/logout", Ok(Route::Logout)),
            (Pages::None, false, Main, "/api/session", Ok(Route::Session)),
            (Pages::None, false, Main, "/a/../b", Err(PathError::DotSegment)),
            (Pages::Forwarded, false, Main, "/app", Ok(Route::PageForwarded)),
            (Pages::Files, false, Main, "/app.js", Ok(Route::PageFile)),
            (Pages::BuiltIn, false, Main, "/", Ok(Route::PageBuiltIn)),
            (Pages::BuiltIn, false, Main, "/index.html", Ok(Route::PageBuiltIn)),
            (Pages::BuiltIn, false, Main, "/other", Ok(Route::PageMissing)),
            (Pages::Files, false, Main, "/api/x", proxy("/x", false)),
        ];
        for (pages, ops_listener, listener, path, expected) in cases {
            let routes = routes().serving(pages, ops_listener);
            assert_eq!(
                routes.classify_on(listener, path),
                expected,
                "{pages:?} {ops_listener} {listener:?} {path}"
            );
        }
    }

    #[test]
    fn outside_the_prefix() {
        check("/apix", Ok(Route::Outside));
        check("/", Ok(Route::Outside));
        check("/index.html", Ok(Route::Outside));
        check("/API/users", Ok(Route::Outside));
        check("//api/users", Ok(Route::Outside));
    }

    #[test]
    fn login_is_recognised_however_spelled() {
        for path in [
            "/api/login",
            "/api/LOGIN",
            "/api/Login/",
            "/api//login",
            "/api/login//",
            "/api/%6Cogin",
            "/api/%4C%4F%47%49%4E",
            "/api/login;jsessionid=1",
        ] {
            let route = routes().classify(path).unwrap();
            assert!(
                matches!(route, Route::Proxy { login: true, .. }),
                "{path}: {route:?}"
            );
        }
        check("/api/login2", proxy("/login2", false));
        check("/api/login/x", proxy("/login/x", false));
        check("/api/xlogin", proxy("/xlogin", false));
    }

    fn is_login(routes: &Routes, path: &str) -> bool {
        matches!(routes.classify(path), Ok(Route::Proxy { login: true, .. }))
    }

    #[test]
    fn login_spellings_a_lenient_router_accepts_are_recognised() {
        let routes = routes();
        let cases = [
            // Format suffixes (Rails' `login(.:format)`, Spring's `login.*`).
            ("/api/login.json", true),
            ("/api/LOGIN.XML", true),
            ("/api/login.", true),
            ("/api/login.tar.gz", true),
            ("/api/login%2Ejson", true),
            // `;parameters`, before or after a suffix.
            ("/api/login;x", true),
            ("/api/login.json;jsessionid=1", true),
            ("/api/login;x.json", true),
            // A segment that is nothing but parameters is an empty segment.
            ("/api/;x/login", true),
            // Unicode case: `ı` upper-cases to `I` (Python's `.upper()`),
            // `İ` lower-cases to `i` per character (Java's equalsIgnoreCase).
            ("/api/log%C4%B1n", true),
            ("/api/LOG%C4%B1N", true),
            ("/api/LOG%C4%B0N", true),
            ("/api/log%C4%B0n.json", true),
            // Fullwidth letters and full stop (NFKC).
            ("/api/%EF%BD%8C%EF%BD%8F%EF%BD%87%EF%BD%89%EF%BD%8E", true),
            ("/api/%EF%BC%AC%EF%BC%AF%EF%BC%A7%EF%BC%A9%EF%BC%AE", true),
            ("/api/login%EF%BC%8Ejson", true),
            // Other names.
            ("/api/login2", false),
            ("/api/xlogin", false),
            ("/api/login/x", false),
            ("/api/logins", false),
            ("/api/log_in", false),
            ("/api/lo.gin", false),
            ("/api/log%C3%AFn", false),
            // NFKC keeps a zero-width space and no router's case comparison
            // drops it: not a spelling of the route.
            ("/api/login%E2%80%8B", false),
            ("/api/log%E2%80%8Bin", false),
            // `i` and a combining dot are two characters to any router.
            ("/api/logi%CC%87n", false),
        ];
        for (path, login) in cases {
            assert_eq!(
                is_login(&routes, path),
                login,
                "{path}: {:?}",
                routes.classify(path)
            );
        }
        // What goes upstream is the path as sent.
        check("/api/login.json", proxy("/login.json", true));
        check("/api/log%C4%B1n", proxy("/log%C4%B1n", true));
    }

    #[test]
    fn long_s_kelvin_and_sharp_s_fold_to_ascii() {
        let routes = Routes::new("/api", "/api/sso/kerberos", "/api/logout", "/api/session").unwrap();
        for path in [
            "/api/SSO/KERBEROS.json",
            "/api/%C5%BF%C5%BFo/kerbero%C5%BF", // ſ, long s
            "/api/sso/%E2%84%AAerberos",        // K, Kelvin sign
            "/api/%C3%9Fo/kerberos",            // ß, upper-cased SS
            "/api/%E1%BA%9Eo/kerberos",         // ẞ, case-folded ss
        ] {
            assert!(is_login(&routes, path), "{path}: {:?}", routes.classify(path));
        }
        // The ﬀ ligature is `ff` under NFKC.
        let routes = Routes::new("/api", "/api/staff", "/api/logout", "/api/session").unwrap();
        assert!(is_login(&routes, "/api/sta%EF%AC%80"));
    }

    #[test]
    fn configured_routes_compare_in_the_same_form() {
        let routes = Routes::new("/api", "/api/login.php", "/api/logout", "/api/session").unwrap();
        assert!(is_login(&routes, "/api/login"));
        assert!(is_login(&routes, "/api/LOGIN.PHP"));
        assert_eq!(routes.classify("/api/Logout.json"), Ok(Route::Logout));
        assert_eq!(routes.classify("/api/%EF%BD%93ession/"), Ok(Route::Session));
        // Two routes that compare equal are one route.
        assert_eq!(
            Routes::new("/api", "/api/login", "/api/login.json", "/api/session")
                .err()
                .map(|errors| errors.into_iter().map(|e| e.key).collect::<Vec<_>>()),
            Some(vec!["login"])
        );
    }

    #[test]
    fn hostile_unicode_segments_do_not_panic() {
        // U+FDFA grows eighteen-fold under NFKC; invalid UTF-8, lone
        // combining marks and `İ` runs must not trip the folding.
        let long = format!("/api/{}", "%EF%B7%BA".repeat(2000));
        assert!(matches!(
            routes().classify(&long),
            Ok(Route::Proxy { login: false, .. })
        ));
        for path in [
            "/api/%CC%87%CC%87login",
            "/api/%C4%B0%C4%B0%C4%B0",
            "/api/%ff%C4login",
        ] {
            assert!(routes().classify(path).is_ok(), "{path}");
        }
    }

    #[test]
    fn logout_and_session_are_tokenjars_own() {
        check("/api/logout", Ok(Route::Logout));
        check("/api/Logout/", Ok(Route::Logout));
        check("/api/session", Ok(Route::Session));
        check("/api//session", Ok(Route::Session));
        let outside = Routes::new("/api", "/api/login", "/auth/logout", "/auth/session").unwrap();
        assert_eq!(outside.classify("/auth/logout"), Ok(Route::Logout));
        assert_eq!(outside.classify("/api/logout"), proxy("/logout", false));
    }

    #[test]
    fn unsafe_paths_are_refused() {
        let cases = [
            ("/api/../admin", PathError::DotSegment),
            ("/api/./x", PathError::DotSegment),
            ("/api/%2e%2e/admin", PathError::DotSegment),
            ("/api/%2E%2e/admin", PathError::DotSegment),
            ("/api/.%2e/admin", PathError::DotSegment),
            ("/api/..;/admin", PathError::DotSegment),
            ("/api/x/..", PathError::DotSegment),
            ("/api/a%2Fb", PathError::EncodedSlash),
            ("/api/a%2fb", PathError::EncodedSlash),
            ("/api/a\\b", PathError::ForbiddenCharacter),
            ("/api/a%5Cb", PathError::ForbiddenCharacter),
            ("/api/a%00b", PathError::ForbiddenCharacter),
            ("/api/a%0d%0ab", PathError::ForbiddenCharacter),
            ("/api/a\u{0}b", PathError::ForbiddenCharacter),
            ("api/x", PathError::NotAbsolute),
            ("", PathError::NotAbsolute),
            ("*", PathError::NotAbsolute),
            ("/api/..?x", PathError::ForbiddenCharacter),
            ("/api/%2e%2e#", PathError::ForbiddenCharacter),
            ("/api/.. ", PathError::ForbiddenCharacter),
            // What NFKC turns into an escape: fullwidth dots, solidus and
            // reverse solidus, the one-dot and two-dot leaders.
            ("/api/%EF%BC%8E%EF%BC%8E/admin", PathError::DotSegment),
            ("/api/%E2%80%A5/admin", PathError::DotSegment),
            ("/api/%E2%80%A4%E2%80%A4", PathError::DotSegment),
            ("/api/%E2%80%A4;x/admin", PathError::DotSegment),
            ("/api/a%EF%BC%8Fb", PathError::EncodedSlash),
            ("/api/a%EF%BC%BCb", PathError::ForbiddenCharacter),
        ];
        for (path, error) in cases {
            check(path, Err(error));
        }
        // Dots that are not whole segments are ordinary names.
        check(
            "/api/a..b/.well-known/x.json",
            proxy("/a..b/.well-known/x.json", false),
        );
    }

    #[test]
    fn invalid_percent_escapes_and_non_utf8_do_not_panic() {
        check("/api/%zz/%", proxy("/%zz/%", false));
        check("/api/%ff%fe", proxy("/%ff%fe", false));
    }

    #[test]
    fn whole_site_prefix() {
        let all = Routes::new("/", "/login", "/logout", "/session").unwrap();
        assert_eq!(all.prefix(), "/");
        assert_eq!(all.classify("/users"), proxy("/users", false));
        assert_eq!(all.classify("/"), proxy("/", false));
        assert_eq!(all.classify("/LOGIN"), proxy("/LOGIN", true));
    }

    #[test]
    fn bad_route_settings_name_their_key() {
        let keys = |r: Result<Routes, Vec<SettingError>>| -> Vec<&'static str> {
            r.err().unwrap_or_default().into_iter().map(|e| e.key).collect()
        };
        assert_eq!(
            keys(Routes::new("api", "/api/login", "/api/logout", "/api/session")),
            ["prefix"]
        );
        assert_eq!(
            keys(Routes::new("/api", "/login", "/api/logout", "/api/session")),
            ["login"]
        );
        assert_eq!(
            keys(Routes::new("/api", "/api", "/api/logout", "/api/session")),
            ["login"]
        );
        assert_eq!(
            keys(Routes::new(
                "/api",
                "/api.v2/login",
                "/api/logout",
                "/api/session"
            )),
            ["login"]
        );
        assert_eq!(
            keys(Routes::new("/api", "/api/login", "/api/x", "/api/X/")),
            ["logout"]
        );
        assert_eq!(
            keys(Routes::new("/api", "/api/../login", "x", "/api/session")),
            ["login", "logout"]
        );
    }
}
