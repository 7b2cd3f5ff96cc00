//! Builds the application from settings, binding its listener once, and serves it until told to
//! stop (Ctrl-C or SIGTERM for the binary), letting in-flight deliveries finish. `main` and the
//! tests build it with the same `build`.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::net::TcpListener;

use crate::clerk::api::ClerkApi;
use crate::config::{ServeSettings, Settings};
use crate::http::{self, AppState, NO_SESSION_SETTINGS, SyncMe};
use crate::session::SessionVerifier;
use crate::store::{self, Store, StoreSettings};

/// The application, built and listening: connections queue from `build` on and are served once
/// `run_until` is called.
pub struct Application {
    listener: TcpListener,
    address: SocketAddr,
    state: Arc<AppState>,
}

impl Application {
    /// The address bound, with the port the system chose when port 0 was asked for.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The store the application writes to.
    pub fn store(&self) -> Arc<dyn Store> {
        Arc::clone(&self.state.store)
    }

    /// Serves until `shutdown` completes, then stops accepting and lets the requests in flight
    /// finish.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        tracing::info!(
            event = "listening",
            address = %self.address,
            path = http::WEBHOOK_PATH,
            version = env!("CARGO_PKG_VERSION"),
        );
        axum::serve(self.listener, http::router(self.state))
            .with_graceful_shutdown(shutdown)
            .await
            .context("server failed")?;
        tracing::info!(event = "stopped");
        Ok(())
    }
}

/// What `handler serve` does: build, then serve until Ctrl-C or SIGTERM.
pub async fn serve(settings: Settings, serve: ServeSettings) -> anyhow::Result<()> {
    build(settings, serve)
        .await?
        .run_until(shutdown_signal())
        .await
}

/// Opens the store, sets up the Clerk client and `SyncMe`, and binds the listener.
pub async fn build(settings: Settings, serve: ServeSettings) -> anyhow::Result<Application> {
    let store = open_store(&settings.store)?;
    build_with_store(settings, serve, store).await
}

/// `build` over a store already open, in place of the one `settings.store` names: how the tests
/// put a Cosmos store over the SDK's in-memory emulator under the application.
pub async fn build_with_store(
    settings: Settings,
    serve: ServeSettings,
    store: Arc<dyn Store>,
) -> anyhow::Result<Application> {
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
    let requested = SocketAddr::new(serve.bind, serve.port);
    let listener = TcpListener::bind(requested)
        .await
        .with_context(|| format!("cannot listen on {requested}"))?;
    let address = listener
        .local_addr()
        .with_context(|| format!("cannot listen on {requested}"))?;
    Ok(Application {
        listener,
        address,
        state: Arc::new(state),
    })
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

/// Ctrl-C, or SIGTERM (how the Functions host stops a custom handler).
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
