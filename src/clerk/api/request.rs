//! One request to the Backend API: paced under the shared rate, held off while Clerk says 429,
//! retried as the caller's `Patience` allows, and read into JSON or a `ClerkApiError`.
//!
//! `governor` paces (GCRA, one request per `1 / CLERK_API_RATE`) and `backon` retries (exponential
//! backoff with jitter, attempts counted). What stays here is what neither does: Clerk's 429
//! blocks the whole key, so its `Retry-After` holds off every caller of the client, not only the
//! one that received it (`Gate::hold_off`); a caller someone is waiting on never waits that out,
//! nor a queue longer than its own timeout; and which answers are worth another attempt.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use governor::clock::{Clock, DefaultClock};
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::{StatusCode, Url};
use serde_json::Value;
use tokio::time::Instant;

use super::{ClerkApi, ClerkApiError, RequestRate};

/// A 429 is waited out for its `Retry-After`, but never longer than this at a time.
const MAX_RATE_LIMIT_WAIT: Duration = Duration::from_secs(60);
const BATCH_ATTEMPTS: usize = 6;
const INTERACTIVE_ATTEMPTS: usize = 2;

/// How long a caller can wait for Clerk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Patience {
    /// Reconcile: wait out 429 (Retry-After seconds, capped at 60 s per wait), retry
    /// 5xx/timeouts/transport errors with exponential backoff and jitter (0.5 s doubling), up to
    /// 6 attempts in all (429s included), then give up.
    Batch,
    /// A request someone is waiting on: never sleeps on a 429 (returns `Unavailable` with the
    /// Retry-After), not even one another caller of the client received, at most one quick retry
    /// of a 5xx/timeout, short timeout (5 s).
    Interactive,
}

/// Waits between retries and for answers. `Default` is what production uses; tests shorten them
/// so that retries and timeouts take milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timings {
    /// The first wait before a `Batch` retry of a 5xx, timeout or transport failure (and of a
    /// 429 without Retry-After); it doubles with each attempt. `Interactive` waits a quarter of
    /// it, once.
    pub first_backoff: Duration,
    /// How long one `Batch` attempt may take, connecting to the last byte of the body.
    pub batch_timeout: Duration,
    /// The same for `Interactive`.
    pub interactive_timeout: Duration,
}

impl Default for Timings {
    fn default() -> Self {
        Self {
            first_backoff: Duration::from_millis(500),
            batch_timeout: Duration::from_secs(30),
            interactive_timeout: Duration::from_secs(5),
        }
    }
}

/// Where every request of one client waits for its turn: the pace, and Clerk's hold-off.
pub(super) struct Gate {
    pace: RateLimiter<NotKeyed, InMemoryState, DefaultClock>,
    /// Until when Clerk asked us to stop (the last 429's Retry-After).
    blocked_until: Mutex<Instant>,
}

impl Gate {
    pub(super) fn new(rate: RequestRate) -> Self {
        // Burst 1: requests are spaced evenly, never bunched after a quiet spell.
        let quota = Quota::with_period(rate.interval())
            .unwrap_or_else(|| Quota::per_second(std::num::NonZeroU32::MAX));
        Self {
            pace: RateLimiter::direct(quota),
            blocked_until: Mutex::new(Instant::now()),
        }
    }

    /// Waits for this request's turn. An interactive request does not wait out a 429 nor a
    /// queue longer than its own timeout: it gets `Err(how long it would have to wait)`.
    async fn enter(&self, patience: Patience, timeout: Duration) -> Result<(), Duration> {
        loop {
            let blocked = self.blocked_for();
            if blocked > Duration::ZERO {
                if patience == Patience::Interactive {
                    return Err(blocked);
                }
                tokio::time::sleep(blocked).await;
                continue;
            }
            match self.pace.check() {
                Ok(()) => return Ok(()),
                Err(not_until) => {
                    let wait = not_until.wait_time_from(DefaultClock::default().now());
                    if patience == Patience::Interactive && wait > timeout {
                        return Err(wait);
                    }
                    tokio::time::sleep(wait).await;
                    // A 429 may have come meanwhile: look again before taking the slot.
                }
            }
        }
    }

    fn blocked_for(&self) -> Duration {
        let until = *self
            .blocked_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        until.saturating_duration_since(Instant::now())
    }

