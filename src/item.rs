//! What a stored item is: its kind (user, organization, membership) and its id, which Clerk
//! prefixes by kind and which must be safe as a Cosmos item id and partition key.

use std::fmt;

/// Cosmos DB rejects these characters in an item id; Clerk never sends them.
const FORBIDDEN: [char; 4] = ['/', '\\', '?', '#'];
/// Cosmos DB's limit on an item id, in bytes.
const MAX_LEN: usize = 255;

/// The kinds of Clerk object the mirror keeps, each in its own document shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    User,
    Organization,
    Membership,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::User, Kind::Organization, Kind::Membership];

    /// The document's `type`, and a tombstone's `of`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Organization => "organization",
            Self::Membership => "membership",
        }
    }

    pub fn from_type(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == value)
    }

    /// The prefix Clerk gives every id of this kind. Checking it keeps an organization event
    /// from ever writing over a user (and the other way round).
    pub fn id_prefix(self) -> &'static str {
        match self {
            Self::User => "user_",
            Self::Organization => "org_",
            Self::Membership => "orgmem_",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A Clerk id that is safe to use as a Cosmos item id and partition key.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ItemId(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ItemIdError {
    #[error("id is empty")]
    Empty,
    #[error("id is longer than {MAX_LEN} bytes")]
    TooLong,
    #[error(
        "id contains a character that cannot be stored ('/', '\\', '?', '#' or a control character)"
    )]
    ForbiddenCharacter,
    #[error("a {kind} id must start with {prefix}", prefix = kind.id_prefix())]
    WrongKind { kind: Kind },
}

impl ItemId {
    /// Any id the store can hold, whatever its kind: what the store and the `get` commands take.
    pub fn parse(raw: &str) -> Result<Self, ItemIdError> {
        if raw.trim().is_empty() {
            return Err(ItemIdError::Empty);
        }
        if raw.len() > MAX_LEN {
            return Err(ItemIdError::TooLong);
        }
        if raw
            .chars()
            .any(|c| FORBIDDEN.contains(&c) || c.is_control())
        {
            return Err(ItemIdError::ForbiddenCharacter);
        }
        Ok(Self(raw.to_owned()))
    }

    /// An id of `kind`, as Clerk prefixes it.
    pub fn parse_as(kind: Kind, raw: &str) -> Result<Self, ItemIdError> {
        let id = Self::parse(raw)?;
        match raw.starts_with(kind.id_prefix()) && raw.len() > kind.id_prefix().len() {
            true => Ok(id),
            false => Err(ItemIdError::WrongKind { kind }),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ItemId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One item: what a delete names, and what a log line says an event was about.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ItemRef {
    pub kind: Kind,
    pub id: ItemId,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_clerk_ids() {
        assert_eq!(
            ItemId::parse("user_2abcDEF123").unwrap().as_str(),
            "user_2abcDEF123"
        );
        for (kind, raw) in [
            (Kind::User, "user_2abc"),
            (Kind::Organization, "org_2abc"),
            (Kind::Membership, "orgmem_2abc"),
        ] {
            assert_eq!(ItemId::parse_as(kind, raw).unwrap().as_str(), raw);
        }
    }

    #[test]
    fn rejects_what_cosmos_cannot_store() {
        assert_eq!(ItemId::parse(""), Err(ItemIdError::Empty));
        assert_eq!(ItemId::parse("  "), Err(ItemIdError::Empty));
        assert_eq!(ItemId::parse(&"u".repeat(256)), Err(ItemIdError::TooLong));
        for bad in ["a/b", "a\\b", "a?b", "a#b", "a\nb"] {
            assert_eq!(
                ItemId::parse(bad),
                Err(ItemIdError::ForbiddenCharacter),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn rejects_an_id_of_another_kind() {
        for (kind, raw) in [
            (Kind::User, "org_1"),
            (Kind::Organization, "user_1"),
            (Kind::Organization, "orgmem_1"),
            (Kind::Membership, "org_1"),
            (Kind::User, "user_"),
            (Kind::User, "1"),
        ] {
            assert_eq!(
                ItemId::parse_as(kind, raw),
                Err(ItemIdError::WrongKind { kind }),
                "{raw}"
            );
        }
        assert_eq!(Kind::from_type("membership"), Some(Kind::Membership));
        assert_eq!(Kind::from_type("tombstone"), None);
    }
}
