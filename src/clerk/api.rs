//! The one client of Clerk's Backend API: paced under `CLERK_API_RATE`, retried as the caller's
//! `Patience` allows, and sweeping every user, organization and membership without skipping any.
//!
//! Shared by reconcile (a batch that may wait) and `SyncMe` (someone is waiting): one HTTP client
//! and one pacer for both, so together they never exceed the rate the tenant shares with its app.
//! Bodies carry names and emails: no value from them reaches a log line or an error message, only
//! paths (ids are fine), statuses, Clerk's error codes, attempts and waits.

use std::collections::HashSet;
use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use reqwest::{StatusCode, Url};
use serde_json::{Map, Value};
use tokio::time::Instant;

use crate::secret::Secret;
use crate::sync::item::ItemId;

/// The API version every request pins (`Clerk-API-Version`), the one `@clerk/backend` pins too:
/// the shapes parsed here are this version's.
pub const CLERK_API_VERSION: &str = "2026-05-12";
const VERSION_HEADER: HeaderName = HeaderName::from_static("clerk-api-version");

type Object = Map<String, Value>;

/// Clerk's largest page. A larger `limit` is not refused: it silently yields 10 items.
const PAGE_LIMIT: usize = 500;
/// Offset pages overlap by this much, so that this many deletions behind the offset between two
/// pages skip nobody.
const OFFSET_OVERLAP: usize = 50;
/// Clerk takes at most 100 values in an id filter (`user_id`, `organization_id`).
const ID_BATCH: usize = 100;
/// A 429 is waited out for its `Retry-After`, but never longer than this at a time.
const MAX_RATE_LIMIT_WAIT: Duration = Duration::from_secs(60);
const BATCH_ATTEMPTS: u32 = 6;
const INTERACTIVE_ATTEMPTS: u32 = 2;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The Clerk Backend API, for reconcile and `SyncMe`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClerkApiSettings {
    pub secret_key: Secret,
    /// An http(s) URL with a host, without query or fragment; paths are appended as `/v1/...`.
    pub base_url: Url,
    pub rate: RequestRate,
}

/// Requests per second, at least `RequestRate::MIN`: the pause between two requests is always
/// a sane `Duration`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RequestRate(f64);

// Never NaN (refused by `per_second`), so equality is an equivalence.
impl Eq for RequestRate {}

impl RequestRate {
    /// One request every 100 s: slower would make a sweep pointless.
    pub const MIN: f64 = 0.01;

    pub fn per_second(rate: f64) -> Option<Self> {
        (rate.is_finite() && rate >= Self::MIN).then_some(Self(rate))
    }

    /// The pause between two requests.
    pub fn interval(self) -> Duration {
        Duration::from_secs_f64(1.0 / self.0)
    }
}

/// How long a caller can wait for Clerk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Patience {
    /// Reconcile: wait out 429 (Retry-After seconds, capped at 60 s per wait), retry
    /// 5xx/timeouts/transport errors with exponential backoff and jitter (0.5 s doubling), up to
    /// 6 attempts in all (429s included), then give up.
    Batch,
    /// A request someone is waiting on: never sleeps on a 429 (returns `Unavailable` with the
    /// Retry-After), not even one another caller of the client received, at most one quick retry
    /// of a 5xx/timeout, short timeout (5 s).
    Interactive,
}

#[derive(Debug, thiserror::Error)]
pub enum ClerkApiError {
    /// 429, 5xx, timeout, transport failure, after the retries the Patience allows.
    /// `retry_after` from Retry-After when known.
    #[error("Clerk Backend API unavailable: {reason}")]
    Unavailable {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// 400/401/422 or a body that is not the documented shape: retrying will not help (bad
    /// key, wrong URL...).
    #[error("Clerk Backend API refused the request: {0}")]
    Rejected(String),
    /// 403: the instance does not offer this; for the organization lists, the Organizations
    /// feature is off.
    #[error("Clerk Backend API forbids the request: {0}")]
    Forbidden(String),
}

/// Waits between retries and for answers. `Default` is what production uses; tests shorten them
/// so that retries and timeouts take milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timings {
    /// The first wait before a `Batch` retry of a 5xx, timeout or transport failure (and of a
    /// 429 without Retry-After); it doubles with each attempt. `Interactive` waits a quarter of
    /// it, once.
    pub first_backoff: Duration,
    /// How long one `Batch` attempt may take, connecting to the last byte of the body.
    pub batch_timeout: Duration,
    /// The same for `Interactive`.
    pub interactive_timeout: Duration,
}

