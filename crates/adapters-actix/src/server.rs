//! The actix-web server: one handler for every path. The domain's router
//! says where each request goes; the handler matches on that [`Route`]:
//! the operator endpoints and the web app's files are answered here,
//! everything else becomes a domain [`ClientRequest`] for the [`Gateway`],
//! whose [`Reply`] is streamed back, or, for a WebSocket handshake, whose
//! plan the relay ([`crate::websocket`]) carries out. A thin middleware
//! counts each request and returns its request id.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::body::{None as NoBody, SizedStream};
use actix_web::dev::{Server, Service as _};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::{KeepAlive, Method, StatusCode, Version};
use actix_web::rt::signal::unix::{signal, SignalKind};
use actix_web::{web, App, HttpMessage, HttpRequest, HttpResponse, HttpServer};
use tokenjar_domain::{
    request_id, BodySize, ClientRequest, FlowError, Gateway, Handled, Listener, NoStore, Op, Reply,
    ReplyBody, Route, RouteClass, Rules, SessionStore,
};
use tokio::sync::watch;
use tracing_actix_web::TracingLogger;

use crate::body::RequestBody;
use crate::clock::SystemClock;
use crate::frontend::{self, Frontend};
use crate::headers;
use crate::metrics::Metrics;
use crate::ops::{self, OpsSettings, Readiness};
use crate::random::OsRandom;
use crate::telemetry::{ChosenRequestId, RequestSpan};
use crate::tls::{TlsListener, TlsSettings};
use crate::upstream::{AwcUpstream, ResponseBody, UpstreamSettings};
use crate::websocket::{self, Handshake, Sockets, WebSocketSettings};

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
    /// Open connections per worker; 0 keeps actix-web's default (25,000).
    pub max_connections: usize,
    /// Time a client has to send a complete request head (slowloris guard).
    pub client_request_timeout: Duration,
    /// Idle keep-alive time; zero disables keep-alive.
    pub keep_alive: Duration,
    /// Longest pause between two reads of a request body.
    pub client_body_timeout: Duration,
    /// Listen with TLS, with this certificate; plain HTTP without.
    pub tls: Option<TlsSettings>,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 8080,
            workers: 0,
            shutdown_timeout: Duration::from_secs(30),
            max_body_bytes: 0,
            max_connections: 0,
            client_request_timeout: Duration::from_secs(5),
            keep_alive: Duration::from_secs(5),
            client_body_timeout: Duration::from_secs(10),
            tls: None,
        }
    }
}

/// Everything the adapter needs besides the domain's rules.
#[derive(Clone, Debug, Default)]
pub struct AppSettings {
    /// `server.*`
    pub server: ServerSettings,
    /// `upstream.*`
    pub upstream: UpstreamSettings,
    /// `ops.*`
    pub ops: OpsSettings,
    /// `frontend.*` (or the demo page).
    pub frontend: Frontend,
    /// `websocket.*`
    pub websocket: WebSocketSettings,
}

type AwcGateway<S> = Gateway<AwcUpstream, SystemClock, OsRandom, S>;

/// Most bytes of a back-channel logout request read: a form of one signed
/// token, a few kilobytes at most.
const BACKCHANNEL_BODY_LIMIT: usize = 64 * 1024;

/// What every worker shares.
struct Shared {
    metrics: Metrics,
    ops: OpsSettings,
    /// The address the operator listener is bound to, if there is one.
    ops_addr: Option<SocketAddr>,
    max_body_bytes: Option<u64>,
    client_body_timeout: Duration,
    base_url: String,
    frontend: Frontend,
    sockets: Sockets,
}

/// One worker's state: its gateway (with its own awc client) and caches.
struct Worker<S> {
    gateway: AwcGateway<S>,
    readiness: Readiness,
    shared: Arc<Shared>,
}

/// A bound, not yet running tokenjar server.
pub struct Application {
    port: u16,
    host: String,
    ops_addr: Option<SocketAddr>,
    /// The certificate SIGHUP reloads, on a TLS listener.
    tls: Option<TlsListener>,
    /// Tells open WebSockets that tokenjar is stopping.
    stopping: Arc<watch::Sender<bool>>,
    server: Server,
    /// OIDC mode: the rules and client settings the provider's discovery
    /// runs with, from `start` until it succeeds.
    discovery: Option<(Arc<Rules>, UpstreamSettings)>,
}

