import { useMemo } from 'react'
import { layout } from '../lib/graph'

const STATE_LABEL: Record<string, string> = {
  SUCCEEDED: 'succeeded',
  FAILED: 'failed',
  RUNNING: 'running',
  AWAITING_APPROVAL: 'awaiting approval',
  SCHEDULED: 'scheduled',
  RETRY_PENDING: 'retry pending',
  RETRY_DUE: 'retry due',
  CAUGHT: 'caught',
  ABANDONED: 'abandoned',
}

/** The steps as a graph; with `states`, each step coloured by what it did in one execution. */
export function Graph({
  definition,
  states,
  selected,
  onSelect,
}: {
  definition: unknown
  states?: Record<string, string>
  selected?: string | null
  onSelect?: (step: string) => void
}) {
  const g = useMemo(() => layout(definition), [definition])
  if (g.nodes.length === 0) return <p className="muted">No steps to draw.</p>
  return (
    <div className="graph" role="group" aria-label="Workflow graph">
      <svg width={g.width} height={g.height} viewBox={`0 0 ${g.width} ${g.height}`}>
        <defs>
          <marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto">
            <path d="M0,0 L10,5 L0,10 z" className="edge-head" />
          </marker>
        </defs>
        {g.edges.map((e, i) => {
          const d = e.points.map((p, j) => `${j === 0 ? 'M' : 'L'}${p.x},${p.y}`).join(' ')
          const mid = e.points[Math.floor(e.points.length / 2)]
          return (
            <g key={i} className={`edge${e.label === 'catch' ? ' edge-catch' : ''}`}>
              <path d={d} markerEnd="url(#arrow)" />
              {e.label && mid && (
                <text x={mid.x + 4} y={mid.y - 2} className="edge-label">
                  {e.label.length > 22 ? e.label.slice(0, 21) + '…' : e.label}
                </text>
              )}
            </g>
          )
        })}
        {g.nodes.map((n) => {
          const state = states?.[n.id]
          const cls = `node node-${n.type}${state ? ` state-${state.toLowerCase()}` : ''}${selected === n.id ? ' selected' : ''}`
          const label = `${n.id}, ${n.type} step${state ? `, ${STATE_LABEL[state] ?? state}` : states ? ', not run' : ''}`
          return (
            <g
              key={n.id}
              className={cls}
              transform={`translate(${n.x - n.width / 2},${n.y - n.height / 2})`}
              role={onSelect ? 'button' : 'img'}
              tabIndex={onSelect ? 0 : undefined}
              aria-label={label}
              data-step={n.id}
              data-state={state ?? ''}
              onClick={onSelect ? () => onSelect(n.id) : undefined}
              onKeyDown={
                onSelect
                  ? (ev) => {
                      if (ev.key === 'Enter' || ev.key === ' ') {
                        ev.preventDefault()
                        onSelect(n.id)
                      }
                    }
                  : undefined
              }
            >
              <rect width={n.width} height={n.height} rx={8} />
              <text x={10} y={20} className="node-name">
                {n.id.length > 20 ? n.id.slice(0, 19) + '…' : n.id}
              </text>
              <text x={10} y={37} className="node-type">
                {n.type}
                {state ? ` · ${STATE_LABEL[state] ?? state}` : ''}
              </text>
            </g>
          )
        })}
      </svg>
    </div>
  )
}
