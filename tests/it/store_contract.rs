//! The store contract: what every `Store` must do, run against each implementation through
//! `store_contract_tests!(name, async constructor)`.

use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use handler::store::{Condition, ETag, ListFilter, Store, StoreError};
use handler::sync::decide::Outcome;
use handler::sync::decide::SkipReason;
use handler::sync::document::{self, State};
use handler::sync::item::{ItemId, ItemRef, Kind};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use serde_json::{Value, json};

use crate::helpers::{
    TTL_SECONDS, clerk_event, clerk_membership, clerk_organization, clerk_user, stored_item,
    stored_user, user_changed, user_deleted,
};

/// Expands to one test per contract case, each on a store from `$make` (an async expression
/// giving `(Arc<dyn Store>, guard)`; the guard keeps the store's resources alive). Cases a store
/// can only pass with a real clock behind it (`expired_tombstone_reads_as_absent_and_can_be_replaced`)
/// are named after `also:` by the stores that can run them.
macro_rules! store_contract_tests {
    ($name:ident, $make:expr $(, also: $extra:ident)*) => {
        crate::helpers::cases_on_store!($name, $make, crate::store_contract, [
            missing_item_reads_as_none,
            create_if_absent_happens_once,
            replace_needs_the_current_etag,
            replace_of_a_missing_item_fails,
            documents_round_trip_without_system_fields,
            list_leaves_out_tombstones,
            states_of_reads_the_states_of_the_ids_asked_for,
            apply_follows_the_sync_rules,
            application_fields_survive_updates,
            concurrent_deliveries_for_one_user_keep_the_newest,
            random_histories_delivered_concurrently_end_in_the_newest_state,
            organizations_and_memberships_follow_the_sync_rules,
            memberships_are_listed_by_organization_and_by_user,
            memberships_of_names_the_live_memberships_of_a_parent,
            deleting_an_organization_or_a_user_tombstones_its_memberships,
            an_interrupted_cascade_is_finished_by_the_redelivery,
            an_event_for_an_id_holding_another_kind_changes_nothing,
            a_membership_written_as_its_organization_is_deleted_is_tombstoned,
            $($extra,)*
        ]);
    };
}
pub(crate) use store_contract_tests;

store_contract_tests!(
    local,
    async { crate::helpers::local_store() },
    also: expired_tombstone_reads_as_absent_and_can_be_replaced
);

fn id(raw: &str) -> ItemId {
    ItemId::parse(raw).unwrap()
}

fn user_ref(raw: &str) -> ItemRef {
    ItemRef {
        kind: Kind::User,
        id: id(raw),
    }
}

use crate::helpers::object as doc;

async fn etag_of(store: &dyn Store, user: &str) -> ETag {
    let (stored, _) = store.read(&id(user)).await.unwrap();
    stored.expect("stored").etag
}

pub async fn missing_item_reads_as_none(store: Arc<dyn Store>) {
    let (stored, _) = store.read(&id("user_missing")).await.unwrap();
    assert_eq!(stored, None);
}

pub async fn create_if_absent_happens_once(store: Arc<dyn Store>) {
    let first = doc(json!({"id": "user_a", "type": "user", "n": 1}));
    let second = doc(json!({"id": "user_a", "type": "user", "n": 2}));
    store
        .write(&id("user_a"), &first, &Condition::Absent)
        .await
        .unwrap();
    let again = store
        .write(&id("user_a"), &second, &Condition::Absent)
        .await;
    assert!(
        matches!(again, Err(StoreError::ConditionFailed)),
        "{again:?}"
    );
    assert_eq!(stored_item(store.as_ref(), "user_a").await["n"], 1);
}

