//! A test double of Clerk's JWK set endpoint (`GET /.well-known/jwks.json` on an instance's
//! Frontend API), which can rotate keys, fail, hang and count its fetches; and the other side of
//! it: throwaway RSA keys and a builder for Clerk session tokens, honest or forged.
//!
//! Keys are generated when a test runs, so no private key lives in the repository.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use serde_json::{Map, Value, json};

use crate::loopback::LoopbackServer;

/// The origin the tokens are issued to, and the verifier's authorized party.
pub const PARTY: &str = "https://app.example.com";
/// The Frontend API URL the tokens name as `iss`.
pub const ISSUER: &str = "https://clerk.example.com";
pub const USER_ID: &str = "user_2NNEqL2nrIRdJ194ndJqAHwEfxC";
pub const SESSION_ID: &str = "sess_2NNEqOpfHQrfGZOHkkvpqrX9Yzq";
const JWKS_PATH: &str = "/.well-known/jwks.json";

/// A throwaway RSA signing key with its kid, as Clerk publishes it.
pub struct TestKey {
    kid: String,
    private: EncodingKey,
    public_pem: String,
    n: String,
}

impl TestKey {
    pub fn generate(kid: &str) -> Self {
        let pair = KeyPair::generate(KeySize::Rsa2048).unwrap();
        let private = pem("PRIVATE KEY", pair.as_der().unwrap().as_ref());
        let public_pem = pem("PUBLIC KEY", pair.public_key().as_der().unwrap().as_ref());
        let public = DecodingKey::from_rsa_pem(public_pem.as_bytes()).unwrap();
        let jwk = Jwk::from_decoding_key(&public, Some(Algorithm::RS256)).unwrap();
        let AlgorithmParameters::RSA(rsa) = jwk.algorithm else {
            unreachable!("an RSA key gives an RSA JWK")
        };
        assert_eq!(rsa.e, "AQAB", "aws-lc generates keys with e = 65537");
        Self {
            kid: kid.to_owned(),
            private: EncodingKey::from_rsa_pem(private.as_bytes()).unwrap(),
            public_pem,
            n: rsa.n,
        }
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key as the Clerk dashboard shows it (`CLERK_JWT_KEY`).
    pub fn public_pem(&self) -> &str {
        &self.public_pem
    }

    /// The modulus, base64url: what an HS256 forger might try as the secret.
    pub fn n(&self) -> &str {
        &self.n
    }

    pub fn encoding_key(&self) -> &EncodingKey {
        &self.private
    }

    /// This key as an entry of Clerk's JWK set.
    pub fn jwk(&self) -> Value {
        json!({"kty": "RSA", "kid": self.kid, "use": "sig", "alg": "RS256", "n": self.n, "e": "AQAB"})
    }
}

fn pem(label: &str, der: &[u8]) -> String {
    let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    pem::encode_config(&pem::Pem::new(label, der), config)
}

/// A throwaway P-256 key, for tokens signed ES256.
pub fn ec_key() -> EncodingKey {
    let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
    EncodingKey::from_ec_der(pair.to_pkcs8v1().unwrap().as_ref())
}

pub fn now() -> i64 {
    jsonwebtoken::get_current_timestamp() as i64
}

/// `Authorization: Bearer <token>`.
pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[derive(Clone)]
enum Kid {
    /// The kid of whichever key signs.
    Signer,
    Named(String),
    Absent,
}

/// A session token as Clerk issues it (v2 claims, 60 s of life, RS256 with the signer's kid),
/// changed one header parameter or claim at a time.
#[derive(Clone)]
pub struct TokenBuilder {
    kid: Kid,
    header: Map<String, Value>,
    claims: Map<String, Value>,
}

impl Default for TokenBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl TokenBuilder {
    pub fn new() -> Self {
        let now = now();
        let Value::Object(claims) = json!({
            "azp": PARTY,
            "exp": now + 60,
            "fva": [0, -1],
            "iat": now,
            "iss": ISSUER,
            "jti": "1f2e3d4c5b6a7980",
            "nbf": now - 5,
            "sid": SESSION_ID,
            "sts": "active",
            "sub": USER_ID,
            "v": 2,
        }) else {
            unreachable!()
        };
        // `alg` is added when signing, from the algorithm used, unless set explicitly.
        let mut header = Map::new();
        header.insert("typ".into(), "JWT".into());
        Self {
            kid: Kid::Signer,
            header,
            claims,
        }
    }

