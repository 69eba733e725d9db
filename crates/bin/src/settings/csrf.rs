//! `[csrf]`: the header unsafe methods need and the extra origins allowed,
//! checked by the domain's [`CsrfRules`].

use serde::{Deserialize, Serialize};
use tokenjar_domain::CsrfRules;

use super::section::{Problem, Problems, Section};

/// `csrf.*`
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct CsrfSection {
    /// Required header on unsafe methods; "" disables.
    pub header: String,
    /// Extra allowed origins.
    pub allowed_origins: Vec<String>,
}

impl Section for CsrfSection {
    const NAME: &'static str = "csrf";
    type Out = CsrfRules;

    fn validate(&self) -> Result<CsrfRules, Vec<Problem>> {
        let mut problems = Problems::in_section(Self::NAME);
        let rules = problems.domain(CsrfRules::new(&self.header, &self.allowed_origins));
        problems.finish(|| rules)
    }
}
