//! `UserId`: a Clerk user id that is safe to use as a Cosmos item id and partition key.

use std::fmt;

/// Cosmos DB rejects these characters in an item id; Clerk never sends them.
const FORBIDDEN: [char; 4] = ['/', '\\', '?', '#'];
/// Cosmos DB's limit on an item id, in bytes.
const MAX_LEN: usize = 255;

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UserIdError {
    #[error("user id is empty")]
    Empty,
    #[error("user id is longer than {MAX_LEN} bytes")]
    TooLong,
    #[error(
        "user id contains a character that cannot be stored ('/', '\\', '?', '#' or a control character)"
    )]
    ForbiddenCharacter,
}

impl UserId {
    pub fn parse(raw: &str) -> Result<Self, UserIdError> {
        if raw.trim().is_empty() {
            return Err(UserIdError::Empty);
        }
        if raw.len() > MAX_LEN {
            return Err(UserIdError::TooLong);
        }
        if raw
            .chars()
            .any(|c| FORBIDDEN.contains(&c) || c.is_control())
        {
            return Err(UserIdError::ForbiddenCharacter);
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_clerk_ids() {
        assert_eq!(
            UserId::parse("user_2abcDEF123").unwrap().as_str(),
            "user_2abcDEF123"
        );
    }

    #[test]
    fn rejects_what_cosmos_cannot_store() {
        assert_eq!(UserId::parse(""), Err(UserIdError::Empty));
        assert_eq!(UserId::parse("  "), Err(UserIdError::Empty));
        assert_eq!(UserId::parse(&"u".repeat(256)), Err(UserIdError::TooLong));
        for bad in ["a/b", "a\\b", "a?b", "a#b", "a\nb"] {
            assert_eq!(
                UserId::parse(bad),
                Err(UserIdError::ForbiddenCharacter),
                "{bad:?}"
            );
        }
    }
}
