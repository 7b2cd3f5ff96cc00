//! Verification, through the application as `main` builds it, on a real socket: both header
//! families, rotated secrets, every way a delivery is refused (each shown to leave the store
//! exactly as it was), and the body limit however the body is framed, or when it stops arriving.

use std::io::Write;
use std::net::TcpStream;

use serde_json::{Value, json};

use crate::helpers::{
    Headers, OTHER_SECRET, SECRET, T0, TestApp, applied, assert_error_body, clerk_event,
    clerk_user, header, key_of, msg_id, now, signed, spawn_app, svix_headers, user_changed,
    version,
};
use crate::raw_http::{
    Framing, exchange, parse_response, raw_post, read_until_closed, request_head,
};

/// The body limit the SPEC promises.
const MIB: usize = 1024 * 1024;
/// Valid, but configured nowhere.
const THIRD_SECRET: &str = "whsec_YSB0aGlyZCBzZWNyZXQsIG5ldmVyIGNvbmZpZ3VyZWQ=";

/// The same headers under the unbranded Standard Webhooks names.
fn unbranded(headers: &[(String, String)]) -> Headers {
    headers
        .iter()
        .map(|(name, value)| (name.replacen("svix-", "webhook-", 1), value.clone()))
        .collect()
}

fn with_header(headers: &[(String, String)], name: &str, value: &str) -> Headers {
    let mut headers = without_header(headers, name);
    headers.push((name.into(), value.into()));
    headers
}

fn without_header(headers: &[(String, String)], name: &str) -> Headers {
    headers.iter().filter(|(n, _)| n != name).cloned().collect()
}

/// A Svix signature over raw bytes, for bodies the svix crate refuses to sign (not UTF-8).
fn sign_bytes(secret: &str, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    use base64::Engine as _;
    let engine = base64::engine::general_purpose::STANDARD;
    let key = engine.decode(key_of(secret)).unwrap();
    let mut signed = format!("{msg_id}.{timestamp}.").into_bytes();
    signed.extend_from_slice(body);
    format!(
        "v1,{}",
        engine.encode(hmac_sha256::HMAC::mac(&signed, &key))
    )
}

/// The body of a user event padded with an unknown field to exactly `len` bytes.
fn padded_to(len: usize, id: &str, updated_at: i64) -> Vec<u8> {
    let mut event = version(id, updated_at, "Padded");
    event["data"]["padding"] = json!("");
    let unpadded = serde_json::to_vec(&event).unwrap().len();
    event["data"]["padding"] = json!("x".repeat(len - unpadded));
    let body = serde_json::to_vec(&event).unwrap();
    assert_eq!(body.len(), len);
    body
}

/// A refused delivery: `expected` with an error body, and every stored document as before.
async fn assert_refused(
    app: &TestApp,
    case: &str,
    (status, body): (u16, Value),
    expected: u16,
    before: &[Value],
) {
    assert_eq!(status, expected, "{case}: {body}");
    assert_error_body(case, &body);
    assert_eq!(app.users_list().await, before, "{case} changed the store");
}

#[tokio::test]
async fn both_header_families_are_accepted() {
    let app = spawn_app(&[]).await;
    let (headers, body) = signed(SECRET, &user_changed("user.created", "user_svix", T0));
    assert_eq!(app.post(&headers, body).await, applied());

    let (headers, body) = signed(SECRET, &user_changed("user.created", "user_std", T0));
    let headers = unbranded(&headers);
    assert_eq!(app.post(&headers, body).await, applied());
    assert_eq!(
        app.users_get("user_std").await.unwrap()["lastEventId"],
        header(&headers, "webhook-id")
    );
}