impl Default for Timings {
    fn default() -> Self {
        Self {
            first_backoff: Duration::from_millis(500),
            batch_timeout: Duration::from_secs(30),
            interactive_timeout: Duration::from_secs(5),
        }
    }
}

/// The Backend API client. Clones share one HTTP client, one pacer and one request count.
#[derive(Clone)]
pub struct ClerkApi {
    inner: Arc<Inner>,
    timings: Timings,
}

struct Inner {
    http: reqwest::Client,
    base_url: Url,
    pacer: Pacer,
    requests: AtomicU64,
}

impl fmt::Debug for ClerkApi {
    // The HTTP client holds the key in its default headers: show only where requests go.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClerkApi")
            .field("base_url", &self.inner.base_url.as_str())
            .field("requests_made", &self.requests_made())
            .finish_non_exhaustive()
    }
}

impl ClerkApi {
    pub fn new(settings: &ClerkApiSettings) -> Result<Self, ClerkApiError> {
        let mut authorization =
            HeaderValue::from_str(&format!("Bearer {}", settings.secret_key.expose())).map_err(
                |_| ClerkApiError::Rejected("the secret key is not a valid header value".into()),
            )?;
        authorization.set_sensitive(true);
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, authorization);
        headers.insert(VERSION_HEADER, HeaderValue::from_static(CLERK_API_VERSION));
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .connect_timeout(CONNECT_TIMEOUT)
            // Clerk does not redirect: a redirect means a wrong URL, and must not take the key
            // anywhere.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("clerk-cosmos/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClerkApiError::Rejected(format!("no HTTP client: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                base_url: settings.base_url.clone(),
                pacer: Pacer::new(settings.rate.interval()),
                requests: AtomicU64::new(0),
            }),
            timings: Timings::default(),
        })
    }

    /// The same client (shared pacer and count) with other waits; see `Timings`.
    pub fn with_timings(mut self, timings: Timings) -> Self {
        self.timings = timings;
        self
    }

    /// GET /v1/users/{id}: the user JSON object, None on Clerk's 404 (and, without asking, for an
    /// id no Clerk item can have; see `ItemId::is_clerk_shaped`).
    pub async fn get_user(
        &self,
        id: &ItemId,
        patience: Patience,
    ) -> Result<Option<Object>, ClerkApiError> {
        self.get_object("users", id, patience).await
    }

    /// GET /v1/organizations/{id}: None on 404. By id only (Clerk would also take a slug, whose
    /// answer carries another `id`, refused as the wrong object).
    pub async fn get_organization(
        &self,
        id: &ItemId,
        patience: Patience,
    ) -> Result<Option<Object>, ClerkApiError> {
        self.get_object("organizations", id, patience).await
    }

    /// The membership `membership_id` of `user_id` in `organization_id`, looked up with
    /// GET /v1/organizations/{organization_id}/memberships?user_id={user_id}&limit=500 ; None
    /// when the org is 404 or the id is not in the answer.
    pub async fn get_membership(
        &self,
        organization_id: &ItemId,
        user_id: &ItemId,
        membership_id: &ItemId,
        patience: Patience,
    ) -> Result<Option<Object>, ClerkApiError> {
        if ![organization_id, user_id, membership_id]
            .iter()
            .all(|id| id.is_clerk_shaped())
        {
            return Ok(None);
        }
        let url = self.url(
            &["organizations", organization_id.as_str(), "memberships"],
            &[
                ("user_id", user_id.as_str()),
                ("limit", &PAGE_LIMIT.to_string()),
            ],
        );
        let Some(body) = self.get_json(url, patience).await? else {
            return Ok(None);
        };
        let items = list_data(body, "organization memberships")?;
        Ok(items
            .into_iter()
            .find(|item| item_id(item) == Some(membership_id.as_str())))
    }

    /// Which of `ids` Clerk still has: GET /v1/users?user_id=a&user_id=b... in batches of at
    /// most 100 (absent ids are simply not returned). Batch patience.
    pub async fn existing_users(&self, ids: &[ItemId]) -> Result<HashSet<ItemId>, ClerkApiError> {
        self.existing(ids, "users", "user_id", |body| {
            array_of_objects(body, "users")
        })
        .await
    }

    /// Which of `ids` Clerk still has: GET /v1/organizations?organization_id=... in batches of
    /// at most 100. Batch patience.
    pub async fn existing_organizations(
        &self,
        ids: &[ItemId],
    ) -> Result<HashSet<ItemId>, ClerkApiError> {
        self.existing(ids, "organizations", "organization_id", |body| {
            list_data(body, "organizations")
        })
        .await
    }

    /// Every user, page by page (Batch patience); see `Sweep`.
    pub fn users(&self) -> Sweep {
        Sweep::new(
            self.clone(),
            Paging::CreatedAt {
                boundary: None,
                at_boundary: HashSet::new(),
            },
        )
    }

    /// Every organization, page by page (Batch patience); see `Sweep`.
    pub fn organizations(&self) -> Sweep {
        Sweep::new(self.clone(), Paging::offset(OffsetList::Organizations))
    }

    /// Every organization membership of the instance, page by page (Batch patience); see
    /// `Sweep`.
    pub fn memberships(&self) -> Sweep {
        Sweep::new(self.clone(), Paging::offset(OffsetList::Memberships))
    }

    /// Requests sent so far (every attempt counts), for reports and benchmarks.
    pub fn requests_made(&self) -> u64 {
        self.inner.requests.load(Ordering::Relaxed)
    }

    async fn get_object(
        &self,
        kind: &str,
        id: &ItemId,
        patience: Patience,
    ) -> Result<Option<Object>, ClerkApiError> {
        if !id.is_clerk_shaped() {
            return Ok(None);
        }
        let url = self.url(&[kind, id.as_str()], &[]);
        let Some(body) = self.get_json(url, patience).await? else {
            return Ok(None);
        };
        match body {
            // An answer about another id means a proxy or a wrong URL, not the item.
            Value::Object(object) if item_id(&object) == Some(id.as_str()) => Ok(Some(object)),
            _ => Err(ClerkApiError::Rejected(format!(
                "/v1/{kind}/{{id}} did not answer with the object of that id"
            ))),
        }
    }

    async fn existing(
        &self,
        ids: &[ItemId],
        path: &str,
        filter: &str,
        items: impl Fn(Value) -> Result<Vec<Object>, ClerkApiError>,
    ) -> Result<HashSet<ItemId>, ClerkApiError> {
        // A `+`/`-` prefix would turn the filter into include/exclude: such an id, or any that
        // Clerk cannot have, is absent without asking.
        let asked: Vec<&str> = ids
            .iter()
            .filter(|id| id.is_clerk_shaped())
            .map(ItemId::as_str)
            .collect();
        let mut present = HashSet::new();
        for batch in asked.chunks(ID_BATCH) {
            let limit = batch.len().to_string();
            let mut query: Vec<(&str, &str)> = batch.iter().map(|id| (filter, *id)).collect();
            query.push(("limit", &limit));
            let url = self.url(&[path], &query);
            let body = self.get_json(url, Patience::Batch).await?.ok_or_else(|| {
                ClerkApiError::Rejected(format!("/v1/{path} is not found; is the URL right?"))
            })?;
            for item in items(body)? {
                let id = item_id(&item).expect("checked by `items`");
                // An answer ignoring the filter would make every id it left out look deleted.
                if !batch.contains(&id) {
                    return Err(ClerkApiError::Rejected(format!(
                        "/v1/{path} answered with an id it was not asked for: {filter} ignored"
                    )));
                }
                present.insert(ItemId::parse(id).expect("one of the ids asked for"));
            }
        }
        Ok(present)
    }

    /// `base_url/v1/<segments>?<query>`, each segment percent-encoded.
    fn url(&self, segments: &[&str], query: &[(&str, &str)]) -> Url {
        let mut url = self.inner.base_url.clone();
        url.path_segments_mut()
            .expect("an http(s) URL with a host has a path (checked when the settings were read)")
            .pop_if_empty()
            .push("v1")
            .extend(segments);
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url
    }

    /// The JSON of a 2xx, `None` for a 404 from Clerk, after as many attempts as `patience`
    /// allows.
    async fn get_json(&self, url: Url, patience: Patience) -> Result<Option<Value>, ClerkApiError> {
        let (attempts, timeout) = match patience {
            Patience::Batch => (BATCH_ATTEMPTS, self.timings.batch_timeout),
            Patience::Interactive => (INTERACTIVE_ATTEMPTS, self.timings.interactive_timeout),
        };
        let path = url.path().to_owned();
        let mut attempt = 0;
        loop {
            attempt += 1;
            if let Err(wait) = self.inner.pacer.take_slot(patience, timeout).await {
                return Err(ClerkApiError::Unavailable {
                    reason: "rate limited; a request someone waits on does not queue".into(),
                    retry_after: Some(wait),
                });
            }
            self.inner.requests.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(path, attempt, "Clerk Backend API request");
            let reason = match self.attempt(url.clone(), &path, timeout).await {
                Attempt::Done(result) => return result,
                Attempt::RateLimited { retry_after } => {
                    let wait = retry_after
                        .map(|wait| wait.min(MAX_RATE_LIMIT_WAIT))
                        .unwrap_or_else(|| self.backoff(patience, attempt));
                    // Everyone sharing this client backs off, not just this caller: Clerk blocks
                    // the whole key. Waiting happens in the next `take_slot`.
                    self.inner.pacer.hold_off(wait);
                    if patience == Patience::Interactive || attempt >= attempts {
                        return Err(ClerkApiError::Unavailable {
                            reason: format!("{path}: rate limited (429)"),
                            retry_after,
                        });
                    }
                    tracing::warn!(
                        path,
                        attempt,
                        wait_ms = wait.as_millis() as u64,
                        "Clerk Backend API rate limited; waiting"
                    );
                    continue;
                }
                Attempt::Failed { reason } => reason,
            };
            if attempt >= attempts {
                return Err(ClerkApiError::Unavailable {
                    reason: format!("{path}: {reason} ({attempt} attempts)"),
                    retry_after: None,
                });
            }
            let wait = self.backoff(patience, attempt);
            tracing::warn!(
                path,
                attempt,
                reason,
                wait_ms = wait.as_millis() as u64,
                "Clerk Backend API failed; retrying"
            );
            tokio::time::sleep(wait).await;
        }
    }

    async fn attempt(&self, url: Url, path: &str, timeout: Duration) -> Attempt {
        let response = match self.inner.http.get(url).timeout(timeout).send().await {
            Ok(response) => response,
            Err(error) => {
                return Attempt::Failed {
                    reason: transport(&error),
                };
            }
        };
        let status = response.status();
        if status == StatusCode::TOO_MANY_REQUESTS {
            return Attempt::RateLimited {
                retry_after: retry_after(response.headers()),
            };
        }
        if status.is_server_error() || status == StatusCode::REQUEST_TIMEOUT {
            return Attempt::Failed {
                reason: format!("answered {status}"),
            };
        }
        // The body arrives within the same timeout; a stall there is a timeout like any other.
        let body = match response.bytes().await {
            Ok(body) => body,
            Err(error) => {
                return Attempt::Failed {
                    reason: transport(&error),
                };
            }
        };
        let json = serde_json::from_slice::<Value>(&body).ok();
        Attempt::Done(if status.is_success() {
            json.map(Some).ok_or_else(|| {
                ClerkApiError::Rejected(format!(
                    "{path} answered {status} with a body that is not JSON"
                ))
            })
        } else if status == StatusCode::NOT_FOUND && json.as_ref().is_some_and(is_clerk_error) {
            // Only Clerk's own "not found" counts: reconcile deletes on it, and a 404 from a
            // proxy or a mistyped CLERK_API_URL must not read as "every user is gone".
            Ok(None)
        } else if status == StatusCode::FORBIDDEN {
            Err(ClerkApiError::Forbidden(format!(
                "{path} answered {status}{}",
                json.as_ref().map(error_codes).unwrap_or_default()
            )))
        } else {
            Err(ClerkApiError::Rejected(format!(
                "{path} answered {status}{}",
                json.as_ref().map(error_codes).unwrap_or_default()
            )))
        })
    }

    fn backoff(&self, patience: Patience, attempt: u32) -> Duration {
        let full = match patience {
            Patience::Batch => self
                .timings
                .first_backoff
                .saturating_mul(1u32 << (attempt - 1).min(16)),
            Patience::Interactive => self.timings.first_backoff / 4,
        };
        jitter(full)
    }
}

