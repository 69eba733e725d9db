//! Oracles for the property tests (`tests/properties.rs`) and the cargo-fuzz targets
//! (`fuzz/`): the fixed upstream they run against, and the judges of a result (where a URL's
//! path really lands, whether bytes hold a token). One copy, so that a fix to a judge reaches
//! both, and the two can never drift into judging the same rule differently.
//!
//! The judges are deliberately separate from the code they judge: nothing here calls the
//! crate's own rules (`path`, `plan`, `login`), because an oracle that shares the code under
//! test also shares its bugs and passes whatever that code does. Paths are resolved by the
//! `url` crate and `percent-encoding`, as a browser or an upstream server would read them,
//! and a token is looked for byte by byte in what would be sent.
//!
//! Compiled only with the `test-util` feature (the pattern of tokio's `test-util`): the
//! crate's own tests enable it through a dev-dependency on the crate itself, the fuzz crate
//! through its dependency, and the proxy's build never has it.

use std::fmt;

/// The clock every property and fuzz target runs at, in Unix seconds.
pub const NOW: i64 = 1_700_000_000;

/// The upstream base URL; its path is what a proxied request must stay under.
pub const BASE: &str = "http://api:9000/v1";

/// The path of [`BASE`].
pub const BASE_PATH: &str = "/v1";

/// The host and port of [`BASE`], spelled out rather than parsed from it on every call (the
/// fuzz targets call [`resolved_path`] millions of times); a unit test keeps them in step.
const BASE_HOST: &str = "api";
const BASE_PORT: u16 = 9000;

/// Why a planned URL has no path on the upstream server: each one is a failure of the rule
/// under test (a proxied request must reach [`BASE`]'s server), not of the oracle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unresolved {
    /// The text does not parse as a URL.
    NotAUrl(url::ParseError),
    /// The URL names another host than [`BASE`]'s.
    OtherHost(Option<String>),
    /// The URL names another port than [`BASE`]'s.
    OtherPort(Option<u16>),
}

impl fmt::Display for Unresolved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotAUrl(e) => write!(f, "is not a URL: {e}"),
            Self::OtherHost(host) => write!(f, "changed host to {host:?}"),
            Self::OtherPort(port) => write!(f, "changed port to {port:?}"),
        }
    }
}

impl std::error::Error for Unresolved {}

/// Whether `needle` occurs in `haystack`. An empty needle never does: a token is never
/// empty, and "found nothing" must not read as "found it".
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// The path `url` lands on at [`BASE`]'s server, read as leniently as any server might:
/// parsed as a browser would (the `url` crate, which already removes plain and `%2e` dot
/// segments), then each segment percent-decoded once, split again at a `/` or `\` the
/// decoding revealed, a `;parameter` cut (as servlet containers do), and dot segments
/// removed once more. More lenient than most servers on purpose: a path that stays under
/// the base here stays under it there.
pub fn resolved_path(url: &str) -> Result<String, Unresolved> {
    let parsed = url::Url::parse(url).map_err(Unresolved::NotAUrl)?;
    if parsed.host_str() != Some(BASE_HOST) {
        return Err(Unresolved::OtherHost(parsed.host_str().map(str::to_owned)));
    }
    if parsed.port() != Some(BASE_PORT) {
        return Err(Unresolved::OtherPort(parsed.port()));
    }
    // The decoded pieces in order; the first `/` of the path leads no segment.
    let mut pieces: Vec<String> = Vec::new();
    for segment in parsed.path().split('/').skip(1) {
        let decoded = percent_encoding::percent_decode_str(segment).decode_utf8_lossy();
        pieces.extend(decoded.split(['/', '\\']).map(str::to_owned));
    }
    let last = pieces.len().saturating_sub(1);
    let mut out: Vec<String> = Vec::with_capacity(pieces.len());
    for (i, piece) in pieces.into_iter().enumerate() {
        match piece.split(';').next().unwrap_or_default() {
            "." => {}
            ".." => {
                out.pop();
            }
            _ => {
                out.push(piece);
                continue;
            }
        }
        // A dot segment at the end leaves a directory: `/a/b/..` is `/a/`.
        if i == last {
            out.push(String::new());
        }
    }
    Ok(format!("/{}", out.join("/")))
}

