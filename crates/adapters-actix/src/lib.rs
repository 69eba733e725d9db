//! tokenjar's adapters for the actix world: the actix-web server that turns
//! HTTP requests into [`tokenjar_domain::ClientRequest`]s and replies back
//! into responses, and [`AwcUpstream`], the awc client behind the domain's
//! [`tokenjar_domain::Upstream`] port. Bodies stream both ways.

mod body;
mod clock;
mod server;
mod upstream;

pub use body::RequestBody;
pub use clock::SystemClock;
pub use server::{Application, ServerSettings};
pub use upstream::{AwcUpstream, UpstreamSettings};