/// What one request came to.
enum Attempt {
    /// An answer retrying will not change: the item, its absence, or a refusal.
    Done(Result<Option<Value>, ClerkApiError>),
    RateLimited {
        retry_after: Option<Duration>,
    },
    /// 5xx, timeout or transport failure: worth another attempt.
    Failed {
        reason: String,
    },
}

/// Spaces requests `1 / rate` apart across every caller of one client. Each attempt reserves the
/// next free slot and sleeps until it; a 429 pushes the next slot past its Retry-After.
struct Pacer {
    interval: Duration,
    state: Mutex<PacerState>,
}

struct PacerState {
    next: Instant,
    /// Until when Clerk asked us to stop (the last 429's Retry-After).
    blocked_until: Instant,
}

impl Pacer {
    fn new(interval: Duration) -> Self {
        let now = Instant::now();
        Self {
            interval,
            state: Mutex::new(PacerState {
                next: now,
                blocked_until: now,
            }),
        }
    }

    /// Waits for this request's turn. An interactive request does not wait out a 429 nor a
    /// queue longer than its own timeout: it gets `Err(how long it would have to wait)`.
    async fn take_slot(&self, patience: Patience, timeout: Duration) -> Result<(), Duration> {
        let slot = {
            // Nothing panics while the lock is held, so a poisoned state is still consistent.
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            let now = Instant::now();
            let slot = state.next.max(now);
            if patience == Patience::Interactive {
                if state.blocked_until > now {
                    return Err(state.blocked_until - now);
                }
                if slot - now > timeout {
                    return Err(slot - now);
                }
            }
            state.next = slot + self.interval;
            slot
        };
        tokio::time::sleep_until(slot).await;
        Ok(())
    }