pub async fn replace_needs_the_current_etag(store: Arc<dyn Store>) {
    let user = id("user_b");
    store
        .write(
            &user,
            &doc(json!({"id": "user_b", "n": 1})),
            &Condition::Absent,
        )
        .await
        .unwrap();
    let first = etag_of(store.as_ref(), "user_b").await;
    store
        .write(
            &user,
            &doc(json!({"id": "user_b", "n": 2})),
            &Condition::Matches(first.clone()),
        )
        .await
        .unwrap();
    let second = etag_of(store.as_ref(), "user_b").await;
    assert_ne!(first, second, "every write changes the ETag");
    let stale = store
        .write(
            &user,
            &doc(json!({"id": "user_b", "n": 3})),
            &Condition::Matches(first),
        )
        .await;
    assert!(
        matches!(stale, Err(StoreError::ConditionFailed)),
        "{stale:?}"
    );
    assert_eq!(stored_item(store.as_ref(), "user_b").await["n"], 2);
}

pub async fn replace_of_a_missing_item_fails(store: Arc<dyn Store>) {
    let result = store
        .write(
            &id("user_c"),
            &doc(json!({"id": "user_c"})),
            &Condition::Matches(ETag("\"00000000-0000-0000-0000-000000000000\"".into())),
        )
        .await;
    assert!(
        matches!(result, Err(StoreError::ConditionFailed)),
        "{result:?}"
    );
    assert_eq!(stored_item(store.as_ref(), "user_c").await, Value::Null);
}

pub async fn documents_round_trip_without_system_fields(store: Arc<dyn Store>) {
    let original = doc(json!({
        "id": "user_d", "type": "user", "email": null, "nested": {"a": [1, "two", null]},
        "unicode": "Zoë 🚀", "big": 9_007_199_254_740_991i64
    }));
    store
        .write(&id("user_d"), &original, &Condition::Absent)
        .await
        .unwrap();
    assert_eq!(
        stored_item(store.as_ref(), "user_d").await,
        Value::Object(original)
    );
}

pub async fn list_leaves_out_tombstones(store: Arc<dyn Store>) {
    for n in 0..3 {
        let user = format!("user_list{n}");
        store
            .write(
                &id(&user),
                &doc(json!({"id": user, "type": "user"})),
                &Condition::Absent,
            )
            .await
            .unwrap();
    }
    let tombstone = document::tombstone(
        &user_ref("user_gone"),
        "msg_1",
        "2026-01-01T00:00:00Z",
        TTL_SECONDS,
    );
    store
        .write(&id("user_gone"), &tombstone, &Condition::Absent)
        .await
        .unwrap();
    let documents: Vec<_> = store
        .list(ListFilter::all(Kind::User))
        .try_collect()
        .await
        .unwrap();
    let mut ids: Vec<String> = documents
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    assert_eq!(ids, ["user_list0", "user_list1", "user_list2"]);
}

