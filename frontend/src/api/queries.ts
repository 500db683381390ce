import { gql } from '@apollo/client'

export const WORKFLOWS = gql`
  query Workflows($status: WorkflowStatus, $first: Int, $after: String) {
    workflows(status: $status, first: $first, after: $after) {
      nodes {
        id
        name
        description
        status
        latestVersion
        updatedAt
        stats { runs running succeeded failed successRate costUsd medianDurationMs }
        executions(first: 1) { nodes { id status startedAt } }
      }
      pageInfo { hasNextPage endCursor }
    }
  }
`

export const WORKFLOW = gql`
  query Workflow($id: ID!) {
    workflow(id: $id) {
      id
      name
      description
      status
      latestVersion
      createdAt
      updatedAt
      createdBy
      definition
      stats { runs running succeeded failed cancelled successRate medianDurationMs costUsd inputTokens outputTokens windowed }
      versions(first: 50) { nodes { version createdAt createdBy } }
      executions(first: 10) { nodes { id status startedAt durationMs costUsd workflowVersion } }
    }
  }
`

export const WORKFLOW_VERSION = gql`
  query WorkflowVersion($id: ID!, $version: Int!) {
    workflow(id: $id) { id version(version: $version) { version definition createdAt createdBy } }
  }
`

export const VALIDATE = gql`
  mutation Validate($definition: JSON!) {
    validateWorkflow(definition: $definition) { valid problems { pointer message } }
  }
`

export const CREATE_WORKFLOW = gql`
  mutation CreateWorkflow($definition: JSON!) {
    createWorkflow(definition: $definition) { id latestVersion }
  }
`

export const UPDATE_WORKFLOW = gql`
  mutation UpdateWorkflow($id: ID!, $definition: JSON!, $expectedVersion: Int!) {
    updateWorkflow(id: $id, definition: $definition, expectedVersion: $expectedVersion) { id latestVersion }
  }
`

export const ARCHIVE_WORKFLOW = gql`
  mutation Archive($id: ID!) { archiveWorkflow(id: $id) { id status } }
`

export const RESTORE_WORKFLOW = gql`
  mutation Restore($id: ID!) { restoreWorkflow(id: $id) { id status } }
`

export const START_EXECUTION = gql`
  mutation Start($workflowId: ID!, $input: JSON, $idempotencyKey: String) {
    startExecution(workflowId: $workflowId, input: $input, idempotencyKey: $idempotencyKey) {
      executionId
      replayed
      status
    }
  }
`

export const EXECUTIONS = gql`
  query Executions($workflowId: ID, $status: ExecutionStatus, $first: Int, $after: String) {
    executions(workflowId: $workflowId, status: $status, first: $first, after: $after) {
      nodes { id workflowId workflowVersion workflow { id name } status startedAt endedAt durationMs costUsd stepsCompleted awaitingApproval }
      pageInfo { hasNextPage endCursor }
    }
  }
`

export const EXECUTION = gql`
  query Execution($id: ID!, $from: Long) {
    execution(id: $id) {
      id
      workflowId
      workflowVersion
      status
      currentSteps
      awaitingApproval
      startedAt
      endedAt
      durationMs
      input
      output
      error { kind message retryable }
      failedStep
      parentExecutionId
      inputTokens
      outputTokens
      costUsd
      stepsCompleted
      steps {
        key step status attempt startedAt endedAt durationMs input output
        error { kind message retryable }
        inputTokens outputTokens costUsd childExecutionId
      }
      events(from: $from, first: 200) { nodes { version type at actor payload } nextFrom }
    }
  }
`

export const EXECUTION_DEFINITION = gql`
  query ExecutionDefinition($id: ID!, $version: Int!) {
    workflow(id: $id) { id name version(version: $version) { version definition } }
  }
`

export const CANCEL = gql`
  mutation Cancel($id: ID!, $reason: String) { cancelExecution(id: $id, reason: $reason) { accepted version } }
`
export const APPROVE = gql`
  mutation Approve($id: ID!, $step: String!, $comment: String) {
    approveStep(executionId: $id, step: $step, comment: $comment) { accepted version }
  }
`
export const REJECT = gql`
  mutation Reject($id: ID!, $step: String!, $comment: String) {
    rejectStep(executionId: $id, step: $step, comment: $comment) { accepted version }
  }
`
export const REDRIVE = gql`
  mutation Redrive($id: ID!) { redriveExecution(id: $id) { accepted version } }
`

export const USAGE = gql`
  query Usage($from: String, $to: String, $groupBy: UsageGroup) {
    usage(from: $from, to: $to, groupBy: $groupBy) {
      from
      to
      groups { key steps inputTokens outputTokens costUsd }
      total { steps inputTokens outputTokens costUsd }
    }
  }
`

export const BUDGET = gql`
  query Budget($workflowId: ID) {
    budgets(workflowId: $workflowId) {
      workflowId period monthlyUsd monthlyTokens spentUsd spentTokens reservedUsd reservedTokens availableUsd availableTokens
    }
  }
`

export const SET_BUDGET = gql`
  mutation SetBudget($workflowId: ID, $monthlyUsd: Float, $monthlyTokens: Long) {
    setBudget(workflowId: $workflowId, monthlyUsd: $monthlyUsd, monthlyTokens: $monthlyTokens) {
      workflowId period monthlyUsd monthlyTokens spentUsd spentTokens reservedUsd reservedTokens availableUsd availableTokens
    }
  }
`

export const PRICES = gql`
  query Prices { prices { provider model inputUsdPerMtok outputUsdPerMtok source } }
`

export const USERS = gql`
  query Users($after: String) {
    users(first: 100, after: $after) { nodes { id username roles disabled createdAt } pageInfo { hasNextPage endCursor } }
  }
`

export const MCP_SERVERS = gql`
  query McpServers { mcpServers { name url description auth updatedAt } }
`

export const MCP_TOOLS = gql`
  query McpTools { mcpServers { name tools } }
`

export const WORKFLOW_NAMES = gql`
  query WorkflowNames {
    workflows(first: 100) { nodes { id name } }
  }
`
