//! `[oidc]`: OpenID Connect mode (SPEC §16): the provider's issuer and the
//! client tokenjar is registered as there, for the domain's [`OidcClient`].

use std::fmt;

use serde::{Deserialize, Serialize};
use tokenjar_domain::OidcClient;

use super::section::{Problem, Problems, Section};

/// `oidc.*`
#[derive(Clone, Deserialize, Serialize)]
pub struct OidcSection {
    /// The provider's issuer URL; `""` = login mode.
    pub issuer: String,
    /// The client id at the provider.
    pub client_id: String,
    /// The client secret; `""` = a public client (PKCE only).
    pub client_secret: String,
    /// The callback URL registered at the provider.
    pub redirect_url: String,
    /// Scopes requested.
    pub scopes: Vec<String>,
    /// ID-token claims kept in the session.
    pub user_claims: Vec<String>,
    /// Where the provider sends the browser after logout.
    pub post_logout_redirect_url: String,
}

impl Default for OidcSection {
    fn default() -> Self {
        let list = |items: &[&str]| items.iter().map(|s| (*s).to_owned()).collect();
        Self {
            issuer: String::new(),
            client_id: String::new(),
            client_secret: String::new(),
            redirect_url: String::new(),
            scopes: list(&["openid", "profile", "email", "offline_access"]),
            user_claims: list(&["sub", "name", "email", "preferred_username"]),
            post_logout_redirect_url: String::new(),
        }
    }
}

impl fmt::Debug for OidcSection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OidcSection")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &if self.client_secret.is_empty() {
                    ""
                } else {
                    "<redacted>"
                },
            )
            .field("redirect_url", &self.redirect_url)
            .field("scopes", &self.scopes)
            .field("user_claims", &self.user_claims)
            .field("post_logout_redirect_url", &self.post_logout_redirect_url)
            .finish()
    }
}

impl OidcSection {
    /// The section as `check-config` shows it: the secret replaced.
    pub fn redacted(&self) -> Self {
        Self {
            client_secret: if self.client_secret.is_empty() {
                String::new()
            } else {
                "<redacted>".to_owned()
            },
            ..self.clone()
        }
    }
}

impl Section for OidcSection {
    const NAME: &'static str = "oidc";
    type Out = Option<OidcClient>;

    fn validate(&self) -> Result<Option<OidcClient>, Vec<Problem>> {
        let mut problems = Problems::in_section(Self::NAME);
        if self.issuer.is_empty() {
            return problems.finish(|| Some(None));
        }
        let client = problems.domain(OidcClient::new(
            &self.issuer,
            &self.client_id,
            &self.client_secret,
            &self.redirect_url,
            &self.scopes,
            &self.user_claims,
            &self.post_logout_redirect_url,
        ));
        problems.finish(|| Some(Some(client?)))
    }
}

#[cfg(test)]
mod tests {
    use crate::settings::testing::{load, problem_keys};

    const ON: &[(&str, &str)] = &[
        ("TOKENJAR_OIDC__ISSUER", "https://idp.example/realms/app"),
        ("TOKENJAR_OIDC__CLIENT_ID", "tokenjar"),
        ("TOKENJAR_OIDC__CLIENT_SECRET", "s3cret-value"),
        ("TOKENJAR_OIDC__REDIRECT_URL", "https://app.example/api/callback"),
    ];

    #[test]
    fn oidc_mode_is_off_by_default_and_on_with_an_issuer() {
        assert!(load(&[]).unwrap().validate().unwrap().rules.oidc.is_none());
        let validated = load(ON).unwrap().validate().unwrap();
        let oidc = validated.rules.oidc.as_ref().unwrap();
        assert_eq!(oidc.client.redirect_path(), "/api/callback");
        // Refresh comes with the provider: the refresh_token grant.
        assert!(validated.rules.refresh.is_some());
        assert_eq!(
            validated.rules.routes.classify("/api/callback"),
            Ok(tokenjar_domain::Route::OidcCallback)
        );
        assert_eq!(
            validated.rules.routes.classify("/api/login"),
            Ok(tokenjar_domain::Route::OidcLogin)
        );
        assert_eq!(
            validated.rules.routes.classify("/api/backchannel-logout"),
            Ok(tokenjar_domain::Route::BackchannelLogout)
        );
        // In login mode the path is the API's, like any other.
        let login_mode = load(&[]).unwrap().validate().unwrap();
        assert!(matches!(
            login_mode.rules.routes.classify("/api/backchannel-logout"),
            Ok(tokenjar_domain::Route::Proxy { .. })
        ));
    }

    #[test]
    fn the_secret_is_never_shown() {
        let settings = load(ON).unwrap();
        assert!(!format!("{settings:?}").contains("s3cret-value"));
        assert!(!settings.redacted_toml().contains("s3cret-value"));
    }

    #[test]
    fn bad_oidc_settings_name_their_keys() {
        let bad = load(&[
            ("TOKENJAR_OIDC__ISSUER", "http://idp.example"),
            ("TOKENJAR_OIDC__REDIRECT_URL", "/api/callback"),
        ])
        .unwrap();
        assert_eq!(
            problem_keys(bad.validate()),
            ["oidc.issuer", "oidc.client_id", "oidc.redirect_url"]
        );
        let mut clash = ON.to_vec();
        clash.push(("TOKENJAR_REFRESH__PATH", "/refresh"));
        clash.push(("TOKENJAR_TOKEN__REFRESH_FIELD", "/r"));
        clash.push(("TOKENJAR_OIDC__REDIRECT_URL", "https://app.example/api/session"));
        assert_eq!(
            problem_keys(load(&clash).unwrap().validate()),
            ["refresh.path", "oidc.redirect_url"]
        );
        let mut taken = ON.to_vec();
        taken.push(("TOKENJAR_ROUTES__BACKCHANNEL_LOGOUT", "/api/Callback/"));
        assert_eq!(
            problem_keys(load(&taken).unwrap().validate()),
            ["routes.backchannel_logout"]
        );
        let mut clear = ON.to_vec();
        clear.push(("TOKENJAR_COOKIE__ENCRYPT", "false"));
        assert_eq!(problem_keys(load(&clear).unwrap().validate()), ["cookie.encrypt"]);
    }
}
