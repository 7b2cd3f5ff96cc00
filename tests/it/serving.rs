//! Serving, through the application as `main` builds it: readiness, other routes and methods, the
//! function key's query string, settings left empty, a store that cannot be written, and a
//! graceful shutdown.

use serde_json::Value;

use crate::helpers::{
    SECRET, T0, applied, assert_error_body, header, now, signed, spawn_app, svix_headers,
    user_changed,
};
use crate::raw_http::{DeliveryInFlight, Framing, WEBHOOK, get_root, parse_response, raw_post};

#[tokio::test]
async fn readiness_and_other_routes_answer_with_json() {
    let app = spawn_app(&[]).await;
    let client = reqwest::Client::new();

    let ready = client
        .get(format!("{}/", app.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    assert!(ready.json::<Value>().await.unwrap().is_object());

    use reqwest::Method;
    for (method, path, expected) in [
        (Method::GET, "/api/Other", 404),
        (Method::POST, "/api/Other", 404),
        (Method::POST, "/api/ClerkWebhook/extra", 404),
        (Method::GET, WEBHOOK, 405),
        (Method::PUT, WEBHOOK, 405),
        (Method::DELETE, WEBHOOK, 405),
        (Method::PATCH, WEBHOOK, 405),
    ] {
        let case = format!("{method} {path}");
        let response = client
            .request(method, format!("{}{path}", app.base_url))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), expected, "{case}");
        assert_error_body(&case, &response.json().await.unwrap());
    }
}

#[tokio::test]
async fn the_function_key_query_string_is_ignored() {
    // With authLevel "function" callers append ?code=<key>; the host forwards it unchanged.
    let app = spawn_app(&[]).await;
    let (headers, body) = signed(SECRET, &user_changed("user.created", "user_1", T0));
    let mut request = reqwest::Client::new()
        .post(format!("{}{WEBHOOK}?code=functionkey", app.base_url))
        .body(body);
    for (name, value) in &headers {
        request = request.header(name, value);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(app.users_get("user_1").await.is_some());
}

#[tokio::test]
async fn empty_cosmos_settings_mean_the_local_store() {
    let app = spawn_app(&[
        ("COSMOS_ENDPOINT", ""),
        ("COSMOS_CONNECTION_STRING", ""),
        ("AZURE_CLIENT_ID", ""),
        ("COSMOS_DATABASE_NAME", ""),
        ("COSMOS_CONTAINER_NAME", ""),
        ("TOMBSTONE_TTL_DAYS", ""),
        ("LOG_FORMAT", ""),
        ("WEBSITE_INSTANCE_ID", ""),
    ])
    .await;
    assert_eq!(
        app.deliver(&user_changed("user.created", "user_1", T0))
            .await,
        applied()
    );
    assert!(app.users_get("user_1").await.is_some());
}

// The raw exchanges below block the test's thread; the app is served by the runtime's workers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_store_answers_503_and_the_retry_applies() {
    let app = spawn_app(&[]).await;
    let address = app.address.to_string();
    // Another writer holds the store's write lock: the handler's write waits out its busy
    // timeout and gives up. (Reads go on: the store runs in WAL mode.)
    let locker = rusqlite::Connection::open(app.env_value("LOCAL_STORE_PATH").unwrap()).unwrap();
    locker.execute_batch("BEGIN IMMEDIATE").unwrap();

    let (headers, body) = signed(SECRET, &user_changed("user.created", "user_1", T0));
    let delivering = {
        let (address, headers, body) = (address.clone(), headers.clone(), body.clone());
        std::thread::spawn(move || {
            parse_response(&raw_post(&address, &headers, &body, Framing::ContentLength))
        })
    };
    // Readiness never waits on the store.
    assert_eq!(get_root(&address).unwrap().status, 200);
    assert!(
        !delivering.is_finished(),
        "the delivery should still be waiting on the lock"
    );

    let response = delivering.join().unwrap();
    assert_eq!(response.status, 503);
    assert!(
        response.head.contains("\r\nretry-after: "),
        "{}",
        response.head
    );
    assert_error_body("locked store", &response.body);

    // Released: nothing of the refused delivery was written.
    locker.execute_batch("ROLLBACK").unwrap();
    assert_eq!(app.users_get("user_1").await, None);
    // Svix's retry: the same message, signed again.
    let retry = svix_headers(SECRET, header(&headers, "svix-id"), now(), &body);
    let response = parse_response(&raw_post(&address, &retry, &body, Framing::ContentLength));
    assert_eq!((response.status, response.body), applied());
    assert!(app.users_get("user_1").await.is_some());
}

// The raw exchanges below block the test's thread; the app is served by the runtime's workers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutting_down_lets_the_delivery_in_flight_finish() {
    let mut app = spawn_app(&[]).await;
    let address = app.address.to_string();
    let (headers, body) = signed(SECRET, &user_changed("user.created", "user_inflight", T0));
    let delivery = DeliveryInFlight::begin(&address, &headers, &body);

    app.shut_down();
    // The listener closes once shutdown has begun; only then does the rest of the body arrive.
    let response = delivery.finish_after_listener_closed(&address);
    assert_eq!((response.status, response.body), applied());

    app.stopped().await;
    assert!(app.users_get("user_inflight").await.is_some());
}
