//! Sweeps over every user, organization and membership, page by page, with Batch patience.
//!
//! Clerk lists cannot be read as a snapshot: items are created and deleted while a sweep runs,
//! and bulk imports give many items the same `created_at` millisecond. Each kind is paged so that
//! nobody who exists for the whole sweep is skipped, and items read twice are dropped by id; and
//! so that no page costs Clerk more the further the sweep has gone, wherever the API allows it
//! (spec `bapi/2026-05-12.yml`):
//!
//! - **Users**: a keyset on `created_at` (`Keyset`), `GET /v1/users`.
//! - **Memberships**: the same keyset within each organization,
//!   `GET /v1/organizations/{id}/memberships`, which takes `order_by=+created_at` and
//!   `created_at_after` (the instance-wide `GET /v1/organization_memberships` takes only `limit`
//!   and `offset`, whose cost grows with the offset). The organizations are walked as below.
//! - **Organizations**: `GET /v1/organizations` takes only `limit` and `offset` (no cursor, no
//!   `created_at` filter), so they page by offset (`OffsetWalk`), the one walk here whose pages
//!   grow dearer with its length.
//!
//! A sweep stops at the first page with fewer than 500 items. A full page with nothing new
//! means the API ignored the paging parameters: that is refused rather than looped on.

use std::collections::{HashSet, VecDeque};

use serde_json::Value;

use super::list::{Object, array_of_objects, item_id, list_data};
use super::{ClerkApi, ClerkApiError, PAGE_LIMIT, Patience};

/// Offset pages overlap by this much, so that this many deletions behind the offset between two
/// pages skip nobody.
const OFFSET_OVERLAP: usize = 50;

/// A sweep over every item of one kind; see the module.
pub struct Sweep {
    api: ClerkApi,
    walk: Walk,
    complete: bool,
}

enum Walk {
    Users(Keyset),
    Organizations(OffsetWalk),
    Memberships {
        organizations: OffsetWalk,
        /// Organizations listed and not visited yet: at most a page of them.
        queue: VecDeque<String>,
        /// The organization whose memberships are being read.
        current: Option<(String, Keyset)>,
    },
}

impl Sweep {
    pub(super) fn users(api: ClerkApi) -> Self {
        Self::new(api, Walk::Users(Keyset::default()))
    }

    pub(super) fn organizations(api: ClerkApi) -> Self {
        Self::new(api, Walk::Organizations(OffsetWalk::new("organizations")))
    }

    pub(super) fn memberships(api: ClerkApi) -> Self {
        let walk = Walk::Memberships {
            organizations: OffsetWalk::new("organizations"),
            queue: VecDeque::new(),
            current: None,
        };
        Self::new(api, walk)
    }

    fn new(api: ClerkApi, walk: Walk) -> Self {
        Self {
            api,
            walk,
            complete: false,
        }
    }

    /// The next page of items never returned before by this sweep (deduplicated by `id`);
    /// Ok(None) when the sweep is complete. A page may be empty while the sweep is not complete.
    pub async fn next_page(&mut self) -> Result<Option<Vec<Object>>, ClerkApiError> {
        if self.complete {
            return Ok(None);
        }
        let api = &self.api;
        let (page, complete) = match &mut self.walk {
            Walk::Users(keyset) => {
                let url = api.url(&["users"], &keyset.query());
                let page = keyset_page(api, url, "users", |body| array_of_objects(body, "users"))
                    .await?
                    .ok_or_else(|| not_found("users"))?;
                let raw_len = page.len();
                let fresh = keyset.fresh(page, "users")?;
                (fresh, raw_len < PAGE_LIMIT)
            }
            Walk::Organizations(walk) => match walk.next(api).await? {
                Some(page) => (page, walk.complete),
                None => (Vec::new(), true),
            },
            Walk::Memberships {
                organizations,
                queue,
                current,
            } => memberships_page(api, organizations, queue, current).await?,
        };
        self.complete = complete;
        Ok(Some(page))
    }
}

