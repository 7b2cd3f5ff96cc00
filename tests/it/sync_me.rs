//! `POST /api/me/sync` through the built binary, as the Functions host forwards it: session tokens
//! honest, expired, foreign, forged and pending, and tokens that are not sessions; users stored,
//! new, deleted and unknown to Clerk; Clerk and the key set unavailable; many calls at once; and
//! the endpoint left unconfigured or misconfigured.
//!
//! Assertions are on what a caller and the store see (statuses, headers, bodies, documents) and on
//! the requests the Clerk and JWKS doubles received, never on log text.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use handler::store::Condition;
use handler::sync::item::ItemId;
use serde_json::{Value, json};

use crate::clerk_api_double::{ClerkApiDouble, Failure};
use crate::helpers::{TestApp, clerk_user, spawn_app, user_changed, user_deleted};
use crate::jwks_double::{
    Behaviour, ISSUER, JwksDouble, PARTY, TestKey, TokenBuilder, USER_ID, bearer, tamper,
};

const KEY: &str = "sk_test_sync_me";

/// The fields of the SPEC's user document table: all `SyncMe` returns of a stored user.
const USER_FIELDS: [&str; 17] = [
    "id",
    "type",
    "email",
    "emailAddresses",
    "phoneNumber",
    "firstName",
    "lastName",
    "username",
    "imageUrl",
    "externalId",
    "publicMetadata",
    "role",
    "createdAt",
    "updatedAt",
    "clerkUpdatedAt",
    "lastSignInAt",
    "lastEventId",
];

/// Where the endpoint checks session tokens.
#[derive(Debug, Clone, Copy)]
enum KeySource {
    /// `CLERK_JWT_KEY`: the PEM public key.
    Pem,
    /// `CLERK_JWKS_URL`: the JWKS double.
    Jwks,
}

/// The binary configured for `SyncMe`, with its Clerk double (and JWKS double, by that source).
struct SyncMeApp {
    app: TestApp,
    clerk: ClerkApiDouble,
    jwks: Option<JwksDouble>,
    key: TestKey,
}

impl SyncMeApp {
    /// Session tokens signed by a fresh key, checked by `source`, with `CLERK_ISSUER` set.
    async fn start(source: KeySource) -> Self {
        Self::start_with(source, &[]).await
    }

