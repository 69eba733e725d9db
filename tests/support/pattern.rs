//! Deterministic byte patterns for streaming tests (generated chunk by chunk,
//! never allocated whole) and JWT-shaped tokens for the fake API.

use std::sync::atomic::{AtomicU64, Ordering};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::Bytes;

/// The pattern's period: byte `i` of a stream is `i % PERIOD`.
const PERIOD: usize = 251;

/// Length of one generated chunk (a whole number of periods, about 62 KiB).
pub const CHUNK_LEN: usize = PERIOD * 256;

static CHUNK: [u8; CHUNK_LEN] = make_chunk();

const fn make_chunk() -> [u8; CHUNK_LEN] {
    let mut out = [0u8; CHUNK_LEN];
    let mut i = 0;
    while i < CHUNK_LEN {
        out[i] = (i % PERIOD) as u8;
        i += 1;
    }
    out
}

/// The chunks of a pattern stream of `total` bytes, in order: each chunk is
/// `CHUNK_LEN` bytes (shared static memory) except possibly the last.
pub fn chunks(total: u64) -> impl Iterator<Item = Bytes> + Send + 'static {
    let mut left = total;
    std::iter::from_fn(move || {
        if left == 0 {
            return None;
        }
        let len = left.min(CHUNK_LEN as u64) as usize;
        left -= len as u64;
        Some(Bytes::from_static(&CHUNK[..len]))
    })
}

/// Checks a received stream against the pattern, piece by piece.
#[derive(Debug, Clone)]
pub struct PatternCheck {
    received: u64,
    intact: bool,
}

impl Default for PatternCheck {
    fn default() -> Self {
        Self::new()
    }
}

impl PatternCheck {
    /// A check at offset 0.
    pub fn new() -> Self {
        Self {
            received: 0,
            intact: true,
        }
    }

    /// Feeds the next piece of the stream.
    pub fn feed(&mut self, mut data: &[u8]) {
        self.received += data.len() as u64;
        let mut pos = ((self.received - data.len() as u64) % PERIOD as u64) as usize;
        while !data.is_empty() {
            let take = data.len().min(CHUNK_LEN - pos);
            if data[..take] != CHUNK[pos..pos + take] {
                self.intact = false;
            }
            data = &data[take..];
            pos = 0;
        }
    }

    /// Bytes fed so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Whether every byte fed so far matched the pattern.
    pub fn intact(&self) -> bool {
        self.intact
    }
}

/// A JWT-shaped token (three base64url parts) whose payload carries `exp`.
///
/// The signature part is unique per call so a test can look for the token (or
/// its signature) in responses and logs.
pub fn make_jwt(exp: u64) -> String {
    static SERIAL: AtomicU64 = AtomicU64::new(0);
    let serial = SERIAL.fetch_add(1, Ordering::Relaxed);
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let id = crate::unique();
    let payload = URL_SAFE_NO_PAD.encode(
        serde_json::json!({"sub": "demo", "exp": exp, "jti": format!("e2e-{id}-{serial}")}).to_string(),
    );
    let mut seed = format!("signature-{id}-{serial}-").into_bytes();
    // Stretch the seed so the signature looks like a 256-bit MAC.
    while seed.len() < 32 {
        seed.push(b'#');
    }
    let signature = URL_SAFE_NO_PAD.encode(&seed);
    format!("{header}.{payload}.{signature}")
}

/// The signature (third) part of a JWT-shaped token, or the whole token.
pub fn signature_of(token: &str) -> &str {
    token.rsplit('.').next().unwrap_or(token)
}
