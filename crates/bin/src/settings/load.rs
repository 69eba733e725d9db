//! Loading the layers of SPEC §2 with the `config` crate: where they come
//! from ([`Sources`]), the one generic loader every section goes through, and
//! the one check for unknown keys (against the fields of the section types),
//! which also names a mistyped `TOKENJAR_*` variable.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use config::{Config, Environment, File, FileFormat, Map, Value, ValueKind};
use serde::de::{self, DeserializeOwned, Deserializer, Visitor};

use super::section::{Problem, Section};
use super::DEFAULTS;

/// The prefix of every setting's variable.
const PREFIX: &str = "TOKENJAR";

/// Variables that choose files rather than settings.
const SELECTORS: [&str; 2] = ["TOKENJAR_ENV", "TOKENJAR_CONFIG_DIR"];

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
        // `vars()` would panic on any variable that is not Unicode, even one
        // that is none of tokenjar's; such bytes are read lossily instead, so
        // that a bad `TOKENJAR_*` value is reported like any other.
        let vars: HashMap<String, String> = std::env::vars_os()
            .map(|(k, v)| (k.to_string_lossy().into_owned(), v.to_string_lossy().into_owned()))
            .collect();
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

/// Whether a folder exists, for messages.
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

/// The layers, merged, and what loading each section found.
pub struct Loader<'a> {
    sources: &'a Sources,
    merged: Config,
    defaults: Config,
    /// Each section loaded so far, with the keys its type takes.
    known: Vec<(&'static str, &'static [&'static str])>,
    /// Ill-typed values, in the order the sections were loaded.
    problems: Vec<Problem>,
    /// Sections that fell back to their defaults.
    failed: Vec<&'static str>,
}

/// What loading found once every section was loaded.
pub struct Loaded {
    /// Unknown keys (sorted), then ill-typed values (in section order).
    pub problems: Vec<Problem>,
    /// Sections whose values could not be read; they hold their defaults.
    pub failed: Vec<&'static str>,
}

impl<'a> Loader<'a> {
    /// Merges the layers, later winning: the compiled-in defaults,
    /// `DIR/default.toml`, `DIR/{env}.toml`, the environment.
    ///
    /// # Errors
    /// A file that cannot be read or parsed, or a variable that is not
    /// Unicode: nothing can be checked then.
    pub fn new(sources: &'a Sources) -> Result<Self, Vec<Problem>> {
        let built = |config: config::ConfigBuilder<config::builder::DefaultState>| {
            config
                .build()
                .map_err(|e| vec![Problem::new("config", e.to_string())])
        };
        let mut env = Environment::with_prefix(PREFIX)
            .prefix_separator("_")
            .separator("__")
            .list_separator(",")
            .try_parsing(true)
            .source(Some(sources.vars.clone()));
        for key in list_keys() {
            env = env.with_list_parse_key(&key);
        }
        let env_file = sources.file(&format!("{}.toml", sources.env));
        let merged = built(
            Config::builder()
                .add_source(File::from_str(DEFAULTS, FileFormat::Toml))
                .add_source(File::from(sources.file("default.toml")).required(false))
                .add_source(File::from(env_file).required(false))
                .add_source(env),
        )?;
        let defaults = built(Config::builder().add_source(File::from_str(DEFAULTS, FileFormat::Toml)))?;
        Ok(Self {
            sources,
            merged,
            defaults,
            known: Vec::new(),
            problems: Vec::new(),
            failed: Vec::new(),
        })
    }

    /// The compiled-in defaults alone, as `T`: what a section falls back to
    /// when its configured values cannot be read.
    ///
    /// # Errors
    /// Only if the defaults compiled into the binary do not fit `T`.
    pub fn defaults<T: DeserializeOwned>(&self) -> Result<T, Vec<Problem>> {
        self.defaults
            .clone()
            .try_deserialize()
            .map_err(|e| vec![Problem::new("config", e.to_string())])
    }

    /// Section `S` as configured, or `fallback` (its defaults) when a value
    /// is ill-typed. The first ill-typed value is reported, named by its
    /// path; falling back lets the other sections, and this section's
    /// unknown keys, still be checked and reported in the same run.
    pub fn section<S: Section>(&mut self, fallback: S) -> S {
        self.known.push((S::NAME, field_names::<S>()));
        let table = self
            .merged
            .get::<Map<String, Value>>(S::NAME)
            .map_err(|e| Problem::new(S::NAME, e.to_string()));
        // Unknown keys are left in: without `deny_unknown_fields` serde skips
        // them, and `finish` reports them all, not only the first.
        let parsed = table.and_then(|table| {
            serde_path_to_error::deserialize(Value::new(None, ValueKind::Table(table)))
                .map_err(|e| Problem::new(format!("{}.{}", S::NAME, e.path()), e.into_inner().to_string()))
        });
        parsed.unwrap_or_else(|problem| {
            self.problems.push(problem);
            self.failed.push(S::NAME);
            fallback
        })
    }

    /// Every key no loaded section takes, then the ill-typed values.
    pub fn finish(self) -> Loaded {
        let mut problems = self.unknown_keys();
        problems.extend(self.problems);
        Loaded {
            problems,
            failed: self.failed,
        }
    }

    /// The one check for unknown keys: every key in the merged layers that
    /// is not a field of its section's type, sorted.
    fn unknown_keys(&self) -> Vec<Problem> {
        let Ok(table) = self.merged.clone().try_deserialize::<Map<String, Value>>() else {
            return vec![Problem::new(
                "config",
                "the configuration is not a table of sections",
            )];
        };
        let mut sections: Vec<_> = table.into_iter().collect();
        sections.sort_by(|a, b| a.0.cmp(&b.0));
        let mut problems = Vec::new();
        for (section, value) in sections {
            match value.kind {
                ValueKind::Table(entries) => {
                    let fields = self.fields(&section);
                    let mut keys: Vec<_> = entries
                        .into_keys()
                        .filter(|key| !fields.contains(&key.as_str()))
                        .collect();
                    keys.sort();
                    for key in keys {
                        problems.push(Problem::new(format!("{section}.{key}"), "unknown key"));
                    }
                }
                _ => problems.push(self.not_a_section(&section)),
            }
        }
        problems
    }

    /// A top-level value where a `[section]` belongs. From the environment
    /// it is nearly always a single `_` where `__` was meant, so the
    /// variable is named, with the right spelling when there is one.
    fn not_a_section(&self, name: &str) -> Problem {
        let variable = format!("{PREFIX}_{name}");
        let Some(var) = self
            .sources
            .vars
            .keys()
            .find(|var| var.eq_ignore_ascii_case(&variable))
        else {
            return Problem::new(name, "unknown key (expected a [section])");
        };
        let meant = name.match_indices('_').find_map(|(at, _)| {
            let (section, key) = (&name[..at], &name[at + 1..]);
            self.fields(section).contains(&key).then(|| {
                format!(
                    "{PREFIX}_{}__{}",
                    section.to_ascii_uppercase(),
                    key.to_ascii_uppercase()
                )
            })
        });
        match meant {
            Some(meant) => Problem::new(
                var,
                format!("unknown variable; did you mean {meant} (two underscores between section and key)?"),
            ),
            None => Problem::new(
                var,
                format!(
                    "unknown variable (settings are {PREFIX}_<SECTION>__<KEY>, e.g. {PREFIX}_SERVER__PORT)"
                ),
            ),
        }
    }

    /// The keys section `name` takes; none if no such section was loaded.
    fn fields(&self, name: &str) -> &'static [&'static str] {
        self.known
            .iter()
            .find(|(section, _)| *section == name)
            .map_or(&[], |(_, fields)| fields)
    }
}

