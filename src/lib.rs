//! clerk-cosmos: mirrors Clerk users, organizations and memberships into Azure Cosmos DB from
//! Svix-signed webhooks.
//!
//! A delivery flows `http` -> `verify` -> `clerk` -> `sync` (`apply`, which asks `decide` what to
//! write) -> `store`. `config`, `startup`, `cli` and `telemetry` set the binary up; `commands`
//! answer the command line; `reconcile` sweeps Clerk's Backend API (`clerk::api`) through the same
//! `sync::apply`, and `session` checks the tokens `SyncMe` is called with.

pub mod clerk;
pub mod cli;
pub mod commands;
pub mod config;
pub mod error;
pub mod http;
pub mod reconcile;
pub mod secret;
pub mod session;
pub mod startup;
pub mod store;
pub mod sync;
pub mod telemetry;
pub mod verify;