/// Up to a page of memberships, read organization by organization; and whether that was all.
/// Small organizations are gathered into one page, so that reconcile handles pages, not
/// organizations.
async fn memberships_page(
    api: &ClerkApi,
    organizations: &mut OffsetWalk,
    queue: &mut VecDeque<String>,
    current: &mut Option<(String, Keyset)>,
) -> Result<(Vec<Object>, bool), ClerkApiError> {
    let mut page = Vec::new();
    loop {
        if let Some((organization, keyset)) = current {
            let url = api.url(
                &["organizations", organization.as_str(), "memberships"],
                &keyset.query(),
            );
            let what = "organization memberships";
            let listed = keyset_page(api, url, what, |body| list_data(body, what)).await?;
            // 404: the organization was deleted since it was listed, and its memberships with it.
            let Some(listed) = listed else {
                *current = None;
                continue;
            };
            let raw_len = listed.len();
            page.extend(keyset.fresh(listed, what)?);
            if raw_len < PAGE_LIMIT {
                *current = None;
            }
            if page.len() >= PAGE_LIMIT {
                return Ok((page, false));
            }
        } else if let Some(organization) = queue.pop_front() {
            // Only an id Clerk could have goes into a path.
            if crate::sync::item::ItemId::parse(&organization).is_ok_and(|id| id.is_clerk_shaped())
            {
                *current = Some((organization, Keyset::default()));
            }
        } else {
            match organizations.next(api).await? {
                Some(listed) => queue.extend(
                    listed
                        .iter()
                        .filter_map(|organization| item_id(organization).map(str::to_owned)),
                ),
                None => return Ok((page, true)),
            }
        }
    }
}

/// One page of a keyset walk: the list's items, `None` for Clerk's 404.
async fn keyset_page(
    api: &ClerkApi,
    url: reqwest::Url,
    what: &str,
    items: impl Fn(Value) -> Result<Vec<Object>, ClerkApiError>,
) -> Result<Option<Vec<Object>>, ClerkApiError> {
    match api.get_json(url, Patience::Batch).await? {
        Some(body) => items(body).map(Some).map_err(|e| match e {
            ClerkApiError::Rejected(reason) => ClerkApiError::Rejected(format!("{what}: {reason}")),
            other => other,
        }),
        None => Ok(None),
    }
}

fn not_found(path: &str) -> ClerkApiError {
    ClerkApiError::Rejected(format!("/v1/{path} is not found; is the URL right?"))
}

/// A keyset on `created_at`, for the lists that take `order_by=+created_at&limit=500` and
/// `created_at_after` (users, in every API version; an organization's memberships).
///
/// `created_at_after` is strictly greater, so asking for `created_at_after = b` after a page
/// ending at `b` would skip the items of `b` that did not fit in that page. Instead the walk keeps
/// the boundary `b` (the last `created_at` seen) and the ids already returned at `b`, asks for
/// `created_at_after = b - 1` (everything at `b` or later) with `offset = k - 1` for `k` ids seen
/// at `b`: it re-reads one known item, so that one item at `b` deleted meanwhile cannot shift an
/// unseen one out of reach, and drops what it has seen. A deletion only shifts items at `b`;
/// creations land after `b`. It assumes Clerk orders ties the same way on every request, and two
/// deletions at `b` between the same two pages could still skip one item. Each page's cost is
/// bounded by the size of one tie, not by how far the walk has gone. Memory: the ids at the
/// boundary only (a large bulk import's worth at most). Users' `starting_after` cursor would do
/// as well, but it appeared in the spec only in 2026-08 and is not in every API version.
#[derive(Default)]
struct Keyset {
    boundary: Option<i64>,
    at_boundary: HashSet<String>,
}

