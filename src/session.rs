//! Clerk session tokens: RS256 JWTs checked against the configured PEM key or the instance's JWK
//! set, without a network call per request.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

/// Clerk session-token verification, for `SyncMe`.
#[derive(Debug, Clone)]
pub struct SessionSettings {
    pub key: SessionKey,
    /// Origins allowed in `azp`, without trailing slashes.
    pub authorized_parties: Vec<String>,
    /// What `iss` must equal, when set.
    pub issuer: Option<String>,
}

/// Where the key that signs session tokens comes from.
#[derive(Clone)]
pub enum SessionKey {
    /// `CLERK_JWT_KEY`: the PEM public key from the Clerk dashboard, parsed once (`pem_key`);
    /// no network needed.
    Pem(Arc<DecodingKey>),
    /// `CLERK_JWKS_URL`: the instance's JWK set, fetched when first needed.
    Jwks(String),
}

impl std::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Pem(_) => f.write_str("Pem(RSA public key)"),
            Self::Jwks(url) => f.debug_tuple("Jwks").field(url).finish(),
        }
    }
}

/// Clerk signs with RS256 only. Configuration decides this, never the token's header: trusting
/// the header is how `none` and HS256-keyed-with-the-public-key forgeries get in.
const ALGORITHM: Algorithm = Algorithm::RS256;
/// Clock skew allowed on `exp`, `nbf` and `iat`, as @clerk/backend allows by default.
const LEEWAY_SECONDS: u64 = 5;
/// Clerk's tokens are about 1 KB; anything far larger is not one, and is not worth parsing.
const MAX_TOKEN_LEN: usize = 16 * 1024;
/// An unknown `kid` refetches the key set at most this often, so that tokens with made-up kids
/// cannot turn into a flood of requests to Clerk.
const REFETCH_INTERVAL: Duration = Duration::from_secs(60);
/// After a failed fetch, it is not tried again for this long: with nothing cached callers are
/// answered "unavailable" meanwhile, with a cached set they are checked against it.
const RETRY_FAILED_FETCH_AFTER: Duration = Duration::from_secs(1);
/// How long a fetched key set is trusted before the next token refreshes it, as @clerk/backend
/// caches it: a key Clerk stops publishing is refused within this long, without a restart.
pub const KEY_SET_MAX_AGE: Duration = Duration::from_secs(5 * 60);
/// The fetch runs inside a request that must be answered within 10 s.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// A JWK set holds a few keys; a larger answer is not one.
const MAX_JWKS_BYTES: usize = 256 * 1024;
const USER_ID_PREFIX: &str = "user_";
/// Cosmos DB's limit on an item id, in bytes.
const MAX_USER_ID_LEN: usize = 255;

/// A verified session: whose it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// `sub`, a Clerk user id (`user_...`).
    pub user_id: String,
    /// `sid`, when the token carries one.
    pub session_id: Option<String>,
}

/// Why a token was not accepted. Messages never include the token.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// Missing, malformed, expired, foreign or forged: answered 401 with `WWW-Authenticate: Bearer`.
    #[error("{0}")]
    Invalid(String),
    /// The key set could not be fetched (network, 5xx, unparsable): answered 503 with
    /// `Retry-After`.
    #[error("{0}")]
    KeysUnavailable(String),
}

fn invalid(reason: impl Into<String>) -> SessionError {
    SessionError::Invalid(reason.into())
}

/// Verifies Clerk session tokens. Built once and shared (`Arc`): it holds the JWK set cache.
pub struct SessionVerifier {
    keys: KeySource,
    validation: Validation,
    authorized_parties: Vec<String>,
}

enum KeySource {
    /// The configured PEM key.
    Pem(Arc<DecodingKey>),
    Jwks(Jwks),
}

