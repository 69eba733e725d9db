//! The Redis store against a real `redis-server` (tests/support): the memory
//! store's semantics (the tests of crates/domain/src/store.rs, on real time),
//! an expiry on every key, writes that happen whole or not at all, errors
//! that never quote a value, `rediss://`, and outages: a stalled server, a
//! killed and restarted one, and one that is down when the store is made.
//! Without `redis-server` each test says it skipped (and fails under
//! `CI=true`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::future::Future;
use std::time::{Duration, Instant};

use support::{all_keys, pttl, raw, RedisServer};
use tokenjar_adapters_redis::{ConnectError, RedisStore, DEFAULT_TIMEOUT};
use tokenjar_domain::{SessionStore, StoreError};

/// The tests' limit per call: short, so that the outage tests are quick.
const TIMEOUT: Duration = Duration::from_millis(300);

/// How long a call may take beyond [`TIMEOUT`] on a busy test machine.
const SLACK: Duration = Duration::from_millis(400);

/// A value that must never show in an error message.
const SECRET_VALUE: &[u8] = b"sealed-session-value-0123456789";

fn store_at(url: &str, prefix: &str) -> RedisStore {
    RedisStore::connect(url, prefix, None)
        .unwrap()
        .with_timeout(TIMEOUT)
}

fn store(server: &RedisServer) -> RedisStore {
    store_at(&server.url(), "tj:")
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|&name| name.to_owned()).collect()
}

/// Polls `check` until it holds, for at most `within`; how long that took.
async fn until<F, Fut>(within: Duration, what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return start.elapsed();
        }
        assert!(start.elapsed() < within, "{what}: not within {within:?}");
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The error's message, asserting it is the store's one kind of error.
fn message(result: Result<impl std::fmt::Debug, StoreError>) -> String {
    match result {
        Err(StoreError::Unavailable(message)) => message,
        Ok(value) => panic!("expected a StoreError, got {value:?}"),
    }
}

#[actix_rt::test]
async fn values_live_for_their_ttl_and_indexes_end_them_together() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let store = store(&server);
    let index = names(&["sid:s1", "sub:ada"]);
    store.put("session:a", b"A", 150, &index).await.unwrap();
    store.put("session:b", b"B", 60_000, &index[..1]).await.unwrap();
    store
        .put("session:c", b"C", 60_000, &names(&["sub:bob"]))
        .await
        .unwrap();
    assert_eq!(store.get("session:a").await.unwrap(), Some(b"A".to_vec()));
    assert_eq!(store.get("session:x").await.unwrap(), None);

    let lived = until(Duration::from_secs(3), "a expires", || async {
        store.get("session:a").await.unwrap().is_none()
    })
    .await;
    assert!(
        lived >= Duration::from_millis(100),
        "a lived {lived:?}, not its 150 ms"
    );
    // Only keys still alive count as deleted.
    assert_eq!(store.delete_indexed("sid:s1").await.unwrap(), 1);
    assert_eq!(store.get("session:b").await.unwrap(), None);
    assert_eq!(
        store.delete_indexed("sid:s1").await.unwrap(),
        0,
        "the index went too"
    );
    assert_eq!(store.get("session:c").await.unwrap(), Some(b"C".to_vec()));
    store.delete("session:c").await.unwrap();
    assert_eq!(store.get("session:c").await.unwrap(), None);
    store.delete("session:c").await.unwrap();
    assert_eq!(store.delete_indexed("sid:never").await.unwrap(), 0);
}

#[actix_rt::test]
async fn a_lease_is_taken_once_and_given_back_only_by_its_holder() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let store = store(&server);
    assert!(store.put_new("lock:r", b"me", 5_000).await.unwrap());
    assert!(!store.put_new("lock:r", b"you", 5_000).await.unwrap());
    assert!(!store.delete_if("lock:r", b"you").await.unwrap());
    assert_eq!(store.get("lock:r").await.unwrap(), Some(b"me".to_vec()));
    assert!(store.delete_if("lock:r", b"me").await.unwrap());
    assert!(
        !store.delete_if("lock:r", b"me").await.unwrap(),
        "given back once"
    );
    assert!(store.put_new("lock:r", b"you", 150).await.unwrap());
    // A holder that died: the lease ends by itself.
    assert!(!store.put_new("lock:r", b"third", 5_000).await.unwrap());
    until(Duration::from_secs(3), "the lease ends", || async {
        store.put_new("lock:r", b"third", 5_000).await.unwrap()
    })
    .await;
    assert_eq!(store.get("lock:r").await.unwrap(), Some(b"third".to_vec()));
    store.ping().await.unwrap();
}

