//! Cross-site request forgery defence (SPEC §7): an unsafe request must carry
//! the configured custom header (which browsers cannot send cross-site
//! without a CORS preflight, which tokenjar never grants) and must not come
//! from a foreign `Origin` or announce itself as `Sec-Fetch-Site: cross-site`.

use crate::forwarding::normalise_origin;
use crate::headers::{is_valid_name, Headers};
use crate::method::Method;
use crate::setting::SettingError;

/// Why a request was refused as a possible forgery (403 `csrf`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CsrfRefusal {
    /// An unsafe method without the required header.
    #[error("the CSRF header is missing")]
    MissingHeader,
    /// An `Origin` that is neither the request's own nor allowed.
    #[error("the request comes from a foreign origin")]
    ForeignOrigin,
    /// The browser says the request is cross-site.
    #[error("the browser marked the request cross-site")]
    CrossSite,
    /// A CORS preflight from a foreign origin: never granted.
    #[error("CORS preflight from a foreign origin")]
    Preflight,
}

/// Why a WebSocket handshake was refused by the `Origin` rule (403
/// `origin`, SPEC §13).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OriginRefusal {
    /// No `Origin` header (or several): a browser always sends exactly one.
    #[error("the WebSocket handshake has no single Origin")]
    Missing,
    /// An `Origin` that is neither the request's own nor allowed.
    #[error("the WebSocket handshake comes from a foreign origin")]
    Foreign,
}

/// The configured CSRF rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CsrfRules {
    header: Option<String>,
    allowed_origins: Vec<String>,
}

impl Default for CsrfRules {
    fn default() -> Self {
        Self {
            header: Some("x-csrf".to_owned()),
            allowed_origins: Vec::new(),
        }
    }
}

