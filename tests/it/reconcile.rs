//! Reconcile against the Clerk Backend API double, on both stores: backfill, a dry run's exact
//! counts and the repair after it, a webhook that wins against a concurrent run, and runs that
//! stop part-way and delete nothing. Then the built binary: `handler reconcile`'s exit statuses
//! and report, the host's timer invocation, and the resurrection guard on the webhook path.

use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use handler::clerk::api::{ClerkApi, Timings};
use handler::reconcile::{self, Counts, Phase, Progress, Report, Run, Settings, Stopped, Trigger};
use handler::store::Store;
use handler::sync::document::{self, State};
use handler::sync::item::{ItemId, Kind};
use serde_json::{Value, json};

use crate::clerk_api_double::{ClerkApiDouble, Failure};
use crate::helpers::{
    TTL_SECONDS, TestApp, apply_event, clerk_event, clerk_membership, clerk_organization,
    clerk_user, stored_item, user_changed,
};

const KEY: &str = "sk_test_cmVjb25jaWxlIGRvdWJsZSBrZXk";
const T0: i64 = 1_700_000_000_000;
/// Retries in milliseconds, so that a run Clerk keeps failing ends quickly.
const FAST: Timings = Timings {
    first_backoff: Duration::from_millis(10),
    batch_timeout: Duration::from_secs(2),
    interactive_timeout: Duration::from_millis(500),
};

/// One test per case on a store from `$make`, as the store contract runs.
macro_rules! reconcile_tests {
    ($name:ident, $make:expr) => {
        crate::helpers::cases_on_store!(
            $name,
            $make,
            crate::reconcile,
            [
                backfill_into_an_empty_store_then_nothing_to_do,
                a_dry_run_counts_exactly_and_the_repair_heals_everything,
                a_newer_webhook_wins_against_a_concurrent_reconcile,
                a_sweep_that_fails_half_way_deletes_nothing,
                a_run_out_of_time_stops_cleanly_and_deletes_nothing,
                an_instance_without_organizations_reconciles_its_users,
                deletions_are_confirmed_by_hundreds_as_the_store_is_scanned,
            ]
        );
    };
}

reconcile_tests!(local, async { crate::helpers::local_store() });
reconcile_tests!(cosmos, crate::reconcile::emulated_store());

async fn emulated_store() -> (Arc<dyn Store>, crate::cosmos_emulator::Emulator) {
    let emulator = crate::cosmos_emulator::Emulator::new();
    let store: Arc<dyn Store> = Arc::new(emulator.store().await);
    (store, emulator)
}

struct Quiet;

impl Progress for Quiet {
    fn update(&self, _: Kind, _: &Counts, _: Phase) {}
}

async fn run(store: &dyn Store, double: &ClerkApiDouble, dry_run: bool) -> Run {
    let clerk = ClerkApi::new(&double.settings(KEY, 1000.0))
        .unwrap()
        .with_timings(FAST);
    reconcile::reconcile(
        store,
        &clerk,
        Settings {
            dry_run,
            tombstone_ttl_seconds: TTL_SECONDS,
            deadline: None,
            progress: &Quiet,
        },
    )
    .await
}

fn counts(
    clerk: u64,
    store: u64,
    [created, updated, deleted, unchanged, newer]: [u64; 5],
) -> Counts {
    Counts {
        clerk,
        store,
        created,
        updated,
        deleted,
        unchanged,
        newer_in_store: newer,
    }
}

/// Stores a user as its `user.created` webhook would.
async fn store_user(store: &dyn Store, id: &str, updated_at: i64) {
    let event = user_changed("user.created", id, updated_at);
    apply_event(store, &crate::helpers::msg_id(), &event)
        .await
        .unwrap();
}

async fn state_of(store: &dyn Store, id: &str) -> Option<State> {
    let (stored, _) = store.read(&ItemId::parse(id).unwrap()).await.unwrap();
    stored.map(|s| document::state(&s.document))
}

fn tombstone(kind: Kind) -> Option<State> {
    Some(State::Tombstone { of: Some(kind) })
}

