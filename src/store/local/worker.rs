//! How the embedded store reaches SQLite: one connection, used by one thread of the store's own
//! that runs every read and write in turn, and read-only connections for long scans, so that a
//! listing never holds the lock writes wait on. Also how SQLite's errors and clock are read.

use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use rusqlite::{Connection, ErrorCode, OpenFlags, Row};
use tokio::sync::oneshot;

use super::sql;
use crate::store::{Items, StoreError};

/// How long a write waits for another process holding the database lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How often expired tombstones are deleted (reads already treat them as absent).
const PURGE_INTERVAL: Duration = Duration::from_secs(3600);

/// Work for the store's thread: it runs there with the connection, and sends its own result.
type Job = Box<dyn FnOnce(&Inner) + Send>;

/// The store's thread, and where its scans open their connections.
pub(super) struct Worker {
    /// The store's own thread, which makes every read and write on the one connection in turn.
    jobs: mpsc::Sender<Job>,
    /// Scans open their own read-only connection here.
    path: PathBuf,
}

pub(super) struct Inner {
    connection: Mutex<Connection>,
    /// When expired tombstones were last deleted; `None` until the first write, so that opening
    /// the store (as the `users` commands do) never writes.
    last_purge: Mutex<Option<Instant>>,
}

impl Worker {
    /// Opens (creating) the store at `path` and starts its thread.
    pub(super) fn open(path: &Path) -> Result<Self, StoreError> {
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
            .and_then(|()| connection.execute_batch(sql::SCHEMA))
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
    pub(super) fn scan<T: Send + 'static>(
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
    pub(super) async fn run<T: Send + 'static>(
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
    pub(super) fn connection(&self) -> MutexGuard<'_, Connection> {
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
            tracing::info!(event = "local_store_purged", purged);
        }
        Ok(())
    }

    pub(super) fn purge_if_due(&self) -> Result<(), StoreError> {
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

/// Contention and I/O trouble are worth a retry; anything else is a bug.
pub(super) fn classify(error: rusqlite::Error) -> StoreError {
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

pub(super) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
