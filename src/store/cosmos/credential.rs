//! Which Entra ID credential signs Cosmos DB requests: the app's managed identity in Azure, the
//! developer's `az` / `azd` login elsewhere (so `func start` against a real account works).

use std::sync::Arc;

use azure_core::credentials::TokenCredential;
use azure_core::http::{ClientOptions, ExponentialRetryOptions, RetryOptions};
use azure_core::time::Duration;
use azure_identity::{
    DeveloperToolsCredential, ManagedIdentityCredential, ManagedIdentityCredentialOptions,
    UserAssignedId,
};

use crate::store::StoreError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Source {
    /// System-assigned without a client id, user-assigned with one.
    ManagedIdentity {
        client_id: Option<String>,
    },
    DeveloperTools,
}

/// `managed_identity`: whether App Service offers one (`IDENTITY_ENDPOINT` is set).
pub(super) fn source(managed_identity: bool, client_id: Option<&str>) -> Source {
    if managed_identity {
        Source::ManagedIdentity {
            client_id: client_id.map(str::to_owned),
        }
    } else {
        Source::DeveloperTools
    }
}

/// Builds the credential; no token is asked for until the first request is signed.
pub(super) fn credential(source: &Source) -> Result<Arc<dyn TokenCredential>, StoreError> {
    let credential: Arc<dyn TokenCredential> = match source {
        Source::ManagedIdentity { client_id } => {
            ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions {
                user_assigned_id: client_id.clone().map(UserAssignedId::ClientId),
                client_options: ClientOptions {
                    retry: token_retry(),
                    ..Default::default()
                },
            }))
            .map_err(|e| rejected("managed identity", &e))?
        }
        Source::DeveloperTools => {
            DeveloperToolsCredential::new(None).map_err(|e| rejected("developer tools", &e))?
        }
    };
    Ok(credential)
}

/// The SDK's default retries a failing identity endpoint for up to a minute; a delivery has a
/// few seconds. Two quick retries ride out a blip; anything longer is a 503 and Svix's retry.
fn token_retry() -> RetryOptions {
    RetryOptions::exponential(ExponentialRetryOptions {
        initial_delay: Duration::milliseconds(100),
        max_retries: 2,
        max_total_elapsed: Duration::seconds(2),
        max_delay: Duration::seconds(1),
    })
}

fn rejected(kind: &str, error: &azure_core::Error) -> StoreError {
    StoreError::Rejected(format!("cannot set up the {kind} credential: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn azure_uses_the_managed_identity() {
        assert_eq!(
            source(true, None),
            Source::ManagedIdentity { client_id: None }
        );
        assert_eq!(
            source(true, Some("00000000-0000-0000-0000-000000000001")),
            Source::ManagedIdentity {
                client_id: Some("00000000-0000-0000-0000-000000000001".into())
            }
        );
    }

    #[test]
    fn elsewhere_uses_the_developer_login() {
        assert_eq!(source(false, None), Source::DeveloperTools);
        assert_eq!(source(false, Some("ignored")), Source::DeveloperTools);
    }
}
