//! tokenjar's configuration: the layers of SPEC §2 loaded with the `config`
//! crate, unknown keys refused, then validated into the plain settings each
//! adapter takes, with every problem reported at once.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use config::{Config, Environment, File, FileFormat, Map, Value, ValueKind};
use serde::{Deserialize, Serialize};
use tokenjar_adapters_actix::{
    AppSettings, Frontend, OpsSettings, OsRandom, ServerSettings, UpstreamSettings,
};
use tokenjar_domain::demo::DemoApi;
use tokenjar_domain::{
    CookieJar, CookieKeys, CookiePolicy, CsrfRules, Forwarding, LoginRules, Routes, Rules, SameSite,
    SettingError, TokenRules, UpstreamBase,
};

/// The compiled-in defaults: the repository's `config/default.toml`.
pub const DEFAULTS: &str = include_str!("../../../config/default.toml");

/// Keys that have no default (they are unset unless configured).
const OPTIONAL_KEYS: [&str; 5] = [
    "cookie.domain",
    "frontend.url",
    "frontend.dir",
    "server.public_origin",
    "ops.listen",
];

/// Keys whose environment value is a comma-separated list.
const LIST_KEYS: [&str; 4] = [
    "cookie.keys",
    "csrf.allowed_origins",
    "server.trusted_proxies",
    "token.drop_client_headers",
];

/// Variables that choose files rather than settings.
const SELECTORS: [&str; 2] = ["TOKENJAR_ENV", "TOKENJAR_CONFIG_DIR"];

/// Every setting, as loaded.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// `server.*`
    pub server: ServerSection,
    /// `upstream.*`
    pub upstream: UpstreamSection,
    /// `routes.*`
    pub routes: RoutesSection,
    /// `token.*`
    pub token: TokenSection,
    /// `cookie.*`
    pub cookie: CookieSection,
    /// `csrf.*`
    pub csrf: CsrfSection,
    /// `frontend.*`
    #[serde(default)]
    pub frontend: FrontendSection,
    /// `ops.*`
    pub ops: OpsSection,
    /// `log.*`
    pub log: LogSection,
}

/// `server.*`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    /// Listen address.
    pub host: String,
    /// Listen port.
    pub port: u16,
    /// Worker threads; 0 = one per core.
    pub workers: usize,
    /// Graceful shutdown time.
    pub shutdown_timeout_s: u64,
    /// Request body limit; 0 = none.
    pub max_body_bytes: u64,
    /// Connections per worker; 0 = default.
    pub max_connections: usize,
    /// Request-head timeout.
    pub client_request_timeout_ms: u64,
    /// Keep-alive idle time; 0 = off.
    pub keep_alive_s: u64,
    /// Longest pause between two reads of a request body.
    pub client_body_timeout_ms: u64,
    /// Bodies up to this size are read whole before the API is called.
    pub client_body_buffer_bytes: u64,
    /// The one origin served, when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_origin: Option<String>,
    /// CIDR blocks of trusted load balancers.
    pub trusted_proxies: Vec<String>,
}

/// `upstream.*`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSection {
    /// The API's base URL.
    pub url: String,
    /// Connect timeout.
    pub connect_timeout_ms: u64,
    /// Response-head timeout.
    pub timeout_ms: u64,
    /// Connections per worker; 0 = default.
    pub pool_size: usize,
}

/// `routes.*`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RoutesSection {
    /// Proxied prefix.
    pub prefix: String,
    /// Login route.
    pub login: String,
    /// Logout route.
    pub logout: String,
    /// Session route.
    pub session: String,
}

/// `token.*`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSection {
    /// JSON Pointer to the token in the login response.
    pub response_field: String,
    /// Upstream header name.
    pub upstream_header: String,
    /// Optional auth scheme.
    pub upstream_scheme: String,
    /// Client headers never forwarded.
    pub drop_client_headers: Vec<String>,
}

/// `cookie.*`
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CookieSection {
    /// Cookie name.
    pub name: String,
    /// `Secure`.
    pub secure: bool,
    /// `SameSite`.
    pub same_site: String,
    /// `Path`.
    pub path: String,
    /// `Domain`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Fixed lifetime; 0 = from the token.
    pub max_age_s: u64,
    /// Seal the token.
    pub encrypt: bool,
    /// Sealing keys, base64.
    pub keys: Vec<String>,
}

