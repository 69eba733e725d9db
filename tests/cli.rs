//! End-to-end tests of tokenjar's command line and layered configuration
//! (SPEC §1, §2): the binary run directly, as a user would.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;
use std::process::{Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use tokenjar_e2e::{mentions_word, tokenjar_bin, TempDir, KEY_1, KEY_3};

/// How long one CLI run may take before the test gives up on it.
const RUN_DEADLINE: Duration = Duration::from_secs(20);

#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    /// stdout and stderr together, for "the message names the key" checks.
    fn output(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }

    fn assert_code(&self, code: i32) {
        assert_eq!(
            self.code,
            Some(code),
            "expected exit code {code}; stdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
    }

    /// A bad configuration: exit 2, no panic or backtrace, every word named.
    fn assert_config_error(&self, words: &[&str]) {
        self.assert_code(2);
        let output = self.output();
        assert!(
            !output.contains("panicked") && !output.contains("RUST_BACKTRACE"),
            "a bad configuration must not panic:\n{output}"
        );
        for word in words {
            assert!(
                mentions_word(&output, word),
                "the error output should name `{word}`:\n{output}"
            );
        }
    }
}

/// Runs tokenjar with `args` and `env` (all inherited `TOKENJAR_*` removed),
/// from inside `cwd` so the repo's `./config` is never picked up.
fn run(cwd: &TempDir, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(tokenjar_bin());
    cmd.args(args)
        .current_dir(cwd.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_remove("RUST_BACKTRACE")
        .env("NO_COLOR", "1");
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("TOKENJAR_") {
            cmd.env_remove(name);
        }
    }
    for (name, value) in env {
        cmd.env(name, value);
    }
    let mut child = cmd.spawn().expect("start tokenjar");
    let out_reader = read_in_background(child.stdout.take().expect("stdout"));
    let err_reader = read_in_background(child.stderr.take().expect("stderr"));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for tokenjar") {
            break status;
        }
        if started.elapsed() > RUN_DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "tokenjar {args:?} did not exit within {RUN_DEADLINE:?}; stderr:\n{}",
                err_reader.join().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Run {
        code: status.code(),
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    }
}

/// Reads `pipe` to its end on a thread of its own, so that a child filling
/// one pipe cannot block while the test waits on the other or on its exit.
fn read_in_background(mut pipe: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = pipe.read_to_string(&mut s);
        s
    })
}

/// `check-config` on `dir` (passed with `--config-dir`).
fn check_config(dir: &TempDir, env: &[(&str, &str)]) -> Run {
    let cwd = TempDir::new("cwd");
    let dir = dir.path().to_str().expect("utf-8 temp path");
    run(&cwd, &["--config-dir", dir, "check-config"], env)
}

#[test]
fn keygen_prints_a_fresh_64_byte_base64_key() {
    let cwd = TempDir::new("cwd");
    let first = run(&cwd, &["keygen"], &[]);
    first.assert_code(0);
    let second = run(&cwd, &["keygen"], &[]);
    second.assert_code(0);

    for key in [&first.stdout, &second.stdout] {
        assert!(key.ends_with('\n'), "the key ends with a newline: {key:?}");
        assert_eq!(key.lines().count(), 1, "one line only: {key:?}");
        let decoded = STANDARD
            .decode(key.trim_end())
            .unwrap_or_else(|err| panic!("not standard base64 ({err}): {key:?}"));
        assert_eq!(decoded.len(), 64, "{key:?}");
    }
    assert_ne!(first.stdout, second.stdout, "two keys must differ");
}

