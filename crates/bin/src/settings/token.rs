//! `[token]`: where the token (and the refresh token and its lifetime) is
//! in the login response, and how it (and nothing the client sent in its
//! place) goes to the API.

use serde::{Deserialize, Serialize};
use tokenjar_domain::{LoginRules, TokenRules};

use super::section::{Problem, Problems, Section};

/// `token.*`
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct TokenSection {
    /// JSON Pointer to the token in the login response.
    pub response_field: String,
    /// Upstream header name.
    pub upstream_header: String,
    /// Optional auth scheme.
    pub upstream_scheme: String,
    /// Client headers never forwarded.
    pub drop_client_headers: Vec<String>,
    /// JSON Pointer to the refresh token; `""` = none.
    #[serde(default)]
    pub refresh_field: String,
    /// JSON Pointer to the access token's lifetime in seconds; `""` = none.
    #[serde(default)]
    pub expires_in_field: String,
}

/// The checked `[token]` section: two of the domain's rules.
pub struct Token {
    /// Where the token is in the login response.
    pub login: LoginRules,
    /// How the token goes upstream.
    pub rules: TokenRules,
}

impl Section for TokenSection {
    const NAME: &'static str = "token";
    type Out = Token;

    fn validate(&self) -> Result<Token, Vec<Problem>> {
        let mut problems = Problems::in_section(Self::NAME);
        let login = problems.domain(
            LoginRules::new(&self.response_field)
                .and_then(|rules| rules.with_refresh(&self.refresh_field))
                .and_then(|rules| rules.with_expires_in(&self.expires_in_field)),
        );
        let rules = problems.domain(
            TokenRules::new(&self.upstream_header, &self.upstream_scheme)
                .and_then(|rules| rules.dropping(&self.drop_client_headers)),
        );
        problems.finish(|| {
            Some(Token {
                login: login?,
                rules: rules?,
            })
        })
    }
}
