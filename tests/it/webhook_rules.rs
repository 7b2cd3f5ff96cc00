//! The document rules, through the application as `main` builds it: what a delivery stores, field
//! for field; only a newer version changes it; replays, deletes and other event types; many
//! versions at once. What was stored is read back from the application's store.

use serde_json::{Value, json};

use crate::helpers::{
    SECRET, T0, applied, clerk_event, clerk_user, header, now, signed, skipped, spawn_app,
    svix_headers, user_changed, user_deleted, version,
};

#[tokio::test]
async fn a_created_user_is_stored_field_for_field() {
    let app = spawn_app(&[]).await;
    let event = clerk_event(
        "user.created",
        json!({
            "id": "user_2fields", "object": "user",
            "username": "ada_l", "first_name": "Ada", "last_name": "Lovelace",
            "image_url": "https://img.clerk.com/ada.png", "external_id": "crm-42",
            "primary_email_address_id": "idn_b",
            "email_addresses": [
                {"id": "idn_a", "object": "email_address", "email_address": "a@example.com"},
                {"id": "idn_b", "object": "email_address", "email_address": "b@example.com"},
                {"id": "idn_c", "object": "email_address", "email_address": "c@example.com"}
            ],
            "primary_phone_number_id": "idn_p2",
            "phone_numbers": [
                {"id": "idn_p1", "phone_number": "+15550001"},
                {"id": "idn_p2", "phone_number": "+15550002"}
            ],
            "public_metadata": {"plan": "pro", "seats": 3},
            "private_metadata": {"stripe": "cus_123"},
            "unsafe_metadata": {"theme": "dark"},
            "created_at": 1_700_000_000_000i64,
            "updated_at": 1_700_000_123_456i64,
            "last_sign_in_at": 1_700_000_100_000i64
        }),
    );
    let (headers, body) = signed(SECRET, &event);
    assert_eq!(app.post(&headers, body).await, applied());

    // Exactly these fields: nothing else (private metadata above all) is stored.
    let expected = json!({
        "id": "user_2fields",
        "type": "user",
        "email": "b@example.com",
        "emailAddresses": ["a@example.com", "b@example.com", "c@example.com"],
        "phoneNumber": "+15550002",
        "firstName": "Ada",
        "lastName": "Lovelace",
        "username": "ada_l",
        "imageUrl": "https://img.clerk.com/ada.png",
        "externalId": "crm-42",
        "publicMetadata": {"plan": "pro", "seats": 3},
        "role": "USER",
        "createdAt": "2023-11-14T22:13:20Z",
        "updatedAt": "2023-11-14T22:15:23.456Z",
        "clerkUpdatedAt": 1_700_000_123_456i64,
        "lastSignInAt": "2023-11-14T22:15:00Z",
        "lastEventId": header(&headers, "svix-id"),
    });
    assert_eq!(app.users_get("user_2fields").await, Some(expected.clone()));
    assert_eq!(app.users_list().await, [expected]);
}

#[tokio::test]
async fn payload_variations_are_stored_without_crashing() {
    let app = spawn_app(&[]).await;

    let minimal = clerk_event(
        "user.created",
        json!({"id": "user_minimal", "updated_at": T0}),
    );
    let (headers, body) = signed(SECRET, &minimal);
    assert_eq!(app.post(&headers, body).await, applied());
    assert_eq!(
        app.users_get("user_minimal").await,
        Some(json!({
            "id": "user_minimal", "type": "user", "email": null, "emailAddresses": [],
            "phoneNumber": null, "firstName": null, "lastName": null, "username": null,
            "imageUrl": null, "externalId": null, "publicMetadata": {}, "role": "USER",
            "createdAt": null, "updatedAt": "2023-11-14T22:13:20Z", "clerkUpdatedAt": T0,
            "lastSignInAt": null, "lastEventId": header(&headers, "svix-id"),
        }))
    );

    let mut no_email = clerk_user("user_no_email", T0);
    no_email["email_addresses"] = json!([]);
    no_email["primary_email_address_id"] = Value::Null;
    let mut nulls = clerk_user("user_nulls", T0);
    for field in [
        "email_addresses",
        "phone_numbers",
        "public_metadata",
        "private_metadata",
        "unsafe_metadata",
        "primary_email_address_id",
        "first_name",
    ] {
        nulls[field] = Value::Null;
    }
    nulls["a_field_clerk_adds_next_year"] = json!({"nested": [1, {"deep": null}]});
    let mut dangling = clerk_user("user_dangling", T0);
    dangling["primary_email_address_id"] = json!("idn_removed");
    for user in [no_email, nulls, dangling] {
        assert_eq!(
            app.deliver(&clerk_event("user.created", user)).await,
            applied()
        );
    }

    for id in ["user_no_email", "user_nulls"] {
        let document = app.users_get(id).await.unwrap();
        assert_eq!(document["email"], Value::Null, "{id}");
        assert_eq!(document["emailAddresses"], json!([]), "{id}");
    }
    let nulls = app.users_get("user_nulls").await.unwrap();
    assert_eq!(nulls["publicMetadata"], json!({}));
    assert_eq!(nulls["firstName"], Value::Null);
    assert_eq!(nulls["lastName"], "Lovelace");
    // A primary id that matches no address means no email, never simply the first address.
    let dangling = app.users_get("user_dangling").await.unwrap();
    assert_eq!(dangling["email"], Value::Null);
    assert_eq!(
        dangling["emailAddresses"],
        json!(["other@example.com", "ada@example.com"])
    );
    assert_eq!(app.users_list().await.len(), 4);
}