impl fmt::Debug for CookieSection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CookieSection")
            .field("name", &self.name)
            .field("secure", &self.secure)
            .field("same_site", &self.same_site)
            .field("path", &self.path)
            .field("domain", &self.domain)
            .field("max_age_s", &self.max_age_s)
            .field("encrypt", &self.encrypt)
            .field("keys", &format_args!("<{} redacted>", self.keys.len()))
            .finish()
    }
}

/// `csrf.*`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CsrfSection {
    /// Required header on unsafe methods; "" disables.
    pub header: String,
    /// Extra allowed origins.
    pub allowed_origins: Vec<String>,
}

/// `frontend.*`
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FrontendSection {
    /// A web app to forward non-API requests to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// A folder of static files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<PathBuf>,
}

/// `ops.*`
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OpsSection {
    /// Bearer token for `/metrics`; "" = open.
    pub metrics_token: String,
    /// A separate listener for `/metrics` and the probes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
}

impl fmt::Debug for OpsSection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpsSection")
            .field(
                "metrics_token",
                &if self.metrics_token.is_empty() {
                    ""
                } else {
                    "<redacted>"
                },
            )
            .field("listen", &self.listen)
            .finish()
    }
}

/// `log.*`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    /// `pretty` or `json`.
    pub format: String,
}

/// One thing wrong with the configuration, naming its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The dotted key, e.g. `cookie.same_site`.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

fn problem(key: impl Into<String>, message: impl Into<String>) -> Problem {
    Problem {
        key: key.into(),
        message: message.into(),
    }
}

/// Where the configuration comes from, besides the compiled-in defaults.
#[derive(Debug, Clone)]
pub struct Sources {
    /// The folder holding `default.toml` and `{env}.toml`.
    pub dir: PathBuf,
    /// The environment name (`TOKENJAR_ENV`).
    pub env: String,
    /// The `TOKENJAR_*` variables.
    pub vars: HashMap<String, String>,
}

impl Sources {
    /// The sources this process was started with.
    pub fn from_process(config_dir: Option<PathBuf>) -> Self {
        let vars: HashMap<String, String> = std::env::vars().collect();
        Self::from_vars(config_dir, vars)
    }