#[actix_rt::test]
async fn every_key_has_an_expiry_and_the_prefix() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let store = store(&server);
    for i in 0..20u64 {
        let indexes = names(&["sid:s", &format!("sub:u{}", i % 3)]);
        store
            .put(
                &format!("session:{i}"),
                SECRET_VALUE,
                60_000 + i * 1_000,
                &indexes,
            )
            .await
            .unwrap();
    }
    assert!(store.put_new("lock:r", b"me", 5_000).await.unwrap());
    // A write of nothing for no time still expires (Redis refuses a zero
    // expiry; the store sends one millisecond).
    store
        .put("session:zero", b"", 0, &names(&["sid:zero"]))
        .await
        .unwrap();
    store.delete_indexed("sub:u0").await.unwrap();

    let mut redis = raw(&server.url()).await;
    let keys = all_keys(&mut redis).await;
    // 13 sessions (7 went with sub:u0), the lease, sid:s, sub:u1, sub:u2.
    assert!(keys.len() >= 17, "{keys:?}");
    for key in &keys {
        assert!(key.starts_with("tj:"), "{key} has no prefix");
        let left = pttl(&mut redis, key).await;
        if key.ends_with(":zero") {
            // The one-millisecond pair may expire between SCAN and PTTL
            // (-2), or have under a millisecond left (0); never -1.
            assert_ne!(left, -1, "{key} has no expiry");
        } else {
            assert!(left > 0, "{key} has no expiry ({left})");
        }
    }
    assert!(keys.contains(&"tj:sid:s".to_owned()), "{keys:?}");
    assert!(
        !keys.contains(&"tj:sub:u0".to_owned()),
        "deleted with its members"
    );
}

#[actix_rt::test]
async fn an_index_outlives_its_members() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let store = store(&server);
    let mut redis = raw(&server.url()).await;
    let sid = names(&["sid:s"]);
    store.put("session:a", b"A", 60_000, &sid).await.unwrap();
    assert!(pttl(&mut redis, "tj:sid:s").await > 59_000);
    // A shorter member does not shorten the set; a longer one lengthens it.
    store.put("session:b", b"B", 200, &sid).await.unwrap();
    assert!(pttl(&mut redis, "tj:sid:s").await > 59_000);
    store.put("session:c", b"C", 120_000, &sid).await.unwrap();
    assert!(pttl(&mut redis, "tj:sid:s").await > 119_000);
    // Put again with a shorter lifetime: the value's expiry follows, the
    // set's stays.
    store.put("session:c", b"C2", 30_000, &sid).await.unwrap();
    let c = pttl(&mut redis, "tj:session:c").await;
    assert!((29_000..=30_000).contains(&c), "{c}");
    assert!(pttl(&mut redis, "tj:sid:s").await > 119_000);

    // A set that lost its expiry (by hand) gets one at the next write.
    let _: i64 = redis::cmd("PERSIST")
        .arg("tj:sid:s")
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(pttl(&mut redis, "tj:sid:s").await, -1);
    store.put("session:d", b"D", 10_000, &sid).await.unwrap();
    let left = pttl(&mut redis, "tj:sid:s").await;
    assert!((9_000..=10_000).contains(&left), "{left}");

    until(Duration::from_secs(3), "b expires", || async {
        store.get("session:b").await.unwrap().is_none()
    })
    .await;
    let members: Vec<String> = redis::cmd("SMEMBERS")
        .arg("tj:sid:s")
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(
        members.len(),
        4,
        "the set still names b, with full key names: {members:?}"
    );
    assert!(
        members.iter().all(|m| m.starts_with("tj:session:")),
        "{members:?}"
    );
    assert_eq!(
        store.delete_indexed("sid:s").await.unwrap(),
        3,
        "a, c and d; b was gone"
    );
    assert!(all_keys(&mut redis).await.is_empty());
}

