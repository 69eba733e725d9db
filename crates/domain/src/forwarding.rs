//! Who is asking and which site they reached: the client's `Host` and
//! `X-Forwarded-*` claims are believed only from the load balancers named
//! in `server.trusted_proxies`, and `server.public_origin`, when set, is the
//! one origin tokenjar serves (SPEC §2, §3).

use std::net::IpAddr;

use crate::headers::Headers;
use crate::setting::SettingError;

/// A block of addresses, `10.0.0.0/8` or `fd00::/8`; a bare address is a
/// block of one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `address[/prefix]`.
    ///
    /// # Errors
    /// A sentence saying what is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = address
            .parse()
            .map_err(|_| format!("{text:?} is not an IP address or CIDR block"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{text:?} has a prefix length outside 0..={max}"))?,
        };
        Ok(Self { network, prefix })
    }

    /// Whether `ip` is in the block. An IPv4 address written as IPv6
    /// (`::ffff:10.0.0.1`, as dual-stack listeners report peers) counts as
    /// the IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// The site tokenjar serves, when fixed: `https://app.example.com`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct PublicOrigin {
    /// `scheme://host[:port]`, lowercase, default port dropped.
    origin: String,
    scheme: String,
    /// `host[:port]` as a `Host` header names it, default port dropped.
    authority: String,
}

/// How far the client's own claims about the hop are believed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Forwarding {
    public_origin: Option<PublicOrigin>,
    trusted: Vec<Cidr>,
}

impl Forwarding {
    /// Rules from `server.public_origin` (`""`: none) and
    /// `server.trusted_proxies`.
    ///
    /// # Errors
    /// Every problem, each naming its key (`public_origin`,
    /// `trusted_proxies`).
    pub fn new<S: AsRef<str>>(public_origin: &str, trusted_proxies: &[S]) -> Result<Self, Vec<SettingError>> {
        let mut problems = Vec::new();
        let public_origin = if public_origin.trim().is_empty() {
            None
        } else {
            match normalise_origin(public_origin.trim()) {
                Some(origin) => {
                    let (scheme, authority) = origin.split_once("://").unwrap_or(("", ""));
                    Some(PublicOrigin {
                        scheme: scheme.to_owned(),
                        authority: authority.to_owned(),
                        origin: origin.clone(),
                    })
                }
                None => {
                    problems.push(SettingError::new(
                        "public_origin",
                        format!("{public_origin:?} is not an origin (http(s)://host[:port], no path)"),
                    ));
                    None
                }
            }
        };
        let mut trusted = Vec::with_capacity(trusted_proxies.len());
        for block in trusted_proxies {
            match Cidr::parse(block.as_ref()) {
                Ok(cidr) => trusted.push(cidr),
                Err(message) => problems.push(SettingError::new("trusted_proxies", message)),
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Self {
            public_origin,
            trusted,
        })
    }

    /// The configured public origin, `scheme://host[:port]`.
    pub fn public_origin(&self) -> Option<&str> {
        self.public_origin.as_ref().map(|p| p.origin.as_str())
    }

    /// Whether requests from `peer` may speak for the browser.
    pub fn trusts(&self, peer: Option<IpAddr>) -> bool {
        peer.is_some_and(|ip| self.trusted.iter().any(|cidr| cidr.contains(ip)))
    }

    /// The scheme (`http` or `https`) and host the browser used for a
    /// request that arrived from `peer` over `scheme`: the public origin's,
    /// else a trusted proxy's `X-Forwarded-Proto`/`-Host`, else the
    /// connection's scheme and the `Host` header.
    pub fn browser_scheme_and_host<'a>(
        &'a self,
        headers: &'a Headers,
        peer: Option<IpAddr>,
        scheme: &'static str,
    ) -> (&'a str, Option<&'a str>) {
        let trusted = self.trusts(peer);
        let claimed = |name| trusted.then(|| first_value(headers, name)).flatten();
        self.decide(
            claimed("x-forwarded-proto").and_then(known_scheme),
            claimed("x-forwarded-host"),
            headers.get_str("host"),
            scheme,
        )
    }

