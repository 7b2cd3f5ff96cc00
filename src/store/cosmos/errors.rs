//! What a Cosmos DB failure means for the caller: worth retrying later (throttled, unreachable,
//! timing out, no token) or a request that will never succeed (a bug or a broken deployment).
//!
//! The SDK has already retried what it retries (429 with the service's back-off, 449, 410,
//! transport failures, region failover) before an error reaches this module.

use std::time::Duration;

use azure_core::http::StatusCode;
use azure_data_cosmos::{CosmosError, CosmosStatus, SubStatusCode};

use crate::store::StoreError;

/// Sub-statuses of a 401 that mean "no token right now" rather than "refused".
mod token {
    use azure_data_cosmos::SubStatusCode;

    /// The SDK could not sign the request (credential error before anything was sent).
    pub const CLIENT_GENERATED: SubStatusCode = SubStatusCode::new(20401);
    /// The credential (managed identity endpoint, `az`) failed to hand out a token.
    pub const ACQUISITION_FAILED: SubStatusCode = SubStatusCode::new(20402);
    /// The token expired in flight; the next attempt gets a fresh one.
    pub const EXPIRED: SubStatusCode = SubStatusCode::new(5006);
}

/// 403 sub-statuses that are routing states the account recovers from on its own.
mod routing {
    use azure_data_cosmos::SubStatusCode;

    /// The region is not (or no longer) the write region: a failover is under way.
    pub const WRITE_FORBIDDEN: SubStatusCode = SubStatusCode::new(3);
    /// The region no longer serves the account: a region is being removed.
    pub const ACCOUNT_NOT_FOUND: SubStatusCode = SubStatusCode::new(1008);
}

/// A 404 sub-status that is a replication lag, not an absence.
const READ_SESSION_NOT_AVAILABLE: SubStatusCode = SubStatusCode::new(1002);

/// Classifies a failure of `operation` (named in the reason, which reaches logs only).
pub(super) fn classify(operation: &str, error: &CosmosError) -> StoreError {
    let status = error.status();
    let reason = format!("Cosmos DB {operation} failed: {error}");
    if is_transient(status) {
        StoreError::Unavailable {
            reason,
            retry_after: retry_after(error),
        }
    } else {
        StoreError::Rejected(reason)
    }
}

/// The error a call that outlived its time budget ends in, shaped like the SDK's own
/// client-side timeout (408 / 20008) so it classifies the same way.
pub(super) fn timed_out(operation: &str, budget: Duration) -> CosmosError {
    CosmosError::builder()
        .with_status(CosmosStatus::new(StatusCode::RequestTimeout).with_sub_status(20008))
        .with_message(format!(
            "{operation} did not finish within {} ms",
            budget.as_millis()
        ))
        .build()
}

fn is_transient(status: CosmosStatus) -> bool {
    let sub_status = status.sub_status();
    match u16::from(status.status_code()) {
        // Timeouts, throttling after the SDK's retries, concurrent-write retry, partition moves,
        // and every 5xx, including the SDK's own for connection, DNS and I/O failures.
        408 | 410 | 429 | 449 | 500..=599 => true,
        401 => matches!(
            sub_status,
            Some(token::CLIENT_GENERATED | token::ACQUISITION_FAILED | token::EXPIRED)
        ),
        403 => matches!(
            sub_status,
            Some(routing::WRITE_FORBIDDEN | routing::ACCOUNT_NOT_FOUND)
        ),
        404 => sub_status == Some(READ_SESSION_NOT_AVAILABLE),
        // Everything else (400, a refused key or role, 404 for a missing database or container,
        // 413, ...) will fail the same way on every retry.
        _ => false,
    }
}

/// The service's own back-off hint (`x-ms-retry-after-ms`), when the error carries a response.
fn retry_after(error: &CosmosError) -> Option<Duration> {
    error
        .response()
        .and_then(|response| response.headers().retry_after_ms)
        .map(Duration::from_millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(status: u16, sub_status: Option<u16>) -> CosmosError {
        let code = StatusCode::from(status);
        let status = match sub_status {
            Some(sub_status) => CosmosStatus::new(code).with_sub_status(sub_status),
            None => CosmosStatus::new(code),
        };
        CosmosError::builder()
            .with_status(status)
            .with_message("test")
            .build()
    }

    fn is_unavailable(status: u16, sub_status: Option<u16>) -> bool {
        match classify("test", &error(status, sub_status)) {
            StoreError::Unavailable { .. } => true,
            StoreError::Rejected(_) => false,
            StoreError::ConditionFailed => panic!("classify never says ConditionFailed"),
        }
    }

    #[test]
    fn transient_failures_are_unavailable() {
        for (status, sub_status) in [
            (408, None),
            (408, Some(20008)),
            (410, Some(1002)),
            (429, None),
            (429, Some(3200)),
            (449, None),
            (500, None),
            (502, None),
            (503, None),
            (503, Some(20003)),
            (503, Some(20010)),
            (503, Some(20011)),
            (503, Some(20012)),
            (401, Some(20401)),
            (401, Some(20402)),
            (401, Some(5006)),
            (403, Some(3)),
            (403, Some(1008)),
            (404, Some(1002)),
        ] {
            assert!(
                is_unavailable(status, sub_status),
                "{status}/{sub_status:?} should be worth retrying"
            );
        }
    }

    #[test]
    fn failures_a_retry_cannot_fix_are_rejected() {
        for (status, sub_status) in [
            (400, None),
            (401, None),
            (403, None),
            (403, Some(5301)),
            (404, Some(1003)),
            (405, None),
            (409, None),
            (412, None),
            (413, None),
        ] {
            assert!(
                !is_unavailable(status, sub_status),
                "{status}/{sub_status:?} should be rejected"
            );
        }
    }

    #[test]
    fn a_timeout_classifies_as_unavailable() {
        let error = timed_out("read", Duration::from_secs(3));
        assert!(matches!(
            classify("read", &error),
            StoreError::Unavailable { .. }
        ));
    }
}