#[actix_rt::test]
async fn a_put_is_written_whole_or_not_at_all() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let store = store(&server);
    let mut redis = raw(&server.url()).await;
    // A key of another type where an index set should be.
    let _: () = redis::cmd("SET")
        .arg("tj:sub:taken")
        .arg("a string")
        .arg("PX")
        .arg(60_000)
        .query_async(&mut redis)
        .await
        .unwrap();
    store.ping().await.unwrap();
    let connections = connections_received(&mut redis).await;
    let failed = store
        .put(
            "session:z",
            SECRET_VALUE,
            60_000,
            &names(&["sid:ok", "sub:taken"]),
        )
        .await;
    let text = message(failed);
    assert!(text.contains("WRONGTYPE"), "{text}");
    assert_eq!(
        store.get("session:z").await.unwrap(),
        None,
        "no value without its index"
    );
    assert_eq!(
        all_keys(&mut redis).await,
        ["tj:sub:taken"],
        "no index entry either"
    );
    // The store is usable after the refusal.
    store
        .put("session:z", SECRET_VALUE, 60_000, &names(&["sid:ok"]))
        .await
        .unwrap();
    assert_eq!(store.get("session:z").await.unwrap(), Some(SECRET_VALUE.to_vec()));
    assert_eq!(
        connections_received(&mut redis).await,
        connections,
        "an answer to the command keeps the connection"
    );
}

#[actix_rt::test]
async fn each_call_is_one_command() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let store = store(&server);
    let mut redis = raw(&server.url()).await;
    calls(&mut redis).await;
    let index = names(&["sid:s", "sub:u"]);
    // Each script's first call after a Redis start: EVALSHA, NOSCRIPT,
    // SCRIPT LOAD, EVALSHA.
    store.put("warm:a", b"A", 60_000, &[]).await.unwrap();
    store.delete_if("warm:a", b"A").await.unwrap();
    store.delete_indexed("warm:none").await.unwrap();
    let first = calls(&mut redis).await;
    assert!(
        first.contains("evalsha=6") && first.contains("script|load=3"),
        "{first}"
    );

    // From then on, the store sends one command per call (EVALSHA, GET,
    // SET, DEL or PING), so one round trip. Redis counts the commands a
    // script runs as calls too: the rest below are the scripts' own.
    store.put("session:a", b"A", 60_000, &index).await.unwrap();
    assert_eq!(
        calls(&mut redis).await,
        "evalsha=1 pexpire=2 pttl=2 sadd=2 set=1 type=2",
        "put, new indexes"
    );
    // A longer lifetime, so that both sets' expiries grow.
    store.put("session:b", b"B", 120_000, &index).await.unwrap();
    assert_eq!(
        calls(&mut redis).await,
        "evalsha=1 pexpire=2 pttl=2 sadd=2 set=1 type=2",
        "put"
    );
    // A shorter one: the sets keep theirs.
    store.put("session:c", b"C", 1_000, &index).await.unwrap();
    assert_eq!(
        calls(&mut redis).await,
        "evalsha=1 pttl=2 sadd=2 set=1 type=2",
        "put, shorter"
    );
    store.get("session:b").await.unwrap();
    assert_eq!(calls(&mut redis).await, "get=1", "get");
    store.put_new("lock:b", b"me", 5_000).await.unwrap();
    assert_eq!(calls(&mut redis).await, "set=1", "put_new");
    store.delete_if("lock:b", b"me").await.unwrap();
    assert_eq!(calls(&mut redis).await, "del=1 evalsha=1 get=1", "delete_if");
    store.delete_indexed("sid:s").await.unwrap();
    assert_eq!(
        calls(&mut redis).await,
        "del=4 evalsha=1 smembers=1",
        "delete_indexed"
    );
    store.delete("session:a").await.unwrap();
    assert_eq!(calls(&mut redis).await, "del=1", "delete");
    store.ping().await.unwrap();
    assert_eq!(calls(&mut redis).await, "ping=1", "ping");
}

