//! The embedded store for development: SQLite in WAL mode, one row per item.
//!
//! SQLite because it gives what the handler needs with no server: every write is an atomic,
//! fsynced transaction (a crash never leaves half a user), conditional writes are one statement,
//! and WAL lets `handler users get/list` read from another process while the server writes.

use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use futures::StreamExt;
use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, Row, params};
use serde_json::Value;
use tokio::sync::oneshot;

use super::{Condition, ETag, Items, ListFilter, RequestCharge, Store, StoreError, Stored};
use crate::document::{self, Document, State};
use crate::item::{ItemId, ItemRef, Kind};

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
    -- Whether the document is a user; kept so that stores written by earlier versions (which
    -- listed users by it) stay valid. Listings now go by the document's `type`.
    is_user    INTEGER NOT NULL,
    -- Epoch milliseconds after which the item is gone, from its `ttl`; NULL for never.
    expires_at INTEGER
);
CREATE INDEX IF NOT EXISTS items_expires_at ON items (expires_at) WHERE expires_at IS NOT NULL;
-- The membership lookups of a cascade and of `memberships list`.
CREATE INDEX IF NOT EXISTS items_organization ON items (json_extract(document, '$.organizationId'))
    WHERE json_extract(document, '$.organizationId') IS NOT NULL;
CREATE INDEX IF NOT EXISTS items_user ON items (json_extract(document, '$.userId'))
    WHERE json_extract(document, '$.userId') IS NOT NULL;
";

/// A row is live while it has no expiry or its expiry is still ahead.
const LIVE: &str = "(expires_at IS NULL OR expires_at > :now)";

// The statements of every delivery, prepared once per connection (`prepare_cached`): compiling
// one costs about as much as running it.
const READ: &str = "SELECT document, version FROM items
     WHERE id = :id AND (expires_at IS NULL OR expires_at > :now)";
/// Takes the place of nothing, or of an expired item not yet purged.
const CREATE: &str = "INSERT INTO items (id, document, version, is_user, expires_at)
     VALUES (?1, ?2, random(), ?3, ?4)
     ON CONFLICT (id) DO UPDATE SET
         document = excluded.document, version = excluded.version,
         is_user = excluded.is_user, expires_at = excluded.expires_at
     WHERE items.expires_at IS NOT NULL AND items.expires_at <= ?5";
const REPLACE: &str = "UPDATE items SET document = ?1, version = random(), is_user = ?2,
         expires_at = ?3
     WHERE id = ?4 AND version = ?5
       AND (expires_at IS NULL OR expires_at > ?6)";

/// The live memberships of an organization, and of a user: each found through its index (the
/// link compared with `=` alone, so that SQLite can use the partial index), ids only.
const MEMBERSHIPS_OF_ORGANIZATION: &str = "SELECT id FROM items
     WHERE json_extract(document, '$.organizationId') = :parent
       AND json_extract(document, '$.type') = :type
       AND (expires_at IS NULL OR expires_at > :now)
     ORDER BY id";
const MEMBERSHIPS_OF_USER: &str = "SELECT id FROM items
     WHERE json_extract(document, '$.userId') = :parent
       AND json_extract(document, '$.type') = :type
       AND (expires_at IS NULL OR expires_at > :now)
     ORDER BY id";

/// Work for the store's thread: it runs there with the connection, and sends its own result.
type Job = Box<dyn FnOnce(&Inner) + Send>;

pub struct LocalStore {
    /// The store's own thread, which makes every read and write on the one connection in turn.
    jobs: mpsc::Sender<Job>,
    /// Scans open their own read-only connection here, so that a long listing never holds the
    /// lock writes wait on.
    path: PathBuf,
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
        // One thread rather than a blocking task per statement: the statements wait on one
        // connection anyway, and a thread per waiting delivery cost more CPU (contended wake-ups)
        // and memory (stacks, allocator arenas) than the work itself. It ends with the store.
        let (jobs, queue) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("local-store".into())
            .spawn(move || {
                for job in queue {
                    // A panicking job drops its answer, which its caller reports; the thread
                    // and the connection carry on (see `Inner::connection`).
                    let _ = panic::catch_unwind(AssertUnwindSafe(|| job(&inner)));
                }
            })
            .map_err(|e| StoreError::unavailable(format!("cannot start the local store: {e}")))?;
        Ok(Self {
            jobs,
            path: path.to_owned(),
        })
    }

    /// Streams `sql`'s rows, each mapped by `row`, from a read-only connection on a blocking
    /// thread; at most a few hundred rows are buffered however many there are.
    fn scan<T: Send + 'static>(
        &self,
        sql: String,
        parameters: Vec<(&'static str, Option<String>)>,
        row: fn(&Row<'_>) -> Result<T, StoreError>,
    ) -> Items<'static, T> {
        let (sender, receiver) = tokio::sync::mpsc::channel(256);
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let scanned = (|| {
                let connection =
                    Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY)
                        .map_err(classify)?;
                connection.busy_timeout(BUSY_TIMEOUT).map_err(classify)?;
                let mut statement = connection.prepare(&sql).map_err(classify)?;
                let now = now_ms();
                let mut bound: Vec<(&str, &dyn rusqlite::ToSql)> = vec![(":now", &now)];
                bound.extend(
                    parameters
                        .iter()
                        .map(|(name, value)| (*name, value as &dyn rusqlite::ToSql)),
                );
                let mut rows = statement.query(bound.as_slice()).map_err(classify)?;
                while let Some(found) = rows.next().map_err(classify)? {
                    if sender.blocking_send(row(found)).is_err() {
                        // The reader went away: stop scanning.
                        return Ok(());
                    }
                }
                Ok(())
            })();
            if let Err(error) = scanned {
                let _ = sender.blocking_send(Err(error));
            }
        });
        futures::stream::unfold(receiver, |mut receiver| async move {
            receiver.recv().await.map(|item| (item, receiver))
        })
        .boxed()
    }

    /// Runs blocking SQLite work off the async threads, on the store's thread.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (answer, answered) = oneshot::channel();
        let job: Job = Box::new(move |inner| {
            let _ = answer.send(work(inner));
        });
        let failed = || StoreError::Rejected("local store task failed".into());
        self.jobs.send(job).map_err(|_| failed())?;
        answered.await.map_err(|_| failed())?
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
    async fn read(&self, id: &ItemId) -> Result<(Option<Stored>, RequestCharge), StoreError> {
        let id = id.clone();
        let stored = self
            .blocking(move |inner| {
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
        self.blocking(move |inner| {
            inner.purge_if_due()?;
            let now = now_ms();
            let expires_at = ttl_ms.map(|ttl| now.saturating_add(ttl));
            let connection = inner.connection();
            let changed = match condition {
                Condition::Absent => connection.prepare_cached(CREATE).and_then(|mut create| {
                    create.execute(params![id.as_str(), json, is_user, expires_at, now])
                }),
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
        self.scan(sql, parameters, |row| {
            parse_document(&row.get::<_, String>(0).map_err(classify)?)
        })
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
        self.blocking(move |inner| {
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
        self.scan(sql, Vec::new(), |row| {
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
