//! Headless Chromium against `tokenjar demo` (SPEC §10, with §5–§7): a real
//! browser logs in, calls the API, reloads and logs out while neither the page
//! nor a script injected into it can read the token, and a page on another
//! origin cannot log the user out; a page's `EventSource` gets the API's
//! server-sent events through tokenjar one by one, and a page's `WebSocket`
//! reaches the API as the logged-in user (SPEC §13); the demo in OIDC mode
//! logs in at the real test OpenID Provider and out there (SPEC §16).
//!
//! Each test starts its own demo, chromedriver (port 0) and Chromium (fresh
//! profile), so the tests run in parallel. Without Chromium or chromedriver a
//! test prints `skipped: …` and passes, except under `CI=true`, where it fails.
//! Screenshots land in `target/browser-artifacts/`; `E2E_UPDATE_DOCS=1` also
//! refreshes `docs/demo.png`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead as _, BufReader};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpResponse, HttpServer};
use fantoccini::cookies::Cookie;
use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{json, Value};
use tokenjar_e2e::api::CannedReply;
use tokenjar_e2e::external::{find_program, programs_or_skip, send_signal, target_dir};
use tokenjar_e2e::metrics::metric_sum;
use tokenjar_e2e::oidc_provider::{OidcProvider, ProviderSettings};
use tokenjar_e2e::pattern::make_jwt;
use tokenjar_e2e::{spawn_custom, unix_now, workspace_root, TempDir, TestApp};

/// Where Debian's `chromium` package puts the browser; the session asks for it
/// by path so chromedriver never goes looking for a Chrome of its own.
const CHROMIUM: &str = "/usr/bin/chromium";

/// Longest wait for anything the page does (a login is a few milliseconds;
/// this only bounds a broken run on a busy 2-core machine).
const WAIT: Duration = Duration::from_secs(20);

/// How often a waited-for condition is re-checked.
const POLL: Duration = Duration::from_millis(50);

/// The browser window, also the size of `docs/demo.png`.
const WINDOW: (u32, u32) = (1100, 760);

/// The name of the demo's auth cookie.
const COOKIE: &str = "auth-token";

/// chromedriver on port 0, in its own process group so that the browser it
/// starts can be killed with it if a test fails half-way.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    fn start(program: &Path) -> Self {
        let mut child = Command::new(program)
            .arg("--port=0")
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| panic!("could not start {}: {err}", program.display()));
        // chromedriver announces the port it bound once it accepts sessions.
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.split("started successfully on port ").nth(1) {
                    let port: String = rest.chars().take_while(char::is_ascii_digit).collect();
                    let _ = tx.send(port.parse::<u16>().ok());
                }
            }
        });
        let port = rx.recv_timeout(WAIT).ok().flatten();
        let driver = Self {
            child,
            url: port
                .map(|port| format!("http://127.0.0.1:{port}"))
                .unwrap_or_default(),
        };
        // Built before the check so that a panic still kills chromedriver.
        assert!(
            port.is_some(),
            "chromedriver did not report its port within {WAIT:?}"
        );
        driver
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        send_signal(self.child.id(), "KILL", true);
        let _ = self.child.wait();
    }
}

/// A Chromium session; [`Browser::close`] ends it, dropping it kills it.
struct Browser {
    client: Client,
    // Fields drop in order: chromedriver goes before its profile is removed.
    _driver: Driver,
    profile: TempDir,
}

impl Browser {
    /// Starts chromedriver and Chromium, or returns `None` (after printing
    /// why) when they are not installed and this is not CI.
    async fn open() -> Option<Self> {
        Self::open_with(&[]).await
    }

    /// The same, with more Chromium command-line switches.
    async fn open_with(extra_args: &[String]) -> Option<Self> {
        let found = vec![
            Some(PathBuf::from(CHROMIUM)).filter(|path| path.is_file()),
            find_program("chromedriver", &["/usr/bin/chromedriver"]),
        ];
        let found = programs_or_skip(
            found,
            "chromium/chromedriver",
            "apt-get install chromium chromium-driver",
        )?;
        let driver = Driver::start(&found[1]);
        let profile = TempDir::new("chromium-profile");
        let mut args: Vec<String> = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
        ]
        .map(str::to_owned)
        .into();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        args.extend(extra_args.iter().cloned());
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".to_owned(),
            json!({ "binary": found[0], "args": args }),
        );
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&driver.url)
            .await
            .unwrap_or_else(|err| panic!("chromedriver at {} gave no session: {err}", driver.url));
        size_viewport(&client).await;
        Some(Self {
            client,
            _driver: driver,
            profile,
        })
    }

    /// Ends the session (chromedriver then quits Chromium).
    async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}

impl std::ops::Deref for Browser {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Runs on every exit, a panic included: any Chromium process still
        // using this test's profile was started by this test.
        kill_leftovers(self.profile.path());
    }
}

/// Sizes the window so that the page's viewport (what a screenshot shows)
/// is [`WINDOW`]: headless Chromium still counts a window frame.
async fn size_viewport(client: &Client) {
    let inner = "return [window.innerWidth, window.innerHeight]";
    let (mut width, mut height) = WINDOW;
    for _ in 0..2 {
        client
            .set_window_size(width, height)
            .await
            .expect("set the window size");
        let seen = client
            .execute(inner, vec![])
            .await
            .expect("read the viewport size");
        let seen = (seen[0].as_u64().unwrap_or(0), seen[1].as_u64().unwrap_or(0));
        if seen == (u64::from(WINDOW.0), u64::from(WINDOW.1)) {
            return;
        }
        let grow =
            |want: u32, window: u32, got: u64| window + want.saturating_sub(u32::try_from(got).unwrap_or(0));
        width = grow(WINDOW.0, width, seen.0);
        height = grow(WINDOW.1, height, seen.1);
    }
}