    fn hold_off(&self, wait: Duration) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let until = Instant::now() + wait;
        state.next = state.next.max(until);
        state.blocked_until = state.blocked_until.max(until);
    }
}

/// A sweep over every item of one kind, page by page, with Batch patience.
///
/// Clerk lists cannot be read as a snapshot: items are created and deleted while a sweep runs,
/// and bulk imports give many items the same `created_at` millisecond. Each kind is paged so that
/// nobody who exists for the whole sweep is skipped, and items read twice are dropped by id.
///
/// **Users** page by keyset on `created_at`: `order_by=+created_at&limit=500` and
/// `created_at_after`, which is in every API version (the `starting_after` cursor appeared in the
/// spec in 2026-08 and is not in every API). `created_at_after` is strictly greater, so asking
/// for `created_at_after = b` after a page ending at `b` would skip the users of `b` that did not
/// fit in that page. Instead the sweep keeps the boundary `b` (the last `created_at` seen) and the
/// ids already returned at `b`, asks for `created_at_after = b - 1` (everything at `b` or later)
/// with `offset = k - 1` for `k` ids seen at `b`: it re-reads one known user, so that one user at
/// `b` deleted meanwhile cannot shift an unseen one out of reach, and drops what it has seen.
/// A deletion only shifts users at `b`; creations land after `b`. It assumes Clerk orders ties
/// the same way on every request, and two deletions at `b` between the same two pages could still
/// skip one user. Memory: the ids at the boundary only (a large bulk import's worth at most).
///
/// **Organizations and memberships** have offset paging only. They are read in ascending
/// `created_at` order, so creations land at the end rather than shifting rows, and each page
/// starts 450 items after the previous one (an overlap of 50): up to 50 deletions behind the
/// offset between two pages skip nobody. A repeat can only come from the previous page's
/// overlap, so memory is that page's ids: flat however long the list.
///
/// A sweep stops at the first page with fewer than 500 items. A full page with nothing new
/// means the API ignored the paging parameters: that is refused rather than looped on.
pub struct Sweep {
    api: ClerkApi,
    paging: Paging,
    complete: bool,
}

