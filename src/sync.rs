//! The sync decision: given what is stored and one event, what to write. Pure, no I/O.
//!
//! Rules: a user event applies only when its `updated_at` is newer than the stored one; a delete
//! always wins and leaves a tombstone; nothing brings a tombstoned user back.

use crate::clerk::{ClerkEvent, UserSnapshot};
use crate::document::{self, Document, Kind};
use crate::user_id::UserId;

/// The part of a Clerk event that touches the store.
#[derive(Debug, Clone, Copy)]
pub enum UserEvent<'a> {
    Changed(&'a UserSnapshot),
    Deleted(&'a UserId),
}

impl<'a> UserEvent<'a> {
    pub fn from_clerk(event: &'a ClerkEvent) -> Option<Self> {
        match event {
            ClerkEvent::UserChanged(user) => Some(Self::Changed(user)),
            ClerkEvent::UserDeleted(id) => Some(Self::Deleted(id)),
            ClerkEvent::Unhandled => None,
        }
    }

    pub fn user_id(&self) -> &'a UserId {
        match self {
            Self::Changed(user) => &user.id,
            Self::Deleted(id) => id,
        }
    }
}

/// Facts about the delivery that are not in the event.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The `svix-id` of the delivery.
    pub event_id: &'a str,
    /// When the delivery is processed, RFC 3339: a tombstone's `deletedAt`.
    pub now: &'a str,
    pub tombstone_ttl_seconds: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Store this document in place of whatever was read.
    Write(Document),
    Skip(SkipReason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// The stored document is as new or newer: a late, replayed or duplicated event.
    NotNewer,
    /// The user is deleted; the tombstone blocks this event.
    Deleted,
}

impl SkipReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotNewer => "not_newer",
            Self::Deleted => "deleted",
        }
    }
}

