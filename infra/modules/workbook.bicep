// A shared Azure Monitor workbook on Application Insights: deliveries, latency, request units,
// reconcile runs and SyncMe, over a time range picked at the top. Its queries are the files
// infra/queries/workbook-*.kql; each starts with `let window = 24h;`, rewritten here to the picked range.

@description('Azure region of the workbook: that of Application Insights.')
param location string

@description('Tags applied to every resource.')
param tags object

@description('Resource ID of the Application Insights component the workbook reads.')
param appInsightsId string

@description('Name shown in the portal\'s workbook gallery; unique within the resource group.')
param displayName string

// Workbooks expand {TimeRange:start} in a query to the range's start as a KQL datetime, and
// timeContextFromParameter bounds the query to the range, so `ago(window)` starts at the range's start.
var window = 'let window = now() - {TimeRange:start};'

var sections = [
  {
    name: 'deliveries'
    title: 'Deliveries per minute, by outcome and status'
    visualization: 'timechart'
    query: replace(loadTextContent('../queries/workbook-deliveries.kql'), 'let window = 24h;', window)
  }
  {
    name: 'latency'
    title: 'Delivery latency, p50 and p99'
    visualization: 'timechart'
    query: replace(loadTextContent('../queries/workbook-latency.kql'), 'let window = 24h;', window)
  }
  {
    name: 'request-charge'
    title: 'Cosmos DB request units per event type'
    visualization: 'table'
    query: replace(loadTextContent('../queries/workbook-request-charge.kql'), 'let window = 24h;', window)
  }
  {
    name: 'reconcile-runs'
    title: 'Reconcile runs: counts per kind and category'
    visualization: 'table'
    query: replace(loadTextContent('../queries/workbook-reconcile-runs.kql'), 'let window = 30d;', window)
  }
  {
    name: 'syncme'
    title: 'SyncMe outcomes and latency'
    visualization: 'table'
    query: replace(loadTextContent('../queries/workbook-syncme.kql'), 'let window = 24h;', window)
  }
]

var hour = 3600000

var timeRange = {
  type: 9
  name: 'parameters'
  content: {
    version: 'KqlParameterItem/1.0'
    style: 'pills'
    queryType: 0
    resourceType: 'microsoft.insights/components'
    parameters: [
      {
        id: 'a77583ee-cedb-4022-bf4f-e8d107dddf7a'
        version: 'KqlParameterItem/1.0'
        name: 'TimeRange'
        label: 'Time range'
        type: 4
        isRequired: true
        value: {
          durationMs: 24 * hour
        }
        typeSettings: {
          allowCustom: true
          selectableValues: [
            {
              durationMs: hour
            }
            {
              durationMs: 4 * hour
            }
            {
              durationMs: 12 * hour
            }
            {
              durationMs: 24 * hour
            }
            {
              durationMs: 48 * hour
            }
            {
              durationMs: 7 * 24 * hour
            }
          ]
        }
      }
    ]
  }
}

var queryItems = [
  for section in sections: {
    type: 3
    name: section.name
    content: {
      version: 'KqlItem/1.0'
      title: section.title
      query: section.query
      size: 0
      queryType: 0
      resourceType: 'microsoft.insights/components'
      crossComponentResources: [
        appInsightsId
      ]
      timeContextFromParameter: 'TimeRange'
      timeContext: {
        durationMs: 24 * hour
      }
      visualization: section.visualization
    }
  }
]

var title = {
  type: 1
  name: 'title'
  content: {
    json: '## clerk-cosmos\nWebhook deliveries, Cosmos DB request units, reconcile runs and SyncMe, from the handler\'s JSON log lines (`traces`) and the host\'s `requests`. The queries are the files `infra/queries/workbook-*.kql`; the alerts and their runbook are in the README.'
  }
}

var workbookContent = {
  version: 'Notebook/1.0'
  items: concat([title, timeRange], queryItems)
  fallbackResourceIds: [
    appInsightsId
  ]
  '$schema': 'https://github.com/Microsoft/Application-Insights-Workbooks/blob/master/schema/workbook.json'
}

resource workbook 'Microsoft.Insights/workbooks@2023-06-01' = {
  // Stable across deployments, so each one updates the same workbook.
  name: guid(resourceGroup().id, appInsightsId, 'clerk-cosmos-workbook')
  location: location
  tags: tags
  kind: 'shared'
  properties: {
    displayName: displayName
    category: 'workbook'
    sourceId: appInsightsId
    version: 'Notebook/1.0'
    serializedData: string(workbookContent)
  }
}

output id string = workbook.id
