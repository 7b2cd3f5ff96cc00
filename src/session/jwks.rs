//! The instance's JWK set at `CLERK_JWKS_URL`: fetched when a token first needs it, cached, and
//! refreshed on Clerk's schedule, so that no request waits on Clerk unless its key is new.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use jsonwebtoken::DecodingKey;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, KeyAlgorithm, PublicKeyUse};
use serde::Deserialize;

use super::{SessionError, invalid};

/// How long a fetched key set is trusted before the next token refreshes it, as @clerk/backend
/// caches it: a key Clerk stops publishing is refused within this long, without a restart.
pub const KEY_SET_MAX_AGE: Duration = Duration::from_secs(5 * 60);
/// An unknown `kid` refetches the key set at most this often, so that tokens with made-up kids
/// cannot turn into a flood of requests to Clerk.
const REFETCH_INTERVAL: Duration = Duration::from_secs(60);
/// After a failed fetch, it is not tried again for this long: with nothing cached callers are
/// answered "unavailable" meanwhile, with a cached set they are checked against it.
const RETRY_FAILED_FETCH_AFTER: Duration = Duration::from_secs(1);
/// The fetch runs inside a request that must be answered within 10 s.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// A JWK set holds a few keys; a larger answer is not one.
const MAX_JWKS_BYTES: usize = 256 * 1024;

/// The JWK set, cached for `max_age`, then refreshed by the next token that needs it. Fetches are
/// single-flight: callers that need a fetch under way wait for it and share its outcome; callers
/// whose key is in a cached set due for refresh are checked against it rather than wait for the
/// refresh another caller makes.
pub(super) struct Jwks {
    url: String,
    /// How long a fetched set is trusted before it is refreshed.
    max_age: Duration,
    /// `None` until a fetch succeeds. Read without waiting on a fetch in progress.
    keys: ArcSwapOption<Cached>,
    /// Fetches completed, successful or not: tells a caller that waited whether one happened.
    fetches: AtomicU64,
    fetch: tokio::sync::Mutex<FetchState>,
}

/// The latest key set fetched, and when it is next due for a refresh.
struct Cached {
    keys: Arc<KeySet>,
    /// `max_age` after the fetch; after a failed refresh, when to try again.
    refresh_at: Instant,
}

#[derive(Default)]
struct FetchState {
    /// Built on the first fetch, so that construction stays free of I/O.
    client: Option<reqwest::Client>,
    /// When an unknown `kid` last caused a fetch.
    last_refetch: Option<Instant>,
    /// When and why the latest fetch failed, if it did.
    failure: Option<(Instant, String)>,
}