    pub fn kid(mut self, kid: &str) -> Self {
        self.kid = Kid::Named(kid.to_owned());
        self
    }

    pub fn no_kid(mut self) -> Self {
        self.kid = Kid::Absent;
        self
    }

    /// Sets any header parameter. Setting `alg` makes the header lie: the signature is still made
    /// with the algorithm `sign*` uses.
    pub fn header(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.header.insert(name.to_owned(), value.into());
        self
    }

    /// Leaves a header parameter out (`typ`, say); `alg` is still added when signing.
    pub fn without_header(mut self, name: &str) -> Self {
        self.header.remove(name);
        self
    }

    pub fn claim(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.claims.insert(name.to_owned(), value.into());
        self
    }

    pub fn without(mut self, claim: &str) -> Self {
        self.claims.remove(claim);
        self
    }

    /// `exp` this many seconds from now (negative: in the past).
    pub fn expires_in(self, seconds: i64) -> Self {
        self.claim("exp", now() + seconds)
    }

    /// `nbf` this many seconds from now.
    pub fn not_before_in(self, seconds: i64) -> Self {
        self.claim("nbf", now() + seconds)
    }

    /// Signed RS256 by `key`, as Clerk signs.
    pub fn sign(&self, key: &TestKey) -> String {
        self.signed(Algorithm::RS256, &key.private, Some(&key.kid))
    }

    /// Signed with `algorithm` by `key`, the header's `alg` naming it: the RS384, PS256 and ES256
    /// tokens a verifier must refuse, or HS256 keyed with whatever a forger has at hand.
    pub fn sign_with(&self, algorithm: Algorithm, key: &EncodingKey) -> String {
        self.signed(algorithm, key, None)
    }

    /// HS256 keyed with `secret`: the classic forgery, keyed with the public PEM or the JWK's `n`.
    pub fn sign_hs256(&self, secret: &[u8]) -> String {
        self.sign_with(Algorithm::HS256, &EncodingKey::from_secret(secret))
    }

    /// `alg: none` (or the `alg` set) and an empty signature.
    pub fn unsigned(&self) -> String {
        let mut builder = self.clone();
        builder.header.entry("alg").or_insert("none".into());
        format!("{}.", builder.message(None))
    }

    fn signed(&self, algorithm: Algorithm, key: &EncodingKey, kid: Option<&str>) -> String {
        let mut builder = self.clone();
        if !builder.header.contains_key("alg") {
            let alg = serde_json::to_value(algorithm).unwrap();
            builder.header.insert("alg".into(), alg);
        }
        let message = builder.message(kid);
        let signature = jsonwebtoken::crypto::sign(message.as_bytes(), key, algorithm).unwrap();
        format!("{message}.{signature}")
    }

    /// `header.payload`, base64url, with the kid resolved against the signer's.
    fn message(mut self, signer_kid: Option<&str>) -> String {
        let kid = match &self.kid {
            Kid::Signer => signer_kid.map(str::to_owned),
            Kid::Named(kid) => Some(kid.clone()),
            Kid::Absent => None,
        };
        if let Some(kid) = kid {
            self.header.insert("kid".into(), kid.into());
        }
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(Value::Object(self.header).to_string()),
            URL_SAFE_NO_PAD.encode(Value::Object(self.claims).to_string())
        )
    }
}

