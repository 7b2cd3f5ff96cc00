//! The read commands (`users`, `organizations`, `memberships`): documents as the application sees
//! them. Tombstones are deleted items, so they read as not found and are never listed.

use std::io::Write;

use futures::TryStreamExt;

use crate::store::{ListFilter, Store, StoreError};
use crate::sync::document;
use crate::sync::item::{ItemId, Kind};

#[derive(Debug, thiserror::Error)]
pub enum ItemsError {
    /// Missing, deleted, of another kind, or an id nothing can have.
    #[error("no {kind} {id}")]
    NotFound { kind: Kind, id: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
}

/// Prints the document of `kind` stored under `id`, pretty, as JSON.
pub async fn get(
    store: &dyn Store,
    kind: Kind,
    id: &str,
    out: &mut impl Write,
) -> Result<(), ItemsError> {
    let not_found = || ItemsError::NotFound {
        kind,
        id: id.to_owned(),
    };
    let item_id = ItemId::parse(id).map_err(|_| not_found())?;
    let (stored, _) = store.read(&item_id).await?;
    match stored {
        Some(stored) if document::state(&stored.document).is_live(kind) => {
            serde_json::to_writer_pretty(&mut *out, &stored.document)
                .map_err(std::io::Error::from)?;
            writeln!(out)?;
            Ok(())
        }
        _ => Err(not_found()),
    }
}

/// Prints every document `filter` selects, one JSON object per line, as the store streams them.
pub async fn list(
    store: &dyn Store,
    filter: ListFilter,
    out: &mut impl Write,
) -> Result<(), ItemsError> {
    let mut documents = store.list(filter);
    while let Some(document) = documents.try_next().await? {
        serde_json::to_writer(&mut *out, &document).map_err(std::io::Error::from)?;
        writeln!(out)?;
    }
    out.flush()?;
    Ok(())
}
