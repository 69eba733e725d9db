//! tokenjar's adapters for the actix world: the actix-web server that turns
//! HTTP requests into [`tokenjar_domain::ClientRequest`]s and replies back
//! into responses, and [`AwcUpstream`], the awc client (and the h2 one, for
//! an https API that offers HTTP/2) behind the domain's
//! [`tokenjar_domain::Upstream`] port. Bodies stream both ways; WebSockets
//! are relayed message by message.

mod body;
mod clock;
mod demo;
mod frontend;
mod guard;
mod headers;
mod http2;
mod metrics;
mod ops;
mod outbound;
mod random;
mod server;
mod telemetry;
mod tls;
mod upstream;
mod websocket;

pub use body::RequestBody;
pub use clock::SystemClock;
pub use demo::{demo_page, DemoApiServer, DEMO_PAGE};
pub use frontend::Frontend;
pub use metrics::Metrics;
pub use ops::OpsSettings;
pub use outbound::{OutboundTls, OutboundTlsError, OutboundTlsFiles, OutboundTlsKey};
pub use random::OsRandom;
pub use server::{AppSettings, Application, ServerSettings};
pub use tls::{TlsFile, TlsFileError, TlsFiles, TlsListener, TlsSettings};
pub use upstream::{AwcUpstream, UpstreamSettings};
pub use websocket::WebSocketSettings;
