import { useState, type FormEvent } from 'react'
import { useMutation, useQuery } from '@apollo/client/react'
import { BUDGET, SET_BUDGET, USAGE, WORKFLOW_NAMES } from '../api/queries'
import { BarChart } from '../components/BarChart'
import { ErrorBox, Loading, PageTitle } from '../components/ui'
import { tokens, usd } from '../lib/format'
import { useAuth } from '../auth/store'

interface Total {
  key: string
  steps: number
  inputTokens: number
  outputTokens: number
  costUsd: number
}

interface UsageData {
  usage: { from: string; to: string; groups: Total[]; total: Total }
}

interface Budget {
  workflowId: string | null
  period: string
  monthlyUsd: number | null
  monthlyTokens: number | null
  spentUsd: number
  spentTokens: number
  reservedUsd: number
  reservedTokens: number
  availableUsd: number | null
  availableTokens: number | null
}

function isoDay(d: Date): string {
  return d.toISOString().slice(0, 10)
}

function bars(groups: Total[], names?: Map<string, string>) {
  return groups.map((g) => ({
    key: names?.get(g.key) ?? (g.key || '(none)'),
    value: g.costUsd,
    detail: `${tokens(g.inputTokens + g.outputTokens)} tokens`,
  }))
}

export function Costs() {
  // This month so far, in UTC like the usage report.
  const [from, setFrom] = useState(() => {
    const today = new Date()
    return isoDay(new Date(Date.UTC(today.getUTCFullYear(), today.getUTCMonth(), 1)))
  })
  const [to, setTo] = useState(() => isoDay(new Date()))
  const admin = useAuth((s) => s.user?.roles.includes('admin') ?? false)
  const vars = { from, to }
  const byDay = useQuery<UsageData>(USAGE, { variables: { ...vars, groupBy: 'DAY' } })
  const byModel = useQuery<UsageData>(USAGE, { variables: { ...vars, groupBy: 'MODEL' } })
  const byWorkflow = useQuery<UsageData>(USAGE, { variables: { ...vars, groupBy: 'WORKFLOW' } })
  const workflows = useQuery<{ workflows: { nodes: { id: string; name: string }[] } }>(WORKFLOW_NAMES)
  const names = new Map((workflows.data?.workflows.nodes ?? []).map((w) => [w.id, w.name]))
  const total = byDay.data?.usage.total
  return (
    <section>
      <PageTitle>Costs</PageTitle>
      <form className="filters" aria-label="Period" onSubmit={(e) => e.preventDefault()}>
        <label>
          From
          <input type="date" value={from} max={to} onChange={(e) => setFrom(e.target.value)} />
        </label>
        <label>
          To
          <input type="date" value={to} min={from} onChange={(e) => setTo(e.target.value)} />
        </label>
      </form>
      <ErrorBox error={byDay.error ?? byModel.error ?? byWorkflow.error} />
      {byDay.loading && !byDay.data && <Loading what="usage" />}
      {total && (
        <dl className="facts">
          <div>
            <dt>Spent</dt>
            <dd data-testid="usage-total">{usd(total.costUsd)}</dd>
          </div>
          <div>
            <dt>LLM steps</dt>
            <dd>{total.steps}</dd>
          </div>
          <div>
            <dt>Tokens</dt>
            <dd>
              {tokens(total.inputTokens)} in · {tokens(total.outputTokens)} out
            </dd>
          </div>
        </dl>
      )}
      <div className="charts">
        <BarChart title="By day" bars={bars(byDay.data?.usage.groups ?? [])} />
        <BarChart title="By model" bars={bars(byModel.data?.usage.groups ?? [])} />
        <BarChart title="By workflow" bars={bars(byWorkflow.data?.usage.groups ?? [], names)} />
      </div>
      <BudgetPanel editable={admin} />
    </section>
  )
}

