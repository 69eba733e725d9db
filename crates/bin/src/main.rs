//! The `tokenjar` command: parses the command line, loads and validates the
//! configuration, sets up logging and starts the server. Everything else
//! lives in the domain and adapter crates.

mod settings;
mod store;

use std::io;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use tokenjar_adapters_actix::{demo_page, Application, DemoApiServer, OsRandom};
use tokenjar_domain::CookieKeys;
use tracing_subscriber::EnvFilter;

use crate::settings::{describe_dir, Problem, Settings, Sources, StoreChoice, Validated};
use crate::store::Store;

/// mimalloc instead of the system allocator: a proxied request makes many
/// short-lived allocations, and mimalloc serves them with fewer instructions
/// (measured in docs/performance.md). Version 2 with its arenas committed
/// lazily (`.cargo/config.toml`) keeps peak memory close to glibc's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit code for a configuration that cannot be used.
const BAD_CONFIG: u8 = 2;

/// tokenjar keeps your API token in an HTTP-only cookie and proxies your API.
#[derive(Debug, Parser)]
#[command(name = "tokenjar", version, about, long_about = None)]
struct Cli {
    /// Folder with default.toml and {TOKENJAR_ENV}.toml [default: ./config]
    // Not `global`: keygen reads no configuration and should not offer it.
    // It stays here for `tokenjar --config-dir DIR [COMMAND]` and for plain
    // `tokenjar --config-dir DIR`, which serves.
    #[arg(long, env = "TOKENJAR_CONFIG_DIR", value_name = "DIR")]
    config_dir: Option<PathBuf>,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the proxy (the default)
    Serve(ConfigDir),
    /// Run tokenjar in front of an embedded demo API, with a demo page at /
    Demo(ConfigDir),
    /// Print a fresh random cookie key (base64, 64 bytes) and exit
    Keygen,
    /// Load and validate the configuration, print it with secrets redacted
    CheckConfig(ConfigDir),
}

/// `--config-dir` after a subcommand that reads the configuration.
#[derive(Debug, Default, Args)]
struct ConfigDir {
    /// Folder with default.toml and {TOKENJAR_ENV}.toml [default: TOKENJAR_CONFIG_DIR, else ./config]
    // No `env` here: the variable is read for the flag before the
    // subcommand, so that a flag on the command line, on either side, wins
    // over it.
    #[arg(long, value_name = "DIR")]
    config_dir: Option<PathBuf>,
}

