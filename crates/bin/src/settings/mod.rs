//! tokenjar's configuration: the layers of SPEC §2, loaded section by
//! section, unknown keys refused, then each section validated into the plain
//! settings the domain and the adapter take, with every problem reported at
//! once.
//!
//! Each `[table]` is a [`Section`] in a file of its own: a type serde reads
//! from the table (closed sets are enums) and a `validate` that checks every
//! key and turns the section into the domain's or adapter's type. Loading
//! goes through one generic loader ([`Loader::section`]), and unknown keys
//! are found in one place, against the fields of the section types
//! ([`load`]).
//!
//! # Adding a section
//!
//! 1. Write `settings/<name>.rs`: the section type (`Debug`, `Clone`,
//!    `Deserialize`, `Serialize`; secrets redacted in `Debug`), its
//!    [`Section`] impl, and tests. Give each key its default, with a
//!    comment, in `config/default.toml` (optional keys commented out; a key
//!    whose default is a list takes a comma-separated variable), and a row
//!    in `docs/configuration.md`.
//! 2. List it here: `mod <name>;`, its field in [`Settings`] (the list of
//!    sections, in the order `check-config` prints them), its line in
//!    [`Settings::from_loader`], and its line in [`Settings::validate`],
//!    where its output goes into [`Validated`].
//!
//! Rust cannot walk a struct's fields without a macro, so the section is
//! named in those three places rather than one; each is a single line, and a
//! field left out of `from_loader` does not compile.

mod cookie;
mod csrf;
mod frontend;
mod load;
mod log;
mod oidc;
mod ops;
mod refresh;
mod routes;
mod section;
mod server;
mod session;
#[cfg(test)]
mod testing;
mod tls;
mod token;
mod upstream;
mod websocket;

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokenjar_adapters_actix::{AppSettings, UpstreamSettings};
use tokenjar_domain::demo::DemoApi;
use tokenjar_domain::Rules;

pub use self::load::{describe_dir, Sources};
pub use self::section::Problem;

use self::cookie::{CookieSection, SameSiteSetting};
use self::csrf::CsrfSection;
use self::frontend::FrontendSection;
use self::load::Loader;
use self::log::LogSection;
use self::oidc::OidcSection;
use self::ops::OpsSection;
use self::refresh::RefreshSection;
use self::routes::RoutesSection;
use self::section::{Problems, Section};
use self::server::ServerSection;
use self::session::SessionSection;
pub use self::session::{redacted_url, StoreChoice};
use self::tls::TlsSection;
use self::token::TokenSection;
use self::upstream::UpstreamSection;
use self::websocket::WebSocketSection;

/// The compiled-in defaults: the repository's `config/default.toml`.
pub const DEFAULTS: &str = include_str!("../../../../config/default.toml");

/// Every setting, as loaded: one field per section.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Settings {
    /// `server.*`
    pub server: ServerSection,
    /// `upstream.*`
    pub upstream: UpstreamSection,
    /// `routes.*`
    pub routes: RoutesSection,
    /// `token.*`
    pub token: TokenSection,
    /// `refresh.*`
    #[serde(default)]
    pub refresh: RefreshSection,
    /// `oidc.*`
    #[serde(default)]
    pub oidc: OidcSection,
    /// `session.*`
    #[serde(default)]
    pub session: SessionSection,
    /// `cookie.*`
    pub cookie: CookieSection,
    /// `csrf.*`
    pub csrf: CsrfSection,
    /// `websocket.*`
    #[serde(default)]
    pub websocket: WebSocketSection,
    /// `frontend.*`
    #[serde(default)]
    pub frontend: FrontendSection,
    /// `tls.*`
    #[serde(default)]
    pub tls: TlsSection,
    /// `ops.*`
    pub ops: OpsSection,
    /// `log.*`
    pub log: LogSection,
}

/// Settings checked and converted, ready to start the server.
pub struct Validated {
    /// The domain's rules.
    pub rules: Arc<Rules>,
    /// The actix adapter's settings.
    pub adapter: AppSettings,
    /// JSON log lines.
    pub json_logs: bool,
    /// No key was configured; a random one was made.
    pub ephemeral_key: bool,
    /// Where sessions live.
    pub store: StoreChoice,
    /// `tls.ca_file`, which a `rediss://` session store trusts too.
    pub ca_file: Option<std::path::PathBuf>,
}

