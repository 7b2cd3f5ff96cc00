//! Microsoft's in-memory Cosmos DB emulator (from the SDK's own driver crate) under a real
//! `CosmosStore`: the SDK's whole pipeline runs (signing, routing, retries, session tokens,
//! diagnostics); only the socket is replaced. Faults are injected by the SDK's own
//! fault-injection transport, between the pipeline and the emulator.

use std::sync::{Arc, Mutex};

use azure_core::credentials::Secret;
use azure_core::http::{Method, Request, Url};
use azure_data_cosmos::{
    AccountEndpoint, AccountReference, ContainerClient, CosmosClient, CosmosRuntimeBuilder,
    RoutingStrategy,
};
use azure_data_cosmos_driver::fault_injection::FaultInjectionRule;
use azure_data_cosmos_driver::in_memory_emulator::{
    ConsistencyLevel, InMemoryEmulatorHttpClient, RequestObserver, VirtualAccountConfig,
    VirtualRegion,
};
use handler::config::{Env, Settings};
use handler::store::cosmos::CosmosStore;
use handler::store::{CosmosSettings, StoreSettings};
use serde_json::Value;

/// The emulator answers for whatever host its regions name; nothing resolves it in DNS.
pub const ENDPOINT: &str = "https://eastus.emulator.local";
/// The emulator does not check signatures; the key only has to be base64.
const KEY: &str = "dGVzdGtleQ==";
pub const DATABASE: &str = "clerk";
pub const CONTAINER: &str = "users";

/// One emulated account holding the `clerk/users` container, partitioned by `/id` as in `infra/`.
pub struct Emulator {
    client: Arc<InMemoryEmulatorHttpClient>,
    requests: Arc<RequestLog>,
}

impl Emulator {
    pub fn new() -> Self {
        let requests = Arc::new(RequestLog::default());
        let config = VirtualAccountConfig::new(vec![VirtualRegion::new(
            "East US",
            Url::parse(ENDPOINT).expect("a valid URL"),
        )])
        .expect("a valid emulator account")
        .with_consistency(ConsistencyLevel::Session);
        let client = InMemoryEmulatorHttpClient::new(config)
            .with_request_observer(Arc::clone(&requests) as Arc<dyn RequestObserver>);
        let store = client.store();
        store.create_database(DATABASE);
        store.create_container(
            DATABASE,
            CONTAINER,
            serde_json::from_value(serde_json::json!({
                "paths": ["/id"], "kind": "Hash", "version": 2
            }))
            .expect("a partition key definition"),
        );
        Self {
            client: Arc::new(client),
            requests,
        }
    }

    /// Settings as the binary loads them from `COSMOS_CONNECTION_STRING` (key auth).
    pub fn key_settings() -> CosmosSettings {
        settings_from([(
            "COSMOS_CONNECTION_STRING",
            format!("AccountEndpoint={ENDPOINT};AccountKey={KEY};"),
        )])
    }

    /// Settings as the binary loads them from `COSMOS_ENDPOINT` (Entra ID tokens),
    /// `AZURE_CLIENT_ID` when given, and this process's `IDENTITY_ENDPOINT` (which the
    /// credential itself also reads from the process).
    pub fn identity_settings(client_id: Option<&str>) -> CosmosSettings {
        let client_id = client_id.map(|id| ("AZURE_CLIENT_ID", id.to_owned()));
        let identity_endpoint = std::env::var("IDENTITY_ENDPOINT")
            .ok()
            .map(|endpoint| ("IDENTITY_ENDPOINT", endpoint));
        settings_from(
            [("COSMOS_ENDPOINT", ENDPOINT.to_owned())]
                .into_iter()
                .chain(client_id)
                .chain(identity_endpoint),
        )
    }

    /// A store over this account, as the binary builds it from `settings`.
    pub async fn store_with(&self, settings: &CosmosSettings) -> CosmosStore {
        self.store_with_faults(settings, Vec::new()).await
    }

