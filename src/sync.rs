//! The sync decision: given what is stored and one incoming version of a Clerk object (or its
//! deletion), what to do. Pure, no I/O; webhooks, reconcile and `SyncMe` all go through it.
//!
//! Rules, the same for users, organizations and memberships: a change applies only when its
//! `updated_at` is newer than the stored one; a delete always wins and leaves a tombstone;
//! nothing brings a tombstoned item back; a membership of a deleted organization or user is not
//! stored; an id never changes kind.

use crate::clerk::{ClerkEvent, Snapshot};
use crate::document::{self, Document, State};
use crate::item::{ItemId, ItemRef, Kind};

/// The part of a Clerk event (or a Backend API answer) that touches the store.
#[derive(Debug, Clone, Copy)]
pub enum Change<'a> {
    Upsert(&'a Snapshot),
    Delete(&'a ItemRef),
}

impl<'a> Change<'a> {
    /// The change an event asks for; `None` for the event types the handler does not handle.
    pub fn from_event(event: &'a ClerkEvent) -> Option<Self> {
        match event {
            ClerkEvent::Changed(snapshot) => Some(Self::Upsert(snapshot)),
            ClerkEvent::Deleted(item) => Some(Self::Delete(item)),
            ClerkEvent::Unhandled => None,
        }
    }

    pub fn kind(&self) -> Kind {
        match self {
            Self::Upsert(snapshot) => snapshot.kind(),
            Self::Delete(item) => item.kind,
        }
    }

    pub fn id(&self) -> &'a ItemId {
        match self {
            Self::Upsert(snapshot) => snapshot.id(),
            Self::Delete(item) => &item.id,
        }
    }
}

/// Whether a membership's organization and user are still there (always `Live` for the other
/// kinds, which have no parents).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parents {
    Live,
    /// The organization or the user is tombstoned.
    Deleted,
}

/// What the decision says, before any document is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Create,
    Update,
    Tombstone,
    Skip(SkipReason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// The stored document is this very version: a replay or a duplicate.
    Unchanged,
    /// The stored document is newer: a late event, or a webhook that beat a reconcile.
    Older,
    /// The item is deleted; the tombstone blocks this event.
    Deleted,
    /// A membership whose organization or user is deleted.
    ParentDeleted,
}

impl SkipReason {
    pub fn as_str(self) -> &'static str {
        match self {
            // A webhook sender need not tell a replay from a late event: both change nothing.
            Self::Unchanged | Self::Older => "not_newer",
            Self::Deleted => "deleted",
            Self::ParentDeleted => "parent_deleted",
        }
    }
}

/// The id already holds an item of another kind: the event is refused, nothing changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the id holds a {stored}, not a {incoming}")]
pub struct KindConflict {
    pub stored: Kind,
    pub incoming: Kind,
}

/// The decision itself, over what is stored (`None`: nothing) and the incoming change.
pub fn decide(
    stored: Option<State>,
    change: Change<'_>,
    parents: Parents,
) -> Result<Verdict, KindConflict> {
    let incoming = change.kind();
    let stored_kind = match stored {
        Some(State::Live { kind, .. }) => kind,
        Some(State::Tombstone { of }) => of,
        None => None,
    };
    if let Some(stored_kind) = stored_kind.filter(|&kind| kind != incoming) {
        return Err(KindConflict {
            stored: stored_kind,
            incoming,
        });
    }
    Ok(match (stored, change) {
        (Some(State::Tombstone { .. }), _) => Verdict::Skip(SkipReason::Deleted),
        (_, Change::Delete(_)) => Verdict::Tombstone,
        (_, Change::Upsert(_)) if parents == Parents::Deleted => {
            Verdict::Skip(SkipReason::ParentDeleted)
        }
        (None, Change::Upsert(_)) => Verdict::Create,
        (
            Some(State::Live {
                clerk_updated_at, ..
            }),
            Change::Upsert(snapshot),
        ) => {
            let incoming = snapshot.times().updated_at_ms;
            match incoming.cmp(&clerk_updated_at) {
                std::cmp::Ordering::Greater => Verdict::Update,
                std::cmp::Ordering::Equal => Verdict::Skip(SkipReason::Unchanged),
                std::cmp::Ordering::Less => Verdict::Skip(SkipReason::Older),
            }
        }
    })
}

