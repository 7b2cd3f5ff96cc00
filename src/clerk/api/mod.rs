//! The one client of Clerk's Backend API: its settings, and the endpoints reconcile, `SyncMe`
//! and the resurrection guard call.
//!
//! Shared by reconcile (a batch that may wait) and `SyncMe` (someone is waiting): one HTTP client
//! and one pacer for both, so together they never exceed the rate the tenant shares with its app.
//! `request` makes one request (pacing, retries, Clerk's 429 hold-off, as the caller's
//! `Patience` allows), `sweep` walks whole lists, `list` reads the lists' shapes.
//! Bodies carry names and emails: no value from them reaches a log line or an error message, only
//! paths (ids are fine), statuses, Clerk's error codes, attempts and waits.

mod list;
mod request;
mod sweep;

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use reqwest::Url;
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;

use self::list::{Object, array_of_objects, item_id, list_data};
use self::request::Gate;
pub use self::request::{Patience, Timings};
pub use self::sweep::Sweep;
use crate::secret::Secret;
use crate::sync::item::ItemId;

/// The API version every request pins (`Clerk-API-Version`), the one `@clerk/backend` pins too:
/// the shapes parsed here are this version's.
pub const CLERK_API_VERSION: &str = "2026-05-12";
const VERSION_HEADER: HeaderName = HeaderName::from_static("clerk-api-version");

/// Clerk's largest page. A larger `limit` is not refused: it silently yields 10 items.
const PAGE_LIMIT: usize = 500;
/// Clerk takes at most 100 values in an id filter (`user_id`, `organization_id`).
const ID_BATCH: usize = 100;
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

/// The Backend API client. Clones share one HTTP client, one pacer and one request count.
#[derive(Clone)]
pub struct ClerkApi {
    inner: Arc<Inner>,
    timings: Timings,
}

struct Inner {
    http: reqwest::Client,
    base_url: Url,
    gate: Gate,
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
                gate: Gate::new(settings.rate),
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
        Sweep::users(self.clone())
    }

    /// Every organization, page by page (Batch patience); see `Sweep`.
    pub fn organizations(&self) -> Sweep {
        Sweep::organizations(self.clone())
    }

    /// Every organization membership of the instance, organization by organization (Batch
    /// patience); see `Sweep`.
    pub fn memberships(&self) -> Sweep {
        Sweep::memberships(self.clone())
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
        let url = self.url::<&str, &str>(&[kind, id.as_str()], &[]);
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
    fn url<K: AsRef<str>, V: AsRef<str>>(&self, segments: &[&str], query: &[(K, V)]) -> Url {
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
}
