//! The alert queries in `infra/queries/` run on real telemetry: the built binary is driven through
//! a healthy scenario and through each failure an alert names, the lines it printed and the
//! requests the host would record are loaded into Application Insights' shapes
//! (`functions_host`), and every alert query runs unchanged on them (duckdb-kql). No alert fires on
//! the healthy run; each fires on the failure it names. A log field renamed or retyped in the
//! binary, or in a query, fails here.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::clerk_api_double::{ClerkApiDouble, Failure};
use crate::fixtures::{
    OTHER_SECRET, SECRET, clerk_event, clerk_organization, clerk_user, user_changed,
};
use crate::functions_host::{FunctionsHost, Telemetry};
use crate::helpers::{msg_id, now, svix_headers};
use crate::jwks_double::{PARTY, TestKey, TokenBuilder, USER_ID, bearer};

const KEY: &str = "sk_test_telemetry";
/// The svix-id of the healthy run's first delivery, delivered twice.
const FIRST_MESSAGE: &str = "msg_2telemetry1";
/// `updated_at` of what Clerk holds, and of the deliveries that agree with it.
const T0: i64 = 1_700_000_000_000;
const ALERTS: [&str; 7] = [
    "alert-deliveries-failing",
    "alert-signature-failures",
    "alert-reconcile-drift",
    "alert-reconcile-failed",
    "alert-reconcile-missing",
    "alert-store-unavailable",
    "alert-syncme-unavailable",
];

/// The Backend API settings for `clerk`, with `key` as the secret key.
fn clerk_env(clerk_url: String, key: &str) -> Vec<(&'static str, String)> {
    vec![
        ("CLERK_SECRET_KEY", key.to_owned()),
        ("CLERK_API_URL", clerk_url),
        ("CLERK_API_RATE", "1000".to_owned()),
    ]
}

/// SyncMe's settings: tokens signed by `key`, from `PARTY`.
fn session_env(key: &TestKey) -> Vec<(&'static str, String)> {
    vec![
        ("CLERK_JWT_KEY", key.public_pem().to_owned()),
        ("CLERK_AUTHORIZED_PARTIES", PARTY.to_owned()),
    ]
}

/// Posts `event` to ClerkWebhook through the host, signed with `secret`.
async fn deliver(host: &FunctionsHost, secret: &str, event: &Value) -> u16 {
    deliver_as(host, secret, &msg_id(), event).await
}

async fn deliver_as(host: &FunctionsHost, secret: &str, id: &str, event: &Value) -> u16 {
    let body = serde_json::to_vec(event).unwrap();
    let mut headers = svix_headers(secret, id, now(), &body);
    headers.push(("content-type".into(), "application/json".into()));
    host.http("ClerkWebhook", "/api/ClerkWebhook", &headers, body)
        .await
        .status
}

/// A KQL string literal.
fn literal(text: &str) -> String {
    format!("\"{text}\"")
}

async fn sync_me(host: &FunctionsHost, key: &TestKey) -> u16 {
    let token = TokenBuilder::new().sign(key);
    let headers = [("authorization".to_owned(), bearer(&token))];
    host.http("SyncMe", "/api/me/sync", &headers, Vec::new())
        .await
        .status
}

/// The alerts that return rows over `telemetry`, once every line it holds is checked against the
/// contract.
fn firing(telemetry: &Telemetry) -> Vec<&'static str> {
    assert_conforms(telemetry);
    ALERTS
        .into_iter()
        .filter(|alert| !telemetry.query(alert).is_empty())
        .collect()
}

/// docs/telemetry.md's events: each event's fields and their types, read from its tables.
fn contract() -> BTreeMap<String, BTreeMap<String, String>> {
    let page =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/telemetry.md")).unwrap();
    let ticked = |cell: &str| -> Vec<String> {
        cell.split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect()
    };
    let mut events: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut section = None;
    for line in page.lines() {
        if let Some(heading) = line.strip_prefix("### ") {
            section = ticked(heading).into_iter().next();
            continue;
        }
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() < 4
            || cells[1].starts_with("---")
            || cells[1] == "field"
            || cells[1] == "event"
        {
            continue;
        }
        match &section {
            // A table of one event: `field`s, then their type.
            Some(event) => {
                for field in ticked(cells[1]) {
                    events
                        .entry(event.clone())
                        .or_default()
                        .insert(field, cells[2].to_owned());
                }
            }
            // "Everything else": `event`, level, then `field` (type), ...
            None => {
                let Some(event) = ticked(cells[1]).into_iter().next() else {
                    continue;
                };
                let fields = events.entry(event).or_default();
                for part in cells[3].split("), ") {
                    if let (Some(field), Some((_, kind))) =
                        (ticked(part).first(), part.split_once('('))
                    {
                        fields.insert(
                            field.clone(),
                            kind.trim_end_matches([')', ':'])
                                .split(')')
                                .next()
                                .unwrap()
                                .to_owned(),
                        );
                    }
                }
            }
        }
    }
    events
}

