//! A Clerk user (`user.created` / `user.updated` data, and `GET /v1/users` items: the same
//! schema), reduced to what the user document holds.

use serde::Deserialize;
use serde_json::{Map, Value};

use super::fields::{Timestamps, from_value, null_as_default, optional_rfc3339};
use crate::sync::item::ItemId;

#[derive(Debug, Clone, PartialEq)]
pub struct UserSnapshot {
    pub id: ItemId,
    pub email: Option<String>,
    pub email_addresses: Vec<String>,
    pub phone_number: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub username: Option<String>,
    pub image_url: Option<String>,
    pub external_id: Option<String>,
    pub public_metadata: Map<String, Value>,
    pub times: Timestamps,
    pub last_sign_in_at: Option<String>,
}

#[derive(Deserialize)]
struct ClerkUser {
    #[serde(default, deserialize_with = "null_as_default")]
    email_addresses: Vec<EmailAddress>,
    primary_email_address_id: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    phone_numbers: Vec<PhoneNumber>,
    primary_phone_number_id: Option<String>,
    first_name: Option<String>,
    last_name: Option<String>,
    username: Option<String>,
    image_url: Option<String>,
    external_id: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    public_metadata: Map<String, Value>,
    created_at: Option<i64>,
    updated_at: Option<i64>,
    last_sign_in_at: Option<i64>,
}

#[derive(Deserialize)]
struct EmailAddress {
    id: Option<String>,
    email_address: String,
}

#[derive(Deserialize)]
struct PhoneNumber {
    id: Option<String>,
    phone_number: String,
}

impl UserSnapshot {
    /// `id` is already checked by the caller; the rest of `data` is read here.
    pub(super) fn parse(id: ItemId, data: Map<String, Value>) -> Result<Self, String> {
        let user: ClerkUser = from_value(Value::Object(data))?;
        let email = primary(
            &user.email_addresses,
            user.primary_email_address_id.as_deref(),
            |a| (a.id.as_deref(), &a.email_address),
        );
        let phone_number = primary(
            &user.phone_numbers,
            user.primary_phone_number_id.as_deref(),
            |p| (p.id.as_deref(), &p.phone_number),
        );
        Ok(Self {
            id,
            email,
            phone_number,
            email_addresses: user
                .email_addresses
                .into_iter()
                .map(|a| a.email_address)
                .collect(),
            first_name: user.first_name,
            last_name: user.last_name,
            username: user.username,
            image_url: user.image_url,
            external_id: user.external_id,
            public_metadata: user.public_metadata,
            times: Timestamps::from_millis(user.created_at, user.updated_at)?,
            last_sign_in_at: optional_rfc3339("last_sign_in_at", user.last_sign_in_at)?,
        })
    }
}

/// The entry whose id is the primary id: never simply the first one.
fn primary<T>(
    items: &[T],
    primary_id: Option<&str>,
    id_and_value: impl Fn(&T) -> (Option<&str>, &String),
) -> Option<String> {
    let primary_id = primary_id?;
    items
        .iter()
        .map(id_and_value)
        .find(|(id, _)| *id == Some(primary_id))
        .map(|(_, value)| value.clone())
}
