// One private endpoint for one service, with the private DNS zone that makes the service's usual
// host name resolve to the endpoint from inside the virtual network. Used once per data service.

@description('Azure region for the endpoint.')
param location string

@description('Tags applied to every resource.')
param tags object

@description('Name of the private endpoint.')
param name string

@description('Resource ID of the service the endpoint leads to.')
param serviceId string

@description('Sub-resource of that service: Sql (Cosmos DB for NoSQL), blob (storage) or vault (Key Vault).')
param groupId string

@description('Private DNS zone for that sub-resource, such as privatelink.documents.azure.com.')
param dnsZoneName string

@description('Subnet the endpoint takes its private address from.')
param subnetId string

@description('Virtual network linked to the DNS zone, whose resources then resolve the private address.')
param vnetId string

resource zone 'Microsoft.Network/privateDnsZones@2024-06-01' = {
  name: dnsZoneName
  location: 'global'
  tags: tags
}

resource zoneLink 'Microsoft.Network/privateDnsZones/virtualNetworkLinks@2024-06-01' = {
  parent: zone
  name: last(split(vnetId, '/'))
  location: 'global'
  tags: tags
  properties: {
    registrationEnabled: false
    virtualNetwork: {
      id: vnetId
    }
  }
}

resource endpoint 'Microsoft.Network/privateEndpoints@2024-05-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    subnet: {
      id: subnetId
    }
    privateLinkServiceConnections: [
      {
        name: name
        properties: {
          privateLinkServiceId: serviceId
          groupIds: [
            groupId
          ]
        }
      }
    ]
  }
}

// Keeps the zone's A record in step with the endpoint's address for as long as both exist.
resource zoneGroup 'Microsoft.Network/privateEndpoints/privateDnsZoneGroups@2024-05-01' = {
  parent: endpoint
  name: 'default'
  properties: {
    privateDnsZoneConfigs: [
      {
        name: replace(dnsZoneName, '.', '-')
        properties: {
          privateDnsZoneId: zone.id
        }
      }
    ]
  }
}