pub async fn states_of_reads_the_states_of_the_ids_asked_for(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let documents = [
        json!({"id": "user_s1", "type": "user", "clerkUpdatedAt": 7, "email": "a@example.com"}),
        json!({"id": "org_s1", "type": "organization", "clerkUpdatedAt": 8}),
        json!({"id": "orgmem_s1", "type": "membership", "clerkUpdatedAt": 9,
               "organizationId": "org_s1", "userId": "user_s1"}),
        // Written by something else: no type the handler knows, no version.
        json!({"id": "user_s2", "name": "not ours"}),
        json!({"id": "user_not_asked", "type": "user", "clerkUpdatedAt": 1}),
    ];
    for document in documents {
        let raw = document["id"].as_str().unwrap().to_owned();
        s.write(&id(&raw), &doc(document), &Condition::Absent)
            .await
            .unwrap();
    }
    let tombstone = document::tombstone(
        &user_ref("user_s3"),
        "msg_1",
        "2026-01-01T00:00:00Z",
        TTL_SECONDS,
    );
    s.write(&id("user_s3"), &tombstone, &Condition::Absent)
        .await
        .unwrap();

    let asked = [
        "user_s1",
        "org_s1",
        "orgmem_s1",
        "user_s2",
        "user_s3",
        "user_none",
    ]
    .map(id);
    let (mut states, _) = s.states_of(&asked).await.unwrap();
    states.sort_by(|a, b| a.0.cmp(&b.0));
    let live = |kind, clerk_updated_at| State::Live {
        kind,
        clerk_updated_at,
    };
    assert_eq!(
        states,
        [
            ("org_s1".to_owned(), live(Some(Kind::Organization), 8)),
            ("orgmem_s1".to_owned(), live(Some(Kind::Membership), 9)),
            ("user_s1".to_owned(), live(Some(Kind::User), 7)),
            ("user_s2".to_owned(), live(None, i64::MIN)),
            (
                "user_s3".to_owned(),
                State::Tombstone {
                    of: Some(Kind::User)
                }
            ),
        ]
    );
    assert!(s.states_of(&[]).await.unwrap().0.is_empty());
    // A page's worth of ids, and then some, in one query.
    let many: Vec<ItemId> = (0..1_500).map(|n| id(&format!("user_many{n}"))).collect();
    let (states, _) = s
        .states_of(&[many.as_slice(), &asked].concat())
        .await
        .unwrap();
    assert_eq!(states.len(), 5);
}

pub async fn expired_tombstone_reads_as_absent_and_can_be_replaced(store: Arc<dyn Store>) {
    let user = id("user_e");
    let tombstone = document::tombstone(&user_ref("user_e"), "msg_1", "2026-01-01T00:00:00Z", 1);
    store
        .write(&user, &tombstone, &Condition::Absent)
        .await
        .unwrap();
    assert_eq!(
        document::state(&doc(stored_item(store.as_ref(), "user_e").await)),
        State::Tombstone {
            of: Some(Kind::User)
        }
    );
    // Waits out the one-second ttl; the assertion is on what is stored afterwards, not on time.
    let mut expired = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if stored_item(store.as_ref(), "user_e").await == Value::Null {
            expired = true;
            break;
        }
    }
    assert!(expired, "the tombstone never expired");
    store
        .write(
            &user,
            &doc(json!({"id": "user_e", "type": "user"})),
            &Condition::Absent,
        )
        .await
        .unwrap();
    assert!(stored_user(store.as_ref(), "user_e").await.is_some());
}

async fn apply_event(
    store: &dyn Store,
    msg_id: &str,
    event: &Value,
) -> Result<Outcome, StoreError> {
    match crate::helpers::apply_event(store, msg_id, event).await {
        Ok(report) => Ok(report.outcome),
        Err(handler::sync::apply::ApplyError::Store(error)) => Err(error),
        Err(other) => panic!("not a store error: {other}"),
    }
}

