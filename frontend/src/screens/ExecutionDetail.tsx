import { useEffect, useState } from 'react'
import { Link, useLocation, useParams } from 'react-router'
import { useAuth } from '../auth/store'
import { useMutation, useQuery } from '@apollo/client/react'
import { APPROVE, CANCEL, EXECUTION, EXECUTION_DEFINITION, REDRIVE, REJECT } from '../api/queries'
import { Graph } from '../components/Graph'
import { Empty, ErrorBox, Json, Loading, PageTitle, Status } from '../components/ui'
import { duration, tokens, usd, when } from '../lib/format'
import { stepStates } from '../lib/graph'

interface StepError {
  kind: string
  message: string
  retryable: boolean
}

interface Step {
  key: string
  step: string
  status: string
  attempt: number
  startedAt: string
  endedAt: string | null
  durationMs: number | null
  input: unknown
  output: unknown
  error: StepError | null
  inputTokens: number
  outputTokens: number
  costUsd: number
  childExecutionId: string | null
}

interface Event {
  version: number
  type: string
  at: string
  actor: string | null
  payload: unknown
}

interface Execution {
  id: string
  workflowId: string
  workflowVersion: number
  status: string
  currentSteps: string[]
  awaitingApproval: string[]
  startedAt: string | null
  endedAt: string | null
  durationMs: number | null
  input: unknown
  output: unknown
  error: StepError | null
  failedStep: string | null
  parentExecutionId: string | null
  inputTokens: number
  outputTokens: number
  costUsd: number
  stepsCompleted: number
  steps: Step[] | null
  events: { nodes: Event[]; nextFrom: number | null }
}

export function ExecutionDetail() {
  const { id = '' } = useParams()
  // A fresh page per execution: parent and child links reuse this route.
  return <ExecutionPage key={id} id={id} />
}

/** Who may decide this workflow's approvals: `admin`, or a role the definition names (default `approver`). */
function mayApprove(roles: string[], definition: unknown): boolean {
  if (roles.includes('admin')) return true
  const named = (definition as { approvers?: unknown } | null)?.approvers
  const allowed = Array.isArray(named) ? (named as string[]) : ['approver']
  return roles.some((r) => allowed.includes(r))
}

const NO_ROLES: string[] = []

