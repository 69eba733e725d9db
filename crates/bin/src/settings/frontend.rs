//! `[frontend]`: where requests outside the API go, a web app's server or a
//! folder of static files (or nowhere), for the adapter's [`Frontend`].

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use tokenjar_adapters_actix::Frontend;

use super::section::{Problem, Problems, Section};
use super::upstream::http_url;

/// `frontend.*`
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct FrontendSection {
    /// A web app to forward non-API requests to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// A folder of static files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<PathBuf>,
}

impl Section for FrontendSection {
    const NAME: &'static str = "frontend";
    type Out = Frontend;

    fn validate(&self) -> Result<Frontend, Vec<Problem>> {
        let mut problems = Problems::in_section(Self::NAME);
        let frontend = match &self.url {
            Some(url) => http_url(&mut problems, "url", url).map(Frontend::Url),
            None => Some(self.dir.clone().map_or(Frontend::None, Frontend::Dir)),
        };
        if self.url.is_some() && self.dir.is_some() {
            problems.push_section("set frontend.url or frontend.dir, not both");
        }
        if let Some(dir) = &self.dir {
            if !dir.is_dir() {
                problems.push("dir", format!("{} is not a folder", dir.display()));
            }
        }
        problems.finish(|| frontend)
    }
}

#[cfg(test)]
mod tests {
    use crate::settings::testing::{load, problem_keys};

    #[test]
    fn an_https_frontend_url_is_accepted() {
        let settings = load(&[("TOKENJAR_FRONTEND__URL", "https://app.example")]).unwrap();
        assert!(settings.validate().is_ok());
    }

    #[test]
    fn url_and_dir_exclude_each_other_and_the_dir_must_exist() {
        let settings = load(&[
            ("TOKENJAR_FRONTEND__URL", "http://127.0.0.1:3000"),
            ("TOKENJAR_FRONTEND__DIR", "/nonexistent/dist"),
        ])
        .unwrap();
        assert_eq!(problem_keys(settings.validate()), ["frontend", "frontend.dir"]);
    }
}