#[tokio::test]
async fn only_a_newer_update_changes_the_document() {
    let app = spawn_app(&[]).await;
    assert_eq!(
        app.deliver(&version("user_1", T0, "First")).await,
        applied()
    );

    let (newer_headers, newer) = signed(SECRET, &version("user_1", T0 + 10, "Newer"));
    assert_eq!(app.post(&newer_headers, newer).await, applied());
    let current = app.users_get("user_1").await.unwrap();
    assert_eq!(current["firstName"], "Newer");
    assert_eq!(current["clerkUpdatedAt"], T0 + 10);
    assert_eq!(current["lastEventId"], header(&newer_headers, "svix-id"));

    for (case, updated_at) in [("older", T0 + 5), ("equal", T0 + 10), ("first", T0)] {
        assert_eq!(
            app.deliver(&version("user_1", updated_at, case)).await,
            skipped("not_newer"),
            "{case}"
        );
        assert_eq!(
            app.users_get("user_1").await.as_ref(),
            Some(&current),
            "{case}"
        );
    }
}

#[tokio::test]
async fn a_replayed_delivery_changes_nothing() {
    let app = spawn_app(&[]).await;
    let event = version("user_1", T0, "Once");
    let (headers, body) = signed(SECRET, &event);
    assert_eq!(app.post(&headers, body.clone()).await, applied());
    let stored = app.users_list().await;

    // The same delivery again, then as Svix retries it: same id and body, a fresh signature.
    assert_eq!(app.post(&headers, body.clone()).await, skipped("not_newer"));
    let id = header(&headers, "svix-id");
    let retried = svix_headers(SECRET, id, now(), &body);
    assert_eq!(app.post(&retried, body).await, skipped("not_newer"));
    assert_eq!(app.users_list().await, stored);
}

#[tokio::test]
async fn a_deleted_user_stays_deleted() {
    let app = spawn_app(&[]).await;
    for id in ["user_gone", "user_kept"] {
        assert_eq!(
            app.deliver(&user_changed("user.created", id, T0)).await,
            applied()
        );
    }
    let kept = app.users_get("user_kept").await.unwrap();

    assert_eq!(app.deliver(&user_deleted("user_gone")).await, applied());
    let get = app.command(&["users", "get", "user_gone"]);
    assert_eq!(get.status.code(), Some(1));
    assert!(get.stdout.is_empty());
    assert!(
        !get.stderr.is_empty(),
        "a missing user is explained on stderr"
    );
    assert_eq!(app.users_list().await, std::slice::from_ref(&kept));

    for event in [
        user_changed("user.created", "user_gone", T0 + 1_000),
        user_changed("user.updated", "user_gone", T0 + 2_000),
        user_deleted("user_gone"),
    ] {
        let (status, _) = app.deliver(&event).await;
        assert_eq!(status, 200, "{}", event["type"]);
        assert_eq!(app.users_get("user_gone").await, None, "{}", event["type"]);
    }

    // A delete that overtakes the create (Svix does not order deliveries) also wins.
    assert_eq!(app.deliver(&user_deleted("user_early")).await, applied());
    let (status, _) = app
        .deliver(&user_changed("user.created", "user_early", T0))
        .await;
    assert_eq!(status, 200);
    assert_eq!(app.users_get("user_early").await, None);
    assert_eq!(app.users_list().await, [kept]);
}

#[tokio::test]
async fn other_event_types_are_acknowledged_and_store_nothing() {
    let app = spawn_app(&[]).await;
    for event in [
        clerk_event(
            "session.created",
            json!({"id": "sess_1", "user_id": "user_1"}),
        ),
        clerk_event(
            "organizationInvitation.accepted",
            json!({"id": "orginv_1", "organization_id": "org_1", "user_id": "user_1"}),
        ),
        clerk_event(
            "organizationDomain.deleted",
            json!({"id": "orgdmn_1", "deleted": true}),
        ),
        clerk_event(
            "email.created",
            json!({"id": "ema_1", "user_id": "user_1", "to_email_address": "a@example.com"}),
        ),
        clerk_event("user.something_new", clerk_user("user_1", T0)),
    ] {
        assert_eq!(
            app.deliver(&event).await,
            (200, json!({"status": "ignored"})),
            "{}",
            event["type"]
        );
    }
    assert_eq!(app.users_list().await, Vec::<Value>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_versions_of_one_user_end_at_the_newest() {
    let app = spawn_app(&[]).await;
    // Several users so that a lost update (a newer version overwritten by an older one that
    // read before it wrote) has more than one chance to show.
    let users = ["user_race_a", "user_race_b", "user_race_c", "user_race_d"];
    let deliveries: Vec<_> = (1..=32)
        .flat_map(|n| users.map(|id| (id, n)))
        .map(|(id, n)| {
            let mut event = version(id, T0 + n, &format!("v{n}"));
            if n % 2 == 1 {
                event["type"] = json!("user.created");
            }
            (id, n, signed(SECRET, &event))
        })
        .collect();
    let responses = futures::future::join_all(
        deliveries
            .iter()
            .map(|(_, _, (headers, body))| app.post(headers, body.clone())),
    )
    .await;
    for (status, body) in &responses {
        assert_eq!(*status, 200, "{body}");
    }

    for id in users {
        let newest = app.users_get(id).await.unwrap();
        let (_, _, (headers, _)) = deliveries
            .iter()
            .find(|(user, n, _)| *user == id && *n == 32)
            .unwrap();
        assert_eq!(newest["clerkUpdatedAt"], T0 + 32, "{id}");
        assert_eq!(newest["firstName"], "v32", "{id}");
        assert_eq!(newest["lastEventId"], header(headers, "svix-id"), "{id}");
    }
    assert_eq!(app.users_list().await.len(), users.len());
}
