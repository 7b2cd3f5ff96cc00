//! Clerk webhook payloads: the typed events a verified delivery may carry.
//!
//! Clerk's payloads grow new fields and send `null` where a list or object is empty, so every
//! field here is optional or defaulted and unknown fields are ignored; only what the sync needs
//! (the user id and `updated_at`) is required, and only for user events.

use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::user_id::{UserId, UserIdError};

/// What a verified delivery asks of the sync.
#[derive(Debug, Clone, PartialEq)]
pub enum ClerkEvent {
    /// `user.created` or `user.updated`: both carry the whole user, ordered by `updated_at`.
    UserChanged(Box<UserSnapshot>),
    UserDeleted(UserId),
    /// Any other event type: acknowledged, nothing stored.
    Unhandled,
}

/// A Clerk user as the stored document needs it, with Clerk's timestamps already validated.
#[derive(Debug, Clone, PartialEq)]
pub struct UserSnapshot {
    pub id: UserId,
    pub email: Option<String>,
    pub email_addresses: Vec<String>,
    pub phone_number: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub username: Option<String>,
    pub image_url: Option<String>,
    pub external_id: Option<String>,
    pub public_metadata: Map<String, Value>,
    pub created_at: Option<String>,
    pub updated_at: String,
    /// Clerk's `updated_at` in epoch milliseconds: the ordering key.
    pub updated_at_ms: i64,
    pub last_sign_in_at: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EventError {
    #[error("body is not JSON: {0}")]
    NotJson(String),
    #[error("body is not a Clerk event: {0}")]
    NotClerkEvent(String),
    #[error("{event_type} event without a user id")]
    MissingUserId { event_type: String },
    #[error("{event_type} event has an invalid user id: {source}")]
    InvalidUserId {
        event_type: String,
        source: UserIdError,
    },
    #[error("{event_type} event has an invalid user: {reason}")]
    InvalidUser { event_type: String, reason: String },
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "type")]
    event_type: String,
    data: Map<String, Value>,
}

#[derive(Deserialize)]
struct ClerkUser {
    #[serde(default, deserialize_with = "null_as_default")]
    email_addresses: Vec<EmailAddress>,
    primary_email_address_id: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    phone_numbers: Vec<PhoneNumber>,
    primary_phone_number_id: Option<String>,
    first_name: Option<String>,
    last_name: Option<String>,
    username: Option<String>,
    image_url: Option<String>,
    external_id: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    public_metadata: Map<String, Value>,
    created_at: Option<i64>,
    updated_at: Option<i64>,
    last_sign_in_at: Option<i64>,
}

#[derive(Deserialize)]
struct EmailAddress {
    id: Option<String>,
    email_address: String,
}

#[derive(Deserialize)]
struct PhoneNumber {
    id: Option<String>,
    phone_number: String,
}

fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

impl ClerkEvent {
    /// Parses a verified body. Returns the event type alongside, for logging.
    pub fn parse(body: &[u8]) -> Result<(String, ClerkEvent), EventError> {
        let value: Value =
            serde_json::from_slice(body).map_err(|e| EventError::NotJson(e.to_string()))?;
        let envelope: Envelope = from_value(value).map_err(EventError::NotClerkEvent)?;
        let event = match envelope.event_type.as_str() {
            "user.created" | "user.updated" => ClerkEvent::UserChanged(Box::new(user_snapshot(
                &envelope.event_type,
                envelope.data,
            )?)),
            "user.deleted" => ClerkEvent::UserDeleted(user_id(
                &envelope.event_type,
                envelope.data.get("id").and_then(Value::as_str),
            )?),
            _ => ClerkEvent::Unhandled,
        };
        Ok((envelope.event_type, event))
    }
}

fn user_id(event_type: &str, raw: Option<&str>) -> Result<UserId, EventError> {
    let raw = raw.ok_or_else(|| EventError::MissingUserId {
        event_type: event_type.to_owned(),
    })?;
    UserId::parse(raw).map_err(|source| EventError::InvalidUserId {
        event_type: event_type.to_owned(),
        source,
    })
}

