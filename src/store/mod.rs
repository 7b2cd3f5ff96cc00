//! Storage: one small trait over "read an item by id", "write it if nothing changed since", two
//! streamed scans (live documents of a kind, and every item's state for reconcile), and the
//! states of a page's ids at once (for reconcile).
//!
//! Both implementations keep the same items (user, organization and membership documents and
//! tombstones, see `document`) and the same semantics: point reads by id, conditional writes,
//! tombstones that expire by their `ttl` and read as absent once expired.

use std::fmt;
use std::ops::AddAssign;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;

use crate::secret::Secret;
use crate::sync::document::{Document, State};
use crate::sync::item::{ItemId, ItemRef, Kind};

pub mod cosmos;
pub mod local;

/// Where items are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSettings {
    Cosmos(CosmosSettings),
    Local { path: PathBuf },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CosmosSettings {
    pub auth: CosmosAuth,
    pub database: String,
    pub container: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CosmosAuth {
    /// `COSMOS_ENDPOINT`: an Entra ID token, from the managed identity where App Service offers
    /// one (`IDENTITY_ENDPOINT` set; user-assigned when `client_id` is set), else from developer
    /// tools (`az` / `azd` login).
    Identity {
        endpoint: String,
        client_id: Option<String>,
        managed_identity: bool,
    },
    /// `COSMOS_CONNECTION_STRING`: an account key, for the emulator and development.
    Key { endpoint: String, key: Secret },
}

/// An opaque version of a stored item; it changes on every write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ETag(pub String);

/// An item as read, with the version a conditional write must match.
#[derive(Clone, Debug, PartialEq)]
pub struct Stored {
    /// The item without any store-specific system properties.
    pub document: Document,
    pub etag: ETag,
}

/// The state a write expects to replace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Condition {
    /// Create: nothing (or only an expired tombstone) is stored under this id.
    Absent,
    /// Replace: the stored item still has this version.
    Matches(ETag),
}

impl Condition {
    pub fn for_replacing(stored: Option<&Stored>) -> Self {
        stored.map_or(Self::Absent, |stored| Self::Matches(stored.etag.clone()))
    }
}

/// What the store charged for an operation, in Cosmos request units (zero for the local store).
#[derive(Clone, Copy, Debug, Default, PartialEq, PartialOrd)]
pub struct RequestCharge(pub f64);

impl AddAssign for RequestCharge {
    fn add_assign(&mut self, other: Self) {
        self.0 += other.0;
    }
}

impl fmt::Display for RequestCharge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.2}", self.0)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The condition did not hold: someone else wrote first. Re-read and decide again.
    #[error("the item changed since it was read")]
    ConditionFailed,
    /// Throttled, unreachable, timing out, or no credential: worth retrying later.
    #[error("store unavailable: {reason}")]
    Unavailable {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// The store rejected the request in a way a retry will not fix: a bug on our side.
    #[error("store rejected the request: {0}")]
    Rejected(String),
}

impl StoreError {
    pub fn unavailable(reason: impl Into<String>) -> Self {
        Self::Unavailable {
            reason: reason.into(),
            retry_after: None,
        }
    }
}

/// Which live documents a listing returns: every one of `kind`, or only the memberships of an
/// organization and/or a user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListFilter {
    pub kind: Kind,
    pub organization_id: Option<ItemId>,
    pub user_id: Option<ItemId>,
}

impl ListFilter {
    pub fn all(kind: Kind) -> Self {
        Self {
            kind,
            organization_id: None,
            user_id: None,
        }
    }
}

/// A stream of results that ends at the first error.
pub type Items<'a, T> = BoxStream<'a, Result<T, StoreError>>;

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The item stored under `id`; `None` when there is none or only an expired tombstone.
    async fn read(&self, id: &ItemId) -> Result<(Option<Stored>, RequestCharge), StoreError>;

    /// Stores `document` under `id` if `condition` holds, else `StoreError::ConditionFailed`.
    /// A document with a numeric `ttl` (seconds) expires that long after this write.
    async fn write(
        &self,
        id: &ItemId,
        document: &Document,
        condition: &Condition,
    ) -> Result<RequestCharge, StoreError>;

    /// The live documents `filter` selects (tombstones left out), streamed in no particular
    /// order: memory does not grow with their number.
    fn list(&self, filter: ListFilter) -> Items<'_, Document>;

    /// The ids of the live memberships of `parent` (an organization or a user; none for a
    /// membership): what deleting it cascades to. One parent's memberships are few, so they come
    /// back at once. Asked on every organization and user delete, so each store answers it as
    /// cheaply as it can: ids only, through the link's index.
    async fn memberships_of(&self, parent: &ItemRef) -> Result<Vec<ItemId>, StoreError>;

    /// Every item's id and state, tombstones included, streamed: what reconcile compares with
    /// Clerk.
    fn states(&self) -> Items<'_, (String, State)>;

    /// The id and state of each item stored under one of `ids`, tombstones included (an id with
    /// nothing stored, or only an expired tombstone, is left out), in one query: what reconcile
    /// reads for each page of Clerk's items. At most a few thousand ids.
    async fn states_of(
        &self,
        ids: &[ItemId],
    ) -> Result<(Vec<(String, State)>, RequestCharge), StoreError>;
}

/// The store the settings select. Returns at once: a remote store connects in the background.
pub fn open(settings: &StoreSettings) -> Result<Arc<dyn Store>, StoreError> {
    match settings {
        StoreSettings::Local { path } => Ok(Arc::new(local::LocalStore::open(path)?)),
        StoreSettings::Cosmos(settings) => Ok(Arc::new(cosmos::CosmosStore::new(settings)?)),
    }
}
