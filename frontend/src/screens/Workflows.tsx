import { useState } from 'react'
import { Link } from 'react-router'
import { useQuery } from '@apollo/client/react'
import { USAGE, WORKFLOWS } from '../api/queries'
import { Empty, ErrorBox, Loading, PageTitle, Status } from '../components/ui'
import { usd, when } from '../lib/format'

interface WorkflowRow {
  id: string
  name: string
  description: string | null
  status: string
  latestVersion: number
  updatedAt: string | null
  stats: { runs: number; running: number; succeeded: number; failed: number; successRate: number | null; costUsd: number } | null
  executions: { nodes: { id: string; status: string; startedAt: string | null }[] }
}

interface WorkflowsData {
  workflows: { nodes: WorkflowRow[]; pageInfo: { hasNextPage: boolean; endCursor: string | null } }
}

interface UsageData {
  usage: { groups: { key: string; costUsd: number }[] }
}

export function Workflows() {
  const [status, setStatus] = useState<'ACTIVE' | 'ARCHIVED'>('ACTIVE')
  const { data, loading, error, fetchMore } = useQuery<WorkflowsData>(WORKFLOWS, { variables: { status, first: 25 } })
  // This month's spend per workflow (the usage report defaults to this month so far).
  const usage = useQuery<UsageData>(USAGE, { variables: { groupBy: 'WORKFLOW' } })
  const monthCost = new Map((usage.data?.usage.groups ?? []).map((g) => [g.key, g.costUsd]))
  const rows = data?.workflows.nodes ?? []

  return (
    <section>
      <PageTitle
        actions={
          <Link className="button primary" to="/workflows/new">
            New workflow
          </Link>
        }
      >
        Workflows
      </PageTitle>
      <div className="filters" role="group" aria-label="Show">
        <label>
          Status
          <select value={status} onChange={(e) => setStatus(e.target.value as 'ACTIVE' | 'ARCHIVED')}>
            <option value="ACTIVE">Active</option>
            <option value="ARCHIVED">Archived</option>
          </select>
        </label>
      </div>
      <ErrorBox error={error} />
      {loading && !data && <Loading what="workflows" />}
      {data && rows.length === 0 && (
        <Empty>
          {status === 'ACTIVE' ? (
            <>
              No workflows yet. <Link to="/workflows/new">Create your first workflow</Link> from YAML or JSON.
            </>
          ) : (
            'No archived workflows.'
          )}
        </Empty>
      )}
      {rows.length > 0 && (
        <div className="table-wrap">
          <table>
            <caption className="sr-only">Workflows</caption>
            <thead>
              <tr>
                <th scope="col">Name</th>
                <th scope="col">Status</th>
                <th scope="col">Last run</th>
                <th scope="col" className="num">
                  Runs
                </th>
                <th scope="col" className="num">
                  Success rate
                </th>
                <th scope="col" className="num">
                  Cost this month
                </th>
              </tr>
            </thead>
            <tbody>
              {rows.map((w) => {
                const last = w.executions.nodes[0]
                return (
                  <tr key={w.id}>
                    <th scope="row">
                      <Link to={`/workflows/${encodeURIComponent(w.id)}`}>{w.name}</Link>
                      <div className="muted small">
                        {w.id} · v{w.latestVersion}
                      </div>
                    </th>
                    <td>
                      <Status status={w.status} />
                    </td>
                    <td>
                      {last ? (
                        <Link to={`/executions/${encodeURIComponent(last.id)}`}>
                          <Status status={last.status} /> {when(last.startedAt)}
                        </Link>
                      ) : (
                        <span className="muted">never</span>
                      )}
                    </td>
                    <td className="num">{w.stats?.runs ?? 0}</td>
                    <td className="num">
                      {w.stats?.successRate === null || w.stats?.successRate === undefined
                        ? '—'
                        : `${Math.round(w.stats.successRate * 100)} %`}
                    </td>
                    <td className="num">{usd(monthCost.get(w.id) ?? 0)}</td>
                  </tr>
                )
              })}
            </tbody>
          </table>
        </div>
      )}
      {data?.workflows.pageInfo.hasNextPage && (
        <button
          type="button"
          onClick={() =>
            void fetchMore({
              variables: { after: data.workflows.pageInfo.endCursor },
              updateQuery: (prev, { fetchMoreResult }) => ({
                workflows: { ...fetchMoreResult.workflows, nodes: [...prev.workflows.nodes, ...fetchMoreResult.workflows.nodes] },
              }),
            })
          }
        >
          Show more
        </button>
      )}
    </section>
  )
}
