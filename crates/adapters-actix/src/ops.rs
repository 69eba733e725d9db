//! The operator's endpoints, outside the API prefix: `/healthz` (the process
//! runs), `/readyz` (the API answers, checked at most once a second per
//! worker so probes cannot hammer it) and `/metrics` (Prometheus text,
//! optionally behind a bearer token).

use std::cell::Cell;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use actix_web::http::header::{self, HeaderValue};
use actix_web::{FromRequest, HttpRequest, HttpResponse};
use actix_web_httpauth::extractors::bearer::BearerAuth;
use serde_json::json;
use subtle::ConstantTimeEq;
use tokenjar_domain::{FlowError, Op, Upstream, UpstreamError};

/// How long a readiness answer is reused.
const READY_CACHE: Duration = Duration::from_secs(1);

/// Settings of the operator endpoints (the `ops.*` keys).
#[derive(Clone, Debug, Default)]
pub struct OpsSettings {
    /// If set, `/metrics` requires `Authorization: Bearer <token>`.
    pub metrics_token: Option<String>,
    /// If set, a listener of their own for `/metrics` and the probes; the
    /// main listener then serves no `/metrics`.
    pub listen: Option<SocketAddr>,
}

/// One worker's cached readiness.
#[derive(Default)]
pub struct Readiness {
    last: Cell<Option<(Instant, Result<(), UpstreamError>)>>,
}

impl Readiness {
    async fn check(&self, upstream: &impl Upstream, url: &str) -> Result<(), UpstreamError> {
        let cached = self.last.take();
        if let Some((at, result)) = &cached {
            if at.elapsed() < READY_CACHE {
                let result = result.clone();
                self.last.set(cached);
                return result;
            }
        }
        let result = upstream.probe(url).await.map(|_| ());
        self.last.set(Some((Instant::now(), result.clone())));
        result
    }
}

/// What `/readyz` looks at: the API (through `upstream`, cached per
/// worker in `readiness`) and, in OIDC mode, whether the provider is known.
pub struct Ready<'a, U> {
    /// The API's client.
    pub upstream: &'a U,
    /// This worker's cached answer.
    pub readiness: &'a Readiness,
    /// The API's base URL, probed.
    pub base_url: &'a str,
    /// False in OIDC mode until the provider's discovery succeeded.
    pub provider_ready: bool,
    /// Why the session store did not answer, when there is one and it
    /// did not.
    pub store_error: Option<FlowError>,
}

/// Answers an operator endpoint.
pub async fn answer(
    op: Op,
    request: &HttpRequest,
    ready: Ready<'_, impl Upstream>,
    metrics: &crate::metrics::Metrics,
    settings: &OpsSettings,
) -> Result<HttpResponse, FlowError> {
    FlowError::read_only(&request.method().as_str().into())?;
    match op {
        Op::Health => Ok(HttpResponse::Ok().json(json!({ "status": "ok" }))),
        // OIDC mode: not ready before the provider is known (SPEC §16).
        Op::Ready if !ready.provider_ready => {
            let error = FlowError::ProviderUnavailable("the provider has not been discovered yet".into());
            tracing::info!(detail = %error, "not ready");
            Ok(HttpResponse::ServiceUnavailable().json(error.body().to_json()))
        }
        Op::Ready => {
            // A session store that does not answer: sessions cannot be
            // served, whatever the API says.
            let unready = match ready.store_error {
                Some(error) => Some(error),
                None => ready
                    .readiness
                    .check(ready.upstream, ready.base_url)
                    .await
                    .err()
                    .map(FlowError::from),
            };
            Ok(match unready {
                None => HttpResponse::Ok().json(json!({ "status": "ready" })),
                // Not ready is a state, not a failed request: 503 for the
                // probe, with the reason in the usual error shape.
                Some(error) => {
                    tracing::info!(detail = %error, "not ready");
                    HttpResponse::ServiceUnavailable().json(error.body().to_json())
                }
            })
        }
        Op::Metrics => {
            if let Some(expected) = &settings.metrics_token {
                let presented = BearerAuth::extract(request).await.ok();
                let ok = presented
                    .is_some_and(|auth| bool::from(auth.token().as_bytes().ct_eq(expected.as_bytes())));
                if !ok {
                    return Ok(HttpResponse::Unauthorized()
                        .insert_header((header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer")))
                        .json(json!({
                            "error": "unauthorized",
                            "message": "The metrics endpoint needs its bearer token."
                        })));
                }
            }
            Ok(HttpResponse::Ok()
                .content_type("text/plain; version=0.0.4; charset=utf-8")
                .body(metrics.render()))
        }
    }
}