impl Application {
    /// Binds the listener and prepares the workers.
    ///
    /// # Errors
    /// The listener could not be bound, or the metrics not registered.
    pub fn build(settings: &AppSettings, rules: Arc<Rules>) -> io::Result<Self> {
        Self::build_with_store(settings, rules, || NoStore)
    }

    /// [`build`](Self::build) with server-side sessions (SPEC §17): each
    /// worker's gateway keeps sessions in the store `store` makes for it
    /// (one shared memory store, or a client of the shared Redis), as the
    /// rules' `store` says.
    ///
    /// # Errors
    /// The listener could not be bound, or the metrics not registered.
    pub fn build_with_store<S, F>(settings: &AppSettings, rules: Arc<Rules>, store: F) -> io::Result<Self>
    where
        S: SessionStore + 'static,
        F: Fn() -> S + Send + Clone + 'static,
    {
        // The router learns what this server serves besides tokenjar's
        // own routes: the web app's pages, and whether the operator
        // endpoints have a listener of their own.
        let mut rules = Arc::unwrap_or_clone(rules);
        rules.routes = rules
            .routes
            .serving(settings.frontend.pages(), settings.ops.listen.is_some());
        let rules = Arc::new(rules);
        let server = &settings.server;
        let listener = TcpListener::bind((server.host.as_str(), server.port)).map_err(|e| {
            let address = host_port(&server.host, server.port);
            cannot_listen(e, &address, "server.host, server.port")
        })?;
        let port = listener.local_addr()?.port();
        let ops_listener = settings
            .ops
            .listen
            .map(|addr| {
                TcpListener::bind(addr).map_err(|e| cannot_listen(e, &addr.to_string(), "ops.listen"))
            })
            .transpose()?;
        let ops_addr = ops_listener.as_ref().map(TcpListener::local_addr).transpose()?;
        let metrics = Metrics::new().map_err(io::Error::other)?;
        let stopping = Arc::new(watch::channel(false).0);
        let sockets = Sockets::new(
            settings.websocket.clone(),
            settings.upstream.timeout,
            Arc::clone(&stopping),
            metrics.websockets_open().clone(),
        );
        let shared = Arc::new(Shared {
            metrics,
            ops: settings.ops.clone(),
            ops_addr,
            max_body_bytes: (server.max_body_bytes > 0).then_some(server.max_body_bytes),
            client_body_timeout: server.client_body_timeout,
            base_url: rules.upstream.url("", None),
            frontend: settings.frontend.clone(),
            sockets,
        });
        let upstream = settings.upstream.clone();
        let discovery = rules
            .oidc
            .is_some()
            .then(|| (Arc::clone(&rules), settings.upstream.clone()));
        let mut http = HttpServer::new(move || {
            // One client per worker: awc is not Send, and a per-worker pool
            // keeps connections warm without locking.
            let worker = Worker {
                gateway: Gateway::new(
                    Arc::clone(&rules),
                    AwcUpstream::new(&upstream),
                    SystemClock,
                    OsRandom,
                )
                .with_store(store()),
                readiness: Readiness::default(),
                shared: Arc::clone(&shared),
            };
            let counted = Arc::clone(&shared);
            App::new()
                .app_data(web::Data::new(worker))
                .default_service(web::to(handle::<S>))
                .wrap_fn(move |request, service| {
                    let started = Instant::now();
                    let shared = Arc::clone(&counted);
                    let response = service.call(request);
                    async move {
                        let mut response = response.await?;
                        let (route, id) = {
                            let extensions = response.request().extensions();
                            (
                                extensions.get::<RouteClass>().copied(),
                                extensions
                                    .get::<ChosenRequestId>()
                                    .and_then(|id| HeaderValue::from_str(&id.0).ok()),
                            )
                        };
                        if let Some(value) = id {
                            response
                                .headers_mut()
                                .insert(HeaderName::from_static(request_id::HEADER), value);
                        }
                        let route = route.unwrap_or(RouteClass::Frontend);
                        shared.metrics.observe_request(
                            route.as_str(),
                            response.status().as_str(),
                            started.elapsed().as_secs_f64(),
                        );
                        Ok(response)
                    }
                })
                .wrap(TracingLogger::<RequestSpan>::new())
        })
        .shutdown_timeout(server.shutdown_timeout.as_secs())
        // actix-web treats SIGINT as a forced stop; tokenjar stops gracefully
        // on both SIGTERM and SIGINT, so it listens for them itself.
        .disable_signals()
        .client_request_timeout(server.client_request_timeout)
        .keep_alive(if server.keep_alive.is_zero() {
            KeepAlive::Disabled
        } else {
            KeepAlive::Timeout(server.keep_alive)
        });
        if server.workers > 0 {
            http = http.workers(server.workers);
        }
        if server.max_connections > 0 {
            http = http.max_connections(server.max_connections);
        }
        let tls = server.tls.as_ref().map(TlsListener::new);
        http = match &tls {
            Some(tls) => http.listen_rustls_0_23(listener, tls.server_config()?)?,
            None => http.listen(listener)?,
        };
        if let Some(ops_listener) = ops_listener {
            http = http.listen(ops_listener)?;
        }
        Ok(Self {
            port,
            host: server.host.clone(),
            ops_addr,
            tls,
            stopping,
            server: http.run(),
            discovery,
        })
    }

