//! Hostile cookies against the real binary: malformed and stuffed `Cookie`
//! headers, a tossed cookie beside the victim's, tampered sealed values,
//! and non-UTF-8 bytes in headers.
//!
//! Like every `hostile_*` target, each case checks the exact answer (and
//! SPEC §8 code where tokenjar answers), what the recording API received
//! (nothing, or only the sanitised request), and that the same process
//! still serves a good session afterwards. Each test prints `hostile: <case>
//! -> <status> <code> ...` per case when it ends, so a run's output lists
//! every input and its outcome (tests/support/hostile.rs).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine as _;
use serde_json::{json, Value};
use tokenjar_e2e::api::CannedReply;
use tokenjar_e2e::hostile::{cookie_line, get_with, Scene, Tally};
use tokenjar_e2e::metrics::metric_sum;
use tokenjar_e2e::{spawn_app, Reply, TestApp, KEY_1, KEY_2};

/// The `Set-Cookie` for `auth-token` in `reply`: `Some(true)` if it deletes
/// the cookie (`Max-Age=0`, empty value), `Some(false)` if it sets a value,
/// `None` if there is none.
fn auth_cookie_deleted(reply: &Reply) -> Option<bool> {
    reply
        .set_cookie_for("auth-token")
        .map(|c| c.max_age() == Some(0) && c.value.is_empty())
}

/// What a set of `Cookie` header lines must amount to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// The good cookie among them is used.
    LoggedIn,
    /// No usable auth cookie; a refused one is deleted.
    NoCookie { deleted: bool },
}

/// Sends `GET /api/echo` and `GET /api/session` with the given `Cookie`
/// header lines and checks them against `expect`: the token the API got,
/// the session answer and the cookie deletion. Returns a note for the tally.
fn check_cookies(scene: &Scene, case: &str, lines: &[Vec<u8>], expect: Expect) -> String {
    let lines: Vec<&[u8]> = lines.iter().map(Vec::as_slice).collect();
    let before = scene.seen();
    let echo = scene
        .raw(&get_with(b"/api/echo", &lines))
        .unwrap_or_else(|| panic!("{case}: no answer"));
    if echo.status == 431 || (echo.status == 400 && serde_json::from_slice::<Value>(&echo.body).is_err()) {
        // actix-web refused the head itself: tokenjar never saw the request.
        assert!(
            scene.seen_since(before).is_empty(),
            "{case}: refused, yet forwarded"
        );
        return format!("{} - (refused by the HTTP server, API saw nothing)", echo.status);
    }
    assert_eq!(echo.status, 200, "{case}: {}", echo.text());
    let seen = scene.seen_since(before);
    assert_eq!(
        seen.len(),
        1,
        "{case}: the API should get exactly the echo request"
    );
    let seen = &seen[0];
    assert_eq!(seen.target, "/v1/echo", "{case}");
    assert!(
        seen.header_all("cookie").is_empty(),
        "{case}: the Cookie header reached the API"
    );
    let session = scene
        .raw(&get_with(b"/api/session", &lines))
        .unwrap_or_else(|| panic!("{case}: no session answer"));
    assert_eq!(session.status, 200, "{case}: {}", session.text());
    match expect {
        Expect::LoggedIn => {
            assert_eq!(
                seen.header_all("auth-token"),
                vec![scene.token.as_str()],
                "{case}: the API should get the good cookie's token"
            );
            assert_eq!(session.json()["loggedIn"], true, "{case}: {}", session.text());
            assert_eq!(auth_cookie_deleted(&echo), None, "{case}: {:?}", echo.headers);
            assert_eq!(
                auth_cookie_deleted(&session),
                None,
                "{case}: {:?}",
                session.headers
            );
            "200 - (logged in, API got the cookie's token)".to_owned()
        }
        Expect::NoCookie { deleted } => {
            assert!(
                seen.header_all("auth-token").is_empty(),
                "{case}: the API got a token: {:?}",
                seen.headers
            );
            assert_eq!(session.json(), json!({"loggedIn": false}), "{case}");
            let want = deleted.then_some(true);
            assert_eq!(
                auth_cookie_deleted(&echo),
                want,
                "{case}: echo {:?}",
                echo.headers
            );
            assert_eq!(
                auth_cookie_deleted(&session),
                want,
                "{case}: session {:?}",
                session.headers
            );
            format!(
                "200 - (no cookie: API got no token, session loggedIn=false, {})",
                if deleted {
                    "cookie deleted Max-Age=0"
                } else {
                    "nothing deleted"
                }
            )
        }
    }
}

