//! The Clerk Backend API client against the double: sweeps that skip nobody while data changes
//! between pages, waits and retries as each `Patience` allows, pacing, and what is sent.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use handler::clerk::api::{CLERK_API_VERSION, ClerkApi, ClerkApiError, Patience, Sweep, Timings};
use handler::sync::item::ItemId;
use serde_json::{Value, json};

use crate::clerk_api_double::{ClerkApiDouble, Failure, api_settings};
use crate::fixtures::{clerk_membership, clerk_organization, clerk_user};

fn id(raw: &str) -> ItemId {
    ItemId::parse(raw).unwrap()
}

const KEY: &str = "sk_test_Y2xlcmsgYXBpIGRvdWJsZSBrZXk";
const T0: i64 = 1_700_000_000_000;
/// Fast enough that pacing never shows outside the pacing test.
const RATE: f64 = 1000.0;
/// Retries and timeouts in milliseconds rather than seconds.
const FAST: Timings = Timings {
    first_backoff: Duration::from_millis(20),
    batch_timeout: Duration::from_millis(500),
    interactive_timeout: Duration::from_millis(300),
};

fn client(double: &ClerkApiDouble) -> ClerkApi {
    ClerkApi::new(&double.settings(KEY, RATE))
        .unwrap()
        .with_timings(FAST)
}

fn created(mut item: Value, created_at: i64) -> Value {
    item["created_at"] = json!(created_at);
    item
}

fn user(id: &str, created_at: i64) -> Value {
    created(clerk_user(id, created_at + 1), created_at)
}

fn organization(id: &str, created_at: i64) -> Value {
    created(clerk_organization(id, created_at + 1), created_at)
}

fn membership(id: &str, created_at: i64) -> Value {
    created(
        clerk_membership(id, "org_1", &format!("user_{id}"), created_at + 1),
        created_at,
    )
}

/// Every page's ids, checking each id comes once.
async fn sweep_ids(mut sweep: Sweep) -> Vec<String> {
    let mut ids = Vec::new();
    while let Some(page) = sweep.next_page().await.unwrap() {
        ids.extend(
            page.iter()
                .map(|item| item["id"].as_str().unwrap().to_owned()),
        );
    }
    let distinct: HashSet<&String> = ids.iter().collect();
    assert_eq!(distinct.len(), ids.len(), "an item came twice");
    assert!(sweep.next_page().await.unwrap().is_none(), "stays complete");
    ids
}

fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

#[tokio::test]
async fn users_sweep_returns_everyone_once_when_600_share_a_millisecond() {
    let double = ClerkApiDouble::start(KEY).await;
    // 300 before, 600 in one millisecond (a bulk import) straddling two page boundaries, 334 after.
    let created_at = |i: i64| match i {
        0..300 => T0 + i,
        300..900 => T0 + 1_000,
        _ => T0 + 1_000 + i,
    };
    let all: Vec<String> = (0..1234).map(|i| format!("user_{i:05}")).collect();
    double.put_all(all.iter().zip(0..).map(|(id, i)| user(id, created_at(i))));
    let api = client(&double);

    assert_eq!(sorted(sweep_ids(api.users()).await), all);
    let requests = double.requests();
    assert_eq!(requests.len(), 3, "each page re-reads at most one user");
    for request in &requests {
        assert_eq!(request.path, "/v1/users");
        assert_eq!(request.query_value("limit"), Some("500"));
        assert_eq!(request.query_value("order_by"), Some("+created_at"));
    }
    assert_eq!(api.requests_made(), requests.len() as u64);
}