/// Whether `value` is of the contract's `kind`.
fn is_of(kind: &str, value: &Value) -> bool {
    match kind {
        "string" => value.is_string(),
        "string or null" => value.is_string() || value.is_null(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        other => panic!("docs/telemetry.md names an unknown type {other:?}"),
    }
}

/// Every line the handler printed holds exactly its event's documented fields, of their types.
fn assert_conforms(telemetry: &Telemetry) {
    let contract = contract();
    assert!(
        contract.contains_key("delivery") && contract.contains_key("listening"),
        "{contract:?}"
    );
    let printed = telemetry
        .traces
        .iter()
        .filter(|t| t["customDimensions"]["Category"] == "Host.Function.Console");
    for trace in printed {
        let line: Value = serde_json::from_str(trace["message"].as_str().unwrap())
            .unwrap_or_else(|_| panic!("not one JSON object: {trace}"));
        let event = line["event"]
            .as_str()
            .unwrap_or_else(|| panic!("no event: {line}"));
        assert!(
            line["timestamp"].is_string() && line["level"].is_string(),
            "{line}"
        );
        let fields = contract
            .get(event)
            .unwrap_or_else(|| panic!("event {event} is not in docs/telemetry.md: {line}"));
        let mut keys: Vec<&String> = line.as_object().unwrap().keys().collect();
        keys.retain(|key| !["timestamp", "level", "event", "message"].contains(&key.as_str()));
        if event == "log" {
            assert!(line["target"].is_string(), "{line}");
            continue;
        }
        let documented: Vec<&String> = fields.keys().collect();
        keys.sort();
        assert_eq!(
            keys, documented,
            "the fields of {event} are not docs/telemetry.md's: {line}"
        );
        for (field, kind) in fields {
            assert!(
                is_of(kind, &line[field]),
                "{event}.{field} is not {kind}: {line}"
            );
        }
    }
}

/// Everything works: deliveries applied, skipped and ignored, a stored user's SyncMe, and a
/// nightly reconcile that finds the store in step with Clerk.
async fn healthy() -> Telemetry {
    let clerk = ClerkApiDouble::start(KEY).await;
    clerk.put_all([clerk_user(USER_ID, T0), clerk_organization("org_1", T0)]);
    let key = TestKey::generate("ins_telemetry");
    let env = [clerk_env(clerk.url(), KEY), session_env(&key)].concat();
    let host = FunctionsHost::start(&env).await;
    let user = clerk_event("user.created", clerk_user(USER_ID, T0));
    assert_eq!(deliver_as(&host, SECRET, FIRST_MESSAGE, &user).await, 200);
    assert_eq!(
        deliver_as(&host, SECRET, FIRST_MESSAGE, &user).await,
        200,
        "Svix's retry"
    );
    let organization = clerk_event("organization.created", clerk_organization("org_1", T0));
    assert_eq!(deliver(&host, SECRET, &organization).await, 200);
    let session = clerk_event(
        "session.created",
        json!({"id": "sess_1", "user_id": USER_ID}),
    );
    assert_eq!(deliver(&host, SECRET, &session).await, 200, "ignored");
    assert_eq!(sync_me(&host, &key).await, 200);
    let reconcile = host.timer("Reconcile").await;
    assert_eq!(reconcile.status, 200, "{}", reconcile.body);
    host.stop()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_alert_fires_while_all_is_well() {
    let telemetry = healthy().await;
    let reconcile = telemetry.console_line("reconcile");
    assert_eq!(
        reconcile.unwrap()["severityLevel"],
        1,
        "in step: information"
    );
    assert_eq!(firing(&telemetry), Vec::<&str>::new());

    // The README's ad hoc queries say what they promise on the same telemetry.
    let history = telemetry.query_with("adhoc-user-history", &[("user_id", &literal(USER_ID))]);
    let events: Vec<(&str, &str)> = history
        .iter()
        .map(|row| {
            (
                row["event"].as_str().unwrap(),
                row["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    // Clerk's T0 is older than any tombstone, so the first delivery asked Clerk first.
    assert_eq!(
        events,
        [
            ("resurrection_guard", ""),
            ("delivery", "applied"),
            ("delivery", "skipped"),
            ("syncme", "present")
        ]
    );
    let attempts = telemetry.query_with("adhoc-delivery", &[("event_id", &literal(FIRST_MESSAGE))]);
    let attempts: Vec<(&str, &str)> = attempts
        .iter()
        .map(|row| {
            (
                row["outcome"].as_str().unwrap(),
                row["host_result"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(attempts, [("applied", "200"), ("skipped", "200")]);
    assert!(telemetry.query("adhoc-refusals").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_failing_on_a_store_that_is_down_fire_the_5xx_and_store_alerts() {
    let host = FunctionsHost::start(&[]).await;
    // Another writer holds the store's write lock past the handler's busy timeout.
    let locker = rusqlite::Connection::open(host.store_path()).unwrap();
    locker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let event = user_changed("user.created", "user_1", T0);
    assert_eq!(deliver(&host, SECRET, &event).await, 503);
    locker.execute_batch("ROLLBACK").unwrap();
    let telemetry = host.stop();
    assert_conforms(&telemetry);
    for alert in ["alert-deliveries-failing", "alert-store-unavailable"] {
        let rows = telemetry.query(alert);
        assert_eq!(rows.len(), 1, "{alert}: {rows:?}");
    }
    let refusals = telemetry.query("adhoc-refusals");
    assert_eq!(
        (
            &refusals[0]["reason"],
            &refusals[0]["status"],
            &refusals[0]["calls"]
        ),
        (&json!("unavailable"), &json!(503), &json!(1)),
        "{refusals:?}"
    );
    // Its line reached Application Insights as a warning (stderr, saying "warn").
    let delivery = telemetry.console_line("delivery").unwrap();
    assert_eq!(delivery["severityLevel"], 2, "{delivery}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_signed_with_another_secret_fire_the_signature_alert() {
    let host = FunctionsHost::start(&[]).await;
    for n in 0..2 {
        let event = user_changed("user.updated", &format!("user_{n}"), T0);
        assert_eq!(deliver(&host, OTHER_SECRET, &event).await, 401);
    }
    let telemetry = host.stop();
    assert_conforms(&telemetry);
    let rows = telemetry.query("alert-signature-failures");
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["failures"], 2, "{rows:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconcile_that_heals_drift_fires_the_drift_alert() {
    let clerk = ClerkApiDouble::start(KEY).await;
    clerk.put_all([clerk_user("user_missed", T0), clerk_user("user_known", T0)]);
    let host = FunctionsHost::start(&clerk_env(clerk.url(), KEY)).await;
    let known = clerk_event("user.created", clerk_user("user_known", T0));
    assert_eq!(deliver(&host, SECRET, &known).await, 200);
    // Clerk has a bad moment: the run retries (a warning) and still completes.
    clerk.fail_next(Failure::Status(503));
    let reconcile = host.timer("Reconcile").await;
    assert_eq!(reconcile.status, 200, "{}", reconcile.body);
    let telemetry = host.stop();
    assert_conforms(&telemetry);
    assert!(telemetry.console_line("clerk_api_retry").is_some());
    let rows = telemetry.query("alert-reconcile-drift");
    assert_eq!(rows.len(), 1, "one run counts once: {rows:?}");
    assert_eq!(
        (&rows[0]["drift"], &rows[0]["users_created"]),
        (&json!(1), &json!(1))
    );
    assert!(telemetry.query("alert-reconcile-missing").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconcile_that_fails_fires_the_failed_and_missing_alerts() {
    let clerk = ClerkApiDouble::start(KEY).await;
    let host = FunctionsHost::start(&clerk_env(clerk.url(), "sk_test_not_the_key")).await;
    let reconcile = host.timer("Reconcile").await;
    assert_eq!(reconcile.status, 500, "{}", reconcile.body);
    let telemetry = host.stop();
    assert_conforms(&telemetry);
    let failed = telemetry.query("alert-reconcile-failed");
    let sources: Vec<&str> = failed.iter().filter_map(|r| r["source"].as_str()).collect();
    assert!(
        sources.contains(&"reconcile trace") && sources.contains(&"Reconcile request"),
        "both the handler's line and the host's failed invocation: {failed:?}"
    );
    assert_eq!(telemetry.query("alert-reconcile-missing").len(), 1);
    // The run's line is an error in Application Insights (stderr, no "warn" in it).
    let line = telemetry.console_line("reconcile").unwrap();
    assert_eq!(line["severityLevel"], 3, "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syncme_with_clerk_unreachable_fires_the_syncme_alert() {
    // Nothing listens there: every request to Clerk fails to connect.
    let unreachable = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let key = TestKey::generate("ins_unreachable");
    let env = [clerk_env(unreachable, KEY), session_env(&key)].concat();
    let host = FunctionsHost::start(&env).await;
    assert_eq!(sync_me(&host, &key).await, 503);
    let telemetry = host.stop();
    assert_conforms(&telemetry);
    let rows = telemetry.query("alert-syncme-unavailable");
    assert_eq!(rows.len(), 1, "{rows:?}");
}
