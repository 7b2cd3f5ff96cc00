// The Key Vault (Azure RBAC mode) holding the Clerk webhook signing secret and, when given, the Clerk
// secret key, which the Function App reads through Key Vault references in
// CLERK_WEBHOOK_SIGNING_SECRET and CLERK_SECRET_KEY.

@description('Azure region for the vault.')
param location string

@description('Tags applied to every resource.')
param tags object

@description('Key Vault name: 3-24 letters, digits and hyphens, globally unique.')
@minLength(3)
@maxLength(24)
param name string

@description('Name of the secret holding the Clerk signing secret(s).')
param secretName string

@secure()
@description('Clerk signing secret(s); empty leaves the secret as it is (absent on a first deployment).')
param signingSecret string

@description('Name of the secret holding the Clerk secret key.')
param clerkSecretKeyName string = 'clerk-secret-key'

@secure()
@description('Clerk secret key (sk_live_... or sk_test_...); empty leaves the secret as it is, or absent.')
param clerkSecretKey string = ''

@description('Disabled leaves private endpoints as the only way in; Enabled is for deployments without them.')
@allowed([
  'Enabled'
  'Disabled'
])
param publicNetworkAccess string = 'Disabled'

@description('What the firewall does with public traffic: Deny, or Allow when the callers have no fixed address to allow-list.')
@allowed([
  'Allow'
  'Deny'
])
param networkDefaultAction string = 'Deny'

resource vault 'Microsoft.KeyVault/vaults@2024-11-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: tenant().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    // The secret can always be fetched again from the Clerk dashboard, so the shortest retention
    // is enough, and it keeps the name reserved for only a week after a teardown.
    softDeleteRetentionInDays: 7
    enablePurgeProtection: true
    publicNetworkAccess: publicNetworkAccess
    networkAcls: {
      defaultAction: networkDefaultAction
      bypass: 'None'
    }
  }
}

// Each written only when a value is given, so deploying again without one keeps the stored secret.
module secret 'vault-secret.bicep' = if (!empty(signingSecret)) {
  name: 'signing-secret'
  params: {
    vaultName: vault.name
    name: secretName
    value: signingSecret
  }
}

module clerkSecretKeySecret 'vault-secret.bicep' = if (!empty(clerkSecretKey)) {
  name: 'clerk-secret-key'
  params: {
    vaultName: vault.name
    name: clerkSecretKeyName
    value: clerkSecretKey
  }
}

output id string = vault.id
output name string = vault.name
// Versionless, so the app follows rotations (App Service re-reads references at least daily and on restart).
output secretUri string = '${vault.properties.vaultUri}secrets/${secretName}'
output clerkSecretKeyUri string = '${vault.properties.vaultUri}secrets/${clerkSecretKeyName}'
