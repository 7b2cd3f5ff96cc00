//! Configuration: reads the environment once into the settings each module defines (the store's,
//! the Clerk client's, the session verifier's...), parsing every value into the type its user
//! needs and reporting every problem at once, one line naming its variable. Only `main` and
//! `startup` use it; nothing it reads into imports it back. Secrets are never printed, not even
//! by `Debug`.

mod variables;

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use self::variables::*;
use crate::clerk::api::ClerkApiSettings;
use crate::session::SessionSettings;
use crate::store::StoreSettings;
use crate::telemetry::LogFormat;
use crate::verify::Verifier;

pub const SIGNING_SECRET: &str = "CLERK_WEBHOOK_SIGNING_SECRET";
pub const COSMOS_ENDPOINT: &str = "COSMOS_ENDPOINT";
pub const COSMOS_CONNECTION_STRING: &str = "COSMOS_CONNECTION_STRING";
pub const AZURE_CLIENT_ID: &str = "AZURE_CLIENT_ID";
pub const COSMOS_DATABASE_NAME: &str = "COSMOS_DATABASE_NAME";
pub const COSMOS_CONTAINER_NAME: &str = "COSMOS_CONTAINER_NAME";
pub const LOCAL_STORE_PATH: &str = "LOCAL_STORE_PATH";
pub const TOMBSTONE_TTL_DAYS: &str = "TOMBSTONE_TTL_DAYS";
pub const LOG_FORMAT: &str = "LOG_FORMAT";
pub const CUSTOM_HANDLER_PORT: &str = "FUNCTIONS_CUSTOMHANDLER_PORT";
/// Set by App Service on every Azure instance.
pub const WEBSITE_INSTANCE_ID: &str = "WEBSITE_INSTANCE_ID";
/// Set by App Service on every instance with a managed identity: where its tokens come from.
pub const IDENTITY_ENDPOINT: &str = "IDENTITY_ENDPOINT";
pub const CLERK_SECRET_KEY: &str = "CLERK_SECRET_KEY";
pub const CLERK_API_URL: &str = "CLERK_API_URL";
pub const CLERK_API_RATE: &str = "CLERK_API_RATE";
pub const CLERK_JWT_KEY: &str = "CLERK_JWT_KEY";
pub const CLERK_JWKS_URL: &str = "CLERK_JWKS_URL";
pub const CLERK_AUTHORIZED_PARTIES: &str = "CLERK_AUTHORIZED_PARTIES";
pub const CLERK_ISSUER: &str = "CLERK_ISSUER";
pub const CLERK_ALLOW_PENDING_SESSIONS: &str = "CLERK_ALLOW_PENDING_SESSIONS";

pub const DEFAULT_PORT: u16 = 7071;
pub const DEFAULT_BIND: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const DEFAULT_DATABASE: &str = "clerk";
const DEFAULT_CONTAINER: &str = "users";
const DEFAULT_LOCAL_STORE_PATH: &str = ".data/clerk-users.sqlite3";
const DEFAULT_TOMBSTONE_TTL_DAYS: u32 = 30;
/// Cosmos DB's per-item `ttl` is a 32-bit count of seconds.
const MAX_TOMBSTONE_TTL_DAYS: u32 = (i32::MAX as u32) / 86_400;
const KEY_VAULT_REFERENCE: &str = "@Microsoft.KeyVault(";
const DEFAULT_CLERK_API_URL: &str = "https://api.clerk.com";
/// Requests per second; Clerk allows 10/s on a development instance and 100/s in production,
/// shared with the live app.
const DEFAULT_CLERK_API_RATE: f64 = 10.0;

/// One configuration problem, printed as one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{variable}: {problem}")]
pub struct ConfigError {
    pub variable: &'static str,
    pub problem: String,
}

/// All configuration problems found at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&lines.join("\n"))
    }
}

impl std::error::Error for ConfigErrors {}

/// What every command needs: the store and how to log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub store: StoreSettings,
    pub tombstone_ttl_seconds: u32,
    pub log_format: LogFormat,
    /// `None` without `CLERK_SECRET_KEY`: what needs the API says it is not configured.
    pub clerk_api: Option<ClerkApiSettings>,
}

/// What serving needs on top of `Settings`.
#[derive(Debug)]
pub struct ServeSettings {
    pub verifier: Verifier,
    pub port: u16,
    pub bind: IpAddr,
    /// How `SyncMe` checks Clerk session tokens; `None` leaves the endpoint unconfigured.
    pub session: Option<SessionSettings>,
}

