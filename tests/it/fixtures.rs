//! Clerk payloads and the signing secret, as plain data: shared by the integration tests and the
//! benchmarks (which include this file by path).

use serde_json::{Value, json};

/// The secret the tests sign with; also the sample in `local.settings.json.example`.
pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// A second valid secret, for rotation and wrong-secret cases.
pub const OTHER_SECRET: &str = "whsec_c2Vjb25kIHNlY3JldCBmb3Igcm90YXRpb24=";
/// A Clerk user payload as Clerk sends it, with two addresses of which the second is primary.
pub fn clerk_user(id: &str, updated_at_ms: i64) -> Value {
    json!({
        "id": id,
        "object": "user",
        "username": null,
        "first_name": "Ada",
        "last_name": "Lovelace",
        "image_url": "https://img.clerk.com/ada.png",
        "external_id": null,
        "primary_email_address_id": "idn_primary",
        "email_addresses": [
            {"id": "idn_other", "object": "email_address", "email_address": "other@example.com",
             "verification": {"status": "verified"}, "linked_to": []},
            {"id": "idn_primary", "object": "email_address", "email_address": "ada@example.com",
             "verification": {"status": "verified"}, "linked_to": []}
        ],
        "primary_phone_number_id": null,
        "phone_numbers": [],
        "public_metadata": {"plan": "pro"},
        "private_metadata": {"internal": true},
        "unsafe_metadata": {},
        "created_at": 1_700_000_000_000i64,
        "updated_at": updated_at_ms,
        "last_sign_in_at": null,
        "two_factor_enabled": false
    })
}

/// A Clerk organization as the Backend API and `organization.*` events carry it.
pub fn clerk_organization(id: &str, updated_at_ms: i64) -> Value {
    json!({
        "object": "organization",
        "id": id,
        "name": "Analytical Engines",
        "slug": format!("engines-{id}"),
        "image_url": "https://img.clerk.com/engines.png",
        "has_image": true,
        "members_count": 2,
        "pending_invitations_count": 0,
        "max_allowed_memberships": 5,
        "admin_delete_enabled": true,
        "public_metadata": {"tier": "gold"},
        "private_metadata": {"billing": "internal"},
        "created_by": "user_creator",
        "created_at": 1_700_000_000_000i64,
        "updated_at": updated_at_ms
    })
}

/// A Clerk organization membership as the Backend API and `organizationMembership.*` events
/// (`.deleted` included) carry it: the whole organization nested, and the member's public data.
pub fn clerk_membership(id: &str, org_id: &str, user_id: &str, updated_at_ms: i64) -> Value {
    json!({
        "object": "organization_membership",
        "id": id,
        "role": "org:member",
        "role_name": "Member",
        "permissions": ["org:sys_memberships:read"],
        "public_metadata": {"team": "engines"},
        "private_metadata": {"note": "internal"},
        "organization": clerk_organization(org_id, updated_at_ms),
        "public_user_data": {
            "user_id": user_id,
            "first_name": "Ada",
            "last_name": "Lovelace",
            "profile_image_url": "https://img.clerk.com/ada.png",
            "image_url": "https://img.clerk.com/ada.png",
            "has_image": true,
            "identifier": "ada@example.com"
        },
        "created_at": 1_700_000_000_000i64,
        "updated_at": updated_at_ms
    })
}

/// A Clerk event envelope.
pub fn clerk_event(event_type: &str, data: Value) -> Value {
    json!({
        "data": data,
        "object": "event",
        "type": event_type,
        "timestamp": 1_700_000_000_000i64,
        "instance_id": "ins_test"
    })
}

pub fn user_changed(event_type: &str, id: &str, updated_at_ms: i64) -> Value {
    clerk_event(event_type, clerk_user(id, updated_at_ms))
}

pub fn user_deleted(id: &str) -> Value {
    clerk_event(
        "user.deleted",
        json!({"id": id, "object": "user", "deleted": true}),
    )
}

/// A JSON object as a document.
pub fn object(value: Value) -> serde_json::Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}
