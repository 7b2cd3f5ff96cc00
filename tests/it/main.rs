//! All integration tests, compiled as one binary to keep link times down.

mod bicep;
mod helpers;
mod store_contract;
