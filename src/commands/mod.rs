//! The commands beside serving: the read commands (`users`, `organizations`, `memberships`) and
//! `reconcile`, each writing to stdout what scripts read.

pub mod items;
pub mod reconcile;
