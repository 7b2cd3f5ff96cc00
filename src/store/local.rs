//! The embedded store for development: SQLite in WAL mode, one row per item.
//!
//! SQLite because it gives what the handler needs with no server: every write is an atomic,
//! fsynced transaction (a crash never leaves half a user), conditional writes are one statement,
//! and WAL lets `handler users get/list` read from another process while the server writes.

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use rusqlite::{Connection, ErrorCode, OptionalExtension, params};
use serde_json::Value;

use super::{Condition, ETag, RequestCharge, Store, StoreError, Stored};
use crate::document::{self, Document, Kind};
use crate::user_id::UserId;

/// How long a write waits for another process holding the database lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How often expired tombstones are deleted (reads already treat them as absent).
const PURGE_INTERVAL: Duration = Duration::from_secs(3600);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS items (
    id         TEXT PRIMARY KEY NOT NULL,
    document   TEXT NOT NULL,
    -- A random version per write: the ETag. Random rather than a counter so that an id whose
    -- row was purged and written again never repeats a version a slow writer still holds.
    version    INTEGER NOT NULL,
    is_user    INTEGER NOT NULL,
    -- Epoch milliseconds after which the item is gone, from its `ttl`; NULL for never.
    expires_at INTEGER
);
CREATE INDEX IF NOT EXISTS items_expires_at ON items (expires_at) WHERE expires_at IS NOT NULL;
";

/// A row is live while it has no expiry or its expiry is still ahead.
const LIVE: &str = "(expires_at IS NULL OR expires_at > :now)";

pub struct LocalStore {
    inner: Arc<Inner>,
}

struct Inner {
    connection: Mutex<Connection>,
    /// When expired tombstones were last deleted; `None` until the first write, so that opening
    /// the store (as the `users` commands do) never writes.
    last_purge: Mutex<Option<Instant>>,
}

impl LocalStore {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| {
                StoreError::unavailable(format!("cannot create {}: {e}", parent.display()))
            })?;
        }
        let cannot_open = |e: rusqlite::Error| {
            StoreError::unavailable(format!("cannot open {}: {e}", path.display()))
        };
        let connection = Connection::open(path).map_err(cannot_open)?;
        connection
            .busy_timeout(BUSY_TIMEOUT)
            .and_then(|()| {
                // FULL: a write acknowledged to Svix survives a power cut, not just a crash.
                connection.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;")
            })
            .and_then(|()| connection.execute_batch(SCHEMA))
            .map_err(cannot_open)?;
        let inner = Inner {
            connection: Mutex::new(connection),
            last_purge: Mutex::new(None),
        };
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// Runs blocking SQLite work off the async threads.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || work(&inner))
            .await
            .map_err(|e| StoreError::Rejected(format!("local store task failed: {e}")))?
    }
}

impl Inner {
    fn connection(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite half-written: its transaction
        // rolls back. The connection is still good.
        self.connection
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn purge_expired(&self) -> Result<(), StoreError> {
        let purged = self
            .connection()
            .execute(
                "DELETE FROM items WHERE expires_at IS NOT NULL AND expires_at <= ?1",
                [now_ms()],
            )
            .map_err(classify)?;
        *self.last_purge.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        if purged > 0 {
            tracing::info!(purged, "removed expired tombstones from the local store");
        }
        Ok(())
    }

    fn purge_if_due(&self) -> Result<(), StoreError> {
        let due = self
            .last_purge
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_none_or(|at| at.elapsed() >= PURGE_INTERVAL);
        if due {
            self.purge_expired()?;
        }
        Ok(())
    }
}

#[async_trait]
impl Store for LocalStore {
    async fn read(&self, id: &UserId) -> Result<(Option<Stored>, RequestCharge), StoreError> {
        let id = id.clone();
        let stored = self
            .blocking(move |inner| {
                let row: Option<(String, i64)> = inner
                    .connection()
                    .query_row(
                        &format!("SELECT document, version FROM items WHERE id = :id AND {LIVE}"),
                        rusqlite::named_params! {":id": id.as_str(), ":now": now_ms()},
                        |row| Ok((row.get(0)?, row.get(1)?)),
                    )
                    .optional()
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
        id: &UserId,
        document: &Document,
        condition: &Condition,
    ) -> Result<RequestCharge, StoreError> {
        let id = id.clone();
        let json = serde_json::to_string(document)
            .map_err(|e| StoreError::Rejected(format!("cannot serialize document: {e}")))?;
        let is_user = document::kind(document) == Kind::User;
        let ttl_ms = document
            .get("ttl")
            .and_then(Value::as_i64)
            .map(|seconds| seconds.saturating_mul(1000));
        let condition = condition.clone();
        self.blocking(move |inner| {
            inner.purge_if_due()?;
            let now = now_ms();
            let expires_at = ttl_ms.map(|ttl| now.saturating_add(ttl));
            let connection = inner.connection();
            let changed = match condition {
                // Takes the place of nothing, or of an expired item not yet purged.
                Condition::Absent => connection.execute(
                    "INSERT INTO items (id, document, version, is_user, expires_at)
                     VALUES (?1, ?2, random(), ?3, ?4)
                     ON CONFLICT (id) DO UPDATE SET
                         document = excluded.document, version = excluded.version,
                         is_user = excluded.is_user, expires_at = excluded.expires_at
                     WHERE items.expires_at IS NOT NULL AND items.expires_at <= ?5",
                    params![id.as_str(), json, is_user, expires_at, now],
                ),
                Condition::Matches(ETag(etag)) => {
                    let Ok(version) = etag.parse::<i64>() else {
                        return Err(StoreError::ConditionFailed);
                    };
                    connection.execute(
                        "UPDATE items SET document = ?1, version = random(), is_user = ?2,
                             expires_at = ?3
                         WHERE id = ?4 AND version = ?5
                           AND (expires_at IS NULL OR expires_at > ?6)",
                        params![json, is_user, expires_at, id.as_str(), version, now],
                    )
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

    async fn list_users(&self) -> Result<Vec<Document>, StoreError> {
        self.blocking(|inner| {
            let connection = inner.connection();
            let mut statement = connection
                .prepare(&format!(
                    "SELECT document FROM items WHERE is_user = 1 AND {LIVE} ORDER BY id"
                ))
                .map_err(classify)?;
            let rows = statement
                .query_map(rusqlite::named_params! {":now": now_ms()}, |row| {
                    row.get::<_, String>(0)
                })
                .map_err(classify)?;
            rows.map(|json| parse_document(&json.map_err(classify)?))
                .collect()
        })
        .await
    }
}

fn parse_document(json: &str) -> Result<Document, StoreError> {
    serde_json::from_str(json)
        .map_err(|e| StoreError::Rejected(format!("stored document is not a JSON object: {e}")))
}

/// Contention and I/O trouble are worth a retry; anything else is a bug.
fn classify(error: rusqlite::Error) -> StoreError {
    let transient = matches!(
        error.sqlite_error_code(),
        Some(
            ErrorCode::DatabaseBusy
                | ErrorCode::DatabaseLocked
                | ErrorCode::DiskFull
                | ErrorCode::SystemIoFailure
                | ErrorCode::CannotOpen
        )
    );
    if transient {
        StoreError::unavailable(format!("local store: {error}"))
    } else {
        StoreError::Rejected(format!("local store: {error}"))
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
