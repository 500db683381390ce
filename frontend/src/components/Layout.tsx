import { useEffect, useState } from 'react'
import { NavLink, Outlet, useNavigate } from 'react-router'
import { useApolloClient } from '@apollo/client/react'
import { API_BASE_URL } from '../config'
import { useAuth } from '../auth/store'

interface Health {
  status: string
  checks?: { name: string; status: string; detail?: string }[]
}

/** Failing dependency checks, refreshed every 30 s: a stopped gateway is named here. */
function useHealthProblems(): string[] {
  const [problems, setProblems] = useState<string[]>([])
  useEffect(() => {
    let stop = false
    const check = async () => {
      try {
        const res = await fetch(`${API_BASE_URL}/health/detailed`)
        const body = (await res.json()) as Health
        if (!stop) setProblems((body.checks ?? []).filter((c) => c.status !== 'pass').map((c) => c.detail ?? c.name))
      } catch {
        if (!stop) setProblems([`The API at ${API_BASE_URL} is unreachable`])
      }
    }
    void check()
    const t = setInterval(check, 30_000)
    return () => {
      stop = true
      clearInterval(t)
    }
  }, [])
  return problems
}

export function Layout() {
  const user = useAuth((s) => s.user)
  const logout = useAuth((s) => s.logout)
  const client = useApolloClient()
  const navigate = useNavigate()
  const problems = useHealthProblems()
  const admin = user?.roles.includes('admin') ?? false
  return (
    <div className="shell">
      <a className="skip" href="#main">
        Skip to content
      </a>
      <header className="top">
        <span className="brand">Workflow Engine</span>
        <nav aria-label="Main">
          <NavLink to="/workflows">Workflows</NavLink>
          <NavLink to="/executions">Executions</NavLink>
          <NavLink to="/costs">Costs</NavLink>
          {admin && <NavLink to="/admin">Admin</NavLink>}
        </nav>
        <div className="who">
          <span>
            <span className="sr-only">Signed in as </span>
            {user?.username} <span className="muted">@{user?.tenant}</span>
          </span>
          <button
            type="button"
            onClick={async () => {
              await logout()
              await client.clearStore()
              navigate('/login')
            }}
          >
            Log out
          </button>
        </div>
      </header>
      {problems.length > 0 && (
        <div className="banner" role="alert">
          {problems.map((p) => (
            <div key={p}>{p}</div>
          ))}
        </div>
      )}
      <main id="main" tabIndex={-1}>
        <Outlet />
      </main>
    </div>
  )
}
