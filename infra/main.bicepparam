// Parameters for `az deployment group create --parameters infra/main.bicepparam` (and `azd up`).
// Every parameter of main.bicep has a default; these are the ones most often changed.
using './main.bicep'

param namePrefix = 'clerk'
param hostingPlan = 'FlexConsumption'
param identityType = 'SystemAssigned'
param cosmosCapacityMode = 'Serverless'
param privateNetworking = true

// Read from the environment so the secret never sits in a file or on a command line. Unset or empty
// leaves the secret in Key Vault as it is.
param clerkWebhookSigningSecret = readEnvironmentVariable('CLERK_WEBHOOK_SIGNING_SECRET', '')