    /// As `start`, with `extra` settings too.
    async fn start_with(source: KeySource, extra: &[(&'static str, &str)]) -> Self {
        let key = TestKey::generate("ins_sync_me");
        let clerk = ClerkApiDouble::start(KEY).await;
        let jwks = match source {
            KeySource::Pem => None,
            KeySource::Jwks => Some(JwksDouble::start(&[&key]).await),
        };
        let key_setting = match &jwks {
            None => ("CLERK_JWT_KEY", key.public_pem().to_owned()),
            Some(jwks) => ("CLERK_JWKS_URL", jwks.url()),
        };
        let mut env = clerk_env(&clerk);
        env.extend([
            key_setting,
            (
                "CLERK_AUTHORIZED_PARTIES",
                format!("{PARTY},http://localhost:3000"),
            ),
            ("CLERK_ISSUER", ISSUER.to_owned()),
        ]);
        env.extend(
            extra
                .iter()
                .map(|(name, value)| (*name, (*value).to_owned())),
        );
        let app = start(&env).await;
        Self {
            app,
            clerk,
            jwks,
            key,
        }
    }

    /// An honest token for `USER_ID`.
    fn token(&self) -> String {
        TokenBuilder::new().sign(&self.key)
    }

    async fn sync(&self, token: &str) -> Answer {
        sync(&self.app, Some(&bearer(token))).await
    }

    /// Requests Clerk received for the user.
    fn user_fetches(&self, id: &str) -> usize {
        let path = format!("/v1/users/{id}");
        self.clerk
            .requests()
            .iter()
            .filter(|request| request.method == "GET" && request.path == path)
            .count()
    }

    fn jwks_fetches(&self) -> usize {
        self.jwks.as_ref().map_or(0, JwksDouble::fetches)
    }
}

fn clerk_env(clerk: &ClerkApiDouble) -> Vec<(&'static str, String)> {
    vec![
        ("CLERK_SECRET_KEY", KEY.to_owned()),
        ("CLERK_API_URL", clerk.url()),
        ("CLERK_API_RATE", "1000".to_owned()),
    ]
}

async fn start(env: &[(&'static str, String)]) -> TestApp {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    spawn_app(&env).await
}

/// A recent Clerk `updated_at`, so that no resurrection guard asks Clerk about a webhook.
fn recent() -> i64 {
    crate::helpers::now() * 1000
}

/// One answer from the endpoint.
#[derive(Debug)]
struct Answer {
    status: u16,
    www_authenticate: Option<String>,
    retry_after: Option<String>,
    /// The body as sent, to check that it never echoes the token.
    raw: String,
    body: Value,
}

async fn sync(app: &TestApp, authorization: Option<&str>) -> Answer {
    post(&reqwest::Client::new(), app, authorization).await
}

async fn post(client: &reqwest::Client, app: &TestApp, authorization: Option<&str>) -> Answer {
    let mut request = client.post(format!("{}/api/me/sync", app.base_url));
    if let Some(authorization) = authorization {
        request = request.header("authorization", authorization);
    }
    let response = request.send().await.unwrap();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|value| value.to_str().unwrap().to_owned())
    };
    let (www_authenticate, retry_after) = (header("www-authenticate"), header("retry-after"));
    let status = response.status().as_u16();
    let raw = response.text().await.unwrap();
    let body = serde_json::from_str(&raw).unwrap_or(Value::Null);
    Answer {
        status,
        www_authenticate,
        retry_after,
        raw,
        body,
    }
}

#[track_caller]
fn assert_user_view(user: &Value) {
    let fields: BTreeSet<&str> = user
        .as_object()
        .unwrap_or_else(|| panic!("a user object: {user}"))
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(fields, BTreeSet::from(USER_FIELDS), "{user}");
}

/// `{"error": "..."}` and nothing else.
#[track_caller]
fn assert_error_body(answer: &Answer) -> String {
    let error = answer.body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("an error body: {answer:?}"));
    assert_eq!(answer.body.as_object().unwrap().len(), 1, "{answer:?}");
    error.to_owned()
}

#[track_caller]
fn assert_unavailable(answer: &Answer) {
    assert_eq!(answer.status, 503, "{answer:?}");
    let seconds: u64 = answer
        .retry_after
        .as_deref()
        .unwrap_or_else(|| panic!("503 without Retry-After: {answer:?}"))
        .parse()
        .unwrap();
    assert!(seconds >= 1, "{answer:?}");
    assert_error_body(answer);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_user_is_present_without_asking_clerk() {
    for source in [KeySource::Pem, KeySource::Jwks] {
        let sync_me = SyncMeApp::start(source).await;
        let (status, _) = sync_me
            .app
            .deliver(&user_changed("user.created", USER_ID, recent()))
            .await;
        assert_eq!(status, 200);

        let answer = sync_me.sync(&sync_me.token()).await;
        assert_eq!(answer.status, 200, "{source:?}: {answer:?}");
        assert_eq!(answer.body["status"], "present", "{source:?}");
        let user = &answer.body["user"];
        assert_user_view(user);
        assert_eq!(Some(user), sync_me.app.users_get(USER_ID).await.as_ref());
        assert_eq!(answer.body.as_object().unwrap().len(), 2, "{answer:?}");
        assert_eq!(sync_me.clerk.request_count(), 0, "{source:?}");
        if let KeySource::Jwks = source {
            assert_eq!(sync_me.jwks_fetches(), 1);
        }

        // GET is not how the endpoint is called.
        let get = reqwest::Client::new()
            .get(format!("{}/api/me/sync", sync_me.app.base_url))
            .header("authorization", bearer(&sync_me.token()))
            .send()
            .await
            .unwrap();
        assert_eq!(get.status(), 405);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fields_the_application_added_stay_in_the_store_and_role_is_returned() {
    let sync_me = SyncMeApp::start(KeySource::Pem).await;
    sync_me
        .app
        .deliver(&user_changed("user.created", USER_ID, recent()))
        .await;
    // The application writes its own fields, on the same store the server uses.
    let store = sync_me.app.store.as_ref();
    let id = ItemId::parse(USER_ID).unwrap();
    let (stored, _) = store.read(&id).await.unwrap();
    let stored = stored.unwrap();
    let mut document = stored.document.clone();
    document.insert("role".into(), "ADMIN".into());
    document.insert("favorites".into(), json!(["engines"]));
    store
        .write(&id, &document, &Condition::Matches(stored.etag))
        .await
        .unwrap();

    let answer = sync_me.sync(&sync_me.token()).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let user = &answer.body["user"];
    assert_user_view(user);
    assert_eq!(user["role"], "ADMIN");
    assert_eq!(
        sync_me.app.users_get(USER_ID).await.unwrap()["favorites"],
        json!(["engines"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_not_yet_stored_is_fetched_from_clerk_once_and_applied() {
    for source in [KeySource::Pem, KeySource::Jwks] {
        let sync_me = SyncMeApp::start(source).await;
        sync_me.clerk.put(clerk_user(USER_ID, recent()));
        assert_eq!(sync_me.app.users_get(USER_ID).await, None);

        let answer = sync_me.sync(&sync_me.token()).await;
        assert_eq!(answer.status, 200, "{source:?}: {answer:?}");
        assert_eq!(answer.body["status"], "applied", "{source:?}");
        let user = &answer.body["user"];
        assert_user_view(user);
        assert_eq!(user["id"], USER_ID);
        assert_eq!(user["type"], "user");
        // The primary address, not the first one: applied by the same decision as webhooks.
        assert_eq!(user["email"], "ada@example.com");
        assert_eq!(user["role"], "USER");
        assert!(
            user["lastEventId"]
                .as_str()
                .unwrap()
                .starts_with("sync-me:"),
            "{user}"
        );
        assert_eq!(sync_me.user_fetches(USER_ID), 1);
        assert_eq!(sync_me.clerk.request_count(), 1);
        let requests = sync_me.clerk.requests();
        assert_eq!(requests[0].authorization, Some(format!("Bearer {KEY}")));
        assert_eq!(Some(user), sync_me.app.users_get(USER_ID).await.as_ref());

        let again = sync_me.sync(&sync_me.token()).await;
        assert_eq!(
            (again.status, &again.body["status"]),
            (200, &json!("present")),
            "{again:?}"
        );
        assert_eq!(&again.body["user"], user);
        assert_eq!(sync_me.clerk.request_count(), 1, "no second Clerk request");
        if let KeySource::Jwks = source {
            assert_eq!(sync_me.jwks_fetches(), 1);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_user_is_404_and_stays_deleted() {
    let sync_me = SyncMeApp::start(KeySource::Pem).await;
    // Clerk still answers for the user, as it would while the deletion propagates.
    sync_me.clerk.put(clerk_user(USER_ID, recent()));
    let (status, _) = sync_me
        .app
        .deliver(&user_changed("user.created", USER_ID, recent()))
        .await;
    assert_eq!(status, 200);
    let (status, _) = sync_me.app.deliver(&user_deleted(USER_ID)).await;
    assert_eq!(status, 200);

    for _ in 0..2 {
        let answer = sync_me.sync(&sync_me.token()).await;
        assert_eq!(answer.status, 404, "{answer:?}");
        assert!(assert_error_body(&answer).contains("deleted"), "{answer:?}");
    }
    assert_eq!(sync_me.app.users_get(USER_ID).await, None);
    assert!(sync_me.app.users_list().await.is_empty());
    assert_eq!(sync_me.clerk.request_count(), 0);

    // Deleted before it was ever stored: the tombstone blocks it all the same.
    let other = "user_2deletedfirst";
    sync_me.clerk.put(clerk_user(other, recent()));
    sync_me.app.deliver(&user_deleted(other)).await;
    let token = TokenBuilder::new().claim("sub", other).sign(&sync_me.key);
    assert_eq!(sync_me.sync(&token).await.status, 404);
    assert_eq!(sync_me.app.users_get(other).await, None);
    assert_eq!(sync_me.clerk.request_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_clerk_does_not_know_is_404_and_nothing_is_stored() {
    let sync_me = SyncMeApp::start(KeySource::Pem).await;
    let answer = sync_me.sync(&sync_me.token()).await;
    assert_eq!(answer.status, 404, "{answer:?}");
    assert_error_body(&answer);
    assert_eq!(sync_me.user_fetches(USER_ID), 1);
    assert_eq!(sync_me.app.users_get(USER_ID).await, None);
    assert!(sync_me.app.users_list().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_tokens_are_401_with_a_bearer_challenge_and_never_echoed() {
    let sync_me = SyncMeApp::start(KeySource::Pem).await;
    // Clerk has the user: any token let through would store it.
    sync_me.clerk.put(clerk_user(USER_ID, recent()));
    let key = &sync_me.key;
    let other_key = TestKey::generate("ins_sync_me");
    let honest = sync_me.token();
    let tokens = [
        (
            "expired beyond the leeway",
            TokenBuilder::new().expires_in(-10).sign(key),
        ),
        (
            "not yet valid",
            TokenBuilder::new().not_before_in(60).sign(key),
        ),
        (
            "wrong azp",
            TokenBuilder::new()
                .claim("azp", "https://evil.example")
                .sign(key),
        ),
        ("no azp", TokenBuilder::new().without("azp").sign(key)),
        (
            "wrong iss",
            TokenBuilder::new()
                .claim("iss", "https://clerk.other.example")
                .sign(key),
        ),
        (
            "signed by another key",
            TokenBuilder::new().sign(&other_key),
        ),
        (
            "tampered payload",
            tamper(&honest, "sub", "user_someoneelse"),
        ),
        ("alg none", TokenBuilder::new().unsigned()),
        (
            "HS256 keyed with the public key",
            TokenBuilder::new().sign_hs256(key.public_pem().as_bytes()),
        ),
        (
            "20 KB",
            TokenBuilder::new()
                .claim("pad", "x".repeat(20 * 1024))
                .sign(key),
        ),
    ];
    let mut cases: Vec<(String, Option<String>, Option<String>)> = tokens
        .into_iter()
        .map(|(name, token)| (name.to_owned(), Some(bearer(&token)), Some(token)))
        .collect();
    let malformed = [
        ("no Authorization", None),
        ("Basic", Some(format!("Basic {}", "dXNlcjpwYXNzd29yZA=="))),
        ("Bearer alone", Some("Bearer".to_owned())),
        ("garbage", Some("Bearer garbage-not-a-jwt".to_owned())),
        ("no scheme", Some(honest.clone())),
        ("three dots", Some("Bearer a.b.c.d".to_owned())),
        ("only dots", Some("Bearer ...".to_owned())),
    ];
    cases.extend(
        malformed
            .into_iter()
            .map(|(name, authorization)| (name.to_owned(), authorization.clone(), authorization)),
    );

    for (name, authorization, secret) in &cases {
        let answer = sync(&sync_me.app, authorization.as_deref()).await;
        assert_eq!(answer.status, 401, "{name}: {answer:?}");
        let challenge = answer.www_authenticate.as_deref().unwrap_or_default();
        // RFC 6750: no credentials, the scheme alone; a bad token, the error code too.
        let expected = match authorization {
            None => "Bearer",
            Some(_) => "Bearer error=\"invalid_token\"",
        };
        assert_eq!(challenge, expected, "{name}: {answer:?}");
        assert_error_body(&answer);
        if let Some(secret) = secret.as_deref().filter(|secret| secret.len() > 8) {
            for part in secret.trim_start_matches("Bearer ").split('.') {
                assert!(
                    part.len() < 8 || !answer.raw.contains(part),
                    "{name}: the answer echoes the token: {}",
                    answer.raw
                );
            }
        }
    }
    // Bytes that are not text at all (a header may carry them; a token never does).
    let answer = reqwest::Client::new()
        .post(format!("{}/api/me/sync", sync_me.app.base_url))
        .header(
            "authorization",
            reqwest::header::HeaderValue::from_bytes(
                "Bearer \u{1F511}.\u{1F511}.\u{1F511}".as_bytes(),
            )
            .unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 401);
    assert!(
        answer.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
    assert_eq!(
        sync_me.clerk.request_count(),
        0,
        "no refused token reaches Clerk"
    );
    assert!(sync_me.app.users_list().await.is_empty());

    // The same process takes the honest token.
    let answer = sync_me.sync(&honest).await;
    assert_eq!(
        (answer.status, &answer.body["status"]),
        (200, &json!("applied")),
        "{answer:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_kid_refetches_the_key_set_once_then_is_401() {
    let sync_me = SyncMeApp::start(KeySource::Jwks).await;
    sync_me.clerk.put(clerk_user(USER_ID, recent()));
    assert_eq!(sync_me.sync(&sync_me.token()).await.status, 200);
    assert_eq!(sync_me.jwks_fetches(), 1);

    let stranger = TestKey::generate("ins_stranger");
    let answer = sync_me.sync(&TokenBuilder::new().sign(&stranger)).await;
    assert_eq!(answer.status, 401, "{answer:?}");
    assert!(answer.www_authenticate.unwrap().starts_with("Bearer"));
    assert_eq!(sync_me.jwks_fetches(), 2, "one refetch for the unknown kid");

    let another = TokenBuilder::new().kid("ins_another").sign(&stranger);
    assert_eq!(sync_me.sync(&another).await.status, 401);
    assert_eq!(sync_me.jwks_fetches(), 2, "and no more within the minute");
    assert_eq!(sync_me.clerk.request_count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_set_down_on_a_cold_cache_is_503() {
    let sync_me = SyncMeApp::start(KeySource::Jwks).await;
    sync_me.clerk.put(clerk_user(USER_ID, recent()));
    let jwks = sync_me.jwks.as_ref().unwrap();
    jwks.behave(Behaviour::Fail);
    let answer = sync_me.sync(&sync_me.token()).await;
    assert_unavailable(&answer);
    assert_eq!(
        answer.www_authenticate, None,
        "not the caller's fault: {answer:?}"
    );
    assert_eq!(sync_me.clerk.request_count(), 0);
    assert!(sync_me.app.users_list().await.is_empty());

    // Back up: the next call after the pause fetches the set and goes through.
    jwks.behave(Behaviour::Serve);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let answer = sync_me.sync(&sync_me.token()).await;
    assert_eq!(answer.status, 200, "{answer:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clerk_unavailable_is_503_with_retry_after_and_stores_nothing() {
    let sync_me = SyncMeApp::start(KeySource::Pem).await;
    sync_me.clerk.put(clerk_user(USER_ID, recent()));

    // A 5xx is retried once; failing twice, the caller is told to come back.
    sync_me.clerk.fail_next(Failure::Status(500));
    sync_me.clerk.fail_next(Failure::Status(503));
    let answer = sync_me.sync(&sync_me.token()).await;
    assert_unavailable(&answer);
    assert_eq!(sync_me.user_fetches(USER_ID), 2);
    assert_eq!(sync_me.app.users_get(USER_ID).await, None);

    // Rate limited: Clerk's Retry-After is passed on, and the client holds off meanwhile.
    sync_me.clerk.fail_next(Failure::RateLimited {
        retry_after_secs: 7,
    });
    let answer = sync_me.sync(&sync_me.token()).await;
    assert_unavailable(&answer);
    assert_eq!(answer.retry_after.as_deref(), Some("7"), "{answer:?}");
    assert_eq!(sync_me.user_fetches(USER_ID), 3);
    let answer = sync_me.sync(&sync_me.token()).await;
    assert_unavailable(&answer);
    assert_eq!(
        sync_me.user_fetches(USER_ID),
        3,
        "no request while held off"
    );
    assert_eq!(sync_me.app.users_get(USER_ID).await, None);
    assert!(sync_me.app.users_list().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_clerk_5xx_is_retried_and_the_user_applied() {
    let sync_me = SyncMeApp::start(KeySource::Pem).await;
    sync_me.clerk.put(clerk_user(USER_ID, recent()));
    sync_me.clerk.fail_next(Failure::Status(502));
    let answer = sync_me.sync(&sync_me.token()).await;
    assert_eq!(
        (answer.status, &answer.body["status"]),
        (200, &json!("applied")),
        "{answer:?}"
    );
    assert_eq!(sync_me.user_fetches(USER_ID), 2);
    assert!(sync_me.app.users_get(USER_ID).await.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_calls_for_a_new_user_make_one_clerk_request() {
    let sync_me = SyncMeApp::start(KeySource::Pem).await;
    sync_me.clerk.put(clerk_user(USER_ID, recent()));
    // A slow first answer keeps the fetch in flight while the other calls arrive.
    sync_me
        .clerk
        .fail_next(Failure::Delay(Duration::from_millis(300)));
    let sync_me = Arc::new(sync_me);
    let client = reqwest::Client::new();
    let calls: Vec<_> = (0..50)
        .map(|_| {
            let (sync_me, client) = (Arc::clone(&sync_me), client.clone());
            tokio::spawn(async move {
                let authorization = bearer(&sync_me.token());
                post(&client, &sync_me.app, Some(&authorization)).await
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for call in calls {
        let answer = call.await.unwrap();
        assert_eq!(answer.status, 200, "{answer:?}");
        assert_eq!(answer.body["user"]["id"], USER_ID, "{answer:?}");
        statuses.push(answer.body["status"].as_str().unwrap().to_owned());
    }
    let applied = statuses.iter().filter(|s| *s == "applied").count();
    let present = statuses.iter().filter(|s| *s == "present").count();
    assert_eq!((applied, present), (1, 49), "{statuses:?}");
    assert_eq!(sync_me.user_fetches(USER_ID), 1);
    assert_eq!(sync_me.clerk.request_count(), 1);
    let users = sync_me.app.users_list().await;
    assert_eq!(users.len(), 1);
    assert_eq!(users[0]["id"], USER_ID);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_configured_is_404_saying_what_is_missing() {
    let key = TestKey::generate("ins_unconfigured");
    let token = TokenBuilder::new().sign(&key);

    // No session settings at all.
    let bare = spawn_app(&[]).await;
    let answer = sync(&bare, Some(&bearer(&token))).await;
    assert_eq!(answer.status, 404, "{answer:?}");
    let error = assert_error_body(&answer);
    assert!(error.contains("not configured"), "{error}");
    assert!(error.contains("CLERK_JWT_KEY"), "{error}");
    assert!(error.contains("CLERK_AUTHORIZED_PARTIES"), "{error}");

    // A key but no authorized parties is no configuration either.
    let no_parties = start(&[("CLERK_JWT_KEY", key.public_pem().to_owned())]).await;
    let answer = sync(&no_parties, Some(&bearer(&token))).await;
    assert_eq!(answer.status, 404, "{answer:?}");
    assert!(assert_error_body(&answer).contains("not configured"));

    // Session settings, but no Clerk Backend API to fetch new users from.
    let no_secret = start(&[
        ("CLERK_JWT_KEY", key.public_pem().to_owned()),
        ("CLERK_AUTHORIZED_PARTIES", PARTY.to_owned()),
    ])
    .await;
    no_secret
        .deliver(&user_changed("user.created", USER_ID, recent()))
        .await;
    let answer = sync(&no_secret, Some(&bearer(&token))).await;
    assert_eq!(answer.status, 404, "{answer:?}");
    let error = assert_error_body(&answer);
    assert!(error.contains("not configured"), "{error}");
    assert!(error.contains("CLERK_SECRET_KEY"), "{error}");
    assert_eq!(answer.www_authenticate, None);
}

/// 401 with `WWW-Authenticate: Bearer error="invalid_token"` and an error body.
#[track_caller]
fn assert_invalid_token(name: &str, answer: &Answer) {
    assert_eq!(answer.status, 401, "{name}: {answer:?}");
    assert_eq!(
        answer.www_authenticate.as_deref(),
        Some("Bearer error=\"invalid_token\""),
        "{name}: {answer:?}"
    );
    assert_error_body(answer);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_sessions_and_tokens_that_are_not_sessions_are_401_invalid_token() {
    for source in [KeySource::Pem, KeySource::Jwks] {
        let sync_me = SyncMeApp::start(source).await;
        // Clerk has the user: any token let through would store it.
        sync_me.clerk.put(clerk_user(USER_ID, recent()));
        let key = &sync_me.key;
        let refused = [
            (
                "sts pending",
                TokenBuilder::new().claim("sts", "pending").sign(key),
            ),
            (
                "typ at+jwt",
                TokenBuilder::new().header("typ", "at+jwt").sign(key),
            ),
            (
                "typ application/at+jwt",
                TokenBuilder::new()
                    .header("typ", "application/at+jwt")
                    .sign(key),
            ),
            // @clerk/backend compares typ exactly.
            (
                "typ jwt",
                TokenBuilder::new().header("typ", "jwt").sign(key),
            ),
            ("no azp", TokenBuilder::new().without("azp").sign(key)),
            ("empty azp", TokenBuilder::new().claim("azp", "").sign(key)),
        ];
        for (name, token) in &refused {
            let answer = sync_me.sync(token).await;
            assert_invalid_token(&format!("{source:?}, {name}"), &answer);
        }
        assert_eq!(sync_me.clerk.request_count(), 0, "{source:?}");
        assert!(sync_me.app.users_list().await.is_empty(), "{source:?}");

        // A token without typ is a session token as much as one with `JWT`.
        let no_typ = TokenBuilder::new().without_header("typ").sign(key);
        let answer = sync_me.sync(&no_typ).await;
        assert_eq!(
            (answer.status, &answer.body["status"]),
            (200, &json!("applied")),
            "{source:?}: {answer:?}"
        );
        let answer = sync_me
            .sync(&TokenBuilder::new().header("typ", "JWT").sign(key))
            .await;
        assert_eq!(
            (answer.status, &answer.body["status"]),
            (200, &json!("present")),
            "{source:?}: {answer:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_session_is_served_when_pending_sessions_are_allowed() {
    let sync_me =
        SyncMeApp::start_with(KeySource::Pem, &[("CLERK_ALLOW_PENDING_SESSIONS", "true")]).await;
    sync_me.clerk.put(clerk_user(USER_ID, recent()));
    let key = &sync_me.key;
    let pending = TokenBuilder::new().claim("sts", "pending");

    // Only the pending status is let through: the other refusals stand.
    for (name, token) in [
        (
            "typ at+jwt",
            pending.clone().header("typ", "at+jwt").sign(key),
        ),
        ("no azp", pending.clone().without("azp").sign(key)),
    ] {
        assert_invalid_token(name, &sync_me.sync(&token).await);
    }
    assert_eq!(sync_me.clerk.request_count(), 0);

    let answer = sync_me.sync(&pending.sign(key)).await;
    assert_eq!(
        (answer.status, &answer.body["status"]),
        (200, &json!("applied")),
        "{answer:?}"
    );
    assert_user_view(&answer.body["user"]);
    assert_eq!(sync_me.user_fetches(USER_ID), 1);
}

#[test]
fn allow_pending_sessions_other_than_true_or_false_stops_startup_in_one_line() {
    let dir = tempfile::TempDir::new().unwrap();
    for value in ["yes", "1", "on"] {
        // Nothing inherited, and a store and port of its own should startup get that far.
        let mut child = Command::new(env!("CARGO_BIN_EXE_handler"))
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("CLERK_WEBHOOK_SIGNING_SECRET", crate::fixtures::SECRET)
            .env("LOCAL_STORE_PATH", dir.path().join("users.sqlite3"))
            .env("FUNCTIONS_CUSTOMHANDLER_PORT", "0")
            .env("CLERK_ALLOW_PENDING_SESSIONS", value)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let started = Instant::now();
        while child.try_wait().unwrap().is_none() {
            if started.elapsed() > Duration::from_secs(20) {
                child.kill().unwrap();
                panic!("{value}: still running; the setting was not refused");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let output = child.wait_with_output().unwrap();
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert!(!output.status.success(), "{value}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{value}: {stderr}");
        assert!(
            stderr.contains("CLERK_ALLOW_PENDING_SESSIONS"),
            "{value}: {stderr}"
        );
    }
}
