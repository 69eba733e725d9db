//! The demo of `tokenjar demo`: the domain's [`DemoApi`] served over HTTP on
//! an ephemeral loopback port, with one WebSocket (`/hello`, reached as
//! `/api/hello`) that greets the token's user, and the demo page tokenjar
//! serves at `/`. In OIDC mode the demo API takes an OpenID Provider's access
//! tokens instead, checking each at the provider's userinfo endpoint.

use std::io;
use std::net::TcpListener;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use tokenjar_domain::demo::DemoApi;
use tokenjar_domain::Clock as _;

use crate::clock::SystemClock;
use crate::frontend::Frontend;
use crate::random::OsRandom;

/// The demo web page: log in, call the API, show the session, log out, and
/// show what JavaScript can see (no token). As written it logs in with a
/// password form; [`demo_page`] switches it to the provider's login.
pub const DEMO_PAGE: &str = include_str!("../assets/demo.html");

/// The page's login mode, as written in [`DEMO_PAGE`].
const PASSWORD_MODE: &str = r#"<body data-login="password">"#;

/// How long demo tokens live.
const DEMO_TOKEN_LIFETIME_S: i64 = 3600;

/// Longest wait for the provider's discovery or userinfo answer.
const PROVIDER_TIMEOUT: Duration = Duration::from_secs(5);

/// Most bytes read of a provider answer (discovery or userinfo).
const PROVIDER_ANSWER_LIMIT: usize = 64 * 1024;