/// The keys whose environment value is a comma-separated list: those whose
/// compiled-in default is a list (`cookie.keys = []`, …), so that a new list
/// key needs nothing but its default.
fn list_keys() -> Vec<String> {
    let Ok(sections) = toml::from_str::<toml::Table>(DEFAULTS) else {
        return Vec::new();
    };
    let mut keys = Vec::new();
    for (section, value) in &sections {
        if let Some(entries) = value.as_table() {
            keys.extend(
                entries
                    .iter()
                    .filter(|(_, value)| value.is_array())
                    .map(|(key, _)| format!("{section}.{key}")),
            );
        }
    }
    keys
}

/// The keys a section type takes: the field names serde's derive hands to
/// `deserialize_struct`, read by a deserializer that stops right there. So
/// the type itself is the list of known keys, optional ones included.
fn field_names<S: DeserializeOwned>() -> &'static [&'static str] {
    let mut fields: &'static [&'static str] = &[];
    // The probe always ends in `Stopped`; the fields are what it was for.
    let _ = S::deserialize(FieldProbe { fields: &mut fields });
    fields
}

/// A deserializer that only records the fields of the struct asked for.
struct FieldProbe<'a> {
    fields: &'a mut &'static [&'static str],
}

/// How [`FieldProbe`] ends every deserialisation.
#[derive(Debug)]
struct Stopped;