pub async fn apply_follows_the_sync_rules(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let created = user_changed("user.created", "user_f", 10);
    assert_eq!(
        apply_event(s, "msg_1", &created).await.unwrap(),
        Outcome::Applied
    );
    let document = stored_user(s, "user_f").await.unwrap();
    assert_eq!(document["email"], "ada@example.com");
    assert_eq!(document["role"], "USER");
    assert_eq!(document["lastEventId"], "msg_1");

    assert_eq!(
        apply_event(s, "msg_1", &created).await.unwrap(),
        Outcome::Skipped(SkipReason::Unchanged),
        "replayed"
    );
    let older = user_changed("user.updated", "user_f", 9);
    assert_eq!(
        apply_event(s, "msg_2", &older).await.unwrap(),
        Outcome::Skipped(SkipReason::Older),
        "late"
    );
    assert_eq!(
        stored_user(s, "user_f").await.unwrap()["lastEventId"],
        "msg_1"
    );

    let newer = user_changed("user.updated", "user_f", 11);
    assert_eq!(
        apply_event(s, "msg_3", &newer).await.unwrap(),
        Outcome::Applied
    );
    assert_eq!(
        stored_user(s, "user_f").await.unwrap()["clerkUpdatedAt"],
        11
    );

    assert_eq!(
        apply_event(s, "msg_4", &user_deleted("user_f"))
            .await
            .unwrap(),
        Outcome::Applied
    );
    assert_eq!(stored_user(s, "user_f").await, None);
    let tombstone = stored_item(s, "user_f").await;
    assert_eq!(tombstone["type"], "tombstone");
    assert_eq!(tombstone["ttl"], TTL_SECONDS);
    for personal in [
        "email",
        "emailAddresses",
        "firstName",
        "lastName",
        "imageUrl",
    ] {
        assert!(
            tombstone.get(personal).is_none(),
            "tombstone holds {personal}"
        );
    }

    let deleted = Outcome::Skipped(SkipReason::Deleted);
    let resurrect = user_changed("user.updated", "user_f", 1_000);
    assert_eq!(apply_event(s, "msg_5", &resurrect).await.unwrap(), deleted);
    assert_eq!(
        apply_event(s, "msg_6", &user_changed("user.created", "user_f", 2_000))
            .await
            .unwrap(),
        deleted
    );
    assert_eq!(stored_user(s, "user_f").await, None);
}

pub async fn application_fields_survive_updates(store: Arc<dyn Store>) {
    let s = store.as_ref();
    apply_event(s, "msg_1", &user_changed("user.created", "user_g", 10))
        .await
        .unwrap();
    let (stored, _) = s.read(&id("user_g")).await.unwrap();
    let stored = stored.unwrap();
    let mut edited = stored.document.clone();
    edited.insert("role".into(), json!("ADMIN"));
    edited.insert("favorites".into(), json!(["post_1"]));
    s.write(&id("user_g"), &edited, &Condition::Matches(stored.etag))
        .await
        .unwrap();

    let mut renamed = clerk_user("user_g", 11);
    renamed["first_name"] = json!("Augusta");
    let update = crate::helpers::clerk_event("user.updated", renamed);
    assert_eq!(
        apply_event(s, "msg_2", &update).await.unwrap(),
        Outcome::Applied
    );
    let document = stored_user(s, "user_g").await.unwrap();
    assert_eq!(document["firstName"], "Augusta");
    assert_eq!(document["role"], "ADMIN");
    assert_eq!(document["favorites"], json!(["post_1"]));
}

pub async fn concurrent_deliveries_for_one_user_keep_the_newest(store: Arc<dyn Store>) {
    let tasks: Vec<_> = (1..=24i64)
        .map(|version| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let event = user_changed("user.updated", "user_h", version);
                apply_event(store.as_ref(), &format!("msg_{version}"), &event).await
            })
        })
        .collect();
    let mut applied = 0;
    for task in tasks {
        if task.await.unwrap().unwrap() == Outcome::Applied {
            applied += 1;
        }
    }
    assert!(applied >= 1);
    let document = stored_user(store.as_ref(), "user_h").await.unwrap();
    assert_eq!(document["clerkUpdatedAt"], 24);
    assert_eq!(document["lastEventId"], "msg_24");
}

/// One generated delivery: `(user, Some(version))` for a change, `(user, None)` for a delete.
type Delivery = (usize, Option<i64>);

fn histories() -> impl Strategy<Value = Vec<Delivery>> {
    prop::collection::vec((1..5i64, any::<bool>()), 1..4)
        .prop_map(|users| {
            let mut deliveries: Vec<Delivery> = Vec::new();
            for (user, (versions, deleted)) in users.into_iter().enumerate() {
                // Every change twice: Svix delivers at least once.
                for version in (1..=versions).chain(1..=versions) {
                    deliveries.push((user, Some(version)));
                }
                if deleted {
                    deliveries.push((user, None));
                }
            }
            deliveries
        })
        .prop_shuffle()
}