#[test]
fn check_config_accepts_an_empty_dir_and_redacts_keys() {
    let dir = TempDir::new("config");
    let run = check_config(&dir, &[("TOKENJAR_COOKIE__KEYS", KEY_1)]);
    run.assert_code(0);
    let output = run.output();
    // The effective settings, i.e. the compiled defaults, are printed: with
    // no local.toml, a __Host- cookie that only https can set...
    for default in [
        "8080",
        "http://127.0.0.1:9090",
        "/api/login",
        "name = \"__Host-auth-token\"\nsecure = true",
    ] {
        assert!(
            run.stdout.contains(default),
            "check-config should print the default {default}:\n{}",
            run.stdout
        );
    }
    // ...but never the key.
    assert!(!output.contains(KEY_1), "the key was printed:\n{output}");
    assert!(
        !output.contains(&KEY_1[..24]),
        "part of the key was printed:\n{output}"
    );
}

#[test]
fn the_repos_local_config_names_a_plain_http_cookie_and_production_the_host_one() {
    let repo = tokenjar_e2e::workspace_root().join("config");
    let repo = repo.to_str().expect("utf-8 path");
    let cwd = TempDir::new("cwd");
    for (env, cookie) in [
        // TOKENJAR_ENV defaults to local: plain-http development.
        (None, "name = \"auth-token\"\nsecure = false"),
        (Some("local"), "name = \"auth-token\"\nsecure = false"),
        (Some("production"), "name = \"__Host-auth-token\"\nsecure = true"),
    ] {
        let vars: Vec<(&str, &str)> = env.map(|e| ("TOKENJAR_ENV", e)).into_iter().collect();
        let run = run(&cwd, &["--config-dir", repo, "check-config"], &vars);
        run.assert_code(0);
        assert!(
            run.stdout.contains(cookie),
            "{env:?}: expected {cookie:?} in:\n{}",
            run.stdout
        );
    }
    // The __Host- name over plain http is refused, naming the key.
    let dir = TempDir::new("config");
    check_config(&dir, &[("TOKENJAR_COOKIE__SECURE", "false")]).assert_config_error(&["secure"]);
}

#[test]
fn check_config_redacts_keys_from_files() {
    let dir = TempDir::new("config");
    dir.write("default.toml", &format!("[cookie]\nkeys = [\"{KEY_3}\"]\n"));
    let run = check_config(&dir, &[]);
    run.assert_code(0);
    assert!(
        !run.output().contains(&KEY_3[..24]),
        "the key was printed:\n{}",
        run.output()
    );
}

#[test]
fn an_unknown_env_key_is_an_error_naming_it() {
    let dir = TempDir::new("config");
    check_config(&dir, &[("TOKENJAR_SERVER__PROT", "1")]).assert_config_error(&["prot"]);
}

#[test]
fn an_unknown_file_key_is_an_error_naming_it() {
    let dir = TempDir::new("config");
    dir.write("default.toml", "[server]\nprot = 1\n");
    check_config(&dir, &[]).assert_config_error(&["prot"]);

    let dir = TempDir::new("config");
    dir.write("default.toml", "[sever]\nport = 1\n");
    check_config(&dir, &[]).assert_config_error(&["sever"]);
}

#[test]
fn a_bad_value_is_an_error_naming_the_key() {
    let dir = TempDir::new("config");
    check_config(&dir, &[("TOKENJAR_SERVER__PORT", "notaport")]).assert_config_error(&["port"]);

    check_config(&dir, &[("TOKENJAR_COOKIE__KEYS", "not*base64!")]).assert_config_error(&["keys"]);
}

#[test]
fn same_site_none_needs_secure() {
    let dir = TempDir::new("config");
    check_config(
        &dir,
        &[
            ("TOKENJAR_COOKIE__SAME_SITE", "none"),
            ("TOKENJAR_COOKIE__SECURE", "false"),
        ],
    )
    .assert_config_error(&["same_site"]);

    check_config(
        &dir,
        &[
            ("TOKENJAR_COOKIE__SAME_SITE", "none"),
            ("TOKENJAR_COOKIE__SECURE", "true"),
        ],
    )
    .assert_code(0);
}

