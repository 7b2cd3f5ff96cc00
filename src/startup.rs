//! Builds the application from settings and serves it until Ctrl-C or SIGTERM, letting
//! in-flight deliveries finish.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::net::TcpListener;

use crate::clerk::api::ClerkApi;
use crate::config::{ServeSettings, Settings};
use crate::http::{self, AppState, NO_SESSION_SETTINGS, SyncMe};
use crate::session::SessionVerifier;
use crate::store::{self, StoreSettings};

pub async fn serve(settings: Settings, serve: ServeSettings) -> anyhow::Result<()> {
    let store = open_store(&settings.store)?;
    let clerk = settings
        .clerk_api
        .as_ref()
        .map(ClerkApi::new)
        .transpose()
        .context("cannot set up the Clerk Backend API client")?
        .map(Arc::new);
    let sync_me = match (&serve.session, &clerk) {
        (Some(session), Some(clerk)) => Ok(SyncMe::new(
            SessionVerifier::new(session),
            Arc::clone(clerk),
        )),
        (None, _) => Err(NO_SESSION_SETTINGS.to_owned()),
        (Some(_), None) => {
            Err("CLERK_SECRET_KEY is not set, and new users are fetched from Clerk".to_owned())
        }
    };
    if let Err(reason) = &sync_me {
        tracing::info!(
            event = "syncme_not_configured",
            reason,
            "SyncMe is not configured: /api/me/sync answers 404"
        );
    }
    let state = AppState::new(serve.verifier, store, settings.tombstone_ttl_seconds, clerk)
        .with_sync_me(sync_me);
    let state = Arc::new(state);
    let address = SocketAddr::new(serve.bind, serve.port);
    let listener = TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen on {address}"))?;
    // The bound address: with port 0 the system chose it, and this line is how to find it.
    let address = listener.local_addr().unwrap_or(address);
    tracing::info!(event = "listening", %address, path = http::WEBHOOK_PATH, version = env!("CARGO_PKG_VERSION"));
    axum::serve(listener, http::router(state))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("server failed")?;
    tracing::info!(event = "stopped");
    Ok(())
}

/// Opens the configured store, saying once when it is the local development store.
pub fn open_store(settings: &StoreSettings) -> anyhow::Result<Arc<dyn store::Store>> {
    if let StoreSettings::Local { path } = settings {
        tracing::warn!(
            event = "local_store",
            path = %std::path::absolute(path).unwrap_or_else(|_| path.clone()).display(),
            "no Cosmos DB setting (COSMOS_ENDPOINT or COSMOS_CONNECTION_STRING): keeping users in \
             the embedded local store, for development only"
        );
    }
    store::open(settings).context("cannot open the store")
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(event = "signal_unavailable", signal = "Ctrl-C", error = %e);
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::error!(event = "signal_unavailable", signal = "SIGTERM", error = %e);
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!(
        event = "shutting_down",
        "shutting down: finishing deliveries in flight"
    );
}
