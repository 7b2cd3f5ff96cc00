//! The embedded store for development: SQLite in WAL mode, one row per item.
//!
//! SQLite because it gives what the handler needs with no server: every write is an atomic,
//! fsynced transaction (a crash never leaves half a user), conditional writes are one statement,
//! and WAL lets `handler users get/list` read from another process while the server writes.

mod sql;
mod worker;

use std::path::Path;

use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};
use serde_json::Value;

use self::sql::{CREATE, LIVE, MEMBERSHIPS_OF_ORGANIZATION, MEMBERSHIPS_OF_USER, READ, REPLACE};
use self::worker::{Worker, classify, now_ms};
use super::{Condition, ETag, Items, ListFilter, RequestCharge, Store, StoreError, Stored};
use crate::sync::document::{self, Document, State};
use crate::sync::item::{ItemId, ItemRef, Kind};

/// The embedded store: every read and write made in turn by its own thread (`worker`).
pub struct LocalStore {
    worker: Worker,
}

impl LocalStore {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Ok(Self {
            worker: Worker::open(path)?,
        })
    }
}

#[async_trait]
impl Store for LocalStore {
    async fn read(&self, id: &ItemId) -> Result<(Option<Stored>, RequestCharge), StoreError> {
        let id = id.clone();
        let stored = self
            .worker
            .run(move |inner| {
                let connection = inner.connection();
                let row: Option<(String, i64)> = connection
                    .prepare_cached(READ)
                    .and_then(|mut statement| {
                        statement
                            .query_row(
                                rusqlite::named_params! {":id": id.as_str(), ":now": now_ms()},
                                |row| Ok((row.get(0)?, row.get(1)?)),
                            )
                            .optional()
                    })
                    .map_err(classify)?;
                row.map(|(json, version)| {
                    Ok(Stored {
                        document: parse_document(&json)?,
                        etag: ETag(version.to_string()),
                    })
                })
                .transpose()
            })
            .await?;
        Ok((stored, RequestCharge::default()))
    }

    async fn write(
        &self,
        id: &ItemId,
        document: &Document,
        condition: &Condition,
    ) -> Result<RequestCharge, StoreError> {
        let id = id.clone();
        let json = serde_json::to_string(document)
            .map_err(|e| StoreError::Rejected(format!("cannot serialize document: {e}")))?;
        let is_user = document::state(document).is_live(Kind::User);
        let ttl_ms = document
            .get("ttl")
            .and_then(Value::as_i64)
            .map(|seconds| seconds.saturating_mul(1000));
        let condition = condition.clone();
        self.worker
            .run(move |inner| {
                inner.purge_if_due()?;
                let now = now_ms();
                let expires_at = ttl_ms.map(|ttl| now.saturating_add(ttl));
                let connection = inner.connection();
                let changed = match condition {
                    Condition::Absent => {
                        connection.prepare_cached(CREATE).and_then(|mut create| {
                            create.execute(params![id.as_str(), json, is_user, expires_at, now])
                        })
                    }
                    Condition::Matches(ETag(etag)) => {
                        let Ok(version) = etag.parse::<i64>() else {
                            return Err(StoreError::ConditionFailed);
                        };
                        connection.prepare_cached(REPLACE).and_then(|mut replace| {
                            replace.execute(params![
                                json,
                                is_user,
                                expires_at,
                                id.as_str(),
                                version,
                                now
                            ])
                        })
                    }
                }
                .map_err(classify)?;
                if changed == 1 {
                    Ok(RequestCharge::default())
                } else {
                    Err(StoreError::ConditionFailed)
                }
            })
            .await
    }