/// Proptest generates the histories; the cases run on the async store directly (no shrinking:
/// a failure prints its whole history instead).
pub async fn random_histories_delivered_concurrently_end_in_the_newest_state(
    store: Arc<dyn Store>,
) {
    let mut runner = TestRunner::new(ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    for case in 0..12 {
        let history = histories().new_tree(&mut runner).unwrap().current();
        // Each case has its own users, so cases never see each other's state.
        let user_id = |user: usize| format!("user_p{case}_{user}");
        let tasks: Vec<_> = history
            .iter()
            .enumerate()
            .map(|(n, &(user, change))| {
                let store = Arc::clone(&store);
                let event = match change {
                    Some(version) => user_changed("user.updated", &user_id(user), version),
                    None => user_deleted(&user_id(user)),
                };
                tokio::spawn(async move {
                    apply_event(store.as_ref(), &format!("msg_{case}_{n}"), &event).await
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        for &(user, _) in &history {
            let item = stored_item(store.as_ref(), &user_id(user)).await;
            if history.contains(&(user, None)) {
                assert_eq!(item["type"], "tombstone", "history {history:?}");
            } else {
                let newest = history
                    .iter()
                    .filter_map(|&(u, v)| (u == user).then_some(v).flatten())
                    .max();
                assert_eq!(item["clerkUpdatedAt"], json!(newest), "history {history:?}");
                assert_eq!(item["role"], "USER", "history {history:?}");
            }
        }
    }
}

fn organization_event(event_type: &str, org: &str, version: i64) -> Value {
    clerk_event(event_type, clerk_organization(org, version))
}

fn membership_event(
    event_type: &str,
    membership: &str,
    org: &str,
    user: &str,
    version: i64,
) -> Value {
    clerk_event(event_type, clerk_membership(membership, org, user, version))
}

fn deleted(event_type: &str, id: &str) -> Value {
    clerk_event(event_type, json!({"id": id, "deleted": true}))
}

async fn memberships(
    store: &dyn Store,
    organization: Option<&str>,
    user: Option<&str>,
) -> Vec<String> {
    let filter = ListFilter {
        organization_id: organization.map(id),
        user_id: user.map(id),
        ..ListFilter::all(Kind::Membership)
    };
    let documents: Vec<_> = store.list(filter).try_collect().await.unwrap();
    let mut ids: Vec<String> = documents
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

async fn state_of(store: &dyn Store, raw: &str) -> Option<State> {
    let (stored, _) = store.read(&id(raw)).await.unwrap();
    stored.map(|s| document::state(&s.document))
}

pub async fn organizations_and_memberships_follow_the_sync_rules(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let created = organization_event("organization.created", "org_r", 10);
    assert_eq!(
        apply_event(s, "msg_1", &created).await.unwrap(),
        Outcome::Applied
    );
    let organization = stored_item(s, "org_r").await;
    assert_eq!(organization["type"], "organization");
    assert_eq!(organization["name"], "Analytical Engines");
    assert_eq!(organization["publicMetadata"], json!({"tier": "gold"}));
    assert!(organization.get("privateMetadata").is_none());
    assert_eq!(
        apply_event(s, "msg_1", &created).await.unwrap(),
        Outcome::Skipped(SkipReason::Unchanged)
    );

    // A membership may arrive before its user: it is stored.
    let member = membership_event(
        "organizationMembership.created",
        "orgmem_r",
        "org_r",
        "user_r",
        10,
    );
    assert_eq!(
        apply_event(s, "msg_2", &member).await.unwrap(),
        Outcome::Applied
    );
    let membership = stored_item(s, "orgmem_r").await;
    assert_eq!(membership["organizationId"], "org_r");
    assert_eq!(membership["userId"], "user_r");
    assert_eq!(membership["role"], "org:member");
    assert!(membership.get("organization").is_none(), "{membership}");
    assert!(
        !membership.to_string().contains("ada@example.com"),
        "{membership}"
    );

    let older = membership_event(
        "organizationMembership.updated",
        "orgmem_r",
        "org_r",
        "user_r",
        9,
    );
    assert_eq!(
        apply_event(s, "msg_3", &older).await.unwrap(),
        Outcome::Skipped(SkipReason::Older)
    );
    let removed = membership_event(
        "organizationMembership.deleted",
        "orgmem_r",
        "org_r",
        "user_r",
        11,
    );
    assert_eq!(
        apply_event(s, "msg_4", &removed).await.unwrap(),
        Outcome::Applied
    );
    assert_eq!(
        stored_item(s, "orgmem_r").await,
        json!({"id": "orgmem_r", "type": "tombstone", "of": "membership",
               "deletedAt": stored_item(s, "orgmem_r").await["deletedAt"],
               "lastEventId": "msg_4", "ttl": TTL_SECONDS})
    );
    let late = membership_event(
        "organizationMembership.updated",
        "orgmem_r",
        "org_r",
        "user_r",
        12,
    );
    assert_eq!(
        apply_event(s, "msg_5", &late).await.unwrap(),
        Outcome::Skipped(SkipReason::Deleted)
    );
}

pub async fn memberships_are_listed_by_organization_and_by_user(store: Arc<dyn Store>) {
    let s = store.as_ref();
    for (n, (membership, org, user)) in [
        ("orgmem_l1", "org_l1", "user_l1"),
        ("orgmem_l2", "org_l1", "user_l2"),
        ("orgmem_l3", "org_l2", "user_l1"),
    ]
    .into_iter()
    .enumerate()
    {
        let event = membership_event("organizationMembership.created", membership, org, user, 1);
        apply_event(s, &format!("msg_{n}"), &event).await.unwrap();
    }
    apply_event(
        s,
        "msg_o",
        &organization_event("organization.created", "org_l1", 1),
    )
    .await
    .unwrap();
    assert_eq!(
        memberships(s, None, None).await,
        ["orgmem_l1", "orgmem_l2", "orgmem_l3"]
    );
    assert_eq!(
        memberships(s, Some("org_l1"), None).await,
        ["orgmem_l1", "orgmem_l2"]
    );
    assert_eq!(
        memberships(s, None, Some("user_l1")).await,
        ["orgmem_l1", "orgmem_l3"]
    );
    assert_eq!(
        memberships(s, Some("org_l2"), Some("user_l1")).await,
        ["orgmem_l3"]
    );
    assert_eq!(
        memberships(s, Some("org_l2"), Some("user_l2")).await,
        Vec::<String>::new()
    );
    let organizations: Vec<_> = s
        .list(ListFilter::all(Kind::Organization))
        .try_collect()
        .await
        .unwrap();
    assert_eq!(organizations.len(), 1);
    assert_eq!(organizations[0]["id"], "org_l1");
}

pub async fn memberships_of_names_the_live_memberships_of_a_parent(store: Arc<dyn Store>) {
    let s = store.as_ref();
    for (n, (membership, org, user)) in [
        ("orgmem_p1", "org_p1", "user_p1"),
        ("orgmem_p2", "org_p1", "user_p2"),
        ("orgmem_p3", "org_p2", "user_p1"),
    ]
    .into_iter()
    .enumerate()
    {
        let event = membership_event("organizationMembership.created", membership, org, user, 1);
        apply_event(s, &format!("msg_{n}"), &event).await.unwrap();
    }
    let of = |kind, raw: &str| ItemRef { kind, id: id(raw) };
    let names = |parent: ItemRef| async move {
        let mut ids: Vec<String> = s
            .memberships_of(&parent)
            .await
            .unwrap()
            .iter()
            .map(|id| id.as_str().to_owned())
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(
        names(of(Kind::Organization, "org_p1")).await,
        ["orgmem_p1", "orgmem_p2"]
    );
    assert_eq!(
        names(of(Kind::User, "user_p1")).await,
        ["orgmem_p1", "orgmem_p3"]
    );
    assert!(names(of(Kind::User, "user_none")).await.is_empty());
    assert!(names(of(Kind::Membership, "orgmem_p1")).await.is_empty());
    // A tombstoned membership is no longer one of them.
    let deleted = membership_event(
        "organizationMembership.deleted",
        "orgmem_p2",
        "org_p1",
        "user_p2",
        2,
    );
    apply_event(s, "msg_d", &deleted).await.unwrap();
    assert_eq!(names(of(Kind::Organization, "org_p1")).await, ["orgmem_p1"]);
}

pub async fn deleting_an_organization_or_a_user_tombstones_its_memberships(store: Arc<dyn Store>) {
    let s = store.as_ref();
    for (n, (membership, org, user)) in [
        ("orgmem_c1", "org_c1", "user_c1"),
        ("orgmem_c2", "org_c1", "user_c2"),
        ("orgmem_c3", "org_c2", "user_c3"),
        ("orgmem_c4", "org_c2", "user_c1"),
    ]
    .into_iter()
    .enumerate()
    {
        let event = membership_event("organizationMembership.created", membership, org, user, 1);
        apply_event(s, &format!("msg_{n}"), &event).await.unwrap();
    }
    let report =
        crate::helpers::apply_event(s, "msg_od", &deleted("organization.deleted", "org_c1"))
            .await
            .unwrap();
    assert_eq!((report.outcome, report.cascaded), (Outcome::Applied, 2));
    let gone = State::Tombstone {
        of: Some(Kind::Membership),
    };
    assert_eq!(state_of(s, "orgmem_c1").await, Some(gone));
    assert_eq!(state_of(s, "orgmem_c2").await, Some(gone));
    assert_eq!(memberships(s, None, None).await, ["orgmem_c3", "orgmem_c4"]);

    let report = crate::helpers::apply_event(s, "msg_ud", &user_deleted("user_c1"))
        .await
        .unwrap();
    assert_eq!((report.outcome, report.cascaded), (Outcome::Applied, 1));
    assert_eq!(state_of(s, "orgmem_c4").await, Some(gone));
    assert_eq!(memberships(s, None, None).await, ["orgmem_c3"]);

    // Membership events for a deleted organization or user are no-ops.
    for (n, (membership, org, user)) in [
        ("orgmem_c5", "org_c1", "user_c3"),
        ("orgmem_c6", "org_c2", "user_c1"),
    ]
    .into_iter()
    .enumerate()
    {
        let event = membership_event("organizationMembership.created", membership, org, user, 5);
        assert_eq!(
            apply_event(s, &format!("msg_late{n}"), &event)
                .await
                .unwrap(),
            Outcome::Skipped(SkipReason::ParentDeleted)
        );
        assert_eq!(state_of(s, membership).await, None);
    }
    assert_eq!(
        state_of(s, "orgmem_c3")
            .await
            .map(|s| s.is_live(Kind::Membership)),
        Some(true)
    );
}

pub async fn an_interrupted_cascade_is_finished_by_the_redelivery(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let event = membership_event(
        "organizationMembership.created",
        "orgmem_i",
        "org_i",
        "user_i",
        1,
    );
    apply_event(s, "msg_1", &event).await.unwrap();
    // The organization's tombstone was written, and the delivery failed before its cascade.
    let organization = ItemRef {
        kind: Kind::Organization,
        id: id("org_i"),
    };
    let tombstone =
        document::tombstone(&organization, "msg_2", "2026-01-01T00:00:00Z", TTL_SECONDS);
    s.write(&id("org_i"), &tombstone, &Condition::Absent)
        .await
        .unwrap();

    let report = crate::helpers::apply_event(s, "msg_2", &deleted("organization.deleted", "org_i"))
        .await
        .unwrap();
    assert_eq!(report.outcome, Outcome::Skipped(SkipReason::Deleted));
    assert_eq!(report.cascaded, 1);
    assert_eq!(
        state_of(s, "orgmem_i").await,
        Some(State::Tombstone {
            of: Some(Kind::Membership)
        })
    );
}

pub async fn an_event_for_an_id_holding_another_kind_changes_nothing(store: Arc<dyn Store>) {
    let s = store.as_ref();
    // Only an application writing under a Clerk-shaped id of another kind can cause this.
    let foreign = doc(json!({"id": "org_k", "type": "user", "note": "the application's"}));
    s.write(&id("org_k"), &foreign, &Condition::Absent)
        .await
        .unwrap();
    for event in [
        organization_event("organization.updated", "org_k", 5),
        deleted("organization.deleted", "org_k"),
    ] {
        let result = crate::helpers::apply_event(s, "msg_k", &event).await;
        assert!(
            matches!(result, Err(handler::sync::apply::ApplyError::Conflict(_))),
            "{result:?}"
        );
        assert_eq!(
            stored_item(s, "org_k").await,
            Value::Object(foreign.clone())
        );
    }
}

/// The real store, with one concurrent writer: just before a membership is written, its
/// organization is deleted (its tombstone written, the cascade's query already run and empty).
struct OrganizationDeletedMeanwhile {
    inner: Arc<dyn Store>,
    organization: ItemId,
    deleted: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl Store for OrganizationDeletedMeanwhile {
    async fn read(
        &self,
        id: &ItemId,
    ) -> Result<
        (
            Option<handler::store::Stored>,
            handler::store::RequestCharge,
        ),
        StoreError,
    > {
        self.inner.read(id).await
    }

    async fn write(
        &self,
        id: &ItemId,
        document: &handler::sync::document::Document,
        condition: &Condition,
    ) -> Result<handler::store::RequestCharge, StoreError> {
        let membership = document::state(document).is_live(Kind::Membership);
        if membership && !self.deleted.swap(true, std::sync::atomic::Ordering::SeqCst) {
            let organization = ItemRef {
                kind: Kind::Organization,
                id: self.organization.clone(),
            };
            let tombstone = document::tombstone(
                &organization,
                "msg_other",
                "2026-01-01T00:00:00Z",
                TTL_SECONDS,
            );
            self.inner
                .write(&self.organization, &tombstone, &Condition::Absent)
                .await?;
        }
        self.inner.write(id, document, condition).await
    }

    fn list(
        &self,
        filter: ListFilter,
    ) -> handler::store::Items<'_, handler::sync::document::Document> {
        self.inner.list(filter)
    }

    fn states(&self) -> handler::store::Items<'_, (String, State)> {
        self.inner.states()
    }

    async fn states_of(
        &self,
        ids: &[ItemId],
    ) -> Result<(Vec<(String, State)>, handler::store::RequestCharge), StoreError> {
        self.inner.states_of(ids).await
    }

    async fn memberships_of(&self, parent: &ItemRef) -> Result<Vec<ItemId>, StoreError> {
        self.inner.memberships_of(parent).await
    }
}

pub async fn a_membership_written_as_its_organization_is_deleted_is_tombstoned(
    store: Arc<dyn Store>,
) {
    let racing = OrganizationDeletedMeanwhile {
        inner: Arc::clone(&store),
        organization: id("org_race"),
        deleted: Default::default(),
    };
    let event = membership_event(
        "organizationMembership.created",
        "orgmem_race",
        "org_race",
        "user_race",
        1,
    );
    assert_eq!(
        apply_event(&racing, "msg_1", &event).await.unwrap(),
        Outcome::Skipped(SkipReason::ParentDeleted)
    );
    assert_eq!(
        state_of(store.as_ref(), "orgmem_race").await,
        Some(State::Tombstone {
            of: Some(Kind::Membership)
        })
    );
}
