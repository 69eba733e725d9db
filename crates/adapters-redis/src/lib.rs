//! tokenjar's session store in Redis or Valkey (`session.store = "redis"`,
//! SPEC §17): the domain's [`SessionStore`] port over one Redis endpoint,
//! shared by every tokenjar instance that names it.
//!
//! # Client
//!
//! [redis-rs](https://docs.rs/redis) 1.x with default features off and:
//! `tokio-comp` (tokio, which actix-rt's per-worker current-thread runtimes
//! are), `connection-manager` (its `ConnectionManager` wraps one multiplexed
//! connection and reconnects by itself, with back-off), `script` (EVALSHA,
//! with SCRIPT LOAD when Redis does not know the script yet), and
//! `tls-rustls` + `tokio-rustls-comp` + `tls-rustls-webpki-roots` for
//! `rediss://` through the workspace's rustls 0.23 (ring) and webpki-roots,
//! so neither a second rustls nor a second crypto library enters the tree
//! (`tls-rustls` does pull `rustls-native-certs`, compiled but not called
//! with the webpki roots on). With a CA file, Mozilla's roots and the
//! file's go to redis-rs as one PEM (src/tls.rs).
//!
//! `fred` reconnects by itself too, but brings a larger tree of its own
//! (its `redis-protocol`, a proc macro, async-trait, the full `futures`,
//! semver, bytes-utils, float-cmp, tokio-stream); `deadpool-redis` is
//! redis-rs plus a pool that a multiplexed connection does not need.
//!
//! # Connection
//!
//! [`RedisStore::connect`] only reads its settings: the connection is made
//! on first use, on the tokio runtime that uses it, and remade whenever it
//! breaks, so tokenjar starts while Redis is down and answers 503 until it
//! is back. Each store holds one connection that every request multiplexes
//! on; one store per actix worker keeps each worker's connection on its own
//! runtime (a store shared by workers works too: its connection's task then
//! runs on the worker that used it first).
//!
//! Every call runs under [`DEFAULT_TIMEOUT`] (or
//! [`RedisStore::with_timeout`]), so a stalled Redis fails requests instead
//! of holding them. redis-rs reconnects by itself after socket errors; a
//! timeout, a refused handshake or an answer out of step makes this store
//! drop the connection and make a new one at the next call, since a
//! half-open connection or a failed handshake would otherwise never heal
//! (answers to the command itself, such as WRONGTYPE or OOM, keep it).
//! Errors become [`StoreError::Unavailable`] with the error's kind and, for
//! socket errors, the system's words; never a server's detail text, which
//! may quote a command's arguments and so a stored value.
//!
//! # Keys
//!
//! Every key, index sets included, is the domain's key with the store's
//! prefix before it. Index sets hold their members' full (prefixed) Redis
//! key names, so that the deleting script needs no string handling and a
//! `SCAN` shows what the sets point at. Every key written has an expiry: a
//! value the `ttl_ms` it was put with, an index set at least its longest
//! member's.
//!
//! # Round trips
//!
//! `get`, `put`, `put_new`, `delete`, `delete_if`, `delete_indexed` and
//! `ping`: one each. The scripts go as EVALSHA; after a Redis restart emptied
//! its script cache, the first call of each script costs two more (the
//! NOSCRIPT answer, SCRIPT LOAD), once per Redis, not per connection.
//!
//! # Servers
//!
//! One Redis or Valkey endpoint (a primary, or a proxy in front of one),
//! Redis 6 or later (the tests run 7.0): the scripts raise an index's expiry by comparing
//! `PTTL`s rather than with Redis 7's `PEXPIRE … GT`, so older managed
//! Redis works too. Not Redis Cluster: the delete script touches keys it is
//! not given (an index set's members), and this client does not speak the
//! Cluster protocol.

use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, Cmd, ErrorKind, RedisError, Script, Value};
use tokenjar_domain::{SessionStore, StoreError};

mod scripts;
mod tls;

/// How long one call may take, connecting included, before it fails with
/// [`StoreError::Unavailable`]: a session read on the request path is a
/// sub-millisecond round trip on a healthy network, so a second means Redis
/// (or the way to it) is in trouble, and the browser gets its 503 while it
/// still waits.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(1_000);