impl Jwks {
    pub(super) fn new(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            max_age: KEY_SET_MAX_AGE,
            keys: ArcSwapOption::empty(),
            fetches: AtomicU64::new(0),
            fetch: tokio::sync::Mutex::new(FetchState::default()),
        }
    }

    /// Trusts a fetched set for `max_age` instead of `KEY_SET_MAX_AGE`.
    pub(super) fn set_max_age(&mut self, max_age: Duration) {
        self.max_age = max_age;
    }

    fn set_cached(&self, cached: Cached) {
        self.keys.store(Some(Arc::new(cached)));
    }

    /// The key for a token with this `kid` (or none): from the cache when it can answer, else
    /// after a fetch, this caller's or one it waited for.
    pub(super) async fn key(&self, kid: Option<&str>) -> Result<Arc<DecodingKey>, SessionError> {
        // Read before the cache: a fetch completing after this is seen as a changed count.
        let seen = self.fetches.load(Ordering::Acquire);
        let mut state = match self.keys.load_full() {
            None => self.fetch.lock().await,
            Some(cached) => {
                let lookup = cached.keys.find(kid);
                if Instant::now() < cached.refresh_at {
                    match lookup {
                        Lookup::Found(key) => return Ok(key),
                        // Only an unknown kid can be cured by refetching.
                        Lookup::NoKid(count) => return Err(no_kid(count)),
                        Lookup::Unknown => self.fetch.lock().await,
                    }
                } else {
                    // Due for a refresh. One caller makes it; while it runs, the others are
                    // checked against the set it replaces rather than queue behind a fetch
                    // that may take seconds.
                    match (self.fetch.try_lock(), lookup) {
                        (Ok(state), _) => state,
                        (Err(_), Lookup::Found(key)) => return Ok(key),
                        (Err(_), Lookup::NoKid(count)) => return Err(no_kid(count)),
                        (Err(_), Lookup::Unknown) => self.fetch.lock().await,
                    }
                }
            }
        };
        if self.fetches.load(Ordering::Acquire) != seen {
            // A fetch completed while we waited: its outcome is ours too.
            return self.after_fetch(kid, &state);
        }
        let cached = self.keys.load_full();
        match &cached {
            // Due for a refresh (or for a retry of a failed one): fetch, whatever the kid.
            Some(cached) if Instant::now() >= cached.refresh_at => {}
            // An unknown kid in a current set.
            Some(_) => {
                if state
                    .last_refetch
                    .is_some_and(|at| at.elapsed() < REFETCH_INTERVAL)
                {
                    tracing::debug!(kid, "unknown kid; key set refetched less than a minute ago");
                    return Err(unknown_kid());
                }
                state.last_refetch = Some(Instant::now());
            }
            None => {
                if let Some((at, problem)) = &state.failure
                    && at.elapsed() < RETRY_FAILED_FETCH_AFTER
                {
                    return Err(SessionError::KeysUnavailable(problem.clone()));
                }
            }
        }
        match self.download(&mut state).await {
            Ok(keys) => {
                tracing::debug!(keys = keys.0.len(), "fetched the Clerk JWK set");
                self.set_cached(Cached {
                    keys: Arc::new(keys),
                    refresh_at: Instant::now() + self.max_age,
                });
                state.failure = None;
            }
            Err(problem) => {
                match cached {
                    // The keys already fetched stay trusted; the refresh is tried again later.
                    Some(cached) => {
                        tracing::warn!(
                            event = "jwks_fetch_failed",
                            keys_kept = true,
                            %problem,
                            "could not refresh the Clerk JWK set; keeping the keys fetched before"
                        );
                        if Instant::now() >= cached.refresh_at {
                            self.set_cached(Cached {
                                keys: Arc::clone(&cached.keys),
                                refresh_at: Instant::now() + RETRY_FAILED_FETCH_AFTER,
                            });
                        }
                    }
                    None => tracing::warn!(
                        event = "jwks_fetch_failed",
                        keys_kept = false,
                        %problem,
                        "could not fetch the Clerk JWK set"
                    ),
                }
                state.failure = Some((Instant::now(), problem));
            }
        }
        self.fetches.fetch_add(1, Ordering::Release);
        self.after_fetch(kid, &state)
    }

    /// The answer once the latest fetch is known, whoever made it: against the set it fetched,
    /// or, when it failed, against the set fetched before, if any.
    fn after_fetch(
        &self,
        kid: Option<&str>,
        state: &FetchState,
    ) -> Result<Arc<DecodingKey>, SessionError> {
        let failure = || {
            state
                .failure
                .as_ref()
                .map(|(_, problem)| SessionError::KeysUnavailable(problem.clone()))
        };
        match self
            .keys
            .load()
            .as_ref()
            .map(|cached| cached.keys.find(kid))
        {
            Some(Lookup::Found(key)) => Ok(key),
            Some(Lookup::NoKid(count)) => Err(no_kid(count)),
            // An unknown kid cannot be told from a new key while the set cannot be fetched.
            Some(Lookup::Unknown) | None => Err(failure().unwrap_or_else(unknown_kid)),
        }
    }

    async fn download(&self, state: &mut FetchState) -> Result<KeySet, String> {
        let client = match &state.client {
            Some(client) => client.clone(),
            None => {
                let client = reqwest::Client::builder()
                    .timeout(FETCH_TIMEOUT)
                    .build()
                    .map_err(|e| format!("cannot build an HTTP client for the JWK set: {e}"))?;
                state.client.insert(client).clone()
            }
        };
        let url = &self.url;
        let mut response = client
            .get(url)
            .send()
            .await
            .map_err(|e| format!("fetching the JWK set at {url} failed: {e}"))?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("the JWK set at {url} answered {status}"));
        }
        let too_large = || format!("the JWK set at {url} is larger than {MAX_JWKS_BYTES} bytes");
        if response
            .content_length()
            .is_some_and(|len| len > MAX_JWKS_BYTES as u64)
        {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| format!("reading the JWK set at {url} failed: {e}"))?
        {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        KeySet::parse(&body).map_err(|e| format!("the answer from {url} is not a JWK set: {e}"))
    }
}

fn unknown_kid() -> SessionError {
    invalid("token kid is not in the JWK set")
}

fn no_kid(rs256_keys: usize) -> SessionError {
    invalid(format!(
        "token has no kid, and the JWK set holds {rs256_keys} RS256 keys rather than one"
    ))
}

/// The RS256 verification keys of a JWK set, with their kids, in the order published. Keys for
/// anything else (EC, symmetric, encryption, other algorithms) are left out, so that no token
/// can be checked against them.
struct KeySet(Vec<(Option<String>, Arc<DecodingKey>)>);