    fn list(&self, filter: ListFilter) -> Items<'_, Document> {
        let mut sql = format!(
            "SELECT document FROM items WHERE json_extract(document, '$.type') = :type AND {LIVE}"
        );
        let mut parameters = vec![(":type", Some(filter.kind.as_str().to_owned()))];
        // Only the links asked for, each compared with `=` alone: then SQLite finds the rows
        // through the link's index rather than reading every document.
        let links = [
            ("organizationId", ":organization", filter.organization_id),
            ("userId", ":user", filter.user_id),
        ];
        for (field, parameter, value) in links {
            if let Some(value) = value {
                sql.push_str(&format!(
                    " AND json_extract(document, '$.{field}') = {parameter}"
                ));
                parameters.push((parameter, Some(value.as_str().to_owned())));
            }
        }
        sql.push_str(" ORDER BY id");
        self.worker.scan(sql, parameters, |row| {
            parse_document(&row.get::<_, String>(0).map_err(classify)?)
        })
    }

    async fn states_of(
        &self,
        ids: &[ItemId],
    ) -> Result<(Vec<(String, State)>, RequestCharge), StoreError> {
        // One parameter however many ids: a JSON array, read by `json_each`.
        let ids = serde_json::to_string(&ids.iter().map(ItemId::as_str).collect::<Vec<_>>())
            .map_err(|e| StoreError::Rejected(format!("cannot serialize ids: {e}")))?;
        let states = self
            .worker
            .run(move |inner| {
                let connection = inner.connection();
                let mut statement = connection
                    .prepare_cached(&format!(
                        "SELECT id, json_extract(document, '$.type'), json_extract(document, '$.of'),
                                json_extract(document, '$.clerkUpdatedAt')
                         FROM items WHERE id IN (SELECT value FROM json_each(:ids)) AND {LIVE}"
                    ))
                    .map_err(classify)?;
                let rows = statement
                    .query_map(
                        rusqlite::named_params! {":ids": ids, ":now": now_ms()},
                        |row| {
                            // The fields `document::state` reads, and nothing else of the document.
                            let mut projection = Document::new();
                            let fields = [(1, "type"), (2, "of"), (3, "clerkUpdatedAt")];
                            for (column, field) in fields {
                                let value = match row.get::<_, rusqlite::types::Value>(column)? {
                                    rusqlite::types::Value::Text(text) => Value::from(text),
                                    rusqlite::types::Value::Integer(n) => Value::from(n),
                                    rusqlite::types::Value::Real(x) => Value::from(x),
                                    _ => continue,
                                };
                                projection.insert(field.into(), value);
                            }
                            Ok((row.get::<_, String>(0)?, document::state(&projection)))
                        },
                    )
                    .map_err(classify)?;
                rows.collect::<Result<Vec<_>, _>>().map_err(classify)
            })
            .await?;
        Ok((states, RequestCharge::default()))
    }

    /// On the store's own connection, as a read: a cascade (asked on every user delete) would
    /// otherwise open a connection, read the schema and scan every row on a thread of its own.
    async fn memberships_of(&self, parent: &ItemRef) -> Result<Vec<ItemId>, StoreError> {
        let sql = match parent.kind {
            Kind::Organization => MEMBERSHIPS_OF_ORGANIZATION,
            Kind::User => MEMBERSHIPS_OF_USER,
            Kind::Membership => return Ok(Vec::new()),
        };
        let parent = parent.id.clone();
        self.worker
            .run(move |inner| {
                let connection = inner.connection();
                let mut statement = connection.prepare_cached(sql).map_err(classify)?;
                let parameters = rusqlite::named_params! {
                    ":parent": parent.as_str(),
                    ":type": Kind::Membership.as_str(),
                    ":now": now_ms(),
                };
                let ids = statement
                    .query_map(parameters, |row| row.get::<_, String>(0))
                    .map_err(classify)?;
                let mut memberships = Vec::new();
                for id in ids {
                    // An id that is not a Clerk id was written by something else: not a membership.
                    if let Ok(id) = ItemId::parse(&id.map_err(classify)?) {
                        memberships.push(id);
                    }
                }
                Ok(memberships)
            })
            .await
    }

    fn states(&self) -> Items<'_, (String, State)> {
        let sql = format!("SELECT id, document FROM items WHERE {LIVE}");
        self.worker.scan(sql, Vec::new(), |row| {
            let id: String = row.get(0).map_err(classify)?;
            let document = parse_document(&row.get::<_, String>(1).map_err(classify)?)?;
            Ok((id, document::state(&document)))
        })
    }
}

fn parse_document(json: &str) -> Result<Document, StoreError> {
    serde_json::from_str(json)
        .map_err(|e| StoreError::Rejected(format!("stored document is not a JSON object: {e}")))
}