/// Kills processes whose command line names `profile`: this test's Chromium
/// and its helpers, whichever process group they put themselves in.
fn kill_leftovers(profile: &Path) {
    let marker = format!("--user-data-dir={}", profile.display());
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if cmdline.split(|b| *b == 0).any(|arg| arg == marker.as_bytes()) {
            send_signal(pid, "KILL", false);
        }
    }
}

/// `tokenjar demo` on a free port, with one worker (the tests are small and
/// the machine has two cores).
fn start_demo() -> TestApp {
    spawn_custom(
        TempDir::new("demo-config"),
        Some("demo"),
        None,
        &[("TOKENJAR_SERVER__WORKERS", "1")],
    )
}

/// Visible text of the page, for failure messages.
async fn page_text(client: &Client) -> String {
    client
        .execute("return location.href + '\\n' + document.body.innerText", vec![])
        .await
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "(page not readable)".to_owned())
}

/// Waits until the CSS selector matches an element.
async fn wait_for(client: &Client, css: &str) -> Element {
    match client
        .wait()
        .at_most(WAIT)
        .every(POLL)
        .for_element(Locator::Css(css))
        .await
    {
        Ok(element) => element,
        Err(err) => panic!(
            "waited {WAIT:?} for `{css}`: {err}\npage:\n{}",
            page_text(client).await
        ),
    }
}

/// Waits until `script`'s result satisfies `done` and returns it.
async fn wait_until(client: &Client, script: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let value = client.execute(script, vec![]).await.unwrap_or(Value::Null);
        if done(&value) {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "waited {WAIT:?} for {what}; last: {value}\npage:\n{}",
            page_text(client).await
        );
        actix_rt::time::sleep(POLL).await;
    }
}

/// Loads the demo page and waits until its script has asked for the session.
async fn open_demo(client: &Client, app: &TestApp, logged_in: bool) {
    client.goto(&app.url("/")).await.expect("load the demo page");
    wait_for(client, &format!("#state[data-logged-in=\"{logged_in}\"]")).await;
}

/// Clicks the page's button `id` and returns the HTTP status the page shows
/// for that call (`#output[data-status]`, cleared first so an older status
/// cannot answer).
async fn press(client: &Client, id: &str) -> u16 {
    client
        .execute("delete document.getElementById('output').dataset.status", vec![])
        .await
        .expect("clear the last status");
    client
        .find(Locator::Id(id))
        .await
        .unwrap_or_else(|err| panic!("no #{id} on the page: {err}"))
        .click()
        .await
        .unwrap_or_else(|err| panic!("click #{id}: {err}"));
    let output = wait_for(client, "#output[data-status]").await;
    let status = output.attr("data-status").await.expect("read data-status");
    status
        .as_deref()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("#{id}: unreadable status {status:?}"))
}

/// Logs in through the page's form and waits for the page to show it.
async fn log_in(client: &Client) {
    assert_eq!(press(client, "login").await, 200, "login through the page");
    wait_for(client, "#state[data-logged-in=\"true\"]").await;
}

/// The auth cookie as the browser stores it (WebDriver sees HttpOnly cookies,
/// page scripts do not).
async fn auth_cookie(client: &Client) -> Option<Cookie<'static>> {
    cookie_named(client, COOKIE).await
}

/// The browser's cookie called `name`.
async fn cookie_named(client: &Client, name: &str) -> Option<Cookie<'static>> {
    client
        .get_all_cookies()
        .await
        .expect("read the browser's cookies")
        .into_iter()
        .find(|cookie| cookie.name() == name)
}

/// Whether `text` holds something shaped like a JWT (`ey….ey….`): the demo
/// API's tokens are JWTs, whose first two parts are base64url JSON objects.
fn looks_like_jwt(text: &str) -> bool {
    let bytes = text.as_bytes();
    let base64url = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
    // One `ey….` part starting at `at`; the index just after its dot.
    let part = |at: usize| -> Option<usize> {
        if !bytes.get(at..)?.starts_with(b"ey") {
            return None;
        }
        let end = at + 2 + bytes[at + 2..].iter().take_while(|b| base64url(**b)).count();
        (bytes.get(end) == Some(&b'.')).then_some(end + 1)
    };
    (0..bytes.len()).any(|at| part(at).and_then(part).is_some())
}

/// Writes a screenshot to `target/browser-artifacts/NAME`.
fn save_artefact(name: &str, png: &[u8]) -> PathBuf {
    let dir = target_dir().join("browser-artifacts");
    std::fs::create_dir_all(&dir).expect("create target/browser-artifacts");
    let path = dir.join(name);
    std::fs::write(&path, png).expect("write the screenshot");
    path
}

/// Width and height of a PNG, from its IHDR chunk.
fn png_size(png: &[u8]) -> (u32, u32) {
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 24,
        "not a PNG"
    );
    let word = |at: usize| u32::from_be_bytes([png[at], png[at + 1], png[at + 2], png[at + 3]]);
    (word(16), word(20))
}

