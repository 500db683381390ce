import { usd } from '../lib/format'

export interface Bar {
  key: string
  value: number
  detail?: string
}

/** Horizontal bars with their numbers written out, so the chart reads without colour or hover. */
export function BarChart({ title, bars, format = usd }: { title: string; bars: Bar[]; format?: (n: number) => string }) {
  const max = Math.max(...bars.map((b) => b.value), 0)
  return (
    <figure className="chart">
      <figcaption>{title}</figcaption>
      {bars.length === 0 ? (
        <p className="muted">Nothing in this period.</p>
      ) : (
        <ul aria-label={title}>
          {bars.map((b) => (
            <li key={b.key}>
              <span className="chart-key" title={b.key}>
                {b.key}
              </span>
              <span className="chart-track" aria-hidden="true">
                <span className="chart-bar" style={{ width: `${max > 0 ? Math.max((b.value / max) * 100, 1) : 0}%` }} />
              </span>
              <span className="chart-value">
                {format(b.value)}
                {b.detail && <span className="muted"> · {b.detail}</span>}
              </span>
            </li>
          ))}
        </ul>
      )}
    </figure>
  )
}
