//! Header lists between actix's `HeaderMap` and the domain's `Headers`, in
//! both directions, for the server's requests and replies and the upstream
//! client's requests and responses alike.

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use bytes::Bytes;
use tokenjar_domain::Headers;

/// The domain's copy of a parsed header map.
pub(crate) fn to_domain(map: &HeaderMap) -> Headers {
    pairs_to_domain(map.len(), map)
}

/// The domain's copy of `len` header pairs: actix's map, or the `http`
/// crate's of an HTTP/2 answer (the same name and value types).
pub(crate) fn pairs_to_domain<'a>(
    len: usize,
    pairs: impl IntoIterator<Item = (&'a HeaderName, &'a HeaderValue)>,
) -> Headers {
    let mut headers = Headers::with_capacity(len);
    for (name, value) in pairs {
        headers.append(name.as_str(), value.as_bytes());
    }
    headers
}

/// The domain's headers as actix pairs. They came from a parsed message or
/// from the domain's own checked values (a token is header-safe before it
/// can be issued); one that still fails is dropped rather than sent
/// malformed. Values keep their buffers (no copy): this runs twice on every
/// proxied request.
pub(crate) fn to_actix(headers: Headers) -> impl Iterator<Item = (HeaderName, HeaderValue)> {
    headers.into_iter().filter_map(|(name, value)| {
        Some((
            HeaderName::from_bytes(name.as_bytes()).ok()?,
            HeaderValue::from_maybe_shared(Bytes::from(value)).ok()?,
        ))
    })
}