impl CsrfRules {
    /// Rules requiring `header` (`""` turns that check off; the origin
    /// checks stay) and accepting `allowed_origins` besides the request's
    /// own.
    ///
    /// # Errors
    /// Every problem, each naming its key (`header`, `allowed_origins`).
    pub fn new<S: AsRef<str>>(header: &str, allowed_origins: &[S]) -> Result<Self, Vec<SettingError>> {
        let mut problems = Vec::new();
        if !header.is_empty() && !is_valid_name(header) {
            problems.push(SettingError::new(
                "header",
                format!("{header:?} is not a valid header name"),
            ));
        }
        let mut allowed = Vec::with_capacity(allowed_origins.len());
        for origin in allowed_origins {
            let origin = origin.as_ref();
            match normalise_origin(origin) {
                Some(normalised) => allowed.push(normalised),
                None => problems.push(SettingError::new(
                    "allowed_origins",
                    format!("{origin:?} is not an origin (scheme://host[:port], no path)"),
                )),
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Self {
            header: (!header.is_empty()).then(|| header.to_ascii_lowercase()),
            allowed_origins: allowed,
        })
    }

    /// Checks one request. `own_origin` tells the origin the browser
    /// reached (see [`crate::Forwarding::origin`]: `server.public_origin`,
    /// or the scheme and host as the connection — or a trusted load
    /// balancer — tells them; `None` when unknown, so that only allowed
    /// origins pass). It is asked only when an `Origin` must be compared:
    /// most requests never need it.
    ///
    /// # Errors
    /// [`CsrfRefusal`] saying which rule the request breaks.
    pub fn check(
        &self,
        method: &Method,
        headers: &Headers,
        own_origin: impl FnOnce() -> Option<String>,
    ) -> Result<(), CsrfRefusal> {
        self.check_as(method, headers, own_origin, false)
    }

    /// The same rules applied whatever the method, GET and HEAD included:
    /// for the login route, where an API that accepts `GET /login?user=…`
    /// would otherwise let another site log a victim into the attacker's
    /// account (login CSRF).
    ///
    /// # Errors
    /// [`CsrfRefusal`] saying which rule the request breaks.
    pub fn check_every_method(
        &self,
        method: &Method,
        headers: &Headers,
        own_origin: impl FnOnce() -> Option<String>,
    ) -> Result<(), CsrfRefusal> {
        self.check_as(method, headers, own_origin, true)
    }

    fn check_as(
        &self,
        method: &Method,
        headers: &Headers,
        own_origin: impl FnOnce() -> Option<String>,
        every_method: bool,
    ) -> Result<(), CsrfRefusal> {
        let preflight = *method == Method::Options && headers.contains("access-control-request-method");
        // Safe methods change nothing (RFC 9110 §9.2.1) and are not checked.
        if method.is_safe() && !preflight && !every_method {
            return Ok(());
        }
        if let Some(origin) = headers.get("origin") {
            if !self.origin_allowed(origin, own_origin) {
                return Err(if preflight {
                    CsrfRefusal::Preflight
                } else {
                    CsrfRefusal::ForeignOrigin
                });
            }
        }
        if preflight && !every_method {
            return Ok(());
        }
        if headers
            .get("sec-fetch-site")
            .is_some_and(|v| v.eq_ignore_ascii_case(b"cross-site"))
        {
            return Err(CsrfRefusal::CrossSite);
        }
        if let Some(name) = &self.header {
            if !headers.contains(name) {
                return Err(CsrfRefusal::MissingHeader);
            }
        }
        Ok(())
    }

    /// The rule a WebSocket handshake meets instead of the header rule
    /// (browsers cannot add a header to a handshake, and send it
    /// cross-site with the victim's cookie: Cross-Site WebSocket
    /// Hijacking, RFC 6455 §10.2): exactly one `Origin`, the request's own
    /// or an allowed one. `own_origin` as for [`check`](Self::check).
    ///
    /// # Errors
    /// [`OriginRefusal`] saying what was wrong with the `Origin`.
    pub fn check_handshake_origin(
        &self,
        headers: &Headers,
        own_origin: impl FnOnce() -> Option<String>,
    ) -> Result<(), OriginRefusal> {
        let mut origins = headers.get_all("origin");
        let (Some(origin), None) = (origins.next(), origins.next()) else {
            return Err(OriginRefusal::Missing);
        };
        if self.origin_allowed(origin, own_origin) {
            Ok(())
        } else {
            Err(OriginRefusal::Foreign)
        }
    }

    fn origin_allowed(&self, origin: &[u8], own_origin: impl FnOnce() -> Option<String>) -> bool {
        let Some(origin) = std::str::from_utf8(origin).ok().and_then(normalise_origin) else {
            // `null`, garbage, non-UTF-8: nobody's origin.
            return false;
        };
        self.allowed_origins.contains(&origin) || own_origin().is_some_and(|own| own == origin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Headers {
        pairs.iter().map(|(n, v)| (*n, *v)).collect()
    }

    /// The own origin of these tests: `http://` and the `Host` header.
    fn own(headers: &Headers) -> Option<String> {
        crate::Forwarding::default().origin(headers, None, "http")
    }

    fn check(rules: &CsrfRules, method: &str, headers: &[(&str, &str)], expected: Result<(), CsrfRefusal>) {
        let headers = h(headers);
        assert_eq!(
            rules.check(&method.into(), &headers, || own(&headers)),
            expected,
            "{method} {headers:?}"
        );
    }

    const HOST: (&str, &str) = ("host", "app.example:8080");
    const TOKEN: (&str, &str) = ("x-csrf", "1");

    #[test]
    fn safe_methods_pass_whatever_they_carry() {
        let rules = CsrfRules::default();
        for method in ["GET", "HEAD", "OPTIONS"] {
            check(&rules, method, &[HOST], Ok(()));
            check(
                &rules,
                method,
                &[HOST, ("origin", "https://evil.example")],
                Ok(()),
            );
            check(&rules, method, &[HOST, ("sec-fetch-site", "cross-site")], Ok(()));
        }
    }

    #[test]
    fn unsafe_methods_need_the_header() {
        let rules = CsrfRules::default();
        for method in ["POST", "PUT", "PATCH", "DELETE", "TRACE", "PROPFIND", "get"] {
            check(&rules, method, &[HOST], Err(CsrfRefusal::MissingHeader));
            check(&rules, method, &[HOST, TOKEN], Ok(()));
            check(&rules, method, &[HOST, ("X-CSRF", "")], Ok(()));
        }
    }

    #[test]
    fn the_origin_must_be_the_requests_own_or_allowed() {
        let rules = CsrfRules::new("x-csrf", &["https://admin.example"]).unwrap();
        let cases: &[(&str, Result<(), CsrfRefusal>)] = &[
            ("http://app.example:8080", Ok(())),
            ("HTTP://APP.EXAMPLE:8080", Ok(())),
            ("https://admin.example", Ok(())),
            ("https://admin.example:443", Ok(())),
            ("https://app.example:8080", Err(CsrfRefusal::ForeignOrigin)),
            ("http://app.example", Err(CsrfRefusal::ForeignOrigin)),
            ("http://evil.example", Err(CsrfRefusal::ForeignOrigin)),
            (
                "http://app.example:8080.evil.example",
                Err(CsrfRefusal::ForeignOrigin),
            ),
            ("null", Err(CsrfRefusal::ForeignOrigin)),
            ("", Err(CsrfRefusal::ForeignOrigin)),
            ("http://app.example:8080/path", Err(CsrfRefusal::ForeignOrigin)),
        ];
        for (origin, expected) in cases {
            check(&rules, "POST", &[HOST, TOKEN, ("origin", origin)], *expected);
        }
        let mut bytes = h(&[HOST, TOKEN]);
        bytes.append("origin", vec![0xff, 0xfe]);
        assert_eq!(
            rules.check(&Method::Post, &bytes, || own(&bytes)),
            Err(CsrfRefusal::ForeignOrigin)
        );
    }

    #[test]
    fn the_own_origin_is_the_one_given() {
        let rules = CsrfRules::default();
        let headers = h(&[
            ("host", "10.0.0.5:8080"),
            ("origin", "https://app.example"),
            TOKEN,
        ]);
        let check = |own: Option<&str>| rules.check(&Method::Post, &headers, || own.map(str::to_owned));
        assert_eq!(check(Some("https://app.example")), Ok(()));
        assert_eq!(
            check(Some("http://10.0.0.5:8080")),
            Err(CsrfRefusal::ForeignOrigin)
        );
        assert_eq!(check(None), Err(CsrfRefusal::ForeignOrigin));
        // Claims a client makes about the hop do not make its origin own.
        let claimed = h(&[
            ("host", "app.example"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.example"),
            ("origin", "https://evil.example"),
            TOKEN,
        ]);
        assert_eq!(
            rules.check(&Method::Post, &claimed, || own(&claimed)),
            Err(CsrfRefusal::ForeignOrigin)
        );
    }

    #[test]
    fn the_login_rules_hold_for_every_method() {
        let rules = CsrfRules::default();
        let every = |method: &str, pairs: &[(&str, &str)]| {
            let headers = h(pairs);
            rules.check_every_method(&method.into(), &headers, || own(&headers))
        };
        for method in ["GET", "HEAD", "OPTIONS", "POST"] {
            assert_eq!(
                every(method, &[HOST]),
                Err(CsrfRefusal::MissingHeader),
                "{method}"
            );
            assert_eq!(every(method, &[HOST, TOKEN]), Ok(()), "{method}");
            assert_eq!(
                every(method, &[HOST, TOKEN, ("origin", "http://evil.example")]),
                Err(CsrfRefusal::ForeignOrigin),
                "{method}"
            );
            assert_eq!(
                every(method, &[HOST, TOKEN, ("sec-fetch-site", "cross-site")]),
                Err(CsrfRefusal::CrossSite),
                "{method}"
            );
        }
        // A same-origin preflight to the login route is not a login.
        assert_eq!(
            every(
                "OPTIONS",
                &[
                    HOST,
                    ("origin", "http://app.example:8080"),
                    ("access-control-request-method", "POST")
                ]
            ),
            Err(CsrfRefusal::MissingHeader)
        );
    }

    #[test]
    fn sec_fetch_site_cross_site_is_refused() {
        let rules = CsrfRules::default();
        check(
            &rules,
            "POST",
            &[HOST, TOKEN, ("sec-fetch-site", "cross-site")],
            Err(CsrfRefusal::CrossSite),
        );
        check(
            &rules,
            "POST",
            &[HOST, TOKEN, ("sec-fetch-site", "Cross-Site")],
            Err(CsrfRefusal::CrossSite),
        );
        check(
            &rules,
            "POST",
            &[HOST, TOKEN, ("sec-fetch-site", "same-origin")],
            Ok(()),
        );
        check(
            &rules,
            "POST",
            &[HOST, TOKEN, ("sec-fetch-site", "same-site")],
            Ok(()),
        );
        check(&rules, "POST", &[HOST, TOKEN, ("sec-fetch-site", "none")], Ok(()));
    }

    #[test]
    fn an_empty_header_setting_keeps_the_origin_rules() {
        let rules = CsrfRules::new::<&str>("", &[]).unwrap();
        check(&rules, "POST", &[HOST], Ok(()));
        check(
            &rules,
            "POST",
            &[HOST, ("origin", "http://evil.example")],
            Err(CsrfRefusal::ForeignOrigin),
        );
        check(
            &rules,
            "DELETE",
            &[HOST, ("sec-fetch-site", "cross-site")],
            Err(CsrfRefusal::CrossSite),
        );
    }

    #[test]
    fn foreign_preflights_are_refused() {
        let rules = CsrfRules::new("x-csrf", &["https://admin.example"]).unwrap();
        let preflight = |origin: &'static str| {
            [
                HOST,
                ("origin", origin),
                ("access-control-request-method", "POST"),
                ("access-control-request-headers", "x-csrf"),
            ]
        };
        check(
            &rules,
            "OPTIONS",
            &preflight("https://evil.example"),
            Err(CsrfRefusal::Preflight),
        );
        check(&rules, "OPTIONS", &preflight("https://admin.example"), Ok(()));
        check(&rules, "OPTIONS", &preflight("http://app.example:8080"), Ok(()));
    }

    #[test]
    fn a_handshake_needs_its_own_or_an_allowed_origin() {
        let rules = CsrfRules::new("x-csrf", &["https://admin.example"]).unwrap();
        let check = |pairs: &[(&str, &str)]| {
            let headers = h(pairs);
            rules.check_handshake_origin(&headers, || own(&headers))
        };
        assert_eq!(check(&[HOST, ("origin", "http://app.example:8080")]), Ok(()));
        assert_eq!(check(&[HOST, ("origin", "https://admin.example")]), Ok(()));
        // No CSRF header is needed, nor does one help.
        for foreign in ["http://evil.example", "null", "https://app.example:8080", ""] {
            assert_eq!(
                check(&[HOST, TOKEN, ("origin", foreign)]),
                Err(OriginRefusal::Foreign),
                "{foreign}"
            );
        }
        assert_eq!(check(&[HOST, TOKEN]), Err(OriginRefusal::Missing));
        assert_eq!(
            check(&[
                HOST,
                ("origin", "http://app.example:8080"),
                ("origin", "http://evil.example")
            ]),
            Err(OriginRefusal::Missing)
        );
        // The own origin is the one given: unknown means only allowed ones pass.
        let headers = h(&[HOST, ("origin", "http://app.example:8080")]);
        assert_eq!(
            rules.check_handshake_origin(&headers, || None),
            Err(OriginRefusal::Foreign)
        );
    }

    #[test]
    fn settings_are_validated() {
        assert!(CsrfRules::new("bad header", &[] as &[&str]).is_err());
        assert!(CsrfRules::new("x-csrf", &["https://a.example/path"]).is_err());
        assert!(CsrfRules::new("x-csrf", &["https://a.example/"]).is_err());
        assert!(CsrfRules::new("x-csrf", &["a.example"]).is_err());
        assert!(CsrfRules::new("x-csrf", &["https://a.example:8443", "http://b.example"]).is_ok());
    }
}
