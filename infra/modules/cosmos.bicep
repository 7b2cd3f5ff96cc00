// The Cosmos DB for NoSQL account, database and container that hold one document per Clerk user,
// organization and membership.
// Entra ID only: account keys cannot read data or change the schema.

@description('Azure region for the account (its only region).')
param location string

@description('Tags applied to every resource.')
param tags object

@description('Cosmos DB account name: 3-44 lowercase letters, digits and hyphens, globally unique.')
@minLength(3)
@maxLength(44)
param accountName string

@description('Database name (the handler\'s COSMOS_DATABASE_NAME).')
param databaseName string

@description('Container name (the handler\'s COSMOS_CONTAINER_NAME).')
param containerName string

@description('Serverless bills per request and storage only; Provisioned reserves a fixed RU/s; Autoscale reserves up to a maximum RU/s.')
@allowed([
  'Serverless'
  'Provisioned'
  'Autoscale'
])
param capacityMode string

@description('Container RU/s: the fixed throughput for Provisioned (400 or more), the maximum for Autoscale (1000 or more). Unused for Serverless.')
@minValue(400)
param throughput int

@description('Paths the container indexes: what the handler queries by. Every indexed path makes every write cost more request units; id and _ts are indexed regardless.')
param indexedPaths array = [
  '/type/?'
  '/userId/?'
  '/organizationId/?'
  '/email/?'
  '/externalId/?'
  '/username/?'
  '/clerkUpdatedAt/?'
]

@description('Further paths to index for an application\'s own queries, such as /publicMetadata/plan/?.')
param additionalIndexedPaths array = []

@description('Disabled leaves private endpoints as the only way in; Enabled is for deployments without them.')
@allowed([
  'Enabled'
  'Disabled'
])
param publicNetworkAccess string = 'Disabled'

var containerOptions = {
  Serverless: {}
  Provisioned: {
    throughput: throughput
  }
  Autoscale: {
    autoscaleSettings: {
      maxThroughput: throughput
    }
  }
}

resource account 'Microsoft.DocumentDB/databaseAccounts@2025-04-15' = {
  name: accountName
  location: location
  tags: tags
  kind: 'GlobalDocumentDB'
  properties: {
    databaseAccountOfferType: 'Standard'
    locations: [
      {
        locationName: location
        failoverPriority: 0
        isZoneRedundant: false
      }
    ]
    consistencyPolicy: {
      defaultConsistencyLevel: 'Session'
    }
    capabilities: capacityMode == 'Serverless' ? [{ name: 'EnableServerless' }] : []
    // Every capacity mode supports continuous backup; the 7-day tier has no storage charge.
    backupPolicy: {
      type: 'Continuous'
      continuousModeProperties: {
        tier: 'Continuous7Days'
      }
    }
    disableLocalAuth: true
    disableKeyBasedMetadataWriteAccess: true
    minimalTlsVersion: 'Tls12'
    enableMultipleWriteLocations: false
    publicNetworkAccess: publicNetworkAccess
    networkAclBypass: 'None'
  }
}

resource database 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases@2025-04-15' = {
  parent: account
  name: databaseName
  properties: {
    resource: {
      id: databaseName
    }
  }
}

resource container 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers@2025-04-15' = {
  parent: database
  name: containerName
  properties: {
    resource: {
      id: containerName
      partitionKey: {
        paths: [
          '/id'
        ]
        kind: 'Hash'
        version: 2
      }
      // -1 turns TTL on without expiring anything by default, so only documents that carry their
      // own `ttl` (deletion tombstones) expire.
      defaultTtl: -1
      // Only the listed paths are indexed: the default policy indexes every property of every
      // document, which each write pays for. Consistent mode, which TTL requires. Changing the
      // list makes Cosmos DB rebuild the index online.
      indexingPolicy: {
        indexingMode: 'consistent'
        automatic: true
        includedPaths: [for path in union(indexedPaths, additionalIndexedPaths): {
          path: path
        }]
        excludedPaths: [
          {
            path: '/*'
          }
        ]
      }
    }
    options: containerOptions[capacityMode]
  }
}

output id string = account.id
output name string = account.name
output endpoint string = account.properties.documentEndpoint
