// clerk-cosmos: everything the `handler` Function App needs, in one resource group, with no keys:
// every service is reached with the app's managed identity. See "Deploy to Azure" in README.md.
targetScope = 'resourceGroup'

@description('Azure region for every resource; it must offer Flex Consumption (az functionapp list-flexconsumption-locations) when that is the plan.')
param location string = resourceGroup().location

@description('Short lowercase prefix of resource names (letters, digits, hyphens). A hash of the resource group and this prefix makes the names globally unique; change it to deploy a second copy into the same group.')
@minLength(2)
@maxLength(8)
param namePrefix string = 'clerk'

@description('Tags applied to every resource.')
param tags object = {}

@description('FlexConsumption: serverless, scales to zero, nothing to pay at idle. Dedicated: an always-on Linux App Service plan of dedicatedSku, billed by the hour.')
@allowed([
  'FlexConsumption'
  'Dedicated'
])
param hostingPlan string = 'FlexConsumption'

@description('App Service plan SKU when hostingPlan is Dedicated, such as B1 or P0v3 (Basic or above, for virtual network integration).')
param dedicatedSku string = 'B1'

@description('Memory of each Flex Consumption instance, in MB.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Most instances Flex Consumption may scale out to; a ceiling on spend and on concurrent Cosmos DB writes.')
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Identity the app reaches every service with: SystemAssigned (lives and dies with the app) or UserAssigned (a separate resource; also sets AZURE_CLIENT_ID).')
@allowed([
  'SystemAssigned'
  'UserAssigned'
])
param identityType string = 'SystemAssigned'

@description('Cosmos DB capacity: Serverless (pay per request, nothing at idle), Provisioned (fixed RU/s, billed hourly) or Autoscale (scales between 10% and 100% of a maximum RU/s, billed hourly).')
@allowed([
  'Serverless'
  'Provisioned'
  'Autoscale'
])
param cosmosCapacityMode string = 'Serverless'

@description('Container RU/s for Provisioned (fixed, 400 or more) or Autoscale (maximum, 1000 or more); unused for Serverless.')
@minValue(400)
param cosmosThroughput int = 1000

@description('Cosmos DB database name (COSMOS_DATABASE_NAME).')
param cosmosDatabaseName string = 'clerk'

@description('Cosmos DB container name (COSMOS_CONTAINER_NAME); partitioned by /id.')
param cosmosContainerName string = 'users'

@description('Paths to index in the Cosmos DB container besides the handler\'s own, such as /publicMetadata/plan/? for an application query. Each indexed path makes every write cost more.')
param cosmosAdditionalIndexedPaths array = []

@description('Days a deleted user\'s tombstone is kept, blocking late events from bringing the user back (TOMBSTONE_TTL_DAYS).')
@minValue(1)
param tombstoneTtlDays int = 30

@description('Handler log filter (RUST_LOG), such as info or handler=debug,info.')
param rustLog string = 'info'

@secure()
@description('Clerk webhook signing secret (whsec_...; several separated by commas while rotating). Leave empty until Clerk has shown it, then deploy again with it; an empty value leaves the stored secret unchanged.')
param clerkWebhookSigningSecret string = ''

@secure()
@description('Clerk secret key (sk_live_... or sk_test_...), for reconcile, SyncMe and the resurrection guard, which stay off without it. Stored in Key Vault and referenced by CLERK_SECRET_KEY; an empty value leaves the stored key unchanged.')
param clerkSecretKey string = ''

@description('True once an earlier deployment has stored clerkSecretKey in Key Vault, so that deployments without the value keep CLERK_SECRET_KEY referring to it. While false, CLERK_SECRET_KEY is set only by a deployment that carries the key (a reference to a missing secret would stop the handler at startup).')
param clerkSecretKeyInVault bool = false

@description('When the Reconcile timer runs: NCRONTAB, six fields ({second} {minute} {hour} {day} {month} {day-of-week}), UTC (RECONCILE_SCHEDULE).')
param reconcileSchedule string = '0 0 3 * * *'

@description('Most Clerk Backend API requests per second (CLERK_API_RATE). Clerk allows a development instance 100 requests per 10 s and a production instance 1000 per 10 s, shared with everything else using the key.')
@minValue(1)
@maxValue(100)
param clerkApiRate int = 10

@description('Clerk Backend API base URL (CLERK_API_URL); empty leaves the handler\'s default, https://api.clerk.com.')
param clerkApiUrl string = ''

@description('SyncMe: the PEM public key that verifies Clerk session tokens, from the Clerk dashboard (CLERK_JWT_KEY). Public, not a secret. Empty to use clerkJwksUrl instead.')
param clerkJwtKey string = ''

@description('SyncMe: the Clerk instance\'s JSON Web Key Set URL, such as https://<frontend-api>/.well-known/jwks.json, used when clerkJwtKey is empty (CLERK_JWKS_URL).')
param clerkJwksUrl string = ''

@description('SyncMe: origins whose session tokens are accepted, such as https://app.example.com (CLERK_AUTHORIZED_PARTIES, matched against the token\'s azp). SyncMe stays off while this is empty.')
param clerkAuthorizedParties array = []