/// The commands run since the last look, as `name=calls` in name order
/// (this connection's own INFO and CONFIG left out), and resets the count.
async fn calls(redis: &mut redis::aio::MultiplexedConnection) -> String {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(redis)
        .await
        .unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(redis)
        .await
        .unwrap();
    let mut calls = Vec::new();
    for line in info.lines() {
        let Some((name, stats)) = line.strip_prefix("cmdstat_").and_then(|l| l.split_once(':')) else {
            continue;
        };
        if matches!(name, "info" | "config|resetstat") {
            continue;
        }
        let count = stats
            .split(',')
            .find_map(|field| field.strip_prefix("calls="))
            .unwrap();
        calls.push(format!("{name}={count}"));
    }
    calls.sort();
    calls.join(" ")
}

/// How many connections the server has accepted since it started.
async fn connections_received(redis: &mut redis::aio::MultiplexedConnection) -> u64 {
    let info: String = redis::cmd("INFO").arg("stats").query_async(redis).await.unwrap();
    info.lines()
        .find_map(|line| line.strip_prefix("total_connections_received:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[actix_rt::test]
async fn values_are_bytes_and_prefixes_keep_stores_apart() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let one = store_at(&server.url(), "one:");
    let two = store_at(&server.url(), "two:");
    let every_byte: Vec<u8> = (0..=255u8).collect();
    one.put("session:k", &every_byte, 60_000, &names(&["sub:x"]))
        .await
        .unwrap();
    two.put("session:k", b"two", 60_000, &names(&["sub:x"]))
        .await
        .unwrap();
    assert_eq!(one.get("session:k").await.unwrap(), Some(every_byte.clone()));
    assert_eq!(two.get("session:k").await.unwrap(), Some(b"two".to_vec()));
    assert_eq!(one.delete_indexed("sub:x").await.unwrap(), 1);
    assert_eq!(one.get("session:k").await.unwrap(), None);
    assert_eq!(two.get("session:k").await.unwrap(), Some(b"two".to_vec()));
    // Keys are bytes too: a space or a non-ASCII name is one key.
    one.put("session:a b é", b"v", 60_000, &[]).await.unwrap();
    assert_eq!(one.get("session:a b é").await.unwrap(), Some(b"v".to_vec()));
}

#[actix_rt::test]
async fn concurrent_calls_share_one_connection() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let store = store(&server);
    for i in 0..50 {
        store
            .put(&format!("session:{i}"), &[i], 60_000, &[])
            .await
            .unwrap();
    }
    let calls = (0..50u8).map(|i| {
        let store = &store;
        async move { store.get(&format!("session:{i}")).await }
    });
    let answers = futures_join_all(calls).await;
    for (i, answer) in answers.into_iter().enumerate() {
        assert_eq!(answer.unwrap(), Some(vec![u8::try_from(i).unwrap()]));
    }
    let mut redis = raw(&server.url()).await;
    let clients: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(
        clients.lines().count(),
        2,
        "the store's connection and this one: {clients}"
    );
}

/// Runs `futures` concurrently on this task (no `Send` needed, as on an
/// actix worker) and collects their outputs in order.
async fn futures_join_all<F: Future>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let mut pinned: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = pinned.iter().map(|_| None).collect();
    std::future::poll_fn(move |cx| {
        let mut pending = false;
        for (future, output) in pinned.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(value) => *output = Some(value),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(outputs.iter_mut().filter_map(Option::take).collect())
        }
    })
    .await
}

#[actix_rt::test]
async fn errors_never_quote_a_value() {
    // A server that refuses scripts: its error quotes the refused command's
    // arguments, the value among them.
    let Some(server) = RedisServer::start_with(&["--rename-command", "EVALSHA", ""]) else {
        return;
    };
    let store = store(&server);
    let put = message(store.put("session:a", SECRET_VALUE, 60_000, &[]).await);
    let delete_if = message(store.delete_if("lock:a", SECRET_VALUE).await);
    for text in [&put, &delete_if] {
        assert!(text.contains("Redis answered ERR"), "{text}");
        assert!(!text.contains("sealed-session-value"), "{text}");
    }
    // Commands that need no script still work.
    assert!(store.put_new("lock:a", SECRET_VALUE, 1_000).await.unwrap());
}

