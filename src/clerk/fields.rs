//! How Clerk's JSON is read: leniently (nulls for empty lists, unknown fields ignored), with
//! error messages that name a field but never quote its value, since payloads carry emails and
//! names and these messages reach logs and responses.

use serde::{Deserialize, Deserializer};
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// A field Clerk may send as `null` where it means "empty".
pub(super) fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// Deserializes with a message that names the field but never quotes its value.
pub(super) fn from_value<T: for<'de> Deserialize<'de>>(value: Value) -> Result<T, String> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        match (inner.starts_with("missing field"), path.as_str()) {
            (true, ".") => inner,
            (true, _) => format!("{path}: {inner}"),
            (false, _) => format!("{path} has the wrong type or value"),
        }
    })
}

/// RFC 3339 in UTC with millisecond precision, as Clerk's epoch-millisecond timestamps carry.
pub fn rfc3339_from_millis(ms: i64) -> Option<String> {
    let at = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()?;
    at.format(&Rfc3339).ok()
}

/// Clerk's `created_at` / `updated_at` pair, checked and converted once for every kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timestamps {
    pub created_at: Option<String>,
    pub updated_at: String,
    /// Clerk's `updated_at` in epoch milliseconds: the ordering key.
    pub updated_at_ms: i64,
}

impl Timestamps {
    pub(super) fn from_millis(
        created_at: Option<i64>,
        updated_at: Option<i64>,
    ) -> Result<Self, String> {
        let updated_at_ms = updated_at.ok_or_else(|| "updated_at is missing".to_owned())?;
        Ok(Self {
            created_at: optional_rfc3339("created_at", created_at)?,
            updated_at: rfc3339("updated_at", updated_at_ms)?,
            updated_at_ms,
        })
    }
}

fn rfc3339(field: &str, ms: i64) -> Result<String, String> {
    rfc3339_from_millis(ms).ok_or_else(|| format!("{field} is out of range"))
}

/// An optional epoch-millisecond field as RFC 3339, refusing values no date can have.
pub(super) fn optional_rfc3339(field: &str, ms: Option<i64>) -> Result<Option<String>, String> {
    ms.map(|ms| rfc3339(field, ms)).transpose()
}
