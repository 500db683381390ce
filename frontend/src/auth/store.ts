// The seed's AuthState: tokens in storage under `auth_token` / `refresh_token`, refreshed ahead of
// the access token's expiry and once on a 401, logout revoking the refresh family server-side.
//
// Refresh tokens rotate and a spent one revokes its whole family, so every refresh is careful:
// one at a time per tab (a shared promise) and per browser (a Web Lock), storage checked first
// (another tab may have rotated the pair already), and nothing written back once the user has
// signed out in the meantime.
import { create } from 'zustand'
import { API_BASE_URL, authConfig } from '../config'
import { ApiError, problemFrom } from '../api/problem'
import { decodeClaims } from './jwt'

export interface User {
  username: string
  tenant: string
  roles: string[]
}

export interface LoginCredentials {
  username: string
  password: string
  tenant?: string
}

export interface AuthState {
  token: string | null
  refreshToken: string | null
  user: User | null
  isAuthenticated: boolean
  /** Why the user was signed out, shown on the login screen. */
  notice: string | null
  login: (credentials: LoginCredentials) => Promise<void>
  logout: () => Promise<void>
  refreshAuth: () => Promise<void>
  /** Checks stored tokens at start-up; "Token validation failed" clears them. */
  restore: () => Promise<void>
  /** The access token, refreshed first when it is about to expire. */
  validToken: () => Promise<string | null>
  /** Clears everything locally (no server call) and says why. */
  signOut: (notice: string | null) => void
  /** Takes what another tab stored (a rotated pair, or a logout). */
  syncFromStorage: () => void
}

/** Refresh this long before the access token expires (a quarter of its life when that is shorter). */
export const REFRESH_AHEAD_MS = 60_000
/** No timer refresh sooner than this, whatever the clocks say: a skewed clock must not loop. */
export const MIN_REFRESH_DELAY_MS = 5_000
/** After a refresh that failed for a passing reason (5xx, 429, network), try again after this. */
export const RETRY_REFRESH_MS = 30_000
const REFRESH_TIMEOUT_MS = 15_000

export const TOKEN_VALIDATION_FAILED = 'Token validation failed: sign in again.'
const SESSION_ENDED = 'Your session ended: sign in again.'

export interface AuthDeps {
  fetch: typeof fetch
  storage: Storage
  now: () => number
  apiBase: string
  /** Web Locks: tabs of one browser share the refresh token, so only one may rotate it at a time. */
  locks?: { request: <T>(name: string, callback: () => Promise<T>) => Promise<T> }
}

interface TokenResponse {
  access_token: string
  refresh_token: string
  expires_in: number
}

function userFromToken(token: string): User | null {
  const c = decodeClaims(token)
  if (!c || typeof c.sub !== 'string' || typeof c.tenant !== 'string') return null
  return { username: c.sub, tenant: c.tenant, roles: Array.isArray(c.roles) ? c.roles : [] }
}

/** The token's life as issued (`exp - iat`), or the seed's one hour. */
function lifeOf(token: string): number {
  const c = decodeClaims(token) as { exp?: number; iat?: number } | null
  if (c && typeof c.exp === 'number' && typeof c.iat === 'number' && c.exp > c.iat) return (c.exp - c.iat) * 1000
  return authConfig.tokenExpiration
}

const leadFor = (lifeMs: number) => Math.min(REFRESH_AHEAD_MS, lifeMs / 4)

