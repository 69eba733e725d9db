//! Fuzz target: `CookieJar::open` on arbitrary `Cookie` header bytes (never panics, never
//! opens what it did not seal), the issue → open round trip for any token (whole or in
//! chunks), opening values sealed under the right key around plaintexts tokenjar itself
//! never writes, and the chunk joiner against any rearrangement of a session's chunks.
#![no_main]

use cookie::{Cookie, Key};
use libfuzzer_sys::fuzz_target;
use tokenjar_domain::memory::SeededRandom;
use tokenjar_domain::oracle::{contains, NOW};
use tokenjar_domain::{CookieError, CookieState, Token, MAX_CHUNKS_LIMIT};
use tokenjar_fuzz::{key_bytes, CLEAR, ROTATED, SEALED};

/// Sealing nonces: reproducible, so that a crash replays the same bytes.
static RANDOM: SeededRandom = SeededRandom::new(1);

fuzz_target!(|data: &[u8]| {
    // The first byte picks what the rest is, so that one corpus explores all four.
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 4 {
        0 => headers(rest),
        1 => round_trip(rest),
        2 => foreign_plaintext(rest),
        _ => rearranged_chunks(rest),
    }
});

/// Up to 8 `Cookie` header values, split at newlines.
fn headers(rest: &[u8]) {
    let values: Vec<&[u8]> = rest.split(|&b| b == b'\n').take(8).collect();
    for jar in [&*SEALED, &*ROTATED] {
        let state = jar.open(values.iter().copied(), NOW);
        // Forging an AES-GCM value without the key would be a break, not a find.
        assert!(!matches!(state, CookieState::Valid(_)), "{state:?} from {rest:?}");
    }
    // Clear mode opens whatever is a token; only a panic would be wrong.
    let _ = CLEAR.open(values.iter().copied(), NOW);
}

/// Any acceptable token comes back out of its own cookie, under each jar.
fn round_trip(rest: &[u8]) {
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let Ok(token) = Token::new(text.to_owned()) else {
        return;
    };
    for jar in [&*SEALED, &*ROTATED, &*CLEAR] {
        let issued = match jar.issue(&token, NOW, &RANDOM) {
            Ok(issued) => issued,
            // Only a session over `max_chunks` cookies may be refused.
            Err(CookieError::TooLarge { max_chunks }) => {
                // Each chunk holds under 4,000 bytes, and a value is at most three times
                // the token (percent-encoding in clear mode; sealing adds a third).
                assert!(
                    3 * text.len() > 3_900 * max_chunks,
                    "refused at {} bytes",
                    text.len()
                );
                continue;
            }
            Err(e) => panic!("issue failed: {e}"),
        };
        let pairs: Vec<&str> = issued
            .set_cookies
            .iter()
            .map(|c| c.split(';').next().unwrap_or_default())
            .collect();
        let pair = pairs.join("; ");
        let state = jar.open([pair.as_bytes()], NOW);
        let expired = issued.expires_at.is_some_and(|exp| NOW >= exp);
        if expired {
            assert!(matches!(state, CookieState::Rejected(_)), "{state:?}");
        } else {
            assert_eq!(state.token().map(Token::expose), Some(text), "round trip");
        }
        // The sealed value hides the token. From 12 characters on, a chance match in the
        // base64 is too unlikely to ever be seen (64^-12 per position).
        if !std::ptr::eq(jar, &*CLEAR) && text.len() >= 12 {
            let value: String = pairs
                .iter()
                .map(|p| p.split_once('=').map(|(_, v)| v).unwrap_or_default())
                .collect();
            assert!(
                !contains(value.as_bytes(), text.as_bytes()),
                "sealed value shows the token"
            );
        }
    }
}

/// A plaintext sealed with the jar's own key and name, as if tokenjar had written it: opening
/// must not panic, and whatever opens must be a current session with a usable token.
fn foreign_plaintext(rest: &[u8]) {
    let plaintext = String::from_utf8_lossy(rest).into_owned();
    let key = Key::from(&key_bytes(1));
    let mut jar = cookie::CookieJar::new();
    jar.private_mut(&key)
        .add(Cookie::new(SEALED.name().to_owned(), plaintext));
    let Some(value) = jar.get(SEALED.name()).map(|c| c.value().to_owned()) else {
        return;
    };
    let header = format!("{}={value}", SEALED.name());
    match SEALED.open([header.as_bytes()], NOW) {
        CookieState::Valid(session) => {
            assert!(
                session.expires_at.is_none_or(|exp| exp > NOW),
                "expired session opened"
            );
            assert!(
                Token::new(session.token.expose().to_owned()).is_ok(),
                "unusable token"
            );
        }
        CookieState::Rejected(_) => {}
        CookieState::Absent => panic!("a cookie of the jar's name was sent"),
        CookieState::Conflicting => panic!("one cookie cannot conflict with itself"),
    }
}

/// A session of three chunks, rearranged by the input: each byte places one of its chunks
/// (low two bits: which, 3 for none) under the next chunk number, up to the last number
/// that is a chunk's. Only the session's own
/// chunks, all of them, each under its own number, open; anything else is refused.
fn rearranged_chunks(rest: &[u8]) {
    static CHUNKS: std::sync::LazyLock<Vec<String>> = std::sync::LazyLock::new(|| {
        let token = Token::new("t".repeat(8_000)).unwrap_or_else(|_| unreachable!());
        let issued = SEALED
            .issue(&token, NOW, &RANDOM)
            .unwrap_or_else(|e| panic!("{e}"));
        issued
            .set_cookies
            .iter()
            .map(|c| {
                let pair = c.split(';').next().unwrap_or_default();
                pair.split_once('=')
                    .map(|(_, v)| v.to_owned())
                    .unwrap_or_default()
            })
            .collect()
    });
    assert_eq!(CHUNKS.len(), 3, "8,000 bytes make three chunks");
    let picks: Vec<Option<usize>> = rest
        .iter()
        .take(MAX_CHUNKS_LIMIT)
        .map(|b| usize::from(b & 3))
        .map(|k| (k < 3).then_some(k))
        .collect();
    let header = picks
        .iter()
        .enumerate()
        .filter_map(|(place, pick)| {
            let value = CHUNKS.get((*pick)?)?;
            Some(format!("{}.{place}={value}", SEALED.name()))
        })
        .collect::<Vec<_>>()
        .join("; ");
    let placed: Vec<(usize, usize)> = picks
        .iter()
        .enumerate()
        .filter_map(|(place, pick)| Some((place, (*pick)?)))
        .collect();
    let own = placed == [(0, 0), (1, 1), (2, 2)];
    let state = SEALED.open([header.as_bytes()], NOW);
    if own {
        assert!(matches!(state, CookieState::Valid(_)), "{state:?}");
    } else if header.is_empty() {
        assert_eq!(state, CookieState::Absent);
    } else {
        assert!(matches!(state, CookieState::Rejected(_)), "{picks:?}: {state:?}");
    }
}
