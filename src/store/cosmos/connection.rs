//! The one Cosmos DB client, connected in the background and shared by every operation.
//!
//! Connecting means signing in, reading the account's regions and the container's metadata:
//! seconds on a cold start, or never while the identity endpoint or the account is down. So it
//! never happens on the caller's path: the first attempt starts as the store is built, an
//! operation waits a bounded time for it, and a failed attempt is replaced by a fresh one on the
//! next operation.

use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use azure_data_cosmos::options::{
    EndToEndOperationLatencyPolicy, OperationOptions, OperationOptionsBuilder,
    ThrottlingRetryOptionsBuilder,
};
use azure_data_cosmos::{
    AccountReference, ContainerClient, CosmosClient, CosmosRuntime, RoutingStrategy,
};
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};

use super::errors;
use crate::store::StoreError;

/// The SDK's budget for one operation, its own retries included.
pub(super) const OPERATION_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a throttled operation may wait on the service's back-off before giving up with 429.
const THROTTLE_RETRY_WAIT: Duration = Duration::from_secs(2);
/// A whole connection attempt; past it the next operation starts a new one.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// What to connect to.
pub(super) struct Target {
    pub account: AccountReference,
    pub database: String,
    pub container: String,
    /// `None`: the SDK's process-wide runtime (real sockets).
    pub runtime: Option<CosmosRuntime>,
}

type Attempt = Shared<BoxFuture<'static, Result<Arc<ContainerClient>, Failure>>>;

/// A failed attempt, kept (and so cloneable) for every operation that waited on it.
#[derive(Clone, Debug)]
struct Failure {
    reason: String,
    retry_after: Option<Duration>,
    transient: bool,
}

impl From<Failure> for StoreError {
    fn from(failure: Failure) -> Self {
        if failure.transient {
            StoreError::Unavailable {
                reason: failure.reason,
                retry_after: failure.retry_after,
            }
        } else {
            StoreError::Rejected(failure.reason)
        }
    }
}

impl From<StoreError> for Failure {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable {
                reason,
                retry_after,
            } => Failure {
                reason,
                retry_after,
                transient: true,
            },
            other => Failure {
                reason: other.to_string(),
                retry_after: None,
                transient: false,
            },
        }
    }
}

pub(super) struct Connection {
    target: Arc<Target>,
    connected: OnceLock<Arc<ContainerClient>>,
    /// The attempt in flight, or the last one if it failed.
    attempt: Mutex<Option<Attempt>>,
}

impl Connection {
    /// Starts connecting at once when called inside a Tokio runtime, else on first use.
    pub fn open(target: Target) -> Self {
        let connection = Self {
            target: Arc::new(target),
            connected: OnceLock::new(),
            attempt: Mutex::new(None),
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            drop(connection.attempt());
        }
        connection
    }

    /// The container client, waiting at most `wait` for a connection in progress.
    pub async fn container(&self, wait: Duration) -> Result<Arc<ContainerClient>, StoreError> {
        if let Some(container) = self.connected.get() {
            return Ok(Arc::clone(container));
        }
        let outcome = tokio::time::timeout(wait, self.attempt()).await;
        match outcome {
            Ok(Ok(container)) => Ok(Arc::clone(self.connected.get_or_init(|| container))),
            Ok(Err(failure)) => Err(failure.into()),
            Err(_) => Err(StoreError::Unavailable {
                reason: "still connecting to Cosmos DB".into(),
                retry_after: None,
            }),
        }
    }

    /// The attempt in flight or succeeded, or a new one in place of a failed one.
    fn attempt(&self) -> Attempt {
        let mut slot = self.attempt.lock().unwrap_or_else(PoisonError::into_inner);
        let failed = slot
            .as_ref()
            .is_some_and(|attempt| matches!(attempt.peek(), Some(Err(_))));
        match slot.as_ref() {
            Some(attempt) if !failed => attempt.clone(),
            _ => {
                // Spawned so that it runs to the end even when every waiter gave up on it.
                let task = tokio::spawn(connect(Arc::clone(&self.target)));
                let attempt = async move {
                    task.await.unwrap_or_else(|e| {
                        Err(Failure {
                            reason: format!("connecting to Cosmos DB stopped: {e}"),
                            retry_after: None,
                            transient: true,
                        })
                    })
                }
                .boxed()
                .shared();
                *slot = Some(attempt.clone());
                attempt
            }
        }
    }
}

async fn connect(target: Arc<Target>) -> Result<Arc<ContainerClient>, Failure> {
    let connecting = async {
        let mut builder = CosmosClient::builder().with_default_operation_options(defaults());
        if let Some(runtime) = &target.runtime {
            builder = builder.with_runtime(runtime.clone());
        }
        // No region preference: the account's own order, which is its write region first.
        let client = builder
            .build(
                target.account.clone(),
                RoutingStrategy::PreferredRegions(Vec::new()),
            )
            .await?;
        client
            .database_client(target.database.as_str())
            .container_client(target.container.as_str(), None)
            .await
    };
    let result = match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
        Ok(result) => result,
        Err(_) => Err(errors::timed_out("connect", CONNECT_TIMEOUT)),
    };
    match result {
        Ok(container) => {
            tracing::info!(
                event = "cosmos_connected",
                database = %target.database,
                container = %target.container,
                "connected to Cosmos DB"
            );
            Ok(Arc::new(container))
        }
        Err(error) => {
            let failure = Failure::from(errors::classify("connect", &error));
            if failure.transient {
                tracing::warn!(
                    event = "cosmos_connect_failed",
                    reason = %failure.reason,
                    database = %target.database,
                    container = %target.container,
                    "cannot connect to Cosmos DB yet"
                );
            } else {
                tracing::error!(
                    event = "cosmos_connect_failed",
                    reason = %failure.reason,
                    database = %target.database,
                    container = %target.container,
                    "cannot connect to Cosmos DB; check the account, database and container \
                     names and the identity's data-plane role"
                );
            }
            Err(failure)
        }
    }
}

/// Defaults for every operation of this client: bounded so that a delivery always answers
/// inside Svix's window, whatever Cosmos does.
fn defaults() -> OperationOptions {
    OperationOptionsBuilder::new()
        .with_end_to_end_latency_policy(EndToEndOperationLatencyPolicy::new(OPERATION_TIMEOUT))
        .with_throttling_retry_options(
            ThrottlingRetryOptionsBuilder::new()
                .with_max_retry_wait_time(THROTTLE_RETRY_WAIT)
                .build(),
        )
        .build()
}
