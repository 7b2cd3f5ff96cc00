// The Functions host's storage account (AzureWebJobsStorage) and the blob container Flex Consumption
// runs the deployment package from. Reached only with Entra ID: shared keys are off.

@description('Azure region for the account.')
param location string

@description('Tags applied to every resource.')
param tags object

@description('Storage account name: 3-24 lowercase letters and digits, globally unique.')
@minLength(3)
@maxLength(24)
param name string

@description('Blob container for the deployment package, which Flex Consumption runs from (an App Service plan keeps its package with the app and leaves the container empty).')
param deploymentContainerName string

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

resource storage 'Microsoft.Storage/storageAccounts@2025-01-01' = {
  // checkov:skip=CKV_AZURE_36: No Azure service reaches this account on the app's behalf; its only user is the Function App's identity, so the firewall grants no trusted-service exception.
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    // Geo-redundancy costs cents for the few megabytes kept here.
    name: 'Standard_GRS'
  }
  properties: {
    accessTier: 'Hot'
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    allowBlobPublicAccess: false
    allowCrossTenantReplication: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: publicNetworkAccess
    networkAcls: {
      defaultAction: networkDefaultAction
      bypass: 'None'
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2025-01-01' = {
  parent: storage
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: 7
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2025-01-01' = {
  parent: blobService
  name: deploymentContainerName
  properties: {
    publicAccess: 'None'
  }
}

output id string = storage.id
output name string = storage.name
output blobEndpoint string = storage.properties.primaryEndpoints.blob