fn user_snapshot(event_type: &str, data: Map<String, Value>) -> Result<UserSnapshot, EventError> {
    let invalid = |reason: String| EventError::InvalidUser {
        event_type: event_type.to_owned(),
        reason,
    };
    // A missing id gets its own message whatever else is wrong with the payload.
    let id = user_id(event_type, data.get("id").and_then(Value::as_str))?;
    let user: ClerkUser = from_value(Value::Object(data)).map_err(invalid)?;
    let updated_at_ms = user
        .updated_at
        .ok_or_else(|| invalid("updated_at is missing".to_owned()))?;
    let rfc3339 = |field: &str, ms: i64| {
        rfc3339_from_millis(ms).ok_or_else(|| invalid(format!("{field} is out of range")))
    };
    let email = primary(
        &user.email_addresses,
        user.primary_email_address_id.as_deref(),
        |a| (a.id.as_deref(), &a.email_address),
    );
    let phone_number = primary(
        &user.phone_numbers,
        user.primary_phone_number_id.as_deref(),
        |p| (p.id.as_deref(), &p.phone_number),
    );
    Ok(UserSnapshot {
        id,
        email,
        phone_number,
        email_addresses: user
            .email_addresses
            .into_iter()
            .map(|a| a.email_address)
            .collect(),
        first_name: user.first_name,
        last_name: user.last_name,
        username: user.username,
        image_url: user.image_url,
        external_id: user.external_id,
        public_metadata: user.public_metadata,
        created_at: user
            .created_at
            .map(|ms| rfc3339("created_at", ms))
            .transpose()?,
        updated_at: rfc3339("updated_at", updated_at_ms)?,
        updated_at_ms,
        last_sign_in_at: user
            .last_sign_in_at
            .map(|ms| rfc3339("last_sign_in_at", ms))
            .transpose()?,
    })
}

/// Deserializes with a message that names the field but never quotes its value: payloads carry
/// emails and names, and these messages reach logs and responses.
fn from_value<T: for<'de> Deserialize<'de>>(value: Value) -> Result<T, String> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        match (inner.starts_with("missing field"), path.as_str()) {
            (true, ".") => inner,
            (true, _) => format!("{path}: {inner}"),
            (false, _) => format!("{path} has the wrong type or value"),
        }
    })
}

/// The entry whose id is the primary id: never simply the first one.
fn primary<T>(
    items: &[T],
    primary_id: Option<&str>,
    id_and_value: impl Fn(&T) -> (Option<&str>, &String),
) -> Option<String> {
    let primary_id = primary_id?;
    items
        .iter()
        .map(id_and_value)
        .find(|(id, _)| *id == Some(primary_id))
        .map(|(_, value)| value.clone())
}