    /// The sources given a variable set (for tests).
    pub fn from_vars(config_dir: Option<PathBuf>, vars: HashMap<String, String>) -> Self {
        let dir = config_dir
            .or_else(|| vars.get("TOKENJAR_CONFIG_DIR").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("./config"));
        let env = vars
            .get("TOKENJAR_ENV")
            .filter(|e| !e.is_empty())
            .cloned()
            .unwrap_or_else(|| "local".to_owned());
        let vars = vars
            .into_iter()
            .filter(|(k, _)| k.starts_with("TOKENJAR_") && !SELECTORS.contains(&k.as_str()))
            .collect();
        Self { dir, env, vars }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Settings {
    /// Loads the layers and checks every key against the known ones.
    ///
    /// # Errors
    /// Every unknown key, unreadable file and ill-typed value found.
    pub fn load(sources: &Sources) -> Result<Self, Vec<Problem>> {
        let env_file = sources.file(&format!("{}.toml", sources.env));
        let mut env = Environment::with_prefix("TOKENJAR")
            .prefix_separator("_")
            .separator("__")
            .list_separator(",")
            .try_parsing(true)
            .source(Some(sources.vars.clone()));
        for key in LIST_KEYS {
            env = env.with_list_parse_key(key);
        }
        let config = Config::builder()
            .add_source(File::from_str(DEFAULTS, FileFormat::Toml))
            .add_source(File::from(sources.file("default.toml")).required(false))
            .add_source(File::from(env_file).required(false))
            .add_source(env)
            .build()
            .map_err(|e| vec![problem("config", e.to_string())])?;

        let known = known_keys();
        let mut problems = unknown_keys(&config, &known);
        let defaults = Config::builder()
            .add_source(File::from_str(DEFAULTS, FileFormat::Toml))
            .build()
            .map_err(|e| vec![problem("config", e.to_string())])?;
        let mut failed = Vec::new();
        // Each section on its own, so that one bad value does not hide
        // another section's; the path tells which key was ill-typed. A
        // section that fails is replaced by its defaults so that the other
        // sections can still be validated and their problems reported too.
        macro_rules! section {
            ($name:literal) => {{
                let known_only = config.get::<Map<String, Value>>($name).map(|mut table| {
                    // Unknown keys were reported above; without them the
                    // deserializer reports the first ill-typed value instead.
                    table.retain(|key, _| known.contains(&format!("{}.{key}", $name)));
                    Value::new(None, ValueKind::Table(table))
                });
                let parsed = known_only
                    .map_err(|e| problem($name, e.to_string()))
                    .and_then(|table| {
                        serde_path_to_error::deserialize(table).map_err(|e| {
                            problem(
                                format!("{}.{}", $name, e.path()),
                                e.into_inner().to_string(),
                            )
                        })
                    });
                match parsed {
                    Ok(value) => value,
                    Err(failure) => {
                        problems.push(failure);
                        failed.push($name);
                        defaults
                            .get($name)
                            .map_err(|e| vec![problem($name, e.to_string())])?
                    }
                }
            }};
        }
        let settings = Self {
            server: section!("server"),
            upstream: section!("upstream"),
            routes: section!("routes"),
            token: section!("token"),
            cookie: section!("cookie"),
            csrf: section!("csrf"),
            frontend: section!("frontend"),
            ops: section!("ops"),
            log: section!("log"),
        };
        if problems.is_empty() {
            return Ok(settings);
        }
        if let Err(more) = settings.validate() {
            let unrelated = more.into_iter().filter(|p| {
                let section = p.key.split('.').next().unwrap_or_default();
                !failed.contains(&section) && !problems.iter().any(|q| q.key == p.key)
            });
            problems.extend(unrelated.collect::<Vec<_>>());
        }
        Err(problems)
    }

    /// Turns the settings into what the adapters and the domain take.
    ///
    /// # Errors
    /// Every problem found, each naming its key.
    pub fn validate(&self) -> Result<Validated, Vec<Problem>> {
        let mut problems = Vec::new();

        if self.server.host.trim().is_empty() {
            problems.push(problem("server.host", "must not be empty"));
        }
        if self.server.workers > 1024 {
            problems.push(problem(
                "server.workers",
                "more than 1024 workers is surely a mistake",
            ));
        }
        let upstream = plain_http("upstream.url", &self.upstream.url, &mut problems);
        for (key, ms) in [
            ("upstream.connect_timeout_ms", self.upstream.connect_timeout_ms),
            ("upstream.timeout_ms", self.upstream.timeout_ms),
            (
                "server.client_request_timeout_ms",
                self.server.client_request_timeout_ms,
            ),
            (
                "server.client_body_timeout_ms",
                self.server.client_body_timeout_ms,
            ),
        ] {
            if ms == 0 {
                problems.push(problem(key, "must be greater than 0"));
            }
        }

        let r = &self.routes;
        let routes = in_section(
            "routes",
            Routes::new(&r.prefix, &r.login, &r.logout, &r.session),
            &mut problems,
        );

        let login = in_section(
            "token",
            LoginRules::new(&self.token.response_field),
            &mut problems,
        );
        let token = in_section(
            "token",
            TokenRules::new(&self.token.upstream_header, &self.token.upstream_scheme)
                .and_then(|rules| rules.dropping(&self.token.drop_client_headers)),
            &mut problems,
        );
        let forwarding = in_section(
            "server",
            Forwarding::new(
                self.server.public_origin.as_deref().unwrap_or_default(),
                &self.server.trusted_proxies,
            ),
            &mut problems,
        );
        let ops_listen = self.ops.listen.as_deref().filter(|l| !l.trim().is_empty());
        let ops_listen = match ops_listen.map(|l| l.trim().parse::<SocketAddr>()) {
            None => None,
            Some(Ok(addr)) => Some(addr),
            Some(Err(_)) => {
                problems.push(problem(
                    "ops.listen",
                    format!(
                        "{:?} is not an address and port, e.g. 127.0.0.1:9091",
                        self.ops.listen
                    ),
                ));
                None
            }
        };

        let c = &self.cookie;
        let same_site = in_section("cookie", SameSite::parse(&c.same_site), &mut problems);
        let policy = same_site.and_then(|same_site| {
            let policy = CookiePolicy {
                name: c.name.clone(),
                secure: c.secure,
                same_site,
                path: c.path.clone(),
                domain: c.domain.clone().filter(|d| !d.is_empty()),
                max_age_s: c.max_age_s,
                encrypt: c.encrypt,
            };
            in_section("cookie", policy.checked(), &mut problems)
        });
        let configured: Vec<&str> = c
            .keys
            .iter()
            .map(|k| k.trim())
            .filter(|k| !k.is_empty())
            .collect();
        let keys = CookieKeys::from_base64(&configured)
            .map_err(|e| problems.push(problem("cookie.keys", e.to_string())))
            .ok();

        let csrf = in_section(
            "csrf",
            CsrfRules::new(&self.csrf.header, &self.csrf.allowed_origins),
            &mut problems,
        );

        let frontend = match &self.frontend.url {
            Some(url) => plain_http("frontend.url", url, &mut problems).map(Frontend::Url),
            None => Some(self.frontend.dir.clone().map_or(Frontend::None, Frontend::Dir)),
        };
        if self.frontend.url.is_some() && self.frontend.dir.is_some() {
            problems.push(problem("frontend", "set frontend.url or frontend.dir, not both"));
        }
        if let Some(dir) = &self.frontend.dir {
            if !dir.is_dir() {
                problems.push(problem(
                    "frontend.dir",
                    format!("{} is not a folder", dir.display()),
                ));
            }
        }
        if !matches!(self.log.format.as_str(), "pretty" | "json") {
            problems.push(problem(
                "log.format",
                format!("{:?} is not one of pretty, json", self.log.format),
            ));
        }

        if !problems.is_empty() {
            return Err(problems);
        }
        let (
            Some(upstream),
            Some(routes),
            Some(login),
            Some(token),
            Some(policy),
            Some(keys),
            Some(csrf),
            Some(frontend),
            Some(forwarding),
        ) = (
            upstream, routes, login, token, policy, keys, csrf, frontend, forwarding,
        )
        else {
            return Err(vec![problem("config", "invalid configuration")]);
        };
        let ephemeral_key = policy.encrypt && keys.is_empty();
        let keys = if ephemeral_key {
            CookieKeys::generate(&OsRandom)
                .map_err(|e| vec![problem("cookie.keys", format!("no key could be made: {e}"))])?
        } else {
            keys
        };
        let rules = Rules {
            routes,
            upstream,
            token,
            login,
            cookies: CookieJar::new(policy, keys),
            csrf,
            forwarding,
        };
        let server = ServerSettings {
            host: self.server.host.clone(),
            port: self.server.port,
            workers: self.server.workers,
            shutdown_timeout: Duration::from_secs(self.server.shutdown_timeout_s),
            max_body_bytes: self.server.max_body_bytes,
            max_connections: self.server.max_connections,
            client_request_timeout: Duration::from_millis(self.server.client_request_timeout_ms),
            keep_alive: Duration::from_secs(self.server.keep_alive_s),
            client_body_timeout: Duration::from_millis(self.server.client_body_timeout_ms),
        };
        let upstream = UpstreamSettings {
            connect_timeout: Duration::from_millis(self.upstream.connect_timeout_ms),
            timeout: Duration::from_millis(self.upstream.timeout_ms),
            pool_size: self.upstream.pool_size,
            buffer_bytes: self.server.client_body_buffer_bytes,
        };
        let ops = OpsSettings {
            metrics_token: (!self.ops.metrics_token.is_empty()).then(|| self.ops.metrics_token.clone()),
            listen: ops_listen,
        };
        Ok(Validated {
            rules: Arc::new(rules),
            adapter: AppSettings {
                server,
                upstream,
                ops,
                frontend,
            },
            json_logs: self.log.format == "json",
            ephemeral_key,
        })
    }

    /// The effective settings as TOML, with the cookie keys redacted.
    pub fn redacted_toml(&self) -> String {
        let mut shown = self.clone();
        if !shown.ops.metrics_token.is_empty() {
            shown.ops.metrics_token = "<redacted>".to_owned();
        }
        shown.cookie.keys = shown
            .cookie
            .keys
            .iter()
            .enumerate()
            .map(|(i, _)| format!("<redacted key #{i}>"))
            .collect();
        toml::to_string(&shown).unwrap_or_else(|e| format!("# cannot render settings: {e}\n"))
    }
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
}

impl Settings {
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
        };
        demo.cookie.secure = false;
        if demo.cookie.name.starts_with("__") {
            // __Host- and __Secure- names require Secure.
            demo.cookie.name = "auth-token".to_owned();
        }
        demo.cookie.same_site = "lax".to_owned();
        demo.frontend = FrontendSection::default();
        // The demo is reached on loopback, whatever site is configured.
        demo.server.public_origin = None;
        demo
    }
}

