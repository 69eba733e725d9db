//! Prometheus metrics (SPEC §9): requests by route class and status, their
//! latency, upstream errors, logins, logouts, CSRF refusals, refused
//! cookies and conflicting ones, token refreshes, open WebSockets, rendered in the text
//! exposition format at `/metrics`.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};
use tokenjar_domain::{ErrorKind, FlowError, Handled, WebSocketPlan};

/// The process's metrics; shared by every worker.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
    upstream_errors: IntCounterVec,
    logins: IntCounterVec,
    logouts: IntCounter,
    csrf_refused: IntCounter,
    cookies_rejected: IntCounter,
    cookie_conflicts: IntCounter,
    refreshes: IntCounterVec,
    websockets_open: IntGauge,
    session_store_errors: IntCounter,
}

impl Metrics {
    /// Registers every metric.
    ///
    /// # Errors
    /// A metric could not be registered (a programming error: duplicate names).
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "tokenjar_requests_total",
                "Requests answered, by route class and status code.",
            ),
            &["route", "status"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "tokenjar_request_duration_seconds",
                "Time from request to response head, by route class.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            &["route"],
        )?;
        let upstream_errors = IntCounterVec::new(
            Opts::new(
                "tokenjar_upstream_errors_total",
                "Failed exchanges with the API: unavailable, timeout, bad_login_response, token_too_large.",
            ),
            &["kind"],
        )?;
        let logins = IntCounterVec::new(
            Opts::new(
                "tokenjar_logins_total",
                "Logins by result: success, refused (by the API), failed.",
            ),
            &["result"],
        )?;
        let logouts = IntCounter::new("tokenjar_logouts_total", "Logouts answered.")?;
        let csrf_refused = IntCounter::new(
            "tokenjar_csrf_refused_total",
            "Requests refused by the CSRF rules, and WebSocket handshakes by the Origin rule.",
        )?;
        let cookies_rejected = IntCounter::new(
            "tokenjar_cookies_rejected_total",
            "Auth cookies that failed to open (tampered, foreign, expired) and were deleted.",
        )?;
        // Kept apart from cookies_rejected, which counts deletions: a
        // conflict deletes nothing. A rise is cookie tossing, or old cookies
        // left by a change of cookie.path or cookie.domain.
        let cookie_conflicts = IntCounter::new(
            "tokenjar_cookie_conflicts_total",
            "Requests whose auth cookies opened to different sessions: none used, none deleted.",
        )?;
        let refreshes = IntCounterVec::new(
            Opts::new(
                "tokenjar_refreshes_total",
                "Requests that needed a token refresh, by result: ok (refreshed), reused (handed \
                 another request's result), refused (session ended), failed (session kept).",
            ),
            &["result"],
        )?;
        let websockets_open = IntGauge::new(
            "tokenjar_websockets_open",
            "WebSockets relayed right now (browser and API both connected).",
        )?;
        let session_store_errors = IntCounter::new(
            "tokenjar_session_store_errors_total",
            "Requests answered 503 because the session store (session.store) could not be asked.",
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(session_store_errors.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(upstream_errors.clone()))?;
        registry.register(Box::new(logins.clone()))?;
        registry.register(Box::new(logouts.clone()))?;
        registry.register(Box::new(csrf_refused.clone()))?;
        registry.register(Box::new(cookies_rejected.clone()))?;
        registry.register(Box::new(cookie_conflicts.clone()))?;
        registry.register(Box::new(refreshes.clone()))?;
        registry.register(Box::new(websockets_open.clone()))?;
        Ok(Self {
            registry,
            requests,
            duration,
            upstream_errors,
            logins,
            logouts,
            csrf_refused,
            cookies_rejected,
            cookie_conflicts,
            refreshes,
            websockets_open,
            session_store_errors,
        })
    }

    /// Counts one answered request.
    pub fn observe_request(&self, route: &str, status: &str, seconds: f64) {
        self.requests.with_label_values(&[route, status]).inc();
        self.duration.with_label_values(&[route]).observe(seconds);
    }

    /// Counts what the flow reported for one request.
    pub fn record<B>(&self, handled: &Handled<B>) {
        if let Some(error) = &handled.error {
            self.record_error(error);
        }
        if let Some(login) = handled.login {
            self.logins.with_label_values(&[login.as_str()]).inc();
        }
        if handled.route == tokenjar_domain::RouteClass::Logout && handled.error.is_none() {
            self.logouts.inc();
        }
        if handled.rejected_cookie.is_some() {
            self.cookies_rejected.inc();
        }
        if handled.conflicting_cookies {
            self.cookie_conflicts.inc();
        }
        if let Some(refresh) = handled.refresh {
            self.refreshes.with_label_values(&[refresh.as_str()]).inc();
        }
    }

    /// Counts what the cookie of a WebSocket handshake came to (the
    /// handshake's own answer is counted as a request).
    pub fn record_websocket(&self, plan: &WebSocketPlan) {
        if plan.rejected_cookie.is_some() {
            self.cookies_rejected.inc();
        }
        if plan.conflicting_cookies {
            self.cookie_conflicts.inc();
        }
    }

    /// The gauge of open WebSockets, for the relay's drop guard.
    pub fn websockets_open(&self) -> &IntGauge {
        &self.websockets_open
    }

    /// Counts an error tokenjar answered with.
    pub fn record_error(&self, error: &FlowError) {
        let upstream = |kind: &str| self.upstream_errors.with_label_values(&[kind]).inc();
        match error.kind() {
            // A handshake from a foreign origin is the WebSocket form of a
            // forgery (Cross-Site WebSocket Hijacking).
            ErrorKind::Csrf | ErrorKind::Origin => self.csrf_refused.inc(),
            ErrorKind::UpstreamUnavailable => upstream("unavailable"),
            ErrorKind::UpstreamTimeout => upstream("timeout"),
            ErrorKind::BadLoginResponse => upstream("bad_login_response"),
            // Counted apart: the answer was good, the token outgrew
            // `cookie.max_chunks`, and the operator's fix differs.
            ErrorKind::TokenTooLarge => upstream("token_too_large"),
            ErrorKind::ProviderUnavailable => upstream("provider_unavailable"),
            ErrorKind::SessionStoreUnavailable => self.session_store_errors.inc(),
            // Counted by tokenjar_refreshes_total{result="refused"}.
            ErrorKind::SessionExpired
            | ErrorKind::BadRequest
            | ErrorKind::NotFound
            | ErrorKind::MethodNotAllowed
            | ErrorKind::RequestTimeout
            | ErrorKind::PayloadTooLarge => {}
        }
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let encoder = TextEncoder::new();
        if let Err(e) = encoder.encode(&self.registry.gather(), &mut out) {
            tracing::warn!("cannot render metrics: {e}");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokenjar_domain::{CsrfRefusal, UpstreamError};

    fn value(text: &str, line_start: &str) -> Option<f64> {
        text.lines()
            .find(|l| l.starts_with(line_start))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    #[test]
    fn counts_appear_in_the_exposition() {
        let m = Metrics::new().unwrap();
        m.observe_request("api", "200", 0.002);
        m.observe_request("api", "200", 0.004);
        m.observe_request("login", "502", 0.1);
        m.record_error(&UpstreamError::Timeout.into());
        m.record_error(&UpstreamError::Unavailable("x".into()).into());
        m.record_error(&CsrfRefusal::MissingHeader.into());
        m.record_error(&FlowError::NotFound);
        let text = m.render();
        assert_eq!(
            value(&text, r#"tokenjar_requests_total{route="api",status="200"}"#),
            Some(2.0)
        );
        assert_eq!(
            value(&text, r#"tokenjar_requests_total{route="login",status="502"}"#),
            Some(1.0)
        );
        assert_eq!(
            value(&text, r#"tokenjar_request_duration_seconds_count{route="api"}"#),
            Some(2.0)
        );
        assert_eq!(
            value(&text, r#"tokenjar_upstream_errors_total{kind="timeout"}"#),
            Some(1.0)
        );
        assert_eq!(
            value(&text, r#"tokenjar_upstream_errors_total{kind="unavailable"}"#),
            Some(1.0)
        );
        assert_eq!(value(&text, "tokenjar_csrf_refused_total"), Some(1.0));
        assert_eq!(value(&text, "tokenjar_logouts_total"), Some(0.0));
        assert_eq!(value(&text, "tokenjar_cookies_rejected_total"), Some(0.0));
        assert_eq!(value(&text, "tokenjar_cookie_conflicts_total"), Some(0.0));
        assert_eq!(value(&text, "tokenjar_websockets_open"), Some(0.0));
        m.websockets_open().inc();
        assert_eq!(value(&m.render(), "tokenjar_websockets_open"), Some(1.0));
    }
}
