// The Function App that runs `handler` as a custom handler: its plan, its managed identity, what that
// identity may reach (storage, Key Vault, Application Insights, Cosmos DB), and its app settings.
// No setting holds a key: every service is reached with the identity.

@description('Azure region for the plan, the app and the user-assigned identity.')
param location string

@description('Tags applied to every resource.')
param tags object

@description('Function App name; the webhook is https://<name>.azurewebsites.net/api/ClerkWebhook.')
param name string

@description('Name of the hosting plan.')
param planName string

@description('FlexConsumption (serverless) or Dedicated (an always-on Linux App Service plan).')
@allowed([
  'FlexConsumption'
  'Dedicated'
])
param hostingPlan string

@description('App Service plan SKU when hostingPlan is Dedicated.')
param dedicatedSku string

@description('Memory of each Flex Consumption instance, in MB.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int

@description('Most instances Flex Consumption may scale out to.')
@maxValue(1000)
param maximumInstanceCount int

@description('SystemAssigned, or UserAssigned to create an identity that outlives the app (and set AZURE_CLIENT_ID).')
@allowed([
  'SystemAssigned'
  'UserAssigned'
])
param identityType string = 'SystemAssigned'

@description('Name of the user-assigned identity, used only when identityType is UserAssigned.')
param userAssignedIdentityName string

@description('Subnet for virtual network integration; empty for none.')
param subnetId string

@description('Name of the host storage account (AzureWebJobsStorage).')
param storageAccountName string

@description('Blob container Flex Consumption runs the deployment package from.')
param deploymentContainerName string

@description('Name of the Application Insights component.')
param appInsightsName string

@description('Name of the Key Vault holding the signing secret and the Clerk secret key.')
param keyVaultName string

@description('Versionless URI of the signing secret in that vault.')
param signingSecretUri string

@description('Versionless URI of the Clerk secret key in that vault.')
param clerkSecretKeyUri string

@description('Whether the Clerk secret key exists in the vault, so CLERK_SECRET_KEY may refer to it. A reference to a missing secret would stop the handler at startup.')
param clerkSecretKeyInVault bool

@description('Name of the Cosmos DB account.')
param cosmosAccountName string

@description('Name of the Cosmos DB database; the identity may use every container in it.')
param cosmosDatabaseName string

@description('Name of the users container.')
param cosmosContainerName string

@description('Days a deleted user\'s tombstone lives (TOMBSTONE_TTL_DAYS).')
param tombstoneTtlDays int

@description('Log filter for the handler (RUST_LOG).')
param rustLog string

@description('NCRONTAB schedule of the Reconcile timer, six fields, UTC (RECONCILE_SCHEDULE).')
param reconcileSchedule string

@description('Most Clerk Backend API requests per second (CLERK_API_RATE).')
@minValue(1)
param clerkApiRate int

@description('Clerk Backend API base URL (CLERK_API_URL); empty for the handler\'s default, https://api.clerk.com.')
param clerkApiUrl string

@description('PEM public key that verifies Clerk session tokens for SyncMe (CLERK_JWT_KEY); empty for none.')
param clerkJwtKey string

@description('URL of the Clerk instance\'s JSON Web Key Set, used for SyncMe when clerkJwtKey is empty (CLERK_JWKS_URL); empty for none.')
param clerkJwksUrl string

@description('Origins whose session tokens SyncMe accepts, matched against the token\'s azp (CLERK_AUTHORIZED_PARTIES).')
param clerkAuthorizedParties array

@description('Issuer a session token must carry for SyncMe (CLERK_ISSUER); empty for no check.')
param clerkIssuer string

@description('SyncMe accepts sessions whose sts is pending (CLERK_ALLOW_PENDING_SESSIONS); refused when false.')
param clerkAllowPendingSessions bool

@description('Origins browsers may call the app from (CORS); the platform answers their preflight requests.')
param corsAllowedOrigins array

var isFlex = hostingPlan == 'FlexConsumption'
var isUserAssigned = identityType == 'UserAssigned'

// Built-in role definition IDs, identical in every tenant.
var roles = {
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  keyVaultSecretsUser: '4633458b-17de-408a-b874-0445c86b69e6'
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'
  // Cosmos DB's own data-plane role, "Cosmos DB Built-in Data Contributor".
  cosmosDataContributor: '00000000-0000-0000-0000-000000000002'
}

resource storage 'Microsoft.Storage/storageAccounts@2025-01-01' existing = {
  name: storageAccountName
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

resource vault 'Microsoft.KeyVault/vaults@2024-11-01' existing = {
  name: keyVaultName
}

resource cosmos 'Microsoft.DocumentDB/databaseAccounts@2025-04-15' existing = {
  name: cosmosAccountName
}

resource userIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2024-11-30' = if (isUserAssigned) {
  name: userAssignedIdentityName
  location: location
  tags: tags
}

var clientId = isUserAssigned ? userIdentity!.properties.clientId : ''

var planSku = {
  FlexConsumption: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  Dedicated: {
    name: dedicatedSku
  }
}

resource plan 'Microsoft.Web/serverfarms@2024-11-01' = {
  // checkov:skip=CKV_AZURE_225: Zone redundancy is not offered in every region, and on an App Service plan it needs Premium with several instances; a zone outage only delays syncing, since Svix retries failed deliveries for days.
  name: planName
  location: location
  tags: tags
  kind: isFlex ? 'functionapp' : 'linux'
  sku: planSku[hostingPlan]
  properties: {
    // Linux.
    reserved: true
  }
}

// Flex Consumption fetches the package from blob storage with the app's identity.
var deploymentAuthentication = {
  SystemAssigned: {
    type: 'SystemAssignedIdentity'
  }
  UserAssigned: {
    type: 'UserAssignedIdentity'
    userAssignedIdentityResourceId: userIdentity!.id
  }
}

var flexConfig = {
  deployment: {
    storage: {
      type: 'blobContainer'
      value: '${storage.properties.primaryEndpoints.blob}${deploymentContainerName}'
      authentication: deploymentAuthentication[identityType]
    }
  }
  scaleAndConcurrency: {
    instanceMemoryMB: instanceMemoryMB
    maximumInstanceCount: maximumInstanceCount
  }
  runtime: {
    name: 'custom'
    version: '1.0'
  }
}

var handlerSettings = [
  {
    name: 'CLERK_WEBHOOK_SIGNING_SECRET'
    value: '@Microsoft.KeyVault(SecretUri=${signingSecretUri})'
  }
  {
    name: 'COSMOS_ENDPOINT'
    value: cosmos.properties.documentEndpoint
  }
  {
    name: 'COSMOS_DATABASE_NAME'
    value: cosmosDatabaseName
  }
  {
    name: 'COSMOS_CONTAINER_NAME'
    value: cosmosContainerName
  }
  {
    name: 'TOMBSTONE_TTL_DAYS'
    value: string(tombstoneTtlDays)
  }
  {
    name: 'LOG_FORMAT'
    value: 'json'
  }
  {
    name: 'RUST_LOG'
    value: rustLog
  }
  // The host resolves %RECONCILE_SCHEDULE% in Reconcile/function.json; without the setting the
  // function would not load.
  {
    name: 'RECONCILE_SCHEDULE'
    value: reconcileSchedule
  }
  {
    name: 'CLERK_API_RATE'
    value: string(clerkApiRate)
  }
]

// Reconcile, SyncMe and the resurrection guard are optional: each of these is written only when it
// has a value, and the handler treats an absent one as unset (not configured, or its default).
var optionalHandlerSettings = filter([
  {
    name: 'CLERK_SECRET_KEY'
    value: clerkSecretKeyInVault ? '@Microsoft.KeyVault(SecretUri=${clerkSecretKeyUri})' : ''
  }
  {
    name: 'CLERK_API_URL'
    value: clerkApiUrl
  }
  {
    name: 'CLERK_JWT_KEY'
    value: clerkJwtKey
  }
  {
    name: 'CLERK_JWKS_URL'
    value: clerkJwksUrl
  }
  {
    name: 'CLERK_AUTHORIZED_PARTIES'
    value: join(clerkAuthorizedParties, ',')
  }
  {
    name: 'CLERK_ISSUER'
    value: clerkIssuer
  }
  {
    name: 'CLERK_ALLOW_PENDING_SESSIONS'
    value: clerkAllowPendingSessions ? 'true' : ''
  }
], setting => !empty(setting.value))

var hostSettings = [
  // Blob is the only storage service these functions use (the timer keeps its lock and schedule
  // status in blobs), and the only one the identity is granted and the private endpoints cover.
  {
    name: 'AzureWebJobsStorage__blobServiceUri'
    value: storage.properties.primaryEndpoints.blob
  }
  {
    name: 'AzureWebJobsStorage__credential'
    value: 'managedidentity'
  }
  // Diagnostic events would be written to table storage, which the identity cannot reach.
  {
    name: 'AzureWebJobsFeatureFlags'
    value: 'DisableDiagnosticEventLogging'
  }
  {
    name: 'APPLICATIONINSIGHTS_CONNECTION_STRING'
    value: appInsights.properties.ConnectionString
  }
  {
    name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING'
    value: isUserAssigned ? 'ClientId=${clientId};Authorization=AAD' : 'Authorization=AAD'
  }
]

// Without a client ID, the handler's credential and the host would ask for a system identity.
var userAssignedSettings = [
  {
    name: 'AZURE_CLIENT_ID'
    value: clientId
  }
  {
    name: 'AzureWebJobsStorage__clientId'
    value: clientId
  }
]

// Flex Consumption rejects these: it takes the runtime from functionAppConfig and runs the package
// from its deployment container.
var dedicatedSettings = [
  {
    name: 'FUNCTIONS_EXTENSION_VERSION'
    value: '~4'
  }
  {
    name: 'FUNCTIONS_WORKER_RUNTIME'
    value: 'custom'
  }
  {
    name: 'WEBSITE_RUN_FROM_PACKAGE'
    value: '1'
  }
]

resource app 'Microsoft.Web/sites@2024-11-01' = {
  // checkov:skip=CKV_AZURE_222: The webhook must be reachable by Clerk's delivery service (Svix) on the internet, and /api/me/sync by the application's users' browsers; every delivery is authenticated by its Svix signature, every sync by a Clerk session token.
  // checkov:skip=CKV_AZURE_17: Clerk's webhook deliveries do not present client certificates.
  // checkov:skip=CKV_AZURE_212: Standing instances would end scale-to-zero (and nothing-at-idle billing); Svix retries a delivery that meets a cold start or a failed instance.
  // checkov:skip=CKV_AZURE_213: Health-check eviction needs a pool of always-on instances, which scale-to-zero does not keep; the Functions host itself restarts a handler that stops answering.
  name: name
  location: location
  // azd-service-name lets `azd deploy` find the app for the `handler` service of azure.yaml.
  tags: union(tags, { 'azd-service-name': 'handler' })
  kind: 'functionapp,linux'
  identity: {
    type: identityType
    userAssignedIdentities: isUserAssigned ? { '${userIdentity!.id}': {} } : null
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    clientAffinityEnabled: false
    virtualNetworkSubnetId: empty(subnetId) ? null : subnetId
    // Key Vault references resolve with this identity too.
    keyVaultReferenceIdentity: isUserAssigned ? userIdentity!.id : 'SystemAssigned'
    functionAppConfig: isFlex ? flexConfig : null
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      // Flex Consumption takes the runtime from functionAppConfig, scales to zero rather than
      // staying on, and always sends outbound traffic into the integrated network; an App Service
      // plan must be told each. Custom handlers run on an empty linuxFxVersion.
      linuxFxVersion: isFlex ? null : ''
      alwaysOn: isFlex ? null : true
      vnetRouteAllEnabled: isFlex ? null : !empty(subnetId)
      // Browsers call /api/me/sync from the application's origins with the session token in the
      // Authorization header, not a cookie, so no credentials mode.
      cors: {
        allowedOrigins: corsAllowedOrigins
        supportCredentials: false
      }
      appSettings: concat(handlerSettings, optionalHandlerSettings, hostSettings, isUserAssigned ? userAssignedSettings : [], isFlex ? [] : dedicatedSettings)
    }
  }
}

