//! The API stopped and started again, three times, under steady load
//! through the tokenjar binary: only requests in flight fail (502
//! `upstream_unavailable`), service is back within a second, and no
//! connection is left behind.
//!
//! Runs for several seconds, so it is kept out of `make check`. The test
//! prints its measurements (`--nocapture` shows them).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokenjar_e2e::endurance::{get, Pacer, IO_TIMEOUT};
use tokenjar_e2e::load::Conn;
use tokenjar_e2e::{spawn_app, RecordingApi, Reply};

/// Whether `reply` is tokenjar's 502 `upstream_unavailable`.
fn is_unavailable(reply: &Reply) -> bool {
    reply.status == 502
        && serde_json::from_slice::<serde_json::Value>(&reply.body)
            .is_ok_and(|body| body["error"] == "upstream_unavailable")
}

/// How one request of a load client ended.
#[derive(Clone, Debug)]
enum Outcome {
    Ok,
    /// 502 `upstream_unavailable`.
    Unavailable,
    /// Anything else (another status, no answer, a timeout).
    Other(String),
}

#[derive(Clone, Debug)]
struct Timed {
    start: Instant,
    end: Instant,
    outcome: Outcome,
}

/// Load clients that GET through tokenjar until `stop`, each on a keep-alive
/// connection (re-opened if tokenjar closes it), recording every outcome.
struct Load<'a> {
    stop: &'a AtomicBool,
    ok: &'a AtomicU64,
    unavailable: &'a AtomicU64,
}

impl Load<'_> {
    fn client(&self, addr: SocketAddr, id: usize, period: Duration) -> Vec<Timed> {
        let mut seen = Vec::new();
        let mut conn = None;
        let mut pacer = Pacer::new(period);
        let mut n = 0u64;
        while !self.stop.load(Ordering::Relaxed) {
            pacer.wait();
            n += 1;
            let start = Instant::now();
            let result = match conn.as_mut() {
                Some(c) => Ok(c),
                None => Conn::connect(addr, IO_TIMEOUT).map(|c| conn.insert(c)),
            }
            .and_then(|c| c.request(&get(&format!("/api/load/{id}/{n}"), None)));
            let outcome = match &result {
                Ok(reply) if reply.status == 200 => Outcome::Ok,
                Ok(reply) if is_unavailable(reply) => Outcome::Unavailable,
                Ok(reply) => Outcome::Other(format!("{} {}", reply.status, reply.text())),
                Err(err) => Outcome::Other(format!("no answer: {err}")),
            };
            match outcome {
                Outcome::Ok => self.ok.fetch_add(1, Ordering::Relaxed),
                Outcome::Unavailable => self.unavailable.fetch_add(1, Ordering::Relaxed),
                Outcome::Other(_) => 0,
            };
            if result.is_err() || conn.as_ref().is_some_and(|c| c.closed) {
                conn = None;
            }
            seen.push(Timed {
                start,
                end: Instant::now(),
                outcome,
            });
        }
        seen
    }
}

