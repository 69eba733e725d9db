//! The web app's own pages, served on the same origin as the API so that it
//! needs no CORS: forwarded to the app's server (`frontend.url`, streamed like
//! the API, never with cookies), served from a folder (`frontend.dir`, with a
//! single-page-app fallback to `index.html`), or the built-in demo page.

use std::path::{Path, PathBuf};

use actix_files::NamedFile;
use actix_web::{HttpRequest, HttpResponse};
use percent_encoding::percent_decode_str;
use tokenjar_domain::Upstream as _;
use tokenjar_domain::{
    plan, BodySize, FlowError, Headers, Reply, ReplyBody, Rules, UpstreamBase, UpstreamRequest,
};

use crate::body::RequestBody;
use crate::upstream::{AwcUpstream, ResponseBody};

/// Where non-API pages come from.
#[derive(Clone, Debug, Default)]
pub enum Frontend {
    /// Nowhere: 404.
    #[default]
    None,
    /// Static files from this folder.
    Dir(PathBuf),
    /// The web app's own server.
    Url(UpstreamBase),
    /// One built-in HTML page at `/` (the demo).
    Page(&'static str),
}

/// What the frontend answers: a response made here, or a reply to stream.
pub enum Answer {
    /// Ready to send.
    Response(HttpResponse),
    /// The app server's answer, to go through the usual reply path.
    Reply(Reply<ResponseBody>),
}

/// Serves one non-API request.
///
/// # Errors
/// [`FlowError`] for a path with nothing behind it, a wrong method, or an
/// app server that cannot be reached.
pub async fn serve(
    frontend: &Frontend,
    request: &HttpRequest,
    headers: Headers,
    body: RequestBody,
    upstream: &AwcUpstream,
    rules: &Rules,
) -> Result<Answer, FlowError> {
    let cookie_name = rules.cookies.name();
    let method = request.method().as_str();
    match frontend {
        Frontend::None => Err(FlowError::NotFound),
        Frontend::Page(html) => {
            read_only(method)?;
            match request.path() {
                "/" | "/index.html" => Ok(Answer::Response(
                    HttpResponse::Ok()
                        .content_type("text/html; charset=utf-8")
                        .insert_header(("cache-control", "no-store"))
                        .body(*html),
                )),
                _ => Err(FlowError::NotFound),
            }
        }
        Frontend::Dir(dir) => {
            read_only(method)?;
            let file = resolve(dir, request.path()).ok_or(FlowError::NotFound)?;
            let named = NamedFile::open_async(&file)
                .await
                .map_err(|_| FlowError::NotFound)?;
            Ok(Answer::Response(named.into_response(request)))
        }
        Frontend::Url(base) => {
            let body_size = BodySize::from_headers(&headers);
            // The request id is already among the headers and goes along.
            let mut forwarded = plan::request_headers(headers, request.peer_addr().map(|a| a.ip()), "http");
            // The web app gets no token, and no client-made one either: an
            // app server that calls the API itself must not be handed a
            // forged token as if tokenjar had vouched for it.
            rules.token.apply(&mut forwarded, None);
            let outgoing = UpstreamRequest {
                method: method.to_owned(),
                url: base.url(request.path(), request.uri().query()),
                body_size,
                headers: forwarded,
                body,
            };
            let response = upstream.send(outgoing).await?;
            Ok(Answer::Reply(Reply {
                status: response.status,
                headers: plan::response_headers(response.headers, cookie_name),
                body: ReplyBody::Stream {
                    body: response.body,
                    size: response.body_size,
                },
            }))
        }
    }
}

fn read_only(method: &str) -> Result<(), FlowError> {
    if matches!(method, "GET" | "HEAD") {
        Ok(())
    } else {
        Err(FlowError::MethodNotAllowed { allow: "GET, HEAD" })
    }
}

/// The file for a request path: the file itself, a folder's `index.html`,
/// or — for a path that looks like an app route rather than an asset (no
/// extension) — the app's `index.html`. `None` when nothing fits or the
/// path would leave the folder.
fn resolve(dir: &Path, raw_path: &str) -> Option<PathBuf> {
    let decoded = percent_decode_str(raw_path).decode_utf8().ok()?;
    let relative = decoded.trim_start_matches('/');
    let root = dir.canonicalize().ok()?;
    let mut candidate = root.join(relative);
    if candidate.is_dir() {
        candidate = candidate.join("index.html");
    }
    if let Ok(found) = candidate.canonicalize() {
        // Symlinks must not lead out of the folder either.
        return (found.starts_with(&root) && found.is_file()).then_some(found);
    }
    let last = relative.rsplit('/').next().unwrap_or_default();
    if last.contains('.') {
        return None;
    }
    let index = root.join("index.html");
    index.is_file().then_some(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_index_and_app_routes_resolve_inside_the_folder() {
        let dir = std::env::temp_dir().join(format!("tokenjar-frontend-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("assets")).unwrap();
        std::fs::write(dir.join("index.html"), "<h1>app</h1>").unwrap();
        std::fs::write(dir.join("assets/app.js"), "1").unwrap();
        let root = dir.canonicalize().unwrap();
        let name = |p: Option<PathBuf>| p.map(|p| p.strip_prefix(&root).unwrap().display().to_string());
        assert_eq!(name(resolve(&dir, "/")), Some("index.html".into()));
        assert_eq!(
            name(resolve(&dir, "/assets/app.js")),
            Some("assets/app.js".into())
        );
        assert_eq!(
            name(resolve(&dir, "/assets/%61pp.js")),
            Some("assets/app.js".into())
        );
        assert_eq!(name(resolve(&dir, "/users/7")), Some("index.html".into()));
        assert_eq!(resolve(&dir, "/assets/missing.js"), None);
        assert_eq!(resolve(&dir, "/../../etc/passwd"), None);
        assert_eq!(resolve(&dir, "/%ff"), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
