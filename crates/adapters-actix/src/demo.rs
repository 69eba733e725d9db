//! The demo of `tokenjar demo`: the domain's [`DemoApi`] served over HTTP on
//! an ephemeral loopback port, with one WebSocket (`/hello`, reached as
//! `/api/hello`) that greets the token's user, and the demo page tokenjar
//! serves at `/`.

use std::io;
use std::net::TcpListener;
use std::sync::Arc;

use actix_web::dev::Server;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use tokenjar_domain::demo::DemoApi;
use tokenjar_domain::Clock as _;

use crate::clock::SystemClock;
use crate::random::OsRandom;

/// The demo web page: log in, call the API, show the session, log out, and
/// show what JavaScript can see (no token).
pub const DEMO_PAGE: &str = include_str!("../assets/demo.html");

/// How long demo tokens live.
const DEMO_TOKEN_LIFETIME_S: i64 = 3600;

/// The demo API, bound to `127.0.0.1` on a free port.
pub struct DemoApiServer {
    port: u16,
    server: Server,
}

impl DemoApiServer {
    /// Binds the demo API. Run it with [`DemoApiServer::run`].
    ///
    /// # Errors
    /// The loopback listener could not be bound.
    pub fn bind() -> io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0))?;
        let port = listener.local_addr()?.port();
        let api = DemoApi::new(DEMO_TOKEN_LIFETIME_S, &OsRandom).map_err(io::Error::other)?;
        let api = Arc::new(api);
        let server = HttpServer::new(move || {
            App::new()
                .app_data(web::Data::from(Arc::clone(&api)))
                .app_data(web::PayloadConfig::new(64 * 1024))
                .route("/hello", web::get().to(hello))
                .default_service(web::to(answer))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)?
        .run();
        Ok(Self { port, server })
    }

    /// The demo API's base URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Serves until stopped.
    ///
    /// # Errors
    /// The server failed.
    pub async fn run(self) -> io::Result<()> {
        self.server.await
    }

    /// A handle to stop it.
    pub fn handle(&self) -> actix_web::dev::ServerHandle {
        self.server.handle()
    }
}

/// The `auth-token` header, as the demo API reads it.
fn token_of(request: &HttpRequest) -> Option<&str> {
    request
        .headers()
        .get(DemoApi::TOKEN_HEADER)
        .and_then(|v| v.to_str().ok())
}

/// The demo's WebSocket: for a token it issued, a greeting naming the
/// user, then an echo of every text until the close; 401 otherwise.
async fn hello(request: HttpRequest, body: web::Payload, api: web::Data<DemoApi>) -> HttpResponse {
    let Some(user) = api.user(token_of(&request)) else {
        return HttpResponse::Unauthorized().json(serde_json::json!({ "error": "unauthorized" }));
    };
    let (response, mut session, mut messages) = match actix_ws::handle(&request, body) {
        Ok(switched) => switched,
        Err(e) => return HttpResponse::BadRequest().body(e.to_string()),
    };
    actix_web::rt::spawn(async move {
        let greeting = serde_json::json!({ "hello": user }).to_string();
        if session.text(greeting).await.is_err() {
            return;
        }
        while let Some(Ok(message)) = messages.recv().await {
            let sent = match message {
                actix_ws::Message::Text(text) => session.text(text).await,
                actix_ws::Message::Ping(bytes) => session.pong(&bytes).await,
                actix_ws::Message::Close(reason) => {
                    let _ = session.close(reason).await;
                    return;
                }
                _ => Ok(()),
            };
            if sent.is_err() {
                return;
            }
        }
    });
    response
}

async fn answer(request: HttpRequest, body: web::Bytes, api: web::Data<DemoApi>) -> HttpResponse {
    let token = token_of(&request);
    let (status, json) = api.answer(
        request.method().as_str(),
        request.uri().path(),
        token,
        &body,
        SystemClock.now(),
    );
    let status = actix_web::http::StatusCode::from_u16(status).unwrap_or(actix_web::http::StatusCode::OK);
    HttpResponse::build(status).json(json)
}
