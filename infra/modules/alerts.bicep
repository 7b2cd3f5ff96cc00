// The action group and the log search alert rules on Application Insights. Each rule runs one query
// file from infra/queries/ and fires when it returns at least one row; the file's first lines hold
// its defaults (`let threshold = 1;`, `let window = 15m;`), which are rewritten here from the
// settings, so the query and the rule always agree on the window.

@description('Azure region of the rules: that of Application Insights.')
param location string

@description('Tags applied to every resource.')
param tags object

@description('Name of the action group.')
param actionGroupName string

@description('Action group short name, shown in notifications (at most 12 characters).')
@maxLength(12)
param actionGroupShortName string

@description('Prefix of the rule names; each rule is <prefix>-<alert name>.')
param rulePrefix string

@description('Resource ID of the Application Insights component the rules query.')
param appInsightsId string

@description('Addresses the action group emails; empty for none (the alerts still show in the portal).')
param emailAddresses array

@description('False leaves every rule in place but disabled.')
param alertsEnabled bool

@description('Whether the deployment configures reconcile (CLERK_SECRET_KEY); the reconcile alerts are disabled without it, since no run would ever complete.')
param reconcileConfigured bool

@description('Overrides of the settings below, by alert name, such as { \'deliveries-failing\': { threshold: 5, severity: 2 } }. Merged over the defaults.')
param alertSettings object

// Severity: 0 critical, 1 error, 2 warning, 3 informational, 4 verbose. Minutes are whole minutes;
// the window must be at least the evaluation frequency. `threshold` is the query's own (how many
// failures make an alert); the rule itself fires on one row.
var defaults = {
  'deliveries-failing': {
    severity: 1
    evaluationFrequencyMinutes: 5
    windowMinutes: 15
    threshold: 1
    enabled: true
  }
  'signature-failures': {
    severity: 2
    evaluationFrequencyMinutes: 5
    windowMinutes: 15
    threshold: 1
    enabled: true
  }
  'reconcile-drift': {
    severity: 3
    evaluationFrequencyMinutes: 15
    windowMinutes: 60
    threshold: 1
    enabled: true
  }
  'reconcile-failed': {
    severity: 2
    evaluationFrequencyMinutes: 15
    windowMinutes: 60
    enabled: true
  }
  'reconcile-missing': {
    severity: 2
    evaluationFrequencyMinutes: 60
    windowMinutes: 1560
    enabled: true
  }
  'store-unavailable': {
    severity: 1
    evaluationFrequencyMinutes: 5
    windowMinutes: 15
    threshold: 1
    enabled: true
  }
  'syncme-unavailable': {
    severity: 2
    evaluationFrequencyMinutes: 5
    windowMinutes: 15
    threshold: 1
    enabled: true
  }
}

// union() merges nested objects too, so an override names only what it changes.
var settings = union(defaults, alertSettings)

var runbook = 'README.md, "Operating it"'