/// `token` with one claim changed and its signature kept.
pub fn tamper(token: &str, claim: &str, value: impl Into<Value>) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    let mut claims: Map<String, Value> =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    claims.insert(claim.to_owned(), value.into());
    let payload = URL_SAFE_NO_PAD.encode(Value::Object(claims).to_string());
    format!("{}.{payload}.{}", parts[0], parts[2])
}

/// `Authorization` values that carry no usable token.
pub fn malformed_authorizations() -> Vec<String> {
    let valid_shape = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ1c2VyXzEifQ.c2lnbmF0dXJl";
    vec![
        String::new(),
        "Bearer".into(),
        "Bearer ".into(),
        "Basic dXNlcjpwYXNzd29yZA==".into(),
        valid_shape.into(),
        format!("Token {valid_shape}"),
        "Bearer garbage".into(),
        "Bearer a.b.c".into(),
        "Bearer ...".into(),
        "Bearer a.b.c.d".into(),
        format!("Bearer {valid_shape} {valid_shape}"),
        "Bearer e30.e30.e30".into(),
        "Bearer \u{1F511}.\u{1F511}.\u{1F511}".into(),
        format!("Bearer {}.e30.e30", "A".repeat(1 << 20)),
    ]
}

/// How the double answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    Serve,
    /// 500, as a failing Frontend API would.
    Fail,
    /// Accepts the request and never answers.
    Hang,
    /// 200 with a body that is not a JWK set.
    Garbage,
}

struct Double {
    keys: Mutex<Vec<Value>>,
    behaviour: Mutex<Behaviour>,
    delay: Mutex<Duration>,
    fetches: AtomicUsize,
}

pub struct JwksDouble {
    server: LoopbackServer,
    double: Arc<Double>,
}

impl JwksDouble {
    /// Starts on a free port of 127.0.0.1, serving `keys`.
    pub async fn start(keys: &[&TestKey]) -> Self {
        let double = Arc::new(Double {
            keys: Mutex::new(keys.iter().map(|key| key.jwk()).collect()),
            behaviour: Mutex::new(Behaviour::Serve),
            delay: Mutex::new(Duration::ZERO),
            fetches: AtomicUsize::new(0),
        });
        let router = Router::new()
            .route(JWKS_PATH, get(jwks))
            .with_state(Arc::clone(&double));
        Self {
            server: LoopbackServer::start(router).await,
            double,
        }
    }

    /// The value of `CLERK_JWKS_URL` that points at this double.
    pub fn url(&self) -> String {
        format!("http://{}{JWKS_PATH}", self.server.address)
    }

    /// Replaces the published keys, as a rotation that retires the old ones does.
    pub fn set_keys(&self, keys: &[&TestKey]) {
        *self.double.keys.lock().unwrap() = keys.iter().map(|key| key.jwk()).collect();
    }

    /// Publishes one more key, as a rotation does before the new key signs anything.
    pub fn add_key(&self, key: &TestKey) {
        self.double.keys.lock().unwrap().push(key.jwk());
    }

    pub fn behave(&self, behaviour: Behaviour) {
        *self.double.behaviour.lock().unwrap() = behaviour;
    }

    /// Holds every answer this long, so that concurrent callers overlap one fetch.
    pub fn delay(&self, delay: Duration) {
        *self.double.delay.lock().unwrap() = delay;
    }

    /// Requests received, whatever was answered.
    pub fn fetches(&self) -> usize {
        self.double.fetches.load(Ordering::SeqCst)
    }
}

async fn jwks(State(double): State<Arc<Double>>) -> Response {
    double.fetches.fetch_add(1, Ordering::SeqCst);
    let delay = *double.delay.lock().unwrap();
    tokio::time::sleep(delay).await;
    let behaviour = *double.behaviour.lock().unwrap();
    match behaviour {
        Behaviour::Serve => {
            let keys = double.keys.lock().unwrap().clone();
            axum::Json(json!({"keys": keys})).into_response()
        }
        Behaviour::Fail => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        Behaviour::Hang => std::future::pending().await,
        Behaviour::Garbage => "<html>Clerk is down for maintenance</html>".into_response(),
    }
}
