//! Shared pieces of the fuzz targets: the fixed rules they run against and the oracles that
//! judge a result (where a URL's path really lands, whether bytes hold a token).

use std::sync::LazyLock;

use base64::Engine as _;
use tokenjar_domain::{CookieJar, CookieKeys, CookiePolicy, LoginRules, Routes, UpstreamBase};

/// The clock every target runs at, in Unix seconds.
pub const NOW: i64 = 1_700_000_000;

/// The upstream base URL; its path is what a proxied request must stay under.
pub const BASE: &str = "http://api:9000/v1";

/// The path of [`BASE`].
pub const BASE_PATH: &str = "/v1";

/// A fixed cookie key: the same bytes every run, so that a crash reproduces.
pub fn key_bytes(seed: u8) -> [u8; 64] {
    std::array::from_fn(|i| (i as u8).wrapping_mul(37).wrapping_add(seed))
}

fn keys(seeds: &[u8]) -> CookieKeys {
    let encoded: Vec<String> = seeds
        .iter()
        .map(|&s| base64::engine::general_purpose::STANDARD.encode(key_bytes(s)))
        .collect();
    CookieKeys::from_base64(&encoded).expect("fixed keys are valid")
}

/// Seals with key 1 and opens with it.
pub static SEALED: LazyLock<CookieJar> =
    LazyLock::new(|| CookieJar::new(CookiePolicy::default(), keys(&[1])));

/// After a rotation: key 2 seals, keys 2 and 1 open.
pub static ROTATED: LazyLock<CookieJar> =
    LazyLock::new(|| CookieJar::new(CookiePolicy::default(), keys(&[2, 1])));

/// Clear mode: the value is the percent-encoded token.
pub static CLEAR: LazyLock<CookieJar> = LazyLock::new(|| {
    CookieJar::new(
        CookiePolicy {
            encrypt: false,
            ..CookiePolicy::default()
        },
        keys(&[]),
    )
});

/// Login rules for the default pointer and a few that walk objects, arrays and escapes.
pub static LOGIN_RULES: LazyLock<Vec<LoginRules>> = LazyLock::new(|| {
    ["/authToken", "/data/token", "/0", "/a~1b/c~0d"]
        .into_iter()
        .map(|p| LoginRules::new(p).expect("fixed pointers are valid"))
        .collect()
});

/// Routes under `/api`, and routes for the whole site.
pub static ROUTES: LazyLock<[Routes; 2]> = LazyLock::new(|| {
    [
        Routes::new("/api", "/api/login", "/api/logout", "/api/session").expect("valid routes"),
        Routes::new("/", "/login", "/logout", "/session").expect("valid routes"),
    ]
});

/// [`BASE`], parsed.
pub static UPSTREAM: LazyLock<UpstreamBase> =
    LazyLock::new(|| UpstreamBase::parse(BASE).expect("valid base"));

/// Whether `needle` occurs in `haystack` (an empty needle never does).
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// The path `url` lands on, read as leniently as any server might: parsed as a browser
/// would (`url`), each segment percent-decoded once, split again at a `/` or `\` that the
/// decoding revealed, a `;parameter` cut, dot segments removed. `None` when `url` is not a
/// URL or names another host or port.
pub fn resolved_path(url: &str) -> Option<String> {
    let parsed = url::Url::parse(url).ok()?;
    if parsed.host_str() != Some("api") || parsed.port() != Some(9000) {
        return None;
    }
    let path = parsed.path();
    let mut pieces: Vec<String> = Vec::new();
    for segment in path.split('/').skip(1) {
        let decoded = percent_encoding::percent_decode_str(segment).decode_utf8_lossy();
        pieces.extend(decoded.split(['/', '\\']).map(str::to_owned));
    }
    let mut out: Vec<String> = Vec::new();
    let last = pieces.len().saturating_sub(1);
    for (i, piece) in pieces.iter().enumerate() {
        match piece.split(';').next().unwrap_or_default() {
            "." => {}
            ".." => {
                out.pop();
            }
            _ => {
                out.push(piece.clone());
                continue;
            }
        }
        // A dot segment at the end leaves a directory: `/a/b/..` is `/a/`.
        if i == last {
            out.push(String::new());
        }
    }
    Some(format!("/{}", out.join("/")))
}

/// Whether a resolved path is the base path or below it.
pub fn stays_under_base(resolved: &str) -> bool {
    resolved == BASE_PATH
        || resolved
            .strip_prefix(BASE_PATH)
            .is_some_and(|r| r.starts_with('/'))
}