#[test]
fn the_jwt_detector_recognises_tokens() {
    let token = make_jwt(unix_now() + 60);
    assert!(looks_like_jwt(&token));
    assert!(looks_like_jwt(&format!("{{\"authToken\":\"{token}\"}}")));
    assert!(!looks_like_jwt("eyes.eyebrows"), "needs two dotted parts");
    assert!(!looks_like_jwt(r#"{"loggedIn":true,"expiresAt":1700000000}"#));
    assert!(!looks_like_jwt(""));
}

/// The demo page round trip: log in, call the API, reload, log out, with no
/// token ever visible to the page.
#[actix_web::test]
async fn the_demo_page_logs_in_calls_the_api_and_logs_out() {
    let Some(browser) = Browser::open().await else {
        return;
    };
    let app = start_demo();
    let started = Instant::now();

    open_demo(&browser, &app, false).await;
    assert_eq!(press(&browser, "me").await, 401, "GET /api/me before logging in");

    log_in(&browser).await;
    let cookie = auth_cookie(&browser)
        .await
        .expect("the login set the auth cookie");
    assert_eq!(
        cookie.http_only(),
        Some(true),
        "the auth cookie must be HttpOnly: {cookie}"
    );
    assert!(!cookie.value().is_empty());
    assert_eq!(
        cookie.same_site().map(|s| s.to_string()).as_deref(),
        Some("Lax"),
        "{cookie}"
    );
    // SPEC §6: the browser keeps the cookie until the token expires.
    let session = browser
        .execute_async(
            "fetch('/api/session').then((r) => r.json()).then(arguments[0])",
            vec![],
        )
        .await
        .expect("read the session");
    let expires_at = session["expiresAt"]
        .as_i64()
        .expect("expiresAt for a JWT session");
    let expiry = cookie.expires_datetime().map(|t| t.unix_timestamp());
    assert!(
        expiry.is_some_and(|e| (e - expires_at).abs() <= 2),
        "cookie expiry {expiry:?} should follow the token's exp {expires_at}: {cookie}"
    );

    let visible = browser.execute("return document.cookie", vec![]).await.unwrap();
    let visible = visible.as_str().expect("document.cookie is a string");
    assert!(
        !visible.contains(COOKIE) && !visible.contains(cookie.value()) && !looks_like_jwt(visible),
        "document.cookie shows the auth cookie: {visible:?}"
    );
    let verdict = wait_for(&browser, "#verdict").await.text().await.unwrap();
    assert!(
        verdict.starts_with("No token is visible"),
        "the page's verdict: {verdict:?}"
    );
    let shot = browser.screenshot().await.expect("screenshot");
    let path = save_artefact("after-login.png", &shot);
    assert_eq!(png_size(&shot), WINDOW, "screenshot size ({})", path.display());

    assert_eq!(press(&browser, "me").await, 200, "GET /api/me when logged in");
    let output = browser
        .find(Locator::Id("output"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        output.contains("\"demo\""),
        "the API should name the user: {output}"
    );
    wait_for(&browser, "#state[data-logged-in=\"true\"]").await;
    let shot = browser.screenshot().await.expect("screenshot");
    save_artefact("after-me.png", &shot);
    if std::env::var("E2E_UPDATE_DOCS").is_ok_and(|v| v == "1") {
        std::fs::write(workspace_root().join("docs/demo.png"), &shot).expect("write docs/demo.png");
    }

    // The session lives in the cookie alone, so a reload keeps it.
    browser.refresh().await.expect("reload");
    wait_for(&browser, "#state[data-logged-in=\"true\"]").await;
    assert_eq!(press(&browser, "me").await, 200, "GET /api/me after a reload");

    assert_eq!(press(&browser, "logout").await, 200, "POST /api/logout");
    wait_for(&browser, "#state[data-logged-in=\"false\"]").await;
    assert!(
        auth_cookie(&browser).await.is_none(),
        "the logout should delete the auth cookie"
    );
    assert_eq!(press(&browser, "me").await, 401, "GET /api/me after logging out");
    println!("browser round trip took {:?}", started.elapsed());
    browser.close().await;
}

/// What a script running in the page (e.g. injected by XSS) reads through
/// every JavaScript API that could expose the token; keys name the source.
const PROBE: &str = r#"
const done = arguments[arguments.length - 1];
(async () => {
  const seen = {};
  const headersOf = (response) => [...response.headers].map(([k, v]) => k + ": " + v).join("\n");
  const record = async (name, response) => {
    seen[name + ".status"] = String(response.status);
    seen[name + ".headers"] = headersOf(response);
    seen[name + ".body"] = await response.text();
  };
  seen["document.cookie"] = document.cookie;
  seen["cookieStore"] = typeof cookieStore === "undefined"
    ? "(no cookieStore)"
    : JSON.stringify(await cookieStore.getAll());
  await record("session", await fetch("/api/session"));
  await record("me", await fetch("/api/me"));
  // The script may use the session, and may even log in again itself: the
  // answer must not carry the fresh token either.
  await record("login", await fetch("/api/login", {
    method: "POST",
    headers: { "x-csrf": "1", "content-type": "application/json" },
    body: JSON.stringify({ username: "demo", password: "demo" }),
  }));
  await new Promise((resolve) => {
    const xhr = new XMLHttpRequest();
    xhr.open("GET", "/api/session");
    xhr.onloadend = () => {
      seen["xhr.headers"] = xhr.getAllResponseHeaders();
      seen["xhr.body"] = xhr.responseText;
      resolve();
    };
    xhr.send();
  });
  seen["localStorage"] = JSON.stringify({ ...localStorage });
  seen["sessionStorage"] = JSON.stringify({ ...sessionStorage });
  seen["performance"] = JSON.stringify(performance.getEntries().map((e) => e.name));
  seen["outerHTML"] = document.documentElement.outerHTML;
  done(seen);
})().catch((error) => done({ error: String(error) }));
"#;

/// An injected script can use the session but cannot read the token by any
/// JavaScript API.
#[actix_web::test]
async fn an_injected_script_cannot_read_the_token() {
    let Some(browser) = Browser::open().await else {
        return;
    };
    let app = start_demo();
    open_demo(&browser, &app, false).await;
    log_in(&browser).await;
    let before = auth_cookie(&browser).await.expect("auth cookie after login");
    assert_eq!(before.http_only(), Some(true), "{before}");

    let seen = browser.execute_async(PROBE, vec![]).await.expect("run the probe");
    let seen = seen.as_object().expect("the probe returns an object").clone();
    assert!(!seen.contains_key("error"), "the probe failed: {seen:?}");
    assert_eq!(seen["session.status"], "200");
    assert!(
        seen["session.body"]
            .as_str()
            .unwrap()
            .contains("\"loggedIn\":true"),
        "the script's session call should be authenticated: {}",
        seen["session.body"]
    );
    assert_eq!(
        seen["me.status"], "200",
        "the script's API call: {}",
        seen["me.body"]
    );
    assert_eq!(
        seen["login.status"], "200",
        "the script's login: {}",
        seen["login.body"]
    );

    // The probe's login sealed a fresh token: neither cookie value may show.
    let after = auth_cookie(&browser).await.expect("auth cookie after the probe");
    assert_eq!(after.http_only(), Some(true), "{after}");
    let sealed = [before.value().to_owned(), after.value().to_owned()];
    for (source, value) in &seen {
        let text = value.as_str().unwrap_or_default();
        assert!(!looks_like_jwt(text), "{source} shows a JWT: {text}");
        for value in &sealed {
            let head = &value[..value.len().min(24)];
            assert!(
                !text.contains(value.as_str()) && !text.contains(head),
                "{source} shows the sealed cookie value: {text}"
            );
        }
        assert!(
            !source.ends_with(".headers") || !text.to_ascii_lowercase().contains("set-cookie"),
            "{source}: scripts must not see Set-Cookie: {text}"
        );
    }
    for source in ["document.cookie", "cookieStore"] {
        assert!(
            !seen[source].as_str().unwrap_or_default().contains(COOKIE),
            "{source} lists the HttpOnly cookie: {}",
            seen[source]
        );
    }
    browser.close().await;
}

/// A page on another origin that tries to log the tokenjar user out:
/// `__TARGET__` is tokenjar's origin.
const ATTACK_PAGE: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>not tokenjar</title></head>
<body>
<form id="form" method="POST" action="__TARGET__/api/logout"><input type="hidden" name="x" value="1"></form>
<script>
(async () => {
  const result = {};
  try {
    const response = await fetch("__TARGET__/api/logout", {
      method: "POST", credentials: "include", headers: { "x-csrf": "1" },
    });
    result.withHeader = "answered " + response.status;
  } catch (error) {
    result.withHeader = "blocked";
  }
  try {
    const response = await fetch("__TARGET__/api/logout", {
      method: "POST", credentials: "include", mode: "no-cors",
    });
    result.simple = "sent " + response.type;
  } catch (error) {
    result.simple = "failed: " + error;
  }
  document.body.dataset.result = JSON.stringify(result);
})();
</script>
</body></html>
"#;

/// Serves [`ATTACK_PAGE`] aimed at `target` on 127.0.0.1, port 0.
fn start_attacker(target: &str) -> (u16, ServerHandle) {
    let page = ATTACK_PAGE.replace("__TARGET__", target);
    let server = HttpServer::new(move || {
        let page = page.clone();
        App::new().default_service(web::to(move || {
            let page = page.clone();
            async move {
                HttpResponse::Ok()
                    .content_type("text/html; charset=utf-8")
                    .body(page)
            }
        }))
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(0)
    .bind(("127.0.0.1", 0))
    .expect("bind the attacker's server");
    let port = server.addrs()[0].port();
    let server = server.run();
    let handle = server.handle();
    actix_rt::spawn(server);
    (port, handle)
}

/// A cross-origin page can neither `fetch` a logout (no CORS preflight is
/// granted) nor post a form to it (no CSRF header): the user stays logged in.
#[actix_web::test]
async fn a_cross_origin_page_cannot_log_the_user_out() {
    let Some(browser) = Browser::open().await else {
        return;
    };
    let app = start_demo();
    let (attacker_port, attacker) = start_attacker(&app.url(""));
    open_demo(&browser, &app, false).await;
    log_in(&browser).await;
    let cookie = auth_cookie(&browser).await.expect("auth cookie after login");
    let metrics = app.get_api("/metrics", None).await.text();
    let refused_before = metric_sum(&metrics, "tokenjar_csrf_refused_total", &[]);
    let logouts_before = metric_sum(&metrics, "tokenjar_logouts_total", &[]);

    // 127.0.0.1 on another port is another origin but the same site, so the
    // browser even sends the SameSite=Lax cookie: only tokenjar's rules stop
    // it. `localhost` is another site altogether.
    for host in ["127.0.0.1", "localhost"] {
        let page = format!("http://{host}:{attacker_port}/");
        browser.goto(&page).await.expect("load the attacker's page");
        let result = wait_for(&browser, "body[data-result]").await;
        let result: Value =
            serde_json::from_str(&result.attr("data-result").await.unwrap().unwrap()).unwrap();
        assert_eq!(
            result["withHeader"], "blocked",
            "{page}: a credentialed fetch with x-csrf must fail its CORS preflight: {result}"
        );
        assert_eq!(result["simple"], "sent opaque", "{page}: {result}");

        browser
            .execute("document.getElementById('form').submit()", vec![])
            .await
            .expect("submit the attacker's form");
        let answer = wait_until(
            &browser,
            "return location.pathname === '/api/logout' && document.readyState === 'complete' \
             ? document.body.innerText : null",
            "the form's answer",
            Value::is_string,
        )
        .await;
        let answer = answer.as_str().unwrap();
        assert!(
            answer.contains("csrf"),
            "{page}: the form POST should be refused: {answer}"
        );
    }

    let metrics = app.get_api("/metrics", None).await.text();
    let refused = metric_sum(&metrics, "tokenjar_csrf_refused_total", &[]) - refused_before;
    let logouts = metric_sum(&metrics, "tokenjar_logouts_total", &[]) - logouts_before;
    // Per origin the no-cors fetch and the form reach tokenjar and are refused
    // (tokenjar also counts the refused CORS preflight, hence "at least").
    assert!(
        refused >= 4.0,
        "expected at least 4 CSRF refusals, got {refused}:\n{metrics}"
    );
    assert_eq!(logouts, 0.0, "no logout may have been answered:\n{metrics}");

    open_demo(&browser, &app, true).await;
    let still = auth_cookie(&browser).await.expect("the auth cookie survived");
    assert_eq!(still.value(), cookie.value(), "the cookie must be untouched");
    assert_eq!(press(&browser, "me").await, 200, "still logged in");
    attacker.stop(false).await;
    browser.close().await;
}

/// Opens a WebSocket on `/api/hello` from the page and resolves with the
/// first message, or `closed CODE` when the socket fails or closes first.
const OPEN_HELLO_SOCKET: &str = r#"
const done = arguments[0];
const socket = new WebSocket(location.origin.replace(/^http/, 'ws') + '/api/hello');
socket.onmessage = (event) => { done(event.data); socket.close(1000, 'thanks'); };
socket.onclose = (event) => done('closed ' + event.code);
"#;

/// A page's `WebSocket` through tokenjar (SPEC §13): before logging in the
/// demo API refuses the handshake; after the demo login the socket opens
/// with the cookie's token and the API greets the logged-in user by name.
#[actix_web::test]
async fn a_websocket_from_the_page_reaches_the_api_as_the_logged_in_user() {
    let Some(browser) = Browser::open().await else {
        return;
    };
    let app = start_demo();
    open_demo(&browser, &app, false).await;
    let refused = browser
        .execute_async(OPEN_HELLO_SOCKET, vec![])
        .await
        .expect("open a socket before logging in");
    // The browser reports a refused handshake as an abnormal close.
    assert_eq!(refused, json!("closed 1006"), "no token, no greeting");

    log_in(&browser).await;
    let greeting = browser
        .execute_async(OPEN_HELLO_SOCKET, vec![])
        .await
        .expect("open a socket after logging in");
    let greeting: Value = serde_json::from_str(greeting.as_str().unwrap_or_default())
        .unwrap_or_else(|e| panic!("the API's greeting is JSON ({e}): {greeting}"));
    assert_eq!(greeting, json!({ "hello": "demo" }));
    browser.close().await;
}

/// The web app's page for the event test: it opens an `EventSource` on the
/// API and keeps what arrives where the test can read it.
const EVENTS_PAGE: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>events</title></head>
<body><script>
  window.received = [];
  const source = new EventSource('/api/events');
  source.onmessage = (event) => window.received.push(event.data);
</script></body></html>
"#;

/// Server-sent events through tokenjar reach a page's `EventSource` one by
/// one (SPEC §13): the API sends each next event only once the page has
/// shown the one before, so events held back would stall the test.
#[actix_web::test]
async fn an_event_source_gets_each_event_as_the_api_sends_it() {
    let Some(browser) = Browser::open().await else {
        return;
    };
    const EVENTS: usize = 3;
    let api = tokenjar_e2e::event_api::EventApi::start(EVENTS);
    let site = TempDir::new("events-site");
    site.write("index.html", EVENTS_PAGE);
    let app = spawn_custom(
        TempDir::new("events-config"),
        Some("serve"),
        Some(&api.url),
        &[("TOKENJAR_FRONTEND__DIR", site.path().to_str().unwrap())],
    );
    browser.goto(&app.url("/")).await.expect("load the events page");
    for n in 1..=EVENTS {
        let received = wait_until(
            &browser,
            "return window.received || []",
            &format!("event {n} in the page"),
            |v| v.as_array().is_some_and(|a| a.len() >= n),
        )
        .await;
        assert_eq!(
            received.as_array().unwrap().last(),
            Some(&json!(format!("event {n}"))),
            "{received}"
        );
        if n < EVENTS {
            api.next.send(()).unwrap();
        }
    }
    browser.close().await;
}

/// The production cookie (`__Host-auth-token`, `Secure`, `HttpOnly`,
/// `SameSite=Lax`) in a real browser over tokenjar's own TLS listener
/// (SPEC §12, §6): the demo logs in, calls the API and logs out over https.
/// Chromium trusts the certificate made here through
/// `--ignore-certificate-errors-spki-list` (the base64 SHA-256 of its public
/// key): that switch trusts this one key and nothing else, and needs no
/// certificate database.
#[actix_web::test]
async fn the_production_cookie_works_over_tokenjars_own_tls_listener() {
    use base64::Engine as _;
    use rcgen::PublicKeyData as _;
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
    let cert = params.self_signed(&key).unwrap();
    let spki = ring::digest::digest(&ring::digest::SHA256, &key.subject_public_key_info());
    let spki = base64::engine::general_purpose::STANDARD.encode(spki.as_ref());
    let Some(browser) = Browser::open_with(&[format!("--ignore-certificate-errors-spki-list={spki}")]).await
    else {
        return;
    };
    let files = TempDir::new("tls-files");
    files.write("cert.pem", &cert.pem());
    files.write("key.pem", &key.serialize_pem());
    let cert_file = files.path().join("cert.pem");
    let key_file = files.path().join("key.pem");
    let app = spawn_custom(
        TempDir::new("demo-config"),
        Some("demo"),
        None,
        &[
            ("TOKENJAR_SERVER__WORKERS", "1"),
            ("TOKENJAR_SERVER__TLS_CERT_FILE", cert_file.to_str().unwrap()),
            ("TOKENJAR_SERVER__TLS_KEY_FILE", key_file.to_str().unwrap()),
            // The compiled-in production cookie, not the harness's plain-http one.
            ("TOKENJAR_COOKIE__NAME", "__Host-auth-token"),
            ("TOKENJAR_COOKIE__SECURE", "true"),
        ],
    );
    assert!(app.url("/").starts_with("https://"), "{}", app.url("/"));

    open_demo(&browser, &app, false).await;
    assert_eq!(press(&browser, "me").await, 401, "GET /api/me before logging in");
    log_in(&browser).await;
    let cookie = cookie_named(&browser, "__Host-auth-token")
        .await
        .expect("the login set the __Host- cookie");
    assert_eq!(cookie.secure(), Some(true), "{cookie}");
    assert_eq!(cookie.http_only(), Some(true), "{cookie}");
    assert_eq!(cookie.path(), Some("/"), "{cookie}");
    assert_eq!(
        cookie.same_site().map(|s| s.to_string()).as_deref(),
        Some("Lax"),
        "{cookie}"
    );
    assert_eq!(press(&browser, "me").await, 200, "GET /api/me with the cookie");
    assert_eq!(press(&browser, "logout").await, 200, "log out");
    wait_for(&browser, "#state[data-logged-in=\"false\"]").await;
    assert!(
        cookie_named(&browser, "__Host-auth-token").await.is_none(),
        "the logout deleted the cookie"
    );
    assert_eq!(press(&browser, "me").await, 401, "GET /api/me after logging out");
    browser.close().await;
}

/// SPEC §15 in a real browser: a login whose token is about 10 KB leaves four
/// chunk cookies of at most 4,000 bytes each, which Chromium keeps and sends
/// back (the API gets the whole token again); logging out removes them all.
#[actix_web::test]
async fn a_ten_kilobyte_token_lives_in_chunk_cookies_the_browser_keeps() {
    let Some(browser) = Browser::open().await else {
        return;
    };
    let (api, app) = tokenjar_e2e::setup();
    let token = format!("tok-{}", "0123456789abcdef".repeat(625));
    api.push_login_reply(CannedReply::json(200, &json!({ "authToken": token })));
    // Any page of tokenjar's origin will do for the page's calls.
    browser
        .goto(&app.url("/api/echo"))
        .await
        .expect("load a page of tokenjar's origin");
    let call = |method: &str, path: &str| {
        format!(
            "return fetch('{path}', {{method: '{method}', headers: {{'x-csrf': '1', \
             'content-type': 'application/json'}}, body: {body}}}).then(r => r.status)",
            body = if method == "GET" { "undefined" } else { "'{}'" }
        )
    };
    let status = |v: Value| v.as_u64().unwrap_or_default();
    let chunks = || async {
        let mut found: Vec<Cookie<'static>> = browser
            .get_all_cookies()
            .await
            .expect("read the browser's cookies")
            .into_iter()
            .filter(|c| c.name().starts_with(COOKIE))
            .collect();
        found.sort_by(|a, b| a.name().cmp(b.name()));
        found
    };

    let login = browser
        .execute(&call("POST", "/api/login"), vec![])
        .await
        .unwrap();
    assert_eq!(status(login), 200, "login with a 10 KB token");
    let kept = chunks().await;
    let names: Vec<&str> = kept.iter().map(Cookie::name).collect();
    assert_eq!(
        names,
        ["auth-token.0", "auth-token.1", "auth-token.2", "auth-token.3"],
        "the browser kept every chunk"
    );
    for cookie in &kept {
        assert_eq!(cookie.http_only(), Some(true), "{}", cookie.name());
        assert!(
            cookie.name().len() + cookie.value().len() <= 4000,
            "{}",
            cookie.name()
        );
    }

    let echo = browser.execute(&call("GET", "/api/echo"), vec![]).await.unwrap();
    assert_eq!(status(echo), 200);
    assert_eq!(
        api.last_request().header_all("auth-token"),
        [token.as_str()],
        "the browser sent every chunk back"
    );

    let logout = browser
        .execute(&call("POST", "/api/logout"), vec![])
        .await
        .unwrap();
    assert_eq!(status(logout), 200);
    assert!(chunks().await.is_empty(), "the logout deleted every chunk");
    browser.close().await;
}

/// Logs in from the page's own script as `user` (whose password is the
/// same) and calls `/api/me`: the two statuses, `/api/me`'s body and what
/// `document.cookie` shows.
const LOG_IN_AS: &str = r#"
const [user, done] = [arguments[0], arguments[arguments.length - 1]];
(async () => {
  const login = await fetch("/api/login", {
    method: "POST",
    headers: { "x-csrf": "1", "content-type": "application/json" },
    body: JSON.stringify({ username: user, password: user }),
  });
  const me = await fetch("/api/me");
  done({ login: login.status, me: me.status, body: await me.text(), visible: document.cookie });
})().catch((error) => done({ error: String(error) }));
"#;

/// The names of the browser's auth cookies: the plain one and its chunks.
async fn auth_cookie_names(client: &Client) -> Vec<String> {
    let mut names: Vec<String> = client
        .get_all_cookies()
        .await
        .expect("read the browser's cookies")
        .into_iter()
        .map(|cookie| cookie.name().to_owned())
        .filter(|name| name == COOKIE || name.starts_with(&format!("{COOKIE}.")))
        .collect();
    names.sort();
    names
}

/// A session too large for one cookie (SPEC §15): the demo's `roles`
/// account has a 10 KB token, which Chromium keeps as chunk cookies, all
/// HttpOnly; `/api/me` works with them, and a later small session leaves no
/// chunk behind in the browser's jar.
#[actix_web::test]
async fn a_ten_kilobyte_token_lives_in_chunk_cookies_and_leaves_none_behind() {
    let Some(browser) = Browser::open().await else {
        return;
    };
    let app = start_demo();
    open_demo(&browser, &app, false).await;

    let seen = browser
        .execute_async(LOG_IN_AS, vec![json!("roles")])
        .await
        .expect("log in as roles");
    assert_eq!(seen["login"], json!(200), "{seen}");
    assert_eq!(seen["me"], json!(200), "{seen}");
    assert_eq!(seen["body"], json!(r#"{"name":"roles"}"#), "{seen}");
    assert_eq!(seen["visible"], json!(""), "no script sees the session");
    let names = auth_cookie_names(&browser).await;
    assert!(
        names.len() >= 3 && names.iter().all(|n| n.starts_with(&format!("{COOKIE}."))),
        "a 10 KB token is kept in three or more chunks, never in {COOKIE}: {names:?}"
    );
    for name in &names {
        let cookie = cookie_named(&browser, name).await.expect("the chunk is stored");
        assert_eq!(cookie.http_only(), Some(true), "{cookie}");
        assert!(
            cookie.value().len() + name.len() <= 4_000,
            "{name}: {}",
            cookie.value().len()
        );
    }

    // Back to a session that fits one cookie: every chunk is gone.
    let seen = browser
        .execute_async(LOG_IN_AS, vec![json!("demo")])
        .await
        .expect("log in as demo");
    assert_eq!(seen["me"], json!(200), "{seen}");
    assert_eq!(seen["body"], json!(r#"{"name":"demo"}"#), "{seen}");
    assert_eq!(auth_cookie_names(&browser).await, vec![COOKIE.to_owned()]);
    browser.close().await;
}

/// `tokenjar demo` in OIDC mode (`make run-oidc`) against the test OpenID
/// Provider, the page opened on `http://localhost:PORT` (the provider is
/// on 127.0.0.1, so the two keep their cookies apart). `None` when the
/// provider cannot run here (see support/oidc_provider.rs).
fn start_oidc_demo() -> Option<(OidcProvider, TestApp, String)> {
    let port = std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
        .port();
    let origin = format!("http://localhost:{port}");
    let mut settings = ProviderSettings::new(&format!("{origin}/api/callback"));
    settings.post_logout_redirect_uris = vec![format!("{origin}/")];
    let provider = OidcProvider::start(&settings)?;
    let (port, callback, home) = (
        port.to_string(),
        format!("{origin}/api/callback"),
        format!("{origin}/"),
    );
    let app = spawn_custom(
        TempDir::new("oidc-demo-config"),
        Some("demo"),
        None,
        &[
            ("TOKENJAR_SERVER__WORKERS", "1"),
            ("TOKENJAR_SERVER__PORT", &port),
            ("TOKENJAR_OIDC__ISSUER", provider.issuer()),
            ("TOKENJAR_OIDC__CLIENT_ID", &settings.client_id),
            (
                "TOKENJAR_OIDC__CLIENT_SECRET",
                settings.client_secret.as_deref().unwrap_or_default(),
            ),
            ("TOKENJAR_OIDC__REDIRECT_URL", &callback),
            ("TOKENJAR_OIDC__POST_LOGOUT_REDIRECT_URL", &home),
        ],
    );
    Some((provider, app, origin))
}

/// Waits until the browser's address starts with `prefix`; returns it.
async fn wait_for_url(client: &Client, prefix: &str) -> String {
    let value = wait_until(
        client,
        "return location.href",
        &format!("an address starting with {prefix}"),
        |href| href.as_str().is_some_and(|h| h.starts_with(prefix)),
    )
    .await;
    value.as_str().unwrap_or_default().to_owned()
}

/// Fills the provider's login form (its development pages take any
/// password) and submits it.
async fn sign_in_at_provider(client: &Client, user: &str) {
    let login = wait_for(client, "input[name=login]").await;
    login.send_keys(user).await.expect("type the login name");
    client
        .find(Locator::Css("input[name=password]"))
        .await
        .expect("the provider's password field")
        .send_keys("any-password")
        .await
        .expect("type the password");
    click_when_there(client, "button[type=submit]", "sign in at the provider").await;
}

/// Waits for the element at `css` and clicks it (`what` names it for a
/// failure).
async fn click_when_there(client: &Client, css: &str, what: &str) {
    wait_for(client, css)
        .await
        .click()
        .await
        .unwrap_or_else(|err| panic!("{what}: {err}"));
}

/// The demo page's text of the claim `name` in the user list.
async fn claim_shown(client: &Client, name: &str) -> String {
    wait_for(client, &format!("#user dd[data-claim=\"{name}\"]"))
        .await
        .text()
        .await
        .expect("read the claim")
}

/// The whole OIDC login in a real browser (SPEC §16): the demo page's "Log
/// in with your provider" → the provider's login form → its consent page →
/// back on the page, logged in, with the user's claims shown; `/api/me`
/// reaches the demo API with the provider's access token (the API asks the
/// provider's userinfo endpoint whose it is); the page's JavaScript sees no
/// cookie at all; logout revokes at the provider and ends on its logout
/// page, which sends the browser back to the page, logged out.
#[actix_web::test]
async fn the_oidc_demo_logs_in_at_the_provider_and_out_there() {
    let Some(browser) = Browser::open().await else {
        return;
    };
    let Some((provider, app, origin)) = start_oidc_demo() else {
        return;
    };
    let ready = Instant::now() + WAIT;
    while app.get_api("/readyz", None).await.status != 200 {
        assert!(Instant::now() < ready, "never ready:\n{}", app.logs().join("\n"));
        actix_rt::time::sleep(POLL).await;
    }

    // A failed login comes back as ?auth_error=…: shown as text, then
    // taken out of the address.
    browser
        .goto(&format!("{origin}/?auth_error=%3Cb%3Eaccess_denied"))
        .await
        .expect("load the page with an auth_error");
    let error = wait_for(&browser, "#auth-error:not([hidden])").await;
    assert_eq!(error.text().await.unwrap(), "Login failed: <b>access_denied");
    assert_eq!(wait_for_url(&browser, &origin).await, format!("{origin}/"));

    // Step 1: the page offers the provider's login, not a password form.
    browser
        .goto(&format!("{origin}/"))
        .await
        .expect("load the demo page");
    wait_for(&browser, "#state[data-logged-in=\"false\"]").await;
    let password_form = browser.find(Locator::Id("login-form")).await.unwrap();
    assert!(
        !password_form.is_displayed().await.unwrap(),
        "no password form in OIDC mode"
    );
    assert_eq!(press(&browser, "me").await, 401, "GET /api/me before logging in");
    let button = browser.find(Locator::Id("provider-login")).await.unwrap();
    assert_eq!(button.text().await.unwrap(), "Log in with your provider");
    button.click().await.expect("click Log in with your provider");

    // Step 2: the provider's login form; step 3: its consent page.
    wait_for_url(&browser, provider.issuer()).await;
    sign_in_at_provider(&browser, "ada").await;
    click_when_there(
        &browser,
        "button[type=submit][autofocus]",
        "consent at the provider",
    )
    .await;

    // Step 4: back on the page, logged in, with the user's claims.
    assert_eq!(wait_for_url(&browser, &origin).await, format!("{origin}/"));
    wait_for(&browser, "#state[data-logged-in=\"true\"]").await;
    assert_eq!(claim_shown(&browser, "sub").await, "ada");
    assert_eq!(claim_shown(&browser, "name").await, "Test User ada");
    assert_eq!(claim_shown(&browser, "email").await, "ada@example.test");
    let png = browser.screenshot().await.expect("take a screenshot");
    save_artefact("oidc-demo-logged-in.png", &png);
    let counters = provider.counters();
    assert_eq!(counters.code_exchanges, 1, "{counters:?}");

    // Step 5: the API call carries the provider's access token: the demo
    // API had the provider's userinfo endpoint vouch for it.
    assert_eq!(press(&browser, "me").await, 200, "GET /api/me after logging in");
    let output = browser
        .find(Locator::Id("output"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(output.contains("\"name\": \"Test User ada\""), "{output}");
    assert!(output.contains("\"email\": \"ada@example.test\""), "{output}");

    // Step 6: nothing for JavaScript; the session is one HttpOnly cookie
    // and the pending login's cookie is gone.
    let seen = browser.execute("return document.cookie", vec![]).await.unwrap();
    assert_eq!(seen, json!(""), "document.cookie must be empty");
    let cookies = browser.get_all_cookies().await.expect("read the cookies");
    let names: Vec<&str> = cookies.iter().map(|c| c.name()).collect();
    assert!(names.contains(&COOKIE), "{names:?}");
    assert!(!names.contains(&"auth-token-login"), "{names:?}");
    for cookie in cookies.iter().filter(|c| c.name().starts_with(COOKIE)) {
        assert_eq!(cookie.http_only(), Some(true), "{cookie}");
        assert!(!looks_like_jwt(cookie.value()), "{cookie}");
    }
    let page = browser.source().await.expect("the page's source");
    assert!(!looks_like_jwt(&page), "no token in the page");

    // Step 7: logout revokes at the provider and goes to its logout page,
    // which asks; confirming sends the browser back to the page.
    click_when_there(&browser, "#logout", "click Log out").await;
    wait_for_url(&browser, provider.issuer()).await;
    click_when_there(
        &browser,
        "button[name=logout][value=yes]",
        "confirm the logout at the provider",
    )
    .await;
    assert_eq!(wait_for_url(&browser, &origin).await, format!("{origin}/"));
    wait_for(&browser, "#state[data-logged-in=\"false\"]").await;
    assert!(
        auth_cookie(&browser).await.is_none(),
        "the session cookie is gone"
    );
    let counters = provider.counters();
    assert_eq!(
        (counters.revocations, counters.end_sessions),
        (1, 1),
        "{counters:?}"
    );
    browser.close().await;
}
