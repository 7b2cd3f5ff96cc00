//! Svix signature verification on the exact bytes received, against every configured secret.

use std::fmt;

use axum::http::HeaderMap;
use base64::Engine;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use svix::webhooks::{Webhook, WebhookError};

/// Svix's own header names first, then the unbranded Standard Webhooks ones, as the svix crate
/// reads them.
const ID_HEADERS: [&str; 2] = ["svix-id", "webhook-id"];
const TIMESTAMP_HEADERS: [&str; 2] = ["svix-timestamp", "webhook-timestamp"];
const SIGNATURE_HEADERS: [&str; 2] = ["svix-signature", "webhook-signature"];

const SECRET_PREFIX: &str = "whsec_";
/// Svix's Python and JavaScript libraries accept a key with or without base64 padding; so do we.
const LENIENT_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The configured signing secrets. Several may be active at once so a secret can be rotated
/// without downtime.
pub struct Verifier {
    secrets: Vec<Webhook>,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Verifier {{ {} secret(s): [redacted] }}",
            self.secrets.len()
        )
    }
}

/// Why a delivery was refused. Messages never include a secret or the body.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    #[error("missing webhook header {0} (or its svix- form)")]
    MissingHeader(&'static str),
    #[error("malformed webhook header {0}")]
    MalformedHeader(&'static str),
    #[error("body is not UTF-8, so it cannot be a signed Clerk event")]
    NotUtf8,
    #[error("webhook timestamp is more than 5 minutes in the past")]
    TimestampTooOld,
    #[error("webhook timestamp is more than 5 minutes in the future")]
    TimestampInFuture,
    #[error("no configured signing secret matches the signature")]
    SignatureMismatch,
}

impl VerifyError {
    /// 401 for an authentication failure; the rest are malformed requests (400).
    pub fn is_unauthorized(&self) -> bool {
        matches!(
            self,
            Self::TimestampTooOld | Self::TimestampInFuture | Self::SignatureMismatch
        )
    }
}

impl Verifier {
    /// Secrets separated by whitespace or commas, each `whsec_` followed by base64.
    pub fn from_secrets(secrets: &str) -> Result<Self, String> {
        let secrets = secrets
            .split(|c: char| c.is_whitespace() || c == ',')
            .filter(|s| !s.is_empty())
            .enumerate()
            .map(|(n, secret)| {
                let key = secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret);
                LENIENT_BASE64
                    .decode(key)
                    .ok()
                    .and_then(|key| Webhook::from_bytes(key).ok())
                    .ok_or_else(|| {
                        format!(
                            "secret #{} is not a whsec_ secret with a base64 key (its value is not shown)",
                            n + 1
                        )
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if secrets.is_empty() {
            return Err("holds no secret".into());
        }
        Ok(Self { secrets })
    }

    /// Checks the delivery and returns its message id (`svix-id`), the event's id for logs and
    /// for `lastEventId`.
    pub fn verify(&self, headers: &HeaderMap, body: &[u8]) -> Result<String, VerifyError> {
        let id = header(headers, ID_HEADERS)?;
        if id.is_empty() {
            return Err(VerifyError::MalformedHeader(ID_HEADERS[1]));
        }
        if header(headers, TIMESTAMP_HEADERS)?.parse::<i64>().is_err() {
            return Err(VerifyError::MalformedHeader(TIMESTAMP_HEADERS[1]));
        }
        let signature = header(headers, SIGNATURE_HEADERS)?;
        let well_formed = signature.split(' ').any(|part| {
            part.split_once(',')
                .is_some_and(|(v, s)| !v.is_empty() && !s.is_empty())
        });
        if !well_formed {
            return Err(VerifyError::MalformedHeader(SIGNATURE_HEADERS[1]));
        }
        if std::str::from_utf8(body).is_err() {
            return Err(VerifyError::NotUtf8);
        }

        let mut last = VerifyError::SignatureMismatch;
        for secret in &self.secrets {
            match secret.verify(body, headers) {
                Ok(()) => return Ok(id.to_owned()),
                Err(WebhookError::TimestampTooOldError) => {
                    return Err(VerifyError::TimestampTooOld);
                }
                Err(WebhookError::FutureTimestampError) => {
                    return Err(VerifyError::TimestampInFuture);
                }
                Err(_) => last = VerifyError::SignatureMismatch,
            }
        }
        Err(last)
    }
}

/// The first present header of a family, as svix reads it.
fn header<'a>(headers: &'a HeaderMap, names: [&'static str; 2]) -> Result<&'a str, VerifyError> {
    let value = names
        .iter()
        .find_map(|name| headers.get(*name))
        .ok_or(VerifyError::MissingHeader(names[1]))?;
    value
        .to_str()
        .map(str::trim)
        .map_err(|_| VerifyError::MalformedHeader(names[1]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use std::time::{SystemTime, UNIX_EPOCH};

    const SECRET_A: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SECRET_B: &str = "whsec_c2Vjb25kIHNlY3JldCBmb3Igcm90YXRpb24=";

    fn now() -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    }

    fn signed(secret: &str, prefix: &str, id: &str, ts: i64, body: &[u8]) -> HeaderMap {
        let signature = Webhook::new(secret).unwrap().sign(id, ts, body).unwrap();
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("id", id.to_owned()),
            ("timestamp", ts.to_string()),
            ("signature", signature),
        ] {
            headers.insert(
                axum::http::HeaderName::try_from(format!("{prefix}-{name}")).unwrap(),
                HeaderValue::try_from(value).unwrap(),
            );
        }
        headers
    }

    #[test]
    fn accepts_either_header_family_and_any_configured_secret() {
        let verifier = Verifier::from_secrets(&format!("{SECRET_A}, {SECRET_B}")).unwrap();
        let body = br#"{"type":"user.created"}"#;
        for secret in [SECRET_A, SECRET_B] {
            for prefix in ["svix", "webhook"] {
                let headers = signed(secret, prefix, "msg_1", now(), body);
                assert_eq!(verifier.verify(&headers, body), Ok("msg_1".into()));
            }
        }
    }

    #[test]
    fn rejects_what_an_attacker_would_try() {
        let verifier = Verifier::from_secrets(SECRET_A).unwrap();
        let body = br#"{"type":"user.created"}"#;
        let good = signed(SECRET_A, "svix", "msg_1", now(), body);

        assert_eq!(
            verifier.verify(&good, br#"{"type":"user.deleted"}"#),
            Err(VerifyError::SignatureMismatch)
        );
        let wrong_secret = signed(SECRET_B, "svix", "msg_1", now(), body);
        assert_eq!(
            verifier.verify(&wrong_secret, body),
            Err(VerifyError::SignatureMismatch)
        );
        let old = signed(SECRET_A, "svix", "msg_1", now() - 301, body);
        assert_eq!(
            verifier.verify(&old, body),
            Err(VerifyError::TimestampTooOld)
        );
        let future = signed(SECRET_A, "svix", "msg_1", now() + 301, body);
        assert_eq!(
            verifier.verify(&future, body),
            Err(VerifyError::TimestampInFuture)
        );

        let mut other_version = good.clone();
        let v1 = other_version["svix-signature"]
            .to_str()
            .unwrap()
            .replace("v1,", "v2,");
        other_version.insert("svix-signature", v1.parse().unwrap());
        assert_eq!(
            verifier.verify(&other_version, body),
            Err(VerifyError::SignatureMismatch)
        );

        for (name, problem) in [
            ("svix-id", VerifyError::MissingHeader("webhook-id")),
            (
                "svix-timestamp",
                VerifyError::MissingHeader("webhook-timestamp"),
            ),
            (
                "svix-signature",
                VerifyError::MissingHeader("webhook-signature"),
            ),
        ] {
            let mut missing = good.clone();
            missing.remove(name);
            assert_eq!(verifier.verify(&missing, body), Err(problem));
        }
        let mut bad_ts = good.clone();
        bad_ts.insert("svix-timestamp", "yesterday".parse().unwrap());
        assert_eq!(
            verifier.verify(&bad_ts, body),
            Err(VerifyError::MalformedHeader("webhook-timestamp"))
        );
        let mut bad_sig = good.clone();
        bad_sig.insert("svix-signature", "garbage".parse().unwrap());
        assert_eq!(
            verifier.verify(&bad_sig, body),
            Err(VerifyError::MalformedHeader("webhook-signature"))
        );
        assert_eq!(
            verifier.verify(&good, &[0xff, 0xfe]),
            Err(VerifyError::NotUtf8)
        );
    }

    #[test]
    fn refuses_undecodable_or_absent_secrets_without_echoing_them() {
        let err = Verifier::from_secrets("whsec_not*base64").unwrap_err();
        assert!(!err.contains("not*base64"), "{err}");
        assert!(Verifier::from_secrets(" , ").is_err());
        assert!(
            Verifier::from_secrets(&format!("{SECRET_A} whsec_%%%"))
                .unwrap_err()
                .contains("#2")
        );
    }

    #[test]
    fn accepts_keys_with_or_without_base64_padding() {
        let body = br#"{"type":"user.created"}"#;
        let headers = signed(SECRET_B, "svix", "msg_1", now(), body);
        let unpadded = SECRET_B.trim_end_matches('=');
        assert_ne!(unpadded, SECRET_B);
        let verifier = Verifier::from_secrets(unpadded).unwrap();
        assert_eq!(verifier.verify(&headers, body), Ok("msg_1".into()));
    }

    #[test]
    fn debug_never_prints_a_secret() {
        let verifier = Verifier::from_secrets(SECRET_A).unwrap();
        assert!(!format!("{verifier:?}").contains("MfKQ9r8"));
    }
}