#[actix_web::test]
async fn malformed_and_stuffed_cookie_headers_never_yield_a_foreign_token() {
    let mut scene = Scene::start(&[]).await;
    let mut tally = Tally::new();
    let good = scene.cookie.clone();
    let no = |deleted| Expect::NoCookie { deleted };

    // A huge auth cookie and a huge neighbour of the good one (64 KiB each:
    // under actix-web's 128 KiB head limit, so tokenjar sees them).
    let big = "A".repeat(64 * 1024);
    let junk: Vec<String> = (0..100).map(|i| format!("auth-token=junk{i}")).collect();
    let junk = junk.join("; ");

    let cases: Vec<(&str, Vec<Vec<u8>>, Expect)> = vec![
        // A name without `=` is no cookie at all: nothing to delete.
        ("Cookie: auth-token", vec![cookie_line(b"auth-token")], no(false)),
        // An empty value is an auth cookie that does not open.
        (
            "Cookie: auth-token=;;;",
            vec![cookie_line(b"auth-token=;;;")],
            no(true),
        ),
        ("Cookie: =;=", vec![cookie_line(b"=;=")], no(false)),
        ("Cookie: ;", vec![cookie_line(b";")], no(false)),
        ("Cookie: (empty)", vec![cookie_line(b"")], no(false)),
        (
            "Cookie: auth-token=\"abc (unbalanced quote)",
            vec![cookie_line(b"auth-token=\"abc")],
            no(true),
        ),
        (
            "Cookie: auth-token=\"<good> (good value behind an unbalanced quote)",
            vec![cookie_line(format!("auth-token=\"{}", scene.sealed()).as_bytes())],
            no(true),
        ),
        (
            "Cookie: x=\"abc; <good> (unbalanced quote in a neighbour)",
            vec![cookie_line(format!("x=\"abc; {good}").as_bytes())],
            Expect::LoggedIn,
        ),
        (
            "two Cookie lines, good cookie in the second",
            vec![cookie_line(b"theme=dark; lang=en"), cookie_line(good.as_bytes())],
            Expect::LoggedIn,
        ),
        (
            "two Cookie lines, junk auth-token first, good second",
            vec![cookie_line(b"auth-token=junk"), cookie_line(good.as_bytes())],
            Expect::LoggedIn,
        ),
        (
            "Cookie: auth-token=<64 KiB>",
            vec![cookie_line(format!("auth-token={big}").as_bytes())],
            no(true),
        ),
        (
            "Cookie: pad=<64 KiB>; <good>",
            vec![cookie_line(format!("pad={big}; {good}").as_bytes())],
            Expect::LoggedIn,
        ),
        // Every auth cookie is tried: junk placed first (stuffed by a
        // neighbour, to log the user out) neither hides the good cookie nor
        // gets it deleted.
        (
            "Cookie: 4 junk auth-token pairs then the good one",
            vec![cookie_line(
                format!("auth-token=a; auth-token=b; auth-token=c; auth-token=d; {good}").as_bytes(),
            )],
            Expect::LoggedIn,
        ),
        (
            "Cookie: 100 junk auth-token pairs then the good one",
            vec![cookie_line(format!("{junk}; {good}").as_bytes())],
            Expect::LoggedIn,
        ),
        (
            "100 junk auth-token pairs in one Cookie line, the good one in the next",
            vec![cookie_line(junk.as_bytes()), cookie_line(good.as_bytes())],
            Expect::LoggedIn,
        ),
        (
            "Cookie: 1000 copies of one junk pair then the good one",
            vec![cookie_line(
                format!("{}{good}", "auth-token=junk; ".repeat(1000)).as_bytes(),
            )],
            Expect::LoggedIn,
        ),
        (
            "Cookie: the good auth-token then 100 junk pairs",
            vec![cookie_line(format!("{good}; {junk}").as_bytes())],
            Expect::LoggedIn,
        ),
    ];
    for (case, lines, expect) in cases {
        let outcome = check_cookies(&scene, case, &lines, expect);
        tally.note(case, outcome);
        scene.assert_alive(case);
    }
    scene.assert_still_serving().await;
}

