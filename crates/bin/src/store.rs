//! The session store `session.store` chose (SPEC §17), as one type the
//! server is built with: nothing for the cookie, the memory store shared by
//! every worker, or Redis. One type keeps one copy of the server in the
//! binary, whichever store is in use.

use std::path::Path;
use std::sync::Arc;

use tokenjar_adapters_actix::SystemClock;
use tokenjar_adapters_redis::{ConnectError, RedisStore};
use tokenjar_domain::{MemoryStore, SessionStore, StoreError};

use crate::settings::StoreChoice;

/// A worker's handle on the store.
pub enum Store {
    /// Sessions live in the cookie: never asked.
    Cookie,
    /// This process's memory, one store for every worker.
    Memory(Arc<MemoryStore<SystemClock>>),
    /// Redis, shared by every instance; each worker's handle keeps its own
    /// connection, made on first use. Boxed: it is far larger than the
    /// other variants.
    Redis(Box<RedisStore>),
}

impl Store {
    /// The store for `choice`; Redis with `tls.ca_file` (`ca_file`) trusted
    /// beside the built-in roots for `rediss://`. Nothing is connected yet:
    /// Redis may be down at start.
    ///
    /// # Errors
    /// [`ConnectError`] for a Redis URL or CA file that cannot be used.
    pub fn open(choice: &StoreChoice, ca_file: Option<&Path>) -> Result<Self, ConnectError> {
        Ok(match choice {
            StoreChoice::Cookie => Self::Cookie,
            StoreChoice::Memory => Self::Memory(Arc::new(MemoryStore::new(SystemClock))),
            StoreChoice::Redis { url, prefix } => {
                Self::Redis(Box::new(RedisStore::connect(url, prefix, ca_file)?))
            }
        })
    }

    /// A handle for another worker: the same memory store, or the same
    /// Redis with a connection of the worker's own.
    pub fn handle(&self) -> Self {
        match self {
            Self::Cookie => Self::Cookie,
            Self::Memory(store) => Self::Memory(Arc::clone(store)),
            Self::Redis(store) => Self::Redis(Box::new(store.handle())),
        }
    }
}

/// The error of a store that is not there; the rules never ask it.
fn none() -> StoreError {
    StoreError::Unavailable("no session store is configured".to_owned())
}

impl SessionStore for Store {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match self {
            Self::Cookie => Err(none()),
            Self::Memory(store) => store.get(key).await,
            Self::Redis(store) => store.get(key).await,
        }
    }

    async fn put(&self, key: &str, value: &[u8], ttl_ms: u64, indexes: &[String]) -> Result<(), StoreError> {
        match self {
            Self::Cookie => Err(none()),
            Self::Memory(store) => store.put(key, value, ttl_ms, indexes).await,
            Self::Redis(store) => store.put(key, value, ttl_ms, indexes).await,
        }
    }

    async fn put_new(&self, key: &str, value: &[u8], ttl_ms: u64) -> Result<bool, StoreError> {
        match self {
            Self::Cookie => Err(none()),
            Self::Memory(store) => store.put_new(key, value, ttl_ms).await,
            Self::Redis(store) => store.put_new(key, value, ttl_ms).await,
        }
    }

    async fn delete_if(&self, key: &str, value: &[u8]) -> Result<bool, StoreError> {
        match self {
            Self::Cookie => Err(none()),
            Self::Memory(store) => store.delete_if(key, value).await,
            Self::Redis(store) => store.delete_if(key, value).await,
        }
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        match self {
            Self::Cookie => Err(none()),
            Self::Memory(store) => store.delete(key).await,
            Self::Redis(store) => store.delete(key).await,
        }
    }

    async fn delete_indexed(&self, index: &str) -> Result<u64, StoreError> {
        match self {
            Self::Cookie => Err(none()),
            Self::Memory(store) => store.delete_indexed(index).await,
            Self::Redis(store) => store.delete_indexed(index).await,
        }
    }

    async fn ping(&self) -> Result<(), StoreError> {
        match self {
            Self::Cookie => Err(none()),
            Self::Memory(store) => store.ping().await,
            Self::Redis(store) => store.ping().await,
        }
    }

    async fn pause(&self, ms: u64) {
        match self {
            Self::Cookie => {}
            Self::Memory(store) => store.pause(ms).await,
            Self::Redis(store) => store.pause(ms).await,
        }
    }
}
