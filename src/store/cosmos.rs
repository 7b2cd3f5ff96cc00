//! The Cosmos DB store: point reads and conditional writes by id in a container partitioned by
//! `/id`, through one SDK client shared by every request.
//!
//! A create fails with 409 when the id exists, a replace with 412 when the ETag moved on (or 404
//! when the item went away): both are `ConditionFailed`, and the caller reads and decides again.
//! Tombstones carry a per-item `ttl`; Cosmos stops returning them once it passes.

mod connection;
mod credential;
mod errors;

use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use azure_core::credentials::Secret;
use azure_data_cosmos::diagnostics::DiagnosticsContext;
use azure_data_cosmos::options::{ItemWriteOptions, Precondition};
use azure_data_cosmos::{
    AccountEndpoint, AccountReference, CosmosError, CosmosRuntime, FeedScope, Query,
};
use futures::{StreamExt, TryStreamExt};
use serde_json::Value;

use self::connection::{Connection, OPERATION_TIMEOUT, Target};
use crate::store::{
    Condition, CosmosAuth, CosmosSettings, ETag, Items, ListFilter, RequestCharge, Store,
    StoreError, Stored,
};
use crate::sync::document::{self, Document, State};
use crate::sync::item::{ItemId, ItemRef, Kind};

/// How long a delivery waits for the client to finish connecting before it answers 503.
const CONNECT_WAIT: Duration = Duration::from_secs(4);
/// Listings and reconcile are run by a person or a timer, which would rather wait for a cold
/// sign-in.
const LIST_CONNECT_WAIT: Duration = Duration::from_secs(30);
/// Past the SDK's own end-to-end budget, in case a stage it does not time (such as a token
/// request) hangs.
const OPERATION_BACKSTOP: Duration = OPERATION_TIMEOUT.saturating_add(Duration::from_millis(500));
/// Properties Cosmos adds to every item; the ETag is handed back separately.
const SYSTEM_PROPERTIES: [&str; 5] = ["_rid", "_self", "_etag", "_attachments", "_ts"];
/// Only what `document::state` reads, so that reconcile's scan of every item costs little.
const STATES_QUERY: &str = "SELECT c.id, c.type, c.of, c.clerkUpdatedAt FROM c";
/// The same for the items of some ids, which come as one array parameter.
const STATES_OF_QUERY: &str =
    "SELECT c.id, c.type, c.of, c.clerkUpdatedAt FROM c WHERE ARRAY_CONTAINS(@ids, c.id)";

pub struct CosmosStore {
    connection: Connection,
}

impl CosmosStore {
    /// Returns at once: connecting happens in the background (see `connection`).
    pub fn new(settings: &CosmosSettings) -> Result<Self, StoreError> {
        Self::open(settings, None)
    }

    /// Sends every request through `runtime` rather than the SDK's process-wide one: how the
    /// tests put the SDK's in-memory emulator, with injected faults, under the whole pipeline.
    #[doc(hidden)]
    pub fn with_runtime(
        settings: &CosmosSettings,
        runtime: CosmosRuntime,
    ) -> Result<Self, StoreError> {
        Self::open(settings, Some(runtime))
    }

    fn open(settings: &CosmosSettings, runtime: Option<CosmosRuntime>) -> Result<Self, StoreError> {
        let target = Target {
            account: account(&settings.auth)?,
            database: settings.database.clone(),
            container: settings.container.clone(),
            runtime,
        };
        Ok(Self {
            connection: Connection::open(target),
        })
    }
}

fn account(auth: &CosmosAuth) -> Result<AccountReference, StoreError> {
    match auth {
        CosmosAuth::Key { endpoint, key } => Ok(AccountReference::with_authentication_key(
            endpoint_url(endpoint)?,
            Secret::new(key.expose().to_owned()),
        )),
        CosmosAuth::Identity {
            endpoint,
            client_id,
            managed_identity,
        } => {
            let source = credential::source(*managed_identity, client_id.as_deref());
            tracing::debug!(?source, "Cosmos DB credential");
            Ok(AccountReference::with_credential(
                endpoint_url(endpoint)?,
                credential::credential(&source)?,
            ))
        }
    }
}

fn endpoint_url(endpoint: &str) -> Result<AccountEndpoint, StoreError> {
    endpoint
        .parse()
        .map_err(|e| StoreError::Rejected(format!("invalid Cosmos DB endpoint: {e}")))
}