/// Every item's id and state, sorted: a picture of the whole store.
async fn picture(store: &dyn Store) -> Vec<(String, State)> {
    let mut states: Vec<_> = store.states().try_collect().await.unwrap();
    states.sort_by(|a, b| a.0.cmp(&b.0));
    states
}

pub async fn backfill_into_an_empty_store_then_nothing_to_do(store: Arc<dyn Store>) {
    let double = ClerkApiDouble::start(KEY).await;
    // 1,100 users over three pages, 600 of them created in one millisecond (a bulk import).
    double.put_all((0..1100).map(|n| {
        let mut user = clerk_user(&format!("user_{n:04}"), T0 + 5);
        user["created_at"] = json!(if n < 600 { T0 } else { T0 + n as i64 });
        user
    }));
    double.put_all((0..3).map(|n| clerk_organization(&format!("org_{n}"), T0)));
    double.put_all((0..4).map(|n| {
        clerk_membership(
            &format!("orgmem_{n}"),
            &format!("org_{}", n % 3),
            "user_0001",
            T0,
        )
    }));

    let backfill = run(store.as_ref(), &double, false).await;
    assert!(backfill.stopped.is_none(), "{:?}", backfill.stopped);
    assert!(backfill.id.starts_with("reconcile:20"), "{}", backfill.id);
    assert_eq!(
        backfill.report,
        Report {
            dry_run: false,
            complete: true,
            users: counts(1100, 0, [1100, 0, 0, 0, 0]),
            organizations: counts(3, 0, [3, 0, 0, 0, 0]),
            memberships: counts(4, 0, [4, 0, 0, 0, 0]),
        }
    );
    // Documents are the same a webhook writes, stamped with the run.
    let user = stored_item(store.as_ref(), "user_0599").await;
    assert_eq!(
        user["email"], "ada@example.com",
        "the primary address, not the first"
    );
    assert_eq!(user["role"], "USER");
    assert_eq!(user["lastEventId"], backfill.id.as_str());
    let membership = stored_item(store.as_ref(), "orgmem_2").await;
    assert_eq!(
        (&membership["organizationId"], &membership["userId"]),
        (&json!("org_2"), &json!("user_0001"))
    );

    let again = run(store.as_ref(), &double, true).await;
    assert_eq!(
        again.report,
        Report {
            dry_run: true,
            complete: true,
            users: counts(1100, 1100, [0, 0, 0, 1100, 0]),
            organizations: counts(3, 3, [0, 0, 0, 3, 0]),
            memberships: counts(4, 4, [0, 0, 0, 4, 0]),
        }
    );
}

/// A store with one of everything that can differ from Clerk, set up through webhooks.
async fn drifted(store: &dyn Store, double: &ClerkApiDouble) {
    for (n, event) in [
        user_changed("user.created", "user_same", T0 + 10),
        user_changed("user.created", "user_stale", T0 + 5),
        user_changed("user.created", "user_newer", T0 + 20),
        user_changed("user.created", "user_gone", T0 + 1),
        clerk_event("user.deleted", json!({"id": "user_tomb", "deleted": true})),
        clerk_event("organization.created", clerk_organization("org_keep", T0)),
        clerk_event("organization.created", clerk_organization("org_gone", T0)),
        clerk_event(
            "organizationMembership.created",
            clerk_membership("orgmem_keep", "org_keep", "user_same", T0),
        ),
        clerk_event(
            "organizationMembership.created",
            clerk_membership("orgmem_gone", "org_gone", "user_same", T0),
        ),
    ]
    .iter()
    .enumerate()
    {
        apply_event(store, &format!("msg_{n}"), event)
            .await
            .unwrap();
    }
    double.put_all([
        clerk_user("user_same", T0 + 10),
        clerk_user("user_stale", T0 + 10),
        clerk_user("user_newer", T0 + 10),
        clerk_user("user_tomb", T0 + 10),
        clerk_user("user_missing", T0 + 10),
        clerk_organization("org_keep", T0),
        clerk_membership("orgmem_keep", "org_keep", "user_same", T0),
        clerk_membership("orgmem_new", "org_keep", "user_missing", T0),
    ]);
}

