//! `POST /Reconcile`: the Functions host's invocation of the `Reconcile` timer. Runs the same
//! reconcile as `handler reconcile`, within a time budget, and answers with the host's
//! invocation result: 200 when the run completed, 500 (the invocation shows as failed) when not.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::AppState;
use crate::reconcile::{self, LogProgress, Settings, Trigger};

/// How long the timer's run may take: inside `host.json`'s `functionTimeout` (one hour), with
/// room to stop cleanly and answer the host.
const TIMER_BUDGET: Duration = Duration::from_secs(50 * 60);

pub(super) async fn reconcile(State(state): State<Arc<AppState>>) -> (StatusCode, Json<Value>) {
    let Some(clerk) = &state.clerk else {
        let line = "reconcile is not configured: CLERK_SECRET_KEY is not set";
        tracing::warn!(event = "reconcile_not_configured", "{line}");
        return invocation(StatusCode::OK, vec![line.to_owned()]);
    };
    let Ok(_running) = state.reconciling.try_lock() else {
        let line = "a reconcile is already running on this instance; this invocation did nothing";
        tracing::warn!(event = "reconcile_already_running", "{line}");
        return invocation(StatusCode::OK, vec![line.to_owned()]);
    };
    let progress = LogProgress::default();
    let run = reconcile::reconcile(
        state.store.as_ref(),
        clerk,
        Settings {
            dry_run: false,
            tombstone_ttl_seconds: state.tombstone_ttl_seconds,
            deadline: Some(Instant::now() + TIMER_BUDGET),
            progress: &progress,
        },
    )
    .await;
    run.log(Trigger::Timer);
    let status = match run.report.complete {
        true => StatusCode::OK,
        false => StatusCode::INTERNAL_SERVER_ERROR,
    };
    invocation(status, run.summary(Trigger::Timer))
}

/// The host's `HttpScriptInvocationResult`: the timer has no outputs and no return value; the
/// `Logs` reach Application Insights through the host's invocation logger.
fn invocation(status: StatusCode, logs: Vec<String>) -> (StatusCode, Json<Value>) {
    (
        status,
        Json(json!({ "Outputs": {}, "Logs": logs, "ReturnValue": null })),
    )
}