    /// Clerk blocks the whole key: everyone sharing this client waits, not just the caller.
    fn hold_off(&self, wait: Duration) {
        let mut until = self
            .blocked_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *until = (*until).max(Instant::now() + wait);
    }
}

/// Why one attempt did not give an answer to return.
enum Failed {
    /// 429: every caller is already held off; worth another attempt once the hold-off is over.
    RateLimited { retry_after: Option<Duration> },
    /// 5xx, timeout or transport failure: worth another attempt.
    Transient { reason: String },
    /// Not worth another attempt: a refusal, or a request someone waits on that a 429 or a long
    /// queue stopped before it was sent.
    Final(ClerkApiError),
}

impl ClerkApi {
    /// The JSON of a 2xx, `None` for a 404 from Clerk, after as many attempts as `patience`
    /// allows.
    pub(super) async fn get_json(
        &self,
        url: Url,
        patience: Patience,
    ) -> Result<Option<Value>, ClerkApiError> {
        // backon's jitter adds up to the delay itself: half the wait, plus up to half again, is a
        // wait drawn from [d/2, d]. Interactive retries once, after a quarter of the first wait.
        let (timeout, first_wait, attempts) = match patience {
            Patience::Batch => (
                self.timings.batch_timeout,
                self.timings.first_backoff,
                BATCH_ATTEMPTS,
            ),
            Patience::Interactive => (
                self.timings.interactive_timeout,
                self.timings.first_backoff / 4,
                INTERACTIVE_ATTEMPTS,
            ),
        };
        let backoff = ExponentialBuilder::new()
            .with_min_delay(first_wait / 2)
            .with_factor(2.0)
            .without_max_delay()
            .with_max_times(attempts - 1)
            .with_jitter();
        let path = url.path().to_owned();
        // Read by the closures below, which backon holds at once.
        let attempt = AtomicU32::new(0);
        let answer = (|| async {
            let n = attempt.fetch_add(1, Ordering::Relaxed) + 1;
            self.attempt(&url, &path, patience, timeout, n).await
        })
        .retry(backoff)
        .sleep(tokio::time::sleep)
        .when(|failed| match failed {
            Failed::RateLimited { .. } => patience == Patience::Batch,
            Failed::Transient { .. } => true,
            Failed::Final(_) => false,
        })
        // The hold-off already makes the next attempt wait for Retry-After, in `Gate::enter`.
        .adjust(|failed, wait| match failed {
            Failed::RateLimited { .. } => wait.map(|_| Duration::ZERO),
            _ => wait,
        })
        .notify(|failed, wait| match failed {
            Failed::RateLimited { retry_after } => tracing::warn!(
                event = "clerk_api_retry",
                path,
                attempt = attempt.load(Ordering::Relaxed),
                reason = "rate limited (429)",
                wait_ms = retry_after
                    .unwrap_or(self.timings.first_backoff)
                    .as_millis() as u64,
                "Clerk Backend API rate limited; waiting"
            ),
            Failed::Transient { reason } => tracing::warn!(
                event = "clerk_api_retry",
                path,
                attempt = attempt.load(Ordering::Relaxed),
                reason,
                wait_ms = wait.as_millis() as u64,
                "Clerk Backend API failed; retrying"
            ),
            Failed::Final(_) => {}
        })
        .await;
        answer.map_err(|failed| match failed {
            Failed::RateLimited { retry_after } => ClerkApiError::Unavailable {
                reason: format!("{path}: rate limited (429)"),
                retry_after,
            },
            Failed::Transient { reason } => ClerkApiError::Unavailable {
                reason: format!(
                    "{path}: {reason} ({} attempts)",
                    attempt.load(Ordering::Relaxed)
                ),
                retry_after: None,
            },
            Failed::Final(error) => error,
        })
    }

