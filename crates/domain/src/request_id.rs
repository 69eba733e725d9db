//! Request ids: one id follows a request through tokenjar's logs, the API's
//! logs and back to the client (`x-request-id`). A client's own id is kept
//! only if it is harmless in a log line and a header.

/// The header that carries the id both ways.
pub const HEADER: &str = "x-request-id";

/// Whether a client-sent id is kept: 1–128 characters of `A-Za-z0-9._-`.
pub fn is_acceptable(value: &[u8]) -> bool {
    (1..=128).contains(&value.len())
        && value
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_ids_of_sane_length_are_kept() {
        for ok in [
            "a",
            "req-1.2_3",
            "0f8fad5b-d9cb-469f-a165-70867728950e",
            &"x".repeat(128),
        ] {
            assert!(is_acceptable(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "",
            "has space",
            "semi;colon",
            "new\nline",
            "ünï",
            "a/b",
            &"x".repeat(129),
        ] {
            assert!(!is_acceptable(bad.as_bytes()), "{bad}");
        }
        assert!(!is_acceptable(b"\xff"));
    }
}