@description('SyncMe: the issuer session tokens must carry, the Clerk Frontend API URL (CLERK_ISSUER); empty for no issuer check.')
param clerkIssuer string = ''

@description('SyncMe: accept sessions whose sts claim is pending (signing in not finished, e.g. an organization still to choose); refused by default, as @clerk/backend does (CLERK_ALLOW_PENDING_SESSIONS).')
param clerkAllowPendingSessions bool = false

@description('Origins browsers may call the app from, such as https://app.example.com (CORS; usually the same as clerkAuthorizedParties). The platform answers preflight requests for them. Never *.')
param corsAllowedOrigins array = []

@description('Put Cosmos DB, storage and Key Vault behind private endpoints in a new virtual network the app is integrated with, so only the app\'s HTTP functions face the internet.')
param privateNetworking bool = true

@description('Address space of that virtual network.')
param vnetAddressPrefix string = '10.40.0.0/16'

@description('Subnet the Function App integrates with, inside vnetAddressPrefix.')
param appSubnetPrefix string = '10.40.0.0/24'

@description('Subnet the private endpoints take their addresses from, inside vnetAddressPrefix.')
param privateEndpointSubnetPrefix string = '10.40.1.0/24'

@description('Email addresses the alerts notify, such as [\'ops@example.com\']. Empty: the alerts still fire and show in the portal, but notify no one.')
param alertEmailAddresses array = []

@description('False deploys every alert rule disabled (they stay in place, so turning them back on is one deployment).')
param alertsEnabled bool = true

@description('Overrides of the alerts\' settings by alert name, merged over the defaults in modules/alerts.bicep: severity (0 critical to 4 verbose), evaluationFrequencyMinutes, windowMinutes, threshold, enabled. Such as { \'deliveries-failing\': { threshold: 5 } }.')
param alertSettings object = {}

var isFlex = hostingPlan == 'FlexConsumption'
var prefix = toLower(namePrefix)
var token = uniqueString(resourceGroup().id, prefix)
var names = {
  functionApp: 'func-${prefix}-${token}'
  plan: 'plan-${prefix}-${token}'
  identity: 'id-${prefix}-${token}'
  storage: take('st${replace(prefix, '-', '')}${token}', 24)
  cosmos: 'cosmos-${prefix}-${token}'
  keyVault: take('kv-${prefix}-${token}', 24)
  workspace: 'log-${prefix}-${token}'
  appInsights: 'appi-${prefix}-${token}'
  actionGroup: 'ag-${prefix}-${token}'
  alertRules: 'alert-${prefix}-${token}'
  vnet: 'vnet-${prefix}-${token}'
}
var deploymentContainerName = 'deployment-package'
var signingSecretName = 'clerk-webhook-signing-secret'
var clerkSecretKeyName = 'clerk-secret-key'
// One switch for all three data services: closed to public networks when they have private
// endpoints; otherwise open to callers that hold an Entra ID token with a role on them.
var dataPublicNetworkAccess = privateNetworking ? 'Disabled' : 'Enabled'
var dataNetworkDefaultAction = privateNetworking ? 'Deny' : 'Allow'

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  params: {
    location: location
    tags: tags
    workspaceName: names.workspace
    appInsightsName: names.appInsights
  }
}

module alerts 'modules/alerts.bicep' = {
  name: 'alerts'
  params: {
    location: location
    tags: tags
    actionGroupName: names.actionGroup
    actionGroupShortName: prefix
    rulePrefix: names.alertRules
    appInsightsId: monitoring.outputs.appInsightsId
    emailAddresses: alertEmailAddresses
    alertsEnabled: alertsEnabled
    reconcileConfigured: clerkSecretKeyInVault || !empty(clerkSecretKey)
    alertSettings: alertSettings
  }
}

module workbook 'modules/workbook.bicep' = {
  name: 'workbook'
  params: {
    location: location
    tags: tags
    appInsightsId: monitoring.outputs.appInsightsId
    displayName: 'clerk-cosmos (${names.appInsights})'
  }
}

module storage 'modules/storage.bicep' = {
  name: 'storage'
  params: {
    location: location
    tags: tags
    name: names.storage
    deploymentContainerName: deploymentContainerName
    publicNetworkAccess: dataPublicNetworkAccess
    networkDefaultAction: dataNetworkDefaultAction
  }
}

module cosmos 'modules/cosmos.bicep' = {
  name: 'cosmos'
  params: {
    location: location
    tags: tags
    accountName: names.cosmos
    databaseName: cosmosDatabaseName
    containerName: cosmosContainerName
    capacityMode: cosmosCapacityMode
    throughput: cosmosThroughput
    additionalIndexedPaths: cosmosAdditionalIndexedPaths
    publicNetworkAccess: dataPublicNetworkAccess
  }
}

