//! Configuration: read once from the environment into typed settings, every problem reported as
//! one line naming its variable. Secrets are never printed, not even by `Debug`.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use crate::session;
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
/// One request every 100 s: slower would make a sweep pointless, and a pause between requests
/// must stay a representable `Duration`.
pub const MIN_CLERK_API_RATE: f64 = 0.01;

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

/// A value that must never reach a log or a `Debug` print.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

/// Where users are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSettings {
    Cosmos(CosmosSettings),
    Local { path: PathBuf },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CosmosSettings {
    pub auth: CosmosAuth,
    pub database: String,
    pub container: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CosmosAuth {
    /// `COSMOS_ENDPOINT`: an Entra ID token, from the managed identity where App Service offers
    /// one (`IDENTITY_ENDPOINT` set; user-assigned when `client_id` is set), else from developer
    /// tools (`az` / `azd` login).
    Identity {
        endpoint: String,
        client_id: Option<String>,
        managed_identity: bool,
    },
    /// `COSMOS_CONNECTION_STRING`: an account key, for the emulator and development.
    Key { endpoint: String, key: Secret },
}

/// The Clerk Backend API, for reconcile and `SyncMe`.
#[derive(Debug, Clone, PartialEq)]
pub struct ClerkApiSettings {
    pub secret_key: Secret,
    /// Without a trailing slash.
    pub base_url: String,
    pub rate_per_second: f64,
}

// `rate_per_second` is never NaN (refused when loaded), so equality is an equivalence.
impl Eq for ClerkApiSettings {}

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

/// Clerk session-token verification, for `SyncMe`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionSettings {
    pub key: SessionKey,
    /// Origins allowed in `azp`, without trailing slashes.
    pub authorized_parties: Vec<String>,
    /// What `iss` must equal, when set.
    pub issuer: Option<String>,
}

/// Where the key that signs session tokens comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionKey {
    /// `CLERK_JWT_KEY`: the PEM public key from the Clerk dashboard, as configured (possibly
    /// with literal `\n`s); no network needed.
    Pem(String),
    /// `CLERK_JWKS_URL`: the instance's JWK set, fetched when first needed.
    Jwks(String),
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

/// `None` when `SyncMe` is not configured: no key source or no authorized parties. Every variable
/// is checked even then, so that a broken value is reported rather than silently unused.
fn session_settings(env: &Env, problems: &mut Problems) -> Option<SessionSettings> {
    let pem = problems.take(session_pem(env)).flatten();
    let jwks = problems.take(jwks_url(env)).flatten();
    let authorized_parties = problems.take(authorized_parties(env)).flatten();
    let issuer = problems.take(issuer(env)).flatten();
    Some(SessionSettings {
        // The PEM wins: with it no token waits on a network call.
        key: pem.map(SessionKey::Pem).or(jwks.map(SessionKey::Jwks))?,
        authorized_parties: authorized_parties?,
        issuer,
    })
}

fn session_pem(env: &Env) -> Result<Option<String>, ConfigError> {
    let Some(pem) = env.get(CLERK_JWT_KEY)? else {
        return Ok(None);
    };
    session::pem_key(pem).map_err(|problem| ConfigError {
        variable: CLERK_JWT_KEY,
        problem,
    })?;
    Ok(Some(pem.to_owned()))
}

fn jwks_url(env: &Env) -> Result<Option<String>, ConfigError> {
    env.get(CLERK_JWKS_URL)?
        .map(|url| {
            http_url(url).ok_or_else(|| ConfigError {
                variable: CLERK_JWKS_URL,
                problem: format!(
                    "is not an http(s) URL such as https://<frontend-api>/.well-known/jwks.json: \
                     {url:?}"
                ),
            })
        })
        .transpose()
}

