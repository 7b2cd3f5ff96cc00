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

// The Clerk secret key (sk_...), for reconcile and SyncMe, the same way: unset or empty leaves the
// stored key as it is. Once it is stored, set clerkSecretKeyInVault to true so that deployments
// without the variable keep CLERK_SECRET_KEY referring to it.
param clerkSecretKey = readEnvironmentVariable('CLERK_SECRET_KEY', '')
param clerkSecretKeyInVault = false

// NCRONTAB, six fields, UTC.
param reconcileSchedule = '0 0 3 * * *'

// Alerts: who is emailed when one fires (none: they still show in the portal), and one switch that
// disables every rule. Per-alert settings override the defaults in modules/alerts.bicep:
// param alertSettings = { 'deliveries-failing': { threshold: 5 }, 'reconcile-drift': { enabled: false } }
param alertEmailAddresses = []
param alertsEnabled = true

// SyncMe, for an application served from https://app.example.com (not secret):
// param clerkJwksUrl = 'https://<your-frontend-api>/.well-known/jwks.json'
// param clerkAuthorizedParties = ['https://app.example.com']
// param corsAllowedOrigins = ['https://app.example.com']
