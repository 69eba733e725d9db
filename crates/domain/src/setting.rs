//! A problem with one setting, as the domain's constructors report it. A
//! leaf module: every rule module builds these, and nothing here needs them.

/// One problem with a setting, naming the key within its section (e.g.
/// `same_site` for `cookie.same_site`) so that a caller can report it
/// beside every other problem at once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct SettingError {
    /// The key at fault, within its section.
    pub key: &'static str,
    /// What is wrong.
    pub message: String,
}

impl SettingError {
    /// A problem with `key`.
    pub fn new(key: &'static str, message: impl Into<String>) -> Self {
        Self {
            key,
            message: message.into(),
        }
    }
}
