import { useState, type FormEvent, type ReactNode } from 'react'
import { useQuery } from '@apollo/client/react'
import { MCP_SERVERS, MCP_TOOLS, PRICES, USERS } from '../api/queries'
import { rest } from '../api/rest'
import { Empty, ErrorBox, Loading, PageTitle } from '../components/ui'
import { when } from '../lib/format'
import { useAuth } from '../auth/store'

type Tab = 'users' | 'mcp' | 'prices'

export function Admin() {
  const [tab, setTab] = useState<Tab>('users')
  const admin = useAuth((s) => s.user?.roles.includes('admin') ?? false)
  if (!admin) return <Empty>Administration is for your tenant’s admins. Ask one to give you the admin role.</Empty>
  const tabs: [Tab, string][] = [
    ['users', 'Users and roles'],
    ['mcp', 'MCP servers'],
    ['prices', 'Prices'],
  ]
  return (
    <section>
      <PageTitle>Admin</PageTitle>
      <div
        role="tablist"
        aria-label="Administration"
        className="tabs"
        onKeyDown={(e) => {
          // Arrow keys move between tabs, as the ARIA tabs pattern expects.
          if (e.key !== 'ArrowRight' && e.key !== 'ArrowLeft') return
          const i = tabs.findIndex(([t]) => t === tab)
          const next = tabs[(i + (e.key === 'ArrowRight' ? 1 : tabs.length - 1)) % tabs.length][0]
          setTab(next)
          document.getElementById(`tab-${next}`)?.focus()
        }}
      >
        {tabs.map(([t, label]) => (
          <button
            key={t}
            role="tab"
            type="button"
            id={`tab-${t}`}
            aria-selected={tab === t}
            aria-controls="admin-panel"
            tabIndex={tab === t ? 0 : -1}
            onClick={() => setTab(t)}
          >
            {label}
          </button>
        ))}
      </div>
      <div role="tabpanel" id="admin-panel" aria-labelledby={`tab-${tab}`}>
        {tab === 'users' && <Users />}
        {tab === 'mcp' && <McpServers />}
        {tab === 'prices' && <Prices />}
      </div>
    </section>
  )
}

/** Runs a REST change, shows its problem if it fails, refetches on success. */
function useAction(after: () => unknown) {
  const [error, setError] = useState<unknown>(null)
  const [busy, setBusy] = useState(false)
  const run = async (f: () => Promise<unknown>): Promise<boolean> => {
    setBusy(true)
    setError(null)
    try {
      await f()
      await after()
      return true
    } catch (e) {
      setError(e)
      return false
    } finally {
      setBusy(false)
    }
  }
  return { error, busy, run }
}

function Panel({ title, children }: { title: string; children: ReactNode }) {
  return (
    <section className="card">
      <h2>{title}</h2>
      {children}
    </section>
  )
}

interface UserRow {
  id: string
  username: string
  roles: string[]
  disabled: boolean
  createdAt: string | null
}

const parseRoles = (s: string) =>
  s
    .split(/[\s,]+/)
    .map((r) => r.trim())
    .filter(Boolean)

