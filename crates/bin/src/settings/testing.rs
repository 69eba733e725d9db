//! Helpers the settings tests share: loading from a given set of variables,
//! with no configuration folder, and reading back the keys of the problems.

use std::collections::HashMap;

use super::{Problem, Settings, Sources};

/// Sources with `vars` and a configuration folder that does not exist.
pub fn sources(vars: &[(&str, &str)]) -> Sources {
    let dir = std::env::temp_dir().join("tokenjar-settings-test-nonexistent");
    let vars: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    Sources::from_vars(Some(dir), vars)
}

/// [`Settings::load`] with `vars` alone over the compiled-in defaults.
pub fn load(vars: &[(&str, &str)]) -> Result<Settings, Vec<Problem>> {
    Settings::load(&sources(vars))
}

/// The keys of the problems, in order; none when there were none.
pub fn problem_keys<T>(result: Result<T, Vec<Problem>>) -> Vec<String> {
    result
        .err()
        .unwrap_or_default()
        .into_iter()
        .map(|p| p.key)
        .collect()
}