/// The process environment, where an empty value counts as unset.
#[derive(Clone, Default)]
pub struct Env(HashMap<String, String>);

impl Env {
    pub fn from_process() -> Self {
        std::env::vars().collect()
    }

    /// The value of `variable`, refusing a Key Vault reference that App Service did not resolve.
    fn get(&self, variable: &'static str) -> Result<Option<&str>, ConfigError> {
        match self.0.get(variable).map(|v| v.trim()) {
            None | Some("") => Ok(None),
            Some(value) if value.starts_with(KEY_VAULT_REFERENCE) => Err(ConfigError {
                variable,
                problem: "is an unresolved Key Vault reference; grant the app's identity \
                          'Key Vault Secrets User' on the vault and check the secret URI"
                    .into(),
            }),
            Some(value) => Ok(Some(value)),
        }
    }

    pub fn is_azure(&self) -> bool {
        matches!(self.get(WEBSITE_INSTANCE_ID), Ok(Some(_)))
    }

    /// How to log, even when the settings are refused: `LOG_FORMAT`, or its default when it is
    /// unset or unusable (so that a refusal in Azure is still a JSON line).
    pub fn log_format(&self) -> LogFormat {
        variables::log_format(self).unwrap_or(match self.is_azure() {
            true => LogFormat::Json,
            false => LogFormat::Text,
        })
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Env {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Self(
            iter.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }
}

/// Collects problems so that all of them are reported together.
#[derive(Default)]
struct Problems(Vec<ConfigError>);

impl Problems {
    fn take<T>(&mut self, result: Result<T, ConfigError>) -> Option<T> {
        result.map_err(|e| self.0.push(e)).ok()
    }

    fn finish<T>(self, value: impl FnOnce() -> T) -> Result<T, ConfigErrors> {
        if self.0.is_empty() {
            Ok(value())
        } else {
            Err(ConfigErrors(self.0))
        }
    }
}

impl Settings {
    pub fn load(env: &Env) -> Result<Self, ConfigErrors> {
        let mut problems = Problems::default();
        let store = problems.take(store_settings(env));
        let ttl_days = problems.take(tombstone_ttl_days(env));
        let log_format = problems.take(log_format(env));
        let clerk_api = clerk_api_settings(env, &mut problems);
        problems.finish(|| Settings {
            store: store.expect("no problem means a value"),
            tombstone_ttl_seconds: ttl_days.expect("no problem means a value") * 86_400,
            log_format: log_format.expect("no problem means a value"),
            clerk_api: clerk_api.expect("no problem means a value"),
        })
    }
}

impl ServeSettings {
    /// `FUNCTIONS_CUSTOMHANDLER_PORT` (set by the Functions host) wins over `--port`.
    pub fn load(
        env: &Env,
        cli_port: Option<u16>,
        bind: Option<IpAddr>,
    ) -> Result<Self, ConfigErrors> {
        let mut problems = Problems::default();
        let verifier = problems.take(verifier(env));
        let port = problems.take(host_port(env));
        let session = session_settings(env, &mut problems);
        problems.finish(|| ServeSettings {
            verifier: verifier.expect("no problem means a value"),
            port: port.flatten().or(cli_port).unwrap_or(DEFAULT_PORT),
            bind: bind.unwrap_or(DEFAULT_BIND),
            session,
        })
    }
}

#[cfg(test)]
mod tests {
    use reqwest::Url;

    use super::*;
    use crate::clerk::api::RequestRate;
    use crate::secret::Secret;
    use crate::session::SessionKey;
    use crate::store::{CosmosAuth, CosmosSettings};

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    fn env(pairs: &[(&str, &str)]) -> Env {
        pairs.iter().copied().collect()
    }

    fn problems<T: fmt::Debug>(result: Result<T, ConfigErrors>) -> Vec<&'static str> {
        result.unwrap_err().0.iter().map(|e| e.variable).collect()
    }

    #[test]
    fn defaults_to_the_local_store_and_empty_means_unset() {
        let settings = Settings::load(&env(&[
            (COSMOS_ENDPOINT, ""),
            (COSMOS_CONNECTION_STRING, " "),
        ]))
        .unwrap();
        assert_eq!(
            settings,
            Settings {
                store: StoreSettings::Local {
                    path: DEFAULT_LOCAL_STORE_PATH.into()
                },
                tombstone_ttl_seconds: 30 * 86_400,
                log_format: LogFormat::Text,
                clerk_api: None,
            }
        );
    }

    #[test]
    fn endpoint_selects_cosmos_with_identity() {
        let settings = Settings::load(&env(&[
            (COSMOS_ENDPOINT, "https://acct.documents.azure.com:443/"),
            (AZURE_CLIENT_ID, "client-1"),
            (COSMOS_DATABASE_NAME, "db"),
            (WEBSITE_INSTANCE_ID, "abc"),
            (IDENTITY_ENDPOINT, "http://localhost:8081/msi/token"),
        ]))
        .unwrap();
        assert_eq!(
            settings.store,
            StoreSettings::Cosmos(CosmosSettings {
                auth: CosmosAuth::Identity {
                    endpoint: "https://acct.documents.azure.com:443/".into(),
                    client_id: Some("client-1".into()),
                    managed_identity: true,
                },
                database: "db".into(),
                container: DEFAULT_CONTAINER.into(),
            })
        );
        assert_eq!(settings.log_format, LogFormat::Json, "JSON lines in Azure");
    }

    #[test]
    fn connection_string_selects_key_auth_and_hides_the_key() {
        let settings = Settings::load(&env(&[(
            COSMOS_CONNECTION_STRING,
            "AccountEndpoint=https://localhost:8081/;AccountKey=c2VjcmV0a2V5==;",
        )]))
        .unwrap();
        let StoreSettings::Cosmos(cosmos) = &settings.store else {
            panic!("expected Cosmos: {settings:?}")
        };
        let CosmosAuth::Key { endpoint, key } = &cosmos.auth else {
            panic!("expected key auth")
        };
        assert_eq!(endpoint, "https://localhost:8081/");
        assert_eq!(key.expose(), "c2VjcmV0a2V5==");
        assert!(!format!("{settings:?}").contains("c2VjcmV0a2V5"));
    }

    #[test]
    fn every_problem_is_reported_once_with_its_variable() {
        assert_eq!(
            problems(Settings::load(&env(&[
                (COSMOS_CONNECTION_STRING, "AccountEndpoint=https://x/;"),
                (TOMBSTONE_TTL_DAYS, "0"),
                (LOG_FORMAT, "xml"),
            ]))),
            [COSMOS_CONNECTION_STRING, TOMBSTONE_TTL_DAYS, LOG_FORMAT]
        );
        assert_eq!(
            problems(Settings::load(&env(&[
                (COSMOS_ENDPOINT, "https://a/"),
                (
                    COSMOS_CONNECTION_STRING,
                    "AccountEndpoint=https://a/;AccountKey=k;"
                ),
            ]))),
            [COSMOS_CONNECTION_STRING]
        );
        assert_eq!(
            problems(Settings::load(&env(&[(
                COSMOS_ENDPOINT,
                "acct.documents.azure.com"
            )]))),
            [COSMOS_ENDPOINT]
        );
    }

    #[test]
    fn refuses_a_local_store_in_azure() {
        assert_eq!(
            problems(Settings::load(&env(&[(WEBSITE_INSTANCE_ID, "abc")]))),
            [COSMOS_ENDPOINT]
        );
    }

    #[test]
    fn refuses_unresolved_key_vault_references_anywhere() {
        let reference = "@Microsoft.KeyVault(SecretUri=https://v.vault.azure.net/secrets/s/)";
        let errors =
            ServeSettings::load(&env(&[(SIGNING_SECRET, reference)]), None, None).unwrap_err();
        assert_eq!(errors.0.len(), 1);
        assert_eq!(errors.0[0].variable, SIGNING_SECRET);
        assert!(errors.0[0].problem.contains("Key Vault"));
        assert_eq!(
            problems(Settings::load(&env(&[(COSMOS_ENDPOINT, reference)]))),
            [COSMOS_ENDPOINT]
        );
    }

    #[test]
    fn serve_needs_a_decodable_secret_and_never_echoes_it() {
        assert_eq!(
            problems(ServeSettings::load(&env(&[]), None, None)),
            [SIGNING_SECRET]
        );
        let errors =
            ServeSettings::load(&env(&[(SIGNING_SECRET, "whsec_!!notbase64!!")]), None, None)
                .unwrap_err();
        assert!(!errors.to_string().contains("notbase64"), "{errors}");
    }

    fn serve(pairs: &[(&str, &str)]) -> Result<ServeSettings, ConfigErrors> {
        let mut pairs = pairs.to_vec();
        pairs.push((SIGNING_SECRET, SECRET));
        ServeSettings::load(&env(&pairs), None, None)
    }

    /// What `SessionSettings` holds, comparable: the key source (`pem` or the JWKS URL), the
    /// authorized parties and the issuer.
    fn described(
        session: Option<SessionSettings>,
    ) -> Option<(String, Vec<String>, Option<String>)> {
        session.map(|session| {
            let key = match session.key {
                SessionKey::Pem(_) => "pem".to_owned(),
                SessionKey::Jwks(url) => url,
            };
            (key, session.authorized_parties, session.issuer)
        })
    }

    #[test]
    fn session_tokens_need_a_key_source_and_authorized_parties() {
        let pem = crate::session::tests::test_key().public_pem.as_str();
        let parties = (CLERK_AUTHORIZED_PARTIES, "https://app.example.com");
        assert!(serve(&[]).unwrap().session.is_none());
        assert!(serve(&[(CLERK_JWT_KEY, pem)]).unwrap().session.is_none());
        assert!(serve(&[parties]).unwrap().session.is_none());

        let jwks = "https://clerk.example.com/.well-known/jwks.json";
        assert_eq!(
            described(serve(&[(CLERK_JWKS_URL, jwks), parties]).unwrap().session),
            Some((jwks.into(), vec!["https://app.example.com".into()], None))
        );
        // App settings carry the PEM on one line with literal \n; pasted URLs end in slashes.
        let one_line = pem.trim().replace('\n', "\\n");
        let settings = serve(&[
            (CLERK_JWT_KEY, &one_line),
            (CLERK_JWKS_URL, jwks),
            (
                CLERK_AUTHORIZED_PARTIES,
                " https://app.example.com/ ,http://localhost:3000,",
            ),
            (CLERK_ISSUER, "https://clerk.example.com/"),
        ])
        .unwrap();
        assert_eq!(
            described(settings.session),
            Some((
                "pem".into(),
                vec![
                    "https://app.example.com".into(),
                    "http://localhost:3000".into()
                ],
                Some("https://clerk.example.com".into()),
            ))
        );
    }

    #[test]
    fn session_settings_refuse_what_cannot_work_naming_each_variable() {
        let not_a_key = "-----BEGIN PUBLIC KEY-----\nbm9wZQ==\n-----END PUBLIC KEY-----";
        assert_eq!(
            problems(serve(&[
                (CLERK_JWT_KEY, not_a_key),
                (CLERK_JWKS_URL, "ftp://clerk.example.com/jwks.json"),
                (CLERK_AUTHORIZED_PARTIES, " , /"),
                (CLERK_ISSUER, "clerk.example.com"),
            ])),
            [
                CLERK_JWT_KEY,
                CLERK_JWKS_URL,
                CLERK_AUTHORIZED_PARTIES,
                CLERK_ISSUER
            ]
        );
        let private =
            "-----BEGIN RSA PRIVATE KEY-----\nTUlJRW93SUJBQUtD\n-----END RSA PRIVATE KEY-----";
        let errors = serve(&[(CLERK_JWT_KEY, private)]).unwrap_err();
        assert_eq!(errors.0.len(), 1);
        assert!(errors.0[0].problem.contains("private key"), "{errors}");
        assert!(!errors.to_string().contains("TUlJ"), "{errors}");
    }

    #[test]
    fn pending_sessions_are_refused_unless_set_to_true() {
        let pem = crate::session::tests::test_key().public_pem.as_str();
        let configured = [
            (CLERK_JWT_KEY, pem),
            (CLERK_AUTHORIZED_PARTIES, "https://app.example.com"),
        ];
        let allows = |value: Option<&str>| {
            let mut pairs = configured.to_vec();
            pairs.extend(value.map(|value| (CLERK_ALLOW_PENDING_SESSIONS, value)));
            serve(&pairs)
                .unwrap()
                .session
                .unwrap()
                .allow_pending_sessions
        };
        assert!(!allows(None));
        assert!(!allows(Some("")), "empty is unset");
        assert!(!allows(Some("false")));
        assert!(allows(Some("true")));
        assert!(allows(Some(" TRUE ")));
        for value in ["yes", "1", "on", "ture", "true,"] {
            let mut pairs = configured.to_vec();
            pairs.push((CLERK_ALLOW_PENDING_SESSIONS, value));
            let errors = serve(&pairs).unwrap_err();
            assert_eq!(errors.0.len(), 1, "{value}: {errors}");
            assert_eq!(errors.0[0].variable, CLERK_ALLOW_PENDING_SESSIONS);
            assert!(errors.0[0].problem.contains("true or false"), "{errors}");
        }
        // Checked even while SyncMe is not configured, so that the typo shows at once.
        assert_eq!(
            problems(serve(&[(CLERK_ALLOW_PENDING_SESSIONS, "yes")])),
            [CLERK_ALLOW_PENDING_SESSIONS]
        );
    }

    #[test]
    fn clerk_api_is_off_without_a_key_and_defaults_with_one() {
        assert_eq!(Settings::load(&env(&[])).unwrap().clerk_api, None);
        let key = "sk_test_c2VjcmV0IGtleQ";
        let settings = Settings::load(&env(&[(CLERK_SECRET_KEY, key)])).unwrap();
        assert_eq!(
            settings.clerk_api,
            Some(ClerkApiSettings {
                secret_key: Secret::new(key),
                base_url: Url::parse(DEFAULT_CLERK_API_URL).unwrap(),
                rate: RequestRate::per_second(DEFAULT_CLERK_API_RATE).unwrap(),
            })
        );
        assert!(
            !format!("{settings:?}").contains("c2VjcmV0"),
            "{settings:?}"
        );
        let custom = Settings::load(&env(&[
            (CLERK_SECRET_KEY, key),
            (CLERK_API_URL, "http://127.0.0.1:8080/"),
            (CLERK_API_RATE, "2.5"),
        ]))
        .unwrap()
        .clerk_api
        .unwrap();
        assert_eq!(custom.base_url.as_str(), "http://127.0.0.1:8080/");
        assert_eq!(custom.rate, RequestRate::per_second(2.5).unwrap());
    }

    #[test]
    fn refuses_a_clerk_key_that_is_not_a_secret_key_without_echoing_it() {
        let errors =
            Settings::load(&env(&[(CLERK_SECRET_KEY, "pk_test_publishable")])).unwrap_err();
        assert_eq!(errors.0.len(), 1);
        assert_eq!(errors.0[0].variable, CLERK_SECRET_KEY);
        assert!(!errors.to_string().contains("publishable"), "{errors}");
        let reference = "@Microsoft.KeyVault(SecretUri=https://v.vault.azure.net/secrets/s/)";
        assert_eq!(
            problems(Settings::load(&env(&[(CLERK_SECRET_KEY, reference)]))),
            [CLERK_SECRET_KEY]
        );
    }

    #[test]
    fn refuses_bad_clerk_urls_and_rates_even_without_a_key() {
        for url in [
            "api.clerk.com",
            "ftp://api.clerk.com",
            "https://",
            "https://a/?x=1",
        ] {
            assert_eq!(
                problems(Settings::load(&env(&[(CLERK_API_URL, url)]))),
                [CLERK_API_URL],
                "{url}"
            );
        }
        for rate in ["0", "-1", "NaN", "inf", "ten", "0.001"] {
            assert_eq!(
                problems(Settings::load(&env(&[(CLERK_API_RATE, rate)]))),
                [CLERK_API_RATE],
                "{rate}"
            );
        }
        assert_eq!(
            problems(Settings::load(&env(&[
                (CLERK_SECRET_KEY, "sk"),
                (CLERK_API_URL, "x"),
                (CLERK_API_RATE, "0"),
            ]))),
            [CLERK_SECRET_KEY, CLERK_API_URL, CLERK_API_RATE]
        );
    }

    #[test]
    fn host_port_wins_over_the_command_line() {
        let with_host = env(&[(SIGNING_SECRET, SECRET), (CUSTOM_HANDLER_PORT, "5001")]);
        assert_eq!(
            ServeSettings::load(&with_host, Some(6000), None)
                .unwrap()
                .port,
            5001
        );
        let without = env(&[(SIGNING_SECRET, SECRET)]);
        assert_eq!(
            ServeSettings::load(&without, Some(6000), None)
                .unwrap()
                .port,
            6000
        );
        let serve = ServeSettings::load(&without, None, None).unwrap();
        assert_eq!((serve.port, serve.bind), (DEFAULT_PORT, DEFAULT_BIND));
        assert_eq!(
            problems(ServeSettings::load(
                &env(&[(SIGNING_SECRET, SECRET), (CUSTOM_HANDLER_PORT, "http")]),
                None,
                None
            )),
            [CUSTOM_HANDLER_PORT]
        );
    }
}