    pub async fn store(&self) -> CosmosStore {
        self.store_with(&Self::key_settings()).await
    }

    /// A store whose every request first meets `rules` (in order), then the emulator.
    pub async fn store_with_faults(
        &self,
        settings: &CosmosSettings,
        rules: Vec<Arc<FaultInjectionRule>>,
    ) -> CosmosStore {
        let runtime =
            CosmosRuntimeBuilder::from(self.client.runtime_builder_with_fault_rules(rules))
                .build()
                .await
                .expect("an SDK runtime over the emulator");
        CosmosStore::with_runtime(settings, runtime).expect("a Cosmos store")
    }

    /// A plain SDK client on the same account, to look at what is stored without going
    /// through the store under test (or its faults).
    pub async fn observer(&self) -> Observer {
        let runtime = CosmosRuntimeBuilder::from(self.client.runtime_builder())
            .build()
            .await
            .expect("an SDK runtime over the emulator");
        let account = AccountReference::with_authentication_key(
            ENDPOINT
                .parse::<AccountEndpoint>()
                .expect("a valid endpoint"),
            Secret::new(KEY),
        );
        let client = CosmosClient::builder()
            .with_runtime(runtime)
            .build(account, RoutingStrategy::PreferredRegions(Vec::new()))
            .await
            .expect("an SDK client");
        let container = client
            .database_client(DATABASE)
            .container_client(CONTAINER, None)
            .await
            .expect("the users container");
        Observer { container }
    }

    /// Item reads and writes that reached the emulator since the last call.
    pub fn take_item_requests(&self) -> Vec<ItemRequest> {
        std::mem::take(&mut *self.requests.items.lock().unwrap())
    }

    /// The `Authorization` header of every request so far (URL-encoded, as sent).
    pub fn authorizations(&self) -> Vec<String> {
        self.requests.authorizations.lock().unwrap().clone()
    }
}

fn settings_from(variables: impl IntoIterator<Item = (&'static str, String)>) -> CosmosSettings {
    let env: Env = variables.into_iter().collect();
    match Settings::load(&env).expect("valid settings").store {
        StoreSettings::Cosmos(settings) => settings,
        other => panic!("a Cosmos setting selects Cosmos, not {other:?}"),
    }
}

/// Reads items straight from the emulator, system properties and all.
pub struct Observer {
    container: ContainerClient,
}

impl Observer {
    pub async fn item(&self, id: &str) -> Option<Value> {
        match self.container.read_item(id.to_owned(), id, None).await {
            Ok(response) => Some(response.into_body().into_single().expect("a JSON item")),
            Err(error) if error.status().is_not_found() => None,
            Err(error) => panic!("cannot read {id} from the emulator: {error}"),
        }
    }
}

/// One item request as the emulator received it: `GET` is a point read, `POST` a create (or,
/// with `query`, one request of a query), `PUT` a replace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemRequest {
    pub method: Method,
    pub if_match: bool,
    pub query: bool,
}

/// Counts the requests that reach the emulator, which is what a real account would see.
#[derive(Debug, Default)]
struct RequestLog {
    items: Mutex<Vec<ItemRequest>>,
    authorizations: Mutex<Vec<String>>,
}

impl RequestObserver for RequestLog {
    fn on_request(&self, request: &Request) {
        let authorization = request
            .headers()
            .get_optional_str(&"authorization".into())
            .unwrap_or_default();
        self.authorizations
            .lock()
            .unwrap()
            .push(authorization.to_owned());
        if request.url().path().contains("/docs") {
            self.items.lock().unwrap().push(ItemRequest {
                method: request.method(),
                if_match: request
                    .headers()
                    .get_optional_str(&"if-match".into())
                    .is_some(),
                query: request
                    .headers()
                    .get_optional_str(&"x-ms-documentdb-isquery".into())
                    .is_some_and(|v| v.eq_ignore_ascii_case("true")),
            });
        }
    }
}
