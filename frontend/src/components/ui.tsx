import type { ReactNode } from 'react'
import { graphqlProblems, messageOf, ApiError, requestIdOf } from '../api/problem'

/** An error as the user should read it: the problem's detail, and its field problems. */
export function ErrorBox({ error, title }: { error: unknown; title?: string }) {
  if (!error) return null
  const problems = error instanceof ApiError ? error.problems : graphqlProblems(error)
  const requestId = requestIdOf(error)
  return (
    <div className="error" role="alert">
      {title && <strong>{title}: </strong>}
      {messageOf(error)}
      {problems.length > 0 && (
        <ul>
          {problems.map((p) => (
            <li key={p.pointer + p.message}>
              <code>{p.pointer || '/'}</code> {p.message}
            </li>
          ))}
        </ul>
      )}
      {requestId && <div className="small">Request id: {requestId}</div>}
    </div>
  )
}

export function Empty({ children }: { children: ReactNode }) {
  return <div className="empty">{children}</div>
}

export function Loading({ what }: { what: string }) {
  return (
    <p className="muted" role="status" aria-live="polite">
      Loading {what}…
    </p>
  )
}

export function Status({ status }: { status: string }) {
  const s = status.toLowerCase()
  return <span className={`badge badge-${s}`}>{s.replace(/_/g, ' ')}</span>
}

export function Json({ value, label }: { value: unknown; label: string }) {
  if (value === undefined || value === null) return <p className="muted">{label}: none</p>
  return (
    <figure className="json">
      <figcaption>{label}</figcaption>
      <pre tabIndex={0}>{typeof value === 'string' ? value : JSON.stringify(value, null, 2)}</pre>
    </figure>
  )
}

export function PageTitle({ children, actions }: { children: ReactNode; actions?: ReactNode }) {
  return (
    <div className="page-title">
      <h1>{children}</h1>
      {actions && <div className="actions">{actions}</div>}
    </div>
  )
}
