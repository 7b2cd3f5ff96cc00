//! A test double of Clerk's Backend API: not Clerk, but a local stand-in speaking the part of
//! its documented protocol this project uses (spec `bapi/2026-05-12.yml`), no more (a parameter
//! the spec does not offer on an endpoint is ignored, as an unknown one is), with the behaviours
//! a client can trip over reproduced on purpose:
//! - `GET /v1/users`: a plain JSON array; `limit` above 500 silently gives 10 (as the real API
//!   does); `offset`; `order_by` `±created_at` (default newest first); `created_at_after` and
//!   `created_at_before`, both strict; repeated `user_id=` filters (`-` prefix excludes).
//! - `GET /v1/organizations`: `limit`, `offset`, `order_by` `±created_at`, `organization_id=`
//!   and `user_id=` filters; no `created_at` filter, no cursor.
//! - `GET /v1/organizations/{id}/memberships`: `limit`, `offset`, `order_by` `±created_at`,
//!   `created_at_after`/`created_at_before` (strict), `user_id=` filters; 404 for an unknown
//!   organization.
//! - `GET /v1/organization_memberships` (`order_by`, `limit`, `offset`) and
//!   `GET /v1/users/{id}/organization_memberships` (`limit`, `offset`).
//! - Every list but users answers `{data, total_count}`.
//! - `GET /v1/users/{id}`, `GET /v1/organizations/{id}`: the object, or 404 with Clerk's error
//!   body.
//! - Ties in `created_at` are ordered by id, the same on every request.
//! - 401 unless `Authorization: Bearer <key>`; 400 without a known `Clerk-API-Version`.
//!
//! Tests change its data at any time (directly, or from `on_request` just before the n-th
//! request is answered), script failures (429 with Retry-After, a status, a slow answer), and
//! read the requests it received.
//!
//! Built to serve a million users without being a benchmark's bottleneck: items are kept as
//! their JSON text, indexed by id and by `(created_at, id)` (memberships also by organization),
//! so that a page costs its offset and its length, not a sort of everything.

use crate::loopback::LoopbackServer;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use handler::clerk::api::ClerkApiSettings;
use handler::config::{CLERK_API_RATE, CLERK_API_URL, CLERK_SECRET_KEY, Env, Settings};
use serde_json::{Value, json};

/// The versions Clerk serves; anything else is refused, as Clerk does.
const VERSIONS: [&str; 5] = [
    "2021-02-05",
    "2024-10-01",
    "2025-04-10",
    "2025-11-10",
    "2026-05-12",
];
const MAX_LIMIT: usize = 500;
const DEFAULT_LIMIT: usize = 10;
/// Clerk's cap on the values of one id filter.
const MAX_FILTER_VALUES: usize = 100;

/// What the double holds: users, organizations and memberships, each by id and in order.
#[derive(Default)]
pub struct ClerkData {
    users: Table,
    organizations: Table,
    memberships: Table,
}

/// One kind of item, by id and by `(created_at, id)`; memberships also by organization.
#[derive(Default)]
struct Table {
    by_id: HashMap<String, Entry>,
    by_created: BTreeSet<(i64, String)>,
    by_organization: BTreeSet<(String, i64, String)>,
}

struct Entry {
    json: Box<str>,
    created_at: i64,
    /// A membership's organization and user; empty for the other kinds.
    organization_id: String,
    user_id: String,
}

