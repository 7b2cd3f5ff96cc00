//! Organizations and memberships through the application as `main` builds it: stored, cascaded
//! on delete, refused when hostile; read back from its store as `organizations get|list` and
//! `memberships list` read them.

use handler::store::ListFilter;
use handler::sync::item::{ItemId, Kind};
use serde_json::{Value, json};

use crate::helpers::{
    clerk_event, clerk_membership, clerk_organization, spawn_app, user_changed, user_deleted,
};

const T0: i64 = 1_700_000_000_000;

fn organization(event_type: &str, id: &str, version: i64) -> Value {
    clerk_event(event_type, clerk_organization(id, version))
}

fn membership(event_type: &str, id: &str, org: &str, user: &str, version: i64) -> Value {
    clerk_event(event_type, clerk_membership(id, org, user, version))
}

/// `organizationMembership.created` at `T0`.
fn joined(id: &str, org: &str, user: &str) -> Value {
    membership("organizationMembership.created", id, org, user, T0)
}

fn deleted(event_type: &str, id: &str) -> Value {
    clerk_event(
        event_type,
        json!({"object": "organization", "id": id, "deleted": true}),
    )
}

fn ids(documents: &[Value]) -> Vec<&str> {
    let mut ids: Vec<&str> = documents
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    ids.sort();
    ids
}

/// Memberships, of an organization and/or a user when given, as `memberships list` selects them.
fn memberships(organization: Option<&str>, user: Option<&str>) -> ListFilter {
    let id = |kind, id| ItemId::parse_as(kind, id).unwrap();
    ListFilter {
        organization_id: organization.map(|o| id(Kind::Organization, o)),
        user_id: user.map(|u| id(Kind::User, u)),
        ..ListFilter::all(Kind::Membership)
    }
}

fn status(response: (u16, Value)) -> (u16, String) {
    let (code, body) = response;
    let label = body["reason"]
        .as_str()
        .or(body["status"].as_str())
        .unwrap_or("error");
    (code, label.to_owned())
}

#[tokio::test]
async fn organizations_and_memberships_are_stored_and_read_back() {
    let app = spawn_app(&[]).await;
    let deliveries = [
        organization("organization.created", "org_a", T0),
        joined("orgmem_1", "org_a", "user_1"),
        joined("orgmem_2", "org_a", "user_2"),
        joined("orgmem_3", "org_b", "user_1"),
        user_changed("user.created", "user_1", T0),
        organization("organization.updated", "org_a", T0 + 1),
    ];
    for delivery in &deliveries {
        assert_eq!(
            status(app.deliver(delivery).await),
            (200, "applied".into()),
            "{delivery}"
        );
    }

    let org = app.get(Kind::Organization, "org_a").await.expect("stored");
    assert_eq!(org["type"], "organization");
    assert_eq!(org["clerkUpdatedAt"], T0 + 1);
    assert_eq!(org["slug"], "engines-org_a");
    assert_eq!(org["createdBy"], "user_creator");
    assert!(
        !org.to_string().contains("billing"),
        "private metadata leaked: {org}"
    );
    assert_eq!(
        app.get(Kind::Organization, "user_1").await,
        None,
        "a user is not an organization"
    );
    assert_eq!(app.get(Kind::User, "org_a").await, None);
    assert_eq!(
        ids(&app.list(ListFilter::all(Kind::Organization)).await),
        ["org_a"]
    );

    let all = app.list(ListFilter::all(Kind::Membership)).await;
    assert_eq!(ids(&all), ["orgmem_1", "orgmem_2", "orgmem_3"]);
    let member = all.iter().find(|m| m["id"] == "orgmem_1").unwrap();
    assert_eq!(
        member,
        &json!({
            "id": "orgmem_1", "type": "membership", "organizationId": "org_a", "userId": "user_1",
            "role": "org:member", "permissions": ["org:sys_memberships:read"],
            "publicMetadata": {"team": "engines"}, "createdAt": "2023-11-14T22:13:20Z",
            "updatedAt": "2023-11-14T22:13:20Z", "clerkUpdatedAt": T0,
            "lastEventId": member["lastEventId"]
        })
    );
    assert_eq!(
        ids(&app.list(memberships(Some("org_a"), None)).await),
        ["orgmem_1", "orgmem_2"]
    );
    assert_eq!(
        ids(&app.list(memberships(None, Some("user_1"))).await),
        ["orgmem_1", "orgmem_3"]
    );
    assert_eq!(
        ids(&app.list(memberships(Some("org_b"), Some("user_1"))).await),
        ["orgmem_3"]
    );
    // The commands read back the same, and refuse an id of the wrong kind: see `commands.rs`.
}