enum Paging {
    CreatedAt {
        boundary: Option<i64>,
        at_boundary: HashSet<String>,
    },
    Offset {
        list: OffsetList,
        offset: usize,
        /// The previous page's ids.
        seen: HashSet<String>,
    },
}

impl Paging {
    fn offset(list: OffsetList) -> Self {
        Self::Offset {
            list,
            offset: 0,
            seen: HashSet::new(),
        }
    }
}

#[derive(Clone, Copy)]
enum OffsetList {
    Organizations,
    Memberships,
}

impl OffsetList {
    fn path(self) -> &'static str {
        match self {
            Self::Organizations => "organizations",
            Self::Memberships => "organization_memberships",
        }
    }
}

impl Sweep {
    fn new(api: ClerkApi, paging: Paging) -> Self {
        Self {
            api,
            paging,
            complete: false,
        }
    }

    /// The next page of items never returned before by this sweep (deduplicated by `id`);
    /// Ok(None) when the sweep is complete. A page may be empty while the sweep is not complete.
    pub async fn next_page(&mut self) -> Result<Option<Vec<Object>>, ClerkApiError> {
        if self.complete {
            return Ok(None);
        }
        let (fresh, raw_len) = match &mut self.paging {
            Paging::CreatedAt {
                boundary,
                at_boundary,
            } => users_page(&self.api, boundary, at_boundary).await?,
            Paging::Offset { list, offset, seen } => {
                let page = offset_page(&self.api, *list, *offset, seen).await?;
                *offset += PAGE_LIMIT - OFFSET_OVERLAP;
                page
            }
        };
        self.complete = raw_len < PAGE_LIMIT;
        if !self.complete && fresh.is_empty() {
            return Err(ClerkApiError::Rejected(
                "a full page held nothing new: the API ignored the paging parameters".into(),
            ));
        }
        Ok(Some(fresh))
    }
}