impl Table {
    fn insert(&mut self, id: String, item: &Value) {
        self.remove(&id);
        let entry = Entry {
            json: item.to_string().into_boxed_str(),
            created_at: created_at(item),
            organization_id: item["organization"]["id"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            user_id: item["public_user_data"]["user_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        };
        self.by_created.insert((entry.created_at, id.clone()));
        if !entry.organization_id.is_empty() {
            self.by_organization.insert((
                entry.organization_id.clone(),
                entry.created_at,
                id.clone(),
            ));
        }
        self.by_id.insert(id, entry);
    }

    fn remove(&mut self, id: &str) -> bool {
        let Some(entry) = self.by_id.remove(id) else {
            return false;
        };
        self.by_created.remove(&(entry.created_at, id.to_owned()));
        self.by_organization
            .remove(&(entry.organization_id, entry.created_at, id.to_owned()));
        true
    }
}

impl ClerkData {
    /// Adds or replaces an item, filed by its `object` (`user`, `organization`,
    /// `organization_membership`).
    pub fn put(&mut self, item: Value) {
        let id = item["id"]
            .as_str()
            .expect("an item has a string id")
            .to_owned();
        let table = match item["object"].as_str() {
            Some("user") => &mut self.users,
            Some("organization") => &mut self.organizations,
            Some("organization_membership") => &mut self.memberships,
            other => panic!("the double holds no {other:?}"),
        };
        table.insert(id, &item);
    }

    /// Removes the item of any kind with this id; whether there was one.
    pub fn remove(&mut self, id: &str) -> bool {
        [
            &mut self.users,
            &mut self.organizations,
            &mut self.memberships,
        ]
        .into_iter()
        .any(|table| table.remove(id))
    }

    /// Whether an item of any kind has this id.
    pub fn contains(&self, id: &str) -> bool {
        [&self.users, &self.organizations, &self.memberships]
            .into_iter()
            .any(|table| table.by_id.contains_key(id))
    }
}

/// A scripted answer, taken by the next request in place of the real one.
#[derive(Debug, Clone)]
pub enum Failure {
    /// 429 with `Retry-After: <seconds>`.
    RateLimited { retry_after_secs: u64 },
    /// This status with Clerk's error body (500, 502, 503...).
    Status(u16),
    /// The real answer, after this long (longer than the client's timeout, say).
    Delay(Duration),
}

/// One request as the double received it.
#[derive(Debug, Clone)]
pub struct LoggedRequest {
    pub method: String,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub authorization: Option<String>,
    pub api_version: Option<String>,
}

impl LoggedRequest {
    /// Every value of one query parameter, in order.
    pub fn query_values(&self, name: &str) -> Vec<&str> {
        self.query
            .iter()
            .filter(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
            .collect()
    }

    pub fn query_value(&self, name: &str) -> Option<&str> {
        self.query_values(name).first().copied()
    }
}

type Hook = Box<dyn FnOnce(&mut ClerkData) + Send>;

struct Shared {
    key: String,
    data: Mutex<ClerkData>,
    failures: Mutex<VecDeque<Failure>>,
    log: Mutex<Vec<LoggedRequest>>,
    hooks: Mutex<Vec<(usize, Hook)>>,
}

pub struct ClerkApiDouble {
    server: LoopbackServer,
    shared: Arc<Shared>,
}

impl ClerkApiDouble {
    /// Starts empty on a free port of 127.0.0.1, accepting `key` as the secret key.
    pub async fn start(key: &str) -> Self {
        let shared = Arc::new(Shared {
            key: key.to_owned(),
            data: Mutex::default(),
            failures: Mutex::default(),
            log: Mutex::default(),
            hooks: Mutex::default(),
        });
        let router = Router::new()
            .route("/v1/users", get(list_users))
            .route("/v1/users/{id}", get(get_user))
            .route("/v1/organizations", get(list_organizations))
            .route("/v1/organizations/{id}", get(get_organization))
            .route(
                "/v1/organizations/{id}/memberships",
                get(list_organization_memberships),
            )
            .route("/v1/organization_memberships", get(list_memberships))
            .route(
                "/v1/users/{id}/organization_memberships",
                get(list_user_memberships),
            )
            .layer(middleware::from_fn_with_state(Arc::clone(&shared), receive))
            .with_state(Arc::clone(&shared));
        Self {
            server: LoopbackServer::start(router).await,
            shared,
        }
    }

    /// The base URL, as `CLERK_API_URL` takes it.
    pub fn url(&self) -> String {
        format!("http://{}", self.server.address)
    }

    /// Settings that reach this double with `key` at `rate` requests per second.
    pub fn settings(&self, key: &str, rate: f64) -> ClerkApiSettings {
        api_settings(&self.url(), key, rate)
    }

    /// Adds or replaces an item; see `ClerkData::put`.
    pub fn put(&self, item: Value) {
        self.with_data(|data| data.put(item));
    }

    pub fn put_all(&self, items: impl IntoIterator<Item = Value>) {
        self.with_data(|data| items.into_iter().for_each(|item| data.put(item)));
    }

    /// Removes an item of any kind; whether there was one.
    pub fn remove(&self, id: &str) -> bool {
        self.with_data(|data| data.remove(id))
    }

    pub fn with_data<R>(&self, change: impl FnOnce(&mut ClerkData) -> R) -> R {
        change(&mut self.shared.data.lock().unwrap())
    }

    /// Runs `change` when the `n`-th request (from 1) arrives, before it is answered: data
    /// that changes between two pages of a sweep.
    pub fn on_request(&self, n: usize, change: impl FnOnce(&mut ClerkData) + Send + 'static) {
        self.shared
            .hooks
            .lock()
            .unwrap()
            .push((n, Box::new(change)));
    }

    /// Queues a failure: each request takes the first one queued, if any.
    pub fn fail_next(&self, failure: Failure) {
        self.shared.failures.lock().unwrap().push_back(failure);
    }

    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.shared.log.lock().unwrap().clone()
    }

    pub fn request_count(&self) -> usize {
        self.shared.log.lock().unwrap().len()
    }
}

/// Clerk API settings as `config` loads them from the environment (a `Secret` has no other
/// public way in).
pub fn api_settings(url: &str, key: &str, rate: f64) -> ClerkApiSettings {
    let env: Env = [
        (CLERK_SECRET_KEY, key.to_owned()),
        (CLERK_API_URL, url.to_owned()),
        (CLERK_API_RATE, rate.to_string()),
    ]
    .into_iter()
    .collect();
    Settings::load(&env)
        .expect("valid Clerk API settings")
        .clerk_api
        .expect("a secret key enables the Clerk API")
}

/// Every request: logged, hooks run, a scripted failure taken, then the key and version checked.
async fn receive(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    // In a block: the closure borrows the request, whose body is not `Sync`, so it must not
    // live across an await.
    let logged = {
        let header = |name: &str| {
            request
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        LoggedRequest {
            method: request.method().to_string(),
            path: request.uri().path().to_owned(),
            query: Query::try_from_uri(request.uri())
                .map(|Query(query)| query)
                .unwrap_or_default(),
            authorization: header("authorization"),
            api_version: header("clerk-api-version"),
        }
    };
    let n = {
        let mut log = shared.log.lock().unwrap();
        log.push(logged.clone());
        log.len()
    };
    let due: Vec<Hook> = {
        let mut hooks = shared.hooks.lock().unwrap();
        let (due, later) = hooks.drain(..).partition(|(at, _)| *at == n);
        *hooks = later;
        due.into_iter().map(|(_, hook)| hook).collect()
    };
    for hook in due {
        hook(&mut shared.data.lock().unwrap());
    }
    let failure = shared.failures.lock().unwrap().pop_front();
    match failure {
        Some(Failure::RateLimited { retry_after_secs }) => {
            let mut response = clerk_error(StatusCode::TOO_MANY_REQUESTS, "too_many_requests");
            response
                .headers_mut()
                .insert("retry-after", retry_after_secs.into());
            return response;
        }
        Some(Failure::Status(status)) => {
            return clerk_error(
                StatusCode::from_u16(status).unwrap(),
                "internal_clerk_error",
            );
        }
        Some(Failure::Delay(delay)) => tokio::time::sleep(delay).await,
        None => {}
    }
    if logged.authorization != Some(format!("Bearer {}", shared.key)) {
        return clerk_error(StatusCode::UNAUTHORIZED, "authentication_invalid");
    }
    if !logged
        .api_version
        .is_some_and(|version| VERSIONS.contains(&version.as_str()))
    {
        return clerk_error(StatusCode::BAD_REQUEST, "invalid_api_version");
    }
    next.run(request).await
}

type Params = Query<Vec<(String, String)>>;

async fn list_users(State(shared): State<Arc<Shared>>, Query(params): Params) -> Response {
    let data = shared.data.lock().unwrap();
    let listing = Listing {
        scope: Scope::All,
        filter: Some(("user_id", Field::Id)),
        created_at_filters: true,
        counted: false,
    };
    match listing.page(&data.users, &params) {
        Ok((items, _)) => json_text(format!("[{}]", items.join(","))),
        Err((status, code)) => clerk_error(status, code),
    }
}

async fn get_user(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    object_or_404(shared.data.lock().unwrap().users.by_id.get(&id))
}

async fn list_organizations(State(shared): State<Arc<Shared>>, Query(params): Params) -> Response {
    let data = shared.data.lock().unwrap();
    // `user_id=`: the organizations any of these users is a member of.
    let Some(members) = IdFilter::parse(&params, "user_id") else {
        return clerk_error(StatusCode::UNPROCESSABLE_ENTITY, "form_param_value_invalid");
    };
    let scope = if members.is_empty() {
        Scope::All
    } else {
        let ids: BTreeSet<String> = data
            .memberships
            .by_id
            .values()
            .filter(|membership| members.admits(&membership.user_id))
            .map(|membership| membership.organization_id.clone())
            .collect();
        Scope::Ids(ids.into_iter().collect())
    };
    let listing = Listing {
        scope,
        filter: Some(("organization_id", Field::Id)),
        created_at_filters: false,
        counted: true,
    };
    list(listing.page(&data.organizations, &params))
}

async fn get_organization(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    object_or_404(shared.data.lock().unwrap().organizations.by_id.get(&id))
}

async fn list_organization_memberships(
    State(shared): State<Arc<Shared>>,
    Path(org_id): Path<String>,
    Query(params): Params,
) -> Response {
    let data = shared.data.lock().unwrap();
    if !data.organizations.by_id.contains_key(&org_id) {
        return clerk_error(StatusCode::NOT_FOUND, "resource_not_found");
    }
    let listing = Listing {
        scope: Scope::Organization(&org_id),
        filter: Some(("user_id", Field::User)),
        created_at_filters: true,
        counted: true,
    };
    list(listing.page(&data.memberships, &params))
}

async fn list_memberships(State(shared): State<Arc<Shared>>, Query(params): Params) -> Response {
    let data = shared.data.lock().unwrap();
    let listing = Listing {
        scope: Scope::All,
        filter: None,
        created_at_filters: false,
        counted: true,
    };
    list(listing.page(&data.memberships, &params))
}

async fn list_user_memberships(
    State(shared): State<Arc<Shared>>,
    Path(user_id): Path<String>,
    Query(mut params): Params,
) -> Response {
    let data = shared.data.lock().unwrap();
    // The spec offers `limit` and `offset` only.
    params.retain(|(key, _)| key == "limit" || key == "offset");
    let ids: Vec<String> = data
        .memberships
        .by_id
        .iter()
        .filter(|(_, membership)| membership.user_id == user_id)
        .map(|(id, _)| id.clone())
        .collect();
    let listing = Listing {
        scope: Scope::Ids(ids),
        filter: None,
        created_at_filters: false,
        counted: true,
    };
    list(listing.page(&data.memberships, &params))
}

/// `{data, total_count}`, as every list but users answers.
fn list(page: Result<(Vec<&str>, usize), (StatusCode, &'static str)>) -> Response {
    match page {
        Ok((data, total_count)) => json_text(format!(
            r#"{{"data":[{}],"total_count":{total_count}}}"#,
            data.join(",")
        )),
        Err((status, code)) => clerk_error(status, code),
    }
}

/// Which items a list may return before its parameters are applied.
enum Scope<'a> {
    All,
    /// An organization's memberships.
    Organization(&'a str),
    /// These ids only.
    Ids(Vec<String>),
}

/// What an id filter parameter matches: the item's id, or a membership's user.
#[derive(Clone, Copy)]
enum Field {
    Id,
    User,
}

/// One list endpoint: its scope, the id filter it takes, whether it takes `created_at_after` and
/// `created_at_before`, and whether it answers a `total_count` (counting what a filter admits
/// walks every match: the users list, a plain array, does not).
struct Listing<'a> {
    scope: Scope<'a>,
    filter: Option<(&'static str, Field)>,
    created_at_filters: bool,
    counted: bool,
}

type Key<'t> = (i64, &'t str);

impl Listing<'_> {
    /// Ordered (by `created_at`, ties by id), filtered, then `offset` and `limit` applied: the
    /// page's JSON texts, and how many matched in all; or the status and Clerk error code
    /// refusing the parameters.
    fn page<'t>(
        &self,
        table: &'t Table,
        params: &[(String, String)],
    ) -> Result<(Vec<&'t str>, usize), (StatusCode, &'static str)> {
        let bad = || (StatusCode::BAD_REQUEST, "form_param_format_invalid");
        let (after, before) = if self.created_at_filters {
            (
                int_param(params, "created_at_after").map_err(|_| bad())?,
                int_param(params, "created_at_before").map_err(|_| bad())?,
            )
        } else {
            (None, None)
        };
        let filter = match self.filter {
            Some((name, field)) => Some((
                IdFilter::parse(params, name)
                    .ok_or((StatusCode::UNPROCESSABLE_ENTITY, "form_param_value_invalid"))?,
                field,
            )),
            None => None,
        };
        let descending = match param(params, "order_by").unwrap_or("-created_at") {
            "created_at" | "+created_at" => false,
            "-created_at" => true,
            // Clerk orders by other fields too; nothing here needs them.
            _ => return Err((StatusCode::UNPROCESSABLE_ENTITY, "unsupported_order_by")),
        };
        let limit = match int_param(params, "limit").map_err(|_| bad())? {
            None => DEFAULT_LIMIT,
            Some(limit) if limit < 1 => return Err(bad()),
            // The real API's quirk: no error, just its default.
            Some(limit) if limit as usize > MAX_LIMIT => DEFAULT_LIMIT,
            Some(limit) => limit as usize,
        };
        let offset = match int_param(params, "offset").map_err(|_| bad())? {
            Some(offset) if offset < 0 => return Err(bad()),
            offset => offset.unwrap_or(0) as usize,
        };
        // Strict bounds, as Clerk's: after < created_at < before.
        let low = after.map_or(i64::MIN, |after| after.saturating_add(1));
        let high = before.unwrap_or(i64::MAX);
        let admits = |(created_at, id): &Key<'t>| {
            *created_at >= low
                && *created_at < high
                && filter.as_ref().is_none_or(|(filter, field)| {
                    filter.admits(match field {
                        Field::Id => id,
                        Field::User => &table.by_id[*id].user_id,
                    })
                })
        };
        let keys = || -> Box<dyn DoubleEndedIterator<Item = Key<'t>> + '_> {
            let range = (low, String::new())..(high, String::new());
            match &self.scope {
                Scope::All => match &filter {
                    // Looked up by id rather than walked: the deletion check's lists.
                    Some((filter, Field::Id)) if !filter.include.is_empty() => {
                        Box::new(sorted_keys(table, filter.include.iter()).into_iter())
                    }
                    _ => Box::new(
                        table
                            .by_created
                            .range(range)
                            .map(|(created_at, id)| (*created_at, id.as_str())),
                    ),
                },
                Scope::Organization(organization) => Box::new(
                    table
                        .by_organization
                        .range(
                            (organization.to_string(), low, String::new())
                                ..(organization.to_string(), high, String::new()),
                        )
                        .map(|(_, created_at, id)| (*created_at, id.as_str())),
                ),
                Scope::Ids(ids) => Box::new(sorted_keys(table, ids.iter()).into_iter()),
            }
        };
        let unfiltered = matches!(self.scope, Scope::All)
            && low == i64::MIN
            && high == i64::MAX
            && filter.as_ref().is_none_or(|(filter, _)| filter.is_empty());
        let total = if !self.counted {
            0
        } else if unfiltered {
            table.by_id.len()
        } else {
            keys().filter(admits).count()
        };
        let matching = keys().filter(admits);
        let ordered: Box<dyn Iterator<Item = Key<'t>>> = if descending {
            Box::new(matching.rev())
        } else {
            Box::new(matching)
        };
        let page = ordered
            .skip(offset)
            .take(limit)
            .map(|(_, id)| &*table.by_id[id].json)
            .collect();
        Ok((page, total))
    }
}