/** The tenant's budget (or one workflow's): limits, spent, reserved by running steps, left. */
export function BudgetPanel({ workflowId, editable = true }: { workflowId?: string; editable?: boolean }) {
  const { data, loading, error } = useQuery<{ budgets: Budget }>(BUDGET, { variables: { workflowId } })
  const [setBudget, saving] = useMutation<{ setBudget: Budget }>(SET_BUDGET, {
    refetchQueries: [{ query: BUDGET, variables: { workflowId } }],
  })
  const [usdText, setUsdText] = useState<string | null>(null)
  const [tokText, setTokText] = useState<string | null>(null)
  const [saveError, setSaveError] = useState<unknown>(null)
  const [saved, setSaved] = useState(false)
  const b = data?.budgets
  const title = workflowId ? 'This workflow’s monthly budget' : 'Monthly budget'

  const save = async (e: FormEvent) => {
    e.preventDefault()
    setSaveError(null)
    setSaved(false)
    const parse = (t: string | null, current: number | null) => {
      const s = (t ?? (current === null ? '' : String(current))).trim()
      return s === '' ? null : Number(s)
    }
    const monthlyUsd = parse(usdText, b?.monthlyUsd ?? null)
    const monthlyTokens = parse(tokText, b?.monthlyTokens ?? null)
    if ((monthlyUsd !== null && !(monthlyUsd >= 0)) || (monthlyTokens !== null && !Number.isInteger(monthlyTokens))) {
      setSaveError(new Error('Limits are numbers of dollars and whole tokens, or empty for none.'))
      return
    }
    try {
      await setBudget({ variables: { workflowId, monthlyUsd, monthlyTokens } })
      setSaved(true)
    } catch (err) {
      setSaveError(err)
    }
  }

  return (
    <section className="card" aria-label={title}>
      <h2>{title}</h2>
      {loading && !data && <Loading what="the budget" />}
      <ErrorBox error={error} />
      {b && b.monthlyUsd === null && b.monthlyTokens === null && (
        <p className="muted">
          No limits: nothing is capped{workflowId ? ' for this workflow beyond the tenant’s own budget' : ''}. With a limit, each LLM
          step reserves its worst case before it calls the provider and is refused if that would pass the limit.
        </p>
      )}
      {b && (
        <>
          {(b.monthlyUsd !== null || b.monthlyTokens !== null) && (
          <table className="budget">
            <caption className="sr-only">Budget for {b.period}</caption>
            <thead>
              <tr>
                <th scope="col">{b.period}</th>
                <th scope="col" className="num">
                  Dollars
                </th>
                <th scope="col" className="num">
                  Tokens
                </th>
              </tr>
            </thead>
            <tbody>
              <tr>
                <th scope="row">Limit</th>
                <td className="num">{b.monthlyUsd === null ? 'none' : usd(b.monthlyUsd)}</td>
                <td className="num">{b.monthlyTokens === null ? 'none' : tokens(b.monthlyTokens)}</td>
              </tr>
              <tr>
                <th scope="row">Spent</th>
                <td className="num">{usd(b.spentUsd)}</td>
                <td className="num">{tokens(b.spentTokens)}</td>
              </tr>
              <tr>
                <th scope="row">Reserved by running steps</th>
                <td className="num">{usd(b.reservedUsd)}</td>
                <td className="num">{tokens(b.reservedTokens)}</td>
              </tr>
              <tr>
                <th scope="row">Available</th>
                <td className="num">{b.availableUsd === null ? 'no limit' : usd(b.availableUsd)}</td>
                <td className="num">{b.availableTokens === null ? 'no limit' : tokens(b.availableTokens)}</td>
              </tr>
            </tbody>
          </table>
          )}
          {(b.monthlyUsd !== null || b.monthlyTokens !== null) && <Thresholds budget={b} />}
          {b.monthlyUsd !== null && b.monthlyUsd > 0 && (
            <meter
              min={0}
              max={b.monthlyUsd}
              low={b.monthlyUsd * 0.8}
              high={b.monthlyUsd * 0.95}
              optimum={0}
              value={b.spentUsd + b.reservedUsd}
              aria-label="Share of the dollar limit spent or reserved"
            />
          )}
          {editable && (
            <form className="inline-form" onSubmit={save}>
              <label>
                Dollar limit
                <input
                  inputMode="decimal"
                  placeholder="none"
                  value={usdText ?? (b.monthlyUsd === null ? '' : String(b.monthlyUsd))}
                  onChange={(e) => setUsdText(e.target.value)}
                />
              </label>
              <label>
                Token limit
                <input
                  inputMode="numeric"
                  placeholder="none"
                  value={tokText ?? (b.monthlyTokens === null ? '' : String(b.monthlyTokens))}
                  onChange={(e) => setTokText(e.target.value)}
                />
              </label>
              <button type="submit" disabled={saving.loading}>
                Save limits
              </button>
              {saved && (
                <span role="status" className="muted">
                  Saved.
                </span>
              )}
            </form>
          )}
          <ErrorBox error={saveError} title="Not saved" />
        </>
      )}
    </section>
  )
}

/** The engine records a `BudgetThresholdCrossed` event (and a metric) at these shares of a limit. */
const THRESHOLDS = [50, 80, 95]

function Thresholds({ budget: b }: { budget: Budget }) {
  const rows: { label: string; limit: number; spent: number; format: (n: number) => string }[] = []
  if (b.monthlyUsd !== null && b.monthlyUsd > 0) rows.push({ label: 'Dollars', limit: b.monthlyUsd, spent: b.spentUsd, format: usd })
  if (b.monthlyTokens !== null && b.monthlyTokens > 0)
    rows.push({ label: 'Tokens', limit: b.monthlyTokens, spent: b.spentTokens, format: tokens })
  if (rows.length === 0) return null
  return (
    <ul className="plain thresholds" aria-label="Alert thresholds">
      {rows.map((r) => (
        <li key={r.label}>
          {r.label}:{' '}
          {THRESHOLDS.map((t) => {
            const at = (r.limit * t) / 100
            const crossed = r.spent >= at
            return (
              <span key={t} className={`badge ${crossed ? 'badge-awaiting_approval' : ''}`}>
                {t} % ({r.format(at)}){crossed ? ' reached' : ''}
              </span>
            )
          })}
        </li>
      ))}
    </ul>
  )
}