    /// The one rule for the browser's scheme and host, given what a request
    /// says: `claimed_proto` and `claimed_host` from a trusted proxy (`None`
    /// from anyone else), `host` its `Host`, `scheme` the connection's. The
    /// public origin, when set, decides alone. Generic over how the host is
    /// held, so that [`crate::relay::request_headers`] can keep the buffers
    /// it takes out of the request.
    pub(crate) fn decide<'a, H: From<&'a str>>(
        &'a self,
        claimed_proto: Option<&'static str>,
        claimed_host: Option<H>,
        host: Option<H>,
        scheme: &'static str,
    ) -> (&'a str, Option<H>) {
        if let Some(public) = &self.public_origin {
            return (public.scheme.as_str(), Some(H::from(public.authority.as_str())));
        }
        (claimed_proto.unwrap_or(scheme), claimed_host.or(host))
    }

    /// The browser's origin for a request, `scheme://host[:port]` (see
    /// [`browser_scheme_and_host`](Self::browser_scheme_and_host)); `None`
    /// when there is no host to tell it.
    pub fn origin(&self, headers: &Headers, peer: Option<IpAddr>, scheme: &'static str) -> Option<String> {
        let (proto, host) = self.browser_scheme_and_host(headers, peer, scheme);
        normalise_origin(&format!("{proto}://{}", host?))
    }

    /// With a public origin, whether the request was addressed to it: its
    /// `Host` (or, from a trusted proxy, `X-Forwarded-Host`) names the
    /// public origin's host and port. Without one, every host is accepted.
    pub fn addressed_here(&self, headers: &Headers, peer: Option<IpAddr>) -> bool {
        let Some(public) = &self.public_origin else {
            return true;
        };
        let forwarded = self
            .trusts(peer)
            .then(|| first_value(headers, "x-forwarded-host"))
            .flatten();
        let Some(host) = forwarded.or_else(|| headers.get_str("host")) else {
            return false;
        };
        let host = host.trim().to_ascii_lowercase();
        let default_port = if public.scheme == "https" { ":443" } else { ":80" };
        let host = host.strip_suffix(default_port).unwrap_or(&host);
        host == public.authority
    }
}

/// The first comma-separated element of a header (a proxy chain lists the
/// browser's end first), trimmed; `None` when absent, empty or not UTF-8.
fn first_value<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    first_element(headers.get(name)?)
}

/// The first comma-separated element of a header value, trimmed; `None`
/// when empty or not UTF-8.
pub(crate) fn first_element(value: &[u8]) -> Option<&str> {
    let first = std::str::from_utf8(value).ok()?.split(',').next()?.trim();
    (!first.is_empty()).then_some(first)
}

/// `http` or `https` as a static string, from a claimed scheme in any case.
pub(crate) fn known_scheme(claim: &str) -> Option<&'static str> {
    if claim.eq_ignore_ascii_case("https") {
        Some("https")
    } else if claim.eq_ignore_ascii_case("http") {
        Some("http")
    } else {
        None
    }
}