impl SessionVerifier {
    /// Makes no network call: a JWK set is fetched when the first token needs it.
    pub fn new(settings: &SessionSettings) -> Self {
        let keys = match &settings.key {
            SessionKey::Pem(key) => KeySource::Pem(Arc::clone(key)),
            SessionKey::Jwks(url) => KeySource::Jwks(Jwks::new(url, KEY_SET_MAX_AGE)),
        };
        let mut validation = Validation::new(ALGORITHM);
        validation.leeway = LEEWAY_SECONDS;
        validation.validate_nbf = true;
        // Session tokens carry no audience; one added by a custom claim is not ours to judge.
        validation.validate_aud = false;
        let mut required = vec!["exp", "sub"];
        if let Some(issuer) = &settings.issuer {
            validation.set_issuer(&[issuer]);
            // Without this a token lacking `iss` would pass the issuer check.
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
        Self {
            keys,
            validation,
            authorized_parties: settings.authorized_parties.clone(),
        }
    }

    /// The same verifier with the fetched key set trusted for `max_age` instead of
    /// `KEY_SET_MAX_AGE`, so that tests need not wait five minutes. No effect with a PEM key.
    #[doc(hidden)]
    pub fn with_key_set_max_age(mut self, max_age: Duration) -> Self {
        if let KeySource::Jwks(jwks) = &mut self.keys {
            jwks.max_age = max_age;
        }
        self
    }

    /// Verifies an `Authorization` header value, `Bearer <token>`.
    pub async fn verify(&self, authorization: Option<&str>) -> Result<Session, SessionError> {
        let token = bearer_token(authorization)?;
        let header = jsonwebtoken::decode_header(token).map_err(|_| {
            invalid("token header is malformed or names an algorithm other than RS256")
        })?;
        if header.alg != ALGORITHM {
            return Err(invalid(format!(
                "token is signed with {:?}; only RS256 is accepted",
                header.alg
            )));
        }
        if header.crit.is_some() {
            // RFC 7515: a recipient must refuse extensions it does not understand.
            return Err(invalid("token header lists critical extensions"));
        }
        let kid = header.kid.as_deref();
        let key = match &self.keys {
            // Clerk's PEM is the instance's one signing key, whatever kid the token names.
            KeySource::Pem(key) => Arc::clone(key),
            KeySource::Jwks(jwks) => jwks.key(kid).await?,
        };
        let claims = jsonwebtoken::decode::<Claims>(token, &key, &self.validation)
            .map_err(|e| invalid(refusal(e.kind())))?
            .claims;
        let session = self.check_claims(claims)?;
        tracing::debug!(kid, sub = %session.user_id, "session token verified");
        Ok(session)
    }

    /// What jsonwebtoken's `Validation` does not cover: `azp`, `iat` and the shape of `sub`.
    fn check_claims(&self, claims: Claims) -> Result<Session, SessionError> {
        // A token without `azp` is refused too, as current @clerk/backend does once authorized
        // parties are configured: `azp` is what stops another site's token from being replayed.
        match &claims.azp {
            None => return Err(invalid("token has no azp")),
            Some(azp) if !self.authorized_parties.contains(azp) => {
                return Err(invalid("token azp is not an authorized party"));
            }
            Some(_) => {}
        }
        let now = jsonwebtoken::get_current_timestamp();
        if claims.iat.is_some_and(|iat| iat > now + LEEWAY_SECONDS) {
            return Err(invalid("token is issued in the future (iat)"));
        }
        let sub = claims.sub.unwrap_or_default();
        if !is_user_id(&sub) {
            return Err(invalid("token sub is not a Clerk user id"));
        }
        Ok(Session {
            user_id: sub,
            session_id: claims.sid,
        })
    }
}

/// The claims read here; any others are ignored. Presence and time checks are `Validation`'s.
#[derive(Deserialize)]
struct Claims {
    sub: Option<String>,
    azp: Option<String>,
    sid: Option<String>,
    iat: Option<u64>,
}

/// `user_` and then characters Clerk ids are made of, which also keeps the id safe in a URL path
/// and as a Cosmos item id.
fn is_user_id(sub: &str) -> bool {
    sub.len() <= MAX_USER_ID_LEN
        && sub.strip_prefix(USER_ID_PREFIX).is_some_and(|rest| {
            !rest.is_empty()
                && rest
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        })
}

fn bearer_token(authorization: Option<&str>) -> Result<&str, SessionError> {
    let value = authorization.ok_or_else(|| invalid("no Authorization header"))?;
    let (scheme, token) = value
        .trim()
        .split_once(' ')
        .ok_or_else(|| invalid("Authorization is not a Bearer token"))?;
    // The scheme is case-insensitive (RFC 9110).
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(invalid("Authorization is not a Bearer token"));
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(invalid("Authorization has an empty Bearer token"));
    }
    if token.len() > MAX_TOKEN_LEN {
        return Err(invalid("token is too long to be a Clerk session token"));
    }
    let base64url_or_dot = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.');
    if token.split('.').count() != 3 || !token.bytes().all(base64url_or_dot) {
        return Err(invalid("token is not a JWT (header.payload.signature)"));
    }
    Ok(token)
}

