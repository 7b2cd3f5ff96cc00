//! All integration tests, compiled as one binary to keep link times down.

mod bicep;
mod cosmos_emulator;
mod cosmos_store;
mod fixtures;
mod helpers;
mod host;
mod identity_endpoint_double;
mod jwks_double;
mod managed_identity;
mod session;
mod store_contract;