#[test]
fn every_problem_is_reported_at_once() {
    let dir = TempDir::new("config");
    check_config(
        &dir,
        &[
            ("TOKENJAR_SERVER__PROT", "1"),
            ("TOKENJAR_SERVER__PORT", "notaport"),
            ("TOKENJAR_COOKIE__SAME_SITE", "none"),
            ("TOKENJAR_COOKIE__SECURE", "false"),
        ],
    )
    .assert_config_error(&["prot", "port", "same_site"]);

    // A file problem and an env problem together.
    let dir = TempDir::new("config");
    dir.write("default.toml", "[upstream]\nurll = \"http://x\"\n");
    check_config(&dir, &[("TOKENJAR_SERVER__WORKERS", "many")]).assert_config_error(&["urll", "workers"]);
}

#[test]
fn serve_with_a_bad_configuration_exits_2() {
    let dir = TempDir::new("config");
    let cwd = TempDir::new("cwd");
    let dir = dir.path().to_str().unwrap();
    run(
        &cwd,
        &["serve", "--config-dir", dir],
        &[("TOKENJAR_SERVER__PORT", "0"), ("TOKENJAR_SERVER__PROT", "1")],
    )
    .assert_config_error(&["prot"]);
}

#[test]
fn version_and_help_exit_0() {
    let cwd = TempDir::new("cwd");
    let version = run(&cwd, &["--version"], &[]);
    version.assert_code(0);
    assert!(
        version.stdout.contains(env!("CARGO_PKG_VERSION")),
        "--version should print {}: {:?}",
        env!("CARGO_PKG_VERSION"),
        version.stdout
    );

    let help = run(&cwd, &["--help"], &[]);
    help.assert_code(0);
    for word in ["serve", "demo", "keygen", "check-config", "--config-dir"] {
        assert!(
            help.stdout.contains(word),
            "--help should mention {word}:\n{}",
            help.stdout
        );
    }
}

#[test]
fn the_config_dir_comes_from_the_flag_anywhere_or_the_env() {
    let dir = TempDir::new("config");
    dir.write("default.toml", "[server]\nport = 9999\n");
    let path = dir.path().to_str().unwrap();
    let cwd = TempDir::new("cwd");

    for (args, env) in [
        (vec!["--config-dir", path, "check-config"], vec![]),
        (vec!["check-config", "--config-dir", path], vec![]),
        (vec!["check-config"], vec![("TOKENJAR_CONFIG_DIR", path)]),
    ] {
        let run = run(&cwd, &args, &env);
        run.assert_code(0);
        assert!(
            run.stdout.contains("9999"),
            "{args:?} {env:?}: DIR/default.toml should set the port:\n{}",
            run.stdout
        );
    }
}

#[test]
fn layers_override_in_order() {
    let dir = TempDir::new("config");
    dir.write("default.toml", "[server]\nport = 9999\nhost = \"127.0.0.2\"\n");

    // DIR/default.toml over the compiled defaults.
    let run = check_config(&dir, &[]);
    run.assert_code(0);
    assert!(run.stdout.contains("9999"), "{}", run.stdout);
    assert!(run.stdout.contains("127.0.0.2"), "{}", run.stdout);

    // DIR/local.toml (TOKENJAR_ENV defaults to local) over default.toml.
    dir.write("local.toml", "[server]\nport = 9998\n");
    dir.write("staging.toml", "[server]\nport = 9997\n");
    let run = check_config(&dir, &[]);
    run.assert_code(0);
    assert!(run.stdout.contains("9998"), "{}", run.stdout);
    assert!(!run.stdout.contains("9999"), "{}", run.stdout);
    assert!(
        run.stdout.contains("127.0.0.2"),
        "unset keys keep the lower layer:\n{}",
        run.stdout
    );

    // TOKENJAR_ENV picks the file.
    let run = check_config(&dir, &[("TOKENJAR_ENV", "staging")]);
    run.assert_code(0);
    assert!(run.stdout.contains("9997"), "{}", run.stdout);
    assert!(
        !run.stdout.contains("9998") && !run.stdout.contains("9999"),
        "{}",
        run.stdout
    );

    // Environment variables over every file.
    let run = check_config(
        &dir,
        &[("TOKENJAR_ENV", "staging"), ("TOKENJAR_SERVER__PORT", "9996")],
    );
    run.assert_code(0);
    assert!(run.stdout.contains("9996"), "{}", run.stdout);
    assert!(
        !run.stdout.contains("9997") && !run.stdout.contains("9998"),
        "{}",
        run.stdout
    );
}