impl ConfigDir {
    /// The folder given after the subcommand, else the one given before it
    /// (or by `TOKENJAR_CONFIG_DIR`).
    fn or(self, before: Option<PathBuf>) -> Option<PathBuf> {
        self.config_dir.or(before)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let before = cli.config_dir;
    match cli
        .command
        .unwrap_or_else(|| Command::Serve(ConfigDir::default()))
    {
        Command::Keygen => match CookieKeys::generate_base64(&OsRandom) {
            Ok(key) => {
                println!("{key}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("tokenjar: cannot make a key: {e}");
                ExitCode::FAILURE
            }
        },
        Command::CheckConfig(dir) => check_config(dir.or(before)),
        Command::Serve(dir) => serve(dir.or(before)),
        Command::Demo(dir) => demo(dir.or(before)),
    }
}

fn load(config_dir: Option<PathBuf>) -> Result<(Settings, Validated, Sources), Vec<Problem>> {
    let sources = Sources::from_process(config_dir);
    let settings = Settings::load(&sources)?;
    let validated = settings.validate()?;
    Ok((settings, validated, sources))
}

fn report(problems: &[Problem]) -> ExitCode {
    eprintln!("tokenjar: the configuration cannot be used:");
    for p in problems {
        eprintln!("  error: {p}");
    }
    ExitCode::from(BAD_CONFIG)
}

fn check_config(config_dir: Option<PathBuf>) -> ExitCode {
    match load(config_dir) {
        Ok((settings, validated, sources)) => {
            println!("# configuration folder: {}", describe_dir(&sources.dir));
            println!("# environment: {}", sources.env);
            for warning in warnings(&validated) {
                println!("# warning: {warning}");
            }
            print!("{}", settings.redacted_toml());
            ExitCode::SUCCESS
        }
        Err(problems) => report(&problems),
    }
}

fn warnings(validated: &Validated) -> Vec<&'static str> {
    let mut out = Vec::new();
    if validated.ephemeral_key {
        out.push("cookie.keys is empty: a random key is used and every session dies on restart");
    }
    if !validated.rules.cookies.policy().encrypt {
        out.push("cookie.encrypt is false: the token is stored in the cookie in clear");
    }
    out
}

fn init_logging(json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour only for a person at a terminal: escape codes in a file or a
    // log collector are noise.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Where requests go, logged at start-up so that a wrong URL shows there
/// rather than as the first 502. Only URLs, which validation has checked
/// to carry no credentials.
fn log_destinations(settings: &Settings) {
    let upstream = &settings.upstream.url;
    match &settings.frontend.url {
        Some(frontend) => tracing::info!("upstream API at {upstream}, web app at {frontend}"),
        None => tracing::info!("upstream API at {upstream}"),
    }
}

/// The server for `validated`, with the session store it chose.
fn build(validated: &Validated) -> io::Result<Application> {
    let store = Store::open(&validated.store, validated.ca_file.as_deref())
        .map_err(|e| io::Error::other(format!("session.redis_url: {e}")))?;
    if let StoreChoice::Redis { url, .. } = &validated.store {
        tracing::info!("sessions in Redis at {}", settings::redacted_url(url));
    }
    let store = Arc::new(store);
    Application::build_with_store(&validated.adapter, Arc::clone(&validated.rules), move || {
        store.handle()
    })
}

fn serve(config_dir: Option<PathBuf>) -> ExitCode {
    let (settings, validated, sources) = match load(config_dir) {
        Ok(loaded) => loaded,
        Err(problems) => return report(&problems),
    };
    init_logging(validated.json_logs);
    tracing::info!(config = %describe_dir(&sources.dir), env = %sources.env, "configuration loaded");
    log_destinations(&settings);
    for warning in warnings(&validated) {
        tracing::warn!("{warning}");
    }
    let result = actix_web::rt::System::new().block_on(async move {
        let app = build(&validated)?;
        let (url, ops) = (app.url(), app.ops_url());
        // Signals are watched before the address is announced: a SIGHUP or
        // SIGTERM sent on seeing it must not meet the default action.
        let running = app.start()?;
        tracing::info!("listening on {url}");
        if let Some(ops) = ops {
            tracing::info!("metrics and probes on {ops}");
        }
        running.await
    });
    match result {
        Ok(()) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            // A failed bind names its address and settings (the adapter's
            // message), so this line needs nothing more.
            tracing::error!("cannot serve: {e}");
            eprintln!("tokenjar: cannot serve: {e}");
            ExitCode::FAILURE
        }
    }
}

fn demo(config_dir: Option<PathBuf>) -> ExitCode {
    let sources = Sources::from_process(config_dir);
    let settings = match Settings::load(&sources) {
        Ok(settings) => settings,
        Err(problems) => return report(&problems),
    };
    // OIDC mode (`oidc.issuer` set, as `make run-oidc` does): users log in
    // at the provider, and the demo API takes the provider's access tokens.
    let oidc = !settings.oidc.issuer.is_empty();
    let result = actix_web::rt::System::new().block_on(async move {
        let api = if oidc {
            DemoApiServer::bind_for_provider(&settings.oidc.issuer)?
        } else {
            DemoApiServer::bind()?
        };
        let mut validated = match settings.for_demo(&api.url()).validate() {
            Ok(validated) => validated,
            Err(problems) => return Ok(report(&problems)),
        };
        init_logging(validated.json_logs);
        validated.adapter.frontend = demo_page(oidc);
        // In OIDC mode the page must be opened on the redirect URL's origin:
        // the login cookie set before the provider comes back only there.
        let origin = validated
            .rules
            .oidc
            .as_ref()
            .map(|o| o.client.redirect_origin().to_owned());
        let api_handle = api.handle();
        tracing::info!("demo API at {}", api.url());
        actix_web::rt::spawn(api.run());
        let app = build(&validated)?;
        let url = app.url();
        let running = app.start()?;
        tracing::info!("listening on {url}");
        if let Some(origin) = origin {
            println!(
                "tokenjar demo: open {origin}/ and log in with your provider at {} (Ctrl-C stops)",
                settings.oidc.issuer
            );
        } else {
            println!("tokenjar demo: open {url}/ and log in as demo / demo (Ctrl-C stops)");
        }
        let served = running.await;
        api_handle.stop(true).await;
        served.map(|()| ExitCode::SUCCESS)
    });
    result.unwrap_or_else(|e: io::Error| {
        eprintln!("tokenjar: cannot run the demo: {e}");
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    /// The folder `args` choose, with `TOKENJAR_CONFIG_DIR` unset.
    fn config_dir(args: &[&str]) -> Option<PathBuf> {
        let cli = Cli::try_parse_from(args).unwrap();
        let dir = match cli
            .command
            .unwrap_or_else(|| Command::Serve(ConfigDir::default()))
        {
            Command::Serve(dir) | Command::Demo(dir) | Command::CheckConfig(dir) => dir,
            Command::Keygen => panic!("keygen reads no configuration"),
        };
        dir.or(cli.config_dir)
    }

    #[test]
    fn the_config_dir_goes_before_or_after_the_subcommands_that_read_it() {
        Cli::command().debug_assert();
        let x = Some(PathBuf::from("x"));
        for args in [
            &["tokenjar", "--config-dir", "x"][..],
            &["tokenjar", "--config-dir", "x", "serve"],
            &["tokenjar", "serve", "--config-dir", "x"],
            &["tokenjar", "demo", "--config-dir", "x"],
            &["tokenjar", "--config-dir", "x", "check-config"],
            &["tokenjar", "check-config", "--config-dir", "x"],
            &[
                "tokenjar",
                "--config-dir",
                "y",
                "check-config",
                "--config-dir",
                "x",
            ],
        ] {
            assert_eq!(config_dir(args), x, "{args:?}");
        }
        assert!(Cli::try_parse_from(["tokenjar", "keygen", "--config-dir", "x"]).is_err());
    }
}