impl Keyset {
    fn query(&self) -> Vec<(&'static str, String)> {
        let mut query = vec![
            ("order_by", "+created_at".to_owned()),
            ("limit", PAGE_LIMIT.to_string()),
        ];
        if let Some(b) = self.boundary {
            query.push(("created_at_after", (b - 1).to_string()));
            let skip = self.at_boundary.len().saturating_sub(1);
            if skip > 0 {
                query.push(("offset", skip.to_string()));
            }
        }
        query
    }

    /// The page's items not returned before. A full page with nothing new is refused.
    fn fresh(&mut self, page: Vec<Object>, what: &str) -> Result<Vec<Object>, ClerkApiError> {
        let raw_len = page.len();
        let mut fresh = Vec::with_capacity(raw_len);
        let mut previous = None;
        for item in page {
            let created_at = item
                .get("created_at")
                .and_then(Value::as_i64)
                .ok_or_else(|| {
                    ClerkApiError::Rejected(format!("an item of {what} has no integer created_at"))
                })?;
            // The keyset is only sound if the API honoured both the filter and the order.
            if self.boundary.is_some_and(|b| created_at < b)
                || previous.is_some_and(|p| created_at < p)
            {
                return Err(ClerkApiError::Rejected(format!(
                    "{what} came back out of created_at order or before created_at_after"
                )));
            }
            previous = Some(created_at);
            let id = item_id(&item).expect("checked by the list").to_owned();
            if self.boundary == Some(created_at) {
                if !self.at_boundary.insert(id) {
                    continue;
                }
            } else {
                self.boundary = Some(created_at);
                self.at_boundary.clear();
                self.at_boundary.insert(id);
            }
            fresh.push(item);
        }
        if raw_len >= PAGE_LIMIT && fresh.is_empty() {
            return Err(ignored_paging());
        }
        Ok(fresh)
    }
}

fn ignored_paging() -> ClerkApiError {
    ClerkApiError::Rejected(
        "a full page held nothing new: the API ignored the paging parameters".into(),
    )
}

/// An offset walk over a `{data, total_count}` list, for a list that offers nothing else.
///
/// Read in ascending `created_at` order, so creations land at the end rather than shifting rows,
/// and each page starts 450 items after the previous one (an overlap of 50): up to 50 deletions
/// behind the offset between two pages skip nobody. A repeat can only come from the previous
/// page's overlap, so memory is that page's ids: flat however long the list. Each page costs
/// Clerk more than the one before (the API walks and discards `offset` rows).
struct OffsetWalk {
    path: &'static str,
    offset: usize,
    /// The previous page's ids.
    seen: HashSet<String>,
    complete: bool,
}

impl OffsetWalk {
    fn new(path: &'static str) -> Self {
        Self {
            path,
            offset: 0,
            seen: HashSet::new(),
            complete: false,
        }
    }

    /// The next page's new items; `None` once complete.
    async fn next(&mut self, api: &ClerkApi) -> Result<Option<Vec<Object>>, ClerkApiError> {
        if self.complete {
            return Ok(None);
        }
        let (limit, offset) = (PAGE_LIMIT.to_string(), self.offset.to_string());
        let query = [
            ("order_by", "+created_at"),
            ("limit", limit.as_str()),
            ("offset", offset.as_str()),
        ];
        let url = api.url(&[self.path], &query);
        let body = api
            .get_json(url, Patience::Batch)
            .await?
            .ok_or_else(|| not_found(self.path))?;
        let page = list_data(body, self.path)?;
        let raw_len = page.len();
        let previous = std::mem::take(&mut self.seen);
        let mut fresh = Vec::with_capacity(raw_len);
        for item in page {
            let id = item_id(&item).expect("checked by list_data").to_owned();
            let repeated = previous.contains(&id);
            if self.seen.insert(id) && !repeated {
                fresh.push(item);
            }
        }
        self.offset += PAGE_LIMIT - OFFSET_OVERLAP;
        self.complete = raw_len < PAGE_LIMIT;
        if !self.complete && fresh.is_empty() {
            return Err(ignored_paging());
        }
        Ok(Some(fresh))
    }
}