#[tokio::test]
async fn every_rotated_secret_is_accepted() {
    for (case, secrets) in [
        ("comma", format!("{SECRET},{OTHER_SECRET}")),
        ("comma and space", format!("{OTHER_SECRET}, {SECRET}")),
        ("whitespace", format!("{SECRET}\n\t{OTHER_SECRET} ")),
    ] {
        let app = spawn_app(&[("CLERK_WEBHOOK_SIGNING_SECRET", &secrets)]).await;
        for (n, secret) in [SECRET, OTHER_SECRET].into_iter().enumerate() {
            let id = format!("user_{n}");
            let (headers, body) = signed(secret, &user_changed("user.created", &id, T0));
            assert_eq!(app.post(&headers, body).await, applied(), "{case}");
            assert!(app.users_get(&id).await.is_some(), "{case}");
        }
        let (headers, body) = signed(THIRD_SECRET, &user_changed("user.created", "user_3", T0));
        let (status, _) = app.post(&headers, body).await;
        assert_eq!(status, 401, "{case}");
        assert_eq!(app.users_list().await.len(), 2, "{case}");
    }
}

#[tokio::test]
async fn refused_deliveries_leave_the_store_unchanged() {
    let app = spawn_app(&[]).await;
    assert_eq!(
        app.deliver(&version("user_1", T0, "Stored")).await,
        applied()
    );
    let before = app.users_list().await;

    // Each of these would change `user_1` if it were accepted.
    let newer = version("user_1", T0 + 1, "Attacker");
    let (good, body) = signed(SECRET, &newer);
    let id = header(&good, "svix-id");
    let sig = |timestamp: i64| svix_headers(SECRET, id, timestamp, &body);
    let v1 = header(&good, "svix-signature");

    let pretty = serde_json::to_vec_pretty(&newer).unwrap();
    let mut cases: Vec<(&str, Headers, Vec<u8>, u16)> = vec![
        (
            "wrong secret",
            signed(OTHER_SECRET, &newer).0,
            body.clone(),
            401,
        ),
        (
            "wrong secret, unbranded headers",
            unbranded(&signed(OTHER_SECRET, &newer).0),
            body.clone(),
            401,
        ),
        (
            "body re-serialized after signing",
            good.clone(),
            pretty,
            401,
        ),
        (
            "another body under this signature",
            good.clone(),
            serde_json::to_vec(&version("user_1", T0 + 2, "Other")).unwrap(),
            401,
        ),
        (
            "signature for another message id",
            with_header(&good, "svix-id", "msg_other"),
            body.clone(),
            401,
        ),
        (
            "timestamp 6 minutes old",
            sig(now() - 360),
            body.clone(),
            401,
        ),
        (
            "timestamp 6 minutes ahead",
            sig(now() + 360),
            body.clone(),
            401,
        ),
        (
            "only an unknown signature version",
            with_header(&good, "svix-signature", &v1.replacen("v1,", "v2,", 1)),
            body.clone(),
            401,
        ),
        (
            "a v1 signature that is not base64 of a MAC",
            with_header(&good, "svix-signature", "v1,bm90IGEgbWFj"),
            body.clone(),
            401,
        ),
        (
            "timestamp not a number",
            with_header(&good, "svix-timestamp", "yesterday"),
            body.clone(),
            400,
        ),
        (
            "signature without a version",
            with_header(&good, "svix-signature", "garbage"),
            body.clone(),
            400,
        ),
    ];
    for name in ["svix-id", "svix-timestamp", "svix-signature"] {
        cases.push((
            "missing header",
            without_header(&good, name),
            body.clone(),
            400,
        ));
    }
    for (case, bytes) in [
        ("signed but not JSON", b"user_1 is now Attacker".to_vec()),
        ("signed JSON array", b"[1, 2, 3]".to_vec()),
        (
            "signed JSON without a type",
            serde_json::to_vec(&json!({"data": clerk_user("user_1", T0 + 1)})).unwrap(),
        ),
        (
            "signed JSON without data",
            br#"{"type": "user.updated", "object": "event"}"#.to_vec(),
        ),
        (
            "user.deleted without id",
            serde_json::to_vec(&clerk_event("user.deleted", json!({"deleted": true}))).unwrap(),
        ),
        ("user.updated without id", {
            let mut user = clerk_user("user_1", T0 + 1);
            user.as_object_mut().unwrap().remove("id");
            serde_json::to_vec(&clerk_event("user.updated", user)).unwrap()
        }),
        ("user.created without id", {
            let mut user = clerk_user("user_1", T0 + 1);
            user["id"] = Value::Null;
            serde_json::to_vec(&clerk_event("user.created", user)).unwrap()
        }),
        ("user.updated without updated_at", {
            let mut user = clerk_user("user_1", T0 + 1);
            user.as_object_mut().unwrap().remove("updated_at");
            serde_json::to_vec(&clerk_event("user.updated", user)).unwrap()
        }),
        ("email addresses of the wrong shape", {
            let mut user = clerk_user("user_1", T0 + 1);
            user["email_addresses"] = json!("attacker@example.com");
            serde_json::to_vec(&clerk_event("user.updated", user)).unwrap()
        }),
    ] {
        let headers = svix_headers(SECRET, &msg_id(), now(), &bytes);
        cases.push((case, headers, bytes, 400));
    }
    let not_utf8 = [
        br#"{"type":"user.updated","data":{"id":"user_1","first_name":""#.as_slice(),
        &[0xff, 0xfe],
        b"\"}}",
    ]
    .concat();
    let not_utf8_id = msg_id();
    let timestamp = now();
    let headers = vec![
        ("svix-id".to_owned(), not_utf8_id.clone()),
        ("svix-timestamp".to_owned(), timestamp.to_string()),
        (
            "svix-signature".to_owned(),
            sign_bytes(SECRET, &not_utf8_id, timestamp, &not_utf8),
        ),
    ];
    cases.push(("signed but not UTF-8", headers, not_utf8, 400));

    for (case, headers, body, expected) in cases {
        let response = app.post(&headers, body).await;
        assert_refused(&app, case, response, expected, &before).await;
    }
    assert_eq!(app.users_get("user_1").await.as_ref(), before.first());
}