#[tokio::test]
async fn users_sweep_skips_nobody_when_users_come_and_go_between_pages() {
    let double = ClerkApiDouble::start(KEY).await;
    // Users 480..540 share a millisecond, across the first page boundary.
    let created_at = |i: i64| {
        if (480..540).contains(&i) {
            T0 + 480
        } else {
            T0 + i
        }
    };
    let all: Vec<String> = (0..1200).map(|i| format!("user_{i:05}")).collect();
    double.put_all(all.iter().zip(0..).map(|(id, i)| user(id, created_at(i))));
    // One deletion in the tie at the boundary is covered; see `Sweep`.
    let gone = [
        "user_00010", // read on page 1
        "user_00470", // read on page 1
        "user_00485", // read on page 1, in the tie at its boundary
        "user_00700", // not read yet
    ];
    double.on_request(2, move |data| {
        for id in gone {
            assert!(data.remove(id));
        }
        data.put(user("user_new_a", T0 + 480)); // joins the tie
        data.put(user("user_new_b", T0 + 5_000));
    });
    double.on_request(3, |data| {
        assert!(data.remove("user_00999")); // the last read on page 2
        assert!(data.remove("user_01100")); // not read yet
        data.put(user("user_new_c", T0 + 6_000));
    });

    let ids = sweep_ids(client(&double).users()).await;

    let returned: HashSet<&str> = ids.iter().map(String::as_str).collect();
    let survivors = all
        .iter()
        .map(String::as_str)
        .filter(|id| !["user_00700", "user_01100"].contains(id));
    for id in survivors {
        assert!(returned.contains(id), "{id} skipped");
    }
    for id in ["user_new_a", "user_new_b", "user_new_c"] {
        assert!(returned.contains(id), "{id}, created mid-sweep, skipped");
    }
    assert!(!returned.contains("user_00700") && !returned.contains("user_01100"));
    assert!(
        double.request_count() >= 3,
        "the changes happened mid-sweep"
    );
}

#[tokio::test]
async fn organization_sweep_skips_nobody_after_deletions_behind_the_offset() {
    let double = ClerkApiDouble::start(KEY).await;
    let orgs: Vec<String> = (0..1100).map(|i| format!("org_{i:05}")).collect();
    double.put_all(orgs.iter().zip(0..).map(|(id, i)| organization(id, T0 + i)));
    // 50 deletions behind the offset before page 2, 50 more before page 3, and a newcomer.
    let deleted = |from: i64| {
        move |data: &mut crate::clerk_api_double::ClerkData| {
            for i in (from..from + 100).step_by(2) {
                assert!(data.remove(&format!("org_{i:05}")));
            }
        }
    };
    double.on_request(2, deleted(100));
    double.on_request(3, deleted(600));
    double.on_request(3, |data| data.put(organization("org_new", T0 + 9_000)));

    let org_ids = sweep_ids(client(&double).organizations()).await;

    let returned: HashSet<&String> = org_ids.iter().collect();
    for id in &orgs {
        let present = double.with_data(|data| data.contains(id));
        assert!(!present || returned.contains(id), "{id} skipped");
    }
    assert!(org_ids.contains(&"org_new".to_owned()));
    let requests = double.requests();
    assert!(requests.iter().all(|r| r.path == "/v1/organizations"));
    let offsets: Vec<&str> = requests
        .iter()
        .map(|r| r.query_value("offset").unwrap())
        .collect();
    assert_eq!(offsets, ["0", "450", "900"]);
}

fn member_of(organization: &str, id: &str, created_at: i64) -> Value {
    created(
        clerk_membership(id, organization, &format!("user_{id}"), created_at + 1),
        created_at,
    )
}

