import { Component, useEffect, useRef, type ReactNode } from 'react'
import { useLocation } from 'react-router'

const TITLES: [RegExp, string][] = [
  [/^\/login/, 'Sign in'],
  [/^\/workflows\/new/, 'New workflow'],
  [/^\/workflows\/[^/]+\/edit/, 'Edit workflow'],
  [/^\/workflows\/[^/]+\/run/, 'Run workflow'],
  [/^\/workflows\/[^/]+/, 'Workflow'],
  [/^\/workflows/, 'Workflows'],
  [/^\/executions\/[^/]+/, 'Execution'],
  [/^\/executions/, 'Executions'],
  [/^\/costs/, 'Costs'],
  [/^\/admin/, 'Admin'],
]

/** On every navigation: a page title, and focus on the new page's content for screen readers. */
export function RouteAnnouncer() {
  const { pathname } = useLocation()
  const first = useRef(true)
  useEffect(() => {
    const title = TITLES.find(([re]) => re.test(pathname))?.[1] ?? 'Workflow Engine'
    document.title = `${title} · Workflow Engine`
    if (first.current) {
      first.current = false
      return
    }
    document.getElementById('main')?.focus()
  }, [pathname])
  return null
}

interface State {
  error: Error | null
}

/** A rendering failure shows what happened and a way on, not a blank page. */
export class ErrorBoundary extends Component<{ children: ReactNode }, State> {
  state: State = { error: null }

  static getDerivedStateFromError(error: Error): State {
    return { error }
  }

  render() {
    if (!this.state.error) return this.props.children
    return (
      <main id="main" className="empty" role="alert">
        <h1>Something went wrong on this page</h1>
        <p>{this.state.error.message}</p>
        <p>
          <a href="/workflows">Back to the workflows</a>
        </p>
      </main>
    )
  }
}

/** The boundary starts over on every navigation, so a broken page does not stick. */
export function PageBoundary({ children }: { children: ReactNode }) {
  const { pathname } = useLocation()
  return <ErrorBoundary key={pathname}>{children}</ErrorBoundary>
}
