import { useRef, type UIEvent } from 'react'
import type { PlacedProblem } from '../lib/definition'

/**
 * A plain textarea with a line-number gutter that marks the lines with problems. Plain on
 * purpose: screen readers, keyboard, mobile keyboards and the browser's undo all just work.
 */
export function CodeEditor({
  value,
  onChange,
  problems,
  label,
  textareaRef,
}: {
  value: string
  onChange: (v: string) => void
  problems: PlacedProblem[]
  label: string
  textareaRef?: React.RefObject<HTMLTextAreaElement | null>
}) {
  const gutter = useRef<HTMLDivElement>(null)
  const lines = value.split('\n').length
  const bad = new Map<number, string>()
  for (const p of problems) if (!bad.has(p.line)) bad.set(p.line, p.message)
  const sync = (e: UIEvent<HTMLTextAreaElement>) => {
    if (gutter.current) gutter.current.scrollTop = e.currentTarget.scrollTop
  }
  return (
    <div className="code">
      <div className="gutter" ref={gutter} aria-hidden="true">
        {Array.from({ length: lines }, (_, i) => (
          <div
            key={i}
            className={bad.has(i + 1) ? 'line bad' : 'line'}
            data-line={i + 1}
            data-problem={bad.has(i + 1) ? 'true' : undefined}
            title={bad.get(i + 1)}
          >
            {i + 1}
          </div>
        ))}
      </div>
      <textarea
        ref={textareaRef}
        aria-label={label}
        aria-invalid={problems.length > 0}
        aria-describedby="definition-problems"
        spellCheck={false}
        autoCapitalize="off"
        autoCorrect="off"
        value={value}
        onChange={(e) => onChange(e.target.value)}
        onScroll={sync}
        rows={Math.min(Math.max(lines + 1, 16), 40)}
      />
    </div>
  )
}