pub async fn a_dry_run_counts_exactly_and_the_repair_heals_everything(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let double = ClerkApiDouble::start(KEY).await;
    drifted(s, &double).await;
    let expected = |dry_run| Report {
        dry_run,
        complete: true,
        // Clerk: same, stale, newer, tomb (a tombstone is never undone), missing.
        // Store: same, stale, newer, gone.
        users: counts(5, 4, [1, 1, 1, 2, 1]),
        organizations: counts(1, 2, [0, 0, 1, 1, 0]),
        memberships: counts(2, 2, [1, 0, 1, 1, 0]),
    };

    let before = picture(s).await;
    let dry = run(s, &double, true).await;
    assert_eq!(dry.report, expected(true));
    assert_eq!(picture(s).await, before, "a dry run changes nothing");

    let repair = run(s, &double, false).await;
    assert_eq!(repair.report, expected(false));
    assert_eq!(
        stored_item(s, "user_missing").await["lastEventId"],
        repair.id.as_str()
    );
    assert_eq!(
        stored_item(s, "user_stale").await["clerkUpdatedAt"],
        T0 + 10
    );
    assert_eq!(
        stored_item(s, "user_newer").await["clerkUpdatedAt"],
        T0 + 20
    );
    assert_eq!(state_of(s, "user_tomb").await, tombstone(Kind::User));
    assert_eq!(state_of(s, "user_gone").await, tombstone(Kind::User));
    assert_eq!(state_of(s, "org_gone").await, tombstone(Kind::Organization));
    assert_eq!(
        state_of(s, "orgmem_gone").await,
        tombstone(Kind::Membership)
    );
    assert!(
        state_of(s, "orgmem_new")
            .await
            .unwrap()
            .is_live(Kind::Membership)
    );

    let after = run(s, &double, true).await;
    assert_eq!(after.report.drift(), 0, "{:?}", after.report);
    assert_eq!(after.report.users, counts(5, 4, [0, 0, 0, 4, 1]));
}

pub async fn a_newer_webhook_wins_against_a_concurrent_reconcile(store: Arc<dyn Store>) {
    let double = ClerkApiDouble::start(KEY).await;
    store_user(store.as_ref(), "user_w", T0 + 5).await;
    double.put(clerk_user("user_w", T0 + 10));
    // The run loads the store, asks for the first page of users, and is kept waiting.
    double.fail_next(Failure::Delay(Duration::from_millis(400)));
    let reconciling = {
        let (store, url) = (Arc::clone(&store), double.url());
        tokio::spawn(async move {
            let double_url = url;
            let clerk = ClerkApi::new(&crate::clerk_api_double::api_settings(
                &double_url,
                KEY,
                1000.0,
            ))
            .unwrap()
            .with_timings(FAST);
            reconcile::reconcile(
                store.as_ref(),
                &clerk,
                Settings {
                    dry_run: false,
                    tombstone_ttl_seconds: TTL_SECONDS,
                    deadline: None,
                    progress: &Quiet,
                },
            )
            .await
            .report
        })
    };
    while double.request_count() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Meanwhile a webhook delivers a version newer than the one Clerk's page will carry.
    let mut newest = user_changed("user.updated", "user_w", T0 + 30);
    newest["data"]["first_name"] = json!("Webhook");
    apply_event(store.as_ref(), "msg_2", &newest).await.unwrap();

    let report = reconciling.await.unwrap();
    assert_eq!(report.users, counts(1, 1, [0, 0, 0, 0, 1]));
    let user = stored_item(store.as_ref(), "user_w").await;
    assert_eq!(
        (&user["clerkUpdatedAt"], &user["firstName"]),
        (&json!(T0 + 30), &json!("Webhook"))
    );
    assert_eq!(user["lastEventId"], "msg_2");
}

