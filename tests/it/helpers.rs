//! Shared test helpers: Clerk event fixtures, Svix signing, and `spawn_app`, the application
//! built by `startup::build` from an environment, as `main` builds it, and served on the test's
//! runtime. The built binary, for what needs a process, is `handler_process`.

use std::net::SocketAddr;
use std::process::Output;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use futures::TryStreamExt;
use handler::clerk::ClerkEvent;
use handler::commands::items::{self, ItemsError};
use handler::config::{Env, ServeSettings, Settings};
use handler::startup::{self, Application};
use handler::store::local::LocalStore;
use handler::store::{ListFilter, Store};
use handler::sync::apply::{self, ApplyError, Options, Report};
use handler::sync::decide::Change;
use handler::sync::document::Source;
use handler::sync::document::{self, Document};
use handler::sync::item::{ItemId, Kind};
use serde_json::Value;
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use crate::fixtures::{
    OTHER_SECRET, SECRET, clerk_event, clerk_membership, clerk_organization, clerk_user, object,
    user_changed, user_deleted,
};
pub use crate::handler_process::{HandlerProcess, handler_command};

pub const TTL_SECONDS: u32 = 30 * 86_400;

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Expands to a module `$name` with one test per case: `$module::$case(store)` on a store from
/// `$make` (an async expression giving `(Arc<dyn Store>, guard)`; the guard keeps the store's
/// resources alive). How every suite that runs on both stores runs.
macro_rules! cases_on_store {
    ($name:ident, $make:expr, $($module:ident)::+, [$($case:ident),* $(,)?]) => {
        mod $name {
            use $($module)::+ as suite;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let (store, _guard) = $make.await;
                    suite::$case(store).await;
                }
            )*
        }
    };
}
pub(crate) use cases_on_store;

/// Svix headers for `body`, signed by the svix crate.
pub fn svix_headers(
    secret: &str,
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> Vec<(String, String)> {
    let signature = svix::webhooks::Webhook::new(secret)
        .unwrap()
        .sign(msg_id, timestamp, body)
        .unwrap();
    vec![
        ("svix-id".into(), msg_id.into()),
        ("svix-timestamp".into(), timestamp.to_string()),
        ("svix-signature".into(), signature),
    ]
}

/// A fresh message id, as Svix gives each message.
pub fn msg_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!(
        "msg_test{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// The user document stored for `id`, if any and not deleted.
pub async fn stored_user(store: &dyn Store, id: &str) -> Option<Document> {
    let (stored, _) = store.read(&ItemId::parse(id).unwrap()).await.unwrap();
    stored
        .map(|s| s.document)
        .filter(|d| document::state(d).is_live(Kind::User))
}

/// The item stored for `id` as JSON, tombstones included; `Value::Null` when absent.
pub async fn stored_item(store: &dyn Store, id: &str) -> Value {
    let (stored, _) = store.read(&ItemId::parse(id).unwrap()).await.unwrap();
    stored.map_or(Value::Null, |s| Value::Object(s.document))
}

/// Parses a Clerk event and applies it as a webhook delivery of `msg_id` would, without the
/// resurrection guard.
pub async fn apply_event(
    store: &dyn Store,
    msg_id: &str,
    event: &Value,
) -> Result<Report, ApplyError> {
    let (_, parsed) = ClerkEvent::parse(event.to_string().as_bytes()).unwrap();
    let change = Change::from_event(&parsed).expect("an event the handler handles");
    let options = Options {
        source: Source::Webhook(msg_id),
        tombstone_ttl_seconds: TTL_SECONDS,
        guard: None,
    };
    apply::apply(store, change, options).await
}

/// A fresh local store in its own directory (kept alive by the returned `TempDir`).
pub fn local_store() -> (Arc<dyn Store>, TempDir) {
    let dir = TempDir::new().unwrap();
    let store = LocalStore::open(&dir.path().join("users.sqlite3")).unwrap();
    (Arc::new(store), dir)
}

// ---------------------------------------------------------------------------------------------
// Deliveries and what they are answered

/// Request headers as name and value, in the order sent.
pub type Headers = Vec<(String, String)>;

/// `updated_at` (epoch ms) of a user's first version in the webhook tests.
pub const T0: i64 = 1_700_000_000_000;

/// The exact body of `event` and Svix headers signing it with `secret`, now.
pub fn signed(secret: &str, event: &Value) -> (Headers, Vec<u8>) {
    let body = serde_json::to_vec(event).unwrap();
    (svix_headers(secret, &msg_id(), now(), &body), body)
}

pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> &'a str {
    &headers.iter().find(|(n, _)| n == name).unwrap().1
}

/// The base64 key inside a `whsec_` secret: it must not leak either.
pub fn key_of(secret: &str) -> &str {
    secret.strip_prefix("whsec_").unwrap()
}

/// `user.updated` for `id` at `updated_at`, carrying `first_name` so that versions differ.
pub fn version(id: &str, updated_at: i64, first_name: &str) -> Value {
    let mut user = clerk_user(id, updated_at);
    user["first_name"] = serde_json::json!(first_name);
    clerk_event("user.updated", user)
}

pub fn applied() -> (u16, Value) {
    (200, serde_json::json!({"status": "applied"}))
}

pub fn skipped(reason: &str) -> (u16, Value) {
    (
        200,
        serde_json::json!({"status": "skipped", "reason": reason}),
    )
}

/// A `{"error": ...}` body that says something and quotes no secret.
pub fn assert_error_body(case: &str, body: &Value) {
    let message = body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("{case}: no {{\"error\": ...}} body: {body}"));
    assert!(!message.is_empty(), "{case}");
    for secret in [SECRET, OTHER_SECRET] {
        assert!(!message.contains(key_of(secret)), "{case}: {message}");
    }
}

