//! Test support for tokenjar's end-to-end suite: a recording API, the tokenjar
//! binary as a child process, raw-socket helpers and small shared utilities.
//!
//! Everything here talks to loopback only. Each test starts its own API and its
//! own tokenjar on port 0, so tests run in parallel without sharing state.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod api;
pub mod app;
pub mod binary;
pub mod endurance;
pub mod event_api;
pub mod external;
pub mod hostile;
pub mod hostile_api;
pub mod hostile_oidc;
pub mod load;
pub mod metrics;
pub mod nginx;
pub mod oidc_provider;
pub mod pattern;
pub mod pki;
pub mod raw;
pub mod redis;
pub mod refresh_api;
pub mod ws_api;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

pub use api::{CannedReply, Recorded, RecordingApi};
pub use app::{setup, setup_with, spawn_app, spawn_custom, tamper, Reply, SetCookie, TestApp};
pub use binary::tokenjar_bin;
pub use raw::{
    parse_responses, raw_conversation, raw_request, refused_url, RawResponse, RawStream, RawUpstream,
};

/// Cookie key used by every tokenjar the suite starts unless a test overrides
/// `TOKENJAR_COOKIE__KEYS` (base64 of 64 fixed random bytes).
pub const KEY_1: &str =
    "IRiG9I8a5jqopGOkgCvHqcMQtpqCCgfy6kZowP/Iud4r3C+o71Yo2ONzkI4V65Bo0pIWBbWpaeQ6/xtchKgGwg==";

/// A second, unrelated cookie key (rotation and wrong-key tests).
pub const KEY_2: &str =
    "bPbhRZm/zIMlGDWrd/c7rKqx5464cmuYF2C5TSO+cQPLg0/Rg/5pBmrnLeYCqKkuYEFgpE99t4F83oYgXIxheg==";

/// A third cookie key, for configuration files in the CLI tests.
pub const KEY_3: &str =
    "8bfp/w3wGmgFYdjQeC+eRC1Rede/ermsdhi/yRkfIttbV/v/Za7BE8c/bUP7o5MH3PlAxGG4h/sdIc1zVdG4LA==";

/// The workspace root (the parent of this package's directory).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the e2e package lives inside the workspace")
        .to_path_buf()
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A unique value for names within this test process.
pub fn unique() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{}-{n}-{nanos}", std::process::id())
}

/// A parsed header map as `(name, value)` pairs, values read lossily, in
/// arrival order: the form the recorded requests and the replies keep.
pub fn header_pairs(map: &actix_web::http::header::HeaderMap) -> Vec<(String, String)> {
    map.iter()
        .map(|(n, v)| {
            (
                n.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

/// Every value of header `name` (case-insensitive) among `pairs`.
pub fn values_named<'a>(pairs: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    pairs
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect()
}

/// A directory under the system temp dir, removed on drop.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates a fresh, empty, uniquely named directory.
    pub fn new(label: &str) -> Self {
        let path = std::env::temp_dir().join(format!("tokenjar-e2e-{label}-{}", unique()));
        std::fs::create_dir_all(&path).expect("create temp dir");
        Self { path }
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `contents` to `name` inside the directory.
    pub fn write(&self, name: &str, contents: &str) {
        std::fs::write(self.path.join(name), contents).expect("write temp file");
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// True if `needle` occurs in `haystack` as a whole word, where a word
/// boundary is anything but an ASCII letter or digit (so `server.port`,
/// `SERVER__PORT` and `"port"` name `port`, but `support` does not).
/// Case-insensitive.
pub fn mentions_word(haystack: &str, needle: &str) -> bool {
    let hay = haystack.to_ascii_lowercase();
    let needle = needle.to_ascii_lowercase();
    let bytes = hay.as_bytes();
    let mut start = 0;
    while let Some(found) = hay[start..].find(&needle) {
        let at = start + found;
        let end = at + needle.len();
        let before_ok = at == 0 || !bytes[at - 1].is_ascii_alphanumeric();
        let after_ok = end >= bytes.len() || !bytes[end].is_ascii_alphanumeric();
        if before_ok && after_ok {
            return true;
        }
        start = at + 1;
    }
    false
}