/// A one-line reason for jsonwebtoken's refusal; no token content.
fn refusal(kind: &ErrorKind) -> String {
    match kind {
        ErrorKind::ExpiredSignature => "token has expired".into(),
        ErrorKind::ImmatureSignature => "token is not valid yet (nbf)".into(),
        ErrorKind::InvalidSignature => "token signature does not match the key".into(),
        ErrorKind::InvalidIssuer => "token iss is not the configured issuer".into(),
        ErrorKind::InvalidAlgorithm => "token algorithm is not RS256".into(),
        ErrorKind::MissingRequiredClaim(claim) => format!("token has no {claim}"),
        ErrorKind::InvalidClaimFormat(claim) => format!("token claim {claim} is malformed"),
        ErrorKind::InvalidRsaKey(_) | ErrorKind::InvalidKeyFormat => {
            "the key for this token is not a usable RSA key".into()
        }
        _ => "token is malformed".into(),
    }
}

/// The PEM public key from the Clerk dashboard as a verification key. App settings often carry it
/// on one line, with literal `\n` sequences for its newlines; both forms are accepted. The error
/// completes a sentence that starts with the variable's name, and never echoes the value.
pub fn pem_key(pem: &str) -> Result<DecodingKey, String> {
    let pem = pem.trim().replace("\\n", "\n");
    if pem.contains("PRIVATE KEY") {
        return Err(
            "holds a private key; set the public key (PEM) from the Clerk dashboard's \
                    API keys page, and treat this private key as leaked"
                .into(),
        );
    }
    let not_rsa = || {
        "is not an RSA public key in PEM form (-----BEGIN PUBLIC KEY----- ...); copy the PEM \
         public key from the Clerk dashboard's API keys page"
            .to_owned()
    };
    let key = DecodingKey::from_rsa_pem(pem.as_bytes()).map_err(|_| not_rsa())?;
    // `from_rsa_pem` only unwraps the PEM; having aws-lc read the key out of it proves it usable.
    Jwk::from_decoding_key(&key, Some(ALGORITHM)).map_err(|_| not_rsa())?;
    Ok(key)
}

/// The JWK set at `CLERK_JWKS_URL`, fetched on first use and cached for `max_age`, then refreshed
/// by the next token that needs it. Fetches are single-flight: callers that need a fetch under
/// way wait for it and share its outcome; callers whose key is in a cached set due for refresh
/// are checked against it rather than wait for the refresh another caller makes.
struct Jwks {
    url: String,
    /// How long a fetched set is trusted before it is refreshed.
    max_age: Duration,
    /// `None` until a fetch succeeds. Read without waiting on a fetch in progress.
    keys: RwLock<Option<Arc<Cached>>>,
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
    fn new(url: &str, max_age: Duration) -> Self {
        Self {
            url: url.to_owned(),
            max_age,
            keys: RwLock::new(None),
            fetches: AtomicU64::new(0),
            fetch: tokio::sync::Mutex::new(FetchState::default()),
        }
    }