/// RFC 3339 in UTC with millisecond precision, as Clerk's epoch-millisecond timestamps carry.
pub fn rfc3339_from_millis(ms: i64) -> Option<String> {
    let at = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()?;
    at.format(&Rfc3339).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(value: Value) -> Result<ClerkEvent, EventError> {
        ClerkEvent::parse(value.to_string().as_bytes()).map(|(_, event)| event)
    }

    fn user_event(data: Value) -> Value {
        json!({"type": "user.updated", "object": "event", "data": data})
    }

    fn snapshot(data: Value) -> UserSnapshot {
        match parse(user_event(data)).unwrap() {
            ClerkEvent::UserChanged(user) => *user,
            other => panic!("expected a user, got {other:?}"),
        }
    }

    #[test]
    fn primary_email_is_chosen_by_id_not_position() {
        let user = snapshot(json!({
            "id": "user_1", "updated_at": 1_700_000_000_000i64,
            "primary_email_address_id": "idn_2",
            "email_addresses": [
                {"id": "idn_1", "email_address": "first@example.com"},
                {"id": "idn_2", "email_address": "primary@example.com"}
            ]
        }));
        assert_eq!(user.email.as_deref(), Some("primary@example.com"));
        assert_eq!(
            user.email_addresses,
            ["first@example.com", "primary@example.com"]
        );
    }

    #[test]
    fn no_primary_or_dangling_primary_means_no_email() {
        let base = json!({"id": "user_1", "updated_at": 1,
            "email_addresses": [{"id": "idn_1", "email_address": "a@example.com"}]});
        assert_eq!(snapshot(base.clone()).email, None);
        let mut dangling = base;
        dangling["primary_email_address_id"] = json!("idn_gone");
        assert_eq!(snapshot(dangling).email, None);
    }

    #[test]
    fn nulls_and_unknown_fields_are_tolerated() {
        let user = snapshot(json!({
            "id": "user_1", "updated_at": 1_700_000_000_123i64, "created_at": 1_600_000_000_000i64,
            "email_addresses": null, "phone_numbers": null, "public_metadata": null,
            "private_metadata": null, "first_name": null, "some_future_field": {"x": [1, 2]}
        }));
        assert!(user.email_addresses.is_empty());
        assert!(user.public_metadata.is_empty());
        assert_eq!(user.updated_at, "2023-11-14T22:13:20.123Z");
        assert_eq!(user.created_at.as_deref(), Some("2020-09-13T12:26:40Z"));
        assert_eq!(user.updated_at_ms, 1_700_000_000_123);
    }

    #[test]
    fn error_messages_never_quote_payload_values() {
        let err = parse(user_event(json!({
            "id": "user_1", "updated_at": 1,
            "email_addresses": [{"id": "idn_1", "email_address": {"secret": "ada@example.com"}}]
        })))
        .unwrap_err()
        .to_string();
        assert!(!err.contains("ada@example.com"), "{err}");
        assert!(err.contains("email_addresses[0].email_address"), "{err}");

        let err = parse(json!({"type": "user.created", "data": "ada@example.com"}))
            .unwrap_err()
            .to_string();
        assert!(!err.contains("ada@example.com"), "{err}");
    }

    #[test]
    fn primary_phone_by_id() {
        let user = snapshot(json!({
            "id": "user_1", "updated_at": 1, "primary_phone_number_id": "idn_p2",
            "phone_numbers": [{"id": "idn_p1", "phone_number": "+1"}, {"id": "idn_p2", "phone_number": "+2"}]
        }));
        assert_eq!(user.phone_number.as_deref(), Some("+2"));
    }

    #[test]
    fn deleted_event_needs_only_an_id() {
        let event =
            parse(json!({"type": "user.deleted", "data": {"id": "user_1", "deleted": true}}));
        assert_eq!(
            event,
            Ok(ClerkEvent::UserDeleted(UserId::parse("user_1").unwrap()))
        );
    }

    #[test]
    fn user_events_without_id_are_rejected() {
        for event_type in ["user.created", "user.updated", "user.deleted"] {
            let err =
                parse(json!({"type": event_type, "data": {"deleted": true, "updated_at": 1}}));
            assert_eq!(
                err,
                Err(EventError::MissingUserId {
                    event_type: event_type.into()
                })
            );
        }
    }

    #[test]
    fn other_event_types_are_unhandled() {
        let event = parse(json!({"type": "session.created", "data": {"id": "sess_1"}}));
        assert_eq!(event, Ok(ClerkEvent::Unhandled));
    }

    #[test]
    fn malformed_bodies_are_classified() {
        assert!(matches!(
            ClerkEvent::parse(b"not json"),
            Err(EventError::NotJson(_))
        ));
        for not_event in [
            json!([1, 2]),
            json!({"data": {}}),
            json!({"type": "user.created"}),
            json!({"type": 5, "data": {}}),
        ] {
            assert!(
                matches!(parse(not_event.clone()), Err(EventError::NotClerkEvent(_))),
                "{not_event}"
            );
        }
        for bad_user in [
            json!({"id": "user_1"}),
            json!({"id": "user_1", "updated_at": "yesterday"}),
            json!({"id": "user_1", "updated_at": i64::MAX}),
            json!({"id": "user_1", "updated_at": 1, "email_addresses": "x"}),
        ] {
            assert!(
                matches!(
                    parse(user_event(bad_user.clone())),
                    Err(EventError::InvalidUser { .. })
                ),
                "{bad_user}"
            );
        }
        assert!(matches!(
            parse(user_event(json!({"id": "a/b", "updated_at": 1}))),
            Err(EventError::InvalidUserId { .. })
        ));
    }
}
