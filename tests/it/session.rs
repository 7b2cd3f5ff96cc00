//! Session-token verification against the PEM key and against the JWK set double: honest tokens,
//! the checks on the header and each claim, pending sessions, forgeries, and how the key set is
//! fetched, refetched and shared.

use std::sync::Arc;
use std::time::{Duration, Instant};

use handler::session::{
    KEY_SET_MAX_AGE, Session, SessionError, SessionKey, SessionSettings, SessionVerifier, pem_key,
};
use handler::sync::item::ItemId;
use jsonwebtoken::Algorithm;
use serde_json::json;

use crate::jwks_double::{
    Behaviour, ISSUER, JwksDouble, PARTY, SESSION_ID, TestKey, TokenBuilder, USER_ID, bearer,
    ec_key, malformed_authorizations, now, tamper,
};

fn settings(key: SessionKey) -> SessionSettings {
    SessionSettings {
        key,
        authorized_parties: vec!["http://localhost:3000".into(), PARTY.into()],
        issuer: Some(ISSUER.into()),
        allow_pending_sessions: false,
    }
}

fn pem_verifier(key: &TestKey) -> SessionVerifier {
    SessionVerifier::new(&settings(SessionKey::Pem(Arc::new(
        pem_key(key.public_pem()).unwrap(),
    ))))
}

fn jwks_verifier(double: &JwksDouble) -> SessionVerifier {
    SessionVerifier::new(&settings(SessionKey::Jwks(double.url())))
}

/// A key set trusted this long instead of five minutes.
const SHORT_MAX_AGE: Duration = Duration::from_secs(1);

fn short_lived_jwks_verifier(double: &JwksDouble) -> SessionVerifier {
    jwks_verifier(double).with_key_set_max_age(SHORT_MAX_AGE)
}

/// Until the cached set is older than `SHORT_MAX_AGE`.
async fn outlive_the_cache() {
    tokio::time::sleep(SHORT_MAX_AGE + Duration::from_millis(200)).await;
}

/// Past the pause after a failed fetch.
async fn outlive_the_retry_pause() {
    tokio::time::sleep(Duration::from_millis(1100)).await;
}

async fn verify(verifier: &SessionVerifier, token: &str) -> Result<Session, SessionError> {
    verifier.verify(Some(&bearer(token))).await
}

/// Fifty verifications at once, of the tokens `token(n)` makes, on one verifier.
async fn fifty_at_once(
    verifier: &Arc<SessionVerifier>,
    token: impl Fn(usize) -> String,
) -> Vec<Result<Session, SessionError>> {
    let tasks: Vec<_> = (0..50)
        .map(|n| {
            let verifier = Arc::clone(verifier);
            let token = token(n);
            tokio::spawn(async move { verify(&verifier, &token).await })
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap());
    }
    results
}

#[track_caller]
fn assert_invalid(result: Result<Session, SessionError>) {
    assert!(
        matches!(result, Err(SessionError::Invalid(_))),
        "expected Invalid, got {result:?}"
    );
}

#[track_caller]
fn assert_unavailable(result: Result<Session, SessionError>) {
    assert!(
        matches!(result, Err(SessionError::KeysUnavailable(_))),
        "expected KeysUnavailable, got {result:?}"
    );
}

fn clerk_session() -> Session {
    Session {
        user_id: ItemId::parse(USER_ID).unwrap(),
        session_id: Some(SESSION_ID.into()),
    }
}

#[tokio::test]
async fn a_clerk_token_verifies_against_the_pem_key() {
    let key = TestKey::generate("ins_pem");
    let session = verify(&pem_verifier(&key), &TokenBuilder::new().sign(&key)).await;
    assert_eq!(session.unwrap(), clerk_session());
}

