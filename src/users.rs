//! The `users` commands: read user documents as the application sees them (tombstones are
//! deleted users, so they read as not found).

use std::io::Write;

use crate::document::{self, Kind};
use crate::store::Store;
use crate::user_id::UserId;

#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    /// Missing, deleted, or an id no user can have.
    #[error("no user {0}")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
}

pub async fn get(store: &dyn Store, id: &str, out: &mut impl Write) -> Result<(), UsersError> {
    let not_found = || UsersError::NotFound(id.to_owned());
    let user_id = UserId::parse(id).map_err(|_| not_found())?;
    let (stored, _) = store.read(&user_id).await?;
    match stored {
        Some(stored) if document::kind(&stored.document) == Kind::User => {
            serde_json::to_writer_pretty(&mut *out, &stored.document)
                .map_err(std::io::Error::from)?;
            writeln!(out)?;
            Ok(())
        }
        _ => Err(not_found()),
    }
}

pub async fn list(store: &dyn Store, out: &mut impl Write) -> Result<(), UsersError> {
    for user in store.list_users().await? {
        serde_json::to_writer(&mut *out, &user).map_err(std::io::Error::from)?;
        writeln!(out)?;
    }
    Ok(())
}