/// Comma-separated origins such as `https://app.example.com, http://localhost:3000`.
fn authorized_parties(env: &Env) -> Result<Option<Vec<String>>, ConfigError> {
    let Some(parties) = env.get(CLERK_AUTHORIZED_PARTIES)? else {
        return Ok(None);
    };
    // `azp` is an origin, which never ends in a slash; a pasted URL often does.
    let parties: Vec<String> = parties
        .split(',')
        .map(|party| party.trim().trim_end_matches('/').to_owned())
        .filter(|party| !party.is_empty())
        .collect();
    if parties.is_empty() {
        return Err(ConfigError {
            variable: CLERK_AUTHORIZED_PARTIES,
            problem: "lists no origin; expected e.g. https://app.example.com,http://localhost:3000"
                .into(),
        });
    }
    Ok(Some(parties))
}

fn issuer(env: &Env) -> Result<Option<String>, ConfigError> {
    env.get(CLERK_ISSUER)?
        .map(|issuer| {
            // Clerk's `iss` is the Frontend API URL, without a trailing slash.
            http_url(issuer.trim_end_matches('/')).ok_or_else(|| ConfigError {
                variable: CLERK_ISSUER,
                problem: format!(
                    "is not the Frontend API URL such as https://clerk.example.com: {issuer:?}"
                ),
            })
        })
        .transpose()
}

/// `value` when it is an absolute http or https URL with a host.
fn http_url(value: &str) -> Option<String> {
    let url = reqwest::Url::parse(value).ok()?;
    let http = matches!(url.scheme(), "http" | "https");
    (http && url.has_host()).then(|| value.to_owned())
}

fn verifier(env: &Env) -> Result<Verifier, ConfigError> {
    let secrets = env.get(SIGNING_SECRET)?.ok_or_else(|| ConfigError {
        variable: SIGNING_SECRET,
        problem: "is not set; copy the signing secret (whsec_...) from the Clerk dashboard's \
                  webhook endpoint"
            .into(),
    })?;
    Verifier::from_secrets(secrets).map_err(|problem| ConfigError {
        variable: SIGNING_SECRET,
        problem,
    })
}

fn host_port(env: &Env) -> Result<Option<u16>, ConfigError> {
    env.get(CUSTOM_HANDLER_PORT)?
        .map(|port| {
            port.parse::<u16>().map_err(|_| ConfigError {
                variable: CUSTOM_HANDLER_PORT,
                problem: format!("is not a port number: {port:?}"),
            })
        })
        .transpose()
}

fn store_settings(env: &Env) -> Result<StoreSettings, ConfigError> {
    let endpoint = env.get(COSMOS_ENDPOINT)?;
    let connection_string = env.get(COSMOS_CONNECTION_STRING)?;
    let auth = match (endpoint, connection_string) {
        (Some(_), Some(_)) => {
            return Err(ConfigError {
                variable: COSMOS_CONNECTION_STRING,
                problem: format!(
                    "is set together with {COSMOS_ENDPOINT}; set only one (the endpoint for \
                     Entra ID, the connection string for key auth)"
                ),
            });
        }
        (Some(endpoint), None) => CosmosAuth::Identity {
            endpoint: cosmos_endpoint(COSMOS_ENDPOINT, endpoint)?,
            client_id: env.get(AZURE_CLIENT_ID)?.map(str::to_owned),
            managed_identity: env.get(IDENTITY_ENDPOINT)?.is_some(),
        },
        (None, Some(connection_string)) => parse_connection_string(connection_string)?,
        (None, None) => {
            if env.is_azure() {
                return Err(ConfigError {
                    variable: COSMOS_ENDPOINT,
                    problem: format!(
                        "is not set, and {WEBSITE_INSTANCE_ID} says this runs in Azure, where a \
                         local store on the instance's disk would silently lose users"
                    ),
                });
            }
            let path = env
                .get(LOCAL_STORE_PATH)?
                .unwrap_or(DEFAULT_LOCAL_STORE_PATH);
            return Ok(StoreSettings::Local { path: path.into() });
        }
    };
    Ok(StoreSettings::Cosmos(CosmosSettings {
        auth,
        database: env
            .get(COSMOS_DATABASE_NAME)?
            .unwrap_or(DEFAULT_DATABASE)
            .to_owned(),
        container: env
            .get(COSMOS_CONTAINER_NAME)?
            .unwrap_or(DEFAULT_CONTAINER)
            .to_owned(),
    }))
}