module keyVault 'modules/key-vault.bicep' = {
  name: 'key-vault'
  params: {
    location: location
    tags: tags
    name: names.keyVault
    secretName: signingSecretName
    signingSecret: clerkWebhookSigningSecret
    clerkSecretKeyName: clerkSecretKeyName
    clerkSecretKey: clerkSecretKey
    publicNetworkAccess: dataPublicNetworkAccess
    networkDefaultAction: dataNetworkDefaultAction
  }
}

module network 'modules/network.bicep' = if (privateNetworking) {
  name: 'network'
  params: {
    location: location
    tags: tags
    name: names.vnet
    addressPrefix: vnetAddressPrefix
    appSubnetPrefix: appSubnetPrefix
    privateEndpointSubnetPrefix: privateEndpointSubnetPrefix
    appSubnetDelegation: isFlex ? 'Microsoft.App/environments' : 'Microsoft.Web/serverFarms'
  }
}

// One endpoint per data service the app talks to. Application Insights stays on its public
// ingestion endpoint, reached outbound with Entra ID. IDs are built from the names because a loop's
// array must be known when the deployment starts.
var privateEndpoints = [
  {
    name: 'pe-${names.cosmos}'
    serviceId: resourceId('Microsoft.DocumentDB/databaseAccounts', names.cosmos)
    groupId: 'Sql'
    dnsZoneName: 'privatelink.documents.azure.com'
  }
  {
    name: 'pe-${names.storage}-blob'
    serviceId: resourceId('Microsoft.Storage/storageAccounts', names.storage)
    groupId: 'blob'
    dnsZoneName: 'privatelink.blob.${environment().suffixes.storage}'
  }
  {
    name: 'pe-${names.keyVault}'
    serviceId: resourceId('Microsoft.KeyVault/vaults', names.keyVault)
    groupId: 'vault'
    dnsZoneName: 'privatelink.vaultcore.azure.net'
  }
]

module endpoints 'modules/private-endpoint.bicep' = [
  for endpoint in privateEndpoints: if (privateNetworking) {
    name: endpoint.name
    params: {
      location: location
      tags: tags
      name: endpoint.name
      serviceId: endpoint.serviceId
      groupId: endpoint.groupId
      dnsZoneName: endpoint.dnsZoneName
      subnetId: network!.outputs.privateEndpointSubnetId
      vnetId: network!.outputs.id
    }
    dependsOn: [
      cosmos
      storage
      keyVault
    ]
  }
]

module functionApp 'modules/function-app.bicep' = {
  name: 'function-app'
  params: {
    location: location
    tags: tags
    name: names.functionApp
    planName: names.plan
    hostingPlan: hostingPlan
    dedicatedSku: dedicatedSku
    instanceMemoryMB: instanceMemoryMB
    maximumInstanceCount: maximumInstanceCount
    identityType: identityType
    userAssignedIdentityName: names.identity
    subnetId: privateNetworking ? network!.outputs.appSubnetId : ''
    storageAccountName: storage.outputs.name
    deploymentContainerName: deploymentContainerName
    appInsightsName: monitoring.outputs.appInsightsName
    keyVaultName: keyVault.outputs.name
    signingSecretUri: keyVault.outputs.secretUri
    clerkSecretKeyUri: keyVault.outputs.clerkSecretKeyUri
    clerkSecretKeyInVault: clerkSecretKeyInVault || !empty(clerkSecretKey)
    cosmosAccountName: cosmos.outputs.name
    cosmosDatabaseName: cosmosDatabaseName
    cosmosContainerName: cosmosContainerName
    tombstoneTtlDays: tombstoneTtlDays
    rustLog: rustLog
    reconcileSchedule: reconcileSchedule
    clerkApiRate: clerkApiRate
    clerkApiUrl: clerkApiUrl
    clerkJwtKey: clerkJwtKey
    clerkJwksUrl: clerkJwksUrl
    clerkAuthorizedParties: clerkAuthorizedParties
    clerkIssuer: clerkIssuer
    clerkAllowPendingSessions: clerkAllowPendingSessions
    corsAllowedOrigins: corsAllowedOrigins
  }
  // The app's first start should find the data services' private names already resolving.
  dependsOn: [
    endpoints
  ]
}

@description('The URL to register as the endpoint in the Clerk dashboard.')
output webhookUrl string = 'https://${functionApp.outputs.defaultHostName}/api/ClerkWebhook'

@description('Function App to deploy the package to.')
output functionAppName string = functionApp.outputs.name

@description('Cosmos DB endpoint the app writes to (COSMOS_ENDPOINT).')
output cosmosEndpoint string = cosmos.outputs.endpoint

@description('Key Vault holding the signing secret and the Clerk secret key.')
output keyVaultName string = keyVault.outputs.name

@description('The URL browsers call to have their user stored at once (SyncMe; needs the Clerk secret key and the SyncMe parameters).')
output syncMeUrl string = 'https://${functionApp.outputs.defaultHostName}/api/me/sync'

@description('The workbook (deliveries, latency, request units, reconcile runs, SyncMe): open it from the Application Insights resource, Monitoring > Workbooks.')
output workbookId string = workbook.outputs.id
