//! Fuzz target: `Routes::classify` on arbitrary request paths. It must not panic, and a path
//! it proxies must plan to an upstream URL whose path, however a server resolves it, stays
//! under the upstream base path.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tokenjar_domain::oracle::{resolved_path, stays_under_base, BASE};
use tokenjar_domain::Route;
use tokenjar_fuzz::{ROUTES, UPSTREAM};

fuzz_target!(|data: &[u8]| {
    let path = String::from_utf8_lossy(data);
    for routes in ROUTES.iter() {
        let Ok(Route::Proxy { rest, .. }) = routes.classify(&path) else {
            continue;
        };
        let url = UPSTREAM.url(&rest, None);
        assert!(url.starts_with(BASE), "{path:?} -> {url:?}");
        let resolved = resolved_path(&url);
        assert!(
            resolved.as_deref().is_ok_and(stays_under_base),
            "{path:?} -> {url:?} resolves to {resolved:?}"
        );
    }
});
