//! Clerk session tokens: RS256 JWTs checked against the configured PEM key or the instance's JWK
//! set (`jwks`, its cache), without a network call per request, and judged as @clerk/backend
//! judges them: the header's `typ`, the claims, then whether the session is still pending.

mod jwks;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::Value;

use self::jwks::Jwks;
pub use self::jwks::KEY_SET_MAX_AGE;
use crate::sync::item::{ItemId, Kind};

/// Clerk session-token verification, for `SyncMe`.
#[derive(Debug, Clone)]
pub struct SessionSettings {
    pub key: SessionKey,
    /// Origins allowed in `azp`, without trailing slashes.
    pub authorized_parties: Vec<String>,
    /// What `iss` must equal, when set.
    pub issuer: Option<String>,
    /// Accept sessions whose `sts` is `pending` (signed in, but a step such as choosing an
    /// organization is still to do), which @clerk/backend treats as signed out by default.
    pub allow_pending_sessions: bool,
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
/// The header `typ` of a session token. @clerk/backend's `assertHeaderType` compares it
/// exactly, so `jwt` is refused as `at+jwt` (an OAuth access token) is.
const SESSION_TOKEN_TYPE: &str = "JWT";
/// The `sts` of a session that has not finished signing in.
const PENDING: &str = "pending";
/// Clock skew allowed on `exp`, `nbf` and `iat`, as @clerk/backend allows by default.
const LEEWAY_SECONDS: u64 = 5;
/// Clerk's tokens are about 1 KB; anything far larger is not one, and is not worth parsing.
const MAX_TOKEN_LEN: usize = 16 * 1024;

/// A verified session: whose it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// `sub`, a Clerk user id (`user_...`).
    pub user_id: ItemId,
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
    allow_pending_sessions: bool,
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
            SessionKey::Jwks(url) => KeySource::Jwks(Jwks::new(url)),
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
            allow_pending_sessions: settings.allow_pending_sessions,
        }
    }

    /// The same verifier with the fetched key set trusted for `max_age` instead of
    /// `KEY_SET_MAX_AGE`, so that tests need not wait five minutes. No effect with a PEM key.
    #[doc(hidden)]
    pub fn with_key_set_max_age(mut self, max_age: Duration) -> Self {
        if let KeySource::Jwks(jwks) = &mut self.keys {
            jwks.set_max_age(max_age);
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
        check_type(token)?;
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

    /// What jsonwebtoken's `Validation` does not cover: `azp`, `iat`, the shape of `sub`, and
    /// whether the session is pending.
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
        let user_id = ItemId::parse_as(Kind::User, &sub)
            .map_err(|_| invalid("token sub is not a Clerk user id"))?;
        // As @clerk/backend's `treatPendingAsSignedOut` (on by default): the user has signed in,
        // but a step such as choosing an organization is still to do.
        let pending = claims.sts.as_ref().and_then(Value::as_str) == Some(PENDING);
        if pending && !self.allow_pending_sessions {
            return Err(invalid(
                "the session is pending (sts): signing in is not finished",
            ));
        }
        Ok(Session {
            user_id,
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
    /// Any JSON: only the string `pending` means anything here, as in @clerk/backend.
    sts: Option<Value>,
}

/// The header's `typ` as @clerk/backend's `assertHeaderType` judges it by default: absent is
/// fine; present, it must be exactly `JWT`. Clerk signs other tokens with the instance's key
/// too (OAuth access tokens are `at+jwt`), and they are not sessions. Read from the raw header,
/// where jsonwebtoken's `Header` would take `"typ": null` for no `typ` at all.
fn check_type(token: &str) -> Result<(), SessionError> {
    let (header, _) = token.split_once('.').unwrap_or_default();
    let header: serde_json::Map<String, Value> = URL_SAFE_NO_PAD
        .decode(header)
        .ok()
        .and_then(|json| serde_json::from_slice(&json).ok())
        .ok_or_else(|| invalid("token header is malformed"))?;
    match header.get("typ") {
        None => Ok(()),
        Some(Value::String(typ)) if typ == SESSION_TOKEN_TYPE => Ok(()),
        Some(_) => Err(invalid(
            "token typ is not JWT: not a session token (an OAuth access token is at+jwt)",
        )),
    }
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

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::OnceLock;

    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::rsa::{KeyPair, KeySize};
    use aws_lc_rs::signature::KeyPair as _;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::{Value, json};

    use super::*;

    const PARTY: &str = "https://app.example.com";
    const ISSUER: &str = "https://clerk.example.com";

    pub(crate) struct TestKey {
        pub(crate) private: EncodingKey,
        pub(crate) public_pem: String,
    }

    /// PEM as Clerk's dashboard shows it: the `pem` crate's encoder, with LF line endings.
    fn pem_block(label: &str, der: &[u8]) -> String {
        let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
        pem::encode_config(&pem::Pem::new(label, der), config)
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

    fn settings(issuer: Option<&str>) -> SessionSettings {
        SessionSettings {
            key: pem(&test_key().public_pem),
            authorized_parties: vec![PARTY.into(), "http://localhost:3000".into()],
            issuer: issuer.map(str::to_owned),
            allow_pending_sessions: false,
        }
    }

    fn verifier(issuer: Option<&str>) -> SessionVerifier {
        SessionVerifier::new(&settings(issuer))
    }

    async fn verify(verifier: &SessionVerifier, token: &str) -> Result<Session, SessionError> {
        verifier.verify(Some(&format!("Bearer {token}"))).await
    }

    fn refused<T: std::fmt::Debug>(result: Result<T, SessionError>) -> String {
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
                user_id: ItemId::parse("user_2abc").unwrap(),
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
            allow_pending_sessions: false,
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
    fn typ_is_judged_as_clerk_backend_does_absent_or_exactly_jwt() {
        let token =
            |header: Value| format!("{}.e30.c2ln", URL_SAFE_NO_PAD.encode(header.to_string()));
        for accepted in [
            json!({"alg": "RS256"}),
            json!({"alg": "RS256", "typ": "JWT"}),
        ] {
            assert!(check_type(&token(accepted.clone())).is_ok(), "{accepted}");
        }
        for typ in [
            json!("at+jwt"),
            json!("application/at+jwt"),
            json!("jwt"),
            json!("Jwt"),
            json!("JWT "),
            json!(""),
            Value::Null,
            json!(1),
            json!(["JWT"]),
        ] {
            let refusal = refused(check_type(&token(json!({"alg": "RS256", "typ": typ}))));
            assert!(refusal.contains("typ is not JWT"), "{typ}: {refusal}");
        }
    }

    #[tokio::test]
    async fn a_pending_session_is_refused_unless_allowed() {
        let pending = sign(&with(json!({"sts": "pending"})));
        let refusal = refused(verify(&verifier(None), &pending).await);
        assert!(refusal.contains("pending"), "{refusal}");
        // Only the string `pending` is: other statuses, and none at all (v1 tokens), are not.
        for sts in [json!("active"), json!("Pending"), json!(null), json!(1)] {
            let token = sign(&with(json!({"sts": sts})));
            verify(&verifier(None), &token).await.unwrap();
        }
        let allowing = SessionVerifier::new(&SessionSettings {
            allow_pending_sessions: true,
            ..settings(None)
        });
        verify(&allowing, &pending).await.unwrap();
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
}
