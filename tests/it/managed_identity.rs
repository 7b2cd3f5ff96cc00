//! The managed-identity path, against a test double of the App Service identity endpoint:
//! the handler asks for the Cosmos DB scope, names a user-assigned identity by its client id,
//! caches the token, signs Cosmos requests with it, and answers 503 while the endpoint is down.
//!
//! `azure_identity` reads `IDENTITY_ENDPOINT` and `IDENTITY_HEADER` from the process
//! environment only, so every test here runs the code under test in a child process started
//! with that environment: this test binary re-run on one `#[ignore]`d child test (for the
//! application in-process over the SDK's in-memory emulator), or the built `handler` binary, the
//! way the Functions host (and the acceptance check) runs it, where the test changes what the
//! identity endpoint answers while the handler runs.

use std::process::Command;
use std::sync::Arc;

use tokio::net::TcpSocket;

use crate::cosmos_emulator::Emulator;
use crate::helpers::{spawn_app_on, stored_user, user_changed, user_deleted};
use crate::identity_endpoint_double::{
    ACCESS_TOKEN, IDENTITY_HEADER, IdentityEndpointDouble, TokenRequest,
};

/// The Cosmos DB data-plane resource, as the token request names it.
const COSMOS_RESOURCE: &str = "https://cosmos.azure.com";
const CLIENT_ID: &str = "11111111-2222-3333-4444-555555555555";
/// Set in a child process to the client id it expects (empty for system-assigned).
const CHILD_MARKER: &str = "CLERK_COSMOS_TEST_CHILD_EXPECTS_CLIENT_ID";

/// The environment App Service gives an instance with a managed identity.
fn app_service_env(double: &IdentityEndpointDouble) -> Vec<(&'static str, String)> {
    vec![
        ("IDENTITY_ENDPOINT", double.endpoint()),
        ("IDENTITY_HEADER", IDENTITY_HEADER.to_owned()),
    ]
}

fn assert_asked_for_cosmos(request: &TokenRequest, client_id: Option<&str>) {
    assert_eq!(
        request.query.get("resource").map(String::as_str),
        Some(COSMOS_RESOURCE)
    );
    assert_eq!(
        request.query.get("api-version").map(String::as_str),
        Some("2019-08-01")
    );
    assert_eq!(
        request.query.get("client_id").map(String::as_str),
        client_id
    );
    assert_eq!(request.identity_header.as_deref(), Some(IDENTITY_HEADER));
}