#[actix_rt::test]
async fn a_password_in_the_url_is_used_and_never_repeated() {
    let Some(server) = RedisServer::start_with(&["--requirepass", "pw-0123-secret"]) else {
        return;
    };
    let url = format!("redis://:pw-0123-secret@127.0.0.1:{}", server.port);
    let store = store_at(&url, "tj:");
    store.put("session:a", b"A", 60_000, &[]).await.unwrap();
    assert_eq!(store.get("session:a").await.unwrap(), Some(b"A".to_vec()));
    assert!(!format!("{store:?}").contains("pw-0123"), "{store:?}");

    let wrong = store_at(&format!("redis://:pw-wrong-9@127.0.0.1:{}", server.port), "tj:");
    let text = message(wrong.get("session:a").await);
    assert!(text.contains("credentials"), "{text}");
    assert!(!text.contains("pw-wrong"), "{text}");
    // Refused again, not stuck on the first refusal's connection.
    message(wrong.ping().await);

    let none = store_at(&server.url(), "tj:");
    let text = message(none.get("session:a").await);
    assert!(text.contains("NOAUTH"), "{text}");
}

#[actix_rt::test]
async fn a_stalled_server_fails_calls_within_the_timeout_then_recovers() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let store = store(&server);
    store
        .put("session:a", b"A", 60_000, &names(&["sid:s"]))
        .await
        .unwrap();

    server.pause();
    for round in 0..3 {
        let start = Instant::now();
        let text = message(store.get("session:a").await);
        let took = start.elapsed();
        assert!(took < TIMEOUT + SLACK, "round {round}: {took:?}");
        assert!(text.contains("in time") || text.contains("within"), "{text}");
        let start = Instant::now();
        message(store.put("session:b", b"B", 60_000, &names(&["sid:s"])).await);
        assert!(start.elapsed() < TIMEOUT + SLACK);
    }
    // A store made while the server is stalled fails the same way.
    let fresh = store_at(&server.url(), "tj:");
    let start = Instant::now();
    message(fresh.ping().await);
    assert!(start.elapsed() < TIMEOUT + SLACK);

    server.resume();
    let back = until(
        Duration::from_secs(3),
        "the stalled server answers again",
        || async { store.get("session:a").await.is_ok() },
    )
    .await;
    println!("answered again {back:?} after SIGCONT");
    assert_eq!(store.get("session:a").await.unwrap(), Some(b"A".to_vec()));
    assert_eq!(
        store.get("session:b").await.unwrap(),
        None,
        "nothing written while stalled"
    );
    fresh.ping().await.unwrap();
}

#[actix_rt::test]
async fn service_resumes_by_itself_after_a_restart() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let store = store(&server);
    store.put("session:a", b"A", 60_000, &[]).await.unwrap();

    server.stop();
    // A refused connection fails a call at once, well within the timeout.
    let mut slowest = Duration::ZERO;
    for _ in 0..5 {
        for call in 0..2 {
            let start = Instant::now();
            if call == 0 {
                message(store.get("session:a").await);
            } else {
                message(store.ping().await);
            }
            slowest = slowest.max(start.elapsed());
        }
    }
    println!("slowest call while Redis was down: {slowest:?}");
    assert!(slowest < TIMEOUT, "{slowest:?}");
    server.restart();
    let back = until(
        Duration::from_secs(2),
        "the store answers after the restart",
        || async { store.ping().await.is_ok() },
    )
    .await;
    println!("answered again {back:?} after the restart");
    // Persistence is off: the restarted server is empty, and usable.
    assert_eq!(store.get("session:a").await.unwrap(), None);
    store
        .put("session:a", b"A2", 60_000, &names(&["sid:s"]))
        .await
        .unwrap();
    assert_eq!(store.get("session:a").await.unwrap(), Some(b"A2".to_vec()));

    // A second outage heals the same way.
    server.restart();
    until(
        Duration::from_secs(2),
        "the store answers after a second restart",
        || async { store.ping().await.is_ok() },
    )
    .await;
}

