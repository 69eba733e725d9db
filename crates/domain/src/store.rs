//! The session store of one process (`session.store = "memory"`, SPEC §17):
//! the [`SessionStore`] port over a map behind a lock, shared by every
//! worker, expiring by the [`Clock`] port. Pure: no I/O, so the flow tests
//! drive it with a manual clock.

use std::collections::{HashMap, HashSet};
use std::future::{ready, Future};
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::ports::{Clock, SessionStore, StoreError};

/// How long a stored session lives when neither its tokens nor
/// `cookie.max_age_s` tell: a day, as every key in a store needs an expiry.
pub const DEFAULT_STORED_LIFETIME_S: i64 = 86_400;

/// Bytes of randomness in a session id: 256 bits, where SPEC §17 asks for
/// at least 128.
pub const SESSION_ID_BYTES: usize = 32;

/// How sessions are kept in a store (`session.store = "memory" | "redis"`,
/// SPEC §17): the cookie holds only a sealed random id, the store the
/// sealed session under `session:<id>`, indexed by the provider's `sid`
/// and `sub` for back-channel logout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreRules {
    /// The lifetime of a session whose tokens tell none.
    pub default_lifetime_s: i64,
    /// How long the instance that refreshes a session holds the store's
    /// lease on its refresh token; an instance that dies holding it
    /// delays the others by at most this.
    pub refresh_lease_ms: u64,
    /// How often an instance waiting for another's refresh looks at the
    /// stored session.
    pub refresh_poll_ms: u64,
}

impl Default for StoreRules {
    fn default() -> Self {
        Self {
            default_lifetime_s: DEFAULT_STORED_LIFETIME_S,
            refresh_lease_ms: 5_000,
            refresh_poll_ms: 25,
        }
    }
}

/// The store key of the session with `id`.
pub fn session_key(id: &str) -> String {
    format!("session:{id}")
}

/// The index sets a session's profile puts it in: the provider's session
/// id (`sid:<sid>`) and user (`sub:<sub>`), so that a back-channel logout
/// finds every session to end.
pub fn session_indexes(profile: Option<&str>) -> Vec<String> {
    let Some(profile) = profile.and_then(|p| serde_json::from_str::<serde_json::Value>(p).ok()) else {
        return Vec::new();
    };
    ["sid", "sub"]
        .into_iter()
        .filter_map(|claim| {
            let value = profile.get(claim)?.as_str()?;
            (!value.is_empty()).then(|| format!("{claim}:{value}"))
        })
        .collect()
}

/// The store of a gateway whose sessions live in the cookie: never asked,
/// since the rules send nothing its way.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoStore;

impl NoStore {
    fn refuse<T>() -> std::future::Ready<Result<T, StoreError>> {
        ready(Err(StoreError::Unavailable(
            "no session store is configured".to_owned(),
        )))
    }
}

impl SessionStore for NoStore {
    fn get(&self, _: &str) -> impl Future<Output = Result<Option<Vec<u8>>, StoreError>> {
        Self::refuse()
    }

    fn put(&self, _: &str, _: &[u8], _: u64, _: &[String]) -> impl Future<Output = Result<(), StoreError>> {
        Self::refuse()
    }

    fn put_new(&self, _: &str, _: &[u8], _: u64) -> impl Future<Output = Result<bool, StoreError>> {
        Self::refuse()
    }

    fn delete_if(&self, _: &str, _: &[u8]) -> impl Future<Output = Result<bool, StoreError>> {
        Self::refuse()
    }

    fn delete(&self, _: &str) -> impl Future<Output = Result<(), StoreError>> {
        Self::refuse()
    }

    fn delete_indexed(&self, _: &str) -> impl Future<Output = Result<u64, StoreError>> {
        Self::refuse()
    }

    fn ping(&self) -> impl Future<Output = Result<(), StoreError>> {
        Self::refuse()
    }

    fn pause(&self, _: u64) -> impl Future<Output = ()> {
        ready(())
    }
}

impl<S: SessionStore + ?Sized> SessionStore for std::sync::Arc<S> {
    fn get(&self, key: &str) -> impl Future<Output = Result<Option<Vec<u8>>, StoreError>> {
        (**self).get(key)
    }

    fn put(
        &self,
        key: &str,
        value: &[u8],
        ttl_ms: u64,
        indexes: &[String],
    ) -> impl Future<Output = Result<(), StoreError>> {
        (**self).put(key, value, ttl_ms, indexes)
    }

    fn put_new(
        &self,
        key: &str,
        value: &[u8],
        ttl_ms: u64,
    ) -> impl Future<Output = Result<bool, StoreError>> {
        (**self).put_new(key, value, ttl_ms)
    }

    fn delete_if(&self, key: &str, value: &[u8]) -> impl Future<Output = Result<bool, StoreError>> {
        (**self).delete_if(key, value)
    }

    fn delete(&self, key: &str) -> impl Future<Output = Result<(), StoreError>> {
        (**self).delete(key)
    }

    fn delete_indexed(&self, index: &str) -> impl Future<Output = Result<u64, StoreError>> {
        (**self).delete_indexed(index)
    }