/// Whether a path from [`resolved_path`] is [`BASE_PATH`] or below it (`/v1x` is not).
pub fn stays_under_base(resolved: &str) -> bool {
    resolved
        .strip_prefix(BASE_PATH)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    //! The oracles' own tests: a judge that accepted everything would let every property
    //! and fuzz target pass, so each must be seen to reject.

    use super::*;

    fn lands(url: &str) -> String {
        resolved_path(url).unwrap_or_else(|e| panic!("{url:?} {e}"))
    }

    #[test]
    fn the_host_port_and_path_constants_are_those_of_base() {
        let base = url::Url::parse(BASE).unwrap();
        assert_eq!(base.host_str(), Some(BASE_HOST));
        assert_eq!(base.port(), Some(BASE_PORT));
        assert_eq!(base.path(), BASE_PATH);
        assert_eq!(lands(BASE), BASE_PATH);
    }

    #[test]
    fn dot_segments_can_leave_the_base_path() {
        for (url, path) in [
            ("http://api:9000/v1/x/../../y", "/y"),
            ("http://api:9000/v1/%2e%2e/y", "/y"),
            // Hidden from the `url` crate, found once decoded, split or cut.
            ("http://api:9000/v1/a/..%2f..%2fz", "/z"),
            ("http://api:9000/v1/..%5cz", "/z"),
            ("http://api:9000/v1/..;/z", "/z"),
            ("http://api:9000/v1/..", "/"),
        ] {
            let resolved = lands(url);
            assert_eq!(resolved, path, "{url:?}");
            assert!(!stays_under_base(&resolved), "{url:?} -> {resolved:?}");
        }
    }

    #[test]
    fn paths_that_stay_below_the_base_path_are_accepted() {
        for (url, path) in [
            ("http://api:9000/v1/users/7", "/v1/users/7"),
            ("http://api:9000/v1/", "/v1/"),
            ("http://api:9000/v1/a/..", "/v1/"),
            ("http://api:9000/v1/a/./b", "/v1/a/b"),
            ("http://api:9000/v1/a;x/b", "/v1/a;x/b"),
            // Decoded once only: what is left is a plain segment, not a dot segment.
            ("http://api:9000/v1/%252e%252e/z", "/v1/%2e%2e/z"),
        ] {
            let resolved = lands(url);
            assert_eq!(resolved, path, "{url:?}");
            assert!(stays_under_base(&resolved), "{url:?} -> {resolved:?}");
        }
    }

    #[test]
    fn a_sibling_of_the_base_path_is_outside_it() {
        for outside in ["/", "/v", "/v1x", "/v10/a", "/x/v1"] {
            assert!(!stays_under_base(outside), "{outside:?}");
        }
    }

    #[test]
    fn another_server_has_no_path_here() {
        assert!(matches!(resolved_path("/v1/x"), Err(Unresolved::NotAUrl(_))));
        assert_eq!(
            resolved_path("http://evil:9000/v1"),
            Err(Unresolved::OtherHost(Some("evil".to_owned())))
        );
        assert_eq!(
            resolved_path("http://api:9000@evil/v1"),
            Err(Unresolved::OtherHost(Some("evil".to_owned())))
        );
        assert_eq!(resolved_path("http://api/v1"), Err(Unresolved::OtherPort(None)));
        assert_eq!(
            resolved_path("http://api:9001/v1"),
            Err(Unresolved::OtherPort(Some(9001)))
        );
    }

    #[test]
    fn contains_finds_bytes_anywhere_and_never_an_empty_needle() {
        assert!(contains(b"{\"k\":\"tok\"}", b"tok"));
        assert!(contains(b"tok", b"tok"));
        assert!(!contains(b"to", b"tok"));
        assert!(!contains(b"t-o-k", b"tok"));
        assert!(!contains(b"anything", b""));
        assert!(!contains(b"", b""));
    }
}