/// Facts about the delivery that are not in the event.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The `svix-id` of the delivery (or `reconcile:<start>` and the like for other sources).
    pub event_id: &'a str,
    /// When the change is processed, RFC 3339: a tombstone's `deletedAt`.
    pub now: &'a str,
    pub tombstone_ttl_seconds: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Store this document in place of whatever was read.
    Write(Document),
    Skip(SkipReason),
}

/// The decision, with the document to write built from the stored one and the change.
pub fn plan(
    stored: Option<&Document>,
    change: Change<'_>,
    parents: Parents,
    context: Context<'_>,
) -> Result<Decision, KindConflict> {
    let verdict = decide(stored.map(document::state), change, parents)?;
    Ok(match (verdict, change) {
        (Verdict::Skip(reason), _) => Decision::Skip(reason),
        (Verdict::Tombstone, _) => Decision::Write(document::tombstone(
            &ItemRef {
                kind: change.kind(),
                id: change.id().clone(),
            },
            context.event_id,
            context.now,
            context.tombstone_ttl_seconds,
        )),
        // `Update` is only ever decided over a stored document, `Create` over none.
        (_, Change::Upsert(snapshot)) => Decision::Write(match stored {
            Some(stored) => document::updated_item(stored, snapshot, context.event_id),
            None => document::new_item(snapshot, context.event_id),
        }),
        (_, Change::Delete(_)) => unreachable!("a delete is decided a tombstone or a skip"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::item::ItemId;
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

    fn parsed(kind: Kind, data: Value) -> Snapshot {
        let Value::Object(data) = data else {
            unreachable!()
        };
        Snapshot::parse(kind, data).unwrap()
    }

    fn user(id: &str, updated_at_ms: i64, first_name: &str) -> Snapshot {
        parsed(
            Kind::User,
            json!({"id": id, "updated_at": updated_at_ms, "created_at": 0,
                   "first_name": first_name, "primary_email_address_id": "idn_1",
                   "email_addresses": [{"id": "idn_1", "email_address": format!("{first_name}@example.com")}]}),
        )
    }

    fn organization(id: &str, updated_at_ms: i64, name: &str) -> Snapshot {
        parsed(
            Kind::Organization,
            json!({"id": id, "updated_at": updated_at_ms, "created_at": 0, "name": name,
                   "slug": name, "private_metadata": {"secret": true}}),
        )
    }

    fn membership(
        id: &str,
        organization: &str,
        user: &str,
        updated_at_ms: i64,
        role: &str,
    ) -> Snapshot {
        parsed(
            Kind::Membership,
            json!({"id": id, "updated_at": updated_at_ms, "created_at": 0, "role": role,
                   "organization": {"id": organization, "name": "Acme"},
                   "public_user_data": {"user_id": user, "first_name": "Ada",
                                        "identifier": "ada@example.com"}}),
        )
    }

    fn item(kind: Kind, id: &str) -> ItemRef {
        ItemRef {
            kind,
            id: ItemId::parse(id).unwrap(),
        }
    }

    fn written(decision: Result<Decision, KindConflict>) -> Document {
        match decision.unwrap() {
            Decision::Write(document) => document,
            Decision::Skip(reason) => panic!("expected a write, skipped: {reason:?}"),
        }
    }

    fn plan_live(
        stored: Option<&Document>,
        change: Change<'_>,
        event_id: &str,
    ) -> Result<Decision, KindConflict> {
        plan(stored, change, Parents::Live, context(event_id))
    }

    #[test]
    fn first_event_creates_each_kind_of_document() {
        let cases = [
            (
                user("user_1", 10, "ada"),
                json!({
                    "id": "user_1", "type": "user", "role": "USER",
                    "email": "ada@example.com", "emailAddresses": ["ada@example.com"],
                    "phoneNumber": null, "firstName": "ada", "lastName": null, "username": null,
                    "imageUrl": null, "externalId": null, "publicMetadata": {},
                    "createdAt": "1970-01-01T00:00:00Z", "updatedAt": "1970-01-01T00:00:00.01Z",
                    "clerkUpdatedAt": 10, "lastSignInAt": null, "lastEventId": "msg_1"
                }),
            ),
            (
                organization("org_1", 10, "acme"),
                json!({
                    "id": "org_1", "type": "organization", "name": "acme", "slug": "acme",
                    "imageUrl": null, "publicMetadata": {}, "createdBy": null,
                    "createdAt": "1970-01-01T00:00:00Z", "updatedAt": "1970-01-01T00:00:00.01Z",
                    "clerkUpdatedAt": 10, "lastEventId": "msg_1"
                }),
            ),
            (
                membership("orgmem_1", "org_1", "user_1", 10, "org:admin"),
                json!({
                    "id": "orgmem_1", "type": "membership", "organizationId": "org_1",
                    "userId": "user_1", "role": "org:admin", "permissions": [],
                    "publicMetadata": {},
                    "createdAt": "1970-01-01T00:00:00Z", "updatedAt": "1970-01-01T00:00:00.01Z",
                    "clerkUpdatedAt": 10, "lastEventId": "msg_1"
                }),
            ),
        ];
        for (snapshot, expected) in cases {
            let document = written(plan_live(None, Change::Upsert(&snapshot), "msg_1"));
            assert_eq!(Value::Object(document), expected);
        }
    }

    #[test]
    fn newer_event_applies_and_keeps_application_fields() {
        let mut stored = written(plan_live(
            None,
            Change::Upsert(&user("user_1", 10, "ada")),
            "msg_1",
        ));
        stored.insert("role".into(), json!("ADMIN"));
        stored.insert("favorites".into(), json!([1, 2]));

        let newer = user("user_1", 11, "grace");
        let document = written(plan_live(Some(&stored), Change::Upsert(&newer), "msg_2"));
        assert_eq!(document["firstName"], "grace");
        assert_eq!(document["clerkUpdatedAt"], 11);
        assert_eq!(document["lastEventId"], "msg_2");
        assert_eq!(document["role"], "ADMIN");
        assert_eq!(document["favorites"], json!([1, 2]));
    }

    #[test]
    fn older_or_equal_event_is_skipped_and_told_apart() {
        let stored = written(plan_live(
            None,
            Change::Upsert(&user("user_1", 10, "ada")),
            "msg_1",
        ));
        for (updated_at, reason) in [(9, SkipReason::Older), (10, SkipReason::Unchanged)] {
            let late = user("user_1", updated_at, "late");
            assert_eq!(
                plan_live(Some(&stored), Change::Upsert(&late), "msg_2"),
                Ok(Decision::Skip(reason))
            );
        }
    }

    #[test]
    fn delete_leaves_a_tombstone_that_says_what_it_replaced() {
        for (snapshot, kind) in [
            (user("user_1", 10, "ada"), Kind::User),
            (organization("org_1", 10, "acme"), Kind::Organization),
            (
                membership("orgmem_1", "org_1", "user_1", 10, "org:member"),
                Kind::Membership,
            ),
        ] {
            let stored = written(plan_live(None, Change::Upsert(&snapshot), "msg_1"));
            let deleted = item(kind, snapshot.id().as_str());
            for before in [None, Some(&stored)] {
                for parents in [Parents::Live, Parents::Deleted] {
                    let tombstone = written(plan(
                        before,
                        Change::Delete(&deleted),
                        parents,
                        context("msg_2"),
                    ));
                    assert_eq!(
                        Value::Object(tombstone),
                        json!({"id": snapshot.id().as_str(), "type": "tombstone",
                               "of": kind.as_str(), "deletedAt": NOW,
                               "lastEventId": "msg_2", "ttl": TTL})
                    );
                }
            }
        }
    }

    #[test]
    fn tombstones_block_every_later_event_even_without_of() {
        let id = item(Kind::User, "user_1");
        let tombstone = written(plan_live(None, Change::Delete(&id), "msg_1"));
        let mut legacy = tombstone.clone();
        legacy.remove("of");
        let resurrect = user("user_1", 4_000_000_000_000, "zombie");
        for stored in [&tombstone, &legacy] {
            for change in [Change::Upsert(&resurrect), Change::Delete(&id)] {
                assert_eq!(
                    plan_live(Some(stored), change, "msg_2"),
                    Ok(Decision::Skip(SkipReason::Deleted))
                );
            }
        }
    }

    #[test]
    fn membership_of_a_deleted_parent_is_not_stored() {
        let member = membership("orgmem_1", "org_1", "user_1", 10, "org:member");
        let stored = written(plan_live(None, Change::Upsert(&member), "msg_1"));
        let newer = membership("orgmem_1", "org_1", "user_1", 11, "org:admin");
        for before in [None, Some(&stored)] {
            assert_eq!(
                plan(
                    before,
                    Change::Upsert(&newer),
                    Parents::Deleted,
                    context("msg_2")
                ),
                Ok(Decision::Skip(SkipReason::ParentDeleted))
            );
        }
    }

    #[test]
    fn an_id_never_changes_kind() {
        let stored_org = written(plan_live(
            None,
            Change::Upsert(&organization("org_1", 1, "a")),
            "m",
        ));
        let org_tombstone = written(plan_live(
            None,
            Change::Delete(&item(Kind::Organization, "org_1")),
            "m",
        ));
        // Clerk's prefixes make this impossible for real events; a document the application put
        // under such an id must still never be taken over.
        let as_user = item(Kind::User, "org_1");
        for stored in [&stored_org, &org_tombstone] {
            assert_eq!(
                plan_live(Some(stored), Change::Delete(&as_user), "m"),
                Err(KindConflict {
                    stored: Kind::Organization,
                    incoming: Kind::User
                })
            );
        }
    }

    #[test]
    fn document_written_by_someone_else_is_updated_by_any_event() {
        let stored = json!({"id": "user_1", "role": "ADMIN"});
        let Value::Object(stored) = stored else {
            unreachable!()
        };
        let document = written(plan_live(
            Some(&stored),
            Change::Upsert(&user("user_1", 1, "ada")),
            "msg_1",
        ));
        assert_eq!(document["role"], "ADMIN");
        assert_eq!(document["clerkUpdatedAt"], 1);
        assert_eq!(document["type"], "user");
    }

    // The property: whatever the order, duplicates included, the store ends as the newest event
    // of each item implies, with the cascades.

    const USERS: usize = 3;
    const ORGANIZATIONS: usize = 2;
    const MEMBERSHIPS: usize = 4;

    /// Item `n` in a fixed universe: users, then organizations, then memberships, where
    /// membership `m` links organization `m % ORGANIZATIONS` and user `m % USERS`.
    fn universe(n: usize) -> ItemRef {
        match n {
            n if n < USERS => item(Kind::User, &format!("user_{n}")),
            n if n < USERS + ORGANIZATIONS => {
                item(Kind::Organization, &format!("org_{}", n - USERS))
            }
            n => item(
                Kind::Membership,
                &format!("orgmem_{}", n - USERS - ORGANIZATIONS),
            ),
        }
    }

    fn parents_of(n: usize) -> [usize; 2] {
        let m = n - USERS - ORGANIZATIONS;
        [USERS + m % ORGANIZATIONS, m % USERS]
    }

    fn version_of(n: usize, v: i64) -> Snapshot {
        let it = universe(n);
        let label = format!("v{v}");
        match it.kind {
            Kind::User => user(it.id.as_str(), v, &label),
            Kind::Organization => organization(it.id.as_str(), v, &label),
            Kind::Membership => {
                let [org, usr] = parents_of(n).map(|p| universe(p).id);
                membership(it.id.as_str(), org.as_str(), usr.as_str(), v, &label)
            }
        }
    }

    /// One generated event: `(item index, Some(version))` for a change, `None` for a delete.
    type Event = (usize, Option<i64>);

    fn histories() -> impl Strategy<Value = Vec<Event>> {
        let items = USERS + ORGANIZATIONS + MEMBERSHIPS;
        // Per item: versions 1..=n as changes (0 versions: never seen), maybe a delete; then
        // duplicated and shuffled.
        prop::collection::vec((0..4i64, prop::bool::weighted(0.3)), items)
            .prop_flat_map(|items| {
                let events: Vec<Event> = items
                    .iter()
                    .enumerate()
                    .flat_map(|(n, &(versions, deleted))| {
                        (1..=versions)
                            .map(move |v| (n, Some(v)))
                            .chain(deleted.then_some((n, None)))
                    })
                    .collect();
                let len = events.len().max(1);
                (Just(events), prop::collection::vec(0..len, 0..len + 1))
            })
            .prop_map(|(mut events, duplicates)| {
                let copies: Vec<Event> = duplicates
                    .iter()
                    .filter_map(|&i| events.get(i).copied())
                    .collect();
                events.extend(copies);
                events
            })
            .prop_shuffle()
    }

    /// What `apply` does around the decision, over an in-memory map: parents looked up for a
    /// membership, and a deleted organization or user cascading to its memberships.
    fn deliver(
        store: &mut BTreeMap<usize, Document>,
        n: usize,
        change: Change<'_>,
        event_id: &str,
    ) {
        let tombstoned = |store: &BTreeMap<usize, Document>, p: usize| {
            store
                .get(&p)
                .is_some_and(|d| document::state(d).is_tombstone())
        };
        let parents = match change.kind() {
            Kind::Membership if parents_of(n).iter().any(|&p| tombstoned(store, p)) => {
                Parents::Deleted
            }
            _ => Parents::Live,
        };
        if let Decision::Write(document) =
            plan(store.get(&n), change, parents, context(event_id)).unwrap()
        {
            store.insert(n, document);
        }
        if matches!(change, Change::Delete(it) if it.kind != Kind::Membership) {
            let children: Vec<usize> = (USERS + ORGANIZATIONS..USERS + ORGANIZATIONS + MEMBERSHIPS)
                .filter(|&m| parents_of(m).contains(&n))
                .filter(|m| {
                    store
                        .get(m)
                        .is_some_and(|d| document::state(d).is_live(Kind::Membership))
                })
                .collect();
            for m in children {
                deliver(store, m, Change::Delete(&universe(m)), event_id);
            }
        }
    }

    proptest! {
        #[test]
        fn any_order_of_any_history_ends_in_the_newest_state(history in histories()) {
            let mut store: BTreeMap<usize, Document> = BTreeMap::new();
            for (e, &(n, change)) in history.iter().enumerate() {
                let event_id = format!("msg_{e}");
                let snapshot = change.map(|v| version_of(n, v));
                let deleted = universe(n);
                let change = match &snapshot {
                    Some(snapshot) => Change::Upsert(snapshot),
                    None => Change::Delete(&deleted),
                };
                deliver(&mut store, n, change, &event_id);
            }
            let deleted = |n: usize| history.contains(&(n, None));
            for n in history.iter().map(|(n, _)| *n) {
                let it = universe(n);
                let newest = history.iter().filter_map(|&(i, v)| (i == n).then_some(v).flatten()).max();
                let state = store.get(&n).map(document::state);
                let parent_deleted = it.kind == Kind::Membership && parents_of(n).into_iter().any(deleted);
                if deleted(n) {
                    prop_assert_eq!(state, Some(State::Tombstone { of: Some(it.kind) }));
                    prop_assert!(store[&n].get("organizationId").is_none());
                } else if parent_deleted {
                    prop_assert!(!state.is_some_and(|s| s.is_live(Kind::Membership)), "{:?}", store.get(&n));
                } else {
                    let document = &store[&n];
                    let newest = newest.unwrap();
                    prop_assert_eq!(&document["clerkUpdatedAt"], &json!(newest));
                    prop_assert_eq!(&document["type"], &json!(it.kind.as_str()));
                    let label = match it.kind {
                        Kind::User => "firstName",
                        Kind::Organization => "name",
                        Kind::Membership => "role",
                    };
                    prop_assert_eq!(&document[label], &json!(format!("v{newest}")));
                }
            }
        }
    }
}