impl Settings {
    /// Loads the layers and checks every key against the known ones.
    ///
    /// # Errors
    /// Every unknown key and ill-typed value found; and then, so that one
    /// run shows everything, the problems `validate` finds in the sections
    /// that could be read.
    pub fn load(sources: &Sources) -> Result<Self, Vec<Problem>> {
        let mut loader = Loader::new(sources)?;
        let defaults = loader.defaults()?;
        let settings = Self::from_loader(&mut loader, defaults);
        let loaded = loader.finish();
        let mut problems = loaded.problems;
        if problems.is_empty() {
            return Ok(settings);
        }
        // A section that could not be read holds its defaults: its checks
        // would only speak of values nobody configured.
        if let Err(more) = settings.validate() {
            let unrelated: Vec<Problem> = more
                .into_iter()
                .filter(|p| {
                    let section = p.key.split('.').next().unwrap_or_default();
                    !loaded.failed.contains(&section) && !problems.iter().any(|q| q.key == p.key)
                })
                .collect();
            problems.extend(unrelated);
        }
        Err(problems)
    }

    /// Every section, each read by the one generic loader, falling back to
    /// its part of `defaults`.
    fn from_loader(loader: &mut Loader<'_>, defaults: Self) -> Self {
        Self {
            server: loader.section(defaults.server),
            upstream: loader.section(defaults.upstream),
            routes: loader.section(defaults.routes),
            token: loader.section(defaults.token),
            refresh: loader.section(defaults.refresh),
            oidc: loader.section(defaults.oidc),
            session: loader.section(defaults.session),
            cookie: loader.section(defaults.cookie),
            csrf: loader.section(defaults.csrf),
            websocket: loader.section(defaults.websocket),
            frontend: loader.section(defaults.frontend),
            tls: loader.section(defaults.tls),
            ops: loader.section(defaults.ops),
            log: loader.section(defaults.log),
        }
    }

