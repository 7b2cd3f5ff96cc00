//! What a stored item is: its kind (user, organization, membership) and its id, which Clerk
//! prefixes by kind and which must be safe as a Cosmos item id and partition key. The one place
//! ids are checked, whoever brings them (a webhook, a session token's `sub`, the store, Clerk).

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
    #[error("a {kind} id is {prefix} followed by letters, digits, '_' or '-'", prefix = kind.id_prefix())]
    NotClerkShaped { kind: Kind },
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

    /// An id of `kind`, as Clerk makes them: the kind's prefix, then letters, digits, `_` or `-`.
    pub fn parse_as(kind: Kind, raw: &str) -> Result<Self, ItemIdError> {
        let id = Self::parse(raw)?;
        match raw.strip_prefix(kind.id_prefix()) {
            Some(rest) if !rest.is_empty() && id.is_clerk_shaped() => Ok(id),
            Some(rest) if !rest.is_empty() => Err(ItemIdError::NotClerkShaped { kind }),
            _ => Err(ItemIdError::WrongKind { kind }),
        }
    }

    /// Whether Clerk could have made this id (an id, or an organization's slug): letters, digits,
    /// `_` and `-`, starting with a letter or digit. Only such an id goes into a Backend API path
    /// or id filter as it is: `..` would be dropped from a path (turning a get into a list), and
    /// a leading `-` turns a filter into an exclusion.
    pub fn is_clerk_shaped(&self) -> bool {
        self.0.starts_with(|c: char| c.is_ascii_alphanumeric())
            && self
                .0
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
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
    fn clerk_shaped_ids_are_safe_in_backend_api_paths_and_filters() {
        for id in ["user_2abcDEF123", "org_1", "orgmem_x", "my-org"] {
            assert!(ItemId::parse(id).unwrap().is_clerk_shaped(), "{id}");
        }
        for id in [".", "..", "-user_1", "+user_1", "user 1", "user%2F1", "_x"] {
            assert!(!ItemId::parse(id).unwrap().is_clerk_shaped(), "{id}");
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
        for raw in ["user_2abc/../x", "user_a b", "user_ü"] {
            assert_eq!(
                ItemId::parse_as(Kind::User, raw),
                if raw.contains('/') {
                    Err(ItemIdError::ForbiddenCharacter)
                } else {
                    Err(ItemIdError::NotClerkShaped { kind: Kind::User })
                },
                "{raw}"
            );
        }
        assert_eq!(Kind::from_type("membership"), Some(Kind::Membership));
        assert_eq!(Kind::from_type("tombstone"), None);
    }
}