pub async fn a_sweep_that_fails_half_way_deletes_nothing(store: Arc<dyn Store>) {
    let double = ClerkApiDouble::start(KEY).await;
    store_user(store.as_ref(), "user_gone", T0).await;
    double.put_all((0..600).map(|n| clerk_user(&format!("user_{n:04}"), T0)));
    // The first page arrives; every attempt at the second fails.
    double.fail_next(Failure::Delay(Duration::from_millis(10)));
    for _ in 0..12 {
        double.fail_next(Failure::Status(503));
    }
    let failed = run(store.as_ref(), &double, false).await;
    assert!(
        matches!(failed.stopped, Some(Stopped::Clerk(_))),
        "{:?}",
        failed.stopped
    );
    assert!(!failed.report.complete);
    assert_eq!(
        failed.report.users.created, 500,
        "the first page was applied"
    );
    assert_eq!(failed.report.users.deleted, 0);
    assert!(
        state_of(store.as_ref(), "user_gone")
            .await
            .unwrap()
            .is_live(Kind::User)
    );
}

pub async fn a_run_out_of_time_stops_cleanly_and_deletes_nothing(store: Arc<dyn Store>) {
    let double = ClerkApiDouble::start(KEY).await;
    store_user(store.as_ref(), "user_gone", T0).await;
    double.put(clerk_user("user_kept", T0));
    double.fail_next(Failure::Delay(Duration::from_millis(800)));
    let clerk = ClerkApi::new(&double.settings(KEY, 1000.0))
        .unwrap()
        .with_timings(FAST);
    let out_of_time = reconcile::reconcile(
        store.as_ref(),
        &clerk,
        Settings {
            dry_run: false,
            tombstone_ttl_seconds: TTL_SECONDS,
            deadline: Some(tokio::time::Instant::now() + Duration::from_millis(200)),
            progress: &Quiet,
        },
    )
    .await;
    assert!(
        matches!(out_of_time.stopped, Some(Stopped::OutOfTime)),
        "{:?}",
        out_of_time.stopped
    );
    assert!(!out_of_time.report.complete);
    assert!(
        state_of(store.as_ref(), "user_gone")
            .await
            .unwrap()
            .is_live(Kind::User)
    );
    assert_eq!(
        out_of_time.summary(Trigger::Command)[0],
        format!(
            "{}: incomplete, nothing deleted: its time budget ran out",
            out_of_time.id
        )
    );
}

pub async fn an_instance_without_organizations_reconciles_its_users(store: Arc<dyn Store>) {
    let double = ClerkApiDouble::start(KEY).await;
    double.put(clerk_user("user_a", T0));
    // Users page, then 403 for the organization and membership lists, as an instance with the
    // Organizations feature off answers.
    double.fail_next(Failure::Delay(Duration::ZERO));
    double.fail_next(Failure::Status(403));
    double.fail_next(Failure::Status(403));
    let users_only = run(store.as_ref(), &double, false).await;
    assert!(users_only.stopped.is_none(), "{:?}", users_only.stopped);
    assert_eq!(users_only.report.users, counts(1, 0, [1, 0, 0, 0, 0]));
    assert_eq!(users_only.report.organizations, Counts::default());

    // With an organization stored, the 403 that forbids confirming its deletion stops the run:
    // nothing is deleted on a 403 alone.
    apply_event(
        store.as_ref(),
        "msg_o",
        &clerk_event("organization.created", clerk_organization("org_x", T0)),
    )
    .await
    .unwrap();
    // Users page; organization list, membership list, and the deletion check: 403.
    double.fail_next(Failure::Delay(Duration::ZERO));
    for _ in 0..3 {
        double.fail_next(Failure::Status(403));
    }
    let again = run(store.as_ref(), &double, false).await;
    assert!(
        matches!(again.stopped, Some(Stopped::Clerk(_))),
        "{:?}",
        again.stopped
    );
    assert!(
        state_of(store.as_ref(), "org_x")
            .await
            .unwrap()
            .is_live(Kind::Organization)
    );
}

