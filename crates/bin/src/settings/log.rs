//! `[log]`: the format of log lines, `pretty` or `json`.

use serde::{Deserialize, Serialize};

use super::section::{Problem, Problems, Section};

/// `log.*`
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct LogSection {
    /// `pretty` or `json`.
    pub format: LogFormat,
}

/// `log.format`.
///
/// Read from a string rather than as serde's own enum so that any other
/// value still loads, is kept as written, and is reported by `validate`
/// along with every other problem (`check-config` has always done so).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(from = "String", into = "String")]
pub enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line.
    Json,
    /// Anything else, as written.
    Unknown(String),
}

impl From<String> for LogFormat {
    fn from(value: String) -> Self {
        match value.as_str() {
            "pretty" => Self::Pretty,
            "json" => Self::Json,
            _ => Self::Unknown(value),
        }
    }
}

impl From<LogFormat> for String {
    fn from(value: LogFormat) -> Self {
        match value {
            LogFormat::Pretty => "pretty".to_owned(),
            LogFormat::Json => "json".to_owned(),
            LogFormat::Unknown(value) => value,
        }
    }
}

impl Section for LogSection {
    const NAME: &'static str = "log";
    /// Whether log lines are JSON.
    type Out = bool;

    fn validate(&self) -> Result<bool, Vec<Problem>> {
        let mut problems = Problems::in_section(Self::NAME);
        let json = match &self.format {
            LogFormat::Pretty => Some(false),
            LogFormat::Json => Some(true),
            LogFormat::Unknown(value) => {
                problems.push("format", format!("{value:?} is not one of pretty, json"));
                None
            }
        };
        problems.finish(|| json)
    }
}

#[cfg(test)]
mod tests {
    use crate::settings::testing::load;

    #[test]
    fn the_format_is_pretty_or_json_exactly() {
        assert!(
            load(&[("TOKENJAR_LOG__FORMAT", "json")])
                .unwrap()
                .validate()
                .unwrap()
                .json_logs
        );
        let problems = load(&[("TOKENJAR_LOG__FORMAT", "JSON")])
            .unwrap()
            .validate()
            .err()
            .unwrap();
        assert_eq!(
            problems[0].to_string(),
            "log.format: \"JSON\" is not one of pretty, json"
        );
    }
}