/// A URL tokenjar's HTTP client will call: parsed, and refused when it is
/// https, since the client is built without TLS (a lean tree; the API and
/// the web app's server sit on a private network or a sidecar).
fn plain_http(key: &str, url: &str, problems: &mut Vec<Problem>) -> Option<UpstreamBase> {
    match UpstreamBase::parse(url) {
        Ok(base) if base.scheme() == "https" => {
            problems.push(problem(
                key,
                "https is not supported (the HTTP client has no TLS): reach it over plain http on a private network",
            ));
            None
        }
        Ok(base) => Some(base),
        Err(e) => {
            problems.push(problem(key, e.to_string()));
            None
        }
    }
}

/// A domain constructor's result, its problems named within `section`.
fn in_section<T>(
    section: &str,
    result: Result<T, Vec<SettingError>>,
    problems: &mut Vec<Problem>,
) -> Option<T> {
    result
        .map_err(|errors| {
            problems.extend(
                errors
                    .into_iter()
                    .map(|e| problem(format!("{section}.{}", e.key), e.message)),
            );
        })
        .ok()
}

/// Every key present in `config` that the defaults do not know.
fn unknown_keys(config: &Config, known: &[String]) -> Vec<Problem> {
    let mut problems = Vec::new();
    let Ok(table) = config.clone().try_deserialize::<Map<String, Value>>() else {
        return vec![problem("config", "the configuration is not a table of sections")];
    };
    let mut sections: Vec<_> = table.into_iter().collect();
    sections.sort_by(|a, b| a.0.cmp(&b.0));
    for (section, value) in sections {
        match value.kind {
            ValueKind::Table(entries) => {
                let mut keys: Vec<_> = entries.keys().cloned().collect();
                keys.sort();
                for key in keys {
                    let dotted = format!("{section}.{key}");
                    if !known.contains(&dotted) {
                        problems.push(problem(dotted, "unknown key"));
                    }
                }
            }
            _ => problems.push(problem(section, "unknown key (expected a [section])")),
        }
    }
    problems
}