function Users() {
  const me = useAuth((s) => s.user?.username)
  const { data, loading, error, refetch } = useQuery<{ users: { nodes: UserRow[] } }>(USERS, { fetchPolicy: 'network-only' })
  const action = useAction(() => refetch())
  const [username, setUsername] = useState('')
  const [password, setPassword] = useState('')
  const [roles, setRoles] = useState('')
  const create = async (e: FormEvent) => {
    e.preventDefault()
    const ok = await action.run(() => rest('POST', '/auth/users', { username, password, roles: parseRoles(roles) }))
    if (ok) {
      setUsername('')
      setPassword('')
      setRoles('')
    }
  }
  return (
    <>
      <Panel title="Users">
        <ErrorBox error={error} />
        {loading && !data && <Loading what="users" />}
        <div className="table-wrap">
          <table>
            <thead>
              <tr>
                <th scope="col">User</th>
                <th scope="col">Roles</th>
                <th scope="col">Created</th>
                <th scope="col">Access</th>
              </tr>
            </thead>
            <tbody>
              {(data?.users.nodes ?? []).map((u) => (
                <tr key={u.id}>
                  <th scope="row">{u.username}</th>
                  <td>
                    <RolesEditor user={u} onSave={(r) => action.run(() => rest('PATCH', `/auth/users/${encodeURIComponent(u.username)}`, { roles: r }))} />
                  </td>
                  <td>{when(u.createdAt)}</td>
                  <td>
                    <button
                      type="button"
                      disabled={action.busy || u.username === me}
                      title={u.username === me ? 'You cannot disable yourself' : undefined}
                      onClick={() =>
                        void action.run(() => rest('PATCH', `/auth/users/${encodeURIComponent(u.username)}`, { disabled: !u.disabled }))
                      }
                    >
                      {u.disabled ? `Enable ${u.username}` : `Disable ${u.username}`}
                    </button>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
        <ErrorBox error={action.error} title="Not done" />
      </Panel>
      <Panel title="Add a user">
        <form className="inline-form" onSubmit={create}>
          <label>
            User name
            <input value={username} onChange={(e) => setUsername(e.target.value)} required pattern="[A-Za-z0-9._@\-]{3,64}" />
          </label>
          <label>
            Password <span className="muted">(12+ characters)</span>
            <input type="password" autoComplete="new-password" value={password} onChange={(e) => setPassword(e.target.value)} required minLength={12} />
          </label>
          <label>
            Roles <span className="muted">(comma separated: admin, approver, …)</span>
            <input value={roles} onChange={(e) => setRoles(e.target.value)} />
          </label>
          <button type="submit" className="primary" disabled={action.busy}>
            Add user
          </button>
        </form>
      </Panel>
    </>
  )
}

function RolesEditor({ user, onSave }: { user: UserRow; onSave: (roles: string[]) => Promise<boolean> }) {
  const [text, setText] = useState(user.roles.join(', '))
  const changed = text !== user.roles.join(', ')
  return (
    <form
      className="inline"
      onSubmit={(e) => {
        e.preventDefault()
        void onSave(parseRoles(text))
      }}
    >
      <input aria-label={`Roles of ${user.username}`} value={text} onChange={(e) => setText(e.target.value)} />
      {changed && <button type="submit">Save</button>}
    </form>
  )
}

interface Server {
  name: string
  url: string
  description: string | null
  auth: string
  updatedAt: string
}

interface Tool {
  name?: string
  description?: string
}

function McpServers() {
  const { data, loading, error, refetch } = useQuery<{ mcpServers: Server[] }>(MCP_SERVERS, { fetchPolicy: 'network-only' })
  const tools = useQuery<{ mcpServers: { name: string; tools: Tool[] | null }[] }>(MCP_TOOLS, { skip: true })
  const [shownTools, setShownTools] = useState<Record<string, Tool[] | string>>({})
  const action = useAction(() => refetch())
  const [name, setName] = useState('')
  const [url, setUrl] = useState('')
  const [description, setDescription] = useState('')
  const [token, setToken] = useState('')
  const register = async (e: FormEvent) => {
    e.preventDefault()
    const body: Record<string, string> = { url }
    if (description) body.description = description
    if (token) body.token = token
    const ok = await action.run(() => rest('PUT', `/mcp/servers/${encodeURIComponent(name)}`, body))
    if (ok) {
      setName('')
      setUrl('')
      setDescription('')
      setToken('')
    }
  }
  const loadTools = async () => {
    try {
      const res = await tools.refetch()
      const next: Record<string, Tool[] | string> = {}
      for (const s of res.data?.mcpServers ?? []) next[s.name] = s.tools ?? 'The server could not be asked for its tools.'
      setShownTools(next)
    } catch (e) {
      setShownTools({ _: e instanceof Error ? e.message : String(e) })
    }
  }
  const servers = data?.mcpServers ?? []
  return (
    <>
      <Panel title="Registered servers">
        <ErrorBox error={error} />
        {loading && !data && <Loading what="MCP servers" />}
        {data && servers.length === 0 && <Empty>No MCP servers yet. Register one below; `mcp` steps call its tools by name.</Empty>}
        {servers.length > 0 && (
          <>
            <ul className="plain">
              {servers.map((s) => (
                <li key={s.name} className="card">
                  <strong>{s.name}</strong> <code>{s.url}</code> <span className="muted small">auth: {s.auth} · {when(s.updatedAt)}</span>
                  {s.description && <div>{s.description}</div>}
                  {Array.isArray(shownTools[s.name]) && (
                    <ul aria-label={`Tools of ${s.name}`}>
                      {(shownTools[s.name] as Tool[]).map((t) => (
                        <li key={t.name}>
                          <code>{t.name}</code> {t.description}
                        </li>
                      ))}
                    </ul>
                  )}
                  {typeof shownTools[s.name] === 'string' && <p className="field-error">{shownTools[s.name] as string}</p>}
                  <button type="button" disabled={action.busy} onClick={() => void action.run(() => rest('DELETE', `/mcp/servers/${encodeURIComponent(s.name)}`))}>
                    Remove {s.name}
                  </button>
                </li>
              ))}
            </ul>
            <button type="button" onClick={() => void loadTools()}>
              Show their tools
            </button>
            {typeof shownTools._ === 'string' && <p className="field-error">{shownTools._}</p>}
          </>
        )}
        <ErrorBox error={action.error} title="Not done" />
      </Panel>
      <Panel title="Register a server">
        <form className="inline-form" onSubmit={register}>
          <label>
            Name
            <input value={name} onChange={(e) => setName(e.target.value)} required pattern="[A-Za-z0-9_\-]{1,64}" />
          </label>
          <label>
            URL <span className="muted">(streamable HTTP endpoint)</span>
            <input type="url" value={url} onChange={(e) => setUrl(e.target.value)} required />
          </label>
          <label>
            Description
            <input value={description} onChange={(e) => setDescription(e.target.value)} />
          </label>
          <label>
            Bearer token <span className="muted">(stored in Secrets Manager, never shown)</span>
            <input type="password" autoComplete="off" value={token} onChange={(e) => setToken(e.target.value)} />
          </label>
          <button type="submit" className="primary" disabled={action.busy}>
            Register
          </button>
        </form>
      </Panel>
    </>
  )
}

interface Price {
  provider: string
  model: string
  inputUsdPerMtok: number
  outputUsdPerMtok: number
  source: string
}

function Prices() {
  const { data, loading, error, refetch } = useQuery<{ prices: Price[] }>(PRICES, { fetchPolicy: 'network-only' })
  const action = useAction(() => refetch())
  const [provider, setProvider] = useState('openai')
  const [model, setModel] = useState('')
  const [input, setInput] = useState('')
  const [output, setOutput] = useState('')
  const set = async (e: FormEvent) => {
    e.preventDefault()
    await action.run(() =>
      rest('PUT', `/prices/${encodeURIComponent(provider)}/${encodeURIComponent(model)}`, {
        input_usd_per_mtok: Number(input),
        output_usd_per_mtok: Number(output),
      }),
    )
  }
  return (
    <>
      <Panel title="What your tenant pays per million tokens">
        <ErrorBox error={error} />
        {loading && !data && <Loading what="prices" />}
        <div className="table-wrap">
          <table>
            <thead>
              <tr>
                <th scope="col">Model</th>
                <th scope="col" className="num">
                  Input $/M
                </th>
                <th scope="col" className="num">
                  Output $/M
                </th>
                <th scope="col">Source</th>
              </tr>
            </thead>
            <tbody>
              {(data?.prices ?? []).map((p) => (
                <tr key={`${p.provider}/${p.model}`}>
                  <th scope="row">
                    {p.provider}/{p.model}
                  </th>
                  <td className="num">{p.inputUsdPerMtok}</td>
                  <td className="num">{p.outputUsdPerMtok}</td>
                  <td>
                    {p.source}
                    {p.source === 'tenant' && (
                      <button
                        type="button"
                        className="link"
                        onClick={() => void action.run(() => rest('DELETE', `/prices/${encodeURIComponent(p.provider)}/${encodeURIComponent(p.model)}`))}
                      >
                        back to list price
                      </button>
                    )}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
        <ErrorBox error={action.error} title="Not done" />
      </Panel>
      <Panel title="Set your own price">
        <form className="inline-form" onSubmit={set}>
          <label>
            Provider
            <select value={provider} onChange={(e) => setProvider(e.target.value)}>
              <option value="openai">openai</option>
              <option value="anthropic">anthropic</option>
              <option value="bedrock">bedrock</option>
            </select>
          </label>
          <label>
            Model
            <input value={model} onChange={(e) => setModel(e.target.value)} required />
          </label>
          <label>
            Input $ per million tokens
            <input inputMode="decimal" value={input} onChange={(e) => setInput(e.target.value)} required />
          </label>
          <label>
            Output $ per million tokens
            <input inputMode="decimal" value={output} onChange={(e) => setOutput(e.target.value)} required />
          </label>
          <button type="submit" className="primary" disabled={action.busy}>
            Set price
          </button>
        </form>
      </Panel>
    </>
  )
}
