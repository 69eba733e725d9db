//! The actix-web server: one handler for every path that turns the request
//! into a domain [`ClientRequest`], runs the [`Gateway`], logs what went
//! wrong once, and streams the [`Reply`] back.

use std::io;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::body::{None as NoBody, SizedStream};
use actix_web::dev::Server;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use tokenjar_domain::{
    BodySize, ClientRequest, FlowError, Gateway, Handled, Headers, Reply, ReplyBody, Rules,
};
use tracing_actix_web::TracingLogger;

use crate::body::RequestBody;
use crate::clock::SystemClock;
use crate::upstream::{AwcUpstream, ResponseBody, UpstreamSettings};

/// The server's own settings (the `server.*` keys).
#[derive(Clone, Debug)]
pub struct ServerSettings {
    /// Listen address.
    pub host: String,
    /// Listen port; 0 picks a free one.
    pub port: u16,
    /// Worker threads; 0 means one per core.
    pub workers: usize,
    /// How long in-flight requests get on shutdown.
    pub shutdown_timeout: Duration,
    /// Request body limit in bytes; 0 means none.
    pub max_body_bytes: u64,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 8080,
            workers: 0,
            shutdown_timeout: Duration::from_secs(30),
            max_body_bytes: 0,
        }
    }
}

type AwcGateway = Gateway<AwcUpstream, SystemClock>;

/// What every worker's handler shares.
#[derive(Clone, Copy)]
struct Limits {
    max_body_bytes: Option<u64>,
}

/// A bound, not yet running tokenjar server.
pub struct Application {
    port: u16,
    host: String,
    server: Server,
}

impl Application {
    /// Binds the listener and prepares the workers.
    ///
    /// # Errors
    /// The listener could not be bound.
    pub fn build(
        server: &ServerSettings,
        upstream: &UpstreamSettings,
        rules: Arc<Rules>,
    ) -> io::Result<Self> {
        let listener = TcpListener::bind((server.host.as_str(), server.port))?;
        let port = listener.local_addr()?.port();
        let limits = Limits {
            max_body_bytes: (server.max_body_bytes > 0).then_some(server.max_body_bytes),
        };
        let upstream = upstream.clone();
        let mut http = HttpServer::new(move || {
            // One client per worker: awc is not Send, and a per-worker pool
            // keeps connections warm without locking.
            let gateway: AwcGateway =
                Gateway::new(Arc::clone(&rules), AwcUpstream::new(&upstream), SystemClock);
            App::new()
                .wrap(TracingLogger::default())
                .app_data(web::Data::new(gateway))
                .app_data(web::Data::new(limits))
                .default_service(web::to(handle))
        })
        .shutdown_timeout(server.shutdown_timeout.as_secs());
        if server.workers > 0 {
            http = http.workers(server.workers);
        }
        let server_handle = http.listen(listener)?.run();
        Ok(Self {
            port,
            host: server.host.clone(),
            server: server_handle,
        })
    }

    /// The port actually bound (useful with port 0).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://host:port`, for the start-up log line.
    pub fn url(&self) -> String {
        if self.host.contains(':') {
            format!("http://[{}]:{}", self.host, self.port)
        } else {
            format!("http://{}:{}", self.host, self.port)
        }
    }

    /// A handle to stop the server from elsewhere.
    pub fn handle(&self) -> actix_web::dev::ServerHandle {
        self.server.handle()
    }

    /// Serves until SIGTERM/SIGINT (graceful) or a stop through the handle.
    ///
    /// # Errors
    /// The server failed while running.
    pub async fn run_until_stopped(self) -> io::Result<()> {
        self.server.await
    }
}

async fn handle(
    request: HttpRequest,
    payload: web::Payload,
    gateway: web::Data<AwcGateway>,
    limits: web::Data<Limits>,
) -> HttpResponse {
    let method = request.method().as_str().to_owned();
    let headers = headers_of(&request);
    if let (Some(limit), BodySize::Sized(n)) = (limits.max_body_bytes, BodySize::from_headers(&headers)) {
        if n > limit {
            let error = FlowError::PayloadTooLarge;
            log_error(&error);
            return respond(error.reply(), &method);
        }
    }
    let client = ClientRequest {
        method: method.clone(),
        path: request.uri().path().to_owned(),
        query: request.uri().query().map(str::to_owned),
        headers,
        peer: request.peer_addr().map(|a| a.ip()),
        scheme: "http",
        body: RequestBody::new(payload.into_inner(), limits.max_body_bytes),
    };
    let handled = gateway.handle(client).await;
    report(&handled);
    respond(handled.reply, &method)
}

fn headers_of(request: &HttpRequest) -> Headers {
    let mut headers = Headers::with_capacity(request.headers().len());
    for (name, value) in request.headers() {
        headers.append(name.as_str(), value.as_bytes());
    }
    headers
}

/// Logs what the flow did that an operator should know, once per request.
/// Only codes and transport details: never a token, a cookie or a body.
fn report(handled: &Handled<ResponseBody>) {
    if let Some(error) = &handled.error {
        log_error(error);
    }
    if let Some(why) = handled.rejected_cookie {
        tracing::info!(route = handled.route.as_str(), reason = ?why, "auth cookie refused and deleted");
    }
    if let Some(login) = handled.login {
        tracing::info!(result = login.as_str(), "login");
    }
}

fn log_error(error: &FlowError) {
    let status = error.status();
    if status >= 500 {
        tracing::warn!(status, code = error.code(), detail = %error, "request failed");
    } else {
        tracing::info!(status, code = error.code(), detail = %error, "request refused");
    }
}

fn respond(reply: Reply<ResponseBody>, method: &str) -> HttpResponse {
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut builder = HttpResponse::build(status);
    for (name, value) in reply.headers.iter() {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(value),
        ) {
            builder.append_header((name, value));
        }
    }
    match reply.body {
        ReplyBody::Full(bytes) => builder.body(bytes),
        ReplyBody::Stream { body, size } => match size {
            BodySize::Sized(n) => builder.body(SizedStream::new(n, body)),
            BodySize::Stream if method != "HEAD" => builder.streaming(body),
            BodySize::Stream | BodySize::None => builder.body(NoBody::new()),
        },
    }
}