#[tokio::test]
async fn deletes_cascade_and_late_events_change_nothing() {
    let app = spawn_app(&[]).await;
    for delivery in [
        organization("organization.created", "org_a", T0),
        joined("orgmem_1", "org_a", "user_1"),
        joined("orgmem_2", "org_a", "user_2"),
        joined("orgmem_3", "org_b", "user_2"),
    ] {
        app.deliver(&delivery).await;
    }
    assert_eq!(
        status(app.deliver(&deleted("organization.deleted", "org_a")).await),
        (200, "applied".into())
    );
    assert_eq!(app.get(Kind::Organization, "org_a").await, None);
    assert_eq!(
        ids(&app.list(ListFilter::all(Kind::Membership)).await),
        ["orgmem_3"]
    );

    assert_eq!(
        status(app.deliver(&user_deleted("user_2")).await),
        (200, "applied".into())
    );
    assert_eq!(
        app.list(ListFilter::all(Kind::Membership)).await,
        Vec::<Value>::new()
    );

    for (late, reason) in [
        (
            organization("organization.updated", "org_a", T0 + 5),
            "deleted",
        ),
        (
            membership(
                "organizationMembership.updated",
                "orgmem_1",
                "org_a",
                "user_1",
                T0 + 5,
            ),
            "deleted",
        ),
        (
            membership(
                "organizationMembership.created",
                "orgmem_9",
                "org_a",
                "user_9",
                T0 + 5,
            ),
            "parent_deleted",
        ),
        (
            membership(
                "organizationMembership.created",
                "orgmem_8",
                "org_c",
                "user_2",
                T0 + 5,
            ),
            "parent_deleted",
        ),
    ] {
        assert_eq!(
            status(app.deliver(&late).await),
            (200, reason.into()),
            "{late}"
        );
    }
    assert_eq!(
        app.list(ListFilter::all(Kind::Membership)).await,
        Vec::<Value>::new()
    );
    assert_eq!(
        app.list(ListFilter::all(Kind::Organization)).await,
        Vec::<Value>::new()
    );
}

#[tokio::test]
async fn hostile_organization_payloads_are_refused_and_change_nothing() {
    let app = spawn_app(&[]).await;
    app.deliver(&organization("organization.created", "org_a", T0))
        .await;
    app.deliver(&membership(
        "organizationMembership.created",
        "orgmem_1",
        "org_a",
        "user_1",
        T0,
    ))
    .await;
    let before = (
        app.list(ListFilter::all(Kind::Organization)).await,
        app.list(ListFilter::all(Kind::Membership)).await,
    );

    let with = |mut data: Value, field: &str, value: Value| {
        data[field] = value;
        data
    };
    let org = clerk_organization("org_a", T0 + 1);
    let member = clerk_membership("orgmem_1", "org_a", "user_1", T0 + 1);
    let cases = [
        ("organization.updated", with(org.clone(), "id", Value::Null)),
        ("organization.updated", with(org.clone(), "id", json!(42))),
        (
            "organization.updated",
            with(org.clone(), "id", json!("user_1")),
        ),
        (
            "organization.updated",
            with(org.clone(), "id", json!("orgmem_1")),
        ),
        (
            "organization.updated",
            with(org.clone(), "id", json!("org_a/../x")),
        ),
        (
            "organization.updated",
            with(org.clone(), "updated_at", Value::Null),
        ),
        (
            "organization.updated",
            with(org.clone(), "updated_at", json!("soon")),
        ),
        (
            "organization.updated",
            with(org.clone(), "name", json!({"x": 1})),
        ),
        (
            "organization.updated",
            with(org.clone(), "public_metadata", json!([1])),
        ),
        ("organization.deleted", json!({"deleted": true})),
        (
            "organization.deleted",
            json!({"id": "user_1", "deleted": true}),
        ),
        (
            "organizationMembership.updated",
            with(member.clone(), "id", json!("org_a")),
        ),
        (
            "organizationMembership.updated",
            with(member.clone(), "organization", Value::Null),
        ),
        (
            "organizationMembership.updated",
            with(member.clone(), "organization", json!({"id": "user_1"})),
        ),
        (
            "organizationMembership.updated",
            with(member.clone(), "public_user_data", json!({})),
        ),
        (
            "organizationMembership.updated",
            with(
                member.clone(),
                "public_user_data",
                json!({"user_id": "org_a"}),
            ),
        ),
        (
            "organizationMembership.updated",
            with(member.clone(), "permissions", json!("all")),
        ),
        (
            "organizationMembership.deleted",
            json!({"object": "organization_membership"}),
        ),
        ("organizationMembership.created", json!("orgmem_1")),
    ];
    for (event_type, data) in cases {
        let (code, body) = app.deliver(&clerk_event(event_type, data.clone())).await;
        assert_eq!(code, 400, "{event_type} {data}: {body}");
        assert!(body["error"].is_string(), "{body}");
    }
    assert_eq!(
        (
            app.list(ListFilter::all(Kind::Organization)).await,
            app.list(ListFilter::all(Kind::Membership)).await,
        ),
        before
    );

    // Nulls and unknown fields are not hostile: they are stored as the SPEC says.
    let lenient = json!({
        "id": "org_n", "object": "organization", "name": null, "slug": null, "image_url": null,
        "public_metadata": null, "private_metadata": null, "created_by": null,
        "created_at": null, "updated_at": T0, "a_field_from_the_future": {"x": [1]}
    });
    assert_eq!(
        status(
            app.deliver(&clerk_event("organization.created", lenient))
                .await
        ),
        (200, "applied".into())
    );
    let stored = app.get(Kind::Organization, "org_n").await.unwrap();
    assert_eq!(stored["publicMetadata"], json!({}));
    assert_eq!(stored["name"], Value::Null);
    assert!(stored.get("a_field_from_the_future").is_none());
}
