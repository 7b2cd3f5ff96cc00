//! The deletion check, once every sweep completed: the store's states are streamed past the set
//! of items Clerk listed, and each live item stored when the run started that Clerk did not list
//! is a candidate; candidates are confirmed gone with Clerk a hundred at a time, then tombstoned.
//!
//! Nothing but a batch of candidates per kind is held: the scan pauses while a batch is checked.
//! An item stored since the run started is no candidate (the sweep may have passed its place
//! before it was created); the next run checks it.

use std::collections::HashSet;

use futures::TryStreamExt;

use super::{ORDER, Phase, Reconcile, Stopped};
use crate::clerk::api::Patience;
use crate::sync::apply;
use crate::sync::decide::{Change, Outcome};
use crate::sync::document::State;
use crate::sync::item::{ItemId, ItemRef, Kind};

/// Ids per deletion check request (Clerk's filters take up to 100).
const CONFIRM_BATCH: usize = 100;

impl Reconcile<'_> {
    /// Tombstones the stored items Clerk did not list, once Clerk confirms each is gone.
    pub(super) async fn delete_gone(&mut self) -> Result<(), Stopped> {
        let store = self.store;
        let mut candidates: [Vec<ItemId>; 3] = Default::default();
        let mut states = store.states();
        while let Some((id, state)) = self.in_time(states.try_next()).await? {
            let State::Live {
                kind: Some(kind), ..
            } = state
            else {
                continue;
            };
            // `None`: stored since the run started. `Some(true)`: listed (or sharing its
            // fingerprint with an item listed, see `listed`).
            if self.listed.get(&id) != Some(false) {
                continue;
            }
            let Ok(id) = ItemId::parse(&id) else {
                continue;
            };
            let batch = &mut candidates[position(kind)];
            batch.push(id);
            if batch.len() == CONFIRM_BATCH {
                let batch = std::mem::take(batch);
                self.delete_confirmed(kind, &batch).await?;
            }
        }
        drop(states);
        for kind in ORDER {
            let batch = std::mem::take(&mut candidates[position(kind)]);
            if !batch.is_empty() {
                self.delete_confirmed(kind, &batch).await?;
            }
        }
        Ok(())
    }

    /// Tombstones those of `candidates` Clerk confirms are gone.
    async fn delete_confirmed(&mut self, kind: Kind, candidates: &[ItemId]) -> Result<(), Stopped> {
        let gone = self.in_time(self.confirm_gone(kind, candidates)).await?;
        for id in gone {
            self.delete(kind, id).await?;
        }
        self.settings
            .progress
            .update(kind, self.report.counts(kind), Phase::ConfirmingDeletions);
        Ok(())
    }

    /// Which of `ids` Clerk no longer has: absent from a lookup by id (users, organizations), or
    /// not among its organization's memberships of that user (memberships).
    async fn confirm_gone(&self, kind: Kind, ids: &[ItemId]) -> Result<Vec<ItemId>, Stopped> {
        let existing = match kind {
            Kind::User => self.clerk.existing_users(ids).await?,
            Kind::Organization => self.clerk.existing_organizations(ids).await?,
            Kind::Membership => {
                let mut existing = HashSet::new();
                for id in ids {
                    if self.membership_exists(id).await? {
                        existing.insert(id.clone());
                    }
                }
                existing
            }
        };
        Ok(ids
            .iter()
            .filter(|id| !existing.contains(*id))
            .cloned()
            .collect())
    }

    async fn membership_exists(&self, id: &ItemId) -> Result<bool, Stopped> {
        let (stored, _) = self.store.read(id).await?;
        let Some(document) = stored.map(|s| s.document) else {
            // Removed since the run started: nothing left to delete.
            return Ok(true);
        };
        let link = |field: &str, kind: Kind| {
            let raw = document.get(field).and_then(|v| v.as_str())?;
            ItemId::parse_as(kind, raw).ok()
        };
        let (Some(organization), Some(user)) = (
            link("organizationId", Kind::Organization),
            link("userId", Kind::User),
        ) else {
            // A tombstone by now (a deleted user or organization took it along), or a document
            // without its links: nothing to ask Clerk about, nothing to delete.
            return Ok(true);
        };
        let found = self
            .clerk
            .get_membership(&organization, &user, id, Patience::Batch)
            .await?;
        Ok(found.is_some())
    }

    async fn delete(&mut self, kind: Kind, id: ItemId) -> Result<(), Stopped> {
        if self.settings.dry_run {
            self.report.counts_mut(kind).deleted += 1;
            return Ok(());
        }
        let item = ItemRef { kind, id };
        let options = self.apply_options();
        let applied = self
            .in_time(apply::apply(self.store, Change::Delete(&item), options))
            .await?;
        self.request_charge += applied.tally.request_charge;
        if applied.outcome == Outcome::Applied {
            self.report.counts_mut(kind).deleted += 1;
        }
        // Memberships a deleted user or organization took with it are Clerk's deletions too.
        self.report.memberships.deleted += u64::from(applied.cascaded);
        Ok(())
    }
}

/// Where `kind` stands in `ORDER`.
fn position(kind: Kind) -> usize {
    ORDER
        .iter()
        .position(|&k| k == kind)
        .expect("every kind is swept")
}
