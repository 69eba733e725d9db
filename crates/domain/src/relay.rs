//! Which headers cross tokenjar, each way: what a browser request's headers
//! become on their way to the API (hop headers, cookies and claims dropped,
//! `X-Forwarded-*` set) and what the API's response headers become on their
//! way back (no `Set-Cookie` that would overwrite the auth cookie).

use std::net::IpAddr;

use crate::forwarding::{first_element, known_scheme, Forwarding};
use crate::headers::{strip_hop_by_hop, Headers};

/// Request headers that never go upstream besides the hop-by-hop ones:
/// `cookie` holds the sealed token and every other site cookie; `host` is
/// the API's own (the browser's goes in `x-forwarded-host`); the body
/// framing is re-derived from [`BodySize`]; `expect` is answered by the
/// server in front.
const REQUEST_DROPPED: [&str; 4] = ["cookie", "host", "content-length", "expect"];

/// Headers that speak for the hop (the client's address, the path a front
/// server matched): believed only from a trusted proxy, else dropped. An
/// API or framework behind tokenjar may act on them — IIS and Symfony take
/// `X-Original-URL`/`X-Rewrite-URL` as the request path, many apps take
/// `X-Real-IP`/`Forwarded` as the client's address.
const HOP_CLAIMS: [&str; 4] = ["forwarded", "x-real-ip", "x-original-url", "x-rewrite-url"];

/// The headers the API receives for a client request that arrived from
/// `peer` over `scheme`, minus the token (which [`crate::TokenRules::apply`]
/// adds). Takes the client's headers by value: they are edited in place,
/// not copied.
///
/// `X-Forwarded-For` gets the peer's address, appended to what a trusted
/// proxy sent or alone; `X-Forwarded-Proto` and `-Host` are the browser's
/// scheme and host as [`Forwarding::browser_scheme_and_host`] tells them
/// (the public origin, a trusted proxy's claims, or the connection's).
pub fn request_headers(
    mut headers: Headers,
    peer: Option<IpAddr>,
    scheme: &'static str,
    forwarding: &Forwarding,
) -> Headers {
    strip_hop_by_hop(&mut headers);
    let trusted = forwarding.trusts(peer);
    let mut host: Option<Vec<u8>> = None;
    let mut claimed_host: Option<Vec<u8>> = None;
    let mut claimed_proto: Option<&'static str> = None;
    let mut xff: Vec<u8> = Vec::new();
    // One pass: the hop's headers are taken out (the `Host` buffer moved,
    // not copied) and the browser's scheme and host decided below by the
    // rule the CSRF own origin also uses (`Forwarding::decide`).
    headers.retain_owned(|name, value| match name {
        "host" => {
            host = Some(std::mem::take(value));
            false
        }
        "x-forwarded-for" => {
            if trusted {
                if !xff.is_empty() {
                    xff.extend_from_slice(b", ");
                }
                xff.extend_from_slice(value);
            }
            false
        }
        "x-forwarded-proto" => {
            if trusted && claimed_proto.is_none() {
                claimed_proto = first_element(value).and_then(known_scheme);
            }
            false
        }
        "x-forwarded-host" => {
            if trusted && claimed_host.is_none() {
                claimed_host = first_element(value).map(Vec::from);
            }
            false
        }
        _ if HOP_CLAIMS.contains(&name) => trusted,
        _ => !REQUEST_DROPPED.contains(&name),
    });
    let (proto, host) = forwarding.decide(claimed_proto, claimed_host, host, scheme);
    if let Some(ip) = peer {
        if !xff.is_empty() {
            xff.extend_from_slice(b", ");
        }
        xff.extend_from_slice(ip.to_string().as_bytes());
    }
    if !xff.is_empty() {
        headers.append("x-forwarded-for", xff);
    }
    headers.append("x-forwarded-proto", proto.as_bytes());
    if let Some(host) = host {
        headers.append("x-forwarded-host", host);
    }
    headers
}

/// The headers the browser receives for an API response: hop-by-hop and
/// body framing gone, and no `Set-Cookie` that would overwrite the auth
/// cookie or one of its chunks (only tokenjar writes those: a chunk planted
/// by the API would break the session, or outlive it).
pub fn response_headers(mut headers: Headers, cookie_name: &str) -> Headers {
    strip_hop_by_hop(&mut headers);
    headers.retain(|name, value| match name {
        "content-length" => false,
        "set-cookie" => !sets_cookie(value, cookie_name),
        _ => true,
    });
    headers
}

