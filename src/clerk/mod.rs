//! Clerk's payloads: the typed events a verified delivery may carry, and the objects (users,
//! organizations, memberships) that webhooks and the Backend API both send in one schema.
//!
//! Clerk's payloads grow new fields and send `null` where a list or object is empty, so every
//! field is optional or defaulted and unknown fields are ignored; only what the sync needs (the
//! id, and `updated_at` for a change) is required.

pub mod api;
mod fields;
mod membership;
mod organization;
mod user;

use serde::Deserialize;
use serde_json::{Map, Value};

pub use self::fields::{Timestamps, rfc3339_from_millis};
pub use self::membership::MembershipSnapshot;
pub use self::organization::OrganizationSnapshot;
pub use self::user::UserSnapshot;
use crate::sync::item::{ItemId, ItemIdError, ItemRef, Kind};

/// What a verified delivery asks of the sync.
#[derive(Debug, Clone, PartialEq)]
pub enum ClerkEvent {
    /// `*.created` or `*.updated`: the whole object, ordered by its `updated_at`.
    Changed(Box<Snapshot>),
    /// `*.deleted`: only the id counts (a membership delete carries the whole membership).
    Deleted(ItemRef),
    /// Any other event type: acknowledged, nothing stored.
    Unhandled,
}

/// One Clerk object as its document needs it, with Clerk's timestamps already validated.
#[derive(Debug, Clone, PartialEq)]
pub enum Snapshot {
    User(UserSnapshot),
    Organization(OrganizationSnapshot),
    Membership(MembershipSnapshot),
}

/// Why an object could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SnapshotError {
    #[error("without an id")]
    MissingId,
    #[error("has an invalid id: {0}")]
    InvalidId(#[from] ItemIdError),
    #[error("has an invalid payload: {0}")]
    Invalid(String),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EventError {
    #[error("body is not JSON: {0}")]
    NotJson(String),
    #[error("body is not a Clerk event: {0}")]
    NotClerkEvent(String),
    #[error("{event_type} event {source}")]
    Invalid {
        event_type: String,
        source: SnapshotError,
    },
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "type")]
    event_type: String,
    data: Map<String, Value>,
}

/// The kind an event type is about, and whether it deletes.
fn handled(event_type: &str) -> Option<(Kind, bool)> {
    let (object, action) = event_type.split_once('.')?;
    let kind = match object {
        "user" => Kind::User,
        "organization" => Kind::Organization,
        "organizationMembership" => Kind::Membership,
        _ => return None,
    };
    match action {
        "created" | "updated" => Some((kind, false)),
        "deleted" => Some((kind, true)),
        _ => None,
    }
}

impl ClerkEvent {
    /// Parses a verified body. Returns the event type alongside, for logging.
    pub fn parse(body: &[u8]) -> Result<(String, ClerkEvent), EventError> {
        let value: Value =
            serde_json::from_slice(body).map_err(|e| EventError::NotJson(e.to_string()))?;
        let Envelope { event_type, data } =
            fields::from_value(value).map_err(EventError::NotClerkEvent)?;
        let invalid = |source| EventError::Invalid {
            event_type: event_type.clone(),
            source,
        };
        let event = match handled(&event_type) {
            None => ClerkEvent::Unhandled,
            Some((kind, true)) => ClerkEvent::Deleted(ItemRef {
                kind,
                id: id_of(kind, &data).map_err(invalid)?,
            }),
            Some((kind, false)) => {
                ClerkEvent::Changed(Box::new(Snapshot::parse(kind, data).map_err(invalid)?))
            }
        };
        Ok((event_type, event))
    }
}

/// The object's `id`, which must be an id of `kind`.
fn id_of(kind: Kind, data: &Map<String, Value>) -> Result<ItemId, SnapshotError> {
    let raw = data
        .get("id")
        .and_then(Value::as_str)
        .ok_or(SnapshotError::MissingId)?;
    Ok(ItemId::parse_as(kind, raw)?)
}

impl Snapshot {
    /// Reads one object of `kind`, from a webhook's `data` or a Backend API answer.
    pub fn parse(kind: Kind, data: Map<String, Value>) -> Result<Self, SnapshotError> {
        // A missing or foreign id gets its own message whatever else is wrong with the payload.
        let id = id_of(kind, &data)?;
        let parsed = match kind {
            Kind::User => UserSnapshot::parse(id, data).map(Self::User),
            Kind::Organization => OrganizationSnapshot::parse(id, data).map(Self::Organization),
            Kind::Membership => MembershipSnapshot::parse(id, data).map(Self::Membership),
        };
        parsed.map_err(SnapshotError::Invalid)
    }

    pub fn kind(&self) -> Kind {
        match self {
            Self::User(_) => Kind::User,
            Self::Organization(_) => Kind::Organization,
            Self::Membership(_) => Kind::Membership,
        }
    }