/// The keys of the ids present in `table`, in order.
fn sorted_keys<'t, 'i>(table: &'t Table, ids: impl Iterator<Item = &'i String>) -> Vec<Key<'t>> {
    let mut keys: Vec<Key<'t>> = ids
        .filter_map(|id| {
            table
                .by_id
                .get_key_value(id)
                .map(|(id, entry)| (entry.created_at, id.as_str()))
        })
        .collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// An id filter: `name=a&name=b` includes, a `-` prefix excludes; none means everything.
struct IdFilter {
    include: Vec<String>,
    exclude: Vec<String>,
}

impl IdFilter {
    fn parse(params: &[(String, String)], name: &str) -> Option<Self> {
        let values: Vec<&str> = params
            .iter()
            .filter(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
            .collect();
        if values.len() > MAX_FILTER_VALUES {
            return None;
        }
        let mut filter = Self {
            include: Vec::new(),
            exclude: Vec::new(),
        };
        for value in values {
            match value.strip_prefix('-') {
                Some(excluded) => filter.exclude.push(excluded.to_owned()),
                None => filter
                    .include
                    .push(value.strip_prefix('+').unwrap_or(value).to_owned()),
            }
        }
        Some(filter)
    }

    fn is_empty(&self) -> bool {
        self.include.is_empty() && self.exclude.is_empty()
    }

    fn admits(&self, id: &str) -> bool {
        (self.include.is_empty() || self.include.iter().any(|i| i == id))
            && !self.exclude.iter().any(|e| e == id)
    }
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

fn int_param(params: &[(String, String)], name: &str) -> Result<Option<i64>, ()> {
    param(params, name)
        .map(|value| value.parse::<i64>().map_err(|_| ()))
        .transpose()
}

fn created_at(item: &Value) -> i64 {
    item["created_at"].as_i64().unwrap_or_default()
}

fn object_or_404(entry: Option<&Entry>) -> Response {
    match entry {
        Some(entry) => json_text(entry.json.to_string()),
        None => clerk_error(StatusCode::NOT_FOUND, "resource_not_found"),
    }
}

fn json_text(body: String) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Clerk's error body (`ClerkErrors`).
fn clerk_error(status: StatusCode, code: &str) -> Response {
    let message = if status == StatusCode::NOT_FOUND {
        "not found"
    } else {
        code
    };
    (
        status,
        Json(json!({"errors": [{"code": code, "message": message}]})),
    )
        .into_response()
}
