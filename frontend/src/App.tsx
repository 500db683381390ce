import { useEffect, useMemo, useState } from 'react'
import { ApolloProvider } from '@apollo/client/react'
import { BrowserRouter, Navigate, Outlet, Route, Routes, useLocation } from 'react-router'
import { createClient } from './api/graphql'
import { useAuth } from './auth/store'
import { Layout } from './components/Layout'
import { Login } from './screens/Login'
import { Workflows } from './screens/Workflows'
import { WorkflowDetail } from './screens/WorkflowDetail'
import { WorkflowEditor } from './screens/WorkflowEditor'
import { Run } from './screens/Run'
import { Executions } from './screens/Executions'
import { ExecutionDetail } from './screens/ExecutionDetail'
import { Costs } from './screens/Costs'
import { Admin } from './screens/Admin'
import { Loading } from './components/ui'
import { PageBoundary, RouteAnnouncer } from './components/RouteFocus'

function RequireAuth() {
  const isAuthenticated = useAuth((s) => s.isAuthenticated)
  const location = useLocation()
  if (!isAuthenticated) return <Navigate to="/login" replace state={{ from: location.pathname + location.search }} />
  return <Outlet />
}

export function App() {
  const client = useMemo(() => createClient(), [])
  const [ready, setReady] = useState(false)
  useEffect(() => {
    void useAuth
      .getState()
      .restore()
      .finally(() => setReady(true))
  }, [])
  // A sign-out, or another user signing in (in another tab), forgets every cached answer.
  useEffect(
    () =>
      useAuth.subscribe((s, prev) => {
        const was = prev.user ? `${prev.user.tenant}/${prev.user.username}` : null
        const is = s.user ? `${s.user.tenant}/${s.user.username}` : null
        if (was !== null && was !== is) void client.clearStore()
      }),
    [client],
  )
  if (!ready) return <Loading what="your session" />
  return (
    <ApolloProvider client={client}>
      <BrowserRouter>
        <RouteAnnouncer />
        <PageBoundary>
        <Routes>
          <Route path="/login" element={<Login />} />
          <Route element={<RequireAuth />}>
            <Route element={<Layout />}>
              <Route index element={<Navigate to="/workflows" replace />} />
              <Route path="/workflows" element={<Workflows />} />
              <Route path="/workflows/new" element={<WorkflowEditor />} />
              <Route path="/workflows/:id" element={<WorkflowDetail />} />
              <Route path="/workflows/:id/edit" element={<WorkflowEditor />} />
              <Route path="/workflows/:id/run" element={<Run />} />
              <Route path="/executions" element={<Executions />} />
              <Route path="/executions/:id" element={<ExecutionDetail />} />
              <Route path="/costs" element={<Costs />} />
              <Route path="/admin" element={<Admin />} />
              <Route path="*" element={<NotFound />} />
            </Route>
          </Route>
        </Routes>
        </PageBoundary>
      </BrowserRouter>
    </ApolloProvider>
  )
}

function NotFound() {
  return (
    <div>
      <h1>Not found</h1>
      <p>
        There is nothing here. Go to <a href="/workflows">your workflows</a>.
      </p>
    </div>
  )
}