    /// The port actually bound (useful with port 0).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://host:port`, or `https://` on a TLS listener, for the
    /// start-up log line.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", host_port(&self.host, self.port))
    }

    /// `http://host:port` of the operator listener, when there is one.
    pub fn ops_url(&self) -> Option<String> {
        self.ops_addr.map(|addr| format!("http://{addr}"))
    }

    /// A handle to stop the server from elsewhere.
    pub fn handle(&self) -> actix_web::dev::ServerHandle {
        self.server.handle()
    }

    /// Serves until SIGTERM or SIGINT, or a stop through the handle. On a
    /// signal it stops accepting and lets in-flight requests finish for up to
    /// `server.shutdown_timeout`; open WebSockets are closed with 1001 on
    /// both sides (they would otherwise hold the stop for its whole
    /// timeout). On a TLS listener, SIGHUP re-reads the certificate and key
    /// for new connections; without one it changes nothing.
    ///
    /// # Errors
    /// The server failed while running, or signals could not be watched.
    pub async fn run_until_stopped(self) -> io::Result<()> {
        self.start()?.await
    }

    /// What [`run_until_stopped`](Self::run_until_stopped) does, in two
    /// steps: the signals are watched from this call on, so that a caller
    /// can announce the address only once a signal sent on seeing it is
    /// handled; the server runs when the returned future is awaited.
    ///
    /// # Errors
    /// Signals could not be watched.
    pub fn start(self) -> io::Result<impl std::future::Future<Output = io::Result<()>>> {
        let handle = self.server.handle();
        let mut terminate = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        let stopping = self.stopping;
        actix_web::rt::spawn(async move {
            let name = first_signal(terminate.recv(), interrupt.recv()).await;
            tracing::info!("{name} received; finishing in-flight requests, then stopping");
            stopping.send_replace(true);
            handle.stop(true).await;
        });
        // Caught with or without TLS: `systemctl reload` or a certificate
        // hook sends it, and its default meaning (stop at once) would drop
        // every request in flight.
        let mut hangup = signal(SignalKind::hangup())?;
        let tls = self.tls;
        actix_web::rt::spawn(async move {
            while hangup.recv().await.is_some() {
                match &tls {
                    Some(tls) => {
                        tracing::info!("SIGHUP received; reloading the TLS certificate");
                        tls.reload();
                    }
                    None => tracing::info!("SIGHUP received; nothing to reload (no TLS listener)"),
                }
            }
        });
        if let Some((rules, upstream)) = self.discovery {
            actix_web::rt::spawn(discover(rules, upstream));
        }
        Ok(self.server)
    }
}