/// Waits (at most `within`) until `counter` reaches `target`; checked every
/// 10 ms while the load runs.
fn wait_count(counter: &AtomicU64, target: u64, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while counter.load(Ordering::Relaxed) < target {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

const RESTART_CLIENTS: usize = 4;
/// Times the API goes down and comes back.
const RESTARTS: usize = 3;
/// Consecutive 200s that count as "full service again".
const RECOVERED_AFTER: usize = 20;

/// One stop and start of the API.
#[derive(Clone, Copy, Debug)]
struct Cycle {
    /// `stop` called.
    down: Instant,
    /// `stop` returned: the listener is closed.
    stopped: Instant,
    /// `restart` returned: it accepts again.
    up: Instant,
}

/// Steady GET load (4 keep-alive clients, 100 requests/s each); three times
/// the API is stopped (listener and connections closed) until at least 200
/// requests got 502, then started again on the same port. Rules:
/// - every answer is a 200 or a 502 `upstream_unavailable`, none takes 5 s
///   (no hang);
/// - every request started after the API is back (and finished before it
///   goes down again) gets a 200;
/// - the first of 20 consecutive 200s comes within 1 s of each restart;
/// - tokenjar's fd count under the same load is no higher after the
///   restarts than before (+2), and drops by the clients' connections once
///   they close.
#[test]
fn an_api_restart_costs_only_in_flight_requests() {
    let mut api = RecordingApi::start_counting();
    let app = spawn_app(&api.url("/v1"), &[("TOKENJAR_SERVER__WORKERS", "1")]);
    let (stop, ok, unavailable) = (AtomicBool::new(false), AtomicU64::new(0), AtomicU64::new(0));
    let load = Load {
        stop: &stop,
        ok: &ok,
        unavailable: &unavailable,
    };
    let mut marks = None;
    let outcomes: Vec<Timed> = std::thread::scope(|scope| {
        let clients: Vec<_> = (0..RESTART_CLIENTS)
            .map(|id| {
                let load = &load;
                let addr = app.address;
                scope.spawn(move || load.client(addr, id, Duration::from_millis(10)))
            })
            .collect();
        let result = (|| {
            if !wait_count(&ok, 300, Duration::from_secs(20)) {
                return Err("the load never got going (300 answers)".to_owned());
            }
            let fds_before = app.fd_count();
            let mut cycles = Vec::new();
            for _ in 0..RESTARTS {
                let down = Instant::now();
                api.stop();
                let stopped = Instant::now();
                let failed = unavailable.load(Ordering::Relaxed);
                if !wait_count(&unavailable, failed + 200, Duration::from_secs(10)) {
                    return Err("no 502 while the API was down".to_owned());
                }
                api.restart();
                let up = Instant::now();
                // Full service, and long enough at it for the pool to settle.
                let served = ok.load(Ordering::Relaxed);
                if !wait_count(&ok, served + 400, Duration::from_secs(20)) {
                    return Err("service did not come back (400 answers after a restart)".to_owned());
                }
                cycles.push(Cycle { down, stopped, up });
            }
            Ok((cycles, fds_before, app.fd_count()))
        })();
        stop.store(true, Ordering::Relaxed);
        let mut all: Vec<Timed> = clients
            .into_iter()
            .flat_map(|c| c.join().expect("load client panicked"))
            .collect();
        all.sort_by_key(|t| t.end);
        marks = Some(result);
        all
    });
    let (cycles, fds_before, fds_after) = marks
        .expect("the scenario ran")
        .unwrap_or_else(|why| panic!("{why}"));
    // The load clients have closed their connections: tokenjar drops them.
    let fds_idle = app.wait_fds_at_most(fds_after - RESTART_CLIENTS, Duration::from_secs(5));

    let unavailable_502 = outcomes
        .iter()
        .filter(|t| matches!(t.outcome, Outcome::Unavailable))
        .count();
    let others: Vec<String> = outcomes
        .iter()
        .filter_map(|t| match &t.outcome {
            Outcome::Other(what) => Some(format!("{what} (after {:?})", t.end - t.start)),
            _ => None,
        })
        .collect();
    let slowest = outcomes.iter().map(|t| t.end - t.start).max().unwrap_or_default();
    eprintln!(
        "restart: {} requests, {unavailable_502} got 502 upstream_unavailable, {} other failures, \
         slowest {slowest:?}; tokenjar fds under load {fds_before} before, {fds_after} after, \
         {fds_idle} once the clients closed",
        outcomes.len(),
        others.len(),
    );
    let mut bad_after_up = Vec::new();
    let mut recoveries = Vec::new();
    for (i, cycle) in cycles.iter().enumerate() {
        let next_down = cycles.get(i + 1).map(|c| c.down);
        let before_next = |t: &&Timed| next_down.is_none_or(|d| t.end < d);
        let failures_while_down = outcomes
            .iter()
            .filter(|t| t.end >= cycle.down && t.start < cycle.up)
            .filter(|t| !matches!(t.outcome, Outcome::Ok))
            .count();
        bad_after_up.extend(
            outcomes
                .iter()
                .filter(|t| t.start >= cycle.up)
                .filter(before_next)
                .filter(|t| !matches!(t.outcome, Outcome::Ok))
                .map(|t| format!("{:?} at +{:?}", t.outcome, t.start - cycle.up)),
        );
        // The first answer after the restart that starts a run of
        // RECOVERED_AFTER consecutive 200s (in order of completion).
        let after: Vec<&Timed> = outcomes
            .iter()
            .filter(|t| t.end >= cycle.up)
            .filter(before_next)
            .collect();
        let recovered = after
            .windows(RECOVERED_AFTER)
            .find(|w| w.iter().all(|t| matches!(t.outcome, Outcome::Ok)))
            .map(|w| w[0].end - cycle.up);
        eprintln!(
            "restart {}: stop took {:?}, down {:?}, {failures_while_down} failed meanwhile; first of \
             {RECOVERED_AFTER} consecutive 200s {recovered:?} after the API was back",
            i + 1,
            cycle.stopped - cycle.down,
            cycle.up - cycle.stopped,
        );
        recoveries.push(recovered);
    }
    assert!(
        others.is_empty(),
        "only 200 or 502 upstream_unavailable may be answered (no other error, no hang): {:?}",
        &others[..others.len().min(5)]
    );
    assert!(slowest < IO_TIMEOUT, "a request took {slowest:?}: tokenjar hung");
    assert!(
        bad_after_up.is_empty(),
        "{} requests started after the API was back failed, e.g. {:?}",
        bad_after_up.len(),
        &bad_after_up[..bad_after_up.len().min(5)]
    );
    for (i, recovered) in recoveries.into_iter().enumerate() {
        let recovered = recovered.unwrap_or_else(|| panic!("restart {}: never 20 consecutive 200s", i + 1));
        assert!(
            recovered < Duration::from_secs(1),
            "restart {}: full service took {recovered:?} after the API was back (limit 1 s)",
            i + 1
        );
    }
    assert!(
        fds_after <= fds_before + 2,
        "connections got stuck: tokenjar had {fds_before} fds under load before the restarts, \
         {fds_after} after"
    );
    assert!(
        fds_idle <= fds_after - RESTART_CLIENTS,
        "tokenjar kept client connections open after the clients closed: {fds_idle} fds, \
         {fds_after} under load"
    );
}