#[actix_web::test]
async fn a_tossed_cookie_beside_the_victims_yields_no_session_and_deletes_nothing() {
    // The victim's session is the scene's; the attacker logs in through the
    // same tokenjar and plants that cookie in the victim's browser (from a
    // sibling subdomain, with a longer path, so that it is sent first).
    let scene = Scene::start(&[]).await;
    let mut tally = Tally::new();
    let victim = scene.cookie.clone();
    let attacker = scene.app.login_cookie().await;
    let attacker_token = scene.api.last_issued().token;
    assert_ne!(attacker_token, scene.token, "two logins, two tokens");
    let metrics_before = scene.app.get_api("/metrics", None).await.text();

    let no_deletion = Expect::NoCookie { deleted: false };
    let cases: Vec<(&str, Vec<Vec<u8>>)> = vec![
        (
            "Cookie: <attacker's>; <victim's>",
            vec![cookie_line(format!("{attacker}; {victim}").as_bytes())],
        ),
        (
            "Cookie: <victim's>; <attacker's>",
            vec![cookie_line(format!("{victim}; {attacker}").as_bytes())],
        ),
        (
            "two Cookie lines, the attacker's first",
            vec![cookie_line(attacker.as_bytes()), cookie_line(victim.as_bytes())],
        ),
        (
            "Cookie: junk, <attacker's>, junk, <victim's>",
            vec![cookie_line(
                format!("auth-token=a; {attacker}; auth-token=b; {victim}").as_bytes(),
            )],
        ),
    ];
    for (case, lines) in &cases {
        // No token at all upstream (neither the attacker's nor the victim's),
        // `loggedIn: false`, and no Set-Cookie deleting anything.
        let outcome = check_cookies(&scene, case, lines, no_deletion);
        tally.note(case, outcome);
    }
    // Each request above (an echo and a session per case) was counted as a
    // conflict, and none as a deletion.
    let metrics = scene.app.get_api("/metrics", None).await.text();
    let grew = |name: &str| metric_sum(&metrics, name, &[]) - metric_sum(&metrics_before, name, &[]);
    let requests = (2 * cases.len()) as f64;
    assert_eq!(grew("tokenjar_cookie_conflicts_total"), requests, "{metrics}");
    assert_eq!(grew("tokenjar_cookies_rejected_total"), 0.0, "{metrics}");
    // Logged once per request, naming neither value nor token.
    let logs = scene.app.logs();
    let conflicts: Vec<&String> = logs
        .iter()
        .filter(|l| l.contains("auth cookies open to different sessions"))
        .collect();
    assert_eq!(conflicts.len(), 2 * cases.len(), "{}", logs.join("\n"));
    for secret in [&attacker_token, &scene.token, &attacker, &victim] {
        let (_, tail) = secret.split_at(secret.len() - 16);
        assert!(
            !logs.iter().any(|l| l.contains(tail)),
            "a cookie or token reached the log:\n{}",
            logs.join("\n")
        );
    }
    // Each cookie alone is still its owner's session: nothing was deleted
    // or spoiled, and the victim is back once the tossed cookie is gone.
    for (who, cookie, token) in [
        ("victim", &victim, &scene.token),
        ("attacker", &attacker, &attacker_token),
    ] {
        let before = scene.seen();
        let echo = scene.app.get_api("/api/echo", Some(cookie)).await;
        assert_eq!(echo.status, 200, "{who}: {}", echo.text());
        assert_eq!(
            scene.seen_since(before)[0].header_all("auth-token"),
            vec![token.as_str()],
            "{who}"
        );
    }
    tally.note(
        "each cookie alone afterwards",
        "200 - (its own token upstream: nothing was deleted)",
    );
}