#[tokio::test]
async fn membership_sweep_reads_each_organization_by_created_at_and_skips_nobody() {
    let double = ClerkApiDouble::start(KEY).await;
    double.put_all([
        organization("org_a", T0),
        organization("org_b", T0 + 1),
        organization("org_c", T0 + 2),
    ]);
    // org_a: 1,200 memberships, 600 of them in one millisecond (a bulk import) straddling two
    // page boundaries; org_b and org_c: a few each.
    let created_at = |i: i64| match i {
        0..300 => T0 + i,
        300..900 => T0 + 1_000,
        _ => T0 + 1_000 + i,
    };
    let big: Vec<String> = (0..1200).map(|i| format!("orgmem_a_{i:04}")).collect();
    double.put_all(
        big.iter()
            .zip(0..)
            .map(|(id, i)| member_of("org_a", id, created_at(i))),
    );
    double.put_all((0..3).map(|i| member_of("org_b", &format!("orgmem_b_{i}"), T0 + i)));
    double.put_all((0..3).map(|i| member_of("org_c", &format!("orgmem_c_{i}"), T0 + i)));
    // Clerk misbehaving on the way: a 503 on org_a's first page, a 429 on its second.
    for failure in [
        Failure::Delay(Duration::ZERO),
        Failure::Status(503),
        Failure::Delay(Duration::ZERO),
        Failure::RateLimited {
            retry_after_secs: 0,
        },
    ] {
        double.fail_next(failure);
    }
    // Before org_a's second page: deletions read and unread (one in the tie at the boundary),
    // newcomers in the tie and after it, org_b deleted with its memberships, and a newcomer in
    // org_c, not read yet.
    double.on_request(4, |data| {
        for id in ["orgmem_a_0100", "orgmem_a_0450", "orgmem_a_0700"] {
            assert!(data.remove(id));
        }
        data.put(member_of("org_a", "orgmem_a_new1", T0 + 1_000));
        data.put(member_of("org_a", "orgmem_a_new2", T0 + 5_000));
        assert!(data.remove("org_b"));
        data.put(member_of("org_c", "orgmem_c_new", T0 + 10));
    });

    let ids = sweep_ids(client(&double).memberships()).await;

    let returned: HashSet<&str> = ids.iter().map(String::as_str).collect();
    let survivors = big
        .iter()
        .map(String::as_str)
        .filter(|id| *id != "orgmem_a_0700")
        .chain(["orgmem_c_0", "orgmem_c_1", "orgmem_c_2"]);
    for id in survivors {
        assert!(returned.contains(id), "{id} skipped");
    }
    for id in ["orgmem_a_new1", "orgmem_a_new2", "orgmem_c_new"] {
        assert!(returned.contains(id), "{id}, created mid-sweep, skipped");
    }
    assert!(!returned.contains("orgmem_a_0700"));
    assert!(!ids.iter().any(|id| id.starts_with("orgmem_b_")));
    // The instance-wide list, paged by offset only, is never asked; each organization's pages
    // go by created_at, with an offset no larger than one tie.
    let requests = double.requests();
    let paths: Vec<&str> = requests.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/v1/organizations",
            "/v1/organizations/org_a/memberships",
            "/v1/organizations/org_a/memberships",
            "/v1/organizations/org_a/memberships",
            "/v1/organizations/org_a/memberships",
            "/v1/organizations/org_a/memberships",
            "/v1/organizations/org_b/memberships",
            "/v1/organizations/org_c/memberships",
        ]
    );
    for request in &requests[1..] {
        assert_eq!(request.query_value("order_by"), Some("+created_at"));
        assert_eq!(request.query_value("limit"), Some("500"));
        let offset: usize = request
            .query_value("offset")
            .unwrap_or("0")
            .parse()
            .unwrap();
        assert!(offset < 600, "{offset}");
    }
}

#[tokio::test]
async fn batch_waits_out_a_429() {
    let double = ClerkApiDouble::start(KEY).await;
    double.put(user("user_1", T0));
    double.fail_next(Failure::RateLimited {
        retry_after_secs: 1,
    });
    let api = client(&double);
    let started = Instant::now();
    assert!(
        api.get_user(&id("user_1"), Patience::Batch)
            .await
            .unwrap()
            .is_some()
    );
    assert!(started.elapsed() >= Duration::from_millis(950));
    assert_eq!(double.request_count(), 2);
}

#[tokio::test]
async fn interactive_reports_a_429_and_the_whole_client_backs_off() {
    let double = ClerkApiDouble::start(KEY).await;
    double.put(user("user_1", T0));
    double.fail_next(Failure::RateLimited {
        retry_after_secs: 1,
    });
    let api = client(&double);
    let started = Instant::now();
    let error = api
        .get_user(&id("user_1"), Patience::Interactive)
        .await
        .unwrap_err();
    assert!(
        matches!(error, ClerkApiError::Unavailable { retry_after: Some(wait), .. } if wait == Duration::from_secs(1)),
        "{error:?}"
    );
    // Clerk blocks the whole key: other interactive calls on the client do not even ask...
    let error = api
        .get_user(&id("user_1"), Patience::Interactive)
        .await
        .unwrap_err();
    assert!(
        matches!(error, ClerkApiError::Unavailable { retry_after: Some(wait), .. } if wait <= Duration::from_secs(1)),
        "{error:?}"
    );
    assert_eq!(double.request_count(), 1);
    // ...and a batch call waits until the block is over.
    assert!(
        api.get_user(&id("user_1"), Patience::Batch)
            .await
            .unwrap()
            .is_some()
    );
    assert!(started.elapsed() >= Duration::from_millis(950));
    assert_eq!(double.request_count(), 2);
}

