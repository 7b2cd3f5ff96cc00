// One Clerk secret in the vault: the webhook signing secret, or the Backend API secret key. Written
// through Azure Resource Manager, which the vault's network rules do not apply to, so a deployment
// can store it even when the vault is private.

@description('Name of the existing Key Vault.')
param vaultName string

@description('Name of the secret.')
param name string

@secure()
@description('The secret: whsec_... signing secret(s), several separated by commas while rotating, or the sk_... secret key.')
param value string

resource vault 'Microsoft.KeyVault/vaults@2024-11-01' existing = {
  name: vaultName
}

resource secret 'Microsoft.KeyVault/vaults/secrets@2024-11-01' = {
  // checkov:skip=CKV_AZURE_41: Clerk's signing secrets and secret keys do not expire; they are rotated from the Clerk dashboard, and an expiry date here would stop webhook delivery, reconcile and SyncMe on that date.
  parent: vault
  name: name
  properties: {
    value: value
    contentType: 'text/plain'
  }
}
