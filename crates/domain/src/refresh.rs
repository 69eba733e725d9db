//! Token refresh (SPEC §14), free of I/O: when a session's access token is
//! due, the API request that renews it and how its answer reads
//! ([`RefreshRules`]), and the one place where concurrent requests of one
//! session share one refresh and late ones reuse its result
//! ([`Refreshes`]). The gateway does the sending and the waiting.
//!
//! Why the sharing matters: an API that rotates refresh tokens treats a
//! spent one sent again as theft and ends the whole session. A browser
//! fires requests in parallel, and each carries the same cookie, so without
//! sharing every one of them would spend the same refresh token; and a
//! request that left the browser before the new cookie arrived still
//! carries the old one after the refresh is over. [`Refreshes`] keeps each
//! refresh's result, keyed by a hash of the refresh token it spent, for
//! `refresh.reuse_window_s`.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use futures_channel::oneshot;
use serde_json::json;
use sha2::{Digest as _, Sha256};

use crate::cookies::Session;
use crate::error::FlowError;
use crate::exchange::{BodySize, UpstreamBase, UpstreamRequest};
use crate::headers::Headers;
use crate::method::Method;
use crate::setting::SettingError;
use crate::token::{Grant, Token};

/// Most results kept for reuse at once. Each is a few kilobytes of tokens
/// for at most `refresh.reuse_window_s`; past the cap the oldest go first
/// (a request that would have reused one refreshes again instead).
pub const MAX_REMEMBERED: usize = 10_000;

/// Most token bytes the kept results may hold together (64 MiB): the cap
/// that holds when tokens are large.
pub const MAX_REMEMBERED_BYTES: usize = 64 * 1024 * 1024;

/// How to refresh a session's access token, and the process's table of
/// refreshes (shared by every clone, so one per process when the rules are
/// built once).
#[derive(Clone)]
pub struct RefreshRules {
    path: String,
    request_field: String,
    revoke_path: Option<String>,
    leeway_s: i64,
    flights: Arc<Refreshes>,
}

impl fmt::Debug for RefreshRules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RefreshRules")
            .field("path", &self.path)
            .field("request_field", &self.request_field)
            .field("revoke_path", &self.revoke_path)
            .field("leeway_s", &self.leeway_s)
            .finish_non_exhaustive()
    }
}

/// How a refresh ended, as every request that needed it sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Renewal {
    /// New tokens (the refresh token is the old one when the API gave no
    /// new one).
    Renewed(Arc<Grant>),
    /// The API refused the refresh token: the session is over.
    Refused,
    /// The API could not be reached, failed, or answered unusably: the
    /// session is kept and the next request tries again.
    Failed(FlowError),
}

/// How a request's refresh went, for metrics (`tokenjar_refreshes_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefreshResult {
    /// This request refreshed the session.
    Ok,
    /// This request was handed another request's new tokens (it waited
    /// for that refresh, or came within the reuse window).
    Reused,
    /// The session ended: the API refused the refresh token.
    Refused,
    /// The refresh failed; the session is kept.
    Failed,
}

impl RefreshResult {
    /// The metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Reused => "reused",
            Self::Refused => "refused",
            Self::Failed => "failed",
        }
    }
}

/// What the API's answer to a refresh request means, by its status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// 2xx: read the new tokens from the body.
    Read,
    /// Any other 4xx: the refresh token is no good.
    Refused,
    /// 5xx, 408, 429 or anything else: a passing failure.
    Failed,
}

impl RefreshRules {
    /// Refresh by `POST <upstream>/<path>` with `{"<request_field>": …}`,
    /// `leeway_s` before the access token expires; results reused for
    /// `reuse_window_s`; `revoke_path` (`""`: none) told the refresh token
    /// at logout.
    ///
    /// # Errors
    /// Every problem, each naming its key.
    pub fn new(
        path: &str,
        request_field: &str,
        leeway_s: u64,
        reuse_window_s: u64,
        revoke_path: &str,
    ) -> Result<Self, Vec<SettingError>> {
        let mut problems = Vec::new();
        let mut check_path = |key: &'static str, value: &str| {
            if !value.starts_with('/')
                || value
                    .bytes()
                    .any(|b| b <= b' ' || b == b'?' || b == b'#' || b >= 0x7f)
            {
                problems.push(SettingError::new(
                    key,
                    format!("{value:?} must be a path starting with / (no query, no spaces)"),
                ));
            }
        };
        check_path("path", path);
        if !revoke_path.is_empty() {
            check_path("revoke_path", revoke_path);
        }
        if request_field.is_empty() {
            problems.push(SettingError::new("request_field", "must not be empty"));
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let clamp = |s: u64| i64::try_from(s).unwrap_or(i64::MAX / 2).min(i64::MAX / 2);
        Ok(Self {
            path: path.to_owned(),
            request_field: request_field.to_owned(),
            revoke_path: (!revoke_path.is_empty()).then(|| revoke_path.to_owned()),
            leeway_s: clamp(leeway_s),
            flights: Arc::new(Refreshes::new(clamp(reuse_window_s), clamp(leeway_s))),
        })
    }