// One entry per rule. The replace() targets are the query files' default lines, exactly (a test
// checks that each occurs in its file).
var rules = [
  {
    name: 'deliveries-failing'
    displayName: 'Webhook deliveries answered 5xx'
    description: 'ClerkWebhook answered 5xx to ${settings['deliveries-failing'].threshold} or more deliveries in ${settings['deliveries-failing'].windowMinutes} minutes. Svix retries them, but they are not being stored. First: read the ERROR traces of the handler in Application Insights for the cause. Runbook: ${runbook}, deliveries-failing.'
    reconcile: false
    query: replace(replace(loadTextContent('../queries/alert-deliveries-failing.kql'), 'let threshold = 1;', 'let threshold = ${settings['deliveries-failing'].threshold};'), 'let window = 15m;', 'let window = ${settings['deliveries-failing'].windowMinutes}m;')
  }
  {
    name: 'signature-failures'
    displayName: 'Webhook signatures refused'
    description: 'ClerkWebhook refused ${settings['signature-failures'].threshold} or more deliveries with 401 (bad signature) in ${settings['signature-failures'].windowMinutes} minutes: the signing secret in Key Vault does not match the Clerk endpoint\'s, or something else is posting to the URL. First: compare the endpoint\'s signing secret in the Clerk dashboard with the one deployed. Runbook: ${runbook}, signature-failures.'
    reconcile: false
    query: replace(replace(loadTextContent('../queries/alert-signature-failures.kql'), 'let threshold = 1;', 'let threshold = ${settings['signature-failures'].threshold};'), 'let window = 15m;', 'let window = ${settings['signature-failures'].windowMinutes}m;')
  }
  {
    name: 'reconcile-drift'
    displayName: 'Reconcile found drift'
    description: 'A reconcile run in the last ${settings['reconcile-drift'].windowMinutes} minutes found the store out of step with Clerk and changed documents: webhooks were missed or failed. First: read the run\'s reconcile trace for the counts per kind, then look for failed deliveries before it. Runbook: ${runbook}, reconcile-drift.'
    reconcile: true
    query: replace(replace(loadTextContent('../queries/alert-reconcile-drift.kql'), 'let threshold = 1;', 'let threshold = ${settings['reconcile-drift'].threshold};'), 'let window = 1h;', 'let window = ${settings['reconcile-drift'].windowMinutes}m;')
  }
  {
    name: 'reconcile-failed'
    displayName: 'Reconcile failed or did not complete'
    description: 'A reconcile run in the last ${settings['reconcile-failed'].windowMinutes} minutes failed or stopped before completing; it deleted nothing, and the next scheduled run starts over. First: read the run\'s reconcile trace (stopped) and the Reconcile invocation\'s errors: Clerk\'s API, the secret key or the store. Runbook: ${runbook}, reconcile-failed.'
    reconcile: true
    query: replace(loadTextContent('../queries/alert-reconcile-failed.kql'), 'let window = 1h;', 'let window = ${settings['reconcile-failed'].windowMinutes}m;')
  }
  {
    name: 'reconcile-missing'
    displayName: 'No completed reconcile'
    description: 'No reconcile run completed in the last ${settings['reconcile-missing'].windowMinutes} minutes. First: check that the Function App is running and that Reconcile invocations appear in Application Insights, then the reconcile-failed alert. Runbook: ${runbook}, reconcile-missing.'
    reconcile: true
    query: replace(loadTextContent('../queries/alert-reconcile-missing.kql'), 'let window = 26h;', 'let window = ${settings['reconcile-missing'].windowMinutes}m;')
  }
  {
    name: 'store-unavailable'
    displayName: 'Store throttled or unavailable'
    description: 'ClerkWebhook answered 503 to ${settings['store-unavailable'].threshold} or more deliveries in ${settings['store-unavailable'].windowMinutes} minutes: Cosmos DB throttled them or could not be reached. Svix retries them. First: check the Cosmos DB account\'s 429s and availability in its metrics. Runbook: ${runbook}, store-unavailable.'
    reconcile: false
    query: replace(replace(loadTextContent('../queries/alert-store-unavailable.kql'), 'let threshold = 1;', 'let threshold = ${settings['store-unavailable'].threshold};'), 'let window = 15m;', 'let window = ${settings['store-unavailable'].windowMinutes}m;')
  }
  {
    name: 'syncme-unavailable'
    displayName: 'SyncMe answered 503'
    description: 'SyncMe answered 503 to ${settings['syncme-unavailable'].threshold} or more calls in ${settings['syncme-unavailable'].windowMinutes} minutes: the store or Clerk\'s API was unavailable, so signed-in users were not synced at once. First: read the reason in the syncme traces, and check the store-unavailable alert. Runbook: ${runbook}, syncme-unavailable.'
    reconcile: false
    query: replace(replace(loadTextContent('../queries/alert-syncme-unavailable.kql'), 'let threshold = 1;', 'let threshold = ${settings['syncme-unavailable'].threshold};'), 'let window = 15m;', 'let window = ${settings['syncme-unavailable'].windowMinutes}m;')
  }
]

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = {
  name: actionGroupName
  location: 'global'
  tags: tags
  properties: {
    groupShortName: actionGroupShortName
    enabled: true
    emailReceivers: [
      for (address, i) in emailAddresses: {
        name: 'email-${i}'
        emailAddress: address
        useCommonAlertSchema: true
      }
    ]
  }
}

// Stateful rules (autoMitigate): an alert fires once, notifies once, and resolves by itself when
// the query returns no rows again, so no muteActionsDuration is needed against repeats.
resource alertRules 'Microsoft.Insights/scheduledQueryRules@2026-03-01' = [
  for rule in rules: {
    name: '${rulePrefix}-${rule.name}'
    location: location
    tags: tags
    kind: 'LogAlert'
    properties: {
      displayName: rule.displayName
      description: rule.description
      severity: settings[rule.name].severity
      enabled: alertsEnabled && settings[rule.name].enabled && (reconcileConfigured || !rule.reconcile)
      scopes: [
        appInsightsId
      ]
      evaluationFrequency: 'PT${settings[rule.name].evaluationFrequencyMinutes}M'
      windowSize: 'PT${settings[rule.name].windowMinutes}M'
      criteria: {
        allOf: [
          {
            query: rule.query
            timeAggregation: 'Count'
            operator: 'GreaterThanOrEqual'
            threshold: 1
            failingPeriods: {
              numberOfEvaluationPeriods: 1
              minFailingPeriodsToAlert: 1
            }
          }
        ]
      }
      autoMitigate: true
      actions: {
        actionGroups: [
          actionGroup.id
        ]
        customProperties: {
          alert: rule.name
          runbook: '${runbook}, ${rule.name}'
        }
      }
    }
  }
]

output actionGroupId string = actionGroup.id