#[actix_rt::test]
async fn a_store_made_while_redis_is_down_connects_when_it_comes_up() {
    if !support::available() {
        return;
    }
    let port = support::free_port();
    let store = store_at(&format!("redis://127.0.0.1:{port}"), "tj:");
    let start = Instant::now();
    let text = message(store.ping().await);
    assert!(start.elapsed() < TIMEOUT + SLACK);
    assert!(text.contains("Redis"), "{text}");
    message(store.get("session:a").await);

    let _server = RedisServer::start_on(port);
    let back = until(Duration::from_secs(2), "the store connects", || async {
        store.ping().await.is_ok()
    })
    .await;
    println!("connected {back:?} after the server started");
    store.put("session:a", b"A", 60_000, &[]).await.unwrap();
    assert_eq!(store.get("session:a").await.unwrap(), Some(b"A".to_vec()));
}

#[actix_rt::test]
async fn rediss_checks_the_certificate_against_the_ca_file() {
    if !support::available() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("tokenjar-redis-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = support::tls::TestCa::new();
    let issued = ca.server_cert();
    let (ca_file, cert_file, key_file) = (dir.join("ca.pem"), dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&ca_file, &ca.pem).unwrap();
    std::fs::write(&cert_file, &issued.cert_pem).unwrap();
    std::fs::write(&key_file, &issued.key_pem).unwrap();
    let args = [
        "--tls-cert-file",
        cert_file.to_str().unwrap(),
        "--tls-key-file",
        key_file.to_str().unwrap(),
        "--tls-ca-cert-file",
        ca_file.to_str().unwrap(),
        "--tls-auth-clients",
        "no",
    ];
    let server = RedisServer::start_tls(&args).unwrap();

    let store = RedisStore::connect(&server.url(), "tj:", Some(&ca_file))
        .unwrap()
        .with_timeout(Duration::from_secs(2));
    store
        .put("session:a", b"A", 60_000, &names(&["sid:s"]))
        .await
        .unwrap();
    assert_eq!(store.get("session:a").await.unwrap(), Some(b"A".to_vec()));

    // Mozilla's roots alone do not know the test CA.
    let untrusted = RedisStore::connect(&server.url(), "tj:", None)
        .unwrap()
        .with_timeout(Duration::from_secs(2));
    let text = message(untrusted.ping().await);
    assert!(text.to_lowercase().contains("certificate"), "{text}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn settings_that_cannot_work_are_refused_at_start() {
    let url = |url: &str| RedisStore::connect(url, "tj:", None).map(|_| ());
    assert!(matches!(url("http://127.0.0.1:6379"), Err(ConnectError::Url(_))));
    assert!(matches!(url("127.0.0.1:6379"), Err(ConnectError::Url(_))));
    assert!(matches!(
        url("rediss://127.0.0.1:6379/#insecure"),
        Err(ConnectError::Url(_))
    ));
    assert!(matches!(
        url("redis://127.0.0.1:6379/notadb"),
        Err(ConnectError::Url(_))
    ));
    let text = url("redis://:hunter2-pw@127.0.0.1:6379/x")
        .unwrap_err()
        .to_string();
    assert!(!text.contains("hunter2"), "{text}");
    // No connection is tried: these work with nothing listening.
    url("redis://127.0.0.1:1").unwrap();
    url("redis://user:pw@redis.invalid:6380/2").unwrap();

    let missing = std::path::Path::new("/nonexistent/ca.pem");
    assert!(matches!(
        RedisStore::connect("rediss://127.0.0.1:6379", "tj:", Some(missing)),
        Err(ConnectError::CaFile { .. })
    ));
    // The CA file is for TLS only.
    RedisStore::connect("redis://127.0.0.1:6379", "tj:", Some(missing)).unwrap();
    assert_eq!(
        RedisStore::connect("redis://127.0.0.1:1", "", None)
            .unwrap()
            .timeout(),
        DEFAULT_TIMEOUT
    );
}

#[test]
fn outside_a_runtime_a_call_fails_instead_of_panicking() {
    let store = store_at("redis://127.0.0.1:1", "tj:");
    let waker = std::task::Waker::noop();
    let mut context = std::task::Context::from_waker(waker);
    let mut call = std::pin::pin!(store.get("session:a"));
    match call.as_mut().poll(&mut context) {
        std::task::Poll::Ready(result) => assert!(message(result).contains("runtime")),
        std::task::Poll::Pending => panic!("expected an answer at once"),
    }
}