/// Logs in (up to 64 times) until the sealed value satisfies `wanted`; the
/// value. Sealed values are random, so a wanted character (`+` or `/`) turns
/// up within a login or two.
async fn sealed_where(app: &TestApp, wanted: impl Fn(&str) -> bool) -> String {
    for _ in 0..64 {
        let pair = app.login_cookie().await;
        let value = pair.split_once('=').unwrap().1.to_owned();
        if wanted(&value) {
            return value;
        }
    }
    panic!("no sealed value of the wanted shape in 64 logins");
}

#[actix_web::test]
async fn tampered_sealed_cookies_count_as_no_cookie() {
    let mut scene = Scene::start(&[]).await;
    let mut tally = Tally::new();
    let sealed = scene.sealed().to_owned();

    let mut flipped = STANDARD
        .decode(&sealed)
        .expect("the sealed value is standard base64");
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x01;
    let flipped = STANDARD.encode(flipped);
    let flipped_last = {
        let mut raw = STANDARD.decode(&sealed).unwrap();
        *raw.last_mut().unwrap() ^= 0x80;
        STANDARD.encode(raw)
    };
    let url_source = sealed_where(&scene.app, |v| v.contains(['+', '/'])).await;
    let url_safe = URL_SAFE.encode(STANDARD.decode(&url_source).unwrap());
    // Sealed bytes are 12 (nonce) + 1 (`:`, no expiry) + token + 16 (tag):
    // a 20-byte opaque token makes 49 bytes, whose base64 ends in `==`.
    scene.api.push_login_reply(CannedReply::json(
        200,
        &json!({"authToken": "opaque-token-20-byte"}),
    ));
    let padded = scene.app.login("demo", "demo").await;
    assert_eq!(padded.status, 200, "{}", padded.text());
    let padded = padded.set_cookie_for("auth-token").expect("a cookie").value;
    assert!(padded.ends_with("=="), "{padded}");
    let unpadded = padded.trim_end_matches('=').to_owned();
    let url_safe_unpadded = URL_SAFE_NO_PAD.encode(STANDARD.decode(&padded).unwrap());

    // The same keys, another cookie name: the name is the AEAD's associated
    // data, so the value must not open as `auth-token`.
    let other_name = {
        let other = spawn_app(&scene.api.url("/v1"), &[("TOKENJAR_COOKIE__NAME", "other")]);
        let reply = other.login("demo", "demo").await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        let cookie = reply.set_cookie_for("other").expect("a cookie named other");
        // It does open where it belongs.
        assert_eq!(other.session(Some(&cookie.pair())).await.json()["loggedIn"], true);
        cookie.value
    };

    let cases: Vec<(&str, String)> = vec![
        ("one bit flipped (middle byte)", flipped),
        ("one bit flipped (last byte)", flipped_last),
        ("truncated by 4 characters", sealed[..sealed.len() - 4].to_owned()),
        ("truncated by 1 character", sealed[..sealed.len() - 1].to_owned()),
        ("truncated to 16 characters", sealed[..16].to_owned()),
        ("re-encoded url-safe alphabet", url_safe),
        ("re-encoded padding stripped", unpadded),
        ("re-encoded url-safe, no padding", url_safe_unpadded),
        ("sealed under cookie name `other`, sent as auth-token", other_name),
    ];
    for (case, value) in cases {
        assert_ne!(value, sealed, "{case}: the tampered value must differ");
        let lines = vec![cookie_line(format!("auth-token={value}").as_bytes())];
        let outcome = check_cookies(&scene, case, &lines, Expect::NoCookie { deleted: true });
        tally.note(case, outcome);
        scene.assert_alive(case);
    }
    // The source values themselves were good.
    for value in [&url_source, &padded] {
        let line = cookie_line(format!("auth-token={value}").as_bytes());
        let reply = scene.raw(&get_with(b"/api/session", &[&line])).unwrap();
        assert_eq!(reply.json()["loggedIn"], true, "untampered source value");
    }

    // Sealed with a retired key: log in under K1, restart with K2 only.
    let retired = {
        let k1 = spawn_app(&scene.api.url("/v1"), &[("TOKENJAR_COOKIE__KEYS", KEY_1)]);
        k1.login_cookie().await
    };
    let mut k2 = spawn_app(&scene.api.url("/v1"), &[("TOKENJAR_COOKIE__KEYS", KEY_2)]);
    let before = scene.seen();
    let echo = k2.get_api("/api/echo", Some(&retired)).await;
    assert_eq!(echo.status, 200, "{}", echo.text());
    let seen = scene.seen_since(before);
    assert_eq!(seen.len(), 1);
    assert!(
        seen[0].header_all("auth-token").is_empty(),
        "{:?}",
        seen[0].headers
    );
    assert_eq!(auth_cookie_deleted(&echo), Some(true), "{:?}", echo.headers);
    let session = k2.session(Some(&retired)).await;
    assert_eq!(session.json(), json!({"loggedIn": false}));
    assert_eq!(auth_cookie_deleted(&session), Some(true));
    tally.reply(
        "sealed under a retired key (K1 cookie, restarted with K2 only)",
        &echo,
        "no cookie: API got no token, session loggedIn=false, cookie deleted Max-Age=0",
    );
    // The restarted instance still serves its own sessions.
    let fresh = k2.login_cookie().await;
    assert_eq!(k2.session(Some(&fresh)).await.json()["loggedIn"], true);
    assert!(k2.exit_status().is_none());

    scene.assert_still_serving().await;
}

