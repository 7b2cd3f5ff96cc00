//! clerk-cosmos: mirrors Clerk users into Azure Cosmos DB from Svix-signed webhooks.
//!
//! A delivery flows `http` -> `verify` -> `clerk` -> `apply` (which asks `sync` what to write)
//! -> `store`. `config`, `startup`, `cli` and `telemetry` set the binary up; `users` answers the
//! `users` commands.

pub mod apply;
pub mod clerk;
pub mod cli;
pub mod config;
pub mod document;
pub mod error;
pub mod http;
pub mod session;
pub mod startup;
pub mod store;
pub mod sync;
pub mod telemetry;
pub mod user_id;
pub mod users;
pub mod verify;
