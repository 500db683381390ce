import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { createAuthStore, REFRESH_AHEAD_MS, TOKEN_VALIDATION_FAILED, type AuthDeps } from './store'

const HOUR = 3_600_000

function jwt(claims: Record<string, unknown>): string {
  const b64 = (o: unknown) => btoa(JSON.stringify(o)).replace(/=+$/, '').replace(/\+/g, '-').replace(/\//g, '_')
  return `${b64({ alg: 'HS256' })}.${b64(claims)}.sig`
}

function tokenAt(nowMs: number, sub = 'ada', lifeMs = HOUR): string {
  return jwt({ sub, tenant: 't1', roles: ['admin'], exp: Math.floor((nowMs + lifeMs) / 1000) })
}

function json(status: number, body: unknown): Response {
  return new Response(JSON.stringify(body), { status, headers: { 'content-type': 'application/json' } })
}

interface Call {
  url: string
  body: unknown
  auth: string | null
}

function setup(handler: (c: Call) => Response | Promise<Response>, now = () => Date.now()) {
  const calls: Call[] = []
  const fetchFn = vi.fn(async (input: RequestInfo | URL, init?: RequestInit) => {
    const c = {
      url: String(input),
      body: init?.body ? JSON.parse(String(init.body)) : undefined,
      auth: new Headers(init?.headers).get('authorization'),
    }
    calls.push(c)
    return handler(c)
  })
  const deps: AuthDeps = { fetch: fetchFn as unknown as typeof fetch, storage: localStorage, now, apiBase: '/api' }
  return { calls, deps }
}

beforeEach(() => localStorage.clear())
afterEach(() => vi.useRealTimers())

describe('AuthState', () => {
  it('stores both tokens under the seed keys on login and decodes the user', async () => {
    const { deps } = setup(() => json(200, { access_token: tokenAt(Date.now()), refresh_token: 'r1', expires_in: 3600 }))
    const store = createAuthStore(deps)
    await store.getState().login({ username: 'ada', password: 'pw-123456789012', tenant: 't1' })
    const s = store.getState()
    expect(s.isAuthenticated).toBe(true)
    expect(s.user).toEqual({ username: 'ada', tenant: 't1', roles: ['admin'] })
    expect(localStorage.getItem('auth_token')).toBe(s.token)
    expect(localStorage.getItem('refresh_token')).toBe('r1')
  })

  it('keeps the problem detail of a refused login and stores nothing', async () => {
    const { deps } = setup(() => json(401, { title: 'Unauthorized', status: 401, detail: 'invalid username or password' }))
    const store = createAuthStore(deps)
    await expect(store.getState().login({ username: 'ada', password: 'nope' })).rejects.toThrow('invalid username or password')
    expect(store.getState().isAuthenticated).toBe(false)
    expect(localStorage.getItem('auth_token')).toBeNull()
  })

  it('refreshes ahead of expiry, on a timer, with the rotated token', async () => {
    vi.useFakeTimers()
    let n = 1
    const { calls, deps } = setup((c) => {
      if (c.url.endsWith('/auth/me')) return json(200, { username: 'ada' })
      n += 1
      return json(200, { access_token: tokenAt(Date.now()), refresh_token: `r${n}`, expires_in: 3600 })
    })
    localStorage.setItem('auth_token', tokenAt(Date.now()))
    localStorage.setItem('refresh_token', 'r1')
    const store = createAuthStore(deps)
    await store.getState().restore()
    const refreshes = () => calls.filter((c) => c.url === '/api/auth/refresh')
    expect(refreshes()).toHaveLength(0)
    await vi.advanceTimersByTimeAsync(HOUR - REFRESH_AHEAD_MS - 1000)
    expect(refreshes()).toHaveLength(0)
    await vi.advanceTimersByTimeAsync(2000)
    expect(refreshes().map((c) => c.body)).toEqual([{ refresh_token: 'r1' }])
    expect(store.getState().refreshToken).toBe('r2')
    expect(localStorage.getItem('refresh_token')).toBe('r2')
    // ...and again an hour later, with the token it got.
    await vi.advanceTimersByTimeAsync(HOUR)
    expect(refreshes().map((c) => c.body)).toEqual([{ refresh_token: 'r1' }, { refresh_token: 'r2' }])
  })

  it('shares one refresh between concurrent callers, so a spent refresh token is never replayed', async () => {
    let release: () => void = () => undefined
    const gate = new Promise<void>((r) => (release = r))
    const { calls, deps } = setup(async () => {
      await gate
      return json(200, { access_token: tokenAt(Date.now()), refresh_token: 'r2', expires_in: 3600 })
    })
    localStorage.setItem('auth_token', tokenAt(Date.now()))
    localStorage.setItem('refresh_token', 'r1')
    const store = createAuthStore(deps)
    const a = store.getState().refreshAuth()
    const b = store.getState().refreshAuth()
    release()
    await Promise.all([a, b])
    expect(calls).toHaveLength(1)
    expect(store.getState().refreshToken).toBe('r2')
  })

  it('validToken refreshes first when the access token is about to expire', async () => {
    const { calls, deps } = setup(() => json(200, { access_token: tokenAt(Date.now()), refresh_token: 'r2', expires_in: 3600 }))
    localStorage.setItem('auth_token', tokenAt(Date.now(), 'ada', 30_000))
    localStorage.setItem('refresh_token', 'r1')
    const store = createAuthStore(deps)
    const before = store.getState().token
    const token = await store.getState().validToken()
    expect(calls.map((c) => c.url)).toEqual(['/api/auth/refresh'])
    expect(token).not.toBe(before)
  })

  it('a refused refresh signs out and clears storage', async () => {
    const { deps } = setup(() => json(401, { title: 'Unauthorized', status: 401, detail: 'refresh token revoked' }))
    localStorage.setItem('auth_token', tokenAt(Date.now()))
    localStorage.setItem('refresh_token', 'r1')
    const store = createAuthStore(deps)
    await expect(store.getState().refreshAuth()).rejects.toThrow('refresh token revoked')
    expect(store.getState().isAuthenticated).toBe(false)
    expect(localStorage.getItem('auth_token')).toBeNull()
    expect(localStorage.getItem('refresh_token')).toBeNull()
  })

  it('logout revokes the refresh family on the server and forgets the tokens', async () => {
    const { calls, deps } = setup(() => new Response(null, { status: 204 }))
    localStorage.setItem('auth_token', tokenAt(Date.now()))
    localStorage.setItem('refresh_token', 'r1')
    const store = createAuthStore(deps)
    await store.getState().logout()
    expect(calls).toEqual([{ url: '/api/auth/logout', body: { refresh_token: 'r1' }, auth: null }])
    expect(store.getState().isAuthenticated).toBe(false)
    expect(localStorage.getItem('auth_token')).toBeNull()
    expect(localStorage.getItem('refresh_token')).toBeNull()
  })

  it('a stored token that does not decode is cleared with "Token validation failed"', async () => {
    const { calls, deps } = setup(() => json(500, {}))
    localStorage.setItem('auth_token', 'garbage')
    localStorage.setItem('refresh_token', 'r1')
    const store = createAuthStore(deps)
    expect(store.getState().isAuthenticated).toBe(false)
    await store.getState().restore()
    expect(calls).toHaveLength(0)
    expect(store.getState().notice).toBe(TOKEN_VALIDATION_FAILED)
    expect(localStorage.getItem('auth_token')).toBeNull()
    expect(localStorage.getItem('refresh_token')).toBeNull()
  })

  it('a stored token the server rejects is refreshed once, then cleared if that fails too', async () => {
    const { calls, deps } = setup((c) =>
      c.url.endsWith('/auth/me')
        ? json(401, { title: 'Unauthorized', status: 401, detail: 'token revoked' })
        : json(401, { title: 'Unauthorized', status: 401, detail: 'refresh token revoked' }),
    )
    localStorage.setItem('auth_token', tokenAt(Date.now()))
    localStorage.setItem('refresh_token', 'r1')
    const store = createAuthStore(deps)
    await store.getState().restore()
    expect(calls.map((c) => c.url)).toEqual(['/api/auth/me', '/api/auth/refresh'])
    expect(store.getState().isAuthenticated).toBe(false)
    expect(localStorage.getItem('auth_token')).toBeNull()
  })

  it('keeps the session when the API is only unreachable', async () => {
    const { deps } = setup(() => {
      throw new TypeError('Failed to fetch')
    })
    localStorage.setItem('auth_token', tokenAt(Date.now()))
    localStorage.setItem('refresh_token', 'r1')
    const store = createAuthStore(deps)
    await store.getState().restore()
    expect(store.getState().isAuthenticated).toBe(true)
    expect(localStorage.getItem('refresh_token')).toBe('r1')
  })

  it('takes the pair another tab rotated instead of spending its own refresh token again', async () => {
    const { calls, deps } = setup(() => json(500, {}))
    localStorage.setItem('auth_token', tokenAt(Date.now() - HOUR + 30_000))
    localStorage.setItem('refresh_token', 'r1')
    const store = createAuthStore(deps)
    // The other tab rotates r1 into r2 and stores a fresh access token.
    const fresh = tokenAt(Date.now())
    localStorage.setItem('auth_token', fresh)
    localStorage.setItem('refresh_token', 'r2')
    await store.getState().refreshAuth()
    expect(calls).toHaveLength(0)
    expect(store.getState().token).toBe(fresh)
    expect(store.getState().refreshToken).toBe('r2')
  })

  it("refreshes with the newest stored refresh token when the other tab's access token is stale too", async () => {
    const { calls, deps } = setup(() => json(200, { access_token: tokenAt(Date.now()), refresh_token: 'r3', expires_in: 3600 }))
    localStorage.setItem('auth_token', tokenAt(Date.now(), 'ada', 10_000))
    localStorage.setItem('refresh_token', 'r1')
    const store = createAuthStore(deps)
    localStorage.setItem('refresh_token', 'r2')
    await store.getState().refreshAuth()
    expect(calls.map((c) => c.body)).toEqual([{ refresh_token: 'r2' }])
    expect(store.getState().refreshToken).toBe('r3')
  })

  it('follows a logout in another tab', async () => {
    const { calls, deps } = setup(() => json(500, {}))
    localStorage.setItem('auth_token', tokenAt(Date.now()))
    localStorage.setItem('refresh_token', 'r1')
    const store = createAuthStore(deps)
    localStorage.clear()
    store.getState().syncFromStorage()
    expect(store.getState().isAuthenticated).toBe(false)
    localStorage.setItem('auth_token', tokenAt(Date.now()))
    localStorage.setItem('refresh_token', 'r9')
    store.getState().syncFromStorage()
    expect(store.getState().refreshToken).toBe('r9')
    localStorage.clear()
    await expect(store.getState().refreshAuth()).rejects.toThrow()
    expect(calls).toHaveLength(0)
    expect(store.getState().isAuthenticated).toBe(false)
  })

  it('serialises refreshes through the lock manager', async () => {
    const names: string[] = []
    const { deps } = setup(() => json(200, { access_token: tokenAt(Date.now()), refresh_token: 'r2', expires_in: 3600 }))
    deps.locks = {
      request: async (name, cb) => {
        names.push(name)
        return cb()
      },
    }
    localStorage.setItem('auth_token', tokenAt(Date.now()))
    localStorage.setItem('refresh_token', 'r1')
    await createAuthStore(deps).getState().refreshAuth()
    expect(names).toEqual(['wfe-auth-refresh'])
  })

  it('schedules from expires_in, so a browser clock an hour fast does not loop refreshing', async () => {
    vi.useFakeTimers()
    // The server's clock is an hour behind this browser's: its tokens look expired here.
    const serverNow = () => Date.now() - 2 * HOUR
    let n = 0
    const { calls, deps } = setup(() => {
      n += 1
      return json(200, { access_token: tokenAt(serverNow()), refresh_token: `r${n + 1}`, expires_in: 3600 })
    })
    const store = createAuthStore(deps)
    await store.getState().login({ username: 'ada', password: 'pw-123456789012' })
    await vi.advanceTimersByTimeAsync(10 * 60_000)
    await store.getState().validToken()
    expect(calls.map((c) => c.url)).toEqual(['/api/auth/login'])
    await vi.advanceTimersByTimeAsync(HOUR)
    expect(calls.filter((c) => c.url === '/api/auth/refresh')).toHaveLength(1)
  })

  it('short-lived tokens refresh a quarter of their life ahead, never in a tight loop', async () => {
    vi.useFakeTimers()
    let n = 0
    const { calls, deps } = setup(() => {
      n += 1
      return json(200, { access_token: tokenAt(Date.now(), 'ada', 20_000), refresh_token: `r${n}`, expires_in: 20 })
    })
    const store = createAuthStore(deps)
    await store.getState().login({ username: 'ada', password: 'pw-123456789012' })
    await vi.advanceTimersByTimeAsync(14_000)
    expect(calls).toHaveLength(1)
    await vi.advanceTimersByTimeAsync(2_000)
    expect(calls).toHaveLength(2)
    await vi.advanceTimersByTimeAsync(60_000)
    expect(calls.length).toBeLessThanOrEqual(6)
  })

  it('a refresh in flight when the user logs out does not bring the session back', async () => {
    let release: () => void = () => undefined
    const gate = new Promise<void>((r) => (release = r))
    const { deps } = setup(async (c) => {
      if (c.url.endsWith('/auth/logout')) return new Response(null, { status: 204 })
      await gate
      return json(200, { access_token: tokenAt(Date.now()), refresh_token: 'r2', expires_in: 3600 })
    })
    localStorage.setItem('auth_token', tokenAt(Date.now()))
    localStorage.setItem('refresh_token', 'r1')
    const store = createAuthStore(deps)
    const refresh = store.getState().refreshAuth()
    await store.getState().logout()
    release()
    await expect(refresh).rejects.toThrow()
    expect(store.getState().isAuthenticated).toBe(false)
    expect(localStorage.getItem('auth_token')).toBeNull()
    expect(localStorage.getItem('refresh_token')).toBeNull()
  })

  it('a server error while checking a stored session keeps it', async () => {
    const { deps } = setup(() => json(503, { title: 'Service Unavailable', status: 503, detail: 'try later' }))
    localStorage.setItem('auth_token', tokenAt(Date.now()))
    localStorage.setItem('refresh_token', 'r1')
    const store = createAuthStore(deps)
    await store.getState().restore()
    expect(store.getState().isAuthenticated).toBe(true)
    expect(localStorage.getItem('refresh_token')).toBe('r1')
  })

  it('validToken keeps the current token when a refresh ahead of expiry fails for a passing reason', async () => {
    const { deps } = setup(() => json(503, { title: 'Service Unavailable', status: 503, detail: 'try later' }))
    const token = tokenAt(Date.now(), 'ada', 30_000)
    localStorage.setItem('auth_token', token)
    localStorage.setItem('refresh_token', 'r1')
    const store = createAuthStore(deps)
    expect(await store.getState().validToken()).toBe(token)
    expect(store.getState().isAuthenticated).toBe(true)
  })
})