/// One page of the users sweep: the new users, and how many the page held.
async fn users_page(
    api: &ClerkApi,
    boundary: &mut Option<i64>,
    at_boundary: &mut HashSet<String>,
) -> Result<(Vec<Object>, usize), ClerkApiError> {
    let limit = PAGE_LIMIT.to_string();
    let mut query = vec![("order_by", "+created_at".to_owned()), ("limit", limit)];
    if let Some(b) = *boundary {
        query.push(("created_at_after", (b - 1).to_string()));
        let skip = at_boundary.len().saturating_sub(1);
        if skip > 0 {
            query.push(("offset", skip.to_string()));
        }
    }
    let query: Vec<(&str, &str)> = query.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let url = api.url(&["users"], &query);
    let body = api.get_json(url, Patience::Batch).await?.ok_or_else(|| {
        ClerkApiError::Rejected("/v1/users is not found; is the URL right?".into())
    })?;
    let page = array_of_objects(body, "users")?;
    let raw_len = page.len();
    let mut fresh = Vec::with_capacity(raw_len);
    let mut previous = None;
    for user in page {
        let created_at = user
            .get("created_at")
            .and_then(Value::as_i64)
            .ok_or_else(|| ClerkApiError::Rejected("a user has no integer created_at".into()))?;
        // The keyset is only sound if the API honoured both the filter and the order.
        if boundary.is_some_and(|b| created_at < b) || previous.is_some_and(|p| created_at < p) {
            return Err(ClerkApiError::Rejected(
                "users came back out of created_at order or before created_at_after".into(),
            ));
        }
        previous = Some(created_at);
        let id = item_id(&user)
            .expect("checked by array_of_objects")
            .to_owned();
        if *boundary == Some(created_at) {
            if !at_boundary.insert(id) {
                continue;
            }
        } else {
            *boundary = Some(created_at);
            at_boundary.clear();
            at_boundary.insert(id);
        }
        fresh.push(user);
    }
    Ok((fresh, raw_len))
}

/// One page of an offset sweep: the new items, and how many the page held.
async fn offset_page(
    api: &ClerkApi,
    list: OffsetList,
    offset: usize,
    seen: &mut HashSet<String>,
) -> Result<(Vec<Object>, usize), ClerkApiError> {
    let (limit, offset) = (PAGE_LIMIT.to_string(), offset.to_string());
    let query = [
        ("order_by", "+created_at"),
        ("limit", limit.as_str()),
        ("offset", offset.as_str()),
    ];
    let url = api.url(&[list.path()], &query);
    let body = api.get_json(url, Patience::Batch).await?.ok_or_else(|| {
        ClerkApiError::Rejected(format!(
            "/v1/{} is not found; is the URL right?",
            list.path()
        ))
    })?;
    let page = list_data(body, list.path())?;
    let raw_len = page.len();
    // Ascending by creation, so a repeat can only come from the previous page's overlap:
    // remembering that page's ids is enough, and keeps memory flat however long the list.
    let previous = std::mem::take(seen);
    let mut fresh = Vec::with_capacity(raw_len);
    for item in page {
        let id = item_id(&item).expect("checked by list_data").to_owned();
        let repeated = previous.contains(&id);
        if seen.insert(id) && !repeated {
            fresh.push(item);
        }
    }
    Ok((fresh, raw_len))
}

