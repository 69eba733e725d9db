//! The soak: steady load through the tokenjar binary for `SOAK_SECONDS`
//! (default 30 s), after which tokenjar's memory and open descriptors must
//! be where they were after warm-up and every answer must have been 2xx.
//!
//! A long run, kept out of `make check`; `make soak` runs it for 10 minutes
//! against a release build (bench/soak.sh). The test prints its samples
//! and numbers (`--nocapture` shows them).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokenjar_e2e::endurance::{
    auth_cookie, get, login_request, percentile, post, rss_allowance_kib, Pacer, IO_TIMEOUT,
};
use tokenjar_e2e::load::Conn;
use tokenjar_e2e::{spawn_app, RecordingApi};

/// Concurrent keep-alive clients of the soak.
const SOAK_CLIENTS: usize = 16;

/// What each soak client does, in turn: mostly proxied GETs with the auth
/// cookie, small POSTs, session checks and a fresh login.
#[derive(Clone, Copy, Debug)]
enum Step {
    Get,
    Post,
    Session,
    Login,
}

const SOAK_MIX: [Step; 10] = [
    Step::Get,
    Step::Get,
    Step::Post,
    Step::Get,
    Step::Session,
    Step::Get,
    Step::Post,
    Step::Get,
    Step::Session,
    Step::Login,
];

/// Body of the soak's POSTs.
const SOAK_POST_BYTES: usize = 512;

fn soak_seconds() -> u64 {
    match std::env::var("SOAK_SECONDS") {
        Ok(text) if !text.trim().is_empty() => match text.trim().parse::<u64>() {
            Ok(secs) if secs >= 10 => secs,
            _ => panic!("SOAK_SECONDS={text:?}: expected a whole number of seconds, at least 10"),
        },
        _ => 30,
    }
}

/// Requests per second of each soak client (`SOAK_RATE`, default 25: 400
/// requests/s in all, a steady load that a debug build on two shared cores
/// carries with room to spare).
fn soak_rate() -> u64 {
    match std::env::var("SOAK_RATE") {
        Ok(text) if !text.trim().is_empty() => match text.trim().parse::<u64>() {
            Ok(rate) if (1..=10_000).contains(&rate) => rate,
            _ => panic!("SOAK_RATE={text:?}: expected requests per second per client, 1 to 10000"),
        },
        _ => 25,
    }
}

#[derive(Default)]
struct SoakStats {
    ok: u64,
    by_step: [u64; 4],
    failed: u64,
    failures: Vec<String>,
    reconnects: u64,
    latencies: Vec<Duration>,
}

impl SoakStats {
    fn fail(&mut self, what: String) {
        self.failed += 1;
        if self.failures.len() < 5 {
            self.failures.push(what);
        }
    }
}

/// One soak client: logs in, then runs [`SOAK_MIX`] over one keep-alive
/// connection until `stop`, checking every answer.
fn soak_client(addr: SocketAddr, id: usize, stop: &AtomicBool, period: Duration) -> SoakStats {
    let mut stats = SoakStats::default();
    let mut conn = Conn::connect(addr, IO_TIMEOUT).expect("connect to tokenjar");
    let first = conn.request(&login_request()).expect("first login");
    let mut cookie = auth_cookie(&first).unwrap_or_else(|| panic!("first login failed: {}", first.text()));
    let upload = vec![b'x'; SOAK_POST_BYTES];
    let mut pacer = Pacer::new(period);
    let mut n: usize = id;
    while !stop.load(Ordering::Relaxed) {
        pacer.wait();
        let step = SOAK_MIX[n % SOAK_MIX.len()];
        n += 1;
        let request = match step {
            Step::Get => get(&format!("/api/items/{n}?client={id}"), Some(&cookie)),
            Step::Post => post("/api/upload", Some(&cookie), "application/octet-stream", &upload),
            Step::Session => get("/api/session", Some(&cookie)),
            Step::Login => login_request(),
        };
        let started = Instant::now();
        let reply = match conn.request(&request) {
            Ok(reply) => reply,
            Err(err) => {
                stats.fail(format!("{step:?}: no answer: {err}"));
                stats.reconnects += 1;
                conn = Conn::connect(addr, IO_TIMEOUT).expect("reconnect to tokenjar");
                continue;
            }
        };
        stats.latencies.push(started.elapsed());
        let good = (200..300).contains(&reply.status)
            && match step {
                Step::Get => true,
                Step::Post => reply.json()["received"] == SOAK_POST_BYTES,
                Step::Session => reply.json()["loggedIn"] == true,
                Step::Login => match auth_cookie(&reply) {
                    Some(fresh) => {
                        cookie = fresh;
                        true
                    }
                    None => false,
                },
            };
        if good {
            stats.ok += 1;
            stats.by_step[step as usize] += 1;
        } else {
            stats.fail(format!("{step:?}: {} {}", reply.status, reply.text()));
        }
        if conn.closed {
            // tokenjar may close a connection; a client reconnects. Counted,
            // not failed: the answer itself was good.
            stats.reconnects += 1;
            conn = Conn::connect(addr, IO_TIMEOUT).expect("reconnect to tokenjar");
        }
    }
    stats
}