    /// Turns the settings into what the adapters and the domain take.
    ///
    /// # Errors
    /// Every problem found in every section, each naming its key.
    pub fn validate(&self) -> Result<Validated, Vec<Problem>> {
        let mut problems = Problems::in_section("config");
        // The order problems are listed in.
        let server = problems.take(self.server.validate());
        let upstream = problems.take(self.upstream.validate());
        let routes = problems.take(self.routes.validate());
        let token = problems.take(self.token.validate());
        let refresh = problems.take(self.refresh.validate());
        let oidc = problems.take(self.oidc.validate());
        let store = problems.take(self.session.validate());
        let forwarding = problems.take(self.server.forwarding());
        let ops = problems.take(self.ops.validate());
        let cookies = problems.take(self.cookie.validate());
        let csrf = problems.take(self.csrf.validate());
        let websocket = problems.take(self.websocket.validate());
        let frontend = problems.take(self.frontend.validate());
        let tls = problems.take(self.tls.validate());
        problems.take(self.refresh_needs());
        let routes = match (routes, &oidc) {
            (Some(routes), Some(Some(client))) => {
                let named = |section: &'static str| {
                    move |errors: Vec<tokenjar_domain::SettingError>| {
                        errors
                            .into_iter()
                            .map(|e| Problem::new(format!("{section}.{}", e.key), e.message))
                            .collect::<Vec<_>>()
                    }
                };
                problems.take(
                    routes
                        .with_oidc(client.redirect_path())
                        .map_err(named("oidc"))
                        .and_then(|routes| {
                            routes
                                .with_backchannel_logout(&self.routes.backchannel_logout)
                                .map_err(named("routes"))
                        }),
                )
            }
            (routes, _) => routes,
        };
        let (refresh, oidc) = match oidc {
            // OIDC mode refreshes at the provider, with refresh.*'s timing.
            Some(Some(client)) => (
                Some(Some(tokenjar_domain::RefreshRules::for_provider(
                    self.refresh.leeway_s,
                    self.refresh.reuse_window_s,
                ))),
                Some(Some(tokenjar_domain::Oidc::new(client))),
            ),
            other => (refresh, other.map(|_| None)),
        };
        let json_logs = problems.take(self.log.validate());
        problems.finish(|| {
            let (upstream, token, cookies) = (upstream?, token?, cookies?);
            let rules = Rules {
                routes: routes?,
                upstream: upstream.base,
                token: token.rules,
                login: token.login,
                cookies: cookies.jar,
                csrf: csrf?,
                forwarding: forwarding?,
                refresh: refresh?,
                oidc: oidc?,
                store: store.as_ref()?.rules(),
            };
            let adapter = AppSettings {
                server: server?,
                upstream: UpstreamSettings {
                    buffer_bytes: self.server.client_body_buffer_bytes,
                    tls: Some(tls?),
                    ..upstream.client
                },
                ops: ops?,
                frontend: frontend?,
                websocket: websocket?,
            };
            Some(Validated {
                rules: Arc::new(rules),
                adapter,
                json_logs: json_logs?,
                ephemeral_key: cookies.ephemeral_key,
                store: store?,
                ca_file: self.tls.ca_file.clone(),
            })
        })
    }

    /// The rules that tie refresh to the token and cookie sections: a
    /// refresh path needs a refresh token to spend, and refresh tokens and
    /// lifetimes are kept only in sealed cookies (a clear cookie holds the
    /// access token alone, and a refresh token must never sit in clear).
    fn refresh_needs(&self) -> Result<(), Vec<Problem>> {
        let mut problems = Vec::new();
        if !self.refresh.path.is_empty() && self.token.refresh_field.is_empty() {
            problems.push(Problem::new(
                "token.refresh_field",
                "refresh.path is set, so the login answer's refresh token must be named here",
            ));
        }
        if !self.oidc.issuer.is_empty() {
            if !self.refresh.path.is_empty() {
                problems.push(Problem::new(
                    "refresh.path",
                    "OIDC mode refreshes at the provider's token endpoint: leave refresh.path empty",
                ));
            }
            if !self.cookie.encrypt {
                problems.push(Problem::new(
                    "cookie.encrypt",
                    "OIDC mode keeps sessions only in sealed cookies",
                ));
            }
        }
        if !self.cookie.encrypt && matches!(self.session.store.as_str(), "memory" | "redis") {
            problems.push(Problem::new(
                "cookie.encrypt",
                "a session store keeps sessions sealed with cookie.keys: set it to true",
            ));
        }
        if !self.cookie.encrypt {
            for (key, value) in [
                ("token.refresh_field", &self.token.refresh_field),
                ("token.expires_in_field", &self.token.expires_in_field),
            ] {
                if !value.is_empty() {
                    problems.push(Problem::new(
                        key,
                        "needs cookie.encrypt = true (a clear cookie holds the token alone)",
                    ));
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    /// The effective settings as TOML, with the cookie keys and the metrics
    /// token redacted.
    pub fn redacted_toml(&self) -> String {
        let shown = Self {
            cookie: self.cookie.redacted(),
            oidc: self.oidc.redacted(),
            session: self.session.redacted(),
            ops: self.ops.redacted(),
            ..self.clone()
        };
        toml::to_string(&shown).unwrap_or_else(|e| format!("# cannot render settings: {e}\n"))
    }

    /// The settings for `tokenjar demo`: the configured ones, but with the
    /// embedded demo API as upstream, its token conventions, and a cookie
    /// that works on plain-http loopback.
    pub fn for_demo(&self, api_url: &str) -> Self {
        let mut demo = self.clone();
        demo.upstream.url = api_url.to_owned();
        demo.token = TokenSection {
            response_field: DemoApi::TOKEN_POINTER.to_owned(),
            upstream_header: DemoApi::TOKEN_HEADER.to_owned(),
            upstream_scheme: String::new(),
            drop_client_headers: self.token.drop_client_headers.clone(),
            refresh_field: String::new(),
            expires_in_field: String::new(),
        };
        demo.refresh = RefreshSection::default();
        let tls = self.server.tls_cert_file.is_some() || self.server.tls_key_file.is_some();
        if !tls {
            // Plain http on loopback: a Secure cookie would never come back.
            demo.cookie.secure = false;
            if demo.cookie.name.starts_with("__") {
                // __Host- and __Secure- names require Secure.
                demo.cookie.name = "auth-token".to_owned();
            }
        }
        // With tokenjar's own TLS listener configured, the demo serves https
        // and keeps the configured (production) cookie.
        demo.cookie.same_site = SameSiteSetting::Lax;
        demo.frontend = FrontendSection::default();
        // The demo is reached on loopback, whatever site is configured.
        demo.server.public_origin = None;
        demo
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::path::PathBuf;

    use tokenjar_adapters_actix::OsRandom;
    use tokenjar_domain::{CookieKeys, CookiePolicy};

    use super::testing::{load, problem_keys};
    use super::*;

    #[test]
    fn defaults_load_and_validate() {
        let settings = load(&[]).unwrap();
        assert_eq!(settings.server.port, 8080);
        assert_eq!(settings.upstream.url, "http://127.0.0.1:9090");
        assert_eq!(settings.token.response_field, "/authToken");
        assert_eq!(settings.cookie.name, "__Host-auth-token");
        assert!(settings.cookie.secure);
        let validated = settings.validate().unwrap();
        assert!(validated.ephemeral_key);
        assert!(!validated.json_logs);
        // The compiled-in defaults are the domain's own (a library user gets
        // the same cookie as the proxy), and they issue a __Host- cookie.
        assert_eq!(validated.rules.cookies.policy(), &CookiePolicy::default());
        let token = "tok".parse().unwrap();
        let issued = validated.rules.cookies.issue(&token, 1_000, &OsRandom).unwrap();
        assert!(
            issued.set_cookies[0].starts_with("__Host-auth-token="),
            "{issued:?}"
        );
        for attribute in ["; Secure", "; Path=/"] {
            assert!(issued.set_cookies[0].contains(attribute), "{attribute}");
        }
        assert!(!issued.set_cookies[0].contains("Domain"));
    }

    #[test]
    fn the_demo_runs_on_plain_http_whatever_the_configured_name() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../config");
        let repo_local = Settings::load(&Sources::from_vars(Some(dir), HashMap::new())).unwrap();
        // Compiled-in defaults (a __Host- name, Secure), the repo's local
        // file, and a __Secure- name a user may have configured.
        let secure_prefixed = load(&[("TOKENJAR_COOKIE__NAME", "__Secure-sid")]).unwrap();
        for settings in [load(&[]).unwrap(), repo_local, secure_prefixed] {
            let demo = settings.for_demo("http://127.0.0.1:1");
            let validated = demo.validate().unwrap();
            let policy = validated.rules.cookies.policy();
            assert!(!policy.secure, "{policy:?}");
            assert!(!policy.name.starts_with("__"), "{policy:?}");
        }
        // A plain name the user chose is kept.
        let named = load(&[("TOKENJAR_COOKIE__NAME", "sid")])
            .unwrap()
            .for_demo("http://127.0.0.1:1");
        assert_eq!(named.cookie.name, "sid");
    }

    #[test]
    fn environment_overrides_with_lists_and_numbers() {
        let k1 = CookieKeys::generate_base64(&OsRandom).unwrap();
        let k2 = CookieKeys::generate_base64(&OsRandom).unwrap();
        let keys = format!("{k1},{k2}");
        let settings = load(&[
            ("TOKENJAR_SERVER__PORT", "0"),
            ("TOKENJAR_UPSTREAM__URL", "http://api.internal:9000/v1"),
            ("TOKENJAR_COOKIE__KEYS", &keys),
            ("TOKENJAR_COOKIE__SECURE", "false"),
            ("TOKENJAR_COOKIE__NAME", "sid"),
            ("TOKENJAR_TOKEN__UPSTREAM_SCHEME", "Bearer"),
            (
                "TOKENJAR_CSRF__ALLOWED_ORIGINS",
                "https://a.example,https://b.example:8443",
            ),
            ("TOKENJAR_ENV", "nothing-here"),
            ("TOKENJAR_CONFIG_DIR", "/nonexistent"),
            ("OTHER_VAR", "ignored"),
        ])
        .unwrap();
        assert_eq!(settings.server.port, 0);
        assert_eq!(settings.cookie.keys, vec![k1, k2]);
        assert!(!settings.cookie.secure);
        assert_eq!(settings.cookie.name, "sid");
        assert_eq!(settings.csrf.allowed_origins.len(), 2);
        let validated = settings.validate().unwrap();
        assert!(!validated.ephemeral_key);
    }

    #[test]
    fn unknown_keys_are_all_reported() {
        assert_eq!(
            problem_keys(load(&[
                ("TOKENJAR_SERVER__PROT", "1"),
                ("TOKENJAR_COOKIE__NAEM", "x")
            ])),
            ["cookie.naem", "server.prot"]
        );
        assert_eq!(problem_keys(load(&[("TOKENJAR_NOPE__X", "1")])), ["nope.x"]);
        // Unknown keys, ill-typed values and invalid values all at once.
        assert_eq!(
            problem_keys(load(&[
                ("TOKENJAR_SERVER__PROT", "1"),
                ("TOKENJAR_SERVER__PORT", "x"),
                ("TOKENJAR_COOKIE__SAME_SITE", "none"),
                ("TOKENJAR_COOKIE__SECURE", "false"),
            ])),
            // The default __Host- name needs Secure too.
            ["server.prot", "server.port", "cookie.same_site", "cookie.secure"]
        );
    }

    #[test]
    fn ill_typed_values_name_their_section() {
        assert_eq!(
            problem_keys(load(&[
                ("TOKENJAR_SERVER__PORT", "notaport"),
                ("TOKENJAR_COOKIE__SECURE", "maybe")
            ])),
            ["server.port", "cookie.secure"]
        );
        let problems = load(&[("TOKENJAR_SERVER__PORT", "70000")]).err().unwrap();
        assert!(problems[0].message.contains("port"), "{problems:?}");
    }

    #[test]
    fn validation_reports_every_problem() {
        let settings = load(&[
            ("TOKENJAR_COOKIE__SAME_SITE", "none"),
            ("TOKENJAR_COOKIE__SECURE", "false"),
            ("TOKENJAR_COOKIE__KEYS", "not-base64!"),
            ("TOKENJAR_UPSTREAM__URL", "ftp://x"),
            ("TOKENJAR_UPSTREAM__TIMEOUT_MS", "0"),
            ("TOKENJAR_ROUTES__LOGIN", "/login"),
            ("TOKENJAR_TOKEN__RESPONSE_FIELD", "authToken"),
            ("TOKENJAR_TOKEN__UPSTREAM_HEADER", "bad header"),
            ("TOKENJAR_CSRF__HEADER", "bad header"),
            (
                "TOKENJAR_CSRF__ALLOWED_ORIGINS",
                "https://ok.example,https://x.example/path",
            ),
            ("TOKENJAR_LOG__FORMAT", "xml"),
        ])
        .unwrap();
        assert_eq!(
            problem_keys(settings.validate()),
            [
                "upstream.url",
                "upstream.timeout_ms",
                "routes.login",
                "token.response_field",
                "token.upstream_header",
                "cookie.same_site",
                "cookie.secure",
                "cookie.keys",
                "csrf.header",
                "csrf.allowed_origins",
                "log.format"
            ]
        );
    }

    #[test]
    fn hop_and_header_settings_are_checked() {
        let settings = load(&[
            (
                "TOKENJAR_SERVER__TRUSTED_PROXIES",
                "10.0.0.0/8,fd00::/8,192.0.2.1",
            ),
            ("TOKENJAR_SERVER__PUBLIC_ORIGIN", "https://app.example.com"),
            ("TOKENJAR_TOKEN__DROP_CLIENT_HEADERS", "authorization,x-api-key"),
            ("TOKENJAR_OPS__LISTEN", "127.0.0.1:9091"),
        ])
        .unwrap();
        assert_eq!(settings.server.trusted_proxies.len(), 3);
        assert_eq!(settings.token.drop_client_headers, ["authorization", "x-api-key"]);
        let validated = settings.validate().unwrap();
        assert_eq!(
            validated.rules.forwarding.public_origin(),
            Some("https://app.example.com")
        );
        assert_eq!(validated.adapter.ops.listen, Some(([127, 0, 0, 1], 9091).into()));

        let settings = load(&[
            ("TOKENJAR_SERVER__TRUSTED_PROXIES", "10.0.0.0/33"),
            ("TOKENJAR_SERVER__PUBLIC_ORIGIN", "app.example.com"),
            ("TOKENJAR_SERVER__CLIENT_BODY_TIMEOUT_MS", "0"),
            ("TOKENJAR_TOKEN__DROP_CLIENT_HEADERS", "bad name"),
            ("TOKENJAR_OPS__LISTEN", "localhost"),
        ])
        .unwrap();
        assert_eq!(
            problem_keys(settings.validate()),
            [
                "server.client_body_timeout_ms",
                "token.drop_client_headers",
                "server.public_origin",
                "server.trusted_proxies",
                "ops.listen"
            ]
        );
    }

    #[test]
    fn the_body_buffer_is_a_server_key_for_the_upstream_client() {
        let settings = load(&[("TOKENJAR_SERVER__CLIENT_BODY_BUFFER_BYTES", "1024")]).unwrap();
        let validated = settings.validate().unwrap();
        assert_eq!(validated.adapter.upstream.buffer_bytes, 1024);
    }

    #[test]
    fn files_layer_between_defaults_and_environment() {
        let dir = std::env::temp_dir().join(format!("tokenjar-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("default.toml"), "[server]\nport = 7000\nworkers = 3\n").unwrap();
        std::fs::write(dir.join("staging.toml"), "[server]\nport = 7001\n").unwrap();
        let vars = |extra: &[(&str, &str)]| -> HashMap<String, String> {
            let mut v: HashMap<String, String> = [("TOKENJAR_ENV".to_owned(), "staging".to_owned())].into();
            v.extend(extra.iter().map(|(k, x)| ((*k).to_owned(), (*x).to_owned())));
            v
        };
        let s = Settings::load(&Sources::from_vars(Some(dir.clone()), vars(&[]))).unwrap();
        assert_eq!((s.server.port, s.server.workers), (7001, 3));
        let s = Settings::load(&Sources::from_vars(
            Some(dir.clone()),
            vars(&[("TOKENJAR_SERVER__PORT", "7002")]),
        ))
        .unwrap();
        assert_eq!(s.server.port, 7002);
        std::fs::write(dir.join("default.toml"), "[server]\nprot = 1\n").unwrap();
        let problems = Settings::load(&Sources::from_vars(Some(dir.clone()), vars(&[])))
            .err()
            .unwrap();
        assert_eq!(problems[0].key, "server.prot");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn redacted_output_hides_keys() {
        let key = CookieKeys::generate_base64(&OsRandom).unwrap();
        let settings = load(&[("TOKENJAR_COOKIE__KEYS", &key)]).unwrap();
        let shown = settings.redacted_toml();
        assert!(!shown.contains(&key));
        assert!(shown.contains("<redacted key #0>"));
        assert!(shown.contains("port = 8080"));
        assert!(!format!("{settings:?}").contains(&key));
    }

    #[test]
    fn redacted_output_hides_the_metrics_token() {
        let settings = load(&[("TOKENJAR_OPS__METRICS_TOKEN", "s3cret-metrics")]).unwrap();
        let shown = settings.redacted_toml();
        assert!(!shown.contains("s3cret-metrics"), "{shown}");
        assert!(shown.contains("metrics_token = \"<redacted>\""), "{shown}");
        assert!(!format!("{settings:?}").contains("s3cret-metrics"));
    }

    #[test]
    fn repo_config_files_are_valid() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../config");
        // local.toml is plain-http development: a name without the __Host-
        // prefix, not Secure. production.toml keeps the secure default.
        for (env, name, secure) in [
            ("local", "auth-token", false),
            ("production", "__Host-auth-token", true),
        ] {
            let vars: HashMap<String, String> = [("TOKENJAR_ENV".to_owned(), env.to_owned())].into();
            let settings = Settings::load(&Sources::from_vars(Some(dir.clone()), vars)).unwrap();
            assert_eq!(settings.cookie.name, name, "{env}");
            assert_eq!(settings.cookie.secure, secure, "{env}");
            settings.validate().unwrap();
        }
        assert_eq!(
            std::fs::read_to_string(dir.join("default.toml")).unwrap(),
            DEFAULTS
        );
    }
}
