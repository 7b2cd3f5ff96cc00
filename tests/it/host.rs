//! The built binary played the way the Azure Functions host and Svix play it: started with
//! `FUNCTIONS_CUSTOMHANDLER_PORT`, polled on `/`, sent deliveries, stopped with SIGTERM. What it
//! stored is read back with `handler users get/list`, as an operator would, and every refused
//! delivery is shown to leave the store exactly as it was.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tempfile::TempDir;

use crate::helpers::{
    HandlerProcess, OTHER_SECRET, SECRET, clerk_event, clerk_user, free_port, handler_command,
    msg_id, now, svix_headers, user_changed, user_deleted,
};

const WEBHOOK: &str = "/api/ClerkWebhook";
/// The body limit the SPEC promises.
const MIB: usize = 1024 * 1024;
/// `updated_at` (epoch ms) of a user's first version in these tests.
const T0: i64 = 1_700_000_000_000;
/// A bound for what takes milliseconds, so that a hang fails instead of blocking the suite.
const PATIENCE: Duration = Duration::from_secs(20);
/// Valid, but configured nowhere.
const THIRD_SECRET: &str = "whsec_YSB0aGlyZCBzZWNyZXQsIG5ldmVyIGNvbmZpZ3VyZWQ=";

/// Request headers as name and value, in the order sent.
type Headers = Vec<(String, String)>;

// ---------------------------------------------------------------------------------------------
// Signing and headers

/// The exact body of `event` and Svix headers signing it with `secret`, now.
fn signed(secret: &str, event: &Value) -> (Headers, Vec<u8>) {
    let body = serde_json::to_vec(event).unwrap();
    (svix_headers(secret, &msg_id(), now(), &body), body)
}

