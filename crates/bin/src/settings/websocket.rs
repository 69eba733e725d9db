//! `[websocket]`: the largest WebSocket message the relay passes on
//! (SPEC §13), for the adapter's [`WebSocketSettings`].

use serde::{Deserialize, Serialize};
use tokenjar_adapters_actix::WebSocketSettings;

use super::section::{Problem, Problems, Section};

/// `websocket.*`
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct WebSocketSection {
    /// Largest message relayed, in bytes; a larger one closes the socket
    /// with 1009.
    pub max_message_bytes: u64,
}

impl Default for WebSocketSection {
    fn default() -> Self {
        Self {
            max_message_bytes: WebSocketSettings::default().max_message_bytes as u64,
        }
    }
}

impl Section for WebSocketSection {
    const NAME: &'static str = "websocket";
    type Out = WebSocketSettings;

    fn validate(&self) -> Result<WebSocketSettings, Vec<Problem>> {
        let mut problems = Problems::in_section(Self::NAME);
        problems.nonzero("max_message_bytes", self.max_message_bytes);
        let max_message_bytes = usize::try_from(self.max_message_bytes).unwrap_or(usize::MAX);
        problems.finish(|| Some(WebSocketSettings { max_message_bytes }))
    }
}

#[cfg(test)]
mod tests {
    use crate::settings::testing::{load, problem_keys};

    #[test]
    fn the_message_limit_defaults_to_one_mebibyte_and_must_be_set() {
        let settings = load(&[]).unwrap();
        assert_eq!(settings.websocket.max_message_bytes, 1_048_576);
        let validated = settings.validate().unwrap();
        assert_eq!(validated.adapter.websocket.max_message_bytes, 1_048_576);

        let settings = load(&[("TOKENJAR_WEBSOCKET__MAX_MESSAGE_BYTES", "4096")]).unwrap();
        assert_eq!(
            settings.validate().unwrap().adapter.websocket.max_message_bytes,
            4096
        );

        let zero = load(&[("TOKENJAR_WEBSOCKET__MAX_MESSAGE_BYTES", "0")]).unwrap();
        assert_eq!(problem_keys(zero.validate()), ["websocket.max_message_bytes"]);
    }
}