#[tokio::test]
async fn a_clerk_token_verifies_against_the_jwk_set_fetched_once() {
    let key = TestKey::generate("ins_jwks");
    let double = JwksDouble::start(&[&key]).await;
    let verifier = jwks_verifier(&double);
    assert_eq!(double.fetches(), 0, "no fetch before a token needs one");
    for _ in 0..3 {
        let session = verify(&verifier, &TokenBuilder::new().sign(&key)).await;
        assert_eq!(session.unwrap(), clerk_session());
    }
    assert_eq!(double.fetches(), 1);
}

#[tokio::test]
async fn exp_and_nbf_allow_five_seconds_of_skew_and_no_more() {
    let key = TestKey::generate("ins_time");
    let verifier = pem_verifier(&key);
    let token = |builder: TokenBuilder| builder.sign(&key);
    verify(&verifier, &token(TokenBuilder::new().expires_in(-2)))
        .await
        .unwrap();
    assert_invalid(verify(&verifier, &token(TokenBuilder::new().expires_in(-10))).await);
    verify(&verifier, &token(TokenBuilder::new().not_before_in(2)))
        .await
        .unwrap();
    assert_invalid(verify(&verifier, &token(TokenBuilder::new().not_before_in(30))).await);
    // exp is required; nbf only checked when present.
    assert_invalid(verify(&verifier, &token(TokenBuilder::new().without("exp"))).await);
    verify(&verifier, &token(TokenBuilder::new().without("nbf")))
        .await
        .unwrap();
}

#[tokio::test]
async fn azp_must_be_an_authorized_party_and_present() {
    let key = TestKey::generate("ins_azp");
    let verifier = pem_verifier(&key);
    verify(
        &verifier,
        &TokenBuilder::new()
            .claim("azp", "http://localhost:3000")
            .sign(&key),
    )
    .await
    .unwrap();
    for azp in [
        "https://evil.example",
        "https://app.example.com.evil.example",
        "",
    ] {
        let token = TokenBuilder::new().claim("azp", azp).sign(&key);
        assert_invalid(verify(&verifier, &token).await);
    }
    assert_invalid(verify(&verifier, &TokenBuilder::new().without("azp").sign(&key)).await);
}

#[tokio::test]
async fn a_pending_session_is_refused_unless_pending_sessions_are_allowed() {
    let key = TestKey::generate("ins_pending");
    let double = JwksDouble::start(&[&key]).await;
    let pending = TokenBuilder::new().claim("sts", "pending").sign(&key);
    for verifier in [pem_verifier(&key), jwks_verifier(&double)] {
        assert_invalid(verify(&verifier, &pending).await);
        // The honest builder's `active`, another status, and none at all (v1 tokens) pass.
        for token in [
            TokenBuilder::new().sign(&key),
            TokenBuilder::new().claim("sts", "expired").sign(&key),
            TokenBuilder::new().without("sts").sign(&key),
        ] {
            assert_eq!(verify(&verifier, &token).await.unwrap(), clerk_session());
        }
    }

    let allowing = |key: SessionKey| {
        SessionVerifier::new(&SessionSettings {
            allow_pending_sessions: true,
            ..settings(key)
        })
    };
    let pem = SessionKey::Pem(Arc::new(pem_key(key.public_pem()).unwrap()));
    for verifier in [allowing(pem), allowing(SessionKey::Jwks(double.url()))] {
        assert_eq!(verify(&verifier, &pending).await.unwrap(), clerk_session());
        // Allowing pending sessions lets nothing else through.
        let foreign = TokenBuilder::new()
            .claim("sts", "pending")
            .claim("azp", "https://evil.example")
            .sign(&key);
        assert_invalid(verify(&verifier, &foreign).await);
    }
}

