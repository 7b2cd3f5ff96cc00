//! The shapes of the Backend API's list answers: users come as a plain JSON array, every other
//! list as `{"data": [...], "total_count": n}`; each item an object with a string `id`. What is
//! wrong is said without quoting a value: bodies carry names and emails.

use serde_json::{Map, Value};

use super::ClerkApiError;

pub(super) type Object = Map<String, Value>;

/// A `{"data": [...], "total_count": n}` list's items, each an object with a string `id`.
pub(super) fn list_data(body: Value, what: &str) -> Result<Vec<Object>, ClerkApiError> {
    match body {
        Value::Object(mut list) if list.get("total_count").is_some_and(Value::is_number) => {
            array_of_objects(list.remove("data").unwrap_or(Value::Null), what)
        }
        _ => Err(ClerkApiError::Rejected(format!(
            "the {what} list is not {{\"data\": [...], \"total_count\": n}}"
        ))),
    }
}

/// A JSON array of objects, each with a string `id`.
pub(super) fn array_of_objects(body: Value, what: &str) -> Result<Vec<Object>, ClerkApiError> {
    let Value::Array(items) = body else {
        return Err(ClerkApiError::Rejected(format!(
            "the {what} list is not a JSON array"
        )));
    };
    items
        .into_iter()
        .map(|item| match item {
            Value::Object(object) if item_id(&object).is_some() => Ok(object),
            _ => Err(ClerkApiError::Rejected(format!(
                "an item of the {what} list is not an object with a string id"
            ))),
        })
        .collect()
}

pub(super) fn item_id(item: &Object) -> Option<&str> {
    item.get("id").and_then(Value::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_are_checked_without_quoting_values() {
        let body = serde_json::json!({"data": [{"id": "org_1"}, {"email": "a@example.com"}], "total_count": 2});
        let error = list_data(body, "organizations").unwrap_err().to_string();
        assert!(!error.contains("example.com"), "{error}");
        assert!(list_data(serde_json::json!([{"id": "user_1"}]), "organizations").is_err());
        assert!(array_of_objects(serde_json::json!({"data": []}), "users").is_err());
    }
}