    fn ping(&self) -> impl Future<Output = Result<(), StoreError>> {
        (**self).ping()
    }

    fn pause(&self, ms: u64) -> impl Future<Output = ()> {
        (**self).pause(ms)
    }
}

/// Most keys (values and index sets together) one process keeps. Every
/// session is a login someone made, but a flood of logins must not take
/// the process's memory: past this, writes fail (503) until keys expire.
pub const MAX_MEMORY_KEYS: usize = 1_000_000;

/// Writes between two sweeps of expired keys: a sweep walks the whole map,
/// so it runs rarely, yet often enough that expired sessions do not pile up.
const SWEEP_EVERY: u32 = 4096;

/// [`SessionStore`] in this process's memory: lost on restart, not shared
/// with other instances.
#[derive(Debug)]
pub struct MemoryStore<C> {
    clock: C,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Key → value and its expiry (Unix milliseconds).
    values: HashMap<String, (Vec<u8>, i64)>,
    /// Index → the keys in it and its expiry (Unix milliseconds).
    sets: HashMap<String, (HashSet<String>, i64)>,
    writes: u32,
}

impl Inner {
    fn len(&self) -> usize {
        self.values.len() + self.sets.len()
    }

    /// Drops what expired at `now_ms`, every [`SWEEP_EVERY`] writes or when
    /// the store is full.
    fn sweep(&mut self, now_ms: i64) {
        self.writes = self.writes.wrapping_add(1);
        if self.writes.is_multiple_of(SWEEP_EVERY) || self.len() >= MAX_MEMORY_KEYS {
            self.values.retain(|_, (_, exp)| *exp > now_ms);
            self.sets.retain(|_, (_, exp)| *exp > now_ms);
        }
    }

    fn live_value(&self, key: &str, now_ms: i64) -> Option<&Vec<u8>> {
        self.values
            .get(key)
            .filter(|(_, exp)| *exp > now_ms)
            .map(|(value, _)| value)
    }

    fn full(&self, adding: usize) -> Result<(), StoreError> {
        if self.len() + adding > MAX_MEMORY_KEYS {
            return Err(StoreError::Unavailable(format!(
                "the memory store holds {MAX_MEMORY_KEYS} keys"
            )));
        }
        Ok(())
    }
}

impl<C: Clock> MemoryStore<C> {
    /// An empty store telling time by `clock`.
    pub fn new(clock: C) -> Self {
        Self {
            clock,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// How many keys it holds, expired ones not yet swept included.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether it holds no key at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the map half
        // written (each write is one insert), so a poisoned lock is usable.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn now_ms(&self) -> i64 {
        self.clock.now().saturating_mul(1000)
    }

    fn expiry(&self, ttl_ms: u64) -> i64 {
        self.now_ms()
            .saturating_add(i64::try_from(ttl_ms).unwrap_or(i64::MAX))
    }

    fn put_now(&self, key: &str, value: &[u8], ttl_ms: u64, indexes: &[String]) -> Result<(), StoreError> {
        let (now_ms, exp) = (self.now_ms(), self.expiry(ttl_ms));
        let mut inner = self.lock();
        inner.sweep(now_ms);
        inner.full(1 + indexes.len())?;
        inner.values.insert(key.to_owned(), (value.to_vec(), exp));
        for index in indexes {
            let (members, set_exp) = inner
                .sets
                .entry(index.clone())
                .or_insert_with(|| (HashSet::new(), exp));
            members.insert(key.to_owned());
            *set_exp = (*set_exp).max(exp);
        }
        Ok(())
    }

    fn put_new_now(&self, key: &str, value: &[u8], ttl_ms: u64) -> Result<bool, StoreError> {
        let (now_ms, exp) = (self.now_ms(), self.expiry(ttl_ms));
        let mut inner = self.lock();
        if inner.live_value(key, now_ms).is_some() {
            return Ok(false);
        }
        inner.sweep(now_ms);
        inner.full(1)?;
        inner.values.insert(key.to_owned(), (value.to_vec(), exp));
        Ok(true)
    }

    fn delete_if_now(&self, key: &str, value: &[u8]) -> bool {
        let now_ms = self.now_ms();
        let mut inner = self.lock();
        if inner.live_value(key, now_ms).is_some_and(|v| v == value) {
            inner.values.remove(key);
            return true;
        }
        false
    }

    fn delete_indexed_now(&self, index: &str) -> u64 {
        let now_ms = self.now_ms();
        let mut inner = self.lock();
        let Some((members, _)) = inner.sets.remove(index) else {
            return 0;
        };
        let mut deleted = 0;
        for key in members {
            if inner.values.remove(&key).is_some_and(|(_, exp)| exp > now_ms) {
                deleted += 1;
            }
        }
        deleted
    }
}

impl<C: Clock> SessionStore for MemoryStore<C> {
    fn get(&self, key: &str) -> impl Future<Output = Result<Option<Vec<u8>>, StoreError>> {
        let now_ms = self.now_ms();
        ready(Ok(self.lock().live_value(key, now_ms).cloned()))
    }