pub async fn deletions_are_confirmed_by_hundreds_as_the_store_is_scanned(store: Arc<dyn Store>) {
    let double = ClerkApiDouble::start(KEY).await;
    // 250 users stored, of whom Clerk keeps every fifth; and an organization it no longer has,
    // with a membership of a kept user.
    for n in 0..250 {
        store_user(store.as_ref(), &format!("user_{n:03}"), T0).await;
    }
    double.put_all(
        (0..250)
            .step_by(5)
            .map(|n| clerk_user(&format!("user_{n:03}"), T0)),
    );
    for (n, event) in [
        clerk_event("organization.created", clerk_organization("org_gone", T0)),
        clerk_event(
            "organizationMembership.created",
            clerk_membership("orgmem_gone", "org_gone", "user_000", T0),
        ),
    ]
    .iter()
    .enumerate()
    {
        apply_event(store.as_ref(), &format!("msg_o{n}"), event)
            .await
            .unwrap();
    }

    let dry = run(store.as_ref(), &double, true).await;
    assert_eq!(dry.report.users, counts(50, 250, [0, 0, 200, 50, 0]));
    assert_eq!(dry.report.organizations, counts(0, 1, [0, 0, 1, 0, 0]));
    assert_eq!(dry.report.memberships, counts(0, 1, [0, 0, 1, 0, 0]));
    let asked: Vec<usize> = double
        .requests()
        .iter()
        .filter(|r| r.path == "/v1/users" && !r.query_values("user_id").is_empty())
        .map(|r| r.query_values("user_id").len())
        .collect();
    assert_eq!(asked, [100, 100], "the 200 candidates, asked by hundreds");

    let repair = run(store.as_ref(), &double, false).await;
    assert!(repair.stopped.is_none(), "{:?}", repair.stopped);
    assert_eq!(repair.report.users.deleted, 200);
    assert_eq!(
        repair.report.memberships.deleted, 1,
        "taken along by its organization"
    );
    let live = picture(store.as_ref())
        .await
        .into_iter()
        .filter(|(_, state)| state.is_live(Kind::User))
        .count();
    assert_eq!(live, 50);
    assert_eq!(
        state_of(store.as_ref(), "orgmem_gone").await,
        tombstone(Kind::Membership)
    );
}

// ---------------------------------------------------------------------------------------------
// The built binary.

fn clerk_env(double: &ClerkApiDouble, key: &str) -> Vec<(&'static str, String)> {
    vec![
        ("CLERK_SECRET_KEY", key.to_owned()),
        ("CLERK_API_URL", double.url()),
        ("CLERK_API_RATE", "1000".to_owned()),
    ]
}

fn recent() -> i64 {
    crate::helpers::now() * 1000
}

