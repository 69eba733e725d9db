//! The demo of `tokenjar demo`: the domain's [`DemoApi`] served over HTTP on
//! an ephemeral loopback port, and the demo page tokenjar serves at `/`.

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

async fn answer(request: HttpRequest, body: web::Bytes, api: web::Data<DemoApi>) -> HttpResponse {
    let token = request
        .headers()
        .get(DemoApi::TOKEN_HEADER)
        .and_then(|v| v.to_str().ok());
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
