//! Request ids and the per-request tracing span: a client's well-formed
//! `x-request-id` is kept, any other is replaced by a fresh UUID; the id is
//! on the span (so on every log line of the request), goes to the API, and
//! comes back to the client.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::{Error, HttpMessage};
use tokenjar_domain::request_id;
use tracing::Span;
use tracing_actix_web::{RequestId, RootSpanBuilder};

/// The id chosen for one request, kept in the request's extensions.
#[derive(Clone, Debug)]
pub struct ChosenRequestId(pub String);

/// Builds the request span with tokenjar's own request id. Only the method
/// and path are recorded, not the query string, which may carry an app's
/// secrets.
pub struct RequestSpan;

impl RootSpanBuilder for RequestSpan {
    fn on_request_start(request: &ServiceRequest) -> Span {
        let incoming = request
            .headers()
            .get(request_id::HEADER)
            .filter(|v| request_id::is_acceptable(v.as_bytes()))
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let id = incoming.unwrap_or_else(|| {
            // TracingLogger put a fresh UUID in the extensions before calling us.
            request
                .extensions()
                .get::<RequestId>()
                .map(ToString::to_string)
                .unwrap_or_default()
        });
        let span = tracing::info_span!(
            "request",
            request_id = %id,
            method = %request.method(),
            path = %request.path(),
            status = tracing::field::Empty,
        );
        request.extensions_mut().insert(ChosenRequestId(id));
        span
    }

    fn on_request_end<B: MessageBody>(span: Span, outcome: &Result<ServiceResponse<B>, Error>) {
        match outcome {
            Ok(response) => {
                span.record("status", response.status().as_u16());
            }
            Err(error) => {
                span.record("status", error.as_response_error().status_code().as_u16());
            }
        }
    }
}