/// Reads the OpenID provider's discovery document and keys until it
/// succeeds (SPEC §16): a provider down at start is waited for, not a
/// crash. Until then logins answer `provider_unavailable` and `/readyz`
/// 503. Retries back off from one second to thirty.
async fn discover(rules: Arc<Rules>, upstream: UpstreamSettings) {
    let gateway = Gateway::new(rules, AwcUpstream::new(&upstream), SystemClock, OsRandom);
    let mut pause = Duration::from_secs(1);
    loop {
        match gateway.discover().await {
            Ok(()) => {
                tracing::info!("OpenID provider discovered");
                return;
            }
            Err(why) => {
                tracing::warn!(detail = %why, retry_in_s = pause.as_secs(), "OpenID provider discovery failed");
            }
        }
        actix_rt::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(30));
    }
}

async fn handle<S: SessionStore>(
    request: HttpRequest,
    payload: web::Payload,
    worker: web::Data<Worker<S>>,
) -> HttpResponse {
    let shared = &worker.shared;
    let head = request.method() == Method::HEAD;
    let listener = if shared.ops_addr == Some(request.app_config().local_addr()) {
        Listener::Ops
    } else {
        Listener::Main
    };
    let route = worker.gateway.route(listener, request.uri().path());
    request
        .extensions_mut()
        .insert(route.as_ref().map_or(RouteClass::Api, Route::class));

    // Where the request goes is the router's answer; each arm only serves it.
    let handled = match route {
        Err(error) => worker.gateway.refuse(error),
        Ok(Route::Ops(op)) => {
            let provider_ready = worker
                .gateway
                .rules()
                .oidc
                .as_ref()
                .is_none_or(|oidc| oidc.discovered().is_some());
            // With a session store, ready only while it answers (SPEC §17).
            let store_error = match (&worker.gateway.rules().store, op) {
                (Some(_), Op::Ready) => worker.gateway.store().ping().await.err().map(FlowError::from),
                _ => None,
            };
            let ready = ops::Ready {
                upstream: worker.gateway.upstream(),
                readiness: &worker.readiness,
                base_url: &shared.base_url,
                provider_ready,
                store_error,
            };
            let answer = ops::answer(op, &request, ready, &shared.metrics, &shared.ops).await;
            return answer.unwrap_or_else(|error| fail(&error, &shared.metrics, head, &request));
        }
        Ok(Route::OpsNotFound) => return fail(&FlowError::NotFound, &shared.metrics, head, &request),
        Ok(Route::PageFile) => {
            let page = frontend::file(&shared.frontend, &request);
            return served(&request, payload, &worker, page).await;
        }
        Ok(Route::PageBuiltIn) => {
            let page = async { frontend::page(&shared.frontend, &request) };
            return served(&request, payload, &worker, page).await;
        }
        Ok(Route::PageMissing) => {
            let page = async { frontend::missing(&request) };
            return served(&request, payload, &worker, page).await;
        }
        // The provider's back-channel logout needs its small form body
        // whole, read here; without a session store the domain answers
        // 404 whatever the body.
        Ok(Route::BackchannelLogout) => {
            let method = request.method().as_str().into();
            let body = payload.to_bytes_limited(BACKCHANNEL_BODY_LIMIT);
            match actix_rt::time::timeout(shared.client_body_timeout, body).await {
                Ok(Ok(Ok(body))) => worker.gateway.backchannel_logout(&method, &body).await,
                Ok(Ok(Err(_))) => return fail(&FlowError::PayloadTooLarge, &shared.metrics, head, &request),
                Ok(Err(_)) | Err(_) => {
                    let error = FlowError::BadRequest("The request body could not be read.");
                    return fail(&error, &shared.metrics, head, &request);
                }
            }
        }
        Ok(Route::PageForwarded) => match (client_request(&request, payload, shared), &shared.frontend) {
            (Ok(client), Frontend::Url(base)) => worker.gateway.forward(base, client).await,
            (Ok(client), _) => worker.gateway.dispatch(Route::Outside, client).await,
            (Err(error), _) => return fail(&error, &shared.metrics, head, &request),
        },
        Ok(route) => match client_head(&request, shared) {
            Ok(client) if worker.gateway.is_websocket(&route, &client) => {
                return websocket(&route, client, &request, payload, &worker).await;
            }
            Ok(client) => {
                worker
                    .gateway
                    .dispatch(route, with_body(client, payload, shared))
                    .await
            }
            Err(error) => return fail(&error, &shared.metrics, head, &request),
        },
    };
    shared.metrics.record(&handled);
    report(&handled, &request);
    respond(handled.reply, head)
}