    /// Refresh at an OpenID provider's token endpoint (SPEC §16): the
    /// requests are the provider's `refresh_token` grant, built by the
    /// OIDC rules; the leeway and the sharing are these.
    pub fn for_provider(leeway_s: u64, reuse_window_s: u64) -> Self {
        let clamp = |s: u64| i64::try_from(s).unwrap_or(i64::MAX / 2).min(i64::MAX / 2);
        Self {
            path: String::new(),
            request_field: String::new(),
            revoke_path: None,
            leeway_s: clamp(leeway_s),
            flights: Arc::new(Refreshes::new(clamp(reuse_window_s), clamp(leeway_s))),
        }
    }

    /// Whether `session` can be refreshed: it holds a refresh token.
    pub fn can_refresh(session: &Session) -> bool {
        session.refresh.is_some()
    }

    /// Whether `session` must be refreshed before its request goes on: it
    /// holds a refresh token and its access token expires within the
    /// leeway. An access token of unknown expiry is never refreshed ahead;
    /// the API's 401 says when it is over.
    pub fn is_due(&self, session: &Session, now: i64) -> bool {
        session.refresh.is_some()
            && session
                .access_expires_at
                .is_some_and(|exp| exp.saturating_sub(now) <= self.leeway_s)
    }

    /// The table of refreshes in flight and results kept for reuse.
    pub fn flights(&self) -> &Refreshes {
        &self.flights
    }

    /// The request that spends `refresh` for new tokens.
    pub fn request(
        &self,
        base: &UpstreamBase,
        refresh: &Token,
        request_id: Option<&str>,
    ) -> UpstreamRequest<Vec<u8>> {
        self.post(base, &self.path, refresh, request_id)
    }

    /// The request that tells the API a logged-out session's refresh
    /// token, when `refresh.revoke_path` is set.
    pub fn revocation(
        &self,
        base: &UpstreamBase,
        refresh: &Token,
        request_id: Option<&str>,
    ) -> Option<UpstreamRequest<Vec<u8>>> {
        let path = self.revoke_path.as_deref()?;
        Some(self.post(base, path, refresh, request_id))
    }

    /// A JSON `POST` carrying `refresh` in the configured field, and no
    /// cookie or access token: the refresh token is the credential.
    fn post(
        &self,
        base: &UpstreamBase,
        path: &str,
        refresh: &Token,
        request_id: Option<&str>,
    ) -> UpstreamRequest<Vec<u8>> {
        let body = json!({ self.request_field.as_str(): refresh.expose() })
            .to_string()
            .into_bytes();
        let mut headers = Headers::new();
        headers.append("content-type", "application/json");
        headers.append("accept", "application/json");
        if let Some(id) = request_id {
            headers.append("x-request-id", id);
        }
        UpstreamRequest {
            method: Method::Post,
            url: base.url(path, None),
            headers,
            body_size: BodySize::Sized(body.len() as u64),
            body,
        }
    }

    /// What a refresh answer's `status` means. A 408 or 429 is the API
    /// being busy, not a verdict on the token.
    pub fn verdict(status: u16) -> Verdict {
        match status {
            200..=299 => Verdict::Read,
            408 | 429 => Verdict::Failed,
            400..=499 => Verdict::Refused,
            _ => Verdict::Failed,
        }
    }
}

/// The key of a refresh: a hash of the refresh token it spends, so the
/// table never holds a refresh token itself.
type Key = [u8; 32];

fn key_of(refresh: &Token) -> Key {
    let mut hash = Sha256::new();
    hash.update(b"tokenjar refresh\0");
    hash.update(refresh.expose().as_bytes());
    hash.finalize().into()
}