function ExecutionPage({ id }: { id: string }) {
  const notice = (useLocation().state as { notice?: string } | null)?.notice
  const roles = useAuth((s) => s.user?.roles ?? NO_ROLES)
  const [selected, setSelected] = useState<string | null>(null)
  const [comment, setComment] = useState('')
  const [actionError, setActionError] = useState<unknown>(null)
  const [more, setMore] = useState<Event[]>([])
  const [moreFrom, setMoreFrom] = useState<number | null>(null)
  const q = useQuery<{ execution: Execution | null }>(EXECUTION, {
    variables: { id },
    skipPollAttempt: () => document.hidden,
  })
  const e = q.data?.execution
  // Live while it runs: the engine moves on its own (stream-driven), the page follows; every
  // second while steps run, every 5 s while it only waits for a person.
  const running = e?.status === 'RUNNING'
  const onlyWaiting = running && e.currentSteps.length > 0 && e.currentSteps.every((k) => e.awaitingApproval.includes(k))
  const interval = !running ? 0 : onlyWaiting ? 5000 : 1000
  const { startPolling, stopPolling } = q
  useEffect(() => {
    if (interval > 0) startPolling(interval)
    else stopPolling()
    return stopPolling
  }, [interval, startPolling, stopPolling])
  const [moreError, setMoreError] = useState<unknown>(null)
  const def = useQuery<{ workflow: { id: string; name: string; version: { definition: unknown } | null } | null }>(
    EXECUTION_DEFINITION,
    { variables: { id: e?.workflowId, version: e?.workflowVersion }, skip: !e, fetchPolicy: 'cache-first' },
  )
  const [approve, approving] = useMutation(APPROVE)
  const [reject, rejecting] = useMutation(REJECT)
  const [cancel, cancelling] = useMutation(CANCEL)
  const [redrive, redriving] = useMutation(REDRIVE)
  const busy = approving.loading || rejecting.loading || cancelling.loading || redriving.loading

  if (q.loading && !q.data) return <Loading what="the execution" />
  if (q.error && !e) return <ErrorBox error={q.error} />
  if (!e)
    return (
      <Empty>
        There is no execution <code>{id}</code> in your tenant. <Link to="/executions">Back to the executions</Link>.
      </Empty>
    )

  const act = async (f: () => Promise<unknown>) => {
    setActionError(null)
    try {
      await f()
      setComment('')
      await q.refetch()
    } catch (err) {
      setActionError(err)
    }
  }
  const steps = e.steps ?? []
  const states = stepStates(steps)
  const picked = selected ? steps.filter((s) => s.step === selected || s.key === selected) : []
  const events = [...e.events.nodes, ...more]
  const nextFrom = more.length > 0 ? moreFrom : e.events.nextFrom

  const loadMore = async () => {
    setMoreError(null)
    try {
      const res = await q.client.query<{ execution: Execution | null }>({
        query: EXECUTION,
        variables: { id, from: nextFrom },
        fetchPolicy: 'network-only',
      })
      const page = res.data?.execution?.events
      if (page) {
        setMore((cur) => [...cur, ...page.nodes])
        setMoreFrom(page.nextFrom)
      }
    } catch (err) {
      setMoreError(err)
    }
  }
  const confirmThen = (question: string, f: () => Promise<unknown>) => {
    if (window.confirm(question)) void act(f)
  }
  const canDecide = mayApprove(roles, def.data?.workflow?.version?.definition ?? null)

  return (
    <section>
      <PageTitle
        actions={
          <>
            {e.status === 'RUNNING' && (
              <button
                type="button"
                disabled={busy}
                onClick={() =>
                  confirmThen('Cancel this execution? Steps in flight finish, nothing new starts.', () =>
                    cancel({ variables: { id: e.id, reason: 'cancelled from the web app' } }),
                  )
                }
              >
                Cancel
              </button>
            )}
            {e.status === 'FAILED' && (
              <button type="button" className="primary" disabled={busy} onClick={() => void act(() => redrive({ variables: { id: e.id } }))}>
                Redrive
              </button>
            )}
          </>
        }
      >
        Execution <code>{e.id.slice(0, 8)}</code> <Status status={e.status} />
      </PageTitle>
      <p className="muted">
        <Link to={`/workflows/${encodeURIComponent(e.workflowId)}`}>{def.data?.workflow?.name ?? e.workflowId}</Link> v{e.workflowVersion}
        {e.parentExecutionId && (
          <>
            {' '}
            · started by <Link to={`/executions/${encodeURIComponent(e.parentExecutionId)}`}>its parent</Link>
          </>
        )}
      </p>
      {notice && (
        <p className="notice" role="status">
          {notice}
        </p>
      )}
      <ErrorBox error={actionError} title="Not done" />
      {e.awaitingApproval.length > 0 && !canDecide && def.data && (
        <p className="notice" role="status">
          Waiting for approval of {e.awaitingApproval.join(', ')} by someone with an approver role.
        </p>
      )}
      {e.awaitingApproval.length > 0 && canDecide && (
        <div className="approval" role="region" aria-label="Waiting for approval">
          <h2>Waiting for your decision</h2>
          <label>
            Comment <span className="muted">(optional)</span>
            <input value={comment} onChange={(ev) => setComment(ev.target.value)} />
          </label>
          {e.awaitingApproval.map((step) => (
            <div key={step} className="inline">
              <strong>{step}</strong>
              <button
                type="button"
                className="primary"
                disabled={busy}
                onClick={() => void act(() => approve({ variables: { id: e.id, step, comment: comment || null } }))}
              >
                Approve {step}
              </button>
              <button
                type="button"
                className="danger"
                disabled={busy}
                onClick={() =>
                  confirmThen(`Reject ${step}? The execution fails with ApprovalRejected unless it catches it.`, () =>
                    reject({ variables: { id: e.id, step, comment: comment || null } }),
                  )
                }
              >
                Reject {step}
              </button>
            </div>
          ))}
        </div>
      )}
      <dl className="facts">
        <div>
          <dt>Started</dt>
          <dd>{when(e.startedAt)}</dd>
        </div>
        <div>
          <dt>Duration</dt>
          <dd>{running ? 'running…' : duration(e.durationMs)}</dd>
        </div>
        <div>
          <dt>Steps done</dt>
          <dd>{e.stepsCompleted}</dd>
        </div>
        <div>
          <dt>Tokens</dt>
          <dd>
            {tokens(e.inputTokens)} in · {tokens(e.outputTokens)} out
          </dd>
        </div>
        <div>
          <dt>Cost</dt>
          <dd data-testid="execution-cost">{usd(e.costUsd)}</dd>
        </div>
      </dl>
      {e.error && (
        <div className="error" role="alert">
          <strong>{e.error.kind}</strong>
          {e.failedStep && <> in step {e.failedStep}</>}: {e.error.message}
        </div>
      )}
      <div className="two-col">
        <div>
          <h2>Graph</h2>
          {def.data?.workflow?.version ? (
            <Graph definition={def.data.workflow.version.definition} states={states} selected={selected} onSelect={setSelected} />
          ) : def.loading ? (
            <Loading what="the graph" />
          ) : (
            <p className="muted">The workflow version is gone; the steps below still tell what happened.</p>
          )}
        </div>
        <div>
          <h2>Steps</h2>
          {steps.length === 0 ? (
            <p className="muted">No step has started yet.</p>
          ) : (
            <div className="table-wrap">
              <table>
                <caption className="sr-only">Steps with their timing, tokens and cost</caption>
                <thead>
                  <tr>
                    <th scope="col">Step</th>
                    <th scope="col">State</th>
                    <th scope="col" className="num">
                      Took
                    </th>
                    <th scope="col" className="num">
                      Tokens
                    </th>
                    <th scope="col" className="num">
                      Cost
                    </th>
                  </tr>
                </thead>
                <tbody>
                  {steps.map((s) => (
                    <tr key={s.key} className={selected === s.key || selected === s.step ? 'selected' : undefined}>
                      <th scope="row">
                        <button type="button" className="link" onClick={() => setSelected(s.key)}>
                          {s.key}
                        </button>
                        {s.attempt > 1 && <span className="muted small"> attempt {s.attempt}</span>}
                      </th>
                      <td>
                        <Status status={s.status} />
                      </td>
                      <td className="num">{duration(s.durationMs)}</td>
                      <td className="num">{s.inputTokens + s.outputTokens > 0 ? tokens(s.inputTokens + s.outputTokens) : '—'}</td>
                      <td className="num">{usd(s.costUsd)}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </div>
          )}
        </div>
      </div>
      {picked.length > 0 && (
        <div className="step-detail" role="region" aria-label={`Step ${selected}`}>
          <h2>
            Step {selected}{' '}
            <button type="button" className="link" onClick={() => setSelected(null)}>
              close
            </button>
          </h2>
          {picked.map((s) => (
            <div key={s.key} className="card">
              <h3>
                {s.key} <Status status={s.status} />
              </h3>
              <p className="muted small">
                {when(s.startedAt)} → {when(s.endedAt)} · {duration(s.durationMs)} · attempt {s.attempt} ·{' '}
                {tokens(s.inputTokens)} in / {tokens(s.outputTokens)} out · {usd(s.costUsd)}
                {s.childExecutionId && (
                  <>
                    {' '}
                    · <Link to={`/executions/${encodeURIComponent(s.childExecutionId)}`}>child execution</Link>
                  </>
                )}
              </p>
              {s.error && (
                <p className="field-error">
                  {s.error.kind}: {s.error.message}
                  {s.error.retryable ? ' (retryable)' : ''}
                </p>
              )}
              <div className="two-col">
                <Json value={s.input} label="Input" />
                <Json value={s.output} label="Output" />
              </div>
            </div>
          ))}
        </div>
      )}
      <div className="two-col">
        <Json value={e.input} label="Execution input" />
        <Json value={e.output} label="Execution output" />
      </div>
      <h2>History</h2>
      <ol className="timeline" aria-label="Event history">
        {/* One stored event may show as several (an outcome with the steps its worker decided): same version. */}
        {events.map((ev, i) => (
          <li key={`${ev.version}.${i}`}>
            <span className="timeline-at">{when(ev.at)}</span>
            <span className="timeline-type">
              #{ev.version} {ev.type}
            </span>
            {ev.actor && <span className="muted small"> by {ev.actor}</span>}
            <details>
              <summary>payload</summary>
              <pre>{JSON.stringify(ev.payload, null, 2)}</pre>
            </details>
          </li>
        ))}
      </ol>
      {nextFrom !== null && nextFrom !== undefined && (
        <button type="button" onClick={() => void loadMore()}>
          Later events…
        </button>
      )}
      <ErrorBox error={moreError} title="Could not load more events" />
    </section>
  )
}
