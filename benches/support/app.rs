//! The webhook router over `store`, as `startup` builds it with no Clerk Backend API: the one
//! place `cosmos_cost` depends on how the app state is made. `scripts/compare-delivery-cost`
//! writes the older release's version of this file into its worktree.

use std::sync::Arc;

use handler::http::{AppState, router};
use handler::store::Store;
use handler::verify::Verifier;

pub fn app(verifier: Verifier, store: Arc<dyn Store>, tombstone_ttl_seconds: u32) -> axum::Router {
    router(Arc::new(AppState::new(
        verifier,
        store,
        tombstone_ttl_seconds,
        None,
    )))
}
