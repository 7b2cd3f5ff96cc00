//! The sync decision: given what is stored and one incoming version of a Clerk object (or its
//! deletion), what to do. Pure, no I/O; webhooks, reconcile and `SyncMe` all go through it.
//!
//! Rules, the same for users, organizations and memberships: a change applies only when its
//! `updated_at` is newer than the stored one; a delete always wins and leaves a tombstone;
//! nothing brings a tombstoned item back; a membership of a deleted organization or user is not
//! stored, and one stored before its parent went is tombstoned; an event older than any tombstone
//! for an item nothing is stored for is first checked with Clerk, and tombstoned if Clerk says it
//! is gone; an id never changes kind.

use crate::clerk::{ClerkEvent, Snapshot};
use crate::sync::document::{self, Document, State};
use crate::sync::item::{ItemId, ItemRef, Kind};

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

    /// The organization and user a membership upsert names: whose states decide `Parents`.
    /// Nothing for the other kinds, and for deletes.
    pub fn parent_ids(&self) -> Option<[&'a ItemId; 2]> {
        match self {
            Self::Upsert(Snapshot::Membership(membership)) => {
                Some([&membership.organization_id, &membership.user_id])
            }
            _ => None,
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

impl Parents {
    /// From the stored states of a membership's organization and user (`None`: nothing stored,
    /// which is not a deletion: a membership may arrive before its parents).
    pub fn of(states: impl IntoIterator<Item = Option<State>>) -> Self {
        let deleted = states
            .into_iter()
            .any(|state| state.is_some_and(State::is_tombstone));
        if deleted { Self::Deleted } else { Self::Live }
    }
}

/// What Clerk said when asked whether the item of an old event still exists: the resurrection
/// guard's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confirmation {
    /// Nobody is to ask: the change comes from Clerk's own API (reconcile, `SyncMe`), or no
    /// Backend API is configured.
    NotNeeded,
    /// Clerk can be asked, and has not been yet. No tombstone written before
    /// `oldest_tombstone_ms` (now, less the tombstone TTL) is still stored, so for an event
    /// updated before then, nothing stored does not prove the item was never deleted: only a
    /// manual replay delivers such an event.
    Unasked {
        oldest_tombstone_ms: i64,
    },
    Exists,
    Gone,
}

/// Everything the decision needs besides the stored state and the change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facts {
    pub parents: Parents,
    pub clerk: Confirmation,
}

/// What the decision says, before any document is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Create,
    Update,
    /// A delete: the item becomes a tombstone.
    Tombstone,
    /// An old event for an item Clerk says is gone: a tombstone is written, the event skipped.
    Gone,
    /// A stored membership whose organization or user is deleted: tombstoned, the event skipped.
    Orphaned,
    /// Ask Clerk whether the item still exists, then decide again with its answer.
    AskClerk,
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

/// What a change came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    Skipped(SkipReason),
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
    facts: Facts,
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
    let snapshot = match (stored, change) {
        (Some(State::Tombstone { .. }), _) => return Ok(Verdict::Skip(SkipReason::Deleted)),
        (_, Change::Delete(_)) => return Ok(Verdict::Tombstone),
        (_, Change::Upsert(snapshot)) => snapshot,
    };
    let updated_at_ms = snapshot.times().updated_at_ms;
    Ok(match (stored, facts.parents) {
        // Its cascade missed it (cut short, or it was written as the parent went).
        (Some(_), Parents::Deleted) => Verdict::Orphaned,
        (None, Parents::Deleted) => Verdict::Skip(SkipReason::ParentDeleted),
        (None, Parents::Live) => match facts.clerk {
            Confirmation::Gone => Verdict::Gone,
            Confirmation::Unasked {
                oldest_tombstone_ms,
            } if updated_at_ms < oldest_tombstone_ms => Verdict::AskClerk,
            _ => Verdict::Create,
        },
        (
            Some(State::Live {
                clerk_updated_at, ..
            }),
            Parents::Live,
        ) => match updated_at_ms.cmp(&clerk_updated_at) {
            std::cmp::Ordering::Greater => Verdict::Update,
            std::cmp::Ordering::Equal => Verdict::Skip(SkipReason::Unchanged),
            std::cmp::Ordering::Less => Verdict::Skip(SkipReason::Older),
        },
        (Some(State::Tombstone { .. }), _) => unreachable!("a tombstone is skipped above"),
    })
}

