//! What every configuration section is: a [`Section`] that deserialises from
//! its TOML table and validates itself into what the server takes, and the
//! [`Problem`]s it reports, each naming its key.

use std::fmt;

use serde::de::DeserializeOwned;
use tokenjar_domain::SettingError;

/// One `[table]` of the configuration.
pub trait Section: DeserializeOwned {
    /// The table's name, e.g. `server`: the first part of every key.
    const NAME: &'static str;

    /// What the section turns into once checked.
    type Out;

    /// Checks every key and converts the section.
    ///
    /// # Errors
    /// Every problem found, not only the first, each naming its key.
    fn validate(&self) -> Result<Self::Out, Vec<Problem>>;
}

/// One thing wrong with the configuration, naming its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The dotted key, e.g. `cookie.same_site` (or the variable at fault).
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl Problem {
    /// A problem with `key`.
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// The problems found while checking one section (or, in
/// `Settings::validate`, all of them), in the order they were found.
pub struct Problems {
    section: &'static str,
    found: Vec<Problem>,
}

impl Problems {
    /// Collects the problems of `section`; keys pushed are within it.
    pub fn in_section(section: &'static str) -> Self {
        Self {
            section,
            found: Vec::new(),
        }
    }

    /// A problem with `key` of this section.
    pub fn push(&mut self, key: &str, message: impl Into<String>) {
        self.found
            .push(Problem::new(format!("{}.{key}", self.section), message));
    }

    /// A problem with the section as a whole (two keys that exclude each other).
    pub fn push_section(&mut self, message: impl Into<String>) {
        self.found.push(Problem::new(self.section, message));
    }

    /// A duration or count where 0 would make every request fail.
    pub fn nonzero(&mut self, key: &str, value: u64) {
        if value == 0 {
            self.push(key, "must be greater than 0");
        }
    }

    /// A domain constructor's result; its problems are named within this section.
    pub fn domain<T>(&mut self, result: Result<T, Vec<SettingError>>) -> Option<T> {
        result
            .map_err(|errors| {
                for e in errors {
                    self.push(e.key, e.message);
                }
            })
            .ok()
    }

    /// Another section's result, its problems kept as they are.
    pub fn take<T>(&mut self, result: Result<T, Vec<Problem>>) -> Option<T> {
        result.map_err(|problems| self.found.extend(problems)).ok()
    }

    /// The output `build` makes from the parts checked, or every problem.
    ///
    /// `build` is only called when nothing was found, so every part it
    /// takes with `?` is there; should one be missing all the same (a check
    /// that failed without saying why), the section is named as invalid
    /// rather than accepted.
    ///
    /// # Errors
    /// The problems found.
    pub fn finish<T>(self, build: impl FnOnce() -> Option<T>) -> Result<T, Vec<Problem>> {
        if !self.found.is_empty() {
            return Err(self.found);
        }
        build().ok_or_else(|| vec![Problem::new(self.section, "invalid configuration")])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_are_named_within_their_section_in_the_order_found() {
        let mut problems = Problems::in_section("server");
        problems.nonzero("timeout_ms", 0);
        problems.nonzero("other_ms", 1);
        problems.push_section("set a or b, not both");
        let part: Option<u8> = problems.domain(Err(vec![SettingError::new("port", "bad")]));
        assert!(part.is_none());
        let shown: Vec<String> = problems
            .finish(|| Some(()))
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            shown,
            [
                "server.timeout_ms: must be greater than 0",
                "server: set a or b, not both",
                "server.port: bad"
            ]
        );
    }

    #[test]
    fn a_part_missing_without_a_problem_is_not_accepted() {
        let problems = Problems::in_section("log");
        let missing: Option<u8> = None;
        let result = problems.finish(|| missing);
        assert_eq!(
            result.unwrap_err(),
            [Problem::new("log", "invalid configuration")]
        );
    }
}
