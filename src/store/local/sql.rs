//! The embedded store's SQL: its schema, and the statements every delivery runs (prepared once
//! per connection, with `prepare_cached`).

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS items (
    id         TEXT PRIMARY KEY NOT NULL,
    document   TEXT NOT NULL,
    -- A random version per write: the ETag. Random rather than a counter so that an id whose
    -- row was purged and written again never repeats a version a slow writer still holds.
    version    INTEGER NOT NULL,
    -- Whether the document is a user; kept so that stores written by earlier versions (which
    -- listed users by it) stay valid. Listings now go by the document's `type`.
    is_user    INTEGER NOT NULL,
    -- Epoch milliseconds after which the item is gone, from its `ttl`; NULL for never.
    expires_at INTEGER
);
CREATE INDEX IF NOT EXISTS items_expires_at ON items (expires_at) WHERE expires_at IS NOT NULL;
-- The membership lookups of a cascade and of `memberships list`.
CREATE INDEX IF NOT EXISTS items_organization ON items (json_extract(document, '$.organizationId'))
    WHERE json_extract(document, '$.organizationId') IS NOT NULL;
CREATE INDEX IF NOT EXISTS items_user ON items (json_extract(document, '$.userId'))
    WHERE json_extract(document, '$.userId') IS NOT NULL;
";

/// A row is live while it has no expiry or its expiry is still ahead.
pub(super) const LIVE: &str = "(expires_at IS NULL OR expires_at > :now)";

// The statements of every delivery, prepared once per connection (`prepare_cached`): compiling
// one costs about as much as running it.
pub(super) const READ: &str = "SELECT document, version FROM items
     WHERE id = :id AND (expires_at IS NULL OR expires_at > :now)";
/// Takes the place of nothing, or of an expired item not yet purged.
pub(super) const CREATE: &str = "INSERT INTO items (id, document, version, is_user, expires_at)
     VALUES (?1, ?2, random(), ?3, ?4)
     ON CONFLICT (id) DO UPDATE SET
         document = excluded.document, version = excluded.version,
         is_user = excluded.is_user, expires_at = excluded.expires_at
     WHERE items.expires_at IS NOT NULL AND items.expires_at <= ?5";
pub(super) const REPLACE: &str = "UPDATE items SET document = ?1, version = random(), is_user = ?2,
         expires_at = ?3
     WHERE id = ?4 AND version = ?5
       AND (expires_at IS NULL OR expires_at > ?6)";

/// The live memberships of an organization, and of a user: each found through its index (the
/// link compared with `=` alone, so that SQLite can use the partial index), ids only.
pub(super) const MEMBERSHIPS_OF_ORGANIZATION: &str = "SELECT id FROM items
     WHERE json_extract(document, '$.organizationId') = :parent
       AND json_extract(document, '$.type') = :type
       AND (expires_at IS NULL OR expires_at > :now)
     ORDER BY id";
pub(super) const MEMBERSHIPS_OF_USER: &str = "SELECT id FROM items
     WHERE json_extract(document, '$.userId') = :parent
       AND json_extract(document, '$.type') = :type
       AND (expires_at IS NULL OR expires_at > :now)
     ORDER BY id";