impl fmt::Display for Stopped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("stopped after reading the field names")
    }
}

impl std::error::Error for Stopped {}

impl de::Error for Stopped {
    fn custom<T: fmt::Display>(_: T) -> Self {
        Self
    }
}

impl<'de> Deserializer<'de> for FieldProbe<'_> {
    type Error = Stopped;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stopped> {
        Err(Stopped)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Stopped> {
        *self.fields = fields;
        Err(Stopped)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map enum identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::testing::load;
    use crate::settings::Settings;

    fn shown(vars: &[(&str, &str)]) -> Vec<String> {
        load(vars)
            .err()
            .unwrap_or_default()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn a_single_underscore_names_the_variable_and_the_right_spelling() {
        assert_eq!(
            shown(&[("TOKENJAR_UPSTREAM_URL", "http://api:9000")]),
            ["TOKENJAR_UPSTREAM_URL: unknown variable; did you mean TOKENJAR_UPSTREAM__URL (two underscores between section and key)?"]
        );
        // A key with underscores of its own, and a variable spelled in lower case.
        assert_eq!(
            shown(&[("TOKENJAR_server_public_origin", "https://app.example")]),
            ["TOKENJAR_server_public_origin: unknown variable; did you mean TOKENJAR_SERVER__PUBLIC_ORIGIN (two underscores between section and key)?"]
        );
    }

    #[test]
    fn a_variable_that_is_no_setting_is_named_without_a_guess() {
        assert_eq!(
            shown(&[("TOKENJAR_LOG_LEVEL", "debug")]),
            ["TOKENJAR_LOG_LEVEL: unknown variable (settings are TOKENJAR_<SECTION>__<KEY>, e.g. TOKENJAR_SERVER__PORT)"]
        );
    }

    #[test]
    fn a_top_level_key_in_a_file_keeps_its_message() {
        let dir = std::env::temp_dir().join(format!("tokenjar-load-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("default.toml"), "upstream_url = \"http://x\"\n").unwrap();
        let problems = Settings::load(&Sources::from_vars(Some(dir.clone()), HashMap::new()))
            .err()
            .unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            problems,
            [Problem::new("upstream_url", "unknown key (expected a [section])")]
        );
    }

    #[test]
    fn the_known_keys_are_the_fields_and_default_toml_documents_each() {
        let sections = toml::from_str::<toml::Table>(DEFAULTS).unwrap();
        let sources = Sources::from_vars(
            Some(std::env::temp_dir().join("tokenjar-settings-test-nonexistent")),
            HashMap::new(),
        );
        let mut loader = Loader::new(&sources).unwrap();
        let defaults = loader.defaults().unwrap();
        let _ = Settings::from_loader(&mut loader, defaults);
        assert_eq!(loader.known.len(), sections.len());
        for (section, fields) in &loader.known {
            let table = sections[*section].as_table().unwrap();
            for key in table.keys() {
                assert!(fields.contains(&key.as_str()), "{section}.{key} is no field");
            }
            for field in *fields {
                // Optional keys have no default: default.toml shows them
                // commented out.
                assert!(
                    table.contains_key(*field) || DEFAULTS.contains(&format!("\n# {field} = ")),
                    "{section}.{field} is not in default.toml"
                );
            }
        }
    }

    #[test]
    fn lists_are_the_keys_with_a_list_default() {
        let mut keys = list_keys();
        keys.sort();
        assert_eq!(
            keys,
            [
                "cookie.keys",
                "csrf.allowed_origins",
                "oidc.scopes",
                "oidc.user_claims",
                "server.trusted_proxies",
                "token.drop_client_headers"
            ]
        );
    }
}
