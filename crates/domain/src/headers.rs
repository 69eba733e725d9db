//! A small ordered header list, and the rules for which headers belong to one
//! hop only (RFC 9110 §7.6.1) and so never cross the proxy.

/// An ordered multimap of header names (stored lowercase) to raw byte values.
///
/// Values stay bytes: a header that is not UTF-8 is still carried faithfully,
/// and the domain never needs to re-parse what the HTTP server already parsed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Headers {
    entries: Vec<(String, Vec<u8>)>,
}

impl Headers {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty list with room for `n` entries.
    pub fn with_capacity(n: usize) -> Self {
        Self {
            entries: Vec::with_capacity(n),
        }
    }

    /// Adds a header, keeping any others of the same name.
    pub fn append(&mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) {
        let mut name = name.into();
        name.make_ascii_lowercase();
        self.entries.push((name, value.into()));
    }

    /// Replaces every header of this name with one value.
    pub fn set(&mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) {
        let name = name.into();
        self.remove(&name);
        self.append(name, value);
    }

    /// Removes every header of this name (case-insensitive).
    pub fn remove(&mut self, name: &str) {
        self.entries.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    }

    /// Keeps only the headers for which `keep(name, value)` is true.
    pub fn retain(&mut self, mut keep: impl FnMut(&str, &[u8]) -> bool) {
        self.entries.retain(|(n, v)| keep(n, v));
    }

    /// Keeps only the headers for which `keep(name, value)` is true; `keep`
    /// may take the value of a header it drops (no copy).
    pub fn retain_owned(&mut self, mut keep: impl FnMut(&str, &mut Vec<u8>) -> bool) {
        self.entries.retain_mut(|(n, v)| keep(n, v));
    }

    /// The first value of this name.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.entries
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// The first value of this name, if it is UTF-8.
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Every value of this name, in order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.entries
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// Whether a header of this name is present.
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// All headers in order, names lowercase.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.entries.iter().map(|(n, v)| (n.as_str(), v.as_slice()))
    }

    /// Number of entries (a name appearing twice counts twice).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there is no header at all.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The entries by value, in order: lets an adapter hand the owned name and
/// value buffers to its own header types without copying them again.
impl IntoIterator for Headers {
    type Item = (String, Vec<u8>);
    type IntoIter = std::vec::IntoIter<(String, Vec<u8>)>;

    fn into_iter(self) -> Self::IntoIter {
        self.entries.into_iter()
    }
}

impl<N: Into<String>, V: Into<Vec<u8>>> FromIterator<(N, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(iter: I) -> Self {
        let mut headers = Headers::new();
        for (n, v) in iter {
            headers.append(n, v);
        }
        headers
    }
}

/// Headers that describe one connection, never the message (RFC 9110 §7.6.1),
/// plus the proxy-auth pair that RFC 2616 also treated as hop-by-hop.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "proxy-connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authenticate",
    "proxy-authorization",
];

/// Whether `name` is hop-by-hop by definition.
pub fn is_hop_by_hop(name: &str) -> bool {
    HOP_BY_HOP.iter().any(|h| h.eq_ignore_ascii_case(name))
}

/// The header names a `Connection` header declares hop-by-hop, lowercase.
///
/// Tokens are comma-separated (RFC 9110 §7.6.1); anything that is not a
/// valid token is ignored rather than trusted.
pub fn connection_listed(headers: &Headers) -> Vec<String> {
    let mut names = Vec::new();
    for value in headers.get_all("connection") {
        let Ok(value) = std::str::from_utf8(value) else {
            continue;
        };
        for token in value.split(',') {
            let token = token.trim();
            // `close` and `keep-alive` (the usual tokens) name nothing that
            // is not already dropped: skip them and allocate nothing.
            if !token.is_empty()
                && token.bytes().all(is_tchar)
                && !token.eq_ignore_ascii_case("close")
                && !is_hop_by_hop(token)
            {
                names.push(token.to_ascii_lowercase());
            }
        }
    }
    names
}

/// Removes the hop-by-hop headers and those named in `Connection`.
pub fn strip_hop_by_hop(headers: &mut Headers) {
    let listed = connection_listed(headers);
    headers.retain(|name, _| !is_hop_by_hop(name) && !listed.iter().any(|l| l == name));
}

/// RFC 9110 `tchar`: the characters of a header name or a token.
pub fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Whether `name` can be a header name (a non-empty RFC 9110 token).
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(is_tchar)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &[(&str, &str)], expected: &[&str]) {
        let mut headers: Headers = input.iter().map(|(n, v)| (*n, *v)).collect();
        strip_hop_by_hop(&mut headers);
        let names: Vec<&str> = headers.iter().map(|(n, _)| n).collect();
        assert_eq!(names, expected, "input {input:?}");
    }

    #[test]
    fn hop_by_hop_headers_are_stripped() {
        check(&[("Connection", "close"), ("Accept", "*/*")], &["accept"]);
        check(
            &[
                ("Keep-Alive", "timeout=5"),
                ("TE", "trailers"),
                ("Transfer-Encoding", "chunked"),
                ("Upgrade", "websocket"),
                ("Proxy-Connection", "keep-alive"),
                ("Trailer", "x"),
                ("Proxy-Authorization", "Basic x"),
                ("Content-Type", "text/plain"),
            ],
            &["content-type"],
        );
    }

    #[test]
    fn headers_named_in_connection_are_stripped() {
        check(
            &[
                ("Connection", "X-Custom, x-other"),
                ("X-Custom", "1"),
                ("X-Other", "2"),
                ("X-Kept", "3"),
            ],
            &["x-kept"],
        );
        check(
            &[
                ("Connection", "x-a"),
                ("Connection", "X-B"),
                ("x-a", "1"),
                ("x-b", "2"),
            ],
            &[],
        );
    }

    #[test]
    fn odd_connection_values_do_not_remove_other_headers() {
        check(&[("Connection", ",, ,"), ("Accept", "a")], &["accept"]);
        check(
            &[("Connection", "bad name, x-y"), ("x-y", "1"), ("bad name", "2")],
            &["bad name"],
        );
        let mut headers = Headers::new();
        headers.append("connection", vec![0xff, b'x']);
        headers.append("x", "1");
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.get("x"), Some(&b"1"[..]));
    }

    #[test]
    fn names_are_case_insensitive_and_stored_lowercase() {
        let mut headers = Headers::new();
        headers.append("X-Thing", "a");
        headers.append("x-thing", "b");
        assert_eq!(headers.get_all("X-THING").count(), 2);
        assert_eq!(headers.iter().next().map(|(n, _)| n), Some("x-thing"));
        headers.set("X-Thing", "c");
        assert_eq!(headers.get_all("x-thing").collect::<Vec<_>>(), vec![b"c"]);
        headers.remove("X-THING");
        assert!(headers.is_empty());
    }

    #[test]
    fn header_names_are_tokens() {
        assert!(is_valid_name("auth-token"));
        assert!(is_valid_name("X_Weird.Name"));
        assert!(!is_valid_name(""));
        assert!(!is_valid_name("bad name"));
        assert!(!is_valid_name("bad:name"));
        assert!(!is_valid_name("bad\nname"));
    }
}
