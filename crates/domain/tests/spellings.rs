//! Property tests (proptest) for SPEC §4's login spellings: every way of writing the login
//! route that a lenient API router would still take for its login (letter case in ASCII and
//! Unicode, fullwidth letters, percent-encoding, extra slashes, `.format` and `;param`
//! suffixes) is classified as the login, so the token is intercepted; a name that differs by
//! one letter is not; and no string makes classification panic.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use proptest::prelude::*;
use tokenjar_domain::{Route, Routes};

/// Failures are not persisted to a `proptest-regressions/` file: a case that ever fails
/// becomes a named example in `path.rs`'s unit tests instead, where it is read.
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Configured routes as `(prefix, login)`: the default, a longer login with a `-` and an `i`,
/// one with `k` and `s` (Kelvin sign, long s), and a whole-site prefix under which every
/// segment of the login is spelled freely.
const ROUTES: &[(&str, &str)] = &[
    ("/api", "/api/login"),
    ("/api", "/api/auth/sign-in"),
    ("/api", "/api/auth/tokens_ask"),
    ("/", "/login"),
];

fn routes(prefix: &str, login: &str) -> Routes {
    let own = |name: &str| format!("{}/{name}", prefix.trim_end_matches('/'));
    Routes::new(prefix, login, &own("logout"), &own("session")).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Generators
// ---------------------------------------------------------------------------------------------

/// How one character of the route is written: which variant (see [`variants`]), whether it
/// is percent-encoded, and the hex case of each of its UTF-8 bytes.
#[derive(Debug, Clone)]
struct Letter {
    variant: usize,
    encoded: bool,
    lower_hex: u8,
}

fn letter() -> impl Strategy<Value = Letter> {
    (0usize..16, any::<bool>(), any::<u8>()).prop_map(|(variant, encoded, lower_hex)| Letter {
        variant,
        encoded,
        lower_hex,
    })
}

/// The characters a lenient router reads as `c`: its ASCII cases, its fullwidth form (NFKC),
/// and the Unicode letters whose case mapping lands on it.
fn variants(c: char) -> Vec<char> {
    let mut all = vec![c, c.to_ascii_uppercase()];
    for ascii in [c, c.to_ascii_uppercase()] {
        // U+FF01..=U+FF5E are `!`..=`~` in fullwidth.
        all.extend(char::from_u32(u32::from(ascii) + 0xFEE0));
    }
    match c {
        'i' => all.extend(['\u{131}', '\u{130}']), // ı upper-cases to I, İ lower-cases to i
        's' => all.push('\u{17F}'),                // ſ upper-cases to S
        'k' => all.push('\u{212A}'),               // the Kelvin sign lower-cases to k
        _ => {}
    }
    all
}

fn push_encoded(out: &mut String, byte: u8, lower_hex: bool) {
    if lower_hex {
        out.push_str(&format!("%{byte:02x}"));
    } else {
        out.push_str(&format!("%{byte:02X}"));
    }
}

/// `c` written as `letter` says: raw, or every UTF-8 byte percent-encoded (a `&str` path
/// cannot hold part of a non-ASCII character raw), each byte with its own hex case.
fn spell_char(out: &mut String, c: char, letter: &Letter) {
    let all = variants(c);
    let chosen = all[letter.variant % all.len()];
    if !letter.encoded {
        out.push(chosen);
        return;
    }
    let mut utf8 = [0; 4];
    for (i, &byte) in chosen.encode_utf8(&mut utf8).as_bytes().iter().enumerate() {
        push_encoded(out, byte, letter.lower_hex & (1 << i) != 0);
    }
}

/// What follows a segment's name: nothing, a format suffix, parameters, or both in either
/// order. The `.` may itself be percent-encoded; a servlet container's `;` may not.
fn suffix() -> impl Strategy<Value = String> {
    let dot = prop_oneof![Just("."), Just("%2E"), Just("%2e")];
    let format = (dot, "[a-zA-Z0-9]{0,5}").prop_map(|(dot, ext)| format!("{dot}{ext}"));
    let params = "[a-z0-9=]{0,8}".prop_map(|p| format!(";{p}"));
    prop_oneof![
        3 => Just(String::new()),
        2 => format.clone(),
        2 => params.clone(),
        1 => (format.clone(), params.clone()).prop_map(|(f, p)| f + &p),
        1 => (params, format).prop_map(|(p, f)| p + &f),
    ]
}

/// One segment's spelling: the slashes before it, each letter, and its suffix.
#[derive(Debug, Clone)]
struct Segment {
    slashes: usize,
    letters: Vec<Letter>,
    suffix: String,
}

fn segment() -> impl Strategy<Value = Segment> {
    (1usize..=3, proptest::collection::vec(letter(), 32), suffix()).prop_map(|(slashes, letters, suffix)| {
        Segment {
            slashes,
            letters,
            suffix,
        }
    })
}

/// A spelling of the login route `(prefix, login)` from [`ROUTES`]: the prefix as configured
/// (it is matched as sent), then every further segment of the login spelled, then up to two
/// trailing slashes.
#[derive(Debug, Clone)]
struct Spelling {
    route: usize,
    segments: Vec<Segment>,
    trailing: usize,
}

fn spelling() -> impl Strategy<Value = Spelling> {
    (
        0..ROUTES.len(),
        proptest::collection::vec(segment(), 3),
        0usize..=2,
    )
        .prop_map(|(route, segments, trailing)| Spelling {
            route,
            segments,
            trailing,
        })
}

impl Spelling {
    fn route(&self) -> (&'static str, &'static str) {
        ROUTES[self.route]
    }

    /// The path, with `extra` appended to the last segment's name, before its suffix.
    fn write(&self, extra: &str) -> String {
        let (prefix, login) = self.route();
        let prefix = prefix.trim_end_matches('/');
        let names: Vec<&str> = login[prefix.len()..]
            .split('/')
            .filter(|s| !s.is_empty())
            .collect();
        let mut out = prefix.to_owned();
        for (i, (name, spelled)) in names.iter().zip(&self.segments).enumerate() {
            out.push_str(&"/".repeat(spelled.slashes));
            for (c, letter) in name.chars().zip(&spelled.letters) {
                spell_char(&mut out, c, letter);
            }
            if i + 1 == names.len() {
                out.push_str(extra);
            }
            out.push_str(&spelled.suffix);
        }
        out.push_str(&"/".repeat(self.trailing));
        out
    }
}

/// `//a///b/` → `/a/b/`: what tokenjar forwards for a path after the prefix.
fn collapsed(rest: &str) -> String {
    let mut out: String = rest
        .split('/')
        .filter(|s| !s.is_empty())
        .flat_map(|s| ["/", s])
        .collect();
    if rest.ends_with('/') {
        out.push('/');
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(1024))]

    /// Every spelling is the login, and goes upstream as sent (slashes collapsed): the
    /// suffix and the Unicode letters are the API's to read.
    #[test]
    fn every_spelling_of_the_login_route_is_intercepted(spelling in spelling()) {
        let (prefix, login) = spelling.route();
        let path = spelling.write("");
        let rest = collapsed(&path[prefix.trim_end_matches('/').len()..]);
        prop_assert_eq!(
            routes(prefix, login).classify(&path),
            Ok(Route::Proxy { rest, login: true }),
            "{} as {:?}", login, path
        );
    }

    /// One more letter or digit on the name makes another route: the comparison is not
    /// so lenient that it takes in the API's other endpoints.
    #[test]
    fn a_spelling_with_a_longer_name_is_not_the_login(
        spelling in spelling(),
        extra in "[a-zA-Z0-9]",
    ) {
        let (prefix, login) = spelling.route();
        let path = spelling.write(&extra);
        prop_assert!(
            matches!(routes(prefix, login).classify(&path), Ok(Route::Proxy { login: false, .. })),
            "{} as {:?}", login, path
        );
    }
}

