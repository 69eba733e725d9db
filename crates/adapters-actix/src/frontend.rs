//! The web app's own pages, served on the same origin as the API so that it
//! needs no CORS: from a folder (`frontend.dir`, with a single-page-app
//! fallback to `index.html`) or the built-in demo page. Forwarding to the
//! app's own server (`frontend.url`) is the domain's `Gateway::forward`.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use actix_files::NamedFile;
use actix_web::{HttpRequest, HttpResponse};
use percent_encoding::percent_decode_str;
use tokenjar_domain::{FlowError, Pages, UpstreamBase};

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
    Page(Cow<'static, str>),
}

impl Frontend {
    /// Where its pages come from, as the domain's router needs to know.
    pub fn pages(&self) -> Pages {
        match self {
            Self::None => Pages::None,
            Self::Dir(_) => Pages::Files,
            Self::Url(_) => Pages::Forwarded,
            Self::Page(_) => Pages::BuiltIn,
        }
    }
}

/// Serves the built-in page ([`tokenjar_domain::Route::PageBuiltIn`]).
///
/// # Errors
/// [`FlowError`] for a method other than GET and HEAD, or no built-in page.
pub fn page(frontend: &Frontend, request: &HttpRequest) -> Result<HttpResponse, FlowError> {
    FlowError::read_only(&request.method().as_str().into())?;
    let Frontend::Page(html) = frontend else {
        return Err(FlowError::NotFound);
    };
    Ok(HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header(("cache-control", "no-store"))
        .body(match html {
            Cow::Borrowed(html) => actix_web::web::Bytes::from_static(html.as_bytes()),
            Cow::Owned(html) => actix_web::web::Bytes::copy_from_slice(html.as_bytes()),
        }))
}

/// Nothing at this path beside the built-in page
/// ([`tokenjar_domain::Route::PageMissing`]): a read-only route still, so
/// 405 for other methods, else 404.
///
/// # Errors
/// Always: [`FlowError::MethodNotAllowed`] or [`FlowError::NotFound`].
pub fn missing(request: &HttpRequest) -> Result<HttpResponse, FlowError> {
    FlowError::read_only(&request.method().as_str().into())?;
    Err(FlowError::NotFound)
}

/// Serves a file from the web app's folder ([`tokenjar_domain::Route::PageFile`]).
///
/// # Errors
/// [`FlowError`] for a method other than GET and HEAD, or no such file.
pub async fn file(frontend: &Frontend, request: &HttpRequest) -> Result<HttpResponse, FlowError> {
    FlowError::read_only(&request.method().as_str().into())?;
    let Frontend::Dir(dir) = frontend else {
        return Err(FlowError::NotFound);
    };
    let file = resolve(dir, request.path()).ok_or(FlowError::NotFound)?;
    let named = NamedFile::open_async(&file)
        .await
        .map_err(|_| FlowError::NotFound)?;
    Ok(named.into_response(request))
}

/// The file for a request path: the file itself, a folder's `index.html`,
/// or — for a path that looks like an app route rather than an asset (no
/// extension) — the app's `index.html`. `None` when nothing fits, the path
/// would leave the folder, or it names a hidden file or folder.
fn resolve(dir: &Path, raw_path: &str) -> Option<PathBuf> {
    let decoded = percent_decode_str(raw_path).decode_utf8().ok()?;
    let relative = decoded.trim_start_matches('/');
    if is_hidden(relative) {
        return None;
    }
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

/// Whether a path (below the folder, decoded) names a dotfile or passes
/// through a dot-folder: `.env`, `.git/config`, `assets/.DS_Store`. Build
/// folders hold such files by accident, and they are never the app's.
/// `/.well-known/` is the exception: it is meant to be served (RFC 8615).
fn is_hidden(relative: &str) -> bool {
    relative
        .split(['/', '\\'])
        .enumerate()
        .any(|(i, segment)| segment.starts_with('.') && !(i == 0 && segment == ".well-known"))
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
        std::fs::write(dir.join(".env"), "SECRET=1").unwrap();
        std::fs::create_dir_all(dir.join(".git")).unwrap();
        std::fs::write(dir.join(".git/config"), "x").unwrap();
        std::fs::create_dir_all(dir.join(".well-known")).unwrap();
        std::fs::write(dir.join(".well-known/security.txt"), "x").unwrap();
        for hidden in [
            "/.env",
            "/%2eenv",
            "/.git/config",
            "/.git/",
            "/assets/.env",
            "/.well-known/.env",
        ] {
            assert_eq!(resolve(&dir, hidden), None, "{hidden}");
        }
        assert_eq!(
            name(resolve(&dir, "/.well-known/security.txt")),
            Some(".well-known/security.txt".into())
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
