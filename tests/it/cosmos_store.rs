//! The Cosmos DB store against Microsoft's in-memory emulator: the store contract both stores
//! share, the round trips each delivery costs, and what a delivery answers when Cosmos throttles,
//! fails or goes slow.

use std::sync::Arc;

use serde_json::{Value, json};

use handler::store::{Condition, Store, StoreError};
use handler::sync::document::Source;
use handler::sync::item::ItemId;

use crate::cosmos_emulator::Emulator;

async fn emulated_store() -> (Arc<dyn Store>, Emulator) {
    let emulator = Emulator::new();
    let store: Arc<dyn Store> = Arc::new(emulator.store().await);
    (store, emulator)
}

// The shared contract, without the expiry case: the in-memory emulator does not model per-item
// TTL. On Cosmos, expiry is the service's own (the container has TTL on and the tombstone carries
// `ttl`), and `apply_follows_the_sync_rules` checks that the `ttl` is written.
crate::store_contract::store_contract_tests!(contract, super::emulated_store());

fn id(raw: &str) -> ItemId {
    ItemId::parse(raw).unwrap()
}

use crate::helpers::object as doc;

#[tokio::test]
async fn create_read_replace_round_trip_with_etags() {
    let emulator = Emulator::new();
    let store = emulator.store().await;
    let user = id("user_1");

    let (absent, _) = store.read(&user).await.unwrap();
    assert!(absent.is_none());

    let first = doc(json!({"id": "user_1", "type": "user", "clerkUpdatedAt": 1}));
    let charge = store
        .write(&user, &first, &Condition::Absent)
        .await
        .unwrap();
    assert!(charge.0 > 0.0, "Cosmos charges for a write");

    let (stored, charge) = store.read(&user).await.unwrap();
    let stored = stored.expect("the created item");
    assert!(charge.0 > 0.0, "Cosmos charges for a read");
    assert_eq!(stored.document, first, "no system properties leak out");

    let again = store.write(&user, &first, &Condition::Absent).await;
    assert!(matches!(again, Err(StoreError::ConditionFailed)));

    let second = doc(json!({"id": "user_1", "type": "user", "clerkUpdatedAt": 2}));
    store
        .write(&user, &second, &Condition::for_replacing(Some(&stored)))
        .await
        .unwrap();
    let stale = store
        .write(&user, &first, &Condition::for_replacing(Some(&stored)))
        .await;
    assert!(matches!(stale, Err(StoreError::ConditionFailed)));

    let item = emulator.observer().await.item("user_1").await.unwrap();
    assert_eq!(item["clerkUpdatedAt"], 2);
}