#[tokio::test]
async fn server_errors_are_retried_then_reported_after_bounded_attempts() {
    let double = ClerkApiDouble::start(KEY).await;
    double.put(user("user_1", T0));
    let api = client(&double);

    double.fail_next(Failure::Status(500));
    double.fail_next(Failure::Status(503));
    assert!(
        api.get_user(&id("user_1"), Patience::Batch)
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(double.request_count(), 3);

    for _ in 0..10 {
        double.fail_next(Failure::Status(502));
    }
    let error = api
        .get_user(&id("user_1"), Patience::Batch)
        .await
        .unwrap_err();
    assert!(
        matches!(error, ClerkApiError::Unavailable { .. }),
        "{error:?}"
    );
    assert_eq!(double.request_count(), 3 + 6, "six attempts in a batch");
    let error = api
        .get_user(&id("user_1"), Patience::Interactive)
        .await
        .unwrap_err();
    assert!(
        matches!(error, ClerkApiError::Unavailable { .. }),
        "{error:?}"
    );
    assert_eq!(
        double.request_count(),
        9 + 2,
        "one retry when someone waits"
    );
    assert_eq!(api.requests_made(), 11);
}

#[tokio::test]
async fn a_slow_answer_times_out_and_is_retried() {
    let double = ClerkApiDouble::start(KEY).await;
    double.put(user("user_1", T0));
    let api = client(&double);
    double.fail_next(Failure::Delay(Duration::from_secs(3)));
    let started = Instant::now();
    assert!(
        api.get_user(&id("user_1"), Patience::Batch)
            .await
            .unwrap()
            .is_some()
    );
    assert!(started.elapsed() >= FAST.batch_timeout);
    assert_eq!(double.request_count(), 2);
}

#[tokio::test]
async fn a_wrong_key_is_rejected_at_once_and_never_shown() {
    let double = ClerkApiDouble::start(KEY).await;
    double.put(user("user_1", T0));
    let wrong = "sk_test_d3Jvbmcga2V5";
    let api = ClerkApi::new(&double.settings(wrong, RATE))
        .unwrap()
        .with_timings(FAST);
    let error = api
        .get_user(&id("user_1"), Patience::Batch)
        .await
        .unwrap_err();
    assert!(matches!(error, ClerkApiError::Rejected(_)), "{error:?}");
    assert!(error.to_string().contains("401"), "{error}");
    assert_eq!(double.request_count(), 1, "no retry");
    for shown in [error.to_string(), format!("{error:?}"), format!("{api:?}")] {
        assert!(!shown.contains("d3Jvbmcga2V5"), "{shown}");
    }
}

#[tokio::test]
async fn never_faster_than_the_rate_across_concurrent_calls() {
    let double = ClerkApiDouble::start(KEY).await;
    double.put(user("user_1", T0));
    let api = ClerkApi::new(&double.settings(KEY, 20.0))
        .unwrap()
        .with_timings(FAST);
    let started = Instant::now();
    let user_1 = id("user_1");
    let calls = (0..30).map(|_| api.get_user(&user_1, Patience::Batch));
    for found in futures::future::join_all(calls).await {
        assert!(found.unwrap().is_some());
    }
    // 30 requests at 20/s: the last one 29 intervals of 50 ms after the first.
    assert!(
        started.elapsed() >= Duration::from_millis(1_400),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(double.request_count(), 30);
}

#[tokio::test]
async fn existing_users_asks_by_hundreds_and_returns_exactly_the_present() {
    let double = ClerkApiDouble::start(KEY).await;
    let asked: Vec<ItemId> = (0..250).map(|i| id(&format!("user_{i:03}"))).collect();
    let present: HashSet<ItemId> = asked
        .iter()
        .filter(|id| !id.as_str().ends_with('7'))
        .cloned()
        .collect();
    double.put_all(present.iter().map(|id| user(id.as_str(), T0)));
    double.put(user("user_not_asked", T0));
    let api = client(&double);

    assert_eq!(api.existing_users(&asked).await.unwrap(), present);
    let requests = double.requests();
    assert_eq!(requests.len(), 3);
    let asked_per_request: Vec<usize> = requests
        .iter()
        .map(|r| r.query_values("user_id").len())
        .collect();
    assert_eq!(asked_per_request, [100, 100, 50]);
    for request in &requests {
        let limit: usize = request.query_value("limit").unwrap().parse().unwrap();
        assert!(limit >= request.query_values("user_id").len());
    }
    // An id no Clerk user can have is absent without a request.
    let odd = vec![id("-user_000"), id("..")];
    assert!(api.existing_users(&odd).await.unwrap().is_empty());
    assert_eq!(double.request_count(), 3);
}

#[tokio::test]
async fn existing_organizations_returns_exactly_the_present() {
    let double = ClerkApiDouble::start(KEY).await;
    double.put_all([organization("org_a", T0), organization("org_b", T0)]);
    let api = client(&double);
    let asked = ["org_a", "org_gone", "org_b"].map(id);
    assert_eq!(
        api.existing_organizations(&asked).await.unwrap(),
        HashSet::from([id("org_a"), id("org_b")])
    );
    let request = &double.requests()[0];
    assert_eq!(request.path, "/v1/organizations");
    assert_eq!(
        request.query_values("organization_id"),
        ["org_a", "org_gone", "org_b"]
    );
}

#[tokio::test]
async fn gets_answer_none_for_what_clerk_does_not_have() {
    let double = ClerkApiDouble::start(KEY).await;
    double.put_all([
        user("user_1", T0),
        organization("org_1", T0),
        membership("1", T0),
        clerk_membership("orgmem_other", "org_1", "user_other", T0),
    ]);
    let api = client(&double);
    let interactive = Patience::Interactive;

    let found = api
        .get_user(&id("user_1"), interactive)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found["object"], "user");
    assert!(double.remove("user_1"));
    assert!(
        api.get_user(&id("user_1"), interactive)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        api.get_user(&id(".."), interactive)
            .await
            .unwrap()
            .is_none()
    );
    let org = api
        .get_organization(&id("org_1"), interactive)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(org["slug"], "engines-org_1");
    assert!(
        api.get_organization(&id("org_gone"), interactive)
            .await
            .unwrap()
            .is_none()
    );

    let found = api
        .get_membership(&id("org_1"), &id("user_1"), &id("1"), interactive)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found["public_user_data"]["user_id"], "user_1");
    let request = double.requests().pop().unwrap();
    assert_eq!(request.path, "/v1/organizations/org_1/memberships");
    assert_eq!(request.query_values("user_id"), ["user_1"]);
    assert!(
        api.get_membership(
            &id("org_1"),
            &id("user_1"),
            &id("orgmem_other"),
            interactive
        )
        .await
        .unwrap()
        .is_none(),
        "another user's membership"
    );
    assert!(
        api.get_membership(&id("org_gone"), &id("user_1"), &id("1"), interactive)
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn every_request_carries_the_key_and_the_pinned_version() {
    let double = ClerkApiDouble::start(KEY).await;
    double.put(user("user_1", T0));
    double.put(organization("org_1", T0));
    let api = client(&double);
    api.get_user(&id("user_1"), Patience::Batch).await.unwrap();
    sweep_ids(api.users()).await;
    sweep_ids(api.organizations()).await;
    sweep_ids(api.memberships()).await;
    api.existing_users(&[id("user_1")]).await.unwrap();

    assert_eq!(double.request_count(), 6);
    for request in double.requests() {
        assert_eq!(request.method, "GET");
        assert_eq!(request.authorization, Some(format!("Bearer {KEY}")));
        assert_eq!(request.api_version.as_deref(), Some(CLERK_API_VERSION));
    }
}

/// A server that is not Clerk: the same full page whatever is asked, and bare 404s.
async fn not_clerk() -> String {
    let page: Vec<Value> = (0..500)
        .map(|i| user(&format!("user_{i:03}"), T0))
        .collect();
    let router = Router::new()
        .route(
            "/v1/users",
            get(move || {
                let page = page.clone();
                async move { axum::Json(page) }
            }),
        )
        .fallback(|| async { StatusCode::NOT_FOUND });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    url
}

#[tokio::test]
async fn a_server_that_is_not_clerk_is_refused_rather_than_believed() {
    let url = not_clerk().await;
    let api = ClerkApi::new(&api_settings(&url, KEY, RATE))
        .unwrap()
        .with_timings(FAST);
    let mut sweep = api.users();
    assert_eq!(sweep.next_page().await.unwrap().unwrap().len(), 500);
    let error = sweep.next_page().await.unwrap_err();
    assert!(matches!(error, ClerkApiError::Rejected(_)), "{error:?}");
    // Nor may an answer that ignored the id filter make the ids it left out look deleted.
    let asked = [id("user_000"), id("user_gone")];
    let error = api.existing_users(&asked).await.unwrap_err();
    assert!(matches!(error, ClerkApiError::Rejected(_)), "{error:?}");
    // A 404 that is not Clerk's must not read as "this user is gone".
    let error = api
        .get_user(&id("user_1"), Patience::Batch)
        .await
        .unwrap_err();
    assert!(matches!(error, ClerkApiError::Rejected(_)), "{error:?}");
}