/// A `{"data": [...], "total_count": n}` list's items, each an object with a string `id`.
fn list_data(body: Value, what: &str) -> Result<Vec<Object>, ClerkApiError> {
    match body {
        Value::Object(mut list) if list.get("total_count").is_some_and(Value::is_number) => {
            array_of_objects(list.remove("data").unwrap_or(Value::Null), what)
        }
        _ => Err(ClerkApiError::Rejected(format!(
            "the {what} list is not {{\"data\": [...], \"total_count\": n}}"
        ))),
    }
}

/// A JSON array of objects, each with a string `id`. Says what was wrong, never quoting values.
fn array_of_objects(body: Value, what: &str) -> Result<Vec<Object>, ClerkApiError> {
    let Value::Array(items) = body else {
        return Err(ClerkApiError::Rejected(format!(
            "the {what} list is not a JSON array"
        )));
    };
    items
        .into_iter()
        .map(|item| match item {
            Value::Object(object) if item_id(&object).is_some() => Ok(object),
            _ => Err(ClerkApiError::Rejected(format!(
                "an item of the {what} list is not an object with a string id"
            ))),
        })
        .collect()
}

fn item_id(item: &Object) -> Option<&str> {
    item.get("id").and_then(Value::as_str)
}

/// Clerk's error body: `{"errors": [{"code": ..., "message": ...}]}`.
fn is_clerk_error(body: &Value) -> bool {
    body.get("errors").is_some_and(Value::is_array)
}

/// `: code, code` from Clerk's error body. Codes only: messages may quote what was sent.
fn error_codes(body: &Value) -> String {
    let codes: Vec<&str> = body
        .get("errors")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|error| error.get("code").and_then(Value::as_str))
        .collect();
    if codes.is_empty() {
        String::new()
    } else {
        format!(": {}", codes.join(", "))
    }
}

/// Retry-After in seconds, as Clerk sends it.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// What went wrong on the wire, without the URL (its query may carry ids in bulk).
fn transport(error: &reqwest::Error) -> String {
    let what = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "could not connect"
    } else {
        "transport failure"
    };
    let mut reason = what.to_owned();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        reason.push_str(": ");
        reason.push_str(&cause.to_string());
        source = cause.source();
    }
    reason
}

/// A wait drawn from `[full / 2, full]`, so that callers failing together do not retry together.
fn jitter(full: Duration) -> Duration {
    // std's hash keys are random per process and change with every `RandomState`, so hashing
    // anything gives a fresh number: enough to spread retries, without a random number crate.
    let random = RandomState::new().hash_one(0u8);
    let fraction = (random >> 11) as f64 / (1u64 << 53) as f64;
    full / 2 + full.mul_f64(fraction / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_between_half_and_full() {
        let full = Duration::from_millis(800);
        for _ in 0..100 {
            let wait = jitter(full);
            assert!(wait >= full / 2 && wait <= full, "{wait:?}");
        }
    }

    #[test]
    fn lists_are_checked_without_quoting_values() {
        let body = serde_json::json!({"data": [{"id": "org_1"}, {"email": "a@example.com"}], "total_count": 2});
        let error = list_data(body, "organizations").unwrap_err().to_string();
        assert!(!error.contains("example.com"), "{error}");
        assert!(list_data(serde_json::json!([{"id": "user_1"}]), "organizations").is_err());
        assert!(array_of_objects(serde_json::json!({"data": []}), "users").is_err());
        assert_eq!(
            error_codes(
                &serde_json::json!({"errors": [{"code": "authentication_invalid", "message": "key sk_x"}]})
            ),
            ": authentication_invalid"
        );
    }
}
