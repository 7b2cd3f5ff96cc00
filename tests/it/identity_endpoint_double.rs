//! A test double of the App Service managed identity endpoint, speaking its documented protocol
//! (<https://learn.microsoft.com/azure/app-service/overview-managed-identity#rest-endpoint-reference>):
//! `GET $IDENTITY_ENDPOINT?resource=...&api-version=2019-08-01[&client_id=...]` with the
//! `X-IDENTITY-HEADER: $IDENTITY_HEADER` secret, answered with `access_token` and `expires_on`
//! (epoch seconds, as a string). It records every request and can be switched down.

use crate::loopback::LoopbackServer;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

/// The secret App Service puts in `IDENTITY_HEADER`.
pub const IDENTITY_HEADER: &str = "identity-header-secret";
/// The token the double hands out.
pub const ACCESS_TOKEN: &str = "token-from-the-identity-endpoint-double";
const TOKEN_PATH: &str = "/msi/token";

/// One token request as the double received it.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    pub query: HashMap<String, String>,
    pub identity_header: Option<String>,
    /// Whether a token was handed out (the double was up and the secret matched).
    pub issued: bool,
}

#[derive(Default)]
struct Double {
    up: AtomicBool,
    requests: Mutex<Vec<TokenRequest>>,
}

pub struct IdentityEndpointDouble {
    server: LoopbackServer,
    double: Arc<Double>,
}

impl IdentityEndpointDouble {
    /// Starts on a free port of 127.0.0.1, up or down.
    pub async fn start(up: bool) -> Self {
        let double = Arc::new(Double::default());
        double.up.store(up, Ordering::SeqCst);
        let router = Router::new()
            .route(TOKEN_PATH, get(token))
            .with_state(Arc::clone(&double));
        Self {
            server: LoopbackServer::start(router).await,
            double,
        }
    }

    /// The value of `IDENTITY_ENDPOINT` that points at this double.
    pub fn endpoint(&self) -> String {
        format!("http://{}{TOKEN_PATH}", self.server.address)
    }

    pub fn set_up(&self, up: bool) {
        self.double.up.store(up, Ordering::SeqCst);
    }

    pub fn requests(&self) -> Vec<TokenRequest> {
        self.double.requests.lock().unwrap().clone()
    }
}

async fn token(
    State(double): State<Arc<Double>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let identity_header = headers
        .get("x-identity-header")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let up = double.up.load(Ordering::SeqCst);
    let authorized = identity_header.as_deref() == Some(IDENTITY_HEADER);
    let supported = query.get("api-version").map(String::as_str) == Some("2019-08-01");
    let resource = query.get("resource").cloned();
    let issued = up && authorized && supported && resource.is_some();
    double.requests.lock().unwrap().push(TokenRequest {
        query,
        identity_header,
        issued,
    });
    if !up {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"error": "temporarily_unavailable"})),
        )
            .into_response();
    }
    if !issued {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "invalid_request"})),
        )
            .into_response();
    }
    let expires_on = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    Json(json!({
        "access_token": ACCESS_TOKEN,
        "expires_on": expires_on.to_string(),
        "resource": resource,
        "token_type": "Bearer",
    }))
    .into_response()
}
