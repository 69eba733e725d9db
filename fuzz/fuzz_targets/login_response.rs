//! Fuzz target: `LoginRules::extract` on arbitrary login response bodies. It must not panic,
//! and a body it accepts must come back as JSON with `"loggedIn": true` and without the
//! token anywhere in its bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tokenjar_domain::oracle::contains;
use tokenjar_fuzz::LOGIN_RULES;

fuzz_target!(|data: &[u8]| {
    for rules in LOGIN_RULES.iter() {
        let Ok(login) = rules.extract(data) else {
            continue;
        };
        let token = login.token.expose();
        assert!(
            !contains(&login.body, token.as_bytes()),
            "token {token:?} is in the reply {:?}",
            String::from_utf8_lossy(&login.body)
        );
        let reply: serde_json::Value = serde_json::from_slice(&login.body).expect("the reply is JSON");
        assert_eq!(reply.get("loggedIn"), Some(&serde_json::Value::Bool(true)));
    }
});