    /// One attempt: its turn at the gate, then the request.
    async fn attempt(
        &self,
        url: &Url,
        path: &str,
        patience: Patience,
        timeout: Duration,
        attempt: u32,
    ) -> Result<Option<Value>, Failed> {
        if let Err(wait) = self.inner.gate.enter(patience, timeout).await {
            return Err(Failed::Final(ClerkApiError::Unavailable {
                reason: "rate limited; a request someone waits on does not queue".into(),
                retry_after: Some(wait),
            }));
        }
        self.inner.requests.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(path, attempt, "Clerk Backend API request");
        let response = match self
            .inner
            .http
            .get(url.clone())
            .timeout(timeout)
            .send()
            .await
        {
            Ok(response) => response,
            Err(error) => {
                return Err(Failed::Transient {
                    reason: transport(&error),
                });
            }
        };
        let status = response.status();
        if status == StatusCode::TOO_MANY_REQUESTS {
            let retry_after = retry_after(response.headers());
            self.inner.gate.hold_off(
                retry_after
                    .map(|wait| wait.min(MAX_RATE_LIMIT_WAIT))
                    .unwrap_or(self.timings.first_backoff),
            );
            return Err(Failed::RateLimited { retry_after });
        }
        if status.is_server_error() || status == StatusCode::REQUEST_TIMEOUT {
            return Err(Failed::Transient {
                reason: format!("answered {status}"),
            });
        }
        // The body arrives within the same timeout; a stall there is a timeout like any other.
        let body = response.bytes().await.map_err(|error| Failed::Transient {
            reason: transport(&error),
        })?;
        let json = serde_json::from_slice::<Value>(&body).ok();
        let codes = || json.as_ref().map(error_codes).unwrap_or_default();
        if status.is_success() {
            json.map(Some).ok_or_else(|| {
                Failed::Final(ClerkApiError::Rejected(format!(
                    "{path} answered {status} with a body that is not JSON"
                )))
            })
        } else if status == StatusCode::NOT_FOUND && json.as_ref().is_some_and(is_clerk_error) {
            // Only Clerk's own "not found" counts: reconcile deletes on it, and a 404 from a
            // proxy or a mistyped CLERK_API_URL must not read as "every user is gone".
            Ok(None)
        } else if status == StatusCode::FORBIDDEN {
            Err(Failed::Final(ClerkApiError::Forbidden(format!(
                "{path} answered {status}{}",
                codes()
            ))))
        } else {
            Err(Failed::Final(ClerkApiError::Rejected(format!(
                "{path} answered {status}{}",
                codes()
            ))))
        }
    }
}

/// Clerk's error body: `{"errors": [{"code": ..., "message": ...}]}`.
fn is_clerk_error(body: &Value) -> bool {
    body.get("errors").is_some_and(Value::is_array)
}

/// `: code, code` from Clerk's error body. Codes only: messages may quote what was sent.
fn error_codes(body: &Value) -> String {
    let codes: Vec<&str> = body
        .get("errors")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|error| error.get("code").and_then(Value::as_str))
        .collect();
    if codes.is_empty() {
        String::new()
    } else {
        format!(": {}", codes.join(", "))
    }
}

/// Retry-After in seconds, as Clerk sends it.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// What went wrong on the wire, without the URL (its query may carry ids in bulk).
fn transport(error: &reqwest::Error) -> String {
    let what = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "could not connect"
    } else {
        "transport failure"
    };
    let mut reason = what.to_owned();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        reason.push_str(": ");
        reason.push_str(&cause.to_string());
        source = cause.source();
    }
    reason
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_never_quote_messages() {
        assert_eq!(
            error_codes(
                &serde_json::json!({"errors": [{"code": "authentication_invalid", "message": "key sk_x"}]})
            ),
            ": authentication_invalid"
        );
        assert_eq!(error_codes(&serde_json::json!({"errors": []})), "");
    }

    #[tokio::test]
    async fn an_interactive_caller_is_told_how_long_a_hold_off_lasts() {
        let gate = Gate::new(RequestRate::per_second(1000.0).unwrap());
        gate.hold_off(Duration::from_secs(3));
        let wait = gate
            .enter(Patience::Interactive, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(wait > Duration::from_secs(2) && wait <= Duration::from_secs(3));
    }

    #[tokio::test]
    async fn an_interactive_caller_does_not_queue_past_its_timeout() {
        // One request every 10 s: the second would wait about that long.
        let gate = Gate::new(RequestRate::per_second(0.1).unwrap());
        gate.enter(Patience::Batch, Duration::from_secs(1))
            .await
            .unwrap();
        let wait = gate
            .enter(Patience::Interactive, Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(wait > Duration::from_secs(9), "{wait:?}");
    }
}