/// One reading of tokenjar's process.
#[derive(Clone, Copy, Debug)]
struct Sample {
    at: Duration,
    rss_kib: u64,
    fds: usize,
    requests: u64,
}

/// Steady load for `SOAK_SECONDS` (default 30): 16 keep-alive clients, each
/// at `SOAK_RATE` requests/s (default 25), a mix of GETs with the sealed
/// cookie, 512-byte POSTs, session checks and logins, through tokenjar to a
/// counting API (which keeps no per-request state).
///
/// The first sixth of the run (5 s to 30 s) is warm-up. Rules, with tokenjar
/// measured under load after warm-up and at the end:
/// - every answer is 2xx (and checked: POST echo, `loggedIn`, a cookie);
/// - `VmRSS` at the end ≤ `VmRSS` after warm-up × 1.05 + 1 MiB;
/// - open fds at the end ≤ open fds after warm-up + 4 (upstream connections
///   opened or closed by the pool as requests come and go).
#[test]
fn a_30_second_soak_keeps_memory_and_descriptors_flat() {
    let total = Duration::from_secs(soak_seconds());
    let warm_up = (total / 6).clamp(Duration::from_secs(5), Duration::from_secs(30));
    let rate = soak_rate();
    let period = Duration::from_micros(1_000_000 / rate);
    let api = RecordingApi::start_counting();
    let app = spawn_app(&api.url("/v1"), &[("TOKENJAR_SERVER__WORKERS", "2")]);
    eprintln!(
        "soak: {} s ({} s warm-up), {SOAK_CLIENTS} clients × {rate} req/s, tokenjar pid {} ({})",
        total.as_secs(),
        warm_up.as_secs(),
        app.pid,
        tokenjar_e2e::tokenjar_bin().display()
    );
    let stop = AtomicBool::new(false);
    let sample = |started: Instant| Sample {
        at: started.elapsed(),
        rss_kib: app.rss_kib(),
        fds: app.fd_count(),
        requests: api.received(),
    };
    let every = (total / 20).max(Duration::from_secs(5));

    let (stats, warm, end, samples) = std::thread::scope(|scope| {
        let clients: Vec<_> = (0..SOAK_CLIENTS)
            .map(|id| {
                let stop = &stop;
                let addr = app.address;
                scope.spawn(move || soak_client(addr, id, stop, period))
            })
            .collect();
        let started = Instant::now();
        let mut samples = Vec::new();
        let mut warm = None;
        let mut last_print = Duration::ZERO;
        // The monitor reads the process once a second while the load runs.
        while started.elapsed() < total {
            std::thread::sleep(Duration::from_secs(1).min(total.saturating_sub(started.elapsed())));
            let s = sample(started);
            if warm.is_none() && s.at >= warm_up {
                warm = Some(s);
                eprintln!(
                    "soak: after warm-up  t={:>4}s VmRSS {} KiB, fds {}, API requests {}",
                    s.at.as_secs(),
                    s.rss_kib,
                    s.fds,
                    s.requests
                );
            } else if s.at >= last_print + every {
                last_print = s.at;
                eprintln!(
                    "soak:                t={:>4}s VmRSS {} KiB, fds {}, API requests {}",
                    s.at.as_secs(),
                    s.rss_kib,
                    s.fds,
                    s.requests
                );
            }
            samples.push(s);
        }
        let end = sample(started);
        stop.store(true, Ordering::Relaxed);
        let mut all = SoakStats::default();
        for client in clients {
            let s = client.join().expect("soak client panicked");
            all.ok += s.ok;
            all.failed += s.failed;
            all.reconnects += s.reconnects;
            for (sum, n) in all.by_step.iter_mut().zip(s.by_step) {
                *sum += n;
            }
            all.latencies.extend(s.latencies);
            for f in s.failures {
                if all.failures.len() < 10 {
                    all.failures.push(f);
                }
            }
        }
        (all, warm.expect("a sample after warm-up"), end, samples)
    });

    let mut latencies = stats.latencies;
    latencies.sort();
    let measured = end.at.saturating_sub(warm.at).as_secs_f64().max(1.0);
    let max_rss = samples.iter().map(|s| s.rss_kib).max().unwrap_or(0);
    let max_fds = samples.iter().map(|s| s.fds).max().unwrap_or(0);
    eprintln!(
        "soak: at the end      t={:>4}s VmRSS {} KiB, fds {}, API requests {}",
        end.at.as_secs(),
        end.rss_kib,
        end.fds,
        end.requests
    );
    eprintln!(
        "soak: {} good answers ({} GET, {} POST, {} session, {} login), {} failed, {} reconnects; \
         {:.0} answers/s, {:.0} of them proxied to the API after warm-up; \
         latency p50 {:?} p99 {:?} max {:?}; max VmRSS {max_rss} KiB, max fds {max_fds}, VmHWM {} KiB",
        stats.ok,
        stats.by_step[Step::Get as usize],
        stats.by_step[Step::Post as usize],
        stats.by_step[Step::Session as usize],
        stats.by_step[Step::Login as usize],
        stats.failed,
        stats.reconnects,
        stats.ok as f64 / end.at.as_secs_f64().max(1.0),
        (end.requests - warm.requests) as f64 / measured,
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or_default(),
        app.peak_rss_kib(),
    );
    let rss_limit = rss_allowance_kib(warm.rss_kib);
    let fds_limit = warm.fds + 4;
    let verdict = stats.failed == 0 && end.rss_kib <= rss_limit && end.fds <= fds_limit;
    eprintln!(
        "soak: {}: VmRSS {} → {} KiB (limit {rss_limit}), fds {} → {} (limit {fds_limit}), {} non-2xx or failed",
        if verdict { "PASS" } else { "FAIL" },
        warm.rss_kib,
        end.rss_kib,
        warm.fds,
        end.fds,
        stats.failed
    );
    assert_eq!(
        stats.failed, 0,
        "every soak answer must be 2xx; first failures: {:#?}",
        stats.failures
    );
    assert!(
        stats.ok >= SOAK_CLIENTS as u64 * total.as_secs(),
        "the load did not run: only {} answers in {total:?}",
        stats.ok
    );
    assert!(
        end.rss_kib <= rss_limit,
        "tokenjar's memory grew during the soak: VmRSS {} KiB after warm-up, {} KiB at the end \
         (limit {rss_limit} KiB); samples: {samples:?}",
        warm.rss_kib,
        end.rss_kib
    );
    assert!(
        end.fds <= fds_limit,
        "tokenjar's open descriptors grew during the soak: {} after warm-up, {} at the end \
         (limit {fds_limit}); samples: {samples:?}",
        warm.fds,
        end.fds
    );
}