// The raw exchanges below block the test's thread; the app is served by the runtime's workers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_body_limit_is_one_mebibyte_however_the_body_is_framed() {
    let app = spawn_app(&[]).await;
    let address = app.address.to_string();
    let send = |updated_at: i64, len: usize, framing: Framing| {
        let body = padded_to(len, "user_big", updated_at);
        let headers = svix_headers(SECRET, &msg_id(), now(), &body);
        let response = parse_response(&raw_post(&address, &headers, &body, framing));
        (response.status, response.body)
    };

    assert_eq!(send(T0, MIB, Framing::ContentLength), applied());
    assert_eq!(send(T0 + 1, MIB, Framing::Chunked), applied());
    let before = app.users_list().await;
    assert_eq!(before[0]["clerkUpdatedAt"], T0 + 1);

    let response = send(T0 + 2, MIB + 1, Framing::ContentLength);
    assert_refused(&app, "one byte over", response, 413, &before).await;
    let response = send(T0 + 3, MIB + 1, Framing::Chunked);
    assert_refused(&app, "one byte over, chunked", response, 413, &before).await;
    let response = send(T0 + 4, 4 * MIB, Framing::Chunked);
    assert_refused(&app, "4 MiB, chunked", response, 413, &before).await;

    // A Content-Length over the limit is refused before any body is waited for.
    let body = padded_to(1024, "user_big", T0 + 5);
    let headers = svix_headers(SECRET, &msg_id(), now(), &body);
    let mut request = request_head(&headers, &format!("content-length: {}\r\n", 2 * MIB));
    request.extend_from_slice(&body);
    let response = parse_response(&exchange(&address, request));
    assert_refused(
        &app,
        "Content-Length claims 2 MiB",
        (response.status, response.body),
        413,
        &before,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_stops_arriving_is_answered_not_waited_on_forever() {
    // Svix gives up after 15 s; the handler must answer first even when the sender stalls.
    let app = spawn_app(&[]).await;
    let address = app.address.to_string();
    let (headers, body) = signed(SECRET, &user_changed("user.created", "user_1", T0));
    let mut request = request_head(&headers, &format!("content-length: {}\r\n", body.len()));
    request.extend_from_slice(&body[..body.len() / 2]);
    let mut stream = TcpStream::connect(&address).unwrap();
    stream.write_all(&request).unwrap();
    let response = parse_response(&read_until_closed(&mut stream));
    assert_refused(
        &app,
        "stalled body",
        (response.status, response.body),
        408,
        &[],
    )
    .await;
}