enum Lookup {
    Found(Arc<DecodingKey>),
    Unknown,
    /// The token has no `kid` and the set does not hold exactly one key; how many it holds.
    NoKid(usize),
}

impl KeySet {
    /// Each entry is read as a `jsonwebtoken` JWK on its own: `JwkSet`'s own parsing refuses the
    /// whole set over one entry it cannot read, and a key Clerk adds in a shape unknown here
    /// must not lock out the tokens signed with the others.
    fn parse(body: &[u8]) -> Result<Self, serde_json::Error> {
        #[derive(Deserialize)]
        struct Entries {
            keys: Vec<serde_json::Value>,
        }
        let entries: Entries = serde_json::from_slice(body)?;
        let keys = entries
            .keys
            .into_iter()
            .filter_map(|entry| serde_json::from_value::<Jwk>(entry).ok())
            .filter(verifies_rs256)
            .filter_map(|jwk| {
                let key = DecodingKey::from_jwk(&jwk).ok()?;
                Some((jwk.common.key_id, Arc::new(key)))
            })
            .collect();
        Ok(Self(keys))
    }

    fn find(&self, kid: Option<&str>) -> Lookup {
        match kid {
            Some(kid) => self
                .0
                .iter()
                .find(|(key_id, _)| key_id.as_deref() == Some(kid))
                .map_or(Lookup::Unknown, |(_, key)| Lookup::Found(Arc::clone(key))),
            // Without a kid there is no telling keys apart, so only a lone key will do.
            None => match self.0.as_slice() {
                [(_, key)] => Lookup::Found(Arc::clone(key)),
                keys => Lookup::NoKid(keys.len()),
            },
        }
    }
}

/// An RSA key that may sign RS256: `alg` and `use`, when present, must say so.
fn verifies_rs256(jwk: &Jwk) -> bool {
    let rsa = matches!(jwk.algorithm, AlgorithmParameters::RSA(_));
    let rs256 = jwk
        .common
        .key_algorithm
        .is_none_or(|alg| alg == KeyAlgorithm::RS256);
    let signing = jwk
        .common
        .public_key_use
        .as_ref()
        .is_none_or(|key_use| *key_use == PublicKeyUse::Signature);
    rsa && rs256 && signing
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::Algorithm;
    use serde_json::json;

    use super::*;
    use crate::session::tests::test_key;

    #[test]
    fn key_set_keeps_only_rs256_signing_keys() {
        let key = Jwk::from_decoding_key(
            &DecodingKey::from_rsa_pem(test_key().public_pem.as_bytes()).unwrap(),
            Some(Algorithm::RS256),
        )
        .unwrap();
        let AlgorithmParameters::RSA(rsa) = key.algorithm else {
            panic!("an RSA key")
        };
        let (n, e) = (rsa.n.as_str(), rsa.e.as_str());
        let set = json!({"keys": [
            {"kty": "RSA", "kid": "ins_a", "use": "sig", "alg": "RS256", "n": n, "e": e},
            {"kty": "RSA", "kid": "ins_384", "alg": "RS384", "n": n, "e": e},
            {"kty": "RSA", "kid": "ins_enc", "use": "enc", "n": n, "e": e},
            {"kty": "oct", "kid": "ins_hmac", "k": "c2VjcmV0"},
            {"kty": "EC", "kid": "ins_ec", "crv": "P-256", "x": "AA", "y": "AA"},
            {"kty": "RSA", "kid": "ins_bad", "n": 1, "e": e},
            {"kty": "RSA", "kid": "ins_use", "use": 1, "n": n, "e": e},
            {"kty": "RSA", "kid": "ins_notb64", "n": "!!", "e": e},
            {"kty": "RSA", "n": n, "e": e, "future": {"field": true}},
        ]});
        let keys = KeySet::parse(set.to_string().as_bytes()).unwrap();
        assert!(matches!(keys.find(Some("ins_a")), Lookup::Found(_)));
        for skipped in [
            "ins_384",
            "ins_enc",
            "ins_hmac",
            "ins_ec",
            "ins_bad",
            "ins_use",
            "ins_notb64",
        ] {
            assert!(
                matches!(keys.find(Some(skipped)), Lookup::Unknown),
                "{skipped}"
            );
        }
        assert!(matches!(keys.find(None), Lookup::NoKid(2)));
        let lone = json!({"keys": [{"kty": "RSA", "n": n, "e": e}]});
        let lone = KeySet::parse(lone.to_string().as_bytes()).unwrap();
        assert!(matches!(lone.find(None), Lookup::Found(_)));
        for not_a_set in [&b"<html>"[..], b"{}", b"{\"keys\": {}}"] {
            assert!(KeySet::parse(not_a_set).is_err());
        }
    }
}