#[tokio::test]
async fn typ_must_be_absent_or_exactly_jwt_as_clerk_backend_checks_it() {
    let key = TestKey::generate("ins_typ");
    let double = JwksDouble::start(&[&key]).await;
    for verifier in [pem_verifier(&key), jwks_verifier(&double)] {
        for token in [
            TokenBuilder::new().header("typ", "JWT").sign(&key),
            TokenBuilder::new().without_header("typ").sign(&key),
        ] {
            assert_eq!(verify(&verifier, &token).await.unwrap(), clerk_session());
        }
    }
    let fetched = double.fetches();
    // OAuth access tokens (RFC 9068) are signed with the instance's key too; @clerk/backend
    // compares `typ` exactly, so `jwt` is refused with them.
    let others = [
        json!("at+jwt"),
        json!("application/at+jwt"),
        json!("jwt"),
        json!(""),
        json!(null),
    ];
    for verifier in [pem_verifier(&key), jwks_verifier(&double)] {
        for typ in &others {
            let token = TokenBuilder::new().header("typ", typ.clone()).sign(&key);
            assert_invalid(verify(&verifier, &token).await);
        }
    }
    assert_eq!(
        double.fetches(),
        fetched,
        "a refused typ never costs a key fetch"
    );
}

#[tokio::test]
async fn iss_must_match_when_configured_and_is_ignored_otherwise() {
    let key = TestKey::generate("ins_iss");
    let foreign = TokenBuilder::new()
        .claim("iss", "https://clerk.other.example")
        .sign(&key);
    assert_invalid(verify(&pem_verifier(&key), &foreign).await);
    let no_iss = TokenBuilder::new().without("iss").sign(&key);
    assert_invalid(verify(&pem_verifier(&key), &no_iss).await);

    let unchecked = SessionVerifier::new(&SessionSettings {
        issuer: None,
        ..settings(SessionKey::Pem(Arc::new(
            pem_key(key.public_pem()).unwrap(),
        )))
    });
    verify(&unchecked, &foreign).await.unwrap();
    verify(&unchecked, &no_iss).await.unwrap();
}

#[tokio::test]
async fn unknown_header_parameters_and_claims_are_ignored_but_crit_is_not() {
    let key = TestKey::generate("ins_extra");
    let double = JwksDouble::start(&[&key]).await;
    let token = TokenBuilder::new()
        .header("cty", "JWT")
        .header("x-clerk-future", json!({"a": 1}))
        .claim("o", json!({"id": "org_1", "rol": "admin"}))
        .claim("pla", "u:free")
        .claim("aud", "https://api.example.com")
        .sign(&key);
    assert_eq!(
        verify(&jwks_verifier(&double), &token).await.unwrap(),
        clerk_session()
    );
    // Except `crit`, which names extensions the verifier must understand or refuse (RFC 7515).
    let critical = TokenBuilder::new()
        .header("crit", json!(["x-clerk-future"]))
        .sign(&key);
    assert_invalid(verify(&jwks_verifier(&double), &critical).await);
}

#[tokio::test]
async fn a_wrong_signature_is_refused() {
    let key = TestKey::generate("ins_right");
    let other = TestKey::generate("ins_right");
    let double = JwksDouble::start(&[&key]).await;
    for verifier in [pem_verifier(&key), jwks_verifier(&double)] {
        assert_invalid(verify(&verifier, &TokenBuilder::new().sign(&other)).await);
        let honest = TokenBuilder::new().sign(&key);
        let tampered = [
            ("sub", json!("user_someoneelse")),
            ("azp", json!("http://localhost:3000")),
            ("exp", json!(now() + 3600)),
        ];
        for (claim, value) in tampered {
            assert_invalid(verify(&verifier, &tamper(&honest, claim, value)).await);
        }
        // The signature of one token on another's header and payload.
        let other_token = TokenBuilder::new().claim("sid", "sess_other").sign(&key);
        let (message, _) = other_token.rsplit_once('.').unwrap();
        let (_, signature) = honest.rsplit_once('.').unwrap();
        assert_invalid(verify(&verifier, &format!("{message}.{signature}")).await);
    }
}