#[async_trait]
impl Store for CosmosStore {
    async fn read(&self, id: &ItemId) -> Result<(Option<Stored>, RequestCharge), StoreError> {
        let container = self.connection.container(CONNECT_WAIT).await?;
        let result = bounded(
            "read",
            container.read_item(partition_key(id), id.as_str(), None),
        );
        match result.await {
            Ok(response) => {
                let charge = charge(&response.diagnostics());
                let header_etag = response.headers().etag().map(ToString::to_string);
                let document = response
                    .into_body()
                    .into_single::<Document>()
                    .map_err(|e| StoreError::Rejected(format!("unreadable item {id}: {e}")))?;
                let (document, body_etag) = without_system_properties(document);
                let etag = header_etag.or(body_etag).ok_or_else(|| {
                    StoreError::Rejected(format!("item {id} came back without an ETag"))
                })?;
                log("read", id, charge, "found");
                Ok((
                    Some(Stored {
                        document,
                        etag: ETag(etag),
                    }),
                    charge,
                ))
            }
            Err(error) if error.status().is_not_found() => {
                let charge = error_charge(&error);
                log("read", id, charge, "not_found");
                Ok((None, charge))
            }
            Err(error) => Err(failed("read", id, &error)),
        }
    }

    async fn write(
        &self,
        id: &ItemId,
        document: &Document,
        condition: &Condition,
    ) -> Result<RequestCharge, StoreError> {
        let container = self.connection.container(CONNECT_WAIT).await?;
        let (operation, result) = match condition {
            Condition::Absent => {
                let create = container.create_item(partition_key(id), id.as_str(), document, None);
                ("create", bounded("create", create).await)
            }
            Condition::Matches(etag) => {
                let options = ItemWriteOptions::default()
                    .with_precondition(Precondition::if_match(etag.0.clone()));
                let replace =
                    container.replace_item(partition_key(id), id.as_str(), document, Some(options));
                ("replace", bounded("replace", replace).await)
            }
        };
        match result {
            Ok(response) => {
                let charge = charge(&response.diagnostics());
                log(operation, id, charge, "written");
                Ok(charge)
            }
            Err(error) if lost_race(condition, &error) => {
                log(operation, id, error_charge(&error), "condition_failed");
                Err(StoreError::ConditionFailed)
            }
            Err(error) => Err(failed(operation, id, &error)),
        }
    }

    fn list(&self, filter: ListFilter) -> Items<'_, Document> {
        let mut query = Query::from("SELECT * FROM c WHERE c.type = @type")
            .with_parameter("@type", filter.kind.as_str());
        let links = [
            ("organizationId", "@organization", filter.organization_id),
            ("userId", "@user", filter.user_id),
        ];
        for (field, parameter, value) in links {
            if let Some(value) = value {
                query = query.and_then(|q| {
                    q.append_text(&format!(" AND c.{field} = {parameter}"))
                        .with_parameter(parameter, value.as_str())
                });
            }
        }
        self.query(query)
            .map_ok(|item: Document| without_system_properties(item).0)
            .boxed()
    }

    /// Ids only (`SELECT VALUE c.id`): the cascade needs no more, and every user delete asks.
    async fn memberships_of(&self, parent: &ItemRef) -> Result<Vec<ItemId>, StoreError> {
        let link = match parent.kind {
            Kind::Organization => "organizationId",
            Kind::User => "userId",
            Kind::Membership => return Ok(Vec::new()),
        };
        let query = Query::from(format!(
            "SELECT VALUE c.id FROM c WHERE c.{link} = @parent AND c.type = @type"
        ))
        .with_parameter("@parent", parent.id.as_str())
        .and_then(|query| query.with_parameter("@type", Kind::Membership.as_str()));
        self.query::<String>(query)
            // An id that is not a Clerk id was written by something else: not a membership.
            .try_filter_map(|id| async move { Ok(ItemId::parse(&id).ok()) })
            .try_collect()
            .await
    }

    fn states(&self) -> Items<'_, (String, State)> {
        self.query(Ok(Query::from(STATES_QUERY)))
            .and_then(|item: Document| async move { id_and_state(&item) })
            .boxed()
    }

    async fn states_of(
        &self,
        ids: &[ItemId],
    ) -> Result<(Vec<(String, State)>, RequestCharge), StoreError> {
        if ids.is_empty() {
            return Ok((Vec::new(), RequestCharge::default()));
        }
        let ids: Vec<&str> = ids.iter().map(ItemId::as_str).collect();
        let query = Query::from(STATES_OF_QUERY).with_parameter("@ids", ids);
        let classify = |error: CosmosError| errors::classify("query", &error);
        let container = self.connection.container(LIST_CONNECT_WAIT).await?;
        let mut pages = container
            .query_items::<Document>(query.map_err(classify)?, FeedScope::full_container(), None)
            .await
            .map_err(classify)?
            .into_pages();
        let (mut states, mut charge) = (Vec::new(), RequestCharge::default());
        while let Some(page) = bounded("query", pages.try_next()).await.map_err(classify)? {
            charge += self::charge(&page.diagnostics());
            for item in page.items() {
                states.push(id_and_state(item)?);
            }
        }
        Ok((states, charge))
    }
}