/// Facts about the change that are not in the event, for the documents it writes.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// `lastEventId` of what is written (see `document::Source`).
    pub event_id: &'a str,
    /// When the change is processed, RFC 3339: a tombstone's `deletedAt`.
    pub now: &'a str,
    pub tombstone_ttl_seconds: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Store this document in place of whatever was read; the change then comes to `Outcome`.
    Write(Document, Outcome),
    /// Ask Clerk whether the item still exists, then plan again with its answer.
    AskClerk,
    Skip(SkipReason),
}

/// The decision, with the document to write built from the stored one and the change.
pub fn plan(
    stored: Option<&Document>,
    change: Change<'_>,
    facts: Facts,
    context: Context<'_>,
) -> Result<Decision, KindConflict> {
    let verdict = decide(stored.map(document::state), change, facts)?;
    let tombstone = || {
        document::tombstone(
            &ItemRef {
                kind: change.kind(),
                id: change.id().clone(),
            },
            context.event_id,
            context.now,
            context.tombstone_ttl_seconds,
        )
    };
    Ok(match (verdict, change) {
        (Verdict::Skip(reason), _) => Decision::Skip(reason),
        (Verdict::AskClerk, _) => Decision::AskClerk,
        (Verdict::Tombstone, _) => Decision::Write(tombstone(), Outcome::Applied),
        (Verdict::Gone, _) => Decision::Write(tombstone(), Outcome::Skipped(SkipReason::Deleted)),
        (Verdict::Orphaned, _) => {
            Decision::Write(tombstone(), Outcome::Skipped(SkipReason::ParentDeleted))
        }
        // `Update` is only ever decided over a stored document, `Create` over none.
        (Verdict::Create | Verdict::Update, Change::Upsert(snapshot)) => Decision::Write(
            match stored {
                Some(stored) => document::updated_item(stored, snapshot, context.event_id),
                None => document::new_item(snapshot, context.event_id),
            },
            Outcome::Applied,
        ),
        (Verdict::Create | Verdict::Update, Change::Delete(_)) => {
            unreachable!("a delete is decided a tombstone or a skip")
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::item::ItemId;
    use proptest::prelude::*;
    use serde_json::{Value, json};
    use std::collections::BTreeMap;

    const NOW: &str = "2026-11-21T00:00:00Z";
    const TTL: u32 = 30 * 86_400;

    const LIVE: Facts = Facts {
        parents: Parents::Live,
        clerk: Confirmation::NotNeeded,
    };

    fn with_parents(parents: Parents) -> Facts {
        Facts { parents, ..LIVE }
    }

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
            Decision::Write(document, _) => document,
            other => panic!("expected a write, got {other:?}"),
        }
    }

    /// The tombstone of a `kind` that `decision` writes, skipping the change for `reason`.
    fn tombstone(
        decision: Result<Decision, KindConflict>,
        reason: SkipReason,
        kind: Kind,
    ) -> Document {
        match decision.unwrap() {
            Decision::Write(document, outcome) => {
                assert_eq!(outcome, Outcome::Skipped(reason));
                assert_eq!(
                    document::state(&document),
                    State::Tombstone { of: Some(kind) }
                );
                document
            }
            other => panic!("expected a tombstone, got {other:?}"),
        }
    }

    fn plan_live(
        stored: Option<&Document>,
        change: Change<'_>,
        event_id: &str,
    ) -> Result<Decision, KindConflict> {
        plan(stored, change, LIVE, context(event_id))
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
                        with_parents(parents),
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
    fn membership_of_a_deleted_parent_is_not_stored_and_a_stored_one_is_tombstoned() {
        let member = membership("orgmem_1", "org_1", "user_1", 10, "org:member");
        let stored = written(plan_live(None, Change::Upsert(&member), "msg_1"));
        let newer = membership("orgmem_1", "org_1", "user_1", 11, "org:admin");
        let orphaned = |before, change| {
            plan(
                before,
                change,
                with_parents(Parents::Deleted),
                context("msg_2"),
            )
        };
        assert_eq!(
            orphaned(None, Change::Upsert(&newer)),
            Ok(Decision::Skip(SkipReason::ParentDeleted))
        );
        // Whatever its version: its cascade missed it, and this event finishes the cascade.
        for version in [&member, &newer] {
            let document = tombstone(
                orphaned(Some(&stored), Change::Upsert(version)),
                SkipReason::ParentDeleted,
                Kind::Membership,
            );
            assert!(document.get("organizationId").is_none());
        }
    }

    #[test]
    fn an_event_older_than_any_tombstone_asks_clerk_first_when_nothing_is_stored() {
        let old = user("user_1", 10, "ada");
        let unasked = |oldest_tombstone_ms| Facts {
            clerk: Confirmation::Unasked {
                oldest_tombstone_ms,
            },
            ..LIVE
        };
        // Older than every tombstone still stored: only Clerk can tell.
        assert_eq!(
            plan(None, Change::Upsert(&old), unasked(11), context("m")),
            Ok(Decision::AskClerk)
        );
        // Recent enough that a deletion would still show as a tombstone: no question.
        let created = written(plan(None, Change::Upsert(&old), unasked(10), context("m")));
        assert_eq!(created["firstName"], "ada");
        // Something is stored: the store decides, whatever the age.
        let newer = user("user_1", 11, "grace");
        assert!(matches!(
            plan(
                Some(&created),
                Change::Upsert(&newer),
                unasked(100),
                context("m")
            ),
            Ok(Decision::Write(_, Outcome::Applied))
        ));
        let answered = |clerk| Facts { clerk, ..LIVE };
        assert!(matches!(
            plan(
                None,
                Change::Upsert(&old),
                answered(Confirmation::Exists),
                context("m")
            ),
            Ok(Decision::Write(_, Outcome::Applied))
        ));
        tombstone(
            plan(
                None,
                Change::Upsert(&old),
                answered(Confirmation::Gone),
                context("m"),
            ),
            SkipReason::Deleted,
            Kind::User,
        );
        // Deletes and parent-deleted memberships never need to ask.
        let id = item(Kind::User, "user_1");
        assert!(matches!(
            plan(None, Change::Delete(&id), unasked(i64::MAX), context("m")),
            Ok(Decision::Write(_, Outcome::Applied))
        ));
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

    // The property: whatever the order, duplicates included, and however long tombstones last,
    // the store ends as the newest event of each item implies, with the cascades, the orphans and
    // the resurrection guard's verdicts; a deleted item is never live again.

    const USERS: usize = 3;
    const ORGANIZATIONS: usize = 2;
    const MEMBERSHIPS: usize = 4;
    /// Versions are `updated_at` 1 to 3; once tombstones expire, none younger than this remains.
    const AFTER_EXPIRY_MS: i64 = 100;

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

    fn is_membership(n: usize) -> bool {
        n >= USERS + ORGANIZATIONS
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

    /// One step of a generated history.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Step {
        /// Item `n` at version `v` (`Some`), or its delete (`None`).
        Event(usize, Option<i64>),
        /// Time passes beyond the tombstone TTL: every tombstone expires, and any event replayed
        /// from then on is older than any tombstone.
        Expire,
        /// Membership `m` at version `v`, racing its parent `p`'s delete on another instance: its
        /// parents are read while live, then `p` is deleted (and its cascade runs), then the
        /// membership is written.
        Race(usize, i64, usize),
    }

    fn histories() -> impl Strategy<Value = Vec<Step>> {
        let items = USERS + ORGANIZATIONS + MEMBERSHIPS;
        // Per item: versions 1..=n as changes (0 versions: never seen), maybe a delete; then
        // duplicated, shuffled, and maybe cut by an expiry or two.
        prop::collection::vec((0..4i64, prop::bool::weighted(0.3)), items)
            .prop_flat_map(|items| {
                let events: Vec<Step> = items
                    .iter()
                    .enumerate()
                    .flat_map(|(n, &(versions, deleted))| {
                        (1..=versions)
                            .map(move |v| Step::Event(n, Some(v)))
                            .chain(deleted.then_some(Step::Event(n, None)))
                    })
                    .collect();
                let len = events.len().max(1);
                let races = (0..MEMBERSHIPS, 1..4i64, 0..2usize).prop_map(|(m, v, p)| {
                    let m = USERS + ORGANIZATIONS + m;
                    Step::Race(m, v, parents_of(m)[p])
                });
                (
                    Just(events),
                    prop::collection::vec(0..len, 0..len + 1),
                    prop::collection::vec(0..2 * len + 1, 0..3),
                    prop::collection::vec(races, 0..2),
                )
            })
            .prop_map(|(mut events, duplicates, expiries, races)| {
                let copies: Vec<Step> = duplicates
                    .iter()
                    .filter_map(|&i| events.get(i).copied())
                    .collect();
                events.extend(copies);
                events.extend(races);
                (events, expiries)
            })
            .prop_flat_map(|(events, expiries)| (Just(events).prop_shuffle(), Just(expiries)))
            .prop_map(|(mut events, expiries)| {
                for at in expiries {
                    events.insert(at.min(events.len()), Step::Expire);
                }
                events
            })
    }

    /// The model world: the store, Clerk's truth, and how old the oldest surviving tombstone is.
    struct World<'h> {
        store: BTreeMap<usize, Document>,
        history: &'h [Step],
        oldest_tombstone_ms: i64,
    }

    impl World<'_> {
        fn deleted(&self, n: usize) -> bool {
            self.history.iter().any(|&step| {
                step == Step::Event(n, None) || matches!(step, Step::Race(_, _, p) if p == n)
            })
        }

        /// Clerk deletes a membership with its organization or user.
        fn gone_from_clerk(&self, n: usize) -> bool {
            self.deleted(n)
                || (is_membership(n) && parents_of(n).into_iter().any(|p| self.deleted(p)))
        }

        fn parents(&self, n: usize) -> Parents {
            match is_membership(n) {
                true => Parents::of(parents_of(n).map(|p| self.store.get(&p).map(document::state))),
                false => Parents::Live,
            }
        }

        /// One change, as `apply` makes it: the decision asked with the facts it needs, Clerk
        /// asked when it says so, parents looked at again after a membership is written, and a
        /// deleted organization or user cascading to its memberships.
        fn deliver(&mut self, n: usize, change: Change<'_>, event_id: &str) {
            let parents = self.parents(n);
            self.deliver_with(n, change, parents, event_id, |_| {});
        }

        /// `deliver`, with the parents as read before `meanwhile` runs.
        fn deliver_with(
            &mut self,
            n: usize,
            change: Change<'_>,
            parents: Parents,
            event_id: &str,
            meanwhile: impl FnOnce(&mut Self),
        ) {
            meanwhile(self);
            let applied = self.apply_one(n, change, parents, event_id);
            if applied == Outcome::Applied
                && is_membership(n)
                && self.parents(n) == Parents::Deleted
            {
                self.apply_one(n, change, Parents::Deleted, event_id);
            }
            let parent_deleted = matches!(
                applied,
                Outcome::Applied | Outcome::Skipped(SkipReason::Deleted)
            );
            if matches!(change, Change::Delete(it) if it.kind != Kind::Membership) && parent_deleted
            {
                let children: Vec<usize> = (USERS + ORGANIZATIONS
                    ..USERS + ORGANIZATIONS + MEMBERSHIPS)
                    .filter(|&m| parents_of(m).contains(&n))
                    .filter(|m| {
                        self.store
                            .get(m)
                            .is_some_and(|d| document::state(d).is_live(Kind::Membership))
                    })
                    .collect();
                for m in children {
                    self.deliver(m, Change::Delete(&universe(m)), event_id);
                }
            }
        }

        fn apply_one(
            &mut self,
            n: usize,
            change: Change<'_>,
            parents: Parents,
            event_id: &str,
        ) -> Outcome {
            let mut facts = Facts {
                parents,
                clerk: Confirmation::Unasked {
                    oldest_tombstone_ms: self.oldest_tombstone_ms,
                },
            };
            loop {
                match plan(self.store.get(&n), change, facts, context(event_id)).unwrap() {
                    Decision::Skip(reason) => return Outcome::Skipped(reason),
                    Decision::AskClerk => {
                        facts.clerk = match self.gone_from_clerk(n) {
                            true => Confirmation::Gone,
                            false => Confirmation::Exists,
                        }
                    }
                    Decision::Write(document, outcome) => {
                        self.store.insert(n, document);
                        return outcome;
                    }
                }
            }
        }
    }

    proptest! {
        #[test]
        fn any_order_of_any_history_ends_in_the_newest_state(history in histories()) {
            let mut world = World { store: BTreeMap::new(), history: &history, oldest_tombstone_ms: 0 };
            let mut live_after_delete = Vec::new();
            for (e, &step) in history.iter().enumerate() {
                let (n, version) = match step {
                    Step::Event(n, version) => (n, version),
                    Step::Expire => {
                        world.store.retain(|_, d| !document::state(d).is_tombstone());
                        world.oldest_tombstone_ms = AFTER_EXPIRY_MS;
                        continue;
                    }
                    Step::Race(m, v, p) => {
                        let snapshot = version_of(m, v);
                        let parents = world.parents(m);
                        world.deliver_with(m, Change::Upsert(&snapshot), parents, &format!("msg_{e}"), |world| {
                            world.deliver(p, Change::Delete(&universe(p)), &format!("msg_{e}_parent"));
                        });
                        continue;
                    }
                };
                let snapshot = version.map(|v| version_of(n, v));
                let deleted = universe(n);
                let change = match &snapshot {
                    Some(snapshot) => Change::Upsert(snapshot),
                    None => Change::Delete(&deleted),
                };
                world.deliver(n, change, &format!("msg_{e}"));
                // Once an item's delete has been delivered, it is never live again.
                let delivered = &history[..=e];
                live_after_delete.extend((0..USERS + ORGANIZATIONS + MEMBERSHIPS).filter(|&i| {
                    delivered.iter().any(|&s| s == Step::Event(i, None) || matches!(s, Step::Race(_, _, p) if p == i))
                        && world.store.get(&i).is_some_and(|d| !document::state(d).is_tombstone())
                }));
            }
            prop_assert!(live_after_delete.is_empty(), "{:?}", live_after_delete);
            let expired = history.contains(&Step::Expire);
            let seen = history.iter().flat_map(|step| match *step {
                Step::Event(n, _) => vec![n],
                Step::Race(m, _, p) => vec![m, p],
                Step::Expire => vec![],
            });
            for n in seen {
                let it = universe(n);
                let newest = history.iter().filter_map(|&step| match step {
                    Step::Event(i, v) if i == n => v,
                    Step::Race(m, v, _) if m == n => Some(v),
                    _ => None,
                }).max();
                let state = world.store.get(&n).map(document::state);
                if world.gone_from_clerk(n) {
                    prop_assert!(!state.is_some_and(|s| s.is_live(it.kind)), "{:?}", world.store.get(&n));
                    if world.deleted(n) && !expired {
                        prop_assert_eq!(state, Some(State::Tombstone { of: Some(it.kind) }));
                        prop_assert!(world.store[&n].get("organizationId").is_none());
                    }
                } else {
                    let document = &world.store[&n];
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