/// The demo page for `tokenjar demo`: with a password form, or, in OIDC mode
/// (`oidc`), with "Log in with your provider", the user's claims and a
/// logout that ends at the provider.
pub fn demo_page(oidc: bool) -> Frontend {
    if oidc {
        let page = DEMO_PAGE.replacen(PASSWORD_MODE, r#"<body data-login="oidc">"#, 1);
        Frontend::Page(page.into())
    } else {
        Frontend::Page(DEMO_PAGE.into())
    }
}

/// Whose tokens the demo API takes.
#[derive(Debug)]
enum Accounts {
    /// Its own: `POST /login` issues them.
    Own(DemoApi),
    /// An OpenID Provider's access tokens (the demo in OIDC mode), checked
    /// at its userinfo endpoint, as an API that trusts the provider would.
    Provider(Provider),
}

/// The provider of the demo in OIDC mode.
#[derive(Debug)]
struct Provider {
    issuer: String,
    /// The userinfo endpoint, once discovery has named it.
    userinfo: OnceLock<String>,
}

impl Provider {
    /// The user the provider says `token` belongs to: its `name`, else its
    /// `sub`, with every userinfo claim; `None` for a token it refuses or when
    /// it cannot be asked.
    async fn user(&self, token: &str) -> Option<(String, serde_json::Value)> {
        let client = awc::Client::builder()
            .disable_redirects()
            .timeout(PROVIDER_TIMEOUT)
            .finish();
        let endpoint = match self.userinfo.get() {
            Some(endpoint) => endpoint.clone(),
            None => {
                let url = format!(
                    "{}/.well-known/openid-configuration",
                    self.issuer.trim_end_matches('/')
                );
                let discovery = fetch_json(client.get(url)).await?;
                let endpoint = discovery.get("userinfo_endpoint")?.as_str()?.to_owned();
                self.userinfo.get_or_init(|| endpoint).clone()
            }
        };
        let claims = fetch_json(client.get(endpoint).bearer_auth(token)).await?;
        let name = claims
            .get("name")
            .or_else(|| claims.get("sub"))
            .and_then(serde_json::Value::as_str)?
            .to_owned();
        Some((name, claims))
    }
}

/// A provider answer's JSON, when it is a 2xx with JSON of bounded size.
async fn fetch_json(request: awc::ClientRequest) -> Option<serde_json::Value> {
    let mut answer = request.send().await.ok()?;
    if !answer.status().is_success() {
        return None;
    }
    answer
        .json::<serde_json::Value>()
        .limit(PROVIDER_ANSWER_LIMIT)
        .await
        .ok()
}

impl Accounts {
    /// The name of the user `token` belongs to, and what `GET /me` answers
    /// for it; `None` for no token or one this API does not take.
    async fn user(&self, token: Option<&str>) -> Option<(String, serde_json::Value)> {
        match self {
            Self::Own(api) => {
                let name = api.user(token)?;
                Some((name.to_owned(), serde_json::json!({ "name": name })))
            }
            Self::Provider(provider) => {
                let (name, claims) = provider.user(token?).await?;
                let me = serde_json::json!({ "name": name, "userinfo": claims });
                Some((name, me))
            }
        }
    }
}

/// The demo API, bound to `127.0.0.1` on a free port.
pub struct DemoApiServer {
    port: u16,
    server: Server,
}

impl DemoApiServer {
    /// Binds the demo API with its own login. Run it with
    /// [`DemoApiServer::run`].
    ///
    /// # Errors
    /// The loopback listener could not be bound.
    pub fn bind() -> io::Result<Self> {
        let api = DemoApi::new(DEMO_TOKEN_LIFETIME_S, &OsRandom).map_err(io::Error::other)?;
        Self::serve(Accounts::Own(api))
    }

    /// Binds the demo API for OIDC mode: it takes the access tokens of the
    /// provider at `issuer`, asking its userinfo endpoint whose they are.
    ///
    /// # Errors
    /// The loopback listener could not be bound.
    pub fn bind_for_provider(issuer: &str) -> io::Result<Self> {
        Self::serve(Accounts::Provider(Provider {
            issuer: issuer.to_owned(),
            userinfo: OnceLock::new(),
        }))
    }

    fn serve(accounts: Accounts) -> io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0))?;
        let port = listener.local_addr()?.port();
        let accounts = Arc::new(accounts);
        let server = HttpServer::new(move || {
            App::new()
                .app_data(web::Data::from(Arc::clone(&accounts)))
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

/// The demo's WebSocket: for a token it takes, a greeting naming the
/// user, then an echo of every text until the close; 401 otherwise.
async fn hello(request: HttpRequest, body: web::Payload, accounts: web::Data<Accounts>) -> HttpResponse {
    let Some((user, _)) = accounts.user(token_of(&request)).await else {
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

async fn answer(request: HttpRequest, body: web::Bytes, accounts: web::Data<Accounts>) -> HttpResponse {
    let token = token_of(&request);
    let (status, json) = match accounts.as_ref() {
        Accounts::Own(api) => api.answer(
            request.method().as_str(),
            request.uri().path(),
            token,
            &body,
            SystemClock.now(),
        ),
        // The provider's users log in at the provider: only `/me` is here.
        Accounts::Provider(_) => match (request.method().as_str(), request.uri().path()) {
            ("GET", "/me") => match accounts.user(token).await {
                Some((_, me)) => (200, me),
                None => (401, serde_json::json!({ "error": "unauthorized" })),
            },
            _ => (404, serde_json::json!({ "error": "not found" })),
        },
    };
    let status = actix_web::http::StatusCode::from_u16(status).unwrap_or(actix_web::http::StatusCode::OK);
    HttpResponse::build(status).json(json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oidc_page_switches_the_login_mode_and_nothing_else() {
        // The page as written is in password mode; a changed <body> tag
        // would leave the OIDC demo with a password form.
        assert_eq!(DEMO_PAGE.matches(PASSWORD_MODE).count(), 1);
        let Frontend::Page(password) = demo_page(false) else {
            panic!("the demo serves a built-in page");
        };
        assert_eq!(password, DEMO_PAGE);
        let Frontend::Page(oidc) = demo_page(true) else {
            panic!("the demo serves a built-in page");
        };
        assert!(oidc.contains(r#"<body data-login="oidc">"#));
        assert!(!oidc.contains(PASSWORD_MODE));
        assert_eq!(oidc.len(), DEMO_PAGE.len() - "password".len() + "oidc".len());
    }
}