/// The dotted keys of the compiled-in defaults, plus the optional ones.
fn known_keys() -> Vec<String> {
    let mut keys: Vec<String> = OPTIONAL_KEYS.iter().map(|k| (*k).to_owned()).collect();
    if let Ok(sections) = toml::from_str::<toml::Table>(DEFAULTS) {
        for (section, value) in sections {
            if let toml::Value::Table(entries) = value {
                keys.extend(entries.keys().map(|k| format!("{section}.{k}")));
            }
        }
    }
    keys
}

/// Whether a folder has a file, for messages.
pub fn describe_dir(dir: &Path) -> String {
    if dir.is_dir() {
        dir.display().to_string()
    } else {
        format!(
            "{} (not found; only defaults and the environment apply)",
            dir.display()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources(vars: &[(&str, &str)]) -> Sources {
        let dir = std::env::temp_dir().join("tokenjar-settings-test-nonexistent");
        Sources::from_vars(
            Some(dir),
            vars.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    fn load(vars: &[(&str, &str)]) -> Result<Settings, Vec<Problem>> {
        Settings::load(&sources(vars))
    }

    fn problem_keys<T>(result: Result<T, Vec<Problem>>) -> Vec<String> {
        result
            .err()
            .unwrap_or_default()
            .into_iter()
            .map(|p| p.key)
            .collect()
    }

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
        assert!(issued.set_cookie.starts_with("__Host-auth-token="), "{issued:?}");
        for attribute in ["; Secure", "; Path=/"] {
            assert!(issued.set_cookie.contains(attribute), "{attribute}");
        }
        assert!(!issued.set_cookie.contains("Domain"));
    }

    #[test]
    fn the_default_name_needs_https_and_plain_http_names_the_cookie_otherwise() {
        assert_eq!(
            problem_keys(load(&[("TOKENJAR_COOKIE__SECURE", "false")]).unwrap().validate()),
            ["cookie.secure"]
        );
        let plain = load(&[
            ("TOKENJAR_COOKIE__SECURE", "false"),
            ("TOKENJAR_COOKIE__NAME", "auth-token"),
        ])
        .unwrap();
        let validated = plain.validate().unwrap();
        assert_eq!(validated.rules.cookies.name(), "auth-token");
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
    fn https_upstreams_are_refused_with_a_reason() {
        let settings = load(&[("TOKENJAR_UPSTREAM__URL", "https://api.example")]).unwrap();
        let problems = settings.validate().err().unwrap();
        assert_eq!(problems[0].key, "upstream.url");
        assert!(problems[0].message.contains("https"));
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
    fn an_https_frontend_url_is_refused_too() {
        let settings = load(&[("TOKENJAR_FRONTEND__URL", "https://app.example")]).unwrap();
        let problems = settings.validate().err().unwrap();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].key, "frontend.url");
        assert!(problems[0].message.contains("https"));
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
