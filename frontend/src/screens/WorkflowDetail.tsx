import { useState } from 'react'
import { Link, useParams } from 'react-router'
import { useMutation, useQuery } from '@apollo/client/react'
import { ARCHIVE_WORKFLOW, RESTORE_WORKFLOW, WORKFLOW, WORKFLOW_VERSION } from '../api/queries'
import { Graph } from '../components/Graph'
import { Empty, ErrorBox, Json, Loading, PageTitle, Status } from '../components/ui'
import { duration, tokens, usd, when } from '../lib/format'
import { BudgetPanel } from './Costs'
import { useAuth } from '../auth/store'

interface Detail {
  workflow: {
    id: string
    name: string
    description: string | null
    status: string
    latestVersion: number
    createdAt: string | null
    updatedAt: string | null
    createdBy: string
    definition: unknown
    stats: {
      runs: number
      running: number
      succeeded: number
      failed: number
      cancelled: number
      successRate: number | null
      medianDurationMs: number | null
      costUsd: number
      inputTokens: number
      outputTokens: number
      windowed: boolean
    } | null
    versions: { nodes: { version: number; createdAt: string | null; createdBy: string }[] }
    executions: {
      nodes: { id: string; status: string; startedAt: string | null; durationMs: number | null; costUsd: number; workflowVersion: number }[]
    }
  } | null
}

export function WorkflowDetail() {
  const { id = '' } = useParams()
  const { data, loading, error } = useQuery<Detail>(WORKFLOW, { variables: { id } })
  const [shown, setShown] = useState<number | null>(null)
  const version = useQuery<{ workflow: { version: { version: number; definition: unknown } | null } | null }>(WORKFLOW_VERSION, {
    variables: { id, version: shown },
    skip: shown === null,
  })
  const [archive, archiving] = useMutation(ARCHIVE_WORKFLOW)
  const [restore, restoring] = useMutation(RESTORE_WORKFLOW)
  const [actionError, setActionError] = useState<unknown>(null)
  const admin = useAuth((s) => s.user?.roles.includes('admin') ?? false)

  if (loading && !data) return <Loading what="the workflow" />
  if (error) return <ErrorBox error={error} />
  const w = data?.workflow
  if (!w)
    return (
      <Empty>
        There is no workflow <code>{id}</code> in your tenant. <Link to="/workflows">Back to the workflows</Link>.
      </Empty>
    )
  const definition = shown !== null && shown !== w.latestVersion ? version.data?.workflow?.version?.definition : w.definition
  const s = w.stats

  const act = async (f: () => Promise<unknown>) => {
    setActionError(null)
    try {
      await f()
    } catch (e) {
      setActionError(e)
    }
  }

  return (
    <section>
      <PageTitle
        actions={
          <>
            {w.status === 'ACTIVE' && (
              <Link className="button primary" to={`/workflows/${encodeURIComponent(w.id)}/run`}>
                Run
              </Link>
            )}
            <Link className="button" to={`/workflows/${encodeURIComponent(w.id)}/edit`}>
              Edit
            </Link>
            {w.status === 'ACTIVE' ? (
              <button type="button" disabled={archiving.loading} onClick={() => void act(() => archive({ variables: { id: w.id } }))}>
                Archive
              </button>
            ) : (
              <button type="button" disabled={restoring.loading} onClick={() => void act(() => restore({ variables: { id: w.id } }))}>
                Restore
              </button>
            )}
          </>
        }
      >
        {w.name} <Status status={w.status} />
      </PageTitle>
      {w.description && <p>{w.description}</p>}
      <ErrorBox error={actionError} />
      <dl className="facts">
        <div>
          <dt>Id</dt>
          <dd>
            <code>{w.id}</code>
          </dd>
        </div>
        <div>
          <dt>Latest version</dt>
          <dd>v{w.latestVersion}</dd>
        </div>
        <div>
          <dt>Runs</dt>
          <dd>
            {s?.runs ?? 0} ({s?.running ?? 0} running, {s?.succeeded ?? 0} succeeded, {s?.failed ?? 0} failed)
          </dd>
        </div>
        <div>
          <dt>Success rate</dt>
          <dd>{s?.successRate === null || s?.successRate === undefined ? '—' : `${Math.round(s.successRate * 100)} %`}</dd>
        </div>
        <div>
          <dt>Median duration</dt>
          <dd>{duration(s?.medianDurationMs)}</dd>
        </div>
        <div>
          <dt>Spent{s?.windowed ? ' (recent runs)' : ''}</dt>
          <dd>
            {usd(s?.costUsd)} · {tokens((s?.inputTokens ?? 0) + (s?.outputTokens ?? 0))} tokens
          </dd>
        </div>
      </dl>

      <div className="two-col">
        <div>
          <h2>
            Steps{' '}
            <span className="muted small">
              v{shown ?? w.latestVersion}
              {shown !== null && shown !== w.latestVersion && ' (an older version)'}
            </span>
          </h2>
          {definition ? <Graph definition={definition} /> : <Loading what="that version" />}
          <details>
            <summary>Definition</summary>
            <Json value={definition} label={`Version ${shown ?? w.latestVersion}`} />
          </details>
        </div>
        <div>
          <h2>Versions</h2>
          <ol className="versions" reversed>
            {w.versions.nodes.map((v) => (
              <li key={v.version}>
                <button
                  type="button"
                  className="link"
                  aria-pressed={(shown ?? w.latestVersion) === v.version}
                  onClick={() => setShown(v.version)}
                >
                  v{v.version}
                </button>{' '}
                <span className="muted small">
                  {when(v.createdAt)} by {v.createdBy}
                </span>
              </li>
            ))}
          </ol>
          <h2>Recent executions</h2>
          {w.executions.nodes.length === 0 ? (
            <Empty>
              Not run yet.
              {w.status === 'ACTIVE' ? (
                <>
                  {' '}
                  <Link to={`/workflows/${encodeURIComponent(w.id)}/run`}>Run it</Link>.
                </>
              ) : (
                ' Restore it to run it.'
              )}
            </Empty>
          ) : (
            <ul className="plain">
              {w.executions.nodes.map((e) => (
                <li key={e.id}>
                  <Link to={`/executions/${encodeURIComponent(e.id)}`}>
                    <Status status={e.status} /> {when(e.startedAt)}
                  </Link>{' '}
                  <span className="muted small">
                    v{e.workflowVersion} · {duration(e.durationMs)} · {usd(e.costUsd)}
                  </span>
                </li>
              ))}
            </ul>
          )}
          <p>
            <Link to={`/executions?workflow=${encodeURIComponent(w.id)}`}>All executions of this workflow</Link>
          </p>
          {admin && <BudgetPanel workflowId={w.id} />}
        </div>
      </div>
    </section>
  )
}
