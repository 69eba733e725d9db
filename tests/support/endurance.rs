//! What the endurance targets share (soak, idle_connections, api_restart,
//! broken_api, slow_clients): raw request builders, a pacer for steady
//! load, percentiles, and the baseline that tokenjar's memory and
//! descriptors must come back to.

use std::time::{Duration, Instant};

use crate::app::{Reply, TestApp};

/// Longest any single read or write may block: past it a request counts as
/// hung (a failure), so no test can wait forever.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// Slack on memory comparisons: 5 % of the reference plus 1 MiB, so that
/// allocator noise on a 15-30 MiB process does not fail a test while a leak
/// of a few hundred bytes per request over thousands of requests does.
pub fn rss_allowance_kib(reference: u64) -> u64 {
    reference + reference / 20 + 1024
}

/// A bounded ceiling for "memory stays bounded" checks (the same as the
/// streaming tests).
pub const RSS_LIMIT_KIB: u64 = 64 * 1024;

/// `Host` sent with every raw request.
pub const HOST: &str = "127.0.0.1";

/// A raw keep-alive `GET`, with `Cookie: <cookie>` if given.
pub fn get(path: &str, cookie: Option<&str>) -> Vec<u8> {
    let cookie = cookie.map(|c| format!("Cookie: {c}\r\n")).unwrap_or_default();
    format!("GET {path} HTTP/1.1\r\nHost: {HOST}\r\n{cookie}\r\n").into_bytes()
}

/// A raw keep-alive `POST` of `body`, with the CSRF header and `Cookie:
/// <cookie>` if given.
pub fn post(path: &str, cookie: Option<&str>, content_type: &str, body: &[u8]) -> Vec<u8> {
    let cookie = cookie.map(|c| format!("Cookie: {c}\r\n")).unwrap_or_default();
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: {HOST}\r\n{cookie}X-Csrf: 1\r\nContent-Type: {content_type}\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    request
}

/// A raw login as the demo user.
pub fn login_request() -> Vec<u8> {
    post(
        "/api/login",
        None,
        "application/json",
        br#"{"username":"demo","password":"demo"}"#,
    )
}

/// The `Cookie` value a browser would send back after `reply`, if it set
/// the auth cookie.
pub fn auth_cookie(reply: &Reply) -> Option<String> {
    reply.set_cookie_for("auth-token").map(|c| c.pair())
}

/// A steady-load pacer: each call returns at the next slot of a fixed
/// period (at once when behind). It shapes the load; nothing is asserted on
/// its timing.
pub struct Pacer {
    next: Instant,
    period: Duration,
}

impl Pacer {
    /// A pacer whose first slot is now.
    pub fn new(period: Duration) -> Self {
        Self {
            next: Instant::now(),
            period,
        }
    }

    /// Waits for the next slot.
    pub fn wait(&mut self) {
        let now = Instant::now();
        if self.next > now {
            std::thread::sleep(self.next - now);
        } else {
            // Behind schedule: no burst to catch up.
            self.next = now;
        }
        self.next += self.period;
    }
}

/// The `p` quantile (0 to 1) of `sorted`; zero when empty.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let at = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[at]
}

/// Baseline readings of an idle tokenjar, taken after warm-up requests.
pub struct Baseline {
    rss_kib: u64,
    fds: usize,
}

impl Baseline {
    /// Reads `app`'s memory and (settled) descriptor count.
    pub fn take(app: &TestApp) -> Self {
        let fds = app.settled_fd_count(Duration::from_secs(5));
        Self {
            rss_kib: app.rss_kib(),
            fds,
        }
    }

    /// Asserts that tokenjar's fds come back to the baseline and its memory
    /// within [`rss_allowance_kib`] of it (waiting at most 5 s for each);
    /// prints and returns the readings.
    pub fn assert_returned(&self, app: &TestApp, label: &str) -> (u64, usize) {
        let fds = app.wait_fds_at_most(self.fds, Duration::from_secs(5));
        let limit = rss_allowance_kib(self.rss_kib);
        let rss = app.wait_rss_at_most(limit, Duration::from_secs(5));
        eprintln!(
            "{label}: baseline VmRSS {} KiB, fds {}; afterwards VmRSS {rss} KiB (limit {limit}), fds {fds}; \
             VmHWM {} KiB",
            self.rss_kib,
            self.fds,
            app.peak_rss_kib()
        );
        assert!(
            fds <= self.fds,
            "{label}: tokenjar kept descriptors open: {fds} fds, {} before",
            self.fds
        );
        assert!(
            rss <= limit,
            "{label}: tokenjar's memory did not come back: VmRSS {rss} KiB, {} KiB before (limit {limit})",
            self.rss_kib
        );
        (rss, fds)
    }
}