#[tokio::test]
async fn only_rs256_is_accepted_whatever_the_token_claims() {
    let key = TestKey::generate("ins_alg");
    let double = JwksDouble::start(&[&key]).await;
    let kid = key.kid();
    let forgeries = [
        TokenBuilder::new().kid(kid).unsigned(),
        TokenBuilder::new()
            .kid(kid)
            .header("alg", "None")
            .unsigned(),
        // The classic confusion: HMAC keyed with the public key the verifier holds.
        TokenBuilder::new()
            .kid(kid)
            .sign_hs256(key.public_pem().as_bytes()),
        TokenBuilder::new()
            .kid(kid)
            .sign_hs256(key.public_pem().trim().as_bytes()),
        TokenBuilder::new().kid(kid).sign_hs256(key.n().as_bytes()),
        TokenBuilder::new().kid(kid).sign_with(
            Algorithm::HS384,
            &jsonwebtoken::EncodingKey::from_secret(b"k"),
        ),
        TokenBuilder::new().kid(kid).sign_with(
            Algorithm::HS512,
            &jsonwebtoken::EncodingKey::from_secret(b"k"),
        ),
        TokenBuilder::new()
            .kid(kid)
            .sign_with(Algorithm::RS384, key.encoding_key()),
        TokenBuilder::new()
            .kid(kid)
            .sign_with(Algorithm::RS512, key.encoding_key()),
        TokenBuilder::new()
            .kid(kid)
            .sign_with(Algorithm::PS256, key.encoding_key()),
        TokenBuilder::new()
            .kid(kid)
            .sign_with(Algorithm::ES256, &ec_key()),
        // An RS256 signature under a header that names another algorithm.
        TokenBuilder::new().header("alg", "RS384").sign(&key),
    ];
    for verifier in [pem_verifier(&key), jwks_verifier(&double)] {
        for forged in &forgeries {
            assert_invalid(verify(&verifier, forged).await);
        }
    }
    assert_eq!(
        double.fetches(),
        0,
        "a refused algorithm never costs a key fetch"
    );

    // A header that names RS256 over a PS256 signature gets as far as the key, and no further.
    let lying = TokenBuilder::new()
        .header("alg", "RS256")
        .sign_with(Algorithm::PS256, key.encoding_key());
    for verifier in [pem_verifier(&key), jwks_verifier(&double)] {
        assert_invalid(verify(&verifier, &lying).await);
    }
}

