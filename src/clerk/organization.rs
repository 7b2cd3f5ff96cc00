//! A Clerk organization (`organization.created` / `.updated` data, and `GET /v1/organizations`
//! items), reduced to what the organization document holds: never `private_metadata`.

use serde::Deserialize;
use serde_json::{Map, Value};

use super::fields::{Timestamps, from_value, null_as_default};
use crate::sync::item::ItemId;

#[derive(Debug, Clone, PartialEq)]
pub struct OrganizationSnapshot {
    pub id: ItemId,
    pub name: Option<String>,
    pub slug: Option<String>,
    pub image_url: Option<String>,
    pub public_metadata: Map<String, Value>,
    pub created_by: Option<String>,
    pub times: Timestamps,
}

#[derive(Deserialize)]
struct ClerkOrganization {
    name: Option<String>,
    slug: Option<String>,
    image_url: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    public_metadata: Map<String, Value>,
    created_by: Option<String>,
    created_at: Option<i64>,
    updated_at: Option<i64>,
}

impl OrganizationSnapshot {
    pub(super) fn parse(id: ItemId, data: Map<String, Value>) -> Result<Self, String> {
        let organization: ClerkOrganization = from_value(Value::Object(data))?;
        Ok(Self {
            id,
            name: organization.name,
            slug: organization.slug,
            image_url: organization.image_url,
            public_metadata: organization.public_metadata,
            created_by: organization.created_by,
            times: Timestamps::from_millis(organization.created_at, organization.updated_at)?,
        })
    }
}
