// The virtual network of the private-networking option: one subnet the Function App integrates with
// (its outbound traffic enters the network there) and one for the private endpoints of the data
// services.

@description('Azure region for the network.')
param location string

@description('Tags applied to every resource.')
param tags object

@description('Name of the virtual network.')
param name string

@description('Address space of the virtual network.')
param addressPrefix string

@description('Address range of the subnet the Function App integrates with (a /26 or larger for Flex Consumption scale-out).')
param appSubnetPrefix string

@description('Address range of the subnet the private endpoints take their addresses from.')
param privateEndpointSubnetPrefix string

@description('Delegation of the app subnet: Microsoft.App/environments for Flex Consumption, Microsoft.Web/serverFarms for an App Service plan.')
param appSubnetDelegation string

// Nothing is meant to arrive in either subnet from outside the network; the default rules already
// allow traffic within it, which is all the app and the endpoints need.
resource nsg 'Microsoft.Network/networkSecurityGroups@2024-05-01' = {
  name: '${name}-nsg'
  location: location
  tags: tags
  properties: {
    securityRules: []
  }
}

resource vnet 'Microsoft.Network/virtualNetworks@2024-05-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    addressSpace: {
      addressPrefixes: [
        addressPrefix
      ]
    }
    subnets: [
      {
        name: 'app'
        properties: {
          addressPrefix: appSubnetPrefix
          networkSecurityGroup: {
            id: nsg.id
          }
          delegations: [
            {
              name: 'app'
              properties: {
                serviceName: appSubnetDelegation
              }
            }
          ]
        }
      }
      {
        name: 'private-endpoints'
        properties: {
          addressPrefix: privateEndpointSubnetPrefix
          networkSecurityGroup: {
            id: nsg.id
          }
          privateEndpointNetworkPolicies: 'Disabled'
        }
      }
    ]
  }
}

output id string = vnet.id
output appSubnetId string = resourceId('Microsoft.Network/virtualNetworks/subnets', vnet.name, 'app')
output privateEndpointSubnetId string = resourceId('Microsoft.Network/virtualNetworks/subnets', vnet.name, 'private-endpoints')