// ---------------------------------------------------------------------------------------------
// The application in-process

/// The application as `main` builds it (`Settings::load`, `ServeSettings::load`,
/// `startup::build`) from an environment of the test signing secret, a fresh local store, port 0
/// and `extra`, served on the test's runtime until dropped.
pub async fn spawn_app(extra: &[(&str, &str)]) -> TestApp {
    let (env, dir) = app_env(extra);
    let (settings, serve) = load(&env);
    let application = startup::build(settings, serve)
        .await
        .expect("the application builds");
    TestApp::serve(application, env, dir)
}

/// `spawn_app` over `store`, in place of the local store the environment names: for stores no
/// environment can describe, such as Cosmos over the SDK's in-memory emulator.
pub async fn spawn_app_on(store: Arc<dyn Store>, extra: &[(&str, &str)]) -> TestApp {
    let (env, dir) = app_env(extra);
    let (settings, serve) = load(&env);
    let application = startup::build_with_store(settings, serve, store)
        .await
        .expect("the application builds");
    TestApp::serve(application, env, dir)
}

fn app_env(extra: &[(&str, &str)]) -> (Vec<(String, String)>, TempDir) {
    let dir = TempDir::new().unwrap();
    let store_path = dir.path().join("users.sqlite3");
    let mut env: Vec<(String, String)> = vec![
        ("CLERK_WEBHOOK_SIGNING_SECRET".into(), SECRET.into()),
        ("LOCAL_STORE_PATH".into(), store_path.display().to_string()),
        ("FUNCTIONS_CUSTOMHANDLER_PORT".into(), "0".into()),
    ];
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    (env, dir)
}

/// The settings `main` loads from `env` to serve, with no command-line flags.
fn load(env: &[(String, String)]) -> (Settings, ServeSettings) {
    let env: Env = env.iter().cloned().collect();
    let settings = Settings::load(&env).unwrap_or_else(|e| panic!("settings: {e}"));
    let serve = ServeSettings::load(&env, None, None).unwrap_or_else(|e| panic!("settings: {e}"));
    (settings, serve)
}