pub fn decide(stored: Option<&Document>, event: UserEvent<'_>, context: Context<'_>) -> Decision {
    if stored.is_some_and(|stored| document::kind(stored) == Kind::Tombstone) {
        return Decision::Skip(SkipReason::Deleted);
    }
    match event {
        UserEvent::Changed(user) => match stored {
            None => Decision::Write(document::new_user(user, context.event_id)),
            Some(stored) if user.updated_at_ms > document::clerk_updated_at(stored) => {
                Decision::Write(document::updated_user(stored, user, context.event_id))
            }
            Some(_) => Decision::Skip(SkipReason::NotNewer),
        },
        UserEvent::Deleted(id) => Decision::Write(document::tombstone(
            id,
            context.event_id,
            context.now,
            context.tombstone_ttl_seconds,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clerk::rfc3339_from_millis;
    use proptest::prelude::*;
    use serde_json::{Value, json};
    use std::collections::BTreeMap;

    const NOW: &str = "2026-11-21T00:00:00Z";
    const TTL: u32 = 30 * 86_400;

    fn context(event_id: &str) -> Context<'_> {
        Context {
            event_id,
            now: NOW,
            tombstone_ttl_seconds: TTL,
        }
    }

    fn snapshot(id: &str, updated_at_ms: i64, first_name: &str) -> UserSnapshot {
        UserSnapshot {
            id: UserId::parse(id).unwrap(),
            email: Some(format!("{first_name}@example.com")),
            email_addresses: vec![format!("{first_name}@example.com")],
            phone_number: None,
            first_name: Some(first_name.to_owned()),
            last_name: None,
            username: None,
            image_url: None,
            external_id: None,
            public_metadata: Default::default(),
            created_at: rfc3339_from_millis(0),
            updated_at: rfc3339_from_millis(updated_at_ms).unwrap(),
            updated_at_ms,
            last_sign_in_at: None,
        }
    }

    fn written(decision: Decision) -> Document {
        match decision {
            Decision::Write(document) => document,
            Decision::Skip(reason) => panic!("expected a write, skipped: {reason:?}"),
        }
    }

    #[test]
    fn first_event_creates_the_document_with_the_initial_role() {
        let user = snapshot("user_1", 10, "ada");
        let document = written(decide(None, UserEvent::Changed(&user), context("msg_1")));
        assert_eq!(
            Value::Object(document),
            json!({
                "id": "user_1", "type": "user", "role": "USER",
                "email": "ada@example.com", "emailAddresses": ["ada@example.com"],
                "phoneNumber": null, "firstName": "ada", "lastName": null, "username": null,
                "imageUrl": null, "externalId": null, "publicMetadata": {},
                "createdAt": "1970-01-01T00:00:00Z", "updatedAt": "1970-01-01T00:00:00.01Z",
                "clerkUpdatedAt": 10, "lastSignInAt": null, "lastEventId": "msg_1"
            })
        );
    }

    #[test]
    fn newer_event_applies_and_keeps_application_fields() {
        let mut stored = written(decide(
            None,
            UserEvent::Changed(&snapshot("user_1", 10, "ada")),
            context("msg_1"),
        ));
        stored.insert("role".into(), json!("ADMIN"));
        stored.insert("favorites".into(), json!([1, 2]));

        let newer = snapshot("user_1", 11, "grace");
        let document = written(decide(
            Some(&stored),
            UserEvent::Changed(&newer),
            context("msg_2"),
        ));
        assert_eq!(document["firstName"], "grace");
        assert_eq!(document["clerkUpdatedAt"], 11);
        assert_eq!(document["lastEventId"], "msg_2");
        assert_eq!(document["role"], "ADMIN");
        assert_eq!(document["favorites"], json!([1, 2]));
    }

    #[test]
    fn older_or_equal_event_is_skipped() {
        let stored = written(decide(
            None,
            UserEvent::Changed(&snapshot("user_1", 10, "ada")),
            context("msg_1"),
        ));
        for updated_at in [9, 10] {
            let late = snapshot("user_1", updated_at, "late");
            assert_eq!(
                decide(Some(&stored), UserEvent::Changed(&late), context("msg_2")),
                Decision::Skip(SkipReason::NotNewer)
            );
        }
    }

    #[test]
    fn delete_leaves_a_tombstone_without_personal_data() {
        let stored = written(decide(
            None,
            UserEvent::Changed(&snapshot("user_1", 10, "ada")),
            context("msg_1"),
        ));
        let id = UserId::parse("user_1").unwrap();
        for before in [None, Some(&stored)] {
            let tombstone = written(decide(before, UserEvent::Deleted(&id), context("msg_2")));
            assert_eq!(
                Value::Object(tombstone),
                json!({"id": "user_1", "type": "tombstone", "deletedAt": NOW,
                       "lastEventId": "msg_2", "ttl": TTL})
            );
        }
    }

    #[test]
    fn tombstone_blocks_every_later_event() {
        let id = UserId::parse("user_1").unwrap();
        let tombstone = written(decide(None, UserEvent::Deleted(&id), context("msg_1")));
        let resurrect = snapshot("user_1", 4_000_000_000_000, "zombie");
        for event in [UserEvent::Changed(&resurrect), UserEvent::Deleted(&id)] {
            assert_eq!(
                decide(Some(&tombstone), event, context("msg_2")),
                Decision::Skip(SkipReason::Deleted)
            );
        }
    }

    #[test]
    fn document_written_by_someone_else_is_updated_by_any_event() {
        let stored = json!({"id": "user_1", "role": "ADMIN"});
        let Value::Object(stored) = stored else {
            unreachable!()
        };
        let user = snapshot("user_1", 1, "ada");
        let document = written(decide(
            Some(&stored),
            UserEvent::Changed(&user),
            context("msg_1"),
        ));
        assert_eq!(document["role"], "ADMIN");
        assert_eq!(document["clerkUpdatedAt"], 1);
    }

    /// One generated event: `(user index, kind)` where kind is `Some(version)` for a change and
    /// `None` for a delete.
    type Event = (usize, Option<i64>);

    fn histories() -> impl Strategy<Value = Vec<Event>> {
        // Per user: versions 1..=n as changes, maybe a delete; then duplicated and shuffled.
        prop::collection::vec((1..6i64, any::<bool>()), 1..5)
            .prop_flat_map(|users| {
                let events: Vec<Event> = users
                    .iter()
                    .enumerate()
                    .flat_map(|(user, &(versions, deleted))| {
                        (1..=versions)
                            .map(move |v| (user, Some(v)))
                            .chain(deleted.then_some((user, None)))
                    })
                    .collect();
                let len = events.len();
                (Just(events), prop::collection::vec(0..len, 0..len + 1))
            })
            .prop_map(|(mut events, duplicates)| {
                let copies: Vec<Event> = duplicates.iter().map(|&i| events[i]).collect();
                events.extend(copies);
                events
            })
            .prop_shuffle()
    }

    proptest! {
        #[test]
        fn any_order_of_any_history_ends_in_the_newest_state(history in histories()) {
            let mut store: BTreeMap<usize, Document> = BTreeMap::new();
            for (n, &(user, change)) in history.iter().enumerate() {
                let id = UserId::parse(&format!("user_{user}")).unwrap();
                let event_id = format!("msg_{n}");
                let snap = change.map(|v| snapshot(id.as_str(), v, &format!("v{v}")));
                let event = match &snap {
                    Some(snap) => UserEvent::Changed(snap),
                    None => UserEvent::Deleted(&id),
                };
                if let Decision::Write(document) = decide(store.get(&user), event, context(&event_id)) {
                    store.insert(user, document);
                }
            }
            for user in history.iter().map(|(user, _)| *user) {
                let document = &store[&user];
                let deleted = history.contains(&(user, None));
                let newest = history.iter().filter_map(|&(u, v)| (u == user).then_some(v).flatten()).max();
                if deleted {
                    prop_assert_eq!(document::kind(document), Kind::Tombstone);
                    prop_assert!(document.get("email").is_none());
                } else {
                    let newest = newest.unwrap();
                    prop_assert_eq!(&document["clerkUpdatedAt"], &json!(newest));
                    prop_assert_eq!(&document["firstName"], &json!(format!("v{newest}")));
                    prop_assert_eq!(&document["role"], &json!("USER"));
                }
            }
        }
    }
}