/// The round trips each kind of delivery costs, counted where a real account would count them:
/// item requests arriving at the emulator (metadata reads happen once, at connection).
#[tokio::test]
async fn round_trips_per_event_type() {
    use azure_core::http::Method;
    use handler::clerk::ClerkEvent;
    use handler::sync::apply::{self, Options};
    use handler::sync::decide::Change;

    use crate::cosmos_emulator::ItemRequest;

    fn event(body: Value) -> ClerkEvent {
        ClerkEvent::parse(body.to_string().as_bytes()).unwrap().1
    }
    let changed = |id: &str, version: i64| {
        event(json!({"type": "user.updated", "data": {"id": id, "updated_at": version}}))
    };
    let deleted = |id: &str| event(json!({"type": "user.deleted", "data": {"id": id}}));
    let read = ItemRequest {
        method: Method::Get,
        if_match: false,
        query: false,
    };
    let create = ItemRequest {
        method: Method::Post,
        if_match: false,
        query: false,
    };
    let replace = ItemRequest {
        method: Method::Put,
        if_match: true,
        query: false,
    };

    let emulator = Emulator::new();
    let store = emulator.store().await;
    let cases = [
        (
            "new user",
            changed("user_1", 1),
            vec![read.clone(), create.clone()],
        ),
        (
            "update",
            changed("user_1", 2),
            vec![read.clone(), replace.clone()],
        ),
        ("duplicate", changed("user_1", 2), vec![read.clone()]),
        ("stale", changed("user_1", 1), vec![read.clone()]),
        (
            "delete",
            deleted("user_1"),
            vec![read.clone(), replace.clone()],
        ),
        ("after delete", changed("user_1", 3), vec![read.clone()]),
        (
            "delete of an unknown user",
            deleted("user_2"),
            vec![read.clone(), create.clone()],
        ),
    ];
    // Connect first, so that only the deliveries' own requests are counted.
    store.read(&id("user_0")).await.unwrap();
    emulator.take_item_requests();
    for (n, (name, event, expected)) in cases.iter().enumerate() {
        let change = Change::from_event(event).unwrap();
        let options = Options {
            source: Source::Webhook(&format!("msg_{n}")),
            tombstone_ttl_seconds: 60,
            guard: None,
        };
        let report = apply::apply(&store, change, options).await.unwrap();
        let (queries, requests): (Vec<_>, Vec<_>) = emulator
            .take_item_requests()
            .into_iter()
            .partition(|request| request.query);
        assert_eq!(&requests, expected, "{name}");
        // A delete looks for the memberships it must take with it: one query, which the SDK
        // sends as a query plan and a request per partition range.
        let cascades = name.starts_with("delete");
        assert_eq!(!queries.is_empty(), cascades, "{name}: {queries:?}");
        let query_trips = usize::from(cascades);
        assert_eq!(
            report.tally.round_trips as usize,
            expected.len() + query_trips,
            "{name}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Faults, injected by the SDK's own fault-injection transport in front of the emulator.

mod faults {
    use std::sync::Arc;
    use std::time::Duration;

    use azure_core::http::StatusCode;
    use azure_data_cosmos_driver::fault_injection::{
        CustomResponseBuilder, FaultInjectionConditionBuilder, FaultInjectionErrorType,
        FaultInjectionResult, FaultInjectionResultBuilder, FaultInjectionRule,
        FaultInjectionRuleBuilder, FaultOperationType,
    };
    use handler::clerk::ClerkEvent;
    use handler::store::{Store, StoreError};
    use handler::sync::apply::{self, ApplyError, Options, Report};
    use handler::sync::decide::{Change, Outcome, SkipReason};
    use handler::sync::document::Source;
    use serde_json::json;

    use crate::cosmos_emulator::Emulator;

    const TTL: u32 = 30 * 86_400;

    fn changed(id: &str, version: i64) -> ClerkEvent {
        let body = json!({"type": "user.updated", "data": {
            "id": id, "updated_at": version, "first_name": format!("v{version}"),
        }});
        ClerkEvent::parse(body.to_string().as_bytes()).unwrap().1
    }

    async fn deliver(
        store: &dyn Store,
        event: &ClerkEvent,
        event_id: &str,
    ) -> Result<Report, StoreError> {
        let change = Change::from_event(event).expect("an event the handler handles");
        let options = Options {
            source: Source::Webhook(event_id),
            tombstone_ttl_seconds: TTL,
            guard: None,
        };
        apply::apply(store, change, options)
            .await
            .map_err(|error| match error {
                ApplyError::Store(error) => error,
                other => panic!("not a store error: {other}"),
            })
    }

    fn result(error: FaultInjectionErrorType) -> FaultInjectionResult {
        FaultInjectionResultBuilder::new().with_error(error).build()
    }

    fn rule(
        name: &str,
        result: FaultInjectionResult,
        operation: FaultOperationType,
        hits: Option<u32>,
    ) -> Arc<FaultInjectionRule> {
        let condition = FaultInjectionConditionBuilder::new()
            .with_operation_type(operation)
            .build();
        let builder = FaultInjectionRuleBuilder::new(name, result).with_condition(condition);
        let builder = match hits {
            Some(hits) => builder.with_hit_limit(hits),
            None => builder,
        };
        Arc::new(builder.build())
    }

    fn is_unavailable(result: &Result<Report, StoreError>) -> bool {
        matches!(result, Err(StoreError::Unavailable { .. }))
    }

    #[tokio::test]
    async fn a_burst_of_429s_is_absorbed_by_the_sdk_retries() {
        let emulator = Emulator::new();
        let burst = rule(
            "429-burst",
            result(FaultInjectionErrorType::TooManyRequests),
            FaultOperationType::CreateItem,
            Some(3),
        );
        let store = emulator
            .store_with_faults(&Emulator::key_settings(), vec![Arc::clone(&burst)])
            .await;

        let report = deliver(&store, &changed("user_1", 1), "msg_1")
            .await
            .unwrap();

        assert_eq!(report.outcome, Outcome::Applied);
        assert_eq!(
            burst.hit_count(),
            3,
            "every throttled attempt reached the fault"
        );
        let item = emulator.observer().await.item("user_1").await.unwrap();
        assert_eq!(item["lastEventId"], "msg_1");
    }

    #[tokio::test]
    async fn throttling_that_outlasts_the_sdk_retries_is_unavailable_with_the_service_hint() {
        let emulator = Emulator::new();
        let throttled = CustomResponseBuilder::new(StatusCode::TooManyRequests)
            .with_header("x-ms-retry-after-ms", "700")
            .with_sub_status(3200)
            .build();
        let always = rule(
            "429-always",
            FaultInjectionResultBuilder::new()
                .with_custom_response(throttled)
                .build(),
            FaultOperationType::CreateItem,
            None,
        );
        let store = emulator
            .store_with_faults(&Emulator::key_settings(), vec![always])
            .await;

        let outcome = deliver(&store, &changed("user_1", 1), "msg_1").await;

        match outcome {
            Err(StoreError::Unavailable { retry_after, .. }) => {
                assert_eq!(retry_after, Some(Duration::from_millis(700)));
            }
            other => panic!("expected unavailable, got {other:?}"),
        }
        assert!(emulator.observer().await.item("user_1").await.is_none());
    }

    /// Each transient failure, persistent on the replace: the update is refused as unavailable
    /// and nothing changes; once Cosmos recovers, the redelivered update applies exactly once.
    #[tokio::test]
    async fn transient_write_failures_are_unavailable_and_the_retry_applies_once() {
        for error in [
            FaultInjectionErrorType::ServiceUnavailable,
            FaultInjectionErrorType::Timeout,
            FaultInjectionErrorType::InternalServerError,
            FaultInjectionErrorType::ConnectionError,
            FaultInjectionErrorType::ResponseTimeout,
        ] {
            let emulator = Emulator::new();
            let fault = rule(
                "replace",
                result(error),
                FaultOperationType::ReplaceItem,
                None,
            );
            let store = emulator
                .store_with_faults(&Emulator::key_settings(), vec![Arc::clone(&fault)])
                .await;
            deliver(&store, &changed("user_1", 1), "msg_1")
                .await
                .unwrap();

            let failed = deliver(&store, &changed("user_1", 2), "msg_2").await;
            assert!(is_unavailable(&failed), "{error:?}: got {failed:?}");
            let item = emulator.observer().await.item("user_1").await.unwrap();
            assert_eq!(
                item["lastEventId"], "msg_1",
                "{error:?}: nothing half-written"
            );

            fault.disable();
            let retried = deliver(&store, &changed("user_1", 2), "msg_2")
                .await
                .unwrap();
            assert_eq!(retried.outcome, Outcome::Applied, "{error:?}");
            let again = deliver(&store, &changed("user_1", 2), "msg_2")
                .await
                .unwrap();
            assert_eq!(
                again.outcome,
                Outcome::Skipped(SkipReason::Unchanged),
                "{error:?}"
            );
            let item = emulator.observer().await.item("user_1").await.unwrap();
            assert_eq!(item["lastEventId"], "msg_2", "{error:?}");
            assert_eq!(item["firstName"], "v2", "{error:?}");
        }
    }

    /// The write reaches Cosmos and commits, but its answer is lost: whatever the first
    /// delivery answers, the event ends up applied once, and its redelivery changes nothing.
    #[tokio::test]
    async fn a_write_whose_answer_is_lost_is_applied_exactly_once() {
        let emulator = Emulator::new();
        let lost = rule(
            "lost-answer",
            result(FaultInjectionErrorType::ResponseTimeoutAfterService),
            FaultOperationType::CreateItem,
            Some(1),
        );
        let store = emulator
            .store_with_faults(&Emulator::key_settings(), vec![Arc::clone(&lost)])
            .await;

        let first = deliver(&store, &changed("user_1", 1), "msg_1").await;
        assert_eq!(lost.hit_count(), 1);
        let item = emulator.observer().await.item("user_1").await.unwrap();
        assert_eq!(
            item["lastEventId"], "msg_1",
            "the write committed: {first:?}"
        );

        let redelivered = deliver(&store, &changed("user_1", 1), "msg_1")
            .await
            .unwrap();
        assert_eq!(redelivered.outcome, Outcome::Skipped(SkipReason::Unchanged));
    }

    #[tokio::test]
    async fn a_slow_cosmos_is_unavailable_within_the_operation_budget() {
        let emulator = Emulator::new();
        let slow = rule(
            "slow-read",
            FaultInjectionResultBuilder::new()
                .with_delay(Duration::from_secs(30))
                .build(),
            FaultOperationType::ReadItem,
            None,
        );
        let store = emulator
            .store_with_faults(&Emulator::key_settings(), vec![slow])
            .await;

        let outcome = deliver(&store, &changed("user_1", 1), "msg_1").await;

        assert!(is_unavailable(&outcome), "got {outcome:?}");
        assert!(emulator.observer().await.item("user_1").await.is_none());
    }

    /// Cosmos unreachable while the client connects: operations are unavailable (never
    /// blocked), and the next operation after it comes back connects and succeeds.
    #[tokio::test]
    async fn an_unreachable_account_at_startup_is_unavailable_until_it_comes_back() {
        let emulator = Emulator::new();
        let down = rule(
            "account-down",
            result(FaultInjectionErrorType::ConnectionError),
            FaultOperationType::MetadataReadDatabaseAccount,
            None,
        );
        let store = emulator
            .store_with_faults(&Emulator::key_settings(), vec![Arc::clone(&down)])
            .await;

        let outcome = deliver(&store, &changed("user_1", 1), "msg_1").await;
        assert!(is_unavailable(&outcome), "got {outcome:?}");

        down.disable();
        // Svix redelivers until it gets a 2xx; a connection attempt still backing off from the
        // outage may take a redelivery or two to finish.
        let mut redelivered = deliver(&store, &changed("user_1", 1), "msg_1").await;
        for _ in 0..10 {
            if !is_unavailable(&redelivered) {
                break;
            }
            redelivered = deliver(&store, &changed("user_1", 1), "msg_1").await;
        }
        assert_eq!(redelivered.unwrap().outcome, Outcome::Applied);
    }

    #[tokio::test]
    async fn a_missing_container_is_rejected_as_a_deployment_bug() {
        let emulator = Emulator::new();
        let mut settings = Emulator::key_settings();
        settings.container = "no-such-container".into();
        let store = emulator.store_with(&settings).await;

        let outcome = deliver(&store, &changed("user_1", 1), "msg_1").await;

        assert!(
            matches!(outcome, Err(StoreError::Rejected(_))),
            "got {outcome:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Whole deliveries, through the router, while Cosmos misbehaves.

mod deliveries {
    use std::sync::Arc;
    use std::time::Duration;

    use azure_data_cosmos_driver::fault_injection::{
        FaultInjectionConditionBuilder, FaultInjectionErrorType, FaultInjectionResultBuilder,
        FaultInjectionRule, FaultInjectionRuleBuilder, FaultOperationType,
    };
    use serde_json::Value;

    use crate::cosmos_emulator::{Emulator, Observer};
    use crate::helpers::{TestApp, msg_id, spawn_app_on, user_changed, user_deleted};

    /// `error` on some of the requests (any operation), `hits` times in all.
    fn sometimes(error: FaultInjectionErrorType, hits: u32) -> Arc<FaultInjectionRule> {
        let result = FaultInjectionResultBuilder::new()
            .with_error(error)
            .with_probability(0.4)
            .build();
        Arc::new(
            FaultInjectionRuleBuilder::new(format!("{error:?}"), result)
                .with_hit_limit(hits)
                .build(),
        )
    }

    fn always(
        result: FaultInjectionResultBuilder,
        operation: FaultOperationType,
    ) -> Arc<FaultInjectionRule> {
        let condition = FaultInjectionConditionBuilder::new()
            .with_operation_type(operation)
            .build();
        Arc::new(
            FaultInjectionRuleBuilder::new(format!("always-{operation:?}"), result.build())
                .with_condition(condition)
                .build(),
        )
    }

    async fn app_with_faults(emulator: &Emulator, rules: Vec<Arc<FaultInjectionRule>>) -> TestApp {
        let store = emulator
            .store_with_faults(&Emulator::key_settings(), rules)
            .await;
        spawn_app_on(Arc::new(store), &[]).await
    }

    /// Delivers message `msg_id` as Svix does: again and again until it gets a 2xx. Every
    /// answer must be a 2xx or a 503, and a 2xx must find the event committed: the stored item
    /// is this event's version (or tombstone), written by this message.
    async fn deliver_until_accepted(
        app: &TestApp,
        observer: &Observer,
        msg_id: &str,
        event: &Value,
    ) -> (Value, Value) {
        let id = event["data"]["id"].as_str().unwrap();
        for _ in 0..40 {
            let (status, body) = app.deliver_as(msg_id, event).await;
            match status {
                200 => {
                    let item = observer.item(id).await.expect("a 2xx means a stored item");
                    assert_eq!(item["lastEventId"], msg_id, "{body} {item}");
                    match event["type"].as_str() {
                        Some("user.deleted") => assert_eq!(item["type"], "tombstone"),
                        _ => assert_eq!(item["clerkUpdatedAt"], event["data"]["updated_at"]),
                    }
                    return (body, item);
                }
                503 => continue,
                other => panic!("{other} for {msg_id}: {body}"),
            }
        }
        panic!("{msg_id} was never accepted");
    }

    /// Every kind of fault the SDK can be made to see, on some of the requests (the first rule
    /// with hits left applies, so each kind gets its turn); five users' histories delivered
    /// concurrently, each event until it is accepted, then once more (Svix delivers at least
    /// once). Each accepted event is in the store when it is accepted, each replay changes
    /// nothing, and the end state is the newest event of each user.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn under_random_faults_every_event_is_applied_exactly_once() {
        use FaultInjectionErrorType::*;

        let emulator = Emulator::new();
        let rules = vec![
            sometimes(TooManyRequests, 6),
            sometimes(ServiceUnavailable, 4),
            sometimes(Timeout, 4),
            sometimes(ConnectionError, 4),
            sometimes(ResponseTimeout, 3),
            sometimes(ResponseTimeoutAfterService, 4),
        ];
        let app = Arc::new(app_with_faults(&emulator, rules.clone()).await);
        let observer = Arc::new(emulator.observer().await);

        let users: Vec<_> = (0..5)
            .map(|user| {
                let app = Arc::clone(&app);
                let observer = Arc::clone(&observer);
                tokio::spawn(async move {
                    let id = format!("user_chaos{user}");
                    let mut history = vec![user_changed("user.created", &id, 1)];
                    history.extend((2..=4).map(|v| user_changed("user.updated", &id, v)));
                    if user % 2 == 0 {
                        history.push(user_deleted(&id));
                    }
                    for event in &history {
                        let msg_id = msg_id();
                        let (accepted, item) =
                            deliver_until_accepted(&app, &observer, &msg_id, event).await;
                        // "skipped" when an earlier attempt committed but its answer was lost.
                        assert!(accepted["status"] == "applied" || accepted["status"] == "skipped");
                        let (replay, replayed) =
                            deliver_until_accepted(&app, &observer, &msg_id, event).await;
                        assert_eq!(replay["status"], "skipped", "a replay changes nothing");
                        assert_eq!(item["_etag"], replayed["_etag"], "a replay writes nothing");
                    }
                    (id, history)
                })
            })
            .collect();

        let mut finished = Vec::new();
        for user in users {
            finished.push(user.await.unwrap());
        }
        for rule in &rules {
            assert_eq!(
                Some(rule.hit_count()),
                rule.hit_limit(),
                "{} had its turn",
                rule.id()
            );
        }
        for (id, history) in finished {
            let item = observer.item(&id).await.unwrap();
            match history.last().unwrap()["type"].as_str() {
                Some("user.deleted") => {
                    assert_eq!(item["type"], "tombstone");
                    assert!(item.get("email").is_none());
                }
                _ => {
                    assert_eq!(item["clerkUpdatedAt"], 4);
                    assert_eq!(item["role"], "USER");
                }
            }
        }
    }

    #[tokio::test]
    async fn throttling_answers_503_and_the_redelivery_applies() {
        let emulator = Emulator::new();
        let throttled = always(
            FaultInjectionResultBuilder::new().with_error(FaultInjectionErrorType::TooManyRequests),
            FaultOperationType::CreateItem,
        );
        let app = app_with_faults(&emulator, vec![Arc::clone(&throttled)]).await;
        let event = user_changed("user.created", "user_throttled", 1);

        let (status, body) = app.deliver_as("msg_throttled", &event).await;
        assert_eq!(status, 503, "{body}");
        let observer = emulator.observer().await;
        assert!(
            observer.item("user_throttled").await.is_none(),
            "nothing half-written"
        );

        throttled.disable();
        let (status, body) = app.deliver_as("msg_throttled", &event).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["status"], "applied");
        let item = observer.item("user_throttled").await.unwrap();
        assert_eq!(item["lastEventId"], "msg_throttled");
    }

    /// Every request to Cosmos hangs: the delivery still answers (503) inside Svix's window.
    #[tokio::test]
    async fn a_hanging_cosmos_answers_503() {
        let emulator = Emulator::new();
        let hang = FaultInjectionResultBuilder::new().with_delay(Duration::from_secs(120));
        let app =
            app_with_faults(&emulator, vec![always(hang, FaultOperationType::ReadItem)]).await;

        let (status, body) = app
            .deliver(&user_changed("user.created", "user_slow", 1))
            .await;

        assert_eq!(status, 503, "{body}");
    }

    /// The client cannot connect (the account read hangs): `GET /` answers at once anyway, and
    /// a delivery gets 503 rather than waiting for it.
    #[tokio::test]
    async fn readiness_does_not_wait_for_cosmos() {
        let emulator = Emulator::new();
        let hang = FaultInjectionResultBuilder::new().with_delay(Duration::from_secs(120));
        let app = app_with_faults(
            &emulator,
            vec![always(
                hang,
                FaultOperationType::MetadataReadDatabaseAccount,
            )],
        )
        .await;

        let ready = reqwest::get(format!("{}/", app.base_url)).await.unwrap();
        assert_eq!(ready.status(), 200);

        let (status, body) = app
            .deliver(&user_changed("user.created", "user_early", 1))
            .await;
        assert_eq!(status, 503, "{body}");
    }
}