/// A WebSocket handshake: the domain's plan (or refusal), then the relay.
/// The handshake is counted and logged as a request (101 when it
/// switched); the socket's life after it is the relay's.
async fn websocket(
    route: &Route,
    client: ClientRequest<()>,
    request: &HttpRequest,
    payload: web::Payload,
    worker: &Worker<impl SessionStore>,
) -> HttpResponse {
    let shared = &worker.shared;
    let plan = match worker.gateway.websocket(route, client).await {
        Ok(plan) => plan,
        Err(handled) => {
            shared.metrics.record(&handled);
            report(&handled, request);
            return respond(handled.reply, false);
        }
    };
    shared.metrics.record_websocket(&plan);
    if let Some(why) = plan.rejected_cookie {
        let request_id = request_id_of(request);
        tracing::info!(request_id, route = "api", reason = ?why, "auth cookie refused and deleted");
    }
    if let Some(refresh) = plan.refresh {
        let request_id = request_id_of(request);
        tracing::info!(request_id, result = refresh.as_str(), "token refresh");
    }
    // A refreshed session's cookies must reach the browser however the
    // handshake ends: the old cookie's refresh token is spent.
    let cookies = plan.reply_headers.clone();
    let mut response =
        match websocket::open(request, payload, plan, worker.gateway.upstream(), &shared.sockets).await {
            Handshake::Open(response) => return response,
            Handshake::Refused(status) => {
                HttpResponse::build(StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY)).finish()
            }
            Handshake::Failed(error) => fail(&error, &shared.metrics, false, request),
        };
    for (name, value) in headers::to_actix(cookies) {
        response.headers_mut().append(name, value);
    }
    response
}

/// The domain's view of the request: its body a stream, refused at once
/// when it announces more than `server.max_body_bytes`.
fn client_request(
    request: &HttpRequest,
    payload: web::Payload,
    shared: &Shared,
) -> Result<ClientRequest<RequestBody>, FlowError> {
    client_head(request, shared).map(|head| with_body(head, payload, shared))
}

/// The request with its body as a stream counted against
/// `server.max_body_bytes`.
fn with_body(head: ClientRequest<()>, payload: web::Payload, shared: &Shared) -> ClientRequest<RequestBody> {
    head.with_body(RequestBody::new(
        payload.into_inner(),
        shared.max_body_bytes,
        shared.client_body_timeout,
    ))
}

/// The domain's view of the request without its body, refused at once
/// when it announces more than `server.max_body_bytes`.
fn client_head(request: &HttpRequest, shared: &Shared) -> Result<ClientRequest<()>, FlowError> {
    let mut headers = headers::to_domain(request.headers());
    // An HTTP/2 request names its host in `:authority`, not in a `Host`
    // header (RFC 9113 §8.3.1); the rules (CSRF's own origin, the public
    // origin's host, X-Forwarded-Host) read `Host`, as an HTTP/1.1 request
    // carries it.
    if request.version() == Version::HTTP_2 && !headers.contains("host") {
        if let Some(authority) = request.uri().authority() {
            headers.append("host", authority.as_str());
        }
    }
    if let Some(limit) = shared.max_body_bytes {
        if matches!(BodySize::from_headers(&headers), BodySize::Sized(n) if n > limit) {
            return Err(FlowError::PayloadTooLarge);
        }
    }
    if let Some(id) = request.extensions().get::<ChosenRequestId>() {
        headers.set(request_id::HEADER, id.0.as_bytes());
    }
    Ok(ClientRequest {
        method: request.method().as_str().into(),
        path: request.uri().path().to_owned(),
        query: request.uri().query().map(str::to_owned),
        headers,
        peer: request.peer_addr().map(|a| a.ip()),
        // actix-web marks the TLS listener's requests secure; the ops
        // listener stays plain.
        scheme: if request.app_config().secure() {
            "https"
        } else {
            "http"
        },
        body: (),
    })
}