fn cosmos_endpoint(variable: &'static str, endpoint: &str) -> Result<String, ConfigError> {
    let scheme_ok = endpoint.starts_with("https://") || endpoint.starts_with("http://");
    if !scheme_ok || endpoint.len() <= "https://".len() {
        return Err(ConfigError {
            variable,
            problem: format!(
                "is not an account endpoint such as https://<account>.documents.azure.com:443/: \
                 {endpoint:?}"
            ),
        });
    }
    Ok(endpoint.to_owned())
}

/// `AccountEndpoint=...;AccountKey=...;` as the portal and the emulator print it.
fn parse_connection_string(value: &str) -> Result<CosmosAuth, ConfigError> {
    let mut endpoint = None;
    let mut key = None;
    for part in value.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('=') {
            Some((name, v)) if name.eq_ignore_ascii_case("AccountEndpoint") => endpoint = Some(v),
            Some((name, v)) if name.eq_ignore_ascii_case("AccountKey") => key = Some(v),
            _ => {}
        }
    }
    let missing = |what: &str| ConfigError {
        variable: COSMOS_CONNECTION_STRING,
        problem: format!("has no {what}; expected AccountEndpoint=...;AccountKey=...;"),
    };
    let endpoint = endpoint.ok_or_else(|| missing("AccountEndpoint"))?;
    let key = key
        .filter(|k| !k.is_empty())
        .ok_or_else(|| missing("AccountKey"))?;
    Ok(CosmosAuth::Key {
        endpoint: cosmos_endpoint(COSMOS_CONNECTION_STRING, endpoint)?,
        key: Secret(key.to_owned()),
    })
}

/// URL and rate are checked even without a key, so a typo shows before the key is added.
fn clerk_api_settings(env: &Env, problems: &mut Problems) -> Option<Option<ClerkApiSettings>> {
    let key = problems.take(clerk_secret_key(env));
    let base_url = problems.take(clerk_api_url(env));
    let rate = problems.take(clerk_api_rate(env));
    let settings = match key? {
        None => None,
        Some(secret_key) => Some(ClerkApiSettings {
            secret_key,
            base_url: base_url?,
            rate_per_second: rate?,
        }),
    };
    Some(settings)
}

fn clerk_secret_key(env: &Env) -> Result<Option<Secret>, ConfigError> {
    match env.get(CLERK_SECRET_KEY)? {
        None => Ok(None),
        Some(key) if key.starts_with("sk_") => Ok(Some(Secret(key.to_owned()))),
        // Never echoed: a mistyped secret is still mostly a secret.
        Some(_) => Err(ConfigError {
            variable: CLERK_SECRET_KEY,
            problem: "is not a Clerk secret key (sk_live_... or sk_test_...); copy it from the \
                      Clerk dashboard's API keys page"
                .into(),
        }),
    }
}

fn clerk_api_url(env: &Env) -> Result<String, ConfigError> {
    let Some(url) = env.get(CLERK_API_URL)? else {
        return Ok(DEFAULT_CLERK_API_URL.to_owned());
    };
    // Paths are appended as `/v1/...`: a trailing slash would double, a query would be lost.
    let trimmed = url.trim_end_matches('/');
    match reqwest::Url::parse(trimmed) {
        Ok(parsed)
            if matches!(parsed.scheme(), "http" | "https")
                && parsed.has_host()
                && parsed.query().is_none()
                && parsed.fragment().is_none() =>
        {
            Ok(trimmed.to_owned())
        }
        _ => Err(ConfigError {
            variable: CLERK_API_URL,
            problem: format!("is not an http(s) URL such as {DEFAULT_CLERK_API_URL}: {url:?}"),
        }),
    }
}