/// Refreshes in flight, and finished ones kept for reuse, keyed by the
/// refresh token they spent. Shared by every worker of a process: the
/// request that finds no entry leads (and refreshes), the ones that come
/// while it runs wait for its result, and the ones that come within
/// `reuse_window_s` after it are handed the result at once.
///
/// A kept result is handed out only while its access token is outside the
/// leeway, so an API that keeps its refresh tokens (no rotation) never has
/// a stale access token handed back: the next refresh replaces it. A failed
/// refresh is not kept (the next request tries again); a refused one is,
/// so a late request of an ended session does not ask the API again.
pub struct Refreshes {
    window_s: i64,
    leeway_s: i64,
    table: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    slots: HashMap<Key, Slot>,
    /// Kept results in the order they finished (so in expiry order, all
    /// living the same window), with the id that tells a replaced one.
    kept: VecDeque<(Key, u64)>,
    /// How many slots are [`Slot::Kept`], and their token bytes.
    kept_count: usize,
    kept_bytes: usize,
    next_id: u64,
}

enum Slot {
    Running {
        id: u64,
        waiters: Vec<oneshot::Sender<Renewal>>,
    },
    Kept {
        id: u64,
        renewal: Renewal,
        until: i64,
        bytes: usize,
    },
}

/// What a request is to do about its refresh.
#[derive(Debug)]
pub enum Turn<'a> {
    /// Refresh, then [`Lease::finish`] with the result.
    Lead(Lease<'a>),
    /// Another request is refreshing: wait for its result.
    Wait(Waiting),
    /// A result is at hand.
    Reuse(Renewal),
    /// This refresh token was spent, and its successor's tokens are due
    /// again: refresh those, with the successor's refresh token (spending
    /// the spent one again would read as theft to an API that rotates).
    Successor(Arc<Grant>),
}

/// The right and duty to refresh one session. Dropped unfinished (the
/// request was cancelled), it frees the entry, and the waiting requests
/// try again: one of them leads.
pub struct Lease<'a> {
    refreshes: &'a Refreshes,
    key: Key,
    id: u64,
    finished: bool,
}

impl fmt::Debug for Lease<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// A request waiting for another's refresh. Resolves to its result, or to
/// `None` when the leader went away without one (then ask for a
/// [`Turn`] again).
#[derive(Debug)]
pub struct Waiting(oneshot::Receiver<Renewal>);

impl Future for Waiting {
    type Output = Option<Renewal>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx).map(Result::ok)
    }
}

impl fmt::Debug for Refreshes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Refreshes")
            .field("window_s", &self.window_s)
            .field("kept", &self.kept())
            .finish_non_exhaustive()
    }
}