#[tokio::test]
async fn an_unknown_kid_refetches_once_a_minute_at_most() {
    let key = TestKey::generate("ins_known");
    let stranger = TestKey::generate("ins_stranger");
    let double = JwksDouble::start(&[&key]).await;
    let verifier = jwks_verifier(&double);
    verify(&verifier, &TokenBuilder::new().sign(&key))
        .await
        .unwrap();
    assert_eq!(double.fetches(), 1);

    assert_invalid(verify(&verifier, &TokenBuilder::new().sign(&stranger)).await);
    assert_eq!(double.fetches(), 2, "an unknown kid refetches the set once");
    let another = TokenBuilder::new().kid("ins_another").sign(&stranger);
    assert_invalid(verify(&verifier, &another).await);
    assert_eq!(double.fetches(), 2, "and not again within the minute");

    // Even once the stranger's key is published: the next refetch waits out the minute.
    double.add_key(&stranger);
    assert_invalid(verify(&verifier, &TokenBuilder::new().sign(&stranger)).await);
    assert_eq!(double.fetches(), 2);
    verify(&verifier, &TokenBuilder::new().sign(&key))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_flood_of_made_up_kids_costs_one_refetch() {
    let key = TestKey::generate("ins_flooded");
    let double = JwksDouble::start(&[&key]).await;
    let verifier = Arc::new(jwks_verifier(&double));
    verify(&verifier, &TokenBuilder::new().sign(&key))
        .await
        .unwrap();
    for result in fifty_at_once(&verifier, |n| {
        TokenBuilder::new()
            .kid(&format!("ins_random{n}"))
            .sign(&key)
    })
    .await
    {
        assert_invalid(result);
    }
    assert_eq!(double.fetches(), 2);
}

#[tokio::test]
async fn a_rotated_key_is_found_by_the_refetch() {
    let old = TestKey::generate("ins_old");
    let new = TestKey::generate("ins_new");
    let double = JwksDouble::start(&[&old]).await;
    let verifier = jwks_verifier(&double);
    verify(&verifier, &TokenBuilder::new().sign(&old))
        .await
        .unwrap();

    double.set_keys(&[&new]);
    assert_eq!(
        verify(&verifier, &TokenBuilder::new().sign(&new))
            .await
            .unwrap(),
        clerk_session()
    );
    assert_eq!(double.fetches(), 2);
}

#[tokio::test]
async fn a_token_without_kid_needs_the_pem_or_a_lone_key() {
    let key = TestKey::generate("ins_lone");
    let other = TestKey::generate("ins_other");
    let no_kid = TokenBuilder::new().no_kid().sign(&key);
    verify(&pem_verifier(&key), &no_kid).await.unwrap();

    let lone = JwksDouble::start(&[&key]).await;
    verify(&jwks_verifier(&lone), &no_kid).await.unwrap();

    let two = JwksDouble::start(&[&key, &other]).await;
    let verifier = jwks_verifier(&two);
    assert_invalid(verify(&verifier, &no_kid).await);
    assert_invalid(verify(&verifier, &no_kid).await);
    assert_eq!(two.fetches(), 1, "a missing kid is not an unknown one");
}

#[tokio::test]
async fn an_unreachable_key_set_is_unavailable_not_invalid() {
    let key = TestKey::generate("ins_down");
    for behaviour in [Behaviour::Fail, Behaviour::Garbage] {
        let double = JwksDouble::start(&[&key]).await;
        double.behave(behaviour);
        let verifier = jwks_verifier(&double);
        assert_unavailable(verify(&verifier, &TokenBuilder::new().sign(&key)).await);
    }

    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!(
            "http://{}/.well-known/jwks.json",
            listener.local_addr().unwrap()
        )
    };
    let verifier = SessionVerifier::new(&settings(SessionKey::Jwks(closed)));
    assert_unavailable(verify(&verifier, &TokenBuilder::new().sign(&key)).await);
}

#[tokio::test]
async fn a_hanging_key_set_is_given_up_on_within_the_timeout() {
    let key = TestKey::generate("ins_hang");
    let double = JwksDouble::start(&[&key]).await;
    double.behave(Behaviour::Hang);
    let verifier = jwks_verifier(&double);
    let started = Instant::now();
    assert_unavailable(verify(&verifier, &TokenBuilder::new().sign(&key)).await);
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(7),
        "gave up after {waited:?}, past the 5 s fetch timeout"
    );
}

#[tokio::test]
async fn a_failed_fetch_is_retried_after_a_pause_not_per_request() {
    let key = TestKey::generate("ins_recover");
    let double = JwksDouble::start(&[&key]).await;
    double.behave(Behaviour::Fail);
    let verifier = jwks_verifier(&double);
    let token = TokenBuilder::new().sign(&key);
    for _ in 0..5 {
        assert_unavailable(verify(&verifier, &token).await);
    }
    assert_eq!(double.fetches(), 1);

    double.behave(Behaviour::Serve);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    verify(&verifier, &token).await.unwrap();
    assert_eq!(double.fetches(), 2);
}