/// A running application: its address, its store (to read back what it wrote), the environment
/// it was built from (to run `handler` commands on the same store).
pub struct TestApp {
    pub address: SocketAddr,
    /// `http://127.0.0.1:<port>`
    pub base_url: String,
    pub store: Arc<dyn Store>,
    env: Vec<(String, String)>,
    client: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    server: JoinHandle<()>,
    _dir: TempDir,
}

impl TestApp {
    fn serve(application: Application, env: Vec<(String, String)>, dir: TempDir) -> Self {
        let address = application.address();
        let store = application.store();
        let (shutdown, shutdown_requested) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let shutdown = async {
                let _ = shutdown_requested.await;
            };
            application
                .run_until(shutdown)
                .await
                .expect("the application serves");
        });
        Self {
            address,
            base_url: format!("http://{address}"),
            store,
            env,
            client: reqwest::Client::new(),
            shutdown: Some(shutdown),
            server,
            _dir: dir,
        }
    }

    /// Begins a graceful shutdown, as SIGTERM does for the binary: no new connections, the
    /// requests in flight finish.
    pub fn shut_down(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }

    /// Waits (bounded) until the server has finished after `shut_down`.
    pub async fn stopped(&mut self) {
        tokio::time::timeout(crate::raw_http::PATIENCE, &mut self.server)
            .await
            .expect("the server stops")
            .expect("the server task ends without a panic");
    }

    /// Signs and posts `event` with a fresh message id.
    pub async fn deliver(&self, event: &Value) -> (u16, Value) {
        self.deliver_as(&msg_id(), event).await
    }

    pub async fn deliver_as(&self, msg_id: &str, event: &Value) -> (u16, Value) {
        let body = serde_json::to_vec(event).unwrap();
        let headers = svix_headers(SECRET, msg_id, now(), &body);
        self.post(&headers, body).await
    }

    /// Posts as the host forwards it: the original bytes and headers to `/api/ClerkWebhook`.
    pub async fn post(&self, headers: &[(String, String)], body: Vec<u8>) -> (u16, Value) {
        let mut request = self
            .client
            .post(format!("{}{}", self.base_url, handler::http::WEBHOOK_PATH))
            .header("content-type", "application/json")
            .body(body);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let body = response.json().await.unwrap_or(Value::Null);
        (status, body)
    }

    /// The live document of `kind` stored under `id`, as `handler <kind>s get` prints it; `None`
    /// when missing, deleted, of another kind, or an id nothing can have.
    pub async fn get(&self, kind: Kind, id: &str) -> Option<Value> {
        let mut out = Vec::new();
        match items::get(self.store.as_ref(), kind, id, &mut out).await {
            Ok(()) => Some(serde_json::from_slice(&out).unwrap()),
            Err(ItemsError::NotFound { .. }) => None,
            Err(other) => panic!("cannot read {kind} {id}: {other}"),
        }
    }

    pub async fn users_get(&self, id: &str) -> Option<Value> {
        self.get(Kind::User, id).await
    }

    /// The live documents `filter` selects, as the store streams them.
    pub async fn list(&self, filter: ListFilter) -> Vec<Value> {
        self.store
            .list(filter)
            .map_ok(Value::Object)
            .try_collect()
            .await
            .unwrap()
    }

    pub async fn users_list(&self) -> Vec<Value> {
        self.list(ListFilter::all(Kind::User)).await
    }

    /// The environment the application was built from.
    pub fn env(&self) -> &[(String, String)] {
        &self.env
    }

    pub fn env_value(&self, name: &str) -> Option<String> {
        crate::handler_process::env_value(&self.env, name)
    }

    /// `handler <args>` with the application's environment: on its store, while it serves.
    pub fn command(&self, args: &[&str]) -> Output {
        handler_command(&self.env).args(args).output().unwrap()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.server.abort();
    }
}