impl CosmosStore {
    /// Every page of a cross-partition query, item by item.
    fn query<T: serde::de::DeserializeOwned + Send + 'static>(
        &self,
        query: azure_data_cosmos::Result<Query>,
    ) -> Items<'_, T> {
        let classify = |error: CosmosError| errors::classify("query", &error);
        futures::stream::once(async move {
            let container = self.connection.container(LIST_CONNECT_WAIT).await?;
            container
                .query_items::<T>(query.map_err(classify)?, FeedScope::full_container(), None)
                .await
                .map_err(classify)
        })
        .map_ok(move |items| items.map_err(classify))
        .try_flatten()
        .boxed()
    }
}

/// A projection's id and the state it reads as.
fn id_and_state(item: &Document) -> Result<(String, State), StoreError> {
    match item.get("id").and_then(Value::as_str) {
        Some(id) => Ok((id.to_owned(), document::state(item))),
        None => Err(StoreError::Rejected(
            "an item came back without an id".into(),
        )),
    }
}

/// Each item is its own logical partition, keyed by its id (the container's `/id`).
fn partition_key(id: &ItemId) -> String {
    id.as_str().to_owned()
}

/// The call, or a timeout error once the backstop passes.
async fn bounded<T>(
    operation: &str,
    call: impl Future<Output = Result<T, CosmosError>>,
) -> Result<T, CosmosError> {
    tokio::time::timeout(OPERATION_BACKSTOP, call)
        .await
        .unwrap_or_else(|_| Err(errors::timed_out(operation, OPERATION_BACKSTOP)))
}

/// 409 on a create: the id exists. 412 on a replace: someone wrote since our read. 404 on a
/// replace: the item went away since (its tombstone expired, or the application deleted it).
fn lost_race(condition: &Condition, error: &CosmosError) -> bool {
    let status = error.status();
    match condition {
        Condition::Absent => status.is_conflict(),
        Condition::Matches(_) => status.is_precondition_failed() || status.is_not_found(),
    }
}

fn failed(operation: &str, id: &ItemId, error: &CosmosError) -> StoreError {
    log(operation, id, error_charge(error), "failed");
    errors::classify(operation, error)
}

/// Everything the operation cost, retries included.
fn charge(diagnostics: &DiagnosticsContext) -> RequestCharge {
    RequestCharge(diagnostics.total_request_charge().into())
}

fn error_charge(error: &CosmosError) -> RequestCharge {
    error
        .diagnostics()
        .map_or_else(RequestCharge::default, |d| charge(&d))
}

fn log(operation: &str, id: &ItemId, charge: RequestCharge, outcome: &str) {
    tracing::debug!(
        operation,
        item_id = %id,
        request_charge = charge.0,
        outcome,
        "cosmos"
    );
}

/// The item as the application wrote it, and the `_etag` it carried.
fn without_system_properties(mut document: Document) -> (Document, Option<String>) {
    let etag = match document.get("_etag") {
        Some(Value::String(etag)) => Some(etag.clone()),
        _ => None,
    };
    for property in SYSTEM_PROPERTIES {
        document.remove(property);
    }
    (document, etag)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn system_properties_are_stripped_and_the_etag_kept() {
        let Value::Object(item) = json!({
            "id": "user_1", "role": "ADMIN", "ttl": 60, "_private": 1,
            "_rid": "AAAA", "_self": "dbs/x/colls/y/docs/z", "_etag": "\"0a00\"",
            "_attachments": "attachments/", "_ts": 1700000000
        }) else {
            unreachable!()
        };
        let (document, etag) = without_system_properties(item);
        assert_eq!(
            Value::Object(document),
            json!({"id": "user_1", "role": "ADMIN", "ttl": 60, "_private": 1})
        );
        assert_eq!(etag.as_deref(), Some("\"0a00\""));
    }
}
