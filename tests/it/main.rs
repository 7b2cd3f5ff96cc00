//! All integration tests, compiled as one binary to keep link times down.

mod bicep;
mod clerk_api;
mod clerk_api_double;
mod commands;
mod cosmos_emulator;
mod cosmos_store;
mod docs;
mod fixtures;
mod functions_host;
mod handler_process;
mod helpers;
mod identity_endpoint_double;
mod jwks_double;
mod loopback;
mod managed_identity;
mod organization_rules;
mod process;
mod raw_http;
mod reconcile;
mod serving;
mod session;
mod store_contract;
mod sync_me;
mod telemetry;
mod webhook_rules;
mod webhook_verification;