/// Escapes and characters that exercise the Unicode work: bytes that are not UTF-8 alone,
/// characters NFKC grows (U+FDFA is 18 characters), combining marks, `İ` and the case letters,
/// fullwidth `.` `;` `/`, invisible characters, and the path tricks themselves.
#[rustfmt::skip]
const UNICODE_ATOMS: &[&str] = &[
    "%C4", "%B1", "%C4%B1", "%C4%B0", "İ", "ı", "ſ", "K", "ß", "ẞ", "%EF%B7%BA", "ﷺ", "%CC%87",
    "%E2%80%8B", "%EF%BC%8E", "．", "；", "／", "%EF%BC%8F", "%ff", "%", ".", "..", ";", "/", "%2e",
    "%2F", "login", "L", "a",
];

proptest! {
    #![proptest_config(config(1024))]

    #[test]
    fn classify_never_panics_on_any_string(path in any::<String>()) {
        for (prefix, login) in ROUTES {
            let _ = routes(prefix, login).classify(&path);
            let _ = routes(prefix, login).classify(&format!("/api/{path}"));
        }
    }

    #[test]
    fn classify_never_panics_on_unicode_tricks(
        atoms in proptest::collection::vec(proptest::sample::select(UNICODE_ATOMS), 0..24),
    ) {
        let path = format!("/api/{}", atoms.concat());
        for (prefix, login) in ROUTES {
            let _ = routes(prefix, login).classify(&path);
        }
    }
}

/// The generator reaches what it claims to: Unicode letters raw and encoded, suffixes of both
/// kinds and extra slashes, so the property does not pass on ASCII alone.
#[test]
fn the_spelling_generator_reaches_every_kind_of_spelling() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let strategy = spelling();
    let paths: Vec<String> = (0..2000)
        .map(|_| strategy.new_tree(&mut runner).unwrap().current().write(""))
        .collect();
    for needle in [
        "ı", "%C4%B1", "%c4%b1", "İ", "ſ", "\u{212A}", "ｌ", "%EF%BD", "%6C", "%6c", "L", ".", "%2E", ";",
        "//",
    ] {
        assert!(
            paths.iter().any(|p| p.contains(needle)),
            "no generated spelling holds {needle:?}"
        );
    }
    assert!(paths.iter().any(|p| p.ends_with('/')));
    assert!(paths
        .iter()
        .any(|p| p.starts_with("/login") || p.starts_with("//")));
}