impl Refreshes {
    /// A table keeping results for `window_s` seconds, handing them out
    /// while their access token is more than `leeway_s` from expiry.
    pub fn new(window_s: i64, leeway_s: i64) -> Self {
        Self {
            window_s,
            leeway_s,
            table: Mutex::new(Table::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        // No code under the lock can panic halfway through an update that
        // matters; a poisoned table is still a consistent one.
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What a request holding `refresh` is to do at `now`. `refused` is the
    /// access token the API just answered 401 to, when that is why the
    /// request refreshes: a kept result holding that same token is no
    /// help.
    pub fn turn(&self, refresh: &Token, now: i64, refused: Option<&Token>) -> Turn<'_> {
        let key = key_of(refresh);
        let mut table = self.lock();
        table.sweep(now);
        match table.slots.get_mut(&key) {
            Some(Slot::Running { waiters, .. }) => {
                let (sender, receiver) = oneshot::channel();
                waiters.push(sender);
                return Turn::Wait(Waiting(receiver));
            }
            Some(Slot::Kept { renewal, until, .. }) if now < *until => {
                if self.usable(renewal, now, refused) {
                    return Turn::Reuse(renewal.clone());
                }
                // The kept tokens are due again (or refused): the session
                // goes on from them, never from the spent refresh token.
                // A refresh token the API kept (no rotation) is the same
                // one: refreshing it again is no replay.
                if let Renewal::Renewed(grant) = renewal {
                    if grant.refresh.as_ref().is_some_and(|next| next != refresh) {
                        return Turn::Successor(Arc::clone(grant));
                    }
                }
            }
            _ => {}
        }
        let id = table.next_id;
        table.next_id = table.next_id.wrapping_add(1);
        let replaced = table.slots.insert(
            key,
            Slot::Running {
                id,
                waiters: Vec::new(),
            },
        );
        table.forget(replaced);
        Turn::Lead(Lease {
            refreshes: self,
            key,
            id,
            finished: false,
        })
    }

    fn usable(&self, renewal: &Renewal, now: i64, refused: Option<&Token>) -> bool {
        match renewal {
            Renewal::Renewed(grant) => {
                refused.is_none_or(|token| *token != grant.access)
                    && grant
                        .access_expires_at
                        .is_none_or(|exp| exp.saturating_sub(now) > self.leeway_s)
            }
            Renewal::Refused => true,
            Renewal::Failed(_) => false,
        }
    }

    /// How many requests are waiting for a refresh in flight.
    pub fn waiting(&self) -> usize {
        self.lock()
            .slots
            .values()
            .map(|slot| match slot {
                Slot::Running { waiters, .. } => waiters.iter().filter(|w| !w.is_canceled()).count(),
                Slot::Kept { .. } => 0,
            })
            .sum()
    }

    /// How many refreshes are in flight.
    pub fn running(&self) -> usize {
        self.lock()
            .slots
            .values()
            .filter(|slot| matches!(slot, Slot::Running { .. }))
            .count()
    }

    /// How many results are kept for reuse.
    pub fn kept(&self) -> usize {
        self.lock().kept_count
    }
}

impl Lease<'_> {
    /// Ends the refresh with `renewal` at `now`: every waiting request gets
    /// it, and it is kept for the reuse window unless it failed.
    pub fn finish(mut self, renewal: Renewal, now: i64) {
        self.finished = true;
        let refreshes = self.refreshes;
        let waiters = {
            let mut table = refreshes.lock();
            let waiters = match table.slots.get_mut(&self.key) {
                Some(Slot::Running { id, waiters }) if *id == self.id => std::mem::take(waiters),
                // Not ours any more (cannot happen while the lease lives).
                _ => return,
            };
            let keep = !matches!(renewal, Renewal::Failed(_)) && refreshes.window_s > 0;
            if keep {
                let bytes = match &renewal {
                    Renewal::Renewed(grant) => {
                        grant.access.expose().len() + grant.refresh.as_ref().map_or(0, |r| r.expose().len())
                    }
                    _ => 0,
                };
                table.slots.insert(
                    self.key,
                    Slot::Kept {
                        id: self.id,
                        renewal: renewal.clone(),
                        until: now.saturating_add(refreshes.window_s),
                        bytes,
                    },
                );
                table.kept.push_back((self.key, self.id));
                table.kept_count += 1;
                table.kept_bytes += bytes;
                table.trim();
            } else {
                table.slots.remove(&self.key);
            }
            waiters
        };
        for waiter in waiters {
            // A waiter that went away needs nothing.
            let _ = waiter.send(renewal.clone());
        }
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let mut table = self.refreshes.lock();
        if matches!(table.slots.get(&self.key), Some(Slot::Running { id, .. }) if *id == self.id) {
            // Dropping the waiters' senders wakes them with no result.
            table.slots.remove(&self.key);
        }
    }
}

impl Table {
    /// Drops kept results whose window is over (and stale queue entries).
    fn sweep(&mut self, now: i64) {
        while let Some(&(key, id)) = self.kept.front() {
            match self.slots.get(&key) {
                Some(Slot::Kept { id: kept, until, .. }) if *kept == id => {
                    if *until > now {
                        break;
                    }
                    let removed = self.slots.remove(&key);
                    self.forget(removed);
                }
                _ => {}
            }
            self.kept.pop_front();
        }
    }

    /// Drops the oldest kept results while over either cap.
    fn trim(&mut self) {
        while self.kept_count > MAX_REMEMBERED || self.kept_bytes > MAX_REMEMBERED_BYTES {
            let Some((key, id)) = self.kept.pop_front() else {
                break;
            };
            if matches!(self.slots.get(&key), Some(Slot::Kept { id: kept, .. }) if *kept == id) {
                let removed = self.slots.remove(&key);
                self.forget(removed);
            }
        }
    }