async fn start(env: &[(&'static str, String)]) -> TestApp {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    crate::helpers::spawn_app(&env).await
}

/// `handler reconcile <args>` on the process's store: exit status and the report it printed.
fn reconcile_command(app: &TestApp, args: &[&str]) -> (Option<i32>, String) {
    let mut all = vec!["reconcile"];
    all.extend(args);
    let output = app.command(&all);
    (
        output.status.code(),
        String::from_utf8(output.stdout).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_reports_and_exits_as_the_spec_says() {
    let double = ClerkApiDouble::start(KEY).await;
    double.put_all([clerk_user("user_a", T0), clerk_user("user_b", T0)]);
    let app = start(&clerk_env(&double, KEY)).await;
    app.deliver(&user_changed("user.created", "user_gone", recent()))
        .await;

    let (code, stdout) = reconcile_command(&app, &["--dry-run", "--json"]);
    assert_eq!(code, Some(4), "a dry run that finds drift: {stdout}");
    let report: Value = serde_json::from_str(stdout.trim()).unwrap();
    let zero = json!({"clerk": 0, "store": 0, "created": 0, "updated": 0, "deleted": 0,
                      "unchanged": 0, "newerInStore": 0});
    assert_eq!(
        report,
        json!({"dryRun": true, "complete": true,
               "users": {"clerk": 2, "store": 1, "created": 2, "updated": 0, "deleted": 1,
                         "unchanged": 0, "newerInStore": 0},
               "organizations": zero, "memberships": zero})
    );
    assert_eq!(stdout.trim().lines().count(), 1, "exactly one JSON object");
    assert_eq!(app.users_list().await.len(), 1, "the dry run wrote nothing");

    let (code, table) = reconcile_command(&app, &[]);
    assert_eq!(code, Some(0), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()
                == ["users", "2", "1", "2", "0", "1", "0", "0"]),
        "{table}"
    );
    assert!(table.contains(": complete"), "{table}");
    let mut ids: Vec<String> = app
        .users_list()
        .await
        .iter()
        .map(|u| u["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    assert_eq!(ids, ["user_a", "user_b"]);

    let (code, stdout) = reconcile_command(&app, &["--dry-run", "--json"]);
    assert_eq!(code, Some(0), "nothing left to do: {stdout}");

    // Clerk refusing the key: unavailable, incomplete, nothing deleted.
    double.remove("user_a");
    let mut refused = clerk_env(&double, "sk_test_wrong");
    refused.push(("LOCAL_STORE_PATH", app_store_path(&app)));
    let output = crate::helpers::handler_command(&with_process_env(&app, &refused))
        .args(["reconcile", "--json"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(3), "{output:?}");
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["complete"], false);
    assert!(
        app.users_get("user_a").await.is_some(),
        "an incomplete run deletes nothing"
    );
}

/// The running process's store path.
fn app_store_path(app: &TestApp) -> String {
    app.env_value("LOCAL_STORE_PATH").unwrap()
}

/// The process's environment with `overrides` in place of its own values.
fn with_process_env(app: &TestApp, overrides: &[(&'static str, String)]) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = app
        .env()
        .iter()
        .filter(|(k, _)| !overrides.iter().any(|(o, _)| o == k))
        .cloned()
        .collect();
    env.extend(overrides.iter().map(|(k, v)| (k.to_string(), v.clone())));
    env
}

#[test]
fn the_command_without_a_secret_key_is_a_configuration_error() {
    let output = crate::helpers::handler_command(&[(
        "LOCAL_STORE_PATH".into(),
        "/nonexistent/x.sqlite3".into(),
    )])
    .args(["reconcile", "--dry-run"])
    .output()
    .unwrap();
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("CLERK_SECRET_KEY"));
    assert!(output.stdout.is_empty());
}

/// The host's invocation of a timer function, as the Functions host posts it to a custom
/// handler.
async fn invoke_timer(app: &TestApp) -> (u16, Value) {
    let envelope = json!({
        "Data": {"timer": {"Schedule": {"AdjustForDST": true},
                           "ScheduleStatus": {"Last": "2026-11-21T03:00:00+00:00",
                                              "Next": "2026-11-22T03:00:00+00:00",
                                              "LastUpdated": "2026-11-21T03:00:00+00:00"},
                           "IsPastDue": false}},
        "Metadata": {"sys": {"MethodName": "Reconcile", "UtcNow": "2026-11-22T03:00:00.0123456Z",
                             "RandGuid": "6f1c8a4e-0d7b-4c4e-9a55-0c1b2a3d4e5f"}}
    });
    let response = reqwest::Client::new()
        .post(format!("{}/Reconcile", app.base_url))
        .header(
            "X-Azure-Functions-InvocationId",
            "3f1c8a4e-0d7b-4c4e-9a55-0c1b2a3d4e5f",
        )
        .header("X-Azure-Functions-HostVersion", "4.1040.300.25317")
        .header("User-Agent", "Azure-Functions-Host/4.1040.300.25317")
        .json(&envelope)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_timer_invocation_reconciles_and_answers_the_host() {
    let double = ClerkApiDouble::start(KEY).await;
    double.put_all([clerk_user("user_a", T0), clerk_organization("org_a", T0)]);
    let app = start(&clerk_env(&double, KEY)).await;
    app.deliver(&user_changed("user.created", "user_gone", recent()))
        .await;

    let (status, body) = invoke_timer(&app).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (&body["Outputs"], &body["ReturnValue"]),
        (&json!({}), &Value::Null)
    );
    let logs: Vec<&str> = body["Logs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert!(
        logs[0].starts_with("reconcile:") && logs[0].ends_with(": complete"),
        "{logs:?}"
    );
    assert!(
        logs.iter()
            .any(|l| l.starts_with("users: clerk 1, store 1, created 1")),
        "{logs:?}"
    );
    assert_eq!(
        app.users_list()
            .await
            .iter()
            .map(|u| u["id"].clone())
            .collect::<Vec<_>>(),
        [json!("user_a")]
    );
    assert!(app.get(Kind::Organization, "org_a").await.is_some());

    // A GET is not an invocation.
    let get = reqwest::get(format!("{}/Reconcile", app.base_url))
        .await
        .unwrap();
    assert_eq!(get.status(), 405);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timer_invocation_that_cannot_finish_fails_and_one_not_configured_says_so() {
    let double = ClerkApiDouble::start(KEY).await;
    let refused = start(&clerk_env(&double, "sk_test_not_the_key")).await;
    refused
        .deliver(&user_changed("user.created", "user_gone", recent()))
        .await;
    let (status, body) = invoke_timer(&refused).await;
    assert_eq!(status, 500, "the invocation shows as failed: {body}");
    assert!(
        body["Logs"][0]
            .as_str()
            .unwrap()
            .contains("incomplete, nothing deleted"),
        "{body}"
    );
    assert!(refused.users_get("user_gone").await.is_some());

    let unconfigured = crate::helpers::spawn_app(&[]).await;
    let (status, body) = invoke_timer(&unconfigured).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["Logs"][0].as_str().unwrap().contains("not configured"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_resurrection_guard_asks_clerk_about_old_events_for_unknown_items() {
    let double = ClerkApiDouble::start(KEY).await;
    let app = start(&clerk_env(&double, KEY)).await;
    let now_ms = crate::helpers::now() * 1000;
    let old = now_ms - 40 * 86_400_000;

    // Gone from Clerk: a tombstone is written and the event skipped; later events stay blocked.
    let (status, body) = app
        .deliver(&user_changed("user.updated", "user_old", old))
        .await;
    assert_eq!(
        (status, &body["reason"]),
        (200, &json!("deleted")),
        "{body}"
    );
    assert_eq!(app.users_get("user_old").await, None);
    let (_, body) = app
        .deliver(&user_changed("user.created", "user_old", now_ms))
        .await;
    assert_eq!(
        body["reason"], "deleted",
        "the guard's tombstone blocks: {body}"
    );
    assert_eq!(
        double
            .requests()
            .iter()
            .filter(|r| r.path == "/v1/users/user_old")
            .count(),
        1
    );

    // Still in Clerk: applied.
    double.put(clerk_user("user_kept", old));
    let (_, body) = app
        .deliver(&user_changed("user.updated", "user_kept", old))
        .await;
    assert_eq!(body["status"], "applied", "{body}");
    assert!(app.users_get("user_kept").await.is_some());

    // Organizations and memberships are guarded alike.
    let (_, body) = app
        .deliver(&clerk_event(
            "organization.updated",
            clerk_organization("org_old", old),
        ))
        .await;
    assert_eq!(body["reason"], "deleted", "{body}");
    assert_eq!(app.get(Kind::Organization, "org_old").await, None);

    // Clerk throttled: 503 with Retry-After, nothing stored; Svix delivers again.
    double.fail_next(Failure::RateLimited {
        retry_after_secs: 7,
    });
    let body = serde_json::to_vec(&user_changed("user.updated", "user_busy", old)).unwrap();
    let headers = crate::helpers::svix_headers(
        crate::helpers::SECRET,
        &crate::helpers::msg_id(),
        crate::helpers::now(),
        &body,
    );
    let (status, _) = app.post(&headers, body).await;
    assert_eq!(status, 503);
    assert_eq!(app.users_get("user_busy").await, None);

    // A recent event never asks.
    let before = double.request_count();
    let (_, body) = app
        .deliver(&user_changed("user.created", "user_new", now_ms))
        .await;
    assert_eq!(body["status"], "applied");
    assert_eq!(double.request_count(), before);
}