/// Whether a `Set-Cookie` value targets `name`. A value the `cookie` crate
/// cannot parse counts as targeting it: a browser might still read a name
/// out of it, and passing it on buys nothing.
fn sets_cookie(value: &[u8], name: &str) -> bool {
    let Ok(text) = std::str::from_utf8(value) else {
        return true;
    };
    match cookie::Cookie::parse(text) {
        Ok(c) => {
            let set = c.name().trim();
            // The auth cookie, its chunks, and the pending OpenID logins'
            // `<name>-login`: all tokenjar's alone.
            crate::cookies::Part::of(name, set).is_some()
                || set.strip_prefix(name).is_some_and(|rest| rest == "-login")
        }
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Headers {
        pairs.iter().map(|(n, v)| (*n, *v)).collect()
    }

    #[test]
    fn request_headers_drop_cookies_hops_and_framing() {
        let client = h(&[
            ("Host", "app.example"),
            ("Cookie", "auth-token=sealed; other=1"),
            ("Connection", "keep-alive, x-hop"),
            ("X-Hop", "1"),
            ("Keep-Alive", "timeout=5"),
            ("Content-Length", "5"),
            ("Expect", "100-continue"),
            ("Accept", "application/json"),
            ("X-Custom", "kept"),
        ]);
        let out = request_headers(
            client,
            Some("10.0.0.1".parse().unwrap()),
            "http",
            &Forwarding::default(),
        );
        let names: Vec<&str> = out.iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            [
                "accept",
                "x-custom",
                "x-forwarded-for",
                "x-forwarded-proto",
                "x-forwarded-host"
            ]
        );
    }

    /// The headers the API gets for `pairs` from `peer`, behind a balancer
    /// at 10.0.0.0/8.
    fn forwarded(pairs: &[(&str, &str)], peer: &str, public_origin: &str) -> Headers {
        let rules = Forwarding::new(public_origin, &["10.0.0.0/8"]).unwrap();
        request_headers(h(pairs), Some(peer.parse().unwrap()), "http", &rules)
    }

    #[test]
    fn forwarded_headers_from_a_direct_client() {
        let out = forwarded(&[("Host", "app:8080")], "127.0.0.1", "");
        assert_eq!(out.get("x-forwarded-for"), Some(&b"127.0.0.1"[..]));
        assert_eq!(out.get("x-forwarded-proto"), Some(&b"http"[..]));
        assert_eq!(out.get("x-forwarded-host"), Some(&b"app:8080"[..]));

        // A client's own claims about the hop are replaced or dropped.
        let claims = [
            ("Host", "app:8080"),
            ("X-Forwarded-For", "203.0.113.9"),
            ("x-forwarded-for", "198.51.100.1"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "evil"),
            ("Forwarded", "for=1.2.3.4;host=evil"),
            ("X-Real-IP", "1.2.3.4"),
            ("X-Original-URL", "/admin"),
            ("X-Rewrite-URL", "/admin"),
        ];
        let out = forwarded(&claims, "192.0.2.7", "");
        assert_eq!(
            out.get_all("x-forwarded-for").collect::<Vec<_>>(),
            [&b"192.0.2.7"[..]]
        );
        assert_eq!(out.get("x-forwarded-proto"), Some(&b"http"[..]));
        assert_eq!(
            out.get_all("x-forwarded-host").collect::<Vec<_>>(),
            [&b"app:8080"[..]]
        );
        for dropped in ["forwarded", "x-real-ip", "x-original-url", "x-rewrite-url"] {
            assert!(!out.contains(dropped), "{dropped} from an untrusted peer");
        }

        // From a trusted balancer they are believed, and the address appended.
        let out = forwarded(&claims, "10.0.0.2", "");
        assert_eq!(
            out.get_all("x-forwarded-for").collect::<Vec<_>>(),
            [&b"203.0.113.9, 198.51.100.1, 10.0.0.2"[..]]
        );
        assert_eq!(out.get("x-forwarded-proto"), Some(&b"https"[..]));
        assert_eq!(out.get("x-forwarded-host"), Some(&b"evil"[..]));
        assert_eq!(out.get("x-original-url"), Some(&b"/admin"[..]));

        // A public origin decides proto and host for everyone.
        let out = forwarded(&claims, "10.0.0.2", "https://app.example.com");
        assert_eq!(out.get("x-forwarded-proto"), Some(&b"https"[..]));
        assert_eq!(out.get("x-forwarded-host"), Some(&b"app.example.com"[..]));

        let ipv6 = forwarded(&[], "::1", "");
        assert_eq!(ipv6.get("x-forwarded-for"), Some(&b"::1"[..]));
        assert!(!ipv6.contains("x-forwarded-host"), "no Host: nothing to forward");
        let unknown = request_headers(Headers::new(), None, "http", &Forwarding::default());
        assert!(!unknown.contains("x-forwarded-for"));
    }

    #[test]
    fn response_headers_drop_the_auth_set_cookie_only() {
        let upstream = h(&[
            ("Set-Cookie", "auth-token=evil; Path=/"),
            ("Set-Cookie", " auth-token =evil2"),
            ("Set-Cookie", "theme=dark; Path=/"),
            ("Set-Cookie", "auth-token-2=ok"),
            ("Set-Cookie", "auth-token-login=forged; Path=/"),
            ("Set-Cookie", "auth-token.1=chunk"),
            ("Set-Cookie", "=novalue"),
            ("Connection", "x-hop"),
            ("X-Hop", "1"),
            ("Transfer-Encoding", "chunked"),
            ("Content-Length", "12"),
            ("Content-Type", "application/json"),
        ]);
        let out = response_headers(upstream, "auth-token");
        let cookies: Vec<&[u8]> = out.get_all("set-cookie").collect();
        assert_eq!(cookies, [&b"theme=dark; Path=/"[..], b"auth-token-2=ok"]);
        let names: Vec<&str> = out.iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["set-cookie", "set-cookie", "content-type"]);

        let mut odd = Headers::new();
        odd.append("set-cookie", vec![0xff, b'=', b'x']);
        assert!(response_headers(odd, "auth-token").is_empty());
    }
}