#[tokio::test]
async fn known_keys_keep_working_while_the_key_set_is_down() {
    let key = TestKey::generate("ins_cached");
    let stranger = TestKey::generate("ins_unseen");
    let double = JwksDouble::start(&[&key]).await;
    let verifier = jwks_verifier(&double);
    verify(&verifier, &TokenBuilder::new().sign(&key))
        .await
        .unwrap();

    double.behave(Behaviour::Fail);
    verify(&verifier, &TokenBuilder::new().sign(&key))
        .await
        .unwrap();
    // An unknown kid cannot be told from a new key while the set is down.
    assert_unavailable(verify(&verifier, &TokenBuilder::new().sign(&stranger)).await);
    assert_eq!(double.fetches(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_first_calls_make_one_fetch() {
    let key = TestKey::generate("ins_cold");
    let double = JwksDouble::start(&[&key]).await;
    // A slow answer keeps the fetch in flight while every caller arrives.
    double.delay(Duration::from_millis(300));
    let verifier = Arc::new(jwks_verifier(&double));
    for result in fifty_at_once(&verifier, |_| TokenBuilder::new().sign(&key)).await {
        assert_eq!(result.unwrap(), clerk_session());
    }
    assert_eq!(double.fetches(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_first_calls_share_one_failed_fetch() {
    let key = TestKey::generate("ins_cold_down");
    let double = JwksDouble::start(&[&key]).await;
    double.behave(Behaviour::Fail);
    double.delay(Duration::from_millis(300));
    let verifier = Arc::new(jwks_verifier(&double));
    for result in fifty_at_once(&verifier, |_| TokenBuilder::new().sign(&key)).await {
        assert_unavailable(result);
    }
    assert_eq!(double.fetches(), 1);
}

#[tokio::test]
async fn malformed_authorization_is_invalid_and_fetches_nothing() {
    let key = TestKey::generate("ins_malformed");
    let double = JwksDouble::start(&[&key]).await;
    for verifier in [pem_verifier(&key), jwks_verifier(&double)] {
        assert_invalid(verifier.verify(None).await);
        for authorization in malformed_authorizations() {
            assert_invalid(verifier.verify(Some(&authorization)).await);
        }
    }
    assert_eq!(double.fetches(), 0);

    let honest = TokenBuilder::new().sign(&key);
    for verifier in [pem_verifier(&key), jwks_verifier(&double)] {
        for authorization in [format!("Bearer {honest}x"), format!("Basic {honest}")] {
            assert_invalid(verifier.verify(Some(&authorization)).await);
        }
        verifier
            .verify(Some(&format!("bearer  {honest} ")))
            .await
            .unwrap();
    }
}

#[test]
fn the_key_set_is_trusted_for_five_minutes_as_clerk_backend_caches_it() {
    assert_eq!(KEY_SET_MAX_AGE, Duration::from_secs(5 * 60));
}

#[tokio::test]
async fn a_key_removed_from_the_set_is_refused_once_the_cache_is_past_its_max_age() {
    let old = TestKey::generate("ins_retiring");
    let new = TestKey::generate("ins_successor");
    let double = JwksDouble::start(&[&old]).await;
    let verifier = short_lived_jwks_verifier(&double);
    let old_token = TokenBuilder::new().sign(&old);
    verify(&verifier, &old_token).await.unwrap();
    assert_eq!(double.fetches(), 1);

    // Clerk rotates and retires the old key: within the max age the cached set still holds it.
    double.set_keys(&[&new]);
    verify(&verifier, &old_token).await.unwrap();
    assert_eq!(double.fetches(), 1, "a current set is not refetched");

    outlive_the_cache().await;
    assert_invalid(verify(&verifier, &old_token).await);
    assert_eq!(
        double.fetches(),
        2,
        "the first token past the max age refreshes the set"
    );
    verify(&verifier, &TokenBuilder::new().sign(&new))
        .await
        .unwrap();
    assert_eq!(double.fetches(), 2, "the refreshed set is current again");
    // The retired kid is now an unknown one: one refetch at most in a minute, as for any other.
    for _ in 0..3 {
        assert_invalid(verify(&verifier, &old_token).await);
    }
    assert_eq!(double.fetches(), 3);

    // A verifier with the default max age keeps a retired key for the five minutes.
    let double = JwksDouble::start(&[&old]).await;
    let default = jwks_verifier(&double);
    verify(&default, &old_token).await.unwrap();
    double.set_keys(&[&new]);
    outlive_the_cache().await;
    verify(&default, &old_token).await.unwrap();
    assert_eq!(double.fetches(), 1);
}

#[tokio::test]
async fn a_failed_refresh_keeps_the_cached_keys_and_is_retried_after_a_pause() {
    let key = TestKey::generate("ins_kept");
    let new = TestKey::generate("ins_next");
    let stranger = TestKey::generate("ins_unknown");
    let double = JwksDouble::start(&[&key]).await;
    let verifier = short_lived_jwks_verifier(&double);
    let token = TokenBuilder::new().sign(&key);
    verify(&verifier, &token).await.unwrap();

    for behaviour in [Behaviour::Fail, Behaviour::Garbage] {
        double.behave(behaviour);
        outlive_the_cache().await;
        outlive_the_retry_pause().await;
        let before = double.fetches();
        for _ in 0..5 {
            assert_eq!(
                verify(&verifier, &token).await.unwrap(),
                clerk_session(),
                "{behaviour:?}: the keys fetched before stay trusted"
            );
        }
        assert_eq!(
            double.fetches(),
            before + 1,
            "{behaviour:?}: one refresh attempt, not one per token"
        );
    }
    // A kid the cached set does not hold cannot be told from a new key meanwhile.
    assert_unavailable(verify(&verifier, &TokenBuilder::new().sign(&stranger)).await);

    // The next attempt after the pause still fails: still the cached keys.
    outlive_the_retry_pause().await;
    let before = double.fetches();
    verify(&verifier, &token).await.unwrap();
    assert_eq!(double.fetches(), before + 1);

    // Once the set answers again, it replaces the cached one, retired keys and all.
    double.set_keys(&[&new]);
    double.behave(Behaviour::Serve);
    outlive_the_retry_pause().await;
    assert_invalid(verify(&verifier, &token).await);
    assert_eq!(double.fetches(), before + 2);
    verify(&verifier, &TokenBuilder::new().sign(&new))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_calls_on_an_expired_set_make_one_refresh() {
    let key = TestKey::generate("ins_stale");
    let double = JwksDouble::start(&[&key]).await;
    let verifier = Arc::new(short_lived_jwks_verifier(&double));
    verify(&verifier, &TokenBuilder::new().sign(&key))
        .await
        .unwrap();
    outlive_the_cache().await;
    double.delay(Duration::from_millis(300));
    for result in fifty_at_once(&verifier, |_| TokenBuilder::new().sign(&key)).await {
        assert_eq!(result.unwrap(), clerk_session());
    }
    assert_eq!(double.fetches(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_refresh_holds_up_only_the_call_that_makes_it() {
    let key = TestKey::generate("ins_slow_refresh");
    let double = JwksDouble::start(&[&key]).await;
    let verifier = Arc::new(short_lived_jwks_verifier(&double));
    let token = TokenBuilder::new().sign(&key);
    verify(&verifier, &token).await.unwrap();
    outlive_the_cache().await;

    double.behave(Behaviour::Hang);
    let refreshing = {
        let (verifier, token) = (Arc::clone(&verifier), token.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            (verify(&verifier, &token).await, started.elapsed())
        })
    };
    while double.fetches() < 2 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started = Instant::now();
    verify(&verifier, &token).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "a call during the refresh waited {:?}",
        started.elapsed()
    );

    let (result, waited) = refreshing.await.unwrap();
    assert_eq!(
        result.unwrap(),
        clerk_session(),
        "the cached key, after giving up"
    );
    assert!(waited < Duration::from_secs(7), "gave up after {waited:?}");
    assert_eq!(double.fetches(), 2);
}
