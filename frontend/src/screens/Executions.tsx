import { useState } from 'react'
import { Link, useSearchParams } from 'react-router'
import { useQuery } from '@apollo/client/react'
import { EXECUTIONS } from '../api/queries'
import { Empty, ErrorBox, Loading, PageTitle, Status } from '../components/ui'
import { duration, usd, when } from '../lib/format'

interface Row {
  id: string
  workflowId: string
  workflowVersion: number
  workflow: { id: string; name: string } | null
  status: string
  startedAt: string | null
  endedAt: string | null
  durationMs: number | null
  costUsd: number
  stepsCompleted: number
  awaitingApproval: string[]
}

interface Data {
  executions: { nodes: Row[]; pageInfo: { hasNextPage: boolean; endCursor: string | null } }
}

const STATUSES = ['RUNNING', 'SUCCEEDED', 'FAILED', 'CANCELLED']

export function Executions() {
  const [params, setParams] = useSearchParams()
  const workflow = params.get('workflow') || undefined
  const status = params.get('status') || undefined
  // Polls the first page while it is all that is shown; a poll would drop pages loaded with
  // "Show more", so those stop it (and "Refresh" starts over).
  const [paged, setPaged] = useState(false)
  const { data, loading, error, fetchMore, refetch } = useQuery<Data>(EXECUTIONS, {
    variables: { workflowId: workflow, status, first: 25 },
    pollInterval: paged ? 0 : 5000,
    skipPollAttempt: () => document.hidden,
  })
  const set = (k: string, v: string) => {
    setPaged(false)
    const next = new URLSearchParams(params)
    if (v) next.set(k, v)
    else next.delete(k)
    setParams(next)
  }
  const rows = data?.executions.nodes ?? []
  return (
    <section>
      <PageTitle
        actions={
          paged && (
            <button
              type="button"
              onClick={() => {
                setPaged(false)
                void refetch()
              }}
            >
              Refresh
            </button>
          )
        }
      >
        Executions
      </PageTitle>
      <form className="filters" role="search" aria-label="Filter executions" onSubmit={(e) => e.preventDefault()}>
        <label>
          Status
          <select value={status ?? ''} onChange={(e) => set('status', e.target.value)}>
            <option value="">Any</option>
            {STATUSES.map((s) => (
              <option key={s} value={s}>
                {s.toLowerCase()}
              </option>
            ))}
          </select>
        </label>
        <label>
          Workflow id
          <input
            defaultValue={workflow ?? ''}
            key={workflow ?? ''}
            placeholder="any"
            onBlur={(e) => set('workflow', e.target.value.trim())}
            onKeyDown={(e) => {
              if (e.key === 'Enter') set('workflow', e.currentTarget.value.trim())
            }}
          />
        </label>
      </form>
      <ErrorBox error={error} />
      {loading && !data && <Loading what="executions" />}
      {data && rows.length === 0 && (
        <Empty>
          No executions {status || workflow ? 'match these filters' : 'yet'}. Start one from a{' '}
          <Link to="/workflows">workflow</Link>.
        </Empty>
      )}
      {rows.length > 0 && (
        <div className="table-wrap">
          <table>
            <caption className="sr-only">Executions, newest first</caption>
            <thead>
              <tr>
                <th scope="col">Execution</th>
                <th scope="col">Workflow</th>
                <th scope="col">Status</th>
                <th scope="col">Started</th>
                <th scope="col" className="num">
                  Duration
                </th>
                <th scope="col" className="num">
                  Steps
                </th>
                <th scope="col" className="num">
                  Cost
                </th>
              </tr>
            </thead>
            <tbody>
              {rows.map((e) => (
                <tr key={e.id}>
                  <th scope="row">
                    <Link to={`/executions/${encodeURIComponent(e.id)}`}>
                      <code>{e.id.slice(0, 8)}</code>
                    </Link>
                  </th>
                  <td>
                    <Link to={`/workflows/${encodeURIComponent(e.workflowId)}`}>{e.workflow?.name ?? e.workflowId}</Link>{' '}
                    <span className="muted small">v{e.workflowVersion}</span>
                  </td>
                  <td>
                    <Status status={e.status} />
                    {e.awaitingApproval.length > 0 && <span className="badge badge-awaiting_approval">needs approval</span>}
                  </td>
                  <td>{when(e.startedAt)}</td>
                  <td className="num">{duration(e.durationMs)}</td>
                  <td className="num">{e.stepsCompleted}</td>
                  <td className="num">{usd(e.costUsd)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      {data?.executions.pageInfo.hasNextPage && (
        <button
          type="button"
          onClick={() => {
            setPaged(true)
            void fetchMore({
              variables: { after: data.executions.pageInfo.endCursor },
              updateQuery: (prev, { fetchMoreResult }) => ({
                executions: {
                  ...fetchMoreResult.executions,
                  nodes: [...prev.executions.nodes, ...fetchMoreResult.executions.nodes],
                },
              }),
            })
          }}
        >
          Show more
        </button>
      )}
    </section>
  )
}