    fn put(
        &self,
        key: &str,
        value: &[u8],
        ttl_ms: u64,
        indexes: &[String],
    ) -> impl Future<Output = Result<(), StoreError>> {
        ready(self.put_now(key, value, ttl_ms, indexes))
    }

    fn put_new(
        &self,
        key: &str,
        value: &[u8],
        ttl_ms: u64,
    ) -> impl Future<Output = Result<bool, StoreError>> {
        ready(self.put_new_now(key, value, ttl_ms))
    }

    fn delete_if(&self, key: &str, value: &[u8]) -> impl Future<Output = Result<bool, StoreError>> {
        ready(Ok(self.delete_if_now(key, value)))
    }

    fn delete(&self, key: &str) -> impl Future<Output = Result<(), StoreError>> {
        self.lock().values.remove(key);
        ready(Ok(()))
    }

    fn delete_indexed(&self, index: &str) -> impl Future<Output = Result<u64, StoreError>> {
        ready(Ok(self.delete_indexed_now(index)))
    }

    fn ping(&self) -> impl Future<Output = Result<(), StoreError>> {
        ready(Ok(()))
    }

    /// One process: its refreshes are shared in the process, so no other
    /// instance ever holds a lease to wait for.
    fn pause(&self, _: u64) -> impl Future<Output = ()> {
        ready(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicI64, Ordering};
    use std::sync::Arc;

    use super::*;

    /// A clock the test moves.
    #[derive(Clone, Default)]
    struct Hand(Arc<AtomicI64>);

    impl Clock for Hand {
        fn now(&self) -> i64 {
            self.0.load(Ordering::SeqCst)
        }
    }

    /// The store's futures are ready at once: one poll gives the value.
    fn run<T>(future: impl Future<Output = T>) -> T {
        let waker = std::task::Waker::noop();
        let mut context = std::task::Context::from_waker(waker);
        let mut future = std::pin::pin!(future);
        match future.as_mut().poll(&mut context) {
            std::task::Poll::Ready(value) => value,
            std::task::Poll::Pending => panic!("a memory store future was not ready"),
        }
    }

    #[test]
    fn values_live_for_their_ttl_and_indexes_end_them_together() {
        let hand = Hand::default();
        hand.0.store(1_000, Ordering::SeqCst);
        let store = MemoryStore::new(hand.clone());
        let index = vec!["sid:s1".to_owned(), "sub:ada".to_owned()];
        run(store.put("session:a", b"A", 10_000, &index)).unwrap();
        run(store.put("session:b", b"B", 60_000, &index[..1])).unwrap();
        run(store.put("session:c", b"C", 60_000, &["sub:bob".to_owned()])).unwrap();
        assert_eq!(run(store.get("session:a")).unwrap(), Some(b"A".to_vec()));
        assert_eq!(run(store.get("session:x")).unwrap(), None);

        hand.0.store(1_010, Ordering::SeqCst);
        assert_eq!(run(store.get("session:a")).unwrap(), None, "a lived 10 s");
        // Only keys still alive count as deleted.
        assert_eq!(run(store.delete_indexed("sid:s1")).unwrap(), 1);
        assert_eq!(run(store.get("session:b")).unwrap(), None);
        assert_eq!(
            run(store.delete_indexed("sid:s1")).unwrap(),
            0,
            "the index went too"
        );
        assert_eq!(run(store.get("session:c")).unwrap(), Some(b"C".to_vec()));
        run(store.delete("session:c")).unwrap();
        assert_eq!(run(store.get("session:c")).unwrap(), None);
    }

    #[test]
    fn a_lease_is_taken_once_and_given_back_only_by_its_holder() {
        let hand = Hand::default();
        let store = MemoryStore::new(hand.clone());
        assert!(run(store.put_new("lock:r", b"me", 5_000)).unwrap());
        assert!(!run(store.put_new("lock:r", b"you", 5_000)).unwrap());
        assert!(!run(store.delete_if("lock:r", b"you")).unwrap());
        assert!(run(store.delete_if("lock:r", b"me")).unwrap());
        assert!(run(store.put_new("lock:r", b"you", 5_000)).unwrap());
        // A holder that died: the lease ends by itself.
        hand.0.store(5, Ordering::SeqCst);
        assert!(run(store.put_new("lock:r", b"third", 5_000)).unwrap());
        assert!(run(store.ping()).is_ok());
    }

    #[test]
    fn a_full_store_refuses_writes_and_sweeps_what_expired() {
        let hand = Hand::default();
        let store = MemoryStore::new(hand.clone());
        {
            let mut inner = store.lock();
            for i in 0..MAX_MEMORY_KEYS {
                inner.values.insert(format!("k{i}"), (Vec::new(), 2_000));
            }
        }
        assert!(matches!(
            run(store.put("one-more", b"x", 1_000, &[])),
            Err(StoreError::Unavailable(_))
        ));
        assert!(!run(store.put_new("one-more", b"x", 1_000)).unwrap_or(false));
        // Once they expired, the next write sweeps them away.
        hand.0.store(2, Ordering::SeqCst);
        run(store.put("one-more", b"x", 1_000, &[])).unwrap();
        assert_eq!(store.len(), 1);
    }
}