    fn cached(&self) -> Option<Arc<Cached>> {
        self.keys
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn set_cached(&self, cached: Cached) {
        *self
            .keys
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(Arc::new(cached));
    }

    async fn key(&self, kid: Option<&str>) -> Result<Arc<DecodingKey>, SessionError> {
        // Read before the cache: a fetch completing after this is seen as a changed count.
        let seen = self.fetches.load(Ordering::Acquire);
        let mut state = match self.cached() {
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
        let cached = self.cached();
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
                tracing::debug!(keys = keys.by_kid.len(), "fetched the Clerk JWK set");
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
                    None => tracing::warn!(%problem, "could not fetch the Clerk JWK set"),
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
        match self.cached().map(|cached| cached.keys.find(kid)) {
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

/// The RS256 verification keys of a JWK set. Keys for anything else (EC, symmetric, encryption,
/// other algorithms) are left out, so that no token can be checked against them.
struct KeySet {
    by_kid: HashMap<String, Arc<DecodingKey>>,
    /// Every RS256 key, for the count that decides whether a token without `kid` has a key.
    all: Vec<Arc<DecodingKey>>,
}

enum Lookup {
    Found(Arc<DecodingKey>),
    Unknown,
    /// The token has no `kid` and the set does not hold exactly one key; how many it holds.
    NoKid(usize),
}

/// One entry of `keys`, read leniently: an entry of a shape we do not use is skipped, not fatal.
#[derive(Deserialize)]
struct JwkEntry {
    kty: Option<String>,
    kid: Option<String>,
    alg: Option<String>,
    #[serde(rename = "use")]
    key_use: Option<String>,
    n: Option<String>,
    e: Option<String>,
}

impl KeySet {
    fn parse(body: &[u8]) -> Result<Self, serde_json::Error> {
        #[derive(Deserialize)]
        struct Set {
            keys: Vec<serde_json::Value>,
        }
        let set: Set = serde_json::from_slice(body)?;
        let mut keys = KeySet {
            by_kid: HashMap::new(),
            all: Vec::new(),
        };
        for entry in set.keys {
            let Ok(entry) = serde_json::from_value::<JwkEntry>(entry) else {
                continue;
            };
            let rsa = entry.kty.as_deref() == Some("RSA");
            let rs256 = entry.alg.as_deref().is_none_or(|alg| alg == "RS256");
            let signing = entry
                .key_use
                .as_deref()
                .is_none_or(|key_use| key_use == "sig");
            let (Some(n), Some(e)) = (&entry.n, &entry.e) else {
                continue;
            };
            if !(rsa && rs256 && signing) {
                continue;
            }
            let Ok(key) = DecodingKey::from_rsa_components(n, e) else {
                continue;
            };
            let key = Arc::new(key);
            if let Some(kid) = entry.kid {
                keys.by_kid.insert(kid, Arc::clone(&key));
            }
            keys.all.push(key);
        }
        Ok(keys)
    }

    fn find(&self, kid: Option<&str>) -> Lookup {
        match kid {
            Some(kid) => self
                .by_kid
                .get(kid)
                .map_or(Lookup::Unknown, |key| Lookup::Found(Arc::clone(key))),
            // Without a kid there is no telling keys apart, so only a lone key will do.
            None => match self.all.as_slice() {
                [key] => Lookup::Found(Arc::clone(key)),
                keys => Lookup::NoKid(keys.len()),
            },
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::OnceLock;

    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::rsa::{KeyPair, KeySize};
    use aws_lc_rs::signature::KeyPair as _;
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::{Value, json};

    use super::*;

    const PARTY: &str = "https://app.example.com";
    const ISSUER: &str = "https://clerk.example.com";

    pub(crate) struct TestKey {
        pub(crate) private: EncodingKey,
        pub(crate) public_pem: String,
    }

    fn pem_block(label: &str, der: &[u8]) -> String {
        let base64 = STANDARD.encode(der);
        let lines: Vec<&str> = base64
            .as_bytes()
            .chunks(64)
            .map(|line| std::str::from_utf8(line).unwrap())
            .collect();
        format!(
            "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
            lines.join("\n")
        )
    }

    /// A throwaway RSA key, made once per test run; no private key lives in the repository.
    pub(crate) fn test_key() -> &'static TestKey {
        static KEY: OnceLock<TestKey> = OnceLock::new();
        KEY.get_or_init(|| {
            let pair = KeyPair::generate(KeySize::Rsa2048).unwrap();
            let private = pem_block("PRIVATE KEY", pair.as_der().unwrap().as_ref());
            TestKey {
                private: EncodingKey::from_rsa_pem(private.as_bytes()).unwrap(),
                public_pem: pem_block("PUBLIC KEY", pair.public_key().as_der().unwrap().as_ref()),
            }
        })
    }

    fn claims() -> Value {
        let now = jsonwebtoken::get_current_timestamp();
        json!({
            "sub": "user_2abc", "sid": "sess_2abc", "azp": PARTY, "iss": ISSUER,
            "exp": now + 60, "nbf": now - 10, "iat": now - 10, "v": 2, "fva": [0, -1],
        })
    }

    fn with(changes: Value) -> Value {
        let mut claims = claims();
        for (name, value) in changes.as_object().unwrap() {
            match value {
                Value::Null => claims.as_object_mut().unwrap().remove(name),
                value => claims
                    .as_object_mut()
                    .unwrap()
                    .insert(name.clone(), value.clone()),
            };
        }
        claims
    }

    fn pem(pem: &str) -> SessionKey {
        SessionKey::Pem(Arc::new(pem_key(pem).unwrap()))
    }

    fn sign(claims: &Value) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some("ins_whatever".into());
        jsonwebtoken::encode(&header, claims, &test_key().private).unwrap()
    }

    fn verifier(issuer: Option<&str>) -> SessionVerifier {
        SessionVerifier::new(&SessionSettings {
            key: pem(&test_key().public_pem),
            authorized_parties: vec![PARTY.into(), "http://localhost:3000".into()],
            issuer: issuer.map(str::to_owned),
        })
    }

    async fn verify(verifier: &SessionVerifier, token: &str) -> Result<Session, SessionError> {
        verifier.verify(Some(&format!("Bearer {token}"))).await
    }

    fn refused(result: Result<Session, SessionError>) -> String {
        match result {
            Err(SessionError::Invalid(reason)) => reason,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn accepts_a_clerk_token_against_the_pem_whatever_its_kid() {
        let session = verify(&verifier(Some(ISSUER)), &sign(&claims()))
            .await
            .unwrap();
        assert_eq!(
            session,
            Session {
                user_id: "user_2abc".into(),
                session_id: Some("sess_2abc".into()),
            }
        );
    }

    #[tokio::test]
    async fn accepts_the_pem_with_literal_backslash_n_as_app_settings_carry_it() {
        let one_line = test_key().public_pem.replace('\n', "\\n");
        let verifier = SessionVerifier::new(&SessionSettings {
            key: pem(&one_line),
            authorized_parties: vec![PARTY.into()],
            issuer: None,
        });
        verify(&verifier, &sign(&claims())).await.unwrap();
    }

    #[tokio::test]
    async fn refuses_hs256_keyed_with_the_public_pem() {
        let forged = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims(),
            &EncodingKey::from_secret(test_key().public_pem.as_bytes()),
        )
        .unwrap();
        let reason = refused(verify(&verifier(None), &forged).await);
        assert!(reason.contains("only RS256"), "{reason}");
    }

    #[tokio::test]
    async fn checks_azp_iat_sub_and_iss_beyond_the_signature() {
        let verifier = verifier(Some(ISSUER));
        let cases = [
            (json!({"azp": "https://evil.example"}), "azp is not"),
            (json!({"azp": null}), "no azp"),
            (json!({"azp": "https://app.example.com/"}), "azp is not"),
            (
                json!({"iat": jsonwebtoken::get_current_timestamp() + 60}),
                "iat",
            ),
            (json!({"sub": "org_2abc"}), "sub is not"),
            (json!({"sub": "user_"}), "sub is not"),
            (json!({"sub": "user_2abc/../x"}), "sub is not"),
            (json!({"sub": 42}), "malformed"),
            (json!({"sub": null}), "no sub"),
            (json!({"iss": null}), "no iss"),
            (json!({"iss": "https://clerk.other.example"}), "iss is not"),
            (json!({"exp": null}), "no exp"),
            (json!({"exp": "tomorrow"}), "exp"),
        ];
        for (case, reason) in cases {
            let refusal = refused(verify(&verifier, &sign(&with(case.clone()))).await);
            assert!(refusal.contains(reason), "{case}: {refusal}");
        }
    }

    #[test]
    fn takes_only_a_bearer_jwt_from_authorization() {
        assert_eq!(bearer_token(Some("Bearer a.b.c")).unwrap(), "a.b.c");
        assert_eq!(bearer_token(Some(" bearer  a-_.b.c ")).unwrap(), "a-_.b.c");
        let huge = format!("Bearer {}.b.c", "a".repeat(MAX_TOKEN_LEN));
        for refused in [
            None,
            Some(""),
            Some("Bearer"),
            Some("Bearer "),
            Some("Basic dXNlcjpwYXNz"),
            Some("Bearer a.b"),
            Some("Bearer a.b.c.d"),
            Some("Bearer a.b.c d"),
            Some("Bearer a+b.c.d/"),
            Some(huge.as_str()),
        ] {
            assert!(bearer_token(refused).is_err(), "{refused:?}");
        }
    }

    #[test]
    fn pem_key_refuses_private_keys_and_non_rsa_without_echoing() {
        let private =
            "-----BEGIN PRIVATE KEY-----\nTUlJRXZRSUJBREFOQmdr\n-----END PRIVATE KEY-----";
        let problem = pem_key(private).unwrap_err();
        assert!(problem.contains("private key"), "{problem}");
        assert!(!problem.contains("TUlJ"), "{problem}");
        let ec = aws_lc_rs::signature::EcdsaKeyPair::generate(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        )
        .unwrap();
        let ec_public = pem_block("PUBLIC KEY", ec.public_key().as_der().unwrap().as_ref());
        for not_rsa in [
            ec_public.as_str(),
            "",
            "garbage",
            "-----BEGIN PUBLIC KEY-----\n",
        ] {
            let problem = pem_key(not_rsa).unwrap_err();
            assert!(problem.contains("not an RSA public key"), "{problem}");
        }
        pem_key(&test_key().public_pem).unwrap();
    }

    #[test]
    fn key_set_keeps_only_rs256_signing_keys() {
        let key = Jwk::from_decoding_key(
            &DecodingKey::from_rsa_pem(test_key().public_pem.as_bytes()).unwrap(),
            Some(Algorithm::RS256),
        )
        .unwrap();
        let jsonwebtoken::jwk::AlgorithmParameters::RSA(rsa) = key.algorithm else {
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
            {"kty": "RSA", "n": n, "e": e, "future": {"field": true}},
        ]});
        let keys = KeySet::parse(set.to_string().as_bytes()).unwrap();
        assert!(matches!(keys.find(Some("ins_a")), Lookup::Found(_)));
        for skipped in ["ins_384", "ins_enc", "ins_hmac", "ins_ec", "ins_bad"] {
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