#[test]
fn tokenjar_without_a_subcommand_serves() {
    let api = tokenjar_e2e::RecordingApi::start();
    let app = tokenjar_e2e::spawn_custom(TempDir::new("config"), None, Some(&api.url("/v1")), &[]);
    let reply = app.raw("GET /api/echo HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(api.last_request().target, "/v1/echo");
}

#[actix_web::test]
async fn demo_runs_an_api_and_a_page_in_one_process() {
    let app = tokenjar_e2e::spawn_custom(TempDir::new("config"), Some("demo"), None, &[]);

    let page = app.get_api("/", None).await;
    assert_eq!(page.status, 200, "{}", page.text());
    assert!(
        page.header("content-type")
            .is_some_and(|t| t.starts_with("text/html")),
        "{:?}",
        page.headers
    );
    assert!(
        page.text().contains("/api/login"),
        "the page logs in through /api/login"
    );

    let me = app.get_api("/api/me", None).await;
    assert_eq!(me.status, 401, "not logged in yet: {}", me.text());

    let bad = app.login("demo", "nope").await;
    assert_eq!(bad.status, 401, "{}", bad.text());

    let login = app.login("demo", "demo").await;
    assert_eq!(login.status, 200, "{}", login.text());
    let body = login.json();
    assert_eq!(body["loggedIn"], true, "{body}");
    assert!(body.get("authToken").is_none(), "{body}");
    let cookie = login.set_cookie_for("auth-token").expect("auth cookie").pair();

    let me = app.get_api("/api/me", Some(&cookie)).await;
    assert_eq!(me.status, 200, "{}", me.text());
    assert_eq!(me.json(), serde_json::json!({"name": "demo"}));
    let session = app.session(Some(&cookie)).await;
    assert_eq!(session.json()["loggedIn"], true);
    assert!(
        session.json()["expiresAt"].is_u64(),
        "the demo token is a JWT with exp: {}",
        session.text()
    );
}

/// Runs `tokenjar serve` against a port another socket holds, with stderr a
/// pipe and no `NO_COLOR`: what an operator redirecting the log to a file
/// gets.
fn serve_on_a_taken_port() -> (u16, Run) {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let cwd = TempDir::new("cwd");
    let config = TempDir::new("config");
    let mut cmd = Command::new(tokenjar_bin());
    cmd.args(["serve", "--config-dir", config.path().to_str().unwrap()])
        .current_dir(cwd.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_remove("NO_COLOR")
        .env_remove("RUST_LOG");
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("TOKENJAR_") {
            cmd.env_remove(name);
        }
    }
    cmd.envs([
        ("TOKENJAR_SERVER__HOST", "127.0.0.1"),
        ("TOKENJAR_SERVER__PORT", port.as_str()),
        ("TOKENJAR_UPSTREAM__URL", "http://127.0.0.1:9"),
        ("TOKENJAR_COOKIE__SECURE", "false"),
        ("TOKENJAR_COOKIE__NAME", "auth-token"),
        ("TOKENJAR_COOKIE__KEYS", KEY_1),
    ]);
    let output = cmd.output().expect("run tokenjar");
    drop(taken);
    let run = Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    };
    (port.parse().unwrap(), run)
}