    pub fn id(&self) -> &ItemId {
        match self {
            Self::User(user) => &user.id,
            Self::Organization(organization) => &organization.id,
            Self::Membership(membership) => &membership.id,
        }
    }

    pub fn times(&self) -> &Timestamps {
        match self {
            Self::User(user) => &user.times,
            Self::Organization(organization) => &organization.times,
            Self::Membership(membership) => &membership.times,
        }
    }

    pub fn item(&self) -> ItemRef {
        ItemRef {
            kind: self.kind(),
            id: self.id().clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(value: Value) -> Result<ClerkEvent, EventError> {
        ClerkEvent::parse(value.to_string().as_bytes()).map(|(_, event)| event)
    }

    fn event(event_type: &str, data: Value) -> Value {
        json!({"type": event_type, "object": "event", "data": data})
    }

    fn changed(event_type: &str, data: Value) -> Snapshot {
        match parse(event(event_type, data)).unwrap() {
            ClerkEvent::Changed(snapshot) => *snapshot,
            other => panic!("expected a change, got {other:?}"),
        }
    }

    fn user(data: Value) -> UserSnapshot {
        match changed("user.updated", data) {
            Snapshot::User(user) => user,
            other => panic!("expected a user, got {other:?}"),
        }
    }

    fn invalid(event_type: &str, data: Value) -> SnapshotError {
        match parse(event(event_type, data.clone())) {
            Err(EventError::Invalid { source, .. }) => source,
            other => panic!("{event_type} {data}: expected an invalid payload, got {other:?}"),
        }
    }

    #[test]
    fn primary_email_is_chosen_by_id_not_position() {
        let user = user(json!({
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
        assert_eq!(user(base.clone()).email, None);
        let mut dangling = base;
        dangling["primary_email_address_id"] = json!("idn_gone");
        assert_eq!(user(dangling).email, None);
    }

    #[test]
    fn nulls_and_unknown_fields_are_tolerated() {
        let user = user(json!({
            "id": "user_1", "updated_at": 1_700_000_000_123i64, "created_at": 1_600_000_000_000i64,
            "email_addresses": null, "phone_numbers": null, "public_metadata": null,
            "private_metadata": null, "first_name": null, "some_future_field": {"x": [1, 2]}
        }));
        assert!(user.email_addresses.is_empty());
        assert!(user.public_metadata.is_empty());
        assert_eq!(user.times.updated_at, "2023-11-14T22:13:20.123Z");
        assert_eq!(
            user.times.created_at.as_deref(),
            Some("2020-09-13T12:26:40Z")
        );
        assert_eq!(user.times.updated_at_ms, 1_700_000_000_123);
    }

    #[test]
    fn error_messages_never_quote_payload_values() {
        let err = parse(event(
            "user.updated",
            json!({
                "id": "user_1", "updated_at": 1,
                "email_addresses": [{"id": "idn_1", "email_address": {"secret": "ada@example.com"}}]
            }),
        ))
        .unwrap_err()
        .to_string();
        assert!(!err.contains("ada@example.com"), "{err}");
        assert!(err.contains("email_addresses[0].email_address"), "{err}");

        let err = parse(json!({"type": "user.created", "data": "ada@example.com"}))
            .unwrap_err()
            .to_string();
        assert!(!err.contains("ada@example.com"), "{err}");

        let err = invalid(
            "organizationMembership.created",
            json!({"id": "orgmem_1", "updated_at": 1, "organization": {"id": "org_1"},
                   "public_user_data": {"user_id": "ada@example.com"}}),
        )
        .to_string();
        assert!(!err.contains("ada@example.com"), "{err}");
        assert!(err.contains("public_user_data.user_id"), "{err}");
    }

    #[test]
    fn primary_phone_by_id() {
        let user = user(json!({
            "id": "user_1", "updated_at": 1, "primary_phone_number_id": "idn_p2",
            "phone_numbers": [{"id": "idn_p1", "phone_number": "+1"}, {"id": "idn_p2", "phone_number": "+2"}]
        }));
        assert_eq!(user.phone_number.as_deref(), Some("+2"));
    }

    #[test]
    fn deletes_need_only_an_id_of_their_kind() {
        for (event_type, kind, id) in [
            ("user.deleted", Kind::User, "user_1"),
            ("organization.deleted", Kind::Organization, "org_1"),
            (
                "organizationMembership.deleted",
                Kind::Membership,
                "orgmem_1",
            ),
        ] {
            assert_eq!(
                parse(event(event_type, json!({"id": id, "deleted": true}))),
                Ok(ClerkEvent::Deleted(ItemRef {
                    kind,
                    id: ItemId::parse(id).unwrap()
                }))
            );
        }
    }

    #[test]
    fn events_without_an_id_or_with_an_id_of_another_kind_are_rejected() {
        for event_type in [
            "user.created",
            "user.updated",
            "user.deleted",
            "organization.created",
            "organization.deleted",
            "organizationMembership.updated",
            "organizationMembership.deleted",
        ] {
            assert_eq!(
                invalid(event_type, json!({"deleted": true, "updated_at": 1})),
                SnapshotError::MissingId,
                "{event_type}"
            );
            assert_eq!(
                invalid(event_type, json!({"id": 42, "updated_at": 1})),
                SnapshotError::MissingId,
                "{event_type}"
            );
        }
        for (event_type, id) in [
            ("user.updated", "org_1"),
            ("organization.updated", "user_1"),
            ("organization.deleted", "orgmem_1"),
            ("organizationMembership.created", "org_1"),
        ] {
            assert!(
                matches!(
                    invalid(event_type, json!({"id": id, "updated_at": 1})),
                    SnapshotError::InvalidId(ItemIdError::WrongKind { .. })
                ),
                "{event_type} {id}"
            );
        }
    }

    #[test]
    fn organizations_keep_public_fields_only() {
        let Snapshot::Organization(organization) = changed(
            "organization.created",
            json!({
                "object": "organization", "id": "org_1", "name": "Acme", "slug": "acme",
                "image_url": null, "has_image": false, "public_metadata": null,
                "private_metadata": {"secret": 1}, "created_by": "user_1",
                "created_at": 1, "updated_at": 2, "members_count": 3
            }),
        ) else {
            panic!("expected an organization")
        };
        assert_eq!(organization.name.as_deref(), Some("Acme"));
        assert_eq!(organization.created_by.as_deref(), Some("user_1"));
        assert!(organization.public_metadata.is_empty());
        assert_eq!(organization.times.updated_at_ms, 2);
    }

    #[test]
    fn memberships_link_an_organization_and_a_user() {
        let Snapshot::Membership(membership) = changed(
            "organizationMembership.created",
            json!({
                "object": "organization_membership", "id": "orgmem_1", "role": "org:admin",
                "permissions": null, "public_metadata": {"team": "red"},
                "organization": {"object": "organization", "id": "org_1", "name": "Acme"},
                "public_user_data": {"user_id": "user_1", "first_name": "Ada",
                                     "identifier": "ada@example.com"},
                "created_at": 1, "updated_at": 2
            }),
        ) else {
            panic!("expected a membership")
        };
        assert_eq!(membership.organization_id.as_str(), "org_1");
        assert_eq!(membership.user_id.as_str(), "user_1");
        assert_eq!(membership.role.as_deref(), Some("org:admin"));
        assert!(membership.permissions.is_empty());
    }

    #[test]
    fn memberships_without_their_links_are_rejected() {
        let base = json!({"id": "orgmem_1", "updated_at": 1,
            "organization": {"id": "org_1"}, "public_user_data": {"user_id": "user_1"}});
        for (field, value) in [
            ("organization", json!(null)),
            ("organization", json!({"id": null})),
            ("organization", json!({"id": "user_1"})),
            ("public_user_data", json!(null)),
            ("public_user_data", json!({"user_id": "org_1"})),
            ("public_user_data", json!("user_1")),
        ] {
            let mut data = base.clone();
            data[field] = value;
            assert!(
                matches!(
                    invalid("organizationMembership.updated", data.clone()),
                    SnapshotError::Invalid(_)
                ),
                "{data}"
            );
        }
    }

    #[test]
    fn other_event_types_are_unhandled() {
        for event_type in [
            "session.created",
            "organizationInvitation.accepted",
            "organizationDomain.deleted",
            "user",
            "user.banned",
        ] {
            let event = parse(event(event_type, json!({"id": "sess_1"})));
            assert_eq!(event, Ok(ClerkEvent::Unhandled), "{event_type}");
        }
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
        for (event_type, bad) in [
            ("user.updated", json!({"id": "user_1"})),
            (
                "user.updated",
                json!({"id": "user_1", "updated_at": "yesterday"}),
            ),
            (
                "user.updated",
                json!({"id": "user_1", "updated_at": i64::MAX}),
            ),
            (
                "user.updated",
                json!({"id": "user_1", "updated_at": 1, "email_addresses": "x"}),
            ),
            (
                "organization.updated",
                json!({"id": "org_1", "updated_at": null}),
            ),
            (
                "organization.updated",
                json!({"id": "org_1", "updated_at": 1, "name": 5}),
            ),
        ] {
            assert!(
                matches!(invalid(event_type, bad.clone()), SnapshotError::Invalid(_)),
                "{bad}"
            );
        }
        assert!(matches!(
            invalid("user.updated", json!({"id": "user_a/b", "updated_at": 1})),
            SnapshotError::InvalidId(ItemIdError::ForbiddenCharacter)
        ));
    }
}