/// A page served from this process: the same admission rules as every
/// tokenjar route (method, host, CSRF), then the file or the built-in page.
async fn served(
    request: &HttpRequest,
    payload: web::Payload,
    worker: &Worker<impl SessionStore>,
    page: impl std::future::Future<Output = Result<HttpResponse, FlowError>>,
) -> HttpResponse {
    let shared = &worker.shared;
    let result = match client_request(request, payload, shared) {
        Err(error) => Err(error),
        Ok(client) => match worker.gateway.admit(&client) {
            Err(error) => Err(error),
            Ok(()) => page.await,
        },
    };
    result.unwrap_or_else(|error| fail(&error, &shared.metrics, request.method() == Method::HEAD, request))
}

/// An error the adapter answers by itself: counted, logged, replied.
fn fail(error: &FlowError, metrics: &Metrics, head: bool, request: &HttpRequest) -> HttpResponse {
    metrics.record_error(error);
    log_error(error, &request_id_of(request));
    respond(error.reply(), head)
}

/// The request's id, for log lines that must carry it even when the
/// request span is filtered out (`RUST_LOG=warn` disables the info span).
fn request_id_of(request: &HttpRequest) -> String {
    request
        .extensions()
        .get::<ChosenRequestId>()
        .map(|id| id.0.clone())
        .unwrap_or_default()
}

/// Logs what the flow did that an operator should know, once per request.
/// Only codes and transport details: never a token, a cookie or a body.
fn report(handled: &Handled<ResponseBody>, request: &HttpRequest) {
    if handled.error.is_none()
        && handled.rejected_cookie.is_none()
        && !handled.conflicting_cookies
        && handled.login.is_none()
        && handled.refresh.is_none()
    {
        return;
    }
    let request_id = request_id_of(request);
    let request_id = request_id.as_str();
    if let Some(error) = &handled.error {
        log_error(error, request_id);
    }
    if let Some(why) = handled.rejected_cookie {
        tracing::info!(request_id, route = handled.route.as_str(), reason = ?why, "auth cookie refused and deleted");
    }
    if handled.conflicting_cookies {
        tracing::info!(
            request_id,
            route = handled.route.as_str(),
            "auth cookies open to different sessions: none used, none deleted"
        );
    }
    if let Some(login) = handled.login {
        tracing::info!(request_id, result = login.as_str(), "login");
    }
    if let Some(refresh) = handled.refresh {
        tracing::info!(request_id, result = refresh.as_str(), "token refresh");
    }
}

fn log_error(error: &FlowError, request_id: &str) {
    let status = error.status();
    if status >= 500 {
        tracing::warn!(request_id, status, code = error.code(), detail = %error, "request failed");
    } else {
        tracing::info!(request_id, status, code = error.code(), detail = %error, "request refused");
    }
}

/// The actix response for a reply; `head` for a HEAD request, whose answer
/// has no body.
fn respond(reply: Reply<ResponseBody>, head: bool) -> HttpResponse {
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut builder = HttpResponse::build(status);
    for pair in headers::to_actix(reply.headers) {
        builder.append_header(pair);
    }
    match reply.body {
        ReplyBody::Full(bytes) => builder.body(bytes),
        ReplyBody::Stream { body, size } => match size {
            BodySize::Sized(n) => builder.body(SizedStream::new(n, body)),
            BodySize::Stream if !head => builder.streaming(body),
            BodySize::Stream | BodySize::None => builder.body(NoBody::new()),
        },
    }
}

/// `host:port`, the host bracketed when it is an IPv6 address.
fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// A bind failure that names the address and the settings that choose it:
/// "Address already in use" alone does not say which port, or how to move.
fn cannot_listen(error: io::Error, address: &str, settings: &str) -> io::Error {
    io::Error::new(
        error.kind(),
        format!("cannot listen on {address} ({settings}): {error}"),
    )
}

/// Waits for whichever signal comes first and names it.
async fn first_signal(
    terminate: impl std::future::Future<Output = Option<()>>,
    interrupt: impl std::future::Future<Output = Option<()>>,
) -> &'static str {
    let terminate = std::pin::pin!(terminate);
    let interrupt = std::pin::pin!(interrupt);
    let mut both = (terminate, interrupt);
    std::future::poll_fn(move |cx| {
        if both.0.as_mut().poll(cx).is_ready() {
            return std::task::Poll::Ready("SIGTERM");
        }
        if both.1.as_mut().poll(cx).is_ready() {
            return std::task::Poll::Ready("SIGINT");
        }
        std::task::Poll::Pending
    })
    .await
}