/// `scheme://host[:port]`, lowercase, default port dropped; `None` for
/// anything with a path, query, credentials or an unknown scheme.
pub(crate) fn normalise_origin(text: &str) -> Option<String> {
    let url = url::Url::parse(text).ok()?;
    let plain = matches!(url.scheme(), "http" | "https")
        && url.path() == "/"
        && !text.ends_with('/')
        && url.query().is_none()
        && url.fragment().is_none()
        && url.username().is_empty()
        && url.password().is_none();
    if !plain {
        return None;
    }
    let host = url.host_str()?;
    Some(match url.port() {
        Some(port) => format!("{}://{host}:{port}", url.scheme()),
        None => format!("{}://{host}", url.scheme()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Headers {
        pairs.iter().map(|(n, v)| (*n, *v)).collect()
    }

    fn ip(text: &str) -> Option<IpAddr> {
        Some(text.parse().unwrap())
    }

    #[test]
    fn cidr_blocks_contain_their_addresses() {
        let cases = [
            ("10.0.0.0/8", "10.1.2.3", true),
            ("10.0.0.0/8", "11.0.0.1", false),
            ("10.0.0.7", "10.0.0.7", true),
            ("10.0.0.7", "10.0.0.8", false),
            ("0.0.0.0/0", "203.0.113.9", true),
            ("192.168.1.0/24", "::ffff:192.168.1.40", true),
            ("fd00::/8", "fd12::1", true),
            ("fd00::/8", "fe80::1", false),
            ("::1", "::1", true),
            ("::/0", "10.0.0.1", false),
            ("10.0.0.0/8", "fd00::1", false),
        ];
        for (block, address, expected) in cases {
            let cidr = Cidr::parse(block).unwrap();
            assert_eq!(
                cidr.contains(address.parse().unwrap()),
                expected,
                "{block} {address}"
            );
        }
        for bad in [
            "",
            "10.0.0.0/33",
            "fd00::/129",
            "10.0.0.0/x",
            "host.example",
            "10.0.0/8",
        ] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn claims_are_believed_only_from_trusted_peers() {
        let rules = Forwarding::new("", &["10.0.0.0/8"]).unwrap();
        let claims = h(&[
            ("host", "internal:8080"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "app.example"),
        ]);
        assert!(rules.trusts(ip("10.0.0.2")));
        assert_eq!(
            rules.origin(&claims, ip("10.0.0.2"), "http").as_deref(),
            Some("https://app.example")
        );
        assert!(!rules.trusts(ip("203.0.113.9")));
        assert_eq!(
            rules.origin(&claims, ip("203.0.113.9"), "http").as_deref(),
            Some("http://internal:8080")
        );
        assert!(!rules.trusts(None));
        let gopher = h(&[("host", "app.example"), ("x-forwarded-proto", "gopher")]);
        assert_eq!(
            rules.origin(&gopher, ip("10.0.0.2"), "http").as_deref(),
            Some("http://app.example")
        );
        assert_eq!(rules.origin(&h(&[]), ip("203.0.113.9"), "http"), None);
    }

    #[test]
    fn a_public_origin_decides_and_other_hosts_are_not_addressed_here() {
        let rules = Forwarding::new("https://App.Example.com", &["10.0.0.0/8"]).unwrap();
        assert_eq!(rules.public_origin(), Some("https://app.example.com"));
        let origin = rules.origin(&h(&[("host", "evil.example")]), ip("203.0.113.9"), "http");
        assert_eq!(origin.as_deref(), Some("https://app.example.com"));
        let here = |pairs: &[(&str, &str)], peer| rules.addressed_here(&h(pairs), ip(peer));
        assert!(here(&[("host", "app.example.com")], "203.0.113.9"));
        assert!(here(&[("host", "APP.example.com:443")], "203.0.113.9"));
        assert!(!here(&[("host", "app.example.com:8443")], "203.0.113.9"));
        assert!(!here(&[("host", "evil.example")], "203.0.113.9"));
        assert!(!here(&[], "203.0.113.9"));
        // A trusted balancer's X-Forwarded-Host speaks for the browser.
        assert!(here(
            &[("host", "10.0.0.5:8080"), ("x-forwarded-host", "app.example.com")],
            "10.0.0.2"
        ));
        assert!(!here(
            &[("host", "10.0.0.5:8080"), ("x-forwarded-host", "app.example.com")],
            "203.0.113.9"
        ));
        let plain = Forwarding::new("http://127.0.0.1:8080", &[] as &[&str]).unwrap();
        assert!(plain.addressed_here(&h(&[("host", "127.0.0.1:8080")]), None));
        assert!(!plain.addressed_here(&h(&[("host", "localhost:8080")]), None));
    }

    #[test]
    fn bad_settings_name_their_key() {
        let keys = |r: Result<Forwarding, Vec<SettingError>>| -> Vec<&'static str> {
            r.err().unwrap_or_default().into_iter().map(|e| e.key).collect()
        };
        assert_eq!(
            keys(Forwarding::new("app.example.com", &[] as &[&str])),
            ["public_origin"]
        );
        assert_eq!(
            keys(Forwarding::new("https://a.example/path", &["x"])),
            ["public_origin", "trusted_proxies"]
        );
        assert!(Forwarding::new("", &["10.0.0.0/8", "::1"]).is_ok());
    }
}
