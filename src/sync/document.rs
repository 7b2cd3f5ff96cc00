//! The stored items: a user, organization or membership document (camelCase, one per Clerk
//! object), or a tombstone left by a delete.
//!
//! Documents are kept as JSON objects rather than structs so that fields the application adds
//! (favorites, roles, anything) survive every update untouched.

use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::clerk::Snapshot;
use crate::sync::item::{ItemRef, Kind};

pub type Document = Map<String, Value>;

pub const TOMBSTONE_TYPE: &str = "tombstone";
/// The role a user gets when first stored; afterwards the application owns it.
pub const INITIAL_ROLE: &str = "USER";

/// Where a change comes from, as the `lastEventId` of the documents it writes records it: the one
/// place that builds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source<'a> {
    /// A webhook delivery: its `svix-id`.
    Webhook(&'a str),
    /// A reconcile run: `reconcile:<run start, RFC 3339, whole seconds>`, also the run's id.
    Reconcile(OffsetDateTime),
    /// `SyncMe` storing a user it fetched from Clerk: `sync-me:<when, RFC 3339>`.
    SyncMe(OffsetDateTime),
}

impl Source<'_> {
    pub fn last_event_id(&self) -> String {
        match *self {
            Self::Webhook(svix_id) => svix_id.to_owned(),
            Self::Reconcile(started) => {
                format!(
                    "reconcile:{}",
                    rfc3339(started.replace_nanosecond(0).unwrap_or(started))
                )
            }
            Self::SyncMe(at) => format!("sync-me:{}", rfc3339(at)),
        }
    }
}

/// RFC 3339; a time no RFC 3339 date can hold (beyond year 9999) as epoch seconds instead.
pub fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&Rfc3339)
        .unwrap_or_else(|_| at.unix_timestamp().to_string())
}

/// What a stored item is, as far as the sync decision cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// A document of `kind` (`None`: written by something else, with no `type` the handler
    /// knows), at Clerk version `clerk_updated_at`.
    Live {
        kind: Option<Kind>,
        clerk_updated_at: i64,
    },
    /// A deleted item. `of` is `None` on tombstones written before they recorded it.
    Tombstone { of: Option<Kind> },
}

impl State {
    pub fn is_tombstone(self) -> bool {
        matches!(self, Self::Tombstone { .. })
    }

    /// Whether this is a live document of `kind`: what the `get` and `list` commands show.
    pub fn is_live(self, kind: Kind) -> bool {
        matches!(self, Self::Live { kind: Some(k), .. } if k == kind)
    }
}

/// Reads the state of a stored document (or of a projection holding `type`, `of` and
/// `clerkUpdatedAt`).
pub fn state(document: &Document) -> State {
    let text = |field: &str| document.get(field).and_then(Value::as_str);
    match text("type") {
        Some(TOMBSTONE_TYPE) => State::Tombstone {
            of: text("of").and_then(Kind::from_type),
        },
        other => State::Live {
            kind: other.and_then(Kind::from_type),
            // A document without one (written by something else) is older than any event.
            clerk_updated_at: document
                .get("clerkUpdatedAt")
                .and_then(Value::as_i64)
                .unwrap_or(i64::MIN),
        },
    }
}

/// The document for an object seen for the first time.
pub fn new_item(snapshot: &Snapshot, event_id: &str) -> Document {
    let mut document = Document::new();
    if let Snapshot::User(_) = snapshot {
        document.insert("role".into(), INITIAL_ROLE.into());
    }
    document.extend(owned_fields(snapshot, event_id));
    document
}

/// The stored document with every field the handler owns replaced; the rest (including a
/// user's `role`) kept as the application left it.
pub fn updated_item(stored: &Document, snapshot: &Snapshot, event_id: &str) -> Document {
    let mut document = stored.clone();
    document.extend(owned_fields(snapshot, event_id));
    document
}

/// The fields each kind of document takes from Clerk: the SPEC's document tables.
fn owned_fields(snapshot: &Snapshot, event_id: &str) -> Document {
    let times = snapshot.times();
    let mut fields = object(match snapshot {
        Snapshot::User(user) => json!({
            "email": user.email,
            "emailAddresses": user.email_addresses,
            "phoneNumber": user.phone_number,
            "firstName": user.first_name,
            "lastName": user.last_name,
            "username": user.username,
            "imageUrl": user.image_url,
            "externalId": user.external_id,
            "publicMetadata": user.public_metadata,
            "lastSignInAt": user.last_sign_in_at,
        }),
        Snapshot::Organization(organization) => json!({
            "name": organization.name,
            "slug": organization.slug,
            "imageUrl": organization.image_url,
            "publicMetadata": organization.public_metadata,
            "createdBy": organization.created_by,
        }),
        Snapshot::Membership(membership) => json!({
            "organizationId": membership.organization_id.as_str(),
            "userId": membership.user_id.as_str(),
            "role": membership.role,
            "permissions": membership.permissions,
            "publicMetadata": membership.public_metadata,
        }),
    });
    fields.extend(object(json!({
        "id": snapshot.id().as_str(),
        "type": snapshot.kind().as_str(),
        "createdAt": times.created_at,
        "updatedAt": times.updated_at,
        "clerkUpdatedAt": times.updated_at_ms,
        "lastEventId": event_id,
    })));
    fields
}

/// The fields of the user document table: what `SyncMe` returns. Fields the application added
/// (other than `role`) stay in the store, unseen by the browser.
const USER_VIEW: [&str; 17] = [
    "id",
    "type",
    "email",
    "emailAddresses",
    "phoneNumber",
    "firstName",
    "lastName",
    "username",
    "imageUrl",
    "externalId",
    "publicMetadata",
    "role",
    "createdAt",
    "updatedAt",
    "clerkUpdatedAt",
    "lastSignInAt",
    "lastEventId",
];

pub fn user_view(document: &Document) -> Document {
    USER_VIEW
        .iter()
        .filter_map(|&field| Some((field.to_owned(), document.get(field)?.clone())))
        .collect()
}

/// What is left of a deleted item: no personal data, what it was, and a per-item `ttl`
/// (seconds) after which the store forgets it.
pub fn tombstone(item: &ItemRef, event_id: &str, deleted_at: &str, ttl_seconds: u32) -> Document {
    object(json!({
        "id": item.id.as_str(),
        "type": TOMBSTONE_TYPE,
        "of": item.kind.as_str(),
        "deletedAt": deleted_at,
        "lastEventId": event_id,
        "ttl": ttl_seconds,
    }))
}

fn object(value: Value) -> Document {
    match value {
        Value::Object(map) => map,
        _ => unreachable!("json! of an object literal is an object"),
    }
}
