//! The fuzz targets' fixtures: the fixed jars, login rules and routes they run against, built
//! once per process. The oracles that judge a result (and `NOW`, `BASE`) are not here but in
//! `tokenjar_domain::oracle` (feature `test-util`), shared with the property tests.

use std::sync::LazyLock;

use base64::Engine as _;
use tokenjar_domain::oracle::BASE;
use tokenjar_domain::{CookieJar, CookieKeys, CookiePolicy, LoginRules, Routes, UpstreamBase};

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
