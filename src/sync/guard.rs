//! The resurrection guard: before an event older than any tombstone creates an item nothing is
//! stored for (only a manual replay delivers such an event, and the item's tombstone may have
//! expired), Clerk is asked whether the item still exists. An object Clerk answers 404 for is
//! gone, and its old event must not recreate it; `decide` then tombstones it.

use std::time::Duration;

use async_trait::async_trait;

use crate::clerk::Snapshot;
use crate::clerk::api::{ClerkApi, ClerkApiError, Patience};

/// Asks Clerk whether an object still exists.
#[async_trait]
pub trait Guard: Send + Sync {
    async fn still_exists(&self, snapshot: &Snapshot) -> Result<bool, GuardError>;
}

/// Clerk could not answer the guard's question now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct GuardError {
    pub reason: String,
    pub retry_after: Option<Duration>,
}

/// The guard asks with a caller waiting (a webhook delivery): no long waits on a 429.
#[async_trait]
impl Guard for ClerkApi {
    async fn still_exists(&self, snapshot: &Snapshot) -> Result<bool, GuardError> {
        let patience = Patience::Interactive;
        let found = match snapshot {
            Snapshot::User(user) => self.get_user(&user.id, patience).await,
            Snapshot::Organization(organization) => {
                self.get_organization(&organization.id, patience).await
            }
            Snapshot::Membership(membership) => {
                self.get_membership(
                    &membership.organization_id,
                    &membership.user_id,
                    &membership.id,
                    patience,
                )
                .await
            }
        };
        match found {
            Ok(found) => Ok(found.is_some()),
            Err(ClerkApiError::Unavailable {
                reason,
                retry_after,
            }) => Err(GuardError {
                reason,
                retry_after,
            }),
            // A refused request (a bad key) never clears by waiting, but neither may the event
            // be applied unchecked: the delivery is retried while the deployment is fixed.
            Err(ClerkApiError::Rejected(reason) | ClerkApiError::Forbidden(reason)) => {
                Err(GuardError {
                    reason,
                    retry_after: None,
                })
            }
        }
    }
}
