//! The core every entry point ends in: a Clerk object at a version (or its deletion) becomes a
//! conditional write of one document, decided by one pure function.
//!
//! `item` says what an id is; `document` builds the stored documents and reads their state;
//! `decide` is the pure decision (apply, skip, tombstone, ask Clerk first); `apply` carries it
//! out against the store, reading and deciding again when another writer got there first;
//! `guard` asks Clerk whether an old event's item still exists.
//!
//! Submodules are used by their paths (`sync::decide::Change`), not re-exported here, so that
//! the store can use `item` and `document` while `apply` uses the store.

pub mod apply;
pub mod decide;
pub mod document;
pub mod guard;
pub mod item;