#[test]
fn a_taken_port_names_the_address_and_the_settings_that_move_it() {
    let (port, run) = serve_on_a_taken_port();
    run.assert_code(1);
    let line = run
        .stderr
        .lines()
        .find(|l| l.starts_with("tokenjar: cannot serve:"))
        .unwrap_or_else(|| panic!("no `cannot serve` line:\n{}", run.stderr));
    let address = format!("127.0.0.1:{port}");
    for word in [address.as_str(), "server.port", "in use"] {
        assert!(line.contains(word), "{word:?} missing from {line:?}");
    }
}

#[test]
fn logs_written_to_a_pipe_carry_no_colour_codes() {
    let (_, run) = serve_on_a_taken_port();
    assert!(
        run.stderr.contains("configuration loaded"),
        "the log should have started:\n{}",
        run.stderr
    );
    assert!(
        !run.stderr.contains('\u{1b}'),
        "ANSI escape codes in a redirected log:\n{:?}",
        run.stderr
    );
}

#[test]
fn a_section_key_with_one_underscore_suggests_two() {
    let dir = TempDir::new("config");
    let run = check_config(&dir, &[("TOKENJAR_UPSTREAM_URL", "http://api:9000")]);
    run.assert_config_error(&["TOKENJAR_UPSTREAM_URL"]);
    assert!(
        run.output().contains("TOKENJAR_UPSTREAM__URL"),
        "the message should suggest the two-underscore spelling:\n{}",
        run.output()
    );
}

#[test]
fn only_the_commands_that_read_configuration_offer_config_dir() {
    let cwd = TempDir::new("cwd");
    let keygen = run(&cwd, &["keygen", "--help"], &[]);
    keygen.assert_code(0);
    assert!(!keygen.stdout.contains("--config-dir"), "{}", keygen.stdout);
    for command in ["serve", "demo", "check-config"] {
        let help = run(&cwd, &[command, "--help"], &[]);
        help.assert_code(0);
        assert!(help.stdout.contains("--config-dir"), "{command}: {}", help.stdout);
    }
}

#[actix_web::test]
async fn the_log_names_the_api_at_start_and_the_address_a_502_failed_to_reach() {
    let unreachable = tokenjar_e2e::refused_url();
    let app = tokenjar_e2e::spawn_app(&unreachable, &[]);
    assert!(
        app.wait_for_log(&format!("upstream API at {unreachable}"), Duration::from_secs(5)),
        "{:#?}",
        app.logs()
    );
    let reply = app.get_api("/api/users", None).await;
    reply.assert_error(502, "upstream_unavailable");
    let named = |l: &String| l.contains("request failed") && l.contains(&unreachable);
    assert!(
        app.wait_for_log("request failed", Duration::from_secs(5)) && app.logs().iter().any(named),
        "the 502's log line should name {unreachable}: {:#?}",
        app.logs()
    );
}

#[test]
fn variables_that_are_not_unicode_are_reported_not_a_panic() {
    use std::os::unix::ffi::OsStrExt as _;
    let dir = TempDir::new("config");
    let cwd = TempDir::new("cwd");
    let not_unicode = std::ffi::OsStr::from_bytes(b"\xff\xfe");
    let check = |name: &str| {
        let mut cmd = Command::new(tokenjar_bin());
        cmd.args(["check-config", "--config-dir", dir.path().to_str().unwrap()])
            .current_dir(cwd.path())
            .env(name, not_unicode)
            .env_remove("RUST_BACKTRACE");
        for (var, _) in std::env::vars_os() {
            if var.to_string_lossy().starts_with("TOKENJAR_") {
                cmd.env_remove(var);
            }
        }
        let output = cmd.output().expect("run tokenjar");
        Run {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    };
    // Someone else's variable is none of tokenjar's business.
    check("SOME_OTHER_VARIABLE").assert_code(0);
    // tokenjar's own is a configuration problem naming the key.
    check("TOKENJAR_UPSTREAM__URL").assert_config_error(&["upstream.url"]);
}
