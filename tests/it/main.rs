//! All integration tests, compiled as one binary to keep link times down.

mod bicep;
mod clerk_api;
mod clerk_api_double;
mod cosmos_emulator;
mod cosmos_store;
mod fixtures;
mod functions_host;
mod helpers;
mod host;
mod host_organizations;
mod identity_endpoint_double;
mod jwks_double;
mod loopback;
mod managed_identity;
mod reconcile;
mod session;
mod store_contract;
mod sync_me;
mod telemetry;