export function createAuthStore(deps: AuthDeps) {
  let refreshing: Promise<void> | null = null
  let timer: ReturnType<typeof setTimeout> | null = null
  // When the access token expires, on this browser's clock: taken from `expires_in` when the
  // server answered (so a skewed clock does not matter), else from the token's own claims.
  let expiresAtLocal: number | null = null
  let lifeMs: number = authConfig.tokenExpiration
  // Bumped by every sign-out: a refresh that started before it must not bring the session back.
  let epoch = 0

  const post = (path: string, body: unknown) =>
    deps.fetch(`${deps.apiBase}${path}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(REFRESH_TIMEOUT_MS),
    })

  return create<AuthState>()((set, get) => {
    const arm = (delay: number) => {
      if (timer) clearTimeout(timer)
      timer = setTimeout(
        () => {
          void get()
            .refreshAuth()
            .catch(() => {
              // Still signed in (a passing failure): try again later rather than give up.
              if (get().isAuthenticated) arm(RETRY_REFRESH_MS)
            })
        },
        Math.max(delay, MIN_REFRESH_DELAY_MS),
      )
    }

    const adopt = (token: string, refreshToken: string, user: User, expiresInMs?: number) => {
      lifeMs = expiresInMs ?? lifeOf(token)
      const exp = decodeClaims(token)?.exp
      expiresAtLocal =
        expiresInMs !== undefined ? deps.now() + expiresInMs : typeof exp === 'number' ? exp * 1000 : deps.now() + lifeMs
      set({ token, refreshToken, user, isAuthenticated: true, notice: null })
      arm(expiresAtLocal - leadFor(lifeMs) - deps.now())
    }

    const accept = (t: TokenResponse) => {
      const user = userFromToken(t.access_token)
      if (!user) throw new ApiError({ status: 401, title: 'Unauthorized', detail: TOKEN_VALIDATION_FAILED })
      deps.storage.setItem(authConfig.tokenKey, t.access_token)
      deps.storage.setItem(authConfig.refreshTokenKey, t.refresh_token)
      adopt(t.access_token, t.refresh_token, user, t.expires_in * 1000)
    }

    const withLock = <T,>(f: () => Promise<T>): Promise<T> =>
      deps.locks ? deps.locks.request('wfe-auth-refresh', f) : f()

    const signOut = (notice: string | null) => {
      epoch += 1
      if (timer) clearTimeout(timer)
      timer = null
      expiresAtLocal = null
      deps.storage.removeItem(authConfig.tokenKey)
      deps.storage.removeItem(authConfig.refreshTokenKey)
      set({ token: null, refreshToken: null, user: null, isAuthenticated: false, notice })
    }

    const storedToken = deps.storage.getItem(authConfig.tokenKey)
    const storedRefresh = deps.storage.getItem(authConfig.refreshTokenKey)
    const storedUser = storedToken && storedRefresh ? userFromToken(storedToken) : null

    return {
      token: storedUser ? storedToken : null,
      refreshToken: storedUser ? storedRefresh : null,
      user: storedUser,
      isAuthenticated: storedUser !== null,
      notice: null,

      login: async ({ username, password, tenant }) => {
        const res = await post('/auth/login', { username, password, ...(tenant ? { tenant } : {}) })
        if (!res.ok) throw await problemFrom(res)
        accept((await res.json()) as TokenResponse)
      },

      logout: async () => {
        const refreshToken = get().refreshToken
        signOut(null)
        if (refreshToken) {
          // Revokes the whole refresh family (and with it this login's access tokens). Taken
          // under the lock so no refresh of another tab is mid-flight with the old pair.
          await withLock(() => post('/auth/logout', { refresh_token: refreshToken })).catch(() => undefined)
        }
      },

      refreshAuth: () => {
        if (refreshing) return refreshing
        const held = get().refreshToken
        if (!held) {
          signOut(SESSION_ENDED)
          return Promise.reject(new ApiError({ status: 401, title: 'Unauthorized', detail: 'not signed in' }))
        }
        const started = epoch
        refreshing = (async () => {
          try {
            await withLock(async () => {
              if (epoch !== started) throw new ApiError({ status: 401, title: 'Unauthorized', detail: 'signed out' })
              // Storage is the truth every tab shares: another one may have rotated the pair, or
              // logged out, while this one waited.
              const storedRefresh = deps.storage.getItem(authConfig.refreshTokenKey)
              const storedToken = deps.storage.getItem(authConfig.tokenKey)
              if (!storedRefresh) {
                signOut(SESSION_ENDED)
                throw new ApiError({ status: 401, title: 'Unauthorized', detail: 'signed out' })
              }
              if (storedRefresh !== held && storedToken) {
                const user = userFromToken(storedToken)
                const exp = decodeClaims(storedToken)?.exp
                if (user && typeof exp === 'number' && exp * 1000 - deps.now() > leadFor(lifeOf(storedToken))) {
                  adopt(storedToken, storedRefresh, user)
                  return
                }
              }
              const res = await post('/auth/refresh', { refresh_token: storedRefresh })
              if (epoch !== started) throw new ApiError({ status: 401, title: 'Unauthorized', detail: 'signed out' })
              if (res.status === 401 || res.status === 400 || res.status === 403) {
                const problem = await problemFrom(res)
                signOut(SESSION_ENDED)
                throw problem
              }
              if (!res.ok) throw await problemFrom(res)
              const body = (await res.json()) as TokenResponse
              if (epoch !== started) throw new ApiError({ status: 401, title: 'Unauthorized', detail: 'signed out' })
              accept(body)
            })
          } finally {
            refreshing = null
          }
        })()
        return refreshing
      },

      syncFromStorage: () => {
        const token = deps.storage.getItem(authConfig.tokenKey)
        const refreshToken = deps.storage.getItem(authConfig.refreshTokenKey)
        const user = token && refreshToken ? userFromToken(token) : null
        if (!token || !refreshToken || !user) {
          if (get().isAuthenticated) signOut(null)
          return
        }
        if (token !== get().token || refreshToken !== get().refreshToken) adopt(token, refreshToken, user)
      },

      restore: async () => {
        const { token } = get()
        if (!token) {
          // Something was stored but does not decode: the seed's "Token validation failed".
          if (deps.storage.getItem(authConfig.tokenKey) || deps.storage.getItem(authConfig.refreshTokenKey)) {
            signOut(TOKEN_VALIDATION_FAILED)
          }
          return
        }
        const me = async () =>
          deps.fetch(`${deps.apiBase}/auth/me`, { headers: { authorization: `Bearer ${await get().validToken()}` } })
        try {
          let res = await me()
          if (res.status === 401) {
            await get().refreshAuth()
            res = await me()
          }
          if (res.status === 401 || res.status === 403) throw await problemFrom(res)
          // Anything else (a 5xx, a 429) is the server's passing trouble, not the token's.
          const current = get().token
          if (current) adopt(current, get().refreshToken as string, get().user as User)
        } catch (e) {
          if (e instanceof ApiError && (e.status === 401 || e.status === 403 || e.status === 400)) {
            signOut(TOKEN_VALIDATION_FAILED)
          }
        }
      },

      validToken: async () => {
        const { token } = get()
        if (!token) return null
        if (expiresAtLocal === null) adopt(token, get().refreshToken as string, get().user as User)
        if ((expiresAtLocal as number) - deps.now() < leadFor(lifeMs)) {
          // A failed refresh leaves the current token: the request says whether it still works.
          await get()
            .refreshAuth()
            .catch(() => undefined)
        }
        return get().token
      },

      signOut,
    }
  })
}

export const useAuth = createAuthStore({
  fetch: (...args) => fetch(...args),
  storage: window.localStorage,
  now: () => Date.now(),
  apiBase: API_BASE_URL,
  locks: globalThis.navigator?.locks,
})

// Another tab logged in, rotated the tokens or logged out: follow it.
window.addEventListener('storage', (e) => {
  if (e.key === null || e.key === authConfig.tokenKey || e.key === authConfig.refreshTokenKey) {
    useAuth.getState().syncFromStorage()
  }
})