// Deployments authenticate with Entra ID (az, azd, func); no FTP or Kudu passwords exist to leak.
resource basicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-11-01' = [
  for protocol in ['ftp', 'scm']: {
    parent: app
    name: protocol
    properties: {
      allow: false
    }
  }
]

var principalId = isUserAssigned ? userIdentity!.properties.principalId : app.identity.principalId

// The host keeps its locks and keys in blobs and creates their containers: Storage Blob Data Owner
// on the account is the documented minimum. Flex Consumption also reads the package with it.
resource storageAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, app.id, roles.storageBlobDataOwner)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataOwner)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

// The vault holds nothing but the app's Clerk secrets, which may not exist yet: the vault is the scope.
resource vaultAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, app.id, roles.keyVaultSecretsUser)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsUser)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

// Required to send telemetry once the component accepts Entra ID ingestion only.
resource telemetryAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(appInsights.id, app.id, roles.monitoringMetricsPublisher)
  scope: appInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringMetricsPublisher)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

// Scoped to the database rather than the container: SDKs read the database's metadata, which a
// container-scoped assignment does not cover (Azure/azure-cosmos-dotnet-v3#3638).
resource cosmosAccess 'Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments@2025-04-15' = {
  parent: cosmos
  name: guid(cosmos.id, app.id, roles.cosmosDataContributor)
  properties: {
    roleDefinitionId: '${cosmos.id}/sqlRoleDefinitions/${roles.cosmosDataContributor}'
    principalId: principalId
    scope: '${cosmos.id}/dbs/${cosmosDatabaseName}'
  }
}

output name string = app.name
output defaultHostName string = app.properties.defaultHostName