#[actix_web::test]
async fn non_utf8_header_bytes_pass_and_the_good_cookie_still_works() {
    let mut scene = Scene::start(&[]).await;
    let mut tally = Tally::new();

    let before = scene.seen();
    let reply = scene
        .raw(&get_with(b"/api/echo", &[b"X-Thing: \xff\xfe"]))
        .expect("an answer");
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = scene.seen_since(before);
    assert_eq!(seen.len(), 1);
    // The recording API reads values lossily: the two bytes arrived as such.
    assert_eq!(seen[0].header_all("x-thing"), vec!["\u{fffd}\u{fffd}"]);
    tally.reply("X-Thing: \\xff\\xfe", &reply, "forwarded as is");

    let good = scene.cookie.clone();
    for (case, line) in [
        (
            "Cookie: junk=\\xff\\xfe; <good>",
            [b"Cookie: junk=\xff\xfe; ".as_slice(), good.as_bytes()].concat(),
        ),
        (
            "Cookie: <good>; junk=\\xff\\xfe",
            [b"Cookie: ".as_slice(), good.as_bytes(), b"; junk=\xff\xfe"].concat(),
        ),
        (
            "Cookie: \\xff\\xfe=\\x80; <good>",
            [b"Cookie: \xff\xfe=\x80; ".as_slice(), good.as_bytes()].concat(),
        ),
    ] {
        let line = line.strip_prefix(b"Cookie: ").unwrap().to_vec();
        let outcome = check_cookies(&scene, case, &[cookie_line(&line)], Expect::LoggedIn);
        tally.note(case, outcome);
        scene.assert_alive(case);
    }
    let case = "Cookie: auth-token=\\xff\\xfe";
    let outcome = check_cookies(
        &scene,
        case,
        &[cookie_line(b"auth-token=\xff\xfe")],
        Expect::NoCookie { deleted: true },
    );
    tally.note(case, outcome);
    scene.assert_still_serving().await;
}
