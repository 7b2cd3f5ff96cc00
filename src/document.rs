//! The stored item: a user document (camelCase, one per user) or a tombstone left by a delete.
//!
//! Documents are kept as JSON objects rather than structs so that fields the application adds
//! (favorites, roles, anything) survive every update untouched.

use serde_json::{Map, Value, json};

use crate::clerk::UserSnapshot;
use crate::user_id::UserId;

pub type Document = Map<String, Value>;

pub const USER_TYPE: &str = "user";
pub const TOMBSTONE_TYPE: &str = "tombstone";
/// The role a user gets when first stored; afterwards the application owns it.
pub const INITIAL_ROLE: &str = "USER";

/// What a stored item is. Anything not marked as a tombstone counts as a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    User,
    Tombstone,
}

pub fn kind(document: &Document) -> Kind {
    match document.get("type").and_then(Value::as_str) {
        Some(TOMBSTONE_TYPE) => Kind::Tombstone,
        _ => Kind::User,
    }
}

/// The stored ordering key; a document without one (written by something else) is older than
/// any event.
pub fn clerk_updated_at(document: &Document) -> i64 {
    document
        .get("clerkUpdatedAt")
        .and_then(Value::as_i64)
        .unwrap_or(i64::MIN)
}

/// The document for a user seen for the first time.
pub fn new_user(user: &UserSnapshot, event_id: &str) -> Document {
    let mut document = Document::new();
    document.insert("role".into(), INITIAL_ROLE.into());
    overwrite_owned_fields(&mut document, user, event_id);
    document
}

/// The stored document with every field the handler owns replaced; the rest (including `role`)
/// kept as the application left it.
pub fn updated_user(stored: &Document, user: &UserSnapshot, event_id: &str) -> Document {
    let mut document = stored.clone();
    overwrite_owned_fields(&mut document, user, event_id);
    document
}

fn overwrite_owned_fields(document: &mut Document, user: &UserSnapshot, event_id: &str) {
    let owned = json!({
        "id": user.id.as_str(),
        "type": USER_TYPE,
        "email": user.email,
        "emailAddresses": user.email_addresses,
        "phoneNumber": user.phone_number,
        "firstName": user.first_name,
        "lastName": user.last_name,
        "username": user.username,
        "imageUrl": user.image_url,
        "externalId": user.external_id,
        "publicMetadata": user.public_metadata,
        "createdAt": user.created_at,
        "updatedAt": user.updated_at,
        "clerkUpdatedAt": user.updated_at_ms,
        "lastSignInAt": user.last_sign_in_at,
        "lastEventId": event_id,
    });
    document.extend(object(owned));
}

/// What is left of a deleted user: no personal data, and a per-item `ttl` (seconds) after which
/// the store forgets it.
pub fn tombstone(id: &UserId, event_id: &str, deleted_at: &str, ttl_seconds: u32) -> Document {
    object(json!({
        "id": id.as_str(),
        "type": TOMBSTONE_TYPE,
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
