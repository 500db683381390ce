// REST calls for what GraphQL has no field for (sign-in, users, MCP registration, prices,
// health). A 401 refreshes once and retries; a second 401 signs the user out.
import { API_BASE_URL } from '../config'
import { useAuth } from '../auth/store'
import { problemFrom } from './problem'

type AuthLike = Pick<ReturnType<typeof useAuth.getState>, 'validToken' | 'refreshAuth' | 'signOut'>

export async function authedFetch(
  url: string,
  init: RequestInit = {},
  auth: AuthLike = useAuth.getState(),
  doFetch: typeof fetch = fetch,
): Promise<Response> {
  const send = (token: string | null) => {
    const headers = new Headers(init.headers)
    if (token) headers.set('authorization', `Bearer ${token}`)
    return doFetch(url, { ...init, headers })
  }
  const used = await auth.validToken()
  const res = await send(used)
  if (res.status !== 401) return res
  // Another call may have refreshed while this one was out: retry with that token first.
  const current = await auth.validToken()
  if (current !== null && current !== used) {
    const retried = await send(current)
    if (retried.status !== 401) return retried
  }
  try {
    await auth.refreshAuth()
  } catch {
    return res
  }
  const again = await send(await auth.validToken())
  if (again.status === 401) auth.signOut('Your session ended: sign in again.')
  return again
}

export async function rest<T>(method: string, path: string, body?: unknown): Promise<T> {
  const res = await authedFetch(`${API_BASE_URL}${path}`, {
    method,
    headers: body === undefined ? {} : { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  })
  if (!res.ok) throw await problemFrom(res)
  if (res.status === 204) return undefined as T
  return (await res.json()) as T
}