fn clerk_api_rate(env: &Env) -> Result<f64, ConfigError> {
    let Some(rate) = env.get(CLERK_API_RATE)? else {
        return Ok(DEFAULT_CLERK_API_RATE);
    };
    match rate.parse::<f64>() {
        Ok(value) if value.is_finite() && value >= MIN_CLERK_API_RATE => Ok(value),
        _ => Err(ConfigError {
            variable: CLERK_API_RATE,
            problem: format!(
                "must be a number of requests per second, at least {MIN_CLERK_API_RATE}, \
                 not {rate:?}"
            ),
        }),
    }
}

fn tombstone_ttl_days(env: &Env) -> Result<u32, ConfigError> {
    let Some(days) = env.get(TOMBSTONE_TTL_DAYS)? else {
        return Ok(DEFAULT_TOMBSTONE_TTL_DAYS);
    };
    match days.parse::<u32>() {
        Ok(days) if (1..=MAX_TOMBSTONE_TTL_DAYS).contains(&days) => Ok(days),
        _ => Err(ConfigError {
            variable: TOMBSTONE_TTL_DAYS,
            problem: format!(
                "must be a whole number of days from 1 to {MAX_TOMBSTONE_TTL_DAYS}, not {days:?}"
            ),
        }),
    }
}

fn log_format(env: &Env) -> Result<LogFormat, ConfigError> {
    match env.get(LOG_FORMAT)? {
        None if env.is_azure() => Ok(LogFormat::Json),
        None => Ok(LogFormat::Text),
        Some(f) if f.eq_ignore_ascii_case("json") => Ok(LogFormat::Json),
        Some(f) if f.eq_ignore_ascii_case("text") => Ok(LogFormat::Text),
        Some(other) => Err(ConfigError {
            variable: LOG_FORMAT,
            problem: format!("must be json or text, not {other:?}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn session_tokens_need_a_key_source_and_authorized_parties() {
        let pem = crate::session::tests::test_key().public_pem.as_str();
        let parties = (CLERK_AUTHORIZED_PARTIES, "https://app.example.com");
        assert_eq!(serve(&[]).unwrap().session, None);
        assert_eq!(serve(&[(CLERK_JWT_KEY, pem)]).unwrap().session, None);
        assert_eq!(serve(&[parties]).unwrap().session, None);

        let jwks = "https://clerk.example.com/.well-known/jwks.json";
        assert_eq!(
            serve(&[(CLERK_JWKS_URL, jwks), parties]).unwrap().session,
            Some(SessionSettings {
                key: SessionKey::Jwks(jwks.into()),
                authorized_parties: vec!["https://app.example.com".into()],
                issuer: None,
            })
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
            settings.session,
            Some(SessionSettings {
                key: SessionKey::Pem(one_line),
                authorized_parties: vec![
                    "https://app.example.com".into(),
                    "http://localhost:3000".into()
                ],
                issuer: Some("https://clerk.example.com".into()),
            })
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
    fn clerk_api_is_off_without_a_key_and_defaults_with_one() {
        assert_eq!(Settings::load(&env(&[])).unwrap().clerk_api, None);
        let key = "sk_test_c2VjcmV0IGtleQ";
        let settings = Settings::load(&env(&[(CLERK_SECRET_KEY, key)])).unwrap();
        assert_eq!(
            settings.clerk_api,
            Some(ClerkApiSettings {
                secret_key: Secret(key.into()),
                base_url: DEFAULT_CLERK_API_URL.into(),
                rate_per_second: DEFAULT_CLERK_API_RATE,
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
        assert_eq!(
            custom.base_url, "http://127.0.0.1:8080",
            "trailing slash dropped"
        );
        assert_eq!(custom.rate_per_second, 2.5);
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
