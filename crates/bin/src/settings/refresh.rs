//! `[refresh]`: how a session's access token is renewed with its refresh
//! token (SPEC §14), for the domain's [`RefreshRules`].

use serde::{Deserialize, Serialize};
use tokenjar_domain::RefreshRules;

use super::section::{Problem, Problems, Section};

/// `refresh.*`
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct RefreshSection {
    /// API path of the refresh call; `""` = no refresh.
    pub path: String,
    /// JSON field of the refresh token in the request body.
    pub request_field: String,
    /// Refresh this many seconds before the access token expires.
    pub leeway_s: u64,
    /// How long a refresh's result is handed to late requests.
    pub reuse_window_s: u64,
    /// API path told the refresh token at logout; `""` = none.
    pub revoke_path: String,
}

impl Default for RefreshSection {
    fn default() -> Self {
        Self {
            path: String::new(),
            request_field: "refreshToken".to_owned(),
            leeway_s: 60,
            reuse_window_s: 60,
            revoke_path: String::new(),
        }
    }
}

impl Section for RefreshSection {
    const NAME: &'static str = "refresh";
    type Out = Option<RefreshRules>;

    fn validate(&self) -> Result<Option<RefreshRules>, Vec<Problem>> {
        let mut problems = Problems::in_section(Self::NAME);
        if self.path.is_empty() {
            if !self.revoke_path.is_empty() {
                problems.push(
                    "revoke_path",
                    "needs refresh.path: without refresh, no refresh token is kept",
                );
            }
            return problems.finish(|| Some(None));
        }
        let rules = problems.domain(RefreshRules::new(
            &self.path,
            &self.request_field,
            self.leeway_s,
            self.reuse_window_s,
            &self.revoke_path,
        ));
        problems.finish(|| Some(Some(rules?)))
    }
}

#[cfg(test)]
mod tests {
    use crate::settings::testing::{load, problem_keys};

    #[test]
    fn refresh_is_off_by_default_and_on_with_a_path() {
        let validated = load(&[]).unwrap().validate().unwrap();
        assert!(validated.rules.refresh.is_none());

        let on = load(&[
            ("TOKENJAR_REFRESH__PATH", "/auth/refresh"),
            ("TOKENJAR_TOKEN__REFRESH_FIELD", "/refreshToken"),
        ])
        .unwrap();
        let validated = on.validate().unwrap();
        assert!(validated.rules.refresh.is_some());
        assert!(validated.rules.login.reads_refresh());
    }

    #[test]
    fn bad_refresh_settings_name_their_keys() {
        let bad = load(&[
            ("TOKENJAR_REFRESH__PATH", "auth/refresh"),
            ("TOKENJAR_REFRESH__REQUEST_FIELD", ""),
            ("TOKENJAR_REFRESH__REVOKE_PATH", "/revoke?x"),
            ("TOKENJAR_TOKEN__REFRESH_FIELD", "refreshToken"),
        ])
        .unwrap();
        assert_eq!(
            problem_keys(bad.validate()),
            [
                "token.refresh_field",
                "refresh.path",
                "refresh.revoke_path",
                "refresh.request_field",
            ]
        );
        let revoke_alone = load(&[("TOKENJAR_REFRESH__REVOKE_PATH", "/revoke")]).unwrap();
        assert_eq!(problem_keys(revoke_alone.validate()), ["refresh.revoke_path"]);
    }

    #[test]
    fn refresh_needs_a_refresh_field_and_sealed_cookies() {
        let no_field = load(&[("TOKENJAR_REFRESH__PATH", "/auth/refresh")]).unwrap();
        assert_eq!(problem_keys(no_field.validate()), ["token.refresh_field"]);

        let clear = load(&[
            ("TOKENJAR_TOKEN__REFRESH_FIELD", "/refreshToken"),
            ("TOKENJAR_TOKEN__EXPIRES_IN_FIELD", "/expiresIn"),
            ("TOKENJAR_COOKIE__ENCRYPT", "false"),
        ])
        .unwrap();
        assert_eq!(
            problem_keys(clear.validate()),
            ["token.refresh_field", "token.expires_in_field"]
        );
    }
}