/// Reconnection attempts after the first within one round (a round is
/// started by a call that finds the connection broken, and every call
/// meanwhile waits for it). One retry after a short pause: calls fail
/// within about 100 ms while Redis refuses connections, rather than waiting
/// out a long back-off, and a worker tries to connect at most about twenty
/// times a second however many requests come; the next call starts the
/// next round.
const RECONNECT_RETRIES: usize = 1;
/// The pause before the retry (redis-rs adds up to as much again at
/// random, so that instances do not reconnect in step).
const RECONNECT_MIN_DELAY: Duration = Duration::from_millis(50);
/// The longest pause, whatever the back-off computes: bounds how long
/// after Redis is back the store may still fail.
const RECONNECT_MAX_DELAY: Duration = Duration::from_millis(100);

/// The longest expiry sent to Redis: Redis refuses an expiry whose absolute
/// time overflows, and no session lives a century.
const MAX_TTL_MS: u64 = 100 * 365 * 24 * 3_600 * 1_000;

/// Why a store could not be set up from its settings. Nothing here is a
/// connection problem: those surface, per call, as [`StoreError`].
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The URL is not one this store takes. The URL itself is not repeated:
    /// it may hold a password.
    #[error("the Redis URL: {0}")]
    Url(String),
    /// The CA file could not be read.
    #[error("the CA file {path}: {source}")]
    CaFile {
        /// The file.
        path: PathBuf,
        /// Why it could not be read.
        source: std::io::Error,
    },
    /// The CA file holds no usable certificate.
    #[error("the CA file {path}: {reason}")]
    CaFileContent {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// [`SessionStore`] in Redis or Valkey. See the crate documentation for the
/// connection, the keys and the round trips.
pub struct RedisStore {
    client: Client,
    prefix: String,
    timeout: Duration,
    /// The connection, made on first use and replaced when it cannot be
    /// trusted; numbered so that of many calls failing together only the
    /// first replaces it.
    connection: Mutex<Option<(u64, ConnectionManager)>>,
    put_script: Script,
    delete_if_script: Script,
    delete_indexed_script: Script,
}

impl fmt::Debug for RedisStore {
    // Not derived: the client's connection details hold the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// A store at `url` (`redis://` or `rediss://`, with
    /// `user:password@` or `:password@` when Redis wants one, and `/db` to
    /// pick a database), putting `prefix` before every key. For `rediss://`,
    /// the server's certificate is checked against Mozilla's roots plus the
    /// certificates in `ca_file` (SPEC §12); `ca_file` is not read for
    /// `redis://`. Does not connect (see the crate documentation).
    ///
    /// # Errors
    /// [`ConnectError`] for a URL that does not parse or is not `redis://` or
    /// `rediss://`, a URL that asks to skip certificate checks
    /// (`#insecure`), or an unreadable CA file or one without a certificate.
    pub fn connect(url: &str, prefix: &str, ca_file: Option<&Path>) -> Result<Self, ConnectError> {
        let tls = match url.split_once("://").map(|(scheme, _)| scheme) {
            Some("redis") => false,
            Some("rediss") => true,
            _ => {
                return Err(ConnectError::Url(
                    "must start with redis:// or rediss://".to_owned(),
                ))
            }
        };
        // redis-rs honours `#insecure` only with a feature left out here;
        // said at start rather than as an error on every connection (SPEC
        // §12: no switch turns certificate checks off).
        if url.contains('#') {
            return Err(ConnectError::Url(
                "takes no #fragment (certificate checks cannot be turned off)".to_owned(),
            ));
        }
        if tls {
            // redis-rs builds its TLS configuration with rustls's process-wide
            // provider; without one installed it would pick by crate
            // features, and panic if a build ever enabled two. ring, as the
            // rest of tokenjar uses; an already installed one stays.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let client = match (tls, ca_file) {
            (true, Some(path)) => {
                let roots = tls::roots_with(path)?;
                Client::build_with_tls(
                    url,
                    redis::TlsCertificates {
                        client_tls: None,
                        root_cert: Some(roots),
                    },
                )
            }
            _ => Client::open(url),
        }
        .map_err(|e| ConnectError::Url(url_error(&e)))?;
        Ok(Self {
            client,
            prefix: prefix.to_owned(),
            timeout: DEFAULT_TIMEOUT,
            connection: Mutex::new(None),
            put_script: Script::new(scripts::PUT),
            delete_if_script: Script::new(scripts::DELETE_IF),
            delete_indexed_script: Script::new(scripts::DELETE_INDEXED),
        })
    }

    /// The same store with every call limited to `timeout` instead of
    /// [`DEFAULT_TIMEOUT`].
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Another handle on the same Redis with the same settings and a
    /// connection of its own, made on its first use: one per actix worker,
    /// so that each worker's connection runs on its own runtime.
    #[must_use]
    pub fn handle(&self) -> Self {
        Self {
            client: self.client.clone(),
            prefix: self.prefix.clone(),
            timeout: self.timeout,
            connection: Mutex::new(None),
            put_script: Script::new(scripts::PUT),
            delete_if_script: Script::new(scripts::DELETE_IF),
            delete_indexed_script: Script::new(scripts::DELETE_INDEXED),
        }
    }

    /// How long one call may take.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The Redis key for the domain's `key`.
    fn key(&self, key: &str) -> Vec<u8> {
        let mut full = Vec::with_capacity(self.prefix.len() + key.len());
        full.extend_from_slice(self.prefix.as_bytes());
        full.extend_from_slice(key.as_bytes());
        full
    }

    fn lock(&self) -> MutexGuard<'_, Option<(u64, ConnectionManager)>> {
        // Nothing is written under the lock but whole values, so a panic
        // elsewhere while holding it leaves it usable.
        self.connection.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The current connection, made now (without waiting for it) when there
    /// is none.
    fn manager(&self) -> Result<(u64, ConnectionManager), StoreError> {
        let mut slot = self.lock();
        if let Some((generation, manager)) = slot.as_ref() {
            return Ok((*generation, manager.clone()));
        }
        // redis-rs spawns the connection's tasks with `tokio::spawn`, which
        // panics outside a runtime: refused here instead.
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(StoreError::Unavailable(
                "the Redis store was used outside a tokio runtime".to_owned(),
            ));
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            .set_number_of_retries(RECONNECT_RETRIES)
            .set_min_delay(RECONNECT_MIN_DELAY)
            .set_max_delay(RECONNECT_MAX_DELAY);
        let manager = ConnectionManager::new_lazy_with_config(self.client.clone(), config)
            .map_err(|e| StoreError::Unavailable(describe(&e)))?;
        let generation = GENERATIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        *slot = Some((generation, manager.clone()));
        Ok((generation, manager))
    }

    /// Drops connection `generation` if it is still the current one, so
    /// that the next call makes a new one.
    fn replace(&self, generation: u64) {
        let mut slot = self.lock();
        if slot.as_ref().is_some_and(|(current, _)| *current == generation) {
            *slot = None;
        }
    }

    /// Runs `call` on the connection under the timeout; a failure that the
    /// connection cannot be trusted after replaces it.
    async fn run<F, Fut>(&self, call: F) -> Result<Value, StoreError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = Result<Value, RedisError>>,
    {
        let (generation, manager) = self.manager()?;
        match tokio::time::timeout(self.timeout, call(manager)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => {
                if !connection_survives(&e) {
                    self.replace(generation);
                }
                Err(StoreError::Unavailable(describe(&e)))
            }
            Err(_elapsed) => {
                self.replace(generation);
                Err(StoreError::Unavailable(format!(
                    "Redis did not answer within {} ms",
                    self.timeout.as_millis()
                )))
            }
        }
    }

    async fn command(&self, cmd: Cmd) -> Result<Value, StoreError> {
        self.run(|mut manager| async move { cmd.query_async::<Value>(&mut manager).await })
            .await
    }
}

/// Numbers connections across every store of the process, so that a
/// number is never reused.
static GENERATIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Whether the connection is still good after `e`. A socket error: redis-rs
/// is already reconnecting. An answer to the command itself (a key of the
/// wrong type, Redis out of memory, busy with a script or loading its data):
/// the connection works, and a new one would get the same answer. Anything
/// else may leave a connection that never recovers by itself: a timeout (a
/// half-open connection times out until the kernel gives up on it, many
/// minutes later), a refused handshake (redis-rs keeps the failed attempt
/// and reconnects only after socket errors), an answer out of step.
fn connection_survives(e: &RedisError) -> bool {
    if e.is_timeout() {
        return false;
    }
    e.is_io_error()
        || matches!(
            e.code(),
            Some("WRONGTYPE" | "OOM" | "BUSY" | "LOADING" | "NOSCRIPT")
        )
}

/// What went wrong, for [`StoreError::Unavailable`] and the log: the error's
/// kind and, for socket errors, the operating system's words. Never a
/// server's detail text: some answers (an unknown command's) quote the
/// command's arguments, which may be a stored value.
fn describe(e: &RedisError) -> String {
    if e.is_timeout() {
        return "Redis did not answer in time".to_owned();
    }
    if e.is_io_error() {
        return format!("Redis connection: {e}");
    }
    match e.kind() {
        ErrorKind::Server(_) | ErrorKind::Extension => {
            format!("Redis answered {}", e.code().unwrap_or("an error"))
        }
        ErrorKind::AuthenticationFailed => "Redis refused the credentials in its URL".to_owned(),
        kind => format!("Redis client error: {kind:?}"),
    }
}

/// A URL problem without the URL (it may hold a password).
fn url_error(e: &RedisError) -> String {
    match e.detail() {
        Some(detail) => format!("{} ({detail})", e.category()),
        None => e.category().to_owned(),
    }
}

/// A reply that is not what the command answers: said without its content.
fn unexpected(command: &str) -> StoreError {
    StoreError::Unavailable(format!("Redis answered {command} with an unexpected reply"))
}

/// Milliseconds as Redis takes them: at least one (zero is refused) and
/// at most [`MAX_TTL_MS`].
fn ttl(ttl_ms: u64) -> u64 {
    ttl_ms.clamp(1, MAX_TTL_MS)
}

impl SessionStore for RedisStore {
    fn get(&self, key: &str) -> impl Future<Output = Result<Option<Vec<u8>>, StoreError>> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(self.key(key));
        async move {
            match self.command(cmd).await? {
                Value::Nil => Ok(None),
                Value::BulkString(value) => Ok(Some(value)),
                _ => Err(unexpected("GET")),
            }
        }
    }

    fn put(
        &self,
        key: &str,
        value: &[u8],
        ttl_ms: u64,
        indexes: &[String],
    ) -> impl Future<Output = Result<(), StoreError>> {
        // One script: the value and its index entries are written together
        // or not at all, in one round trip.
        let mut invocation = self.put_script.key(self.key(key));
        for index in indexes {
            invocation.key(self.key(index));
        }
        invocation.arg(value).arg(ttl(ttl_ms));
        async move {
            match self
                .run(|mut manager| async move { invocation.invoke_async::<Value>(&mut manager).await })
                .await?
            {
                Value::Int(1) => Ok(()),
                _ => Err(unexpected("the put script")),
            }
        }
    }

    fn put_new(
        &self,
        key: &str,
        value: &[u8],
        ttl_ms: u64,
    ) -> impl Future<Output = Result<bool, StoreError>> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.key(key))
            .arg(value)
            .arg("NX")
            .arg("PX")
            .arg(ttl(ttl_ms));
        async move {
            match self.command(cmd).await? {
                Value::Okay => Ok(true),
                Value::Nil => Ok(false),
                _ => Err(unexpected("SET NX")),
            }
        }
    }

    fn delete_if(&self, key: &str, value: &[u8]) -> impl Future<Output = Result<bool, StoreError>> {
        let mut invocation = self.delete_if_script.key(self.key(key));
        invocation.arg(value);
        async move {
            match self
                .run(|mut manager| async move { invocation.invoke_async::<Value>(&mut manager).await })
                .await?
            {
                Value::Int(deleted) => Ok(deleted == 1),
                _ => Err(unexpected("the delete-if script")),
            }
        }
    }

    fn delete(&self, key: &str) -> impl Future<Output = Result<(), StoreError>> {
        let mut cmd = redis::cmd("DEL");
        cmd.arg(self.key(key));
        async move {
            match self.command(cmd).await? {
                Value::Int(_) => Ok(()),
                _ => Err(unexpected("DEL")),
            }
        }
    }

    fn delete_indexed(&self, index: &str) -> impl Future<Output = Result<u64, StoreError>> {
        let invocation = self.delete_indexed_script.key(self.key(index));
        async move {
            match self
                .run(|mut manager| async move { invocation.invoke_async::<Value>(&mut manager).await })
                .await?
            {
                Value::Int(deleted) => {
                    u64::try_from(deleted).map_err(|_| unexpected("the delete-indexed script"))
                }
                _ => Err(unexpected("the delete-indexed script")),
            }
        }
    }

    async fn ping(&self) -> Result<(), StoreError> {
        match self.command(redis::cmd("PING")).await? {
            Value::SimpleString(pong) if pong == "PONG" => Ok(()),
            _ => Err(unexpected("PING")),
        }
    }

    async fn pause(&self, ms: u64) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_can_be_shared_between_workers() {
        fn shareable<T: Send + Sync>() {}
        shareable::<RedisStore>();
    }

    #[test]
    fn lifetimes_are_ones_redis_takes() {
        assert_eq!(ttl(0), 1);
        assert_eq!(ttl(30_000), 30_000);
        assert_eq!(ttl(u64::MAX), MAX_TTL_MS);
    }
}
