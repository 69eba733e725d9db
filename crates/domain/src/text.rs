//! Bytes from the wire read as text, and searched.

use std::borrow::Cow;

/// `bytes` as text, with any invalid UTF-8 replaced by U+FFFD. The same
/// result as [`String::from_utf8_lossy`], but valid input (nearly all of
/// it: headers and paths are ASCII) is checked by `str::from_utf8`, which
/// tests ASCII a word at a time, instead of byte by byte; the cookie header
/// and path segments of every request pass through here.
pub(crate) fn lossy_utf8(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

/// Whether `needle` occurs in `haystack`; an empty needle is never found
/// (an empty token would otherwise be "found" everywhere).
pub(crate) fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && memchr::memmem::find(haystack, needle).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_needle_anywhere_but_never_an_empty_one() {
        let cases: [(&[u8], &[u8], bool); 6] = [
            (b"abc", b"abc", true),
            (b"xxabcxx", b"abc", true),
            (b"xxabxcx", b"abc", false),
            (b"ab", b"abc", false),
            (b"abc", b"", false),
            (b"", b"", false),
        ];
        for (haystack, needle, expected) in cases {
            assert_eq!(contains(haystack, needle), expected, "{haystack:?} {needle:?}");
        }
    }

    #[test]
    fn matches_the_standard_lossy_reading() {
        for bytes in [
            &b"auth-token=abc; theme=dark"[..],
            b"caf\xc3\xa9",
            b"a\xffb\xc3",
            b"",
        ] {
            assert_eq!(lossy_utf8(bytes), String::from_utf8_lossy(bytes), "{bytes:?}");
        }
        assert!(matches!(lossy_utf8(b"ascii"), Cow::Borrowed("ascii")));
        assert_eq!(lossy_utf8(b"a\xffb"), "a\u{fffd}b");
    }
}
