//! A Clerk organization membership (`organizationMembership.*` data, and
//! `GET /v1/organization_memberships` items), reduced to what the membership document holds: the
//! two ids it links, the role and permissions. The member's name, email and image stay on the
//! user document.

use serde::Deserialize;
use serde_json::{Map, Value};

use super::fields::{Timestamps, from_value, null_as_default};
use crate::sync::item::{ItemId, Kind};

#[derive(Debug, Clone, PartialEq)]
pub struct MembershipSnapshot {
    pub id: ItemId,
    pub organization_id: ItemId,
    pub user_id: ItemId,
    pub role: Option<String>,
    pub permissions: Vec<String>,
    pub public_metadata: Map<String, Value>,
    pub times: Timestamps,
}

#[derive(Deserialize)]
struct ClerkMembership {
    organization: Option<IdOnly>,
    public_user_data: Option<PublicUserData>,
    role: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    permissions: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    public_metadata: Map<String, Value>,
    created_at: Option<i64>,
    updated_at: Option<i64>,
}

#[derive(Deserialize)]
struct IdOnly {
    id: Option<String>,
}

#[derive(Deserialize)]
struct PublicUserData {
    user_id: Option<String>,
}

impl MembershipSnapshot {
    pub(super) fn parse(id: ItemId, data: Map<String, Value>) -> Result<Self, String> {
        let membership: ClerkMembership = from_value(Value::Object(data))?;
        let linked = |kind: Kind, field: &str, raw: Option<String>| {
            let raw = raw.ok_or_else(|| format!("{field} is missing"))?;
            ItemId::parse_as(kind, &raw).map_err(|e| format!("{field}: {e}"))
        };
        Ok(Self {
            id,
            organization_id: linked(
                Kind::Organization,
                "organization.id",
                membership.organization.and_then(|o| o.id),
            )?,
            user_id: linked(
                Kind::User,
                "public_user_data.user_id",
                membership.public_user_data.and_then(|u| u.user_id),
            )?,
            role: membership.role,
            permissions: membership.permissions,
            public_metadata: membership.public_metadata,
            times: Timestamps::from_millis(membership.created_at, membership.updated_at)?,
        })
    }
}
