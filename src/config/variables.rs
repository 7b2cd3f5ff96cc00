//! One reader per group of variables: each reads its values from the environment, checks them,
//! and parses them into the type the module that uses them takes.

use std::sync::Arc;

use reqwest::Url;

use super::*;
use crate::clerk::api::{ClerkApiSettings, RequestRate};
use crate::secret::Secret;
use crate::session::{self, SessionKey, SessionSettings};
use crate::store::{CosmosAuth, CosmosSettings, StoreSettings};
use crate::telemetry::LogFormat;
use crate::verify::Verifier;

/// `None` when `SyncMe` is not configured: no key source or no authorized parties. Every variable
/// is checked even then, so that a broken value is reported rather than silently unused.
pub(super) fn session_settings(env: &Env, problems: &mut Problems) -> Option<SessionSettings> {
    let pem = problems.take(session_pem(env)).flatten();
    let jwks = problems.take(jwks_url(env)).flatten();
    let authorized_parties = problems.take(authorized_parties(env)).flatten();
    let issuer = problems.take(issuer(env)).flatten();
    let allow_pending_sessions = problems.take(allow_pending_sessions(env));
    Some(SessionSettings {
        // The PEM wins: with it no token waits on a network call.
        key: pem.or(jwks.map(SessionKey::Jwks))?,
        authorized_parties: authorized_parties?,
        issuer,
        allow_pending_sessions: allow_pending_sessions?,
    })
}

/// `true` or `false`, in any case; unset is `false`, as @clerk/backend treats a pending session
/// as signed out unless told otherwise. Anything else is refused rather than guessed at.
pub(super) fn allow_pending_sessions(env: &Env) -> Result<bool, ConfigError> {
    match env.get(CLERK_ALLOW_PENDING_SESSIONS)? {
        None => Ok(false),
        Some(value) if value.eq_ignore_ascii_case("true") => Ok(true),
        Some(value) if value.eq_ignore_ascii_case("false") => Ok(false),
        Some(other) => Err(ConfigError {
            variable: CLERK_ALLOW_PENDING_SESSIONS,
            problem: format!("must be true or false, not {other:?}"),
        }),
    }
}

pub(super) fn session_pem(env: &Env) -> Result<Option<SessionKey>, ConfigError> {
    let Some(pem) = env.get(CLERK_JWT_KEY)? else {
        return Ok(None);
    };
    let key = session::pem_key(pem).map_err(|problem| ConfigError {
        variable: CLERK_JWT_KEY,
        problem,
    })?;
    Ok(Some(SessionKey::Pem(Arc::new(key))))
}

pub(super) fn jwks_url(env: &Env) -> Result<Option<String>, ConfigError> {
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
pub(super) fn authorized_parties(env: &Env) -> Result<Option<Vec<String>>, ConfigError> {
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

pub(super) fn issuer(env: &Env) -> Result<Option<String>, ConfigError> {
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
pub(super) fn http_url(value: &str) -> Option<String> {
    let url = reqwest::Url::parse(value).ok()?;
    let http = matches!(url.scheme(), "http" | "https");
    (http && url.has_host()).then(|| value.to_owned())
}

pub(super) fn verifier(env: &Env) -> Result<Verifier, ConfigError> {
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

pub(super) fn host_port(env: &Env) -> Result<Option<u16>, ConfigError> {
    env.get(CUSTOM_HANDLER_PORT)?
        .map(|port| {
            port.parse::<u16>().map_err(|_| ConfigError {
                variable: CUSTOM_HANDLER_PORT,
                problem: format!("is not a port number: {port:?}"),
            })
        })
        .transpose()
}

pub(super) fn store_settings(env: &Env) -> Result<StoreSettings, ConfigError> {
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

pub(super) fn cosmos_endpoint(
    variable: &'static str,
    endpoint: &str,
) -> Result<String, ConfigError> {
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
pub(super) fn parse_connection_string(value: &str) -> Result<CosmosAuth, ConfigError> {
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
        key: Secret::new(key),
    })
}

/// URL and rate are checked even without a key, so a typo shows before the key is added.
pub(super) fn clerk_api_settings(
    env: &Env,
    problems: &mut Problems,
) -> Option<Option<ClerkApiSettings>> {
    let key = problems.take(clerk_secret_key(env));
    let base_url = problems.take(clerk_api_url(env));
    let rate = problems.take(clerk_api_rate(env));
    let settings = match key? {
        None => None,
        Some(secret_key) => Some(ClerkApiSettings {
            secret_key,
            base_url: base_url?,
            rate: rate?,
        }),
    };
    Some(settings)
}

pub(super) fn clerk_secret_key(env: &Env) -> Result<Option<Secret>, ConfigError> {
    match env.get(CLERK_SECRET_KEY)? {
        None => Ok(None),
        Some(key) if key.starts_with("sk_") => Ok(Some(Secret::new(key))),
        // Never echoed: a mistyped secret is still mostly a secret.
        Some(_) => Err(ConfigError {
            variable: CLERK_SECRET_KEY,
            problem: "is not a Clerk secret key (sk_live_... or sk_test_...); copy it from the \
                      Clerk dashboard's API keys page"
                .into(),
        }),
    }
}

pub(super) fn clerk_api_url(env: &Env) -> Result<Url, ConfigError> {
    let url = env.get(CLERK_API_URL)?.unwrap_or(DEFAULT_CLERK_API_URL);
    // Paths are appended as `/v1/...`: a trailing slash would double, a query would be lost.
    let trimmed = url.trim_end_matches('/');
    match Url::parse(trimmed) {
        Ok(parsed)
            if matches!(parsed.scheme(), "http" | "https")
                && parsed.has_host()
                && parsed.query().is_none()
                && parsed.fragment().is_none() =>
        {
            Ok(parsed)
        }
        _ => Err(ConfigError {
            variable: CLERK_API_URL,
            problem: format!("is not an http(s) URL such as {DEFAULT_CLERK_API_URL}: {url:?}"),
        }),
    }
}

pub(super) fn clerk_api_rate(env: &Env) -> Result<RequestRate, ConfigError> {
    let Some(rate) = env.get(CLERK_API_RATE)? else {
        return Ok(RequestRate::per_second(DEFAULT_CLERK_API_RATE).expect("a valid default"));
    };
    rate.parse::<f64>()
        .ok()
        .and_then(RequestRate::per_second)
        .ok_or_else(|| ConfigError {
            variable: CLERK_API_RATE,
            problem: format!(
                "must be a number of requests per second, at least {}, not {rate:?}",
                RequestRate::MIN
            ),
        })
}

pub(super) fn tombstone_ttl_days(env: &Env) -> Result<u32, ConfigError> {
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

pub(super) fn log_format(env: &Env) -> Result<LogFormat, ConfigError> {
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