    /// Takes a removed or replaced slot off the counts.
    fn forget(&mut self, slot: Option<Slot>) {
        if let Some(Slot::Kept { bytes, .. }) = slot {
            self.kept_count = self.kept_count.saturating_sub(1);
            self.kept_bytes = self.kept_bytes.saturating_sub(bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future as _;
    use std::task::{Context, Poll, Waker};

    use super::*;

    const NOW: i64 = 1_700_000_000;

    fn tok(s: &str) -> Token {
        Token::new(s.to_owned()).unwrap()
    }

    fn renewed(access: &str, expires_at: Option<i64>) -> Renewal {
        Renewal::Renewed(Arc::new(Grant {
            access: tok(access),
            refresh: Some(tok(&format!("{access}-r"))),
            access_expires_at: expires_at,
            profile: None,
        }))
    }

    fn lead(turn: Turn<'_>) -> Lease<'_> {
        match turn {
            Turn::Lead(lease) => lease,
            other => panic!("expected to lead, got {other:?}"),
        }
    }

    /// Polls a waiting request once, as an executor would.
    fn poll(waiting: &mut Waiting) -> Poll<Option<Renewal>> {
        Pin::new(waiting).poll(&mut Context::from_waker(Waker::noop()))
    }

    fn session(refresh: Option<&str>, access_expires_at: Option<i64>) -> Session {
        Session {
            token: tok("access"),
            expires_at: None,
            access_expires_at,
            refresh: refresh.map(tok),
            profile: None,
        }
    }

    fn rules() -> RefreshRules {
        RefreshRules::new("/auth/refresh", "refreshToken", 60, 30, "/auth/revoke").unwrap()
    }

    #[test]
    fn a_session_is_due_within_the_leeway_and_only_with_a_refresh_token() {
        let rules = rules();
        let check = |s: Session, due: bool| assert_eq!(rules.is_due(&s, NOW), due, "{s:?}");
        check(session(Some("r"), Some(NOW + 61)), false);
        check(session(Some("r"), Some(NOW + 60)), true);
        check(session(Some("r"), Some(NOW - 5)), true);
        // Unknown expiry: the API's 401 says when.
        check(session(Some("r"), None), false);
        // Nothing to spend.
        check(session(None, Some(NOW - 5)), false);
    }

    #[test]
    fn the_refresh_and_revoke_calls_carry_the_token_in_the_configured_field() {
        let rules = rules();
        let base = UpstreamBase::parse("http://api.internal:9000/v1").unwrap();
        let request = rules.request(&base, &tok("r-1"), Some("req-7"));
        assert_eq!(request.method, Method::Post);
        assert_eq!(request.url, "http://api.internal:9000/v1/auth/refresh");
        assert_eq!(request.body, br#"{"refreshToken":"r-1"}"#);
        assert_eq!(request.body_size, BodySize::Sized(request.body.len() as u64));
        assert_eq!(request.headers.get_str("content-type"), Some("application/json"));
        assert_eq!(request.headers.get_str("x-request-id"), Some("req-7"));
        // The refresh token is the only credential: no cookie, no token header.
        assert!(!request.headers.contains("cookie"));
        assert!(!request.headers.contains("auth-token"));

        let revoke = rules.revocation(&base, &tok("r-1"), None).unwrap();
        assert_eq!(revoke.url, "http://api.internal:9000/v1/auth/revoke");
        assert_eq!(revoke.body, br#"{"refreshToken":"r-1"}"#);
        let without = RefreshRules::new("/auth/refresh", "rt", 60, 30, "").unwrap();
        assert!(without.revocation(&base, &tok("r-1"), None).is_none());
    }

    #[test]
    fn verdicts_by_status() {
        for (status, verdict) in [
            (200, Verdict::Read),
            (201, Verdict::Read),
            (400, Verdict::Refused),
            (401, Verdict::Refused),
            (403, Verdict::Refused),
            (408, Verdict::Failed),
            (429, Verdict::Failed),
            (500, Verdict::Failed),
            (503, Verdict::Failed),
            (302, Verdict::Failed),
        ] {
            assert_eq!(RefreshRules::verdict(status), verdict, "{status}");
        }
    }

    #[test]
    fn settings_are_checked_and_named() {
        let keys = |r: Result<RefreshRules, Vec<SettingError>>| -> Vec<String> {
            r.err()
                .unwrap_or_default()
                .iter()
                .map(|e| e.key.to_owned())
                .collect()
        };
        assert_eq!(keys(RefreshRules::new("refresh", "f", 1, 1, "")), ["path"]);
        assert_eq!(keys(RefreshRules::new("/a b", "f", 1, 1, "")), ["path"]);
        assert_eq!(keys(RefreshRules::new("/r?x=1", "f", 1, 1, "")), ["path"]);
        assert_eq!(
            keys(RefreshRules::new("/r", "", 1, 1, "revoke")),
            ["revoke_path", "request_field"]
        );
        assert!(RefreshRules::new("/r", "f", u64::MAX, u64::MAX, "/v").is_ok());
    }

    #[test]
    fn one_leads_the_others_wait_and_get_its_result() {
        let table = Refreshes::new(30, 60);
        let lease = lead(table.turn(&tok("r"), NOW, None));
        let mut waiting: Vec<Waiting> = (0..3)
            .map(|_| match table.turn(&tok("r"), NOW, None) {
                Turn::Wait(w) => w,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!((table.running(), table.waiting()), (1, 3));
        assert!(waiting.iter_mut().all(|w| poll(w).is_pending()));
        // Another session is not held up.
        drop(lead(table.turn(&tok("other"), NOW, None)));

        let result = renewed("a2", Some(NOW + 300));
        lease.finish(result.clone(), NOW + 1);
        for w in &mut waiting {
            assert_eq!(poll(w), Poll::Ready(Some(result.clone())));
        }
        assert_eq!((table.running(), table.waiting(), table.kept()), (0, 0, 1));
    }

    #[test]
    fn a_kept_result_is_reused_within_the_window_only() {
        let table = Refreshes::new(30, 60);
        let result = renewed("a2", Some(NOW + 300));
        lead(table.turn(&tok("r"), NOW, None)).finish(result.clone(), NOW);
        match table.turn(&tok("r"), NOW + 29, None) {
            Turn::Reuse(r) => assert_eq!(r, result),
            other => panic!("{other:?}"),
        }
        // The window is over: the old refresh token is spent again (an API
        // that rotates will refuse it, which is the point of the window).
        drop(lead(table.turn(&tok("r"), NOW + 30, None)));
        assert_eq!(table.kept(), 0);
    }

    #[test]
    fn a_kept_access_token_inside_the_leeway_is_not_handed_out() {
        // An API that keeps its refresh tokens: the same key refreshes again
        // later, and the old result must not come back stale.
        let table = Refreshes::new(600, 60);
        let kept = |access: &str, exp: i64| {
            Renewal::Renewed(Arc::new(Grant {
                access: tok(access),
                refresh: Some(tok("r")),
                access_expires_at: Some(exp),
                profile: None,
            }))
        };
        lead(table.turn(&tok("r"), NOW, None)).finish(kept("a2", NOW + 100), NOW);
        assert!(matches!(table.turn(&tok("r"), NOW + 39, None), Turn::Reuse(_)));
        let lease = lead(table.turn(&tok("r"), NOW + 40, None));
        lease.finish(kept("a3", NOW + 400), NOW + 40);
        match table.turn(&tok("r"), NOW + 41, None) {
            Turn::Reuse(Renewal::Renewed(g)) => assert_eq!(g.access, tok("a3")),
            other => panic!("{other:?}"),
        }
        assert_eq!(table.kept(), 1);
    }

    #[test]
    fn a_due_successor_is_refreshed_from_its_own_refresh_token() {
        // An API that rotates: the spent token's kept tokens are due again,
        // and the late request must go on from them (never spending "r"
        // again, which would read as theft).
        let table = Refreshes::new(600, 60);
        lead(table.turn(&tok("r"), NOW, None)).finish(renewed("a2", Some(NOW + 100)), NOW);
        match table.turn(&tok("r"), NOW + 40, None) {
            Turn::Successor(grant) => {
                assert_eq!(grant.refresh, Some(tok("a2-r")));
                // Its own refresh is one flight, shared like any other.
                let lease = lead(table.turn(&tok("a2-r"), NOW + 40, None));
                assert!(matches!(table.turn(&tok("a2-r"), NOW + 40, None), Turn::Wait(_)));
                drop(lease);
            }
            other => panic!("{other:?}"),
        }
        // The API refused the kept access token: the successor too.
        assert!(matches!(
            table.turn(&tok("r"), NOW + 1, Some(&tok("a2"))),
            Turn::Successor(_)
        ));
    }

    #[test]
    fn a_result_holding_the_token_the_api_just_refused_is_no_help() {
        let table = Refreshes::new(30, 60);
        lead(table.turn(&tok("r"), NOW, None)).finish(renewed("a2", Some(NOW + 300)), NOW);
        assert!(matches!(
            table.turn(&tok("r"), NOW, Some(&tok("a1"))),
            Turn::Reuse(_)
        ));
        // Refused too: the session goes on from the kept refresh token.
        assert!(matches!(
            table.turn(&tok("r"), NOW, Some(&tok("a2"))),
            Turn::Successor(_)
        ));
    }

    #[test]
    fn a_refusal_is_kept_and_a_failure_is_not() {
        let table = Refreshes::new(30, 60);
        lead(table.turn(&tok("r"), NOW, None)).finish(Renewal::Refused, NOW);
        assert!(matches!(
            table.turn(&tok("r"), NOW + 1, None),
            Turn::Reuse(Renewal::Refused)
        ));

        let lease = lead(table.turn(&tok("s"), NOW, None));
        let Turn::Wait(mut waiting) = table.turn(&tok("s"), NOW, None) else {
            panic!("the second request waits");
        };
        let failure = Renewal::Failed(FlowError::Upstream(crate::UpstreamError::Timeout));
        lease.finish(failure.clone(), NOW);
        // The waiter shares the failure; the next request tries again.
        assert_eq!(poll(&mut waiting), Poll::Ready(Some(failure)));
        assert!(matches!(table.turn(&tok("s"), NOW + 1, None), Turn::Lead(_)));
    }

    #[test]
    fn a_cancelled_leader_hands_the_turn_to_a_waiter() {
        let table = Refreshes::new(30, 60);
        let lease = lead(table.turn(&tok("r"), NOW, None));
        let Turn::Wait(mut waiting) = table.turn(&tok("r"), NOW, None) else {
            panic!("the second request waits");
        };
        drop(lease);
        assert_eq!(poll(&mut waiting), Poll::Ready(None));
        assert!(matches!(table.turn(&tok("r"), NOW, None), Turn::Lead(_)));
    }

    #[test]
    fn nothing_is_kept_with_a_window_of_zero() {
        let table = Refreshes::new(0, 60);
        lead(table.turn(&tok("r"), NOW, None)).finish(renewed("a2", Some(NOW + 300)), NOW);
        assert_eq!(table.kept(), 0);
        assert!(matches!(table.turn(&tok("r"), NOW, None), Turn::Lead(_)));
    }

    #[test]
    fn the_table_is_bounded_and_forgets_the_oldest_first() {
        let table = Refreshes::new(3600, 60);
        let total = MAX_REMEMBERED + 5;
        for i in 0..total {
            let key = tok(&format!("r{i}"));
            lead(table.turn(&key, NOW, None)).finish(renewed("a", Some(NOW + 7200)), NOW);
        }
        assert_eq!(table.kept(), MAX_REMEMBERED);
        assert!(matches!(table.turn(&tok("r0"), NOW, None), Turn::Lead(_)));
        let newest = tok(&format!("r{}", total - 1));
        assert!(matches!(table.turn(&newest, NOW, None), Turn::Reuse(_)));

        // Large tokens: the byte cap holds first.
        let big = Refreshes::new(3600, 60);
        let access = "a".repeat(60 * 1024);
        for i in 0..2_000 {
            lead(big.turn(&tok(&format!("r{i}")), NOW, None)).finish(renewed(&access, Some(NOW + 7200)), NOW);
        }
        let per = 2 * 60 * 1024 + 2;
        assert!(big.kept() <= MAX_REMEMBERED_BYTES / per + 1, "{}", big.kept());
        assert!(big.kept() >= MAX_REMEMBERED_BYTES / per - 1, "{}", big.kept());
    }

    #[test]
    fn expired_results_are_swept_as_time_passes() {
        let table = Refreshes::new(10, 60);
        for i in 0..50 {
            lead(table.turn(&tok(&format!("r{i}")), NOW, None)).finish(renewed("a", None), NOW + i);
        }
        assert_eq!(table.kept(), 50);
        // A turn at NOW + 30 sweeps everything that finished before NOW + 21.
        drop(lead(table.turn(&tok("new"), NOW + 30, None)));
        assert_eq!(table.kept(), 29);
    }

    #[test]
    fn the_table_holds_no_refresh_token() {
        let table = Refreshes::new(30, 60);
        let secret = "refresh-secret-123";
        lead(table.turn(&tok(secret), NOW, None)).finish(Renewal::Refused, NOW);
        let printed = format!("{table:?} {:?}", rules());
        assert!(!printed.contains(secret));
        assert_ne!(key_of(&tok(secret)).as_slice(), secret.as_bytes());
    }
}