/// The same headers under the unbranded Standard Webhooks names.
fn unbranded(headers: &[(String, String)]) -> Headers {
    headers
        .iter()
        .map(|(name, value)| (name.replacen("svix-", "webhook-", 1), value.clone()))
        .collect()
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> &'a str {
    &headers.iter().find(|(n, _)| n == name).unwrap().1
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

/// The base64 key inside a `whsec_` secret: it must not leak either.
fn key_of(secret: &str) -> &str {
    secret.strip_prefix("whsec_").unwrap()
}

// ---------------------------------------------------------------------------------------------
// Clerk payloads

/// `user.updated` for `id` at `updated_at`, carrying `first_name` so that versions differ.
fn version(id: &str, updated_at: i64, first_name: &str) -> Value {
    let mut user = clerk_user(id, updated_at);
    user["first_name"] = json!(first_name);
    clerk_event("user.updated", user)
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

// ---------------------------------------------------------------------------------------------
// Raw HTTP, for what reqwest will not send: chunked bodies, a lying Content-Length, pauses.

struct RawResponse {
    status: u16,
    /// The response head, lower-cased.
    head: String,
    body: Value,
}

enum Framing {
    ContentLength,
    Chunked,
}

/// A webhook POST up to the body; `framing` holds the header lines that frame the body.
fn request_head(headers: &[(String, String)], framing: &str) -> Vec<u8> {
    let mut head = format!(
        "POST {WEBHOOK} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\
         content-type: application/json\r\n{framing}"
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    head.into_bytes()
}

/// A POST to the webhook with `body` framed as asked.
fn raw_post(address: &str, headers: &[(String, String)], body: &[u8], framing: Framing) -> Vec<u8> {
    match framing {
        Framing::ContentLength => {
            let mut request = request_head(headers, &format!("content-length: {}\r\n", body.len()));
            request.extend_from_slice(body);
            exchange(address, request)
        }
        Framing::Chunked => {
            let mut request = request_head(headers, "transfer-encoding: chunked\r\n");
            for chunk in body.chunks(64 * 1024) {
                request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                request.extend_from_slice(chunk);
                request.extend_from_slice(b"\r\n");
            }
            request.extend_from_slice(b"0\r\n\r\n");
            exchange(address, request)
        }
    }
}

/// Writes `request` on a fresh connection while reading the answer until the server closes.
fn exchange(address: &str, request: Vec<u8>) -> Vec<u8> {
    let mut stream = TcpStream::connect(address).unwrap();
    let mut writer = stream.try_clone().unwrap();
    writer.set_write_timeout(Some(PATIENCE)).unwrap();
    let sending = std::thread::spawn(move || {
        // The server may answer (413) and close before it has read all of it: not an error.
        let _ = writer.write_all(&request);
    });
    let received = read_until_closed(&mut stream);
    sending.join().unwrap();
    received
}

fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut received = Vec::new();
    // A reset after the answer (the server closed with our body unread) keeps what arrived.
    let _ = stream.read_to_end(&mut received);
    received
}

/// The final response in `bytes`, past any `100 Continue`.
fn parse_response(bytes: &[u8]) -> RawResponse {
    let text = String::from_utf8_lossy(bytes).into_owned();
    let mut rest = text.as_str();
    loop {
        let (head, body) = rest
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("no complete response in {text:?}"));
        let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
        if status == 100 {
            rest = body;
            continue;
        }
        return RawResponse {
            status,
            head: head.to_ascii_lowercase(),
            body: serde_json::from_str(body).unwrap_or(Value::Null),
        };
    }
}

fn get_root(address: &str) -> Option<RawResponse> {
    let mut stream = TcpStream::connect(address).ok()?;
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .ok()?;
    Some(parse_response(&read_until_closed(&mut stream)))
}

/// Polls until nothing accepts connections on `address` any more.
fn wait_until_refused(address: &str) {
    let deadline = Instant::now() + PATIENCE;
    while TcpStream::connect(address).is_ok() {
        assert!(
            Instant::now() < deadline,
            "{address} still accepts connections"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

// ---------------------------------------------------------------------------------------------
// The binary started by hand, for what `HandlerProcess` does not expose: arguments, output, exit
// status and signals.

struct Handler {
    child: Child,
    address: String,
    env: Vec<(String, String)>,
    store_path: PathBuf,
    _dir: TempDir,
}

impl Handler {
    /// `handler <args>` as the host starts it: the test secret, a fresh local store, a free port
    /// in `FUNCTIONS_CUSTOMHANDLER_PORT`, plus `extra`; returns once `GET /` answers.
    fn start(extra: &[(&str, &str)], args: &[&str]) -> Self {
        let port = free_port().to_string();
        let env = [&[("FUNCTIONS_CUSTOMHANDLER_PORT", port.as_str())], extra].concat();
        Self::start_on(&port, &env, args)
    }

    /// Like `start` with exactly `extra` added, expecting the handler to listen on `port`.
    fn start_on(port: &str, extra: &[(&str, &str)], args: &[&str]) -> Self {
        let mut handler = Self::spawn(extra, args);
        handler.address = format!("127.0.0.1:{port}");
        handler.wait_ready();
        handler
    }

    /// Spawns without waiting for readiness; `address` is set by `start_on`.
    fn spawn(extra: &[(&str, &str)], args: &[&str]) -> Self {
        let dir = TempDir::new().unwrap();
        let store_path = dir.path().join("users.sqlite3");
        let mut env: Vec<(String, String)> = vec![
            ("CLERK_WEBHOOK_SIGNING_SECRET".into(), SECRET.into()),
            ("LOCAL_STORE_PATH".into(), store_path.display().to_string()),
        ];
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        // Output is read once the process has exited; the few log lines fit the pipe buffer.
        let child = handler_command(&env)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Self {
            child,
            address: String::new(),
            env,
            store_path,
            _dir: dir,
        }
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(response) = get_root(&self.address) {
                assert_eq!(response.status, 200);
                return;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("handler exited {status} before answering GET /");
            }
            assert!(Instant::now() < deadline, "GET / never answered");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn terminate(&self) {
        let pid = libc::pid_t::try_from(self.child.id()).unwrap();
        // SAFETY: kill(2) touches no memory; the pid is our child, not yet waited for, so it
        // cannot have been reused by another process.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    }

    /// Waits (bounded) for the process to exit and returns everything it printed.
    fn wait(&mut self) -> Output {
        let status = wait_bounded(&mut self.child);
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        self.child
            .stdout
            .take()
            .unwrap()
            .read_to_end(&mut stdout)
            .unwrap();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_end(&mut stderr)
            .unwrap();
        Output {
            status,
            stdout,
            stderr,
        }
    }

    fn users_get(&self, id: &str) -> Option<Value> {
        let output = handler_command(&self.env)
            .args(["users", "get", id])
            .output()
            .unwrap();
        match output.status.code() {
            Some(0) => Some(serde_json::from_slice(&output.stdout).unwrap()),
            Some(1) if output.stdout.is_empty() => None,
            _ => panic!("users get: {output:?}"),
        }
    }
}

impl Drop for Handler {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_bounded(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("handler did not exit within {PATIENCE:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

// ---------------------------------------------------------------------------------------------
// Assertions

fn assert_error_body(case: &str, body: &Value) {
    let message = body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("{case}: no {{\"error\": ...}} body: {body}"));
    assert!(!message.is_empty(), "{case}");
    for secret in [SECRET, OTHER_SECRET] {
        assert!(!message.contains(key_of(secret)), "{case}: {message}");
    }
}

/// A refused delivery: `expected` with an error body, and every stored document as before.
fn assert_refused(
    app: &HandlerProcess,
    case: &str,
    (status, body): (u16, Value),
    expected: u16,
    before: &[Value],
) {
    assert_eq!(status, expected, "{case}: {body}");
    assert_error_body(case, &body);
    assert_eq!(app.users_list(), before, "{case} changed the store");
}

fn applied() -> (u16, Value) {
    (200, json!({"status": "applied"}))
}

fn skipped(reason: &str) -> (u16, Value) {
    (200, json!({"status": "skipped", "reason": reason}))
}

// ---------------------------------------------------------------------------------------------
// Readiness and routes

#[tokio::test]
async fn readiness_and_other_routes_answer_with_json() {
    let app = HandlerProcess::start(&[]).await;
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
    let app = HandlerProcess::start(&[]).await;
    let (headers, body) = signed(SECRET, &user_changed("user.created", "user_1", T0));
    let mut request = reqwest::Client::new()
        .post(format!("{}{WEBHOOK}?code=functionkey", app.base_url))
        .body(body);
    for (name, value) in &headers {
        request = request.header(name, value);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(app.users_get("user_1").is_some());
}

// ---------------------------------------------------------------------------------------------
// The rules, as `users get/list` shows them

#[tokio::test]
async fn a_created_user_is_stored_field_for_field() {
    let app = HandlerProcess::start(&[]).await;
    let event = clerk_event(
        "user.created",
        json!({
            "id": "user_2fields", "object": "user",
            "username": "ada_l", "first_name": "Ada", "last_name": "Lovelace",
            "image_url": "https://img.clerk.com/ada.png", "external_id": "crm-42",
            "primary_email_address_id": "idn_b",
            "email_addresses": [
                {"id": "idn_a", "object": "email_address", "email_address": "a@example.com"},
                {"id": "idn_b", "object": "email_address", "email_address": "b@example.com"},
                {"id": "idn_c", "object": "email_address", "email_address": "c@example.com"}
            ],
            "primary_phone_number_id": "idn_p2",
            "phone_numbers": [
                {"id": "idn_p1", "phone_number": "+15550001"},
                {"id": "idn_p2", "phone_number": "+15550002"}
            ],
            "public_metadata": {"plan": "pro", "seats": 3},
            "private_metadata": {"stripe": "cus_123"},
            "unsafe_metadata": {"theme": "dark"},
            "created_at": 1_700_000_000_000i64,
            "updated_at": 1_700_000_123_456i64,
            "last_sign_in_at": 1_700_000_100_000i64
        }),
    );
    let (headers, body) = signed(SECRET, &event);
    assert_eq!(app.post(&headers, body).await, applied());

    // Exactly these fields: nothing else (private metadata above all) is stored.
    let expected = json!({
        "id": "user_2fields",
        "type": "user",
        "email": "b@example.com",
        "emailAddresses": ["a@example.com", "b@example.com", "c@example.com"],
        "phoneNumber": "+15550002",
        "firstName": "Ada",
        "lastName": "Lovelace",
        "username": "ada_l",
        "imageUrl": "https://img.clerk.com/ada.png",
        "externalId": "crm-42",
        "publicMetadata": {"plan": "pro", "seats": 3},
        "role": "USER",
        "createdAt": "2023-11-14T22:13:20Z",
        "updatedAt": "2023-11-14T22:15:23.456Z",
        "clerkUpdatedAt": 1_700_000_123_456i64,
        "lastSignInAt": "2023-11-14T22:15:00Z",
        "lastEventId": header(&headers, "svix-id"),
    });
    assert_eq!(app.users_get("user_2fields"), Some(expected.clone()));
    assert_eq!(app.users_list(), [expected]);
}

#[tokio::test]
async fn payload_variations_are_stored_without_crashing() {
    let app = HandlerProcess::start(&[]).await;

    let minimal = clerk_event(
        "user.created",
        json!({"id": "user_minimal", "updated_at": T0}),
    );
    let (headers, body) = signed(SECRET, &minimal);
    assert_eq!(app.post(&headers, body).await, applied());
    assert_eq!(
        app.users_get("user_minimal"),
        Some(json!({
            "id": "user_minimal", "type": "user", "email": null, "emailAddresses": [],
            "phoneNumber": null, "firstName": null, "lastName": null, "username": null,
            "imageUrl": null, "externalId": null, "publicMetadata": {}, "role": "USER",
            "createdAt": null, "updatedAt": "2023-11-14T22:13:20Z", "clerkUpdatedAt": T0,
            "lastSignInAt": null, "lastEventId": header(&headers, "svix-id"),
        }))
    );

    let mut no_email = clerk_user("user_no_email", T0);
    no_email["email_addresses"] = json!([]);
    no_email["primary_email_address_id"] = Value::Null;
    let mut nulls = clerk_user("user_nulls", T0);
    for field in [
        "email_addresses",
        "phone_numbers",
        "public_metadata",
        "private_metadata",
        "unsafe_metadata",
        "primary_email_address_id",
        "first_name",
    ] {
        nulls[field] = Value::Null;
    }
    nulls["a_field_clerk_adds_next_year"] = json!({"nested": [1, {"deep": null}]});
    let mut dangling = clerk_user("user_dangling", T0);
    dangling["primary_email_address_id"] = json!("idn_removed");
    for user in [no_email, nulls, dangling] {
        assert_eq!(
            app.deliver(&clerk_event("user.created", user)).await,
            applied()
        );
    }

    for id in ["user_no_email", "user_nulls"] {
        let document = app.users_get(id).unwrap();
        assert_eq!(document["email"], Value::Null, "{id}");
        assert_eq!(document["emailAddresses"], json!([]), "{id}");
    }
    let nulls = app.users_get("user_nulls").unwrap();
    assert_eq!(nulls["publicMetadata"], json!({}));
    assert_eq!(nulls["firstName"], Value::Null);
    assert_eq!(nulls["lastName"], "Lovelace");
    // A primary id that matches no address means no email, never simply the first address.
    let dangling = app.users_get("user_dangling").unwrap();
    assert_eq!(dangling["email"], Value::Null);
    assert_eq!(
        dangling["emailAddresses"],
        json!(["other@example.com", "ada@example.com"])
    );
    assert_eq!(app.users_list().len(), 4);
}

#[tokio::test]
async fn only_a_newer_update_changes_the_document() {
    let app = HandlerProcess::start(&[]).await;
    assert_eq!(
        app.deliver(&version("user_1", T0, "First")).await,
        applied()
    );

    let (newer_headers, newer) = signed(SECRET, &version("user_1", T0 + 10, "Newer"));
    assert_eq!(app.post(&newer_headers, newer).await, applied());
    let current = app.users_get("user_1").unwrap();
    assert_eq!(current["firstName"], "Newer");
    assert_eq!(current["clerkUpdatedAt"], T0 + 10);
    assert_eq!(current["lastEventId"], header(&newer_headers, "svix-id"));

    for (case, updated_at) in [("older", T0 + 5), ("equal", T0 + 10), ("first", T0)] {
        assert_eq!(
            app.deliver(&version("user_1", updated_at, case)).await,
            skipped("not_newer"),
            "{case}"
        );
        assert_eq!(app.users_get("user_1").as_ref(), Some(&current), "{case}");
    }
}

#[tokio::test]
async fn a_replayed_delivery_changes_nothing() {
    let app = HandlerProcess::start(&[]).await;
    let event = version("user_1", T0, "Once");
    let (headers, body) = signed(SECRET, &event);
    assert_eq!(app.post(&headers, body.clone()).await, applied());
    let stored = app.users_list();

    // The same delivery again, then as Svix retries it: same id and body, a fresh signature.
    assert_eq!(app.post(&headers, body.clone()).await, skipped("not_newer"));
    let id = header(&headers, "svix-id");
    let retried = svix_headers(SECRET, id, now(), &body);
    assert_eq!(app.post(&retried, body).await, skipped("not_newer"));
    assert_eq!(app.users_list(), stored);
}

#[tokio::test]
async fn a_deleted_user_stays_deleted() {
    let app = HandlerProcess::start(&[]).await;
    for id in ["user_gone", "user_kept"] {
        assert_eq!(
            app.deliver(&user_changed("user.created", id, T0)).await,
            applied()
        );
    }
    let kept = app.users_get("user_kept").unwrap();

    assert_eq!(app.deliver(&user_deleted("user_gone")).await, applied());
    let get = app.command(&["users", "get", "user_gone"]);
    assert_eq!(get.status.code(), Some(1));
    assert!(get.stdout.is_empty());
    assert!(
        !get.stderr.is_empty(),
        "a missing user is explained on stderr"
    );
    assert_eq!(app.users_list(), std::slice::from_ref(&kept));

    for event in [
        user_changed("user.created", "user_gone", T0 + 1_000),
        user_changed("user.updated", "user_gone", T0 + 2_000),
        user_deleted("user_gone"),
    ] {
        let (status, _) = app.deliver(&event).await;
        assert_eq!(status, 200, "{}", event["type"]);
        assert_eq!(app.users_get("user_gone"), None, "{}", event["type"]);
    }

    // A delete that overtakes the create (Svix does not order deliveries) also wins.
    assert_eq!(app.deliver(&user_deleted("user_early")).await, applied());
    let (status, _) = app
        .deliver(&user_changed("user.created", "user_early", T0))
        .await;
    assert_eq!(status, 200);
    assert_eq!(app.users_get("user_early"), None);
    assert_eq!(app.users_list(), [kept]);
}

#[tokio::test]
async fn other_event_types_are_acknowledged_and_store_nothing() {
    let app = HandlerProcess::start(&[]).await;
    for event in [
        clerk_event(
            "session.created",
            json!({"id": "sess_1", "user_id": "user_1"}),
        ),
        clerk_event(
            "organizationInvitation.accepted",
            json!({"id": "orginv_1", "organization_id": "org_1", "user_id": "user_1"}),
        ),
        clerk_event(
            "organizationDomain.deleted",
            json!({"id": "orgdmn_1", "deleted": true}),
        ),
        clerk_event(
            "email.created",
            json!({"id": "ema_1", "user_id": "user_1", "to_email_address": "a@example.com"}),
        ),
        clerk_event("user.something_new", clerk_user("user_1", T0)),
    ] {
        assert_eq!(
            app.deliver(&event).await,
            (200, json!({"status": "ignored"})),
            "{}",
            event["type"]
        );
    }
    assert_eq!(app.users_list(), Vec::<Value>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_versions_of_one_user_end_at_the_newest() {
    let app = HandlerProcess::start(&[]).await;
    // Several users so that a lost update (a newer version overwritten by an older one that
    // read before it wrote) has more than one chance to show.
    let users = ["user_race_a", "user_race_b", "user_race_c", "user_race_d"];
    let deliveries: Vec<_> = (1..=32)
        .flat_map(|n| users.map(|id| (id, n)))
        .map(|(id, n)| {
            let mut event = version(id, T0 + n, &format!("v{n}"));
            if n % 2 == 1 {
                event["type"] = json!("user.created");
            }
            (id, n, signed(SECRET, &event))
        })
        .collect();
    let responses = futures::future::join_all(
        deliveries
            .iter()
            .map(|(_, _, (headers, body))| app.post(headers, body.clone())),
    )
    .await;
    for (status, body) in &responses {
        assert_eq!(*status, 200, "{body}");
    }

    for id in users {
        let newest = app.users_get(id).unwrap();
        let (_, _, (headers, _)) = deliveries
            .iter()
            .find(|(user, n, _)| *user == id && *n == 32)
            .unwrap();
        assert_eq!(newest["clerkUpdatedAt"], T0 + 32, "{id}");
        assert_eq!(newest["firstName"], "v32", "{id}");
        assert_eq!(newest["lastEventId"], header(headers, "svix-id"), "{id}");
    }
    assert_eq!(app.users_list().len(), users.len());
}

// ---------------------------------------------------------------------------------------------
// Verification

#[tokio::test]
async fn both_header_families_are_accepted() {
    let app = HandlerProcess::start(&[]).await;
    let (headers, body) = signed(SECRET, &user_changed("user.created", "user_svix", T0));
    assert_eq!(app.post(&headers, body).await, applied());

    let (headers, body) = signed(SECRET, &user_changed("user.created", "user_std", T0));
    let headers = unbranded(&headers);
    assert_eq!(app.post(&headers, body).await, applied());
    assert_eq!(
        app.users_get("user_std").unwrap()["lastEventId"],
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
        let app = HandlerProcess::start(&[("CLERK_WEBHOOK_SIGNING_SECRET", &secrets)]).await;
        for (n, secret) in [SECRET, OTHER_SECRET].into_iter().enumerate() {
            let id = format!("user_{n}");
            let (headers, body) = signed(secret, &user_changed("user.created", &id, T0));
            assert_eq!(app.post(&headers, body).await, applied(), "{case}");
            assert!(app.users_get(&id).is_some(), "{case}");
        }
        let (headers, body) = signed(THIRD_SECRET, &user_changed("user.created", "user_3", T0));
        let (status, _) = app.post(&headers, body).await;
        assert_eq!(status, 401, "{case}");
        assert_eq!(app.users_list().len(), 2, "{case}");
    }
}

#[tokio::test]
async fn refused_deliveries_leave_the_store_unchanged() {
    let app = HandlerProcess::start(&[]).await;
    assert_eq!(
        app.deliver(&version("user_1", T0, "Stored")).await,
        applied()
    );
    let before = app.users_list();

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
        assert_refused(&app, case, response, expected, &before);
    }
    assert_eq!(app.users_get("user_1").as_ref(), before.first());
}

#[tokio::test]
async fn the_body_limit_is_one_mebibyte_however_the_body_is_framed() {
    let app = HandlerProcess::start(&[]).await;
    let address = app.base_url.trim_start_matches("http://").to_owned();
    let send = |updated_at: i64, len: usize, framing: Framing| {
        let body = padded_to(len, "user_big", updated_at);
        let headers = svix_headers(SECRET, &msg_id(), now(), &body);
        let response = parse_response(&raw_post(&address, &headers, &body, framing));
        (response.status, response.body)
    };

    assert_eq!(send(T0, MIB, Framing::ContentLength), applied());
    assert_eq!(send(T0 + 1, MIB, Framing::Chunked), applied());
    let before = app.users_list();
    assert_eq!(before[0]["clerkUpdatedAt"], T0 + 1);

    let response = send(T0 + 2, MIB + 1, Framing::ContentLength);
    assert_refused(&app, "one byte over", response, 413, &before);
    let response = send(T0 + 3, MIB + 1, Framing::Chunked);
    assert_refused(&app, "one byte over, chunked", response, 413, &before);
    let response = send(T0 + 4, 4 * MIB, Framing::Chunked);
    assert_refused(&app, "4 MiB, chunked", response, 413, &before);

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
    );
}

#[tokio::test]
async fn a_body_that_stops_arriving_is_answered_not_waited_on_forever() {
    // Svix gives up after 15 s; the handler must answer first even when the sender stalls.
    let app = HandlerProcess::start(&[]).await;
    let address = app.base_url.trim_start_matches("http://").to_owned();
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
    );
}

// ---------------------------------------------------------------------------------------------
// Startup, command line, logs, shutdown

#[test]
fn bad_configuration_is_refused_in_one_line_naming_the_variable() {
    let kv =
        "@Microsoft.KeyVault(SecretUri=https://kv-clerk.vault.azure.net/secrets/clerk-signing/)";
    let secret_then_bad = format!("{SECRET},whsec_%%%notbase64");
    // An account key is as secret as the signing secret.
    const ACCOUNT_KEY: &str = "QWNjb3VudEtleVNlY3JldA==";
    const ACCOUNT_KEY_ONLY: &str = "AccountKey=QWNjb3VudEtleVNlY3JldA==;";
    const BAD_ENDPOINT: &str = "AccountEndpoint=ftp://acct;AccountKey=QWNjb3VudEtleVNlY3JldA==;";
    // (case, environment, what the one line must name)
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a [&'a str]);
    let cases: Vec<Case> = vec![
        ("no secret", vec![], &["CLERK_WEBHOOK_SIGNING_SECRET"]),
        (
            "empty secret",
            vec![("CLERK_WEBHOOK_SIGNING_SECRET", "")],
            &["CLERK_WEBHOOK_SIGNING_SECRET"],
        ),
        (
            "only separators",
            vec![("CLERK_WEBHOOK_SIGNING_SECRET", " , ")],
            &["CLERK_WEBHOOK_SIGNING_SECRET"],
        ),
        (
            "undecodable secret",
            vec![("CLERK_WEBHOOK_SIGNING_SECRET", "whsec_s3cr3t*value")],
            &["CLERK_WEBHOOK_SIGNING_SECRET"],
        ),
        (
            "a good secret and an undecodable one",
            vec![("CLERK_WEBHOOK_SIGNING_SECRET", &secret_then_bad)],
            &["CLERK_WEBHOOK_SIGNING_SECRET"],
        ),
        (
            "unresolved Key Vault reference",
            vec![("CLERK_WEBHOOK_SIGNING_SECRET", kv)],
            &["CLERK_WEBHOOK_SIGNING_SECRET", "Key Vault"],
        ),
        (
            "unresolved Key Vault reference for Cosmos",
            vec![
                ("CLERK_WEBHOOK_SIGNING_SECRET", SECRET),
                ("COSMOS_ENDPOINT", kv),
            ],
            &["COSMOS_ENDPOINT", "Key Vault"],
        ),
        (
            "in Azure without Cosmos",
            vec![
                ("CLERK_WEBHOOK_SIGNING_SECRET", SECRET),
                ("WEBSITE_INSTANCE_ID", "a1b2c3"),
            ],
            &["COSMOS_ENDPOINT", "WEBSITE_INSTANCE_ID"],
        ),
        (
            "in Azure with Cosmos settings left empty",
            vec![
                ("CLERK_WEBHOOK_SIGNING_SECRET", SECRET),
                ("WEBSITE_INSTANCE_ID", "a1b2c3"),
                ("COSMOS_ENDPOINT", ""),
                ("COSMOS_CONNECTION_STRING", " "),
            ],
            &["COSMOS_ENDPOINT", "WEBSITE_INSTANCE_ID"],
        ),
        (
            "connection string without an endpoint",
            vec![
                ("CLERK_WEBHOOK_SIGNING_SECRET", SECRET),
                ("COSMOS_CONNECTION_STRING", ACCOUNT_KEY_ONLY),
            ],
            &["COSMOS_CONNECTION_STRING"],
        ),
        (
            "connection string with a bad endpoint",
            vec![
                ("CLERK_WEBHOOK_SIGNING_SECRET", SECRET),
                ("COSMOS_CONNECTION_STRING", BAD_ENDPOINT),
            ],
            &["COSMOS_CONNECTION_STRING"],
        ),
        (
            "endpoint and connection string both",
            vec![
                ("CLERK_WEBHOOK_SIGNING_SECRET", SECRET),
                ("COSMOS_ENDPOINT", "https://acct.documents.azure.com:443/"),
                ("COSMOS_CONNECTION_STRING", BAD_ENDPOINT),
            ],
            &["COSMOS_CONNECTION_STRING", "COSMOS_ENDPOINT"],
        ),
        (
            "endpoint without a scheme",
            vec![
                ("CLERK_WEBHOOK_SIGNING_SECRET", SECRET),
                ("COSMOS_ENDPOINT", "acct.documents.azure.com"),
            ],
            &["COSMOS_ENDPOINT"],
        ),
        (
            "unknown log format",
            vec![
                ("CLERK_WEBHOOK_SIGNING_SECRET", SECRET),
                ("LOG_FORMAT", "xml"),
            ],
            &["LOG_FORMAT"],
        ),
    ];
    let numbers = [
        ("TOMBSTONE_TTL_DAYS", ["0", "-3", "thirty", "1e3"]),
        (
            "FUNCTIONS_CUSTOMHANDLER_PORT",
            ["http", "70000", "-1", "7071.5"],
        ),
    ];
    let cases = cases
        .into_iter()
        .chain(numbers.iter().flat_map(|(variable, values)| {
            values.iter().map(move |value| {
                (
                    "bad number",
                    vec![
                        ("CLERK_WEBHOOK_SIGNING_SECRET", SECRET),
                        (*variable, *value),
                    ],
                    std::slice::from_ref(variable),
                )
            })
        }));

    for (case, env, named) in cases {
        let dir = TempDir::new().unwrap();
        let store = dir.path().join("users.sqlite3").display().to_string();
        let port = free_port().to_string();
        let mut full: Vec<(String, String)> = vec![
            ("LOCAL_STORE_PATH".into(), store),
            ("FUNCTIONS_CUSTOMHANDLER_PORT".into(), port),
        ];
        full.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let mut child = handler_command(&full)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let status = wait_bounded(&mut child);
        let output = child.wait_with_output().unwrap();
        let stderr = String::from_utf8(output.stderr).unwrap();
        let case = format!("{case} {env:?}: {stderr}");

        assert!(!status.success(), "{case}");
        assert_eq!(stderr.lines().count(), 1, "{case}");
        for name in named {
            assert!(stderr.contains(name), "{case} does not name {name}");
        }
        for (_, value) in &env {
            if let Some(secret) = value.strip_prefix("whsec_") {
                assert!(!stderr.contains(secret), "{case} echoes the secret");
            }
        }
        for secret in [key_of(SECRET), ACCOUNT_KEY] {
            assert!(!stderr.contains(secret), "{case} echoes a secret");
        }
        assert!(output.stdout.is_empty(), "{case}");
    }
}

#[tokio::test]
async fn empty_cosmos_settings_mean_the_local_store() {
    let app = HandlerProcess::start(&[
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
    assert!(app.users_get("user_1").is_some());
}

#[test]
fn help_and_version_on_every_command() {
    let version = format!(" {}", env!("CARGO_PKG_VERSION"));
    for command in [
        &[][..],
        &["serve"],
        &["users"],
        &["users", "get"],
        &["users", "list"],
        &["organizations"],
        &["organizations", "get"],
        &["organizations", "list"],
        &["memberships"],
        &["memberships", "list"],
        &["reconcile"],
    ] {
        // No configuration at all: asking for help must not need any.
        for (flag, expected) in [("--help", "Usage:"), ("--version", version.as_str())] {
            let output = handler_command(&[])
                .args(command)
                .arg(flag)
                .output()
                .unwrap();
            let stdout = String::from_utf8(output.stdout.clone()).unwrap();
            assert!(output.status.success(), "{command:?} {flag}: {output:?}");
            assert!(stdout.contains(expected), "{command:?} {flag}: {stdout}");
        }
    }
}

#[test]
fn the_host_port_variable_beats_the_port_flag() {
    let host_port = free_port().to_string();
    let flag_port = free_port().to_string();
    let mut handler = Handler::start_on(
        &host_port,
        &[("FUNCTIONS_CUSTOMHANDLER_PORT", &host_port)],
        &["--port", &flag_port],
    );
    assert!(TcpStream::connect(format!("127.0.0.1:{flag_port}")).is_err());
    handler.terminate();
    assert!(handler.wait().status.success());

    // Absent, or empty (which counts as absent): the flag decides.
    for (env, command) in [
        (&[][..], &["serve"][..]),
        (&[("FUNCTIONS_CUSTOMHANDLER_PORT", "")][..], &[][..]),
    ] {
        let port = free_port().to_string();
        let args = [command, &["--port", port.as_str()]].concat();
        let mut handler = Handler::start_on(&port, env, &args);
        handler.terminate();
        assert!(handler.wait().status.success());
    }
}

#[test]
fn delivery_logs_are_json_lines_without_personal_data_or_secrets() {
    let mut handler = Handler::start(&[("LOG_FORMAT", "json")], &[]);
    let personal = [
        "Philippa",
        "Quenby-Marsh",
        "pqm.private@example.org",
        "pqm.alt@example.org",
        "+15557654321",
    ];
    let mut user = clerk_user("user_logged", T0);
    user["first_name"] = json!(personal[0]);
    user["last_name"] = json!(personal[1]);
    user["email_addresses"] = json!([
        {"id": "idn_primary", "email_address": personal[2]},
        {"id": "idn_2", "email_address": personal[3]},
    ]);
    user["primary_phone_number_id"] = json!("idn_phone");
    user["phone_numbers"] = json!([{"id": "idn_phone", "phone_number": personal[4]}]);
    let created = clerk_event("user.created", user.clone());
    let (headers, body) = signed(SECRET, &created);
    let response = parse_response(&raw_post(
        &handler.address,
        &headers,
        &body,
        Framing::ContentLength,
    ));
    assert_eq!((response.status, response.body), applied());

    // Refusals log too: a tampered body, and a payload whose error could quote an email.
    let tampered = serde_json::to_vec_pretty(&created).unwrap();
    let response = parse_response(&raw_post(
        &handler.address,
        &headers,
        &tampered,
        Framing::ContentLength,
    ));
    assert_eq!(response.status, 401);
    user["email_addresses"] = json!(personal[2]);
    let (bad_headers, bad_body) = signed(SECRET, &clerk_event("user.updated", user));
    let response = parse_response(&raw_post(
        &handler.address,
        &bad_headers,
        &bad_body,
        Framing::ContentLength,
    ));
    assert_eq!(response.status, 400);

    handler.terminate();
    let output = handler.wait();
    assert!(output.status.success());
    let stdout = String::from_utf8(output.stdout).unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();

    // Information on stdout, warnings on stderr (where the Functions host gives them their
    // level): every line of both is one JSON object with a level and an event name.
    let parse = |text: &str| -> Vec<Value> {
        text.lines()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
            .collect()
    };
    let (lines, warnings) = (parse(&stdout), parse(&stderr));
    for line in lines.iter().chain(&warnings) {
        assert!(
            line["event"].is_string() && line["level"].is_string(),
            "{line}"
        );
    }
    let line = lines
        .iter()
        .find(|line| line["event_id"] == header(&headers, "svix-id"))
        .unwrap_or_else(|| panic!("no line for the delivery in {stdout}"));
    assert_eq!(line["event"], "delivery");
    assert_eq!(line["level"], "INFO");
    assert_eq!(line["event_type"], "user.created");
    assert_eq!(line["kind"], "user");
    assert_eq!(line["item_id"], "user_logged");
    assert_eq!(line["user_id"], "user_logged");
    assert_eq!(line["outcome"], "applied");
    assert_eq!(line["reason"], Value::Null);
    assert_eq!(line["status"], 200);
    assert!(line["latency_ms"].is_f64(), "{line}");
    assert_eq!(line["round_trips"], 2);
    let refused: Vec<_> = warnings
        .iter()
        .filter(|l| l["event"] == "delivery" && l["outcome"] == "refused")
        .map(|l| {
            (
                l["level"].as_str(),
                l["status"].as_u64(),
                l["reason"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        refused,
        [
            (Some("WARN"), Some(401), Some("unauthorized")),
            (Some("WARN"), Some(400), Some("bad_request"))
        ],
        "{stderr}"
    );

    for leak in personal
        .iter()
        .chain(&[key_of(SECRET), "Lovelace", "ada@example.com"])
    {
        assert!(!stdout.contains(leak), "stdout has {leak}: {stdout}");
        assert!(!stderr.contains(leak), "stderr has {leak}: {stderr}");
    }
}

#[test]
fn sigterm_lets_the_delivery_in_flight_finish() {
    let mut handler = Handler::start(&[], &[]);
    let (headers, body) = signed(SECRET, &user_changed("user.created", "user_inflight", T0));
    let (first_half, second_half) = body.split_at(body.len() / 2);

    let mut stream = TcpStream::connect(&handler.address).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let head = request_head(
        &headers,
        &format!("content-length: {}\r\nexpect: 100-continue\r\n", body.len()),
    );
    stream.write_all(&head).unwrap();
    // hyper says 100 Continue when the handler starts reading the body: the delivery is now in
    // flight inside the handler, not merely queued in the kernel.
    let continue_line = b"HTTP/1.1 100 Continue\r\n\r\n";
    let mut received = vec![0; continue_line.len()];
    stream.read_exact(&mut received).unwrap();
    assert_eq!(received, continue_line);
    stream.write_all(first_half).unwrap();

    handler.terminate();
    // The listener closes once shutdown has begun; only then does the rest of the body arrive.
    wait_until_refused(&handler.address);
    stream.write_all(second_half).unwrap();
    let response = parse_response(&read_until_closed(&mut stream));
    assert_eq!((response.status, response.body), applied());

    let output = handler.wait();
    assert!(output.status.success(), "{output:?}");
    assert!(handler.users_get("user_inflight").is_some());
}

#[test]
fn a_locked_store_answers_503_and_the_retry_applies() {
    let handler = Handler::start(&[], &[]);
    // Another writer holds the store's write lock: the handler's write waits out its busy
    // timeout and gives up. (Reads go on: the store runs in WAL mode.)
    let locker = rusqlite::Connection::open(&handler.store_path).unwrap();
    locker.execute_batch("BEGIN IMMEDIATE").unwrap();

    let (headers, body) = signed(SECRET, &user_changed("user.created", "user_1", T0));
    let delivering = {
        let (address, headers, body) = (handler.address.clone(), headers.clone(), body.clone());
        std::thread::spawn(move || {
            parse_response(&raw_post(&address, &headers, &body, Framing::ContentLength))
        })
    };
    // Readiness never waits on the store.
    assert_eq!(get_root(&handler.address).unwrap().status, 200);
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

    // Released (`users get` opens the store for writing too, so it waits for this): nothing
    // of the refused delivery was written.
    locker.execute_batch("ROLLBACK").unwrap();
    assert_eq!(handler.users_get("user_1"), None);
    // Svix's retry: the same message, signed again.
    let retry = svix_headers(SECRET, header(&headers, "svix-id"), now(), &body);
    let response = parse_response(&raw_post(
        &handler.address,
        &retry,
        &body,
        Framing::ContentLength,
    ));
    assert_eq!((response.status, response.body), applied());
    assert!(handler.users_get("user_1").is_some());
}

#[test]
fn users_commands_never_create_a_store_and_tell_store_errors_from_not_found() {
    let dir = tempfile::TempDir::new().unwrap();
    let missing = dir.path().join("typo.sqlite3");
    let env = [("LOCAL_STORE_PATH".to_owned(), missing.display().to_string())];
    for args in [&["users", "get", "user_1"][..], &["users", "list"][..]] {
        let output = handler_command(&env).args(args).output().unwrap();
        assert_eq!(output.status.code(), Some(3), "{args:?}");
        assert!(output.stdout.is_empty(), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("no local store"), "{args:?}: {stderr}");
    }
    assert!(!missing.exists(), "a users command created the store");
}

#[tokio::test]
async fn users_get_of_an_impossible_id_is_not_found() {
    let handler = HandlerProcess::start(&[]).await;
    for id in ["a/b", "", "user?x"] {
        assert_eq!(handler.users_get(id), None, "{id:?}");
    }
}
