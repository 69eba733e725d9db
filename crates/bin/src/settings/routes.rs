//! `[routes]`: the paths tokenjar proxies or answers itself, checked by the
//! domain's [`Routes`].

use serde::{Deserialize, Serialize};
use tokenjar_domain::Routes;

use super::section::{Problem, Problems, Section};

/// `routes.*`
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct RoutesSection {
    /// Proxied prefix.
    pub prefix: String,
    /// Login route.
    pub login: String,
    /// Logout route.
    pub logout: String,
    /// Session route.
    pub session: String,
    /// OIDC back-channel logout route.
    pub backchannel_logout: String,
}

impl Section for RoutesSection {
    const NAME: &'static str = "routes";
    type Out = Routes;

    fn validate(&self) -> Result<Routes, Vec<Problem>> {
        let mut problems = Problems::in_section(Self::NAME);
        let routes = problems.domain(Routes::new(
            &self.prefix,
            &self.login,
            &self.logout,
            &self.session,
        ));
        problems.finish(|| routes)
    }
}