/// Runs `child` (a test of this module) in a fresh copy of this test binary with `env` added.
async fn run_child(child: &'static str, env: Vec<(&'static str, String)>, client_id: Option<&str>) {
    let executable = std::env::current_exe().unwrap();
    let expects = client_id.unwrap_or_default().to_owned();
    let output = tokio::task::spawn_blocking(move || {
        let mut command = Command::new(executable);
        command
            .args([
                child,
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env_remove("AZURE_CLIENT_ID")
            .envs(env)
            .env(CHILD_MARKER, &expects);
        if !expects.is_empty() {
            command.env("AZURE_CLIENT_ID", &expects);
        }
        command.output().unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "child {child} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn a_user_assigned_identity_signs_cosmos_requests_with_one_cached_token() {
    let double = IdentityEndpointDouble::start(true).await;
    run_child(CHILD, app_service_env(&double), Some(CLIENT_ID)).await;

    let requests = double.requests();
    assert_eq!(
        requests.len(),
        1,
        "one token, cached for every request: {requests:?}"
    );
    assert!(requests[0].issued);
    assert_asked_for_cosmos(&requests[0], Some(CLIENT_ID));
}

#[tokio::test]
async fn without_a_client_id_the_system_assigned_identity_is_used() {
    let double = IdentityEndpointDouble::start(true).await;
    run_child(CHILD, app_service_env(&double), None).await;

    let requests = double.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_asked_for_cosmos(&requests[0], None);
}

const CHILD: &str = "managed_identity::child_delivers_with_the_managed_identity";

/// The child half of the two tests above: the app in-process over the in-memory emulator, its
/// Cosmos store configured by `COSMOS_ENDPOINT` (and `AZURE_CLIENT_ID`), credentials chosen from
/// this process's environment. Outside such a child process it has nothing to check.
#[tokio::test]
#[ignore = "runs in a child process started by the managed identity tests"]
async fn child_delivers_with_the_managed_identity() {
    let Ok(client_id) = std::env::var(CHILD_MARKER) else {
        return;
    };
    let client_id = Some(client_id.as_str()).filter(|id| !id.is_empty());
    let emulator = Emulator::new();
    let store = emulator
        .store_with(&Emulator::identity_settings(client_id))
        .await;
    let app = spawn_app_on(Arc::new(store), &[]).await;

    for (event, expected) in [
        (user_changed("user.created", "user_mi", 1), "applied"),
        (user_changed("user.updated", "user_mi", 2), "applied"),
        (user_changed("user.updated", "user_mi", 2), "skipped"),
        (user_deleted("user_mi"), "applied"),
    ] {
        let (status, body) = app.deliver(&event).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["status"], expected);
    }
    assert_eq!(stored_user(app.store.as_ref(), "user_mi").await, None);

    let authorizations = emulator.authorizations();
    assert!(authorizations.len() > 8, "{authorizations:?}");
    for authorization in authorizations {
        let decoded = percent_decode(&authorization);
        assert_eq!(decoded, format!("type=aad&ver=1.0&sig={ACCESS_TOKEN}"));
    }
}

/// The `Authorization` header is URL-encoded on the wire.
fn percent_decode(value: &str) -> String {
    let mut bytes = Vec::with_capacity(value.len());
    let mut rest = value.as_bytes();
    while let Some((&byte, tail)) = rest.split_first() {
        match (byte, tail) {
            (b'%', [high, low, tail @ ..]) => {
                let hex = std::str::from_utf8(&[*high, *low]).unwrap().to_owned();
                bytes.push(u8::from_str_radix(&hex, 16).unwrap());
                rest = tail;
            }
            _ => {
                bytes.push(byte);
                rest = tail;
            }
        }
    }
    String::from_utf8(bytes).unwrap()
}

/// The built binary, as the Functions host runs it in Azure, with the identity endpoint down
/// and then back while the account stays unreachable: `GET /` answers at once throughout,
/// deliveries get 503 with `Retry-After` (never a 500, never a crash), and once the endpoint is
/// back the one token it hands out is cached across deliveries.
#[tokio::test]
async fn the_binary_answers_503_while_the_identity_endpoint_is_down() {
    use crate::helpers::{HandlerProcess, SECRET, msg_id, now, svix_headers};

    let double = IdentityEndpointDouble::start(false).await;
    // A port bound and never listened on: connecting is refused, and no one else can take it.
    let account_port = TcpSocket::new_v4().unwrap();
    account_port.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let unreachable_account = format!("https://{}/", account_port.local_addr().unwrap());
    let mut env = app_service_env(&double);
    env.push(("COSMOS_ENDPOINT", unreachable_account));
    env.push(("AZURE_CLIENT_ID", CLIENT_ID.to_owned()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // Starting waits for `GET /` to answer: readiness does not wait on Cosmos or the token.
    let handler = HandlerProcess::start(&env).await;
    let client = reqwest::Client::new();
    let deliver = || async {
        let body = serde_json::to_vec(&user_changed("user.created", "user_down", 1)).unwrap();
        let mut request = client
            .post(format!("{}/api/ClerkWebhook", handler.base_url))
            .header("content-type", "application/json")
            .body(body.clone());
        for (name, value) in svix_headers(SECRET, &msg_id(), now(), &body) {
            request = request.header(name, value);
        }
        let response = request.send().await.unwrap();
        let retry_after = response.headers().get("retry-after").cloned();
        (response.status().as_u16(), retry_after)
    };

    let (status, retry_after) = deliver().await;
    assert_eq!(status, 503);
    assert!(retry_after.is_some(), "503 carries Retry-After");
    let ready = client
        .get(format!("{}/", handler.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200, "still up after a failed token request");
    let requests = double.requests();
    assert!(
        !requests.is_empty(),
        "the handler asked the identity endpoint"
    );
    for request in &requests {
        assert!(!request.issued);
        assert_asked_for_cosmos(request, Some(CLIENT_ID));
    }

    double.set_up(true);
    // Redelivered until the endpoint has handed out a token (a connection attempt started
    // while it was down may still be backing off), then twice more.
    let issued = || double.requests().iter().filter(|r| r.issued).count();
    for _ in 0..10 {
        if issued() > 0 {
            break;
        }
        assert_eq!(deliver().await.0, 503, "the account is still unreachable");
    }
    assert_eq!(issued(), 1);
    for _ in 0..2 {
        assert_eq!(deliver().await.0, 503, "the account is still unreachable");
    }
    assert_eq!(issued(), 1, "the token is cached");
}
