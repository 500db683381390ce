// The seed's AuthState: tokens in storage under `auth_token` / `refresh_token`, refreshed ahead of
// the access token's expiry and once on a 401, logout revoking the refresh family server-side.
import { create } from 'zustand'
import { API_BASE_URL, authConfig } from '../config'
import { ApiError, problemFrom } from '../api/problem'
import { decodeClaims, expiresAt } from './jwt'

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
  /** The access token, refreshed first when it expires within REFRESH_AHEAD_MS. */
  validToken: () => Promise<string | null>
  /** Clears everything locally (no server call) and says why. */
  signOut: (notice: string | null) => void
  /** Takes what another tab stored (a rotated pair, or a logout). */
  syncFromStorage: () => void
}

/** Refresh this long before the access token expires. */
export const REFRESH_AHEAD_MS = 60_000

export const TOKEN_VALIDATION_FAILED = 'Token validation failed: sign in again.'

export interface AuthDeps {
  fetch: typeof fetch
  storage: Storage
  now: () => number
  apiBase: string
  /** Web Locks: tabs of one browser share the refresh token, so only one may rotate it at a time. */
  locks?: { request: <T>(name: string, callback: () => Promise<T>) => Promise<T> }
}

const SESSION_ENDED = 'Your session ended: sign in again.'

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

export function createAuthStore(deps: AuthDeps) {
  let refreshing: Promise<void> | null = null
  let timer: ReturnType<typeof setTimeout> | null = null

  const post = (path: string, body: unknown) =>
    deps.fetch(`${deps.apiBase}${path}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
    })

  return create<AuthState>()((set, get) => {
    const schedule = (token: string) => {
      if (timer) clearTimeout(timer)
      const exp = expiresAt(token) ?? deps.now() + authConfig.tokenExpiration
      const due = Math.max(exp - REFRESH_AHEAD_MS - deps.now(), 0)
      timer = setTimeout(() => {
        void get()
          .refreshAuth()
          .catch(() => undefined)
      }, due)
    }

    const adopt = (token: string, refreshToken: string, user: User) => {
      set({ token, refreshToken, user, isAuthenticated: true, notice: null })
      schedule(token)
    }

    const accept = (t: TokenResponse) => {
      const user = userFromToken(t.access_token)
      if (!user) throw new ApiError({ status: 401, title: 'Unauthorized', detail: TOKEN_VALIDATION_FAILED })
      deps.storage.setItem(authConfig.tokenKey, t.access_token)
      deps.storage.setItem(authConfig.refreshTokenKey, t.refresh_token)
      adopt(t.access_token, t.refresh_token, user)
    }

    const withLock = <T,>(f: () => Promise<T>): Promise<T> =>
      deps.locks ? deps.locks.request('wfe-auth-refresh', f) : f()

    const signOut = (notice: string | null) => {
      if (timer) clearTimeout(timer)
      timer = null
      deps.storage.removeItem(authConfig.tokenKey)
      deps.storage.removeItem(authConfig.refreshTokenKey)
      set({ token: null, refreshToken: null, user: null, isAuthenticated: false, notice })
    }

    const storedToken = deps.storage.getItem(authConfig.tokenKey)
    const storedRefresh = deps.storage.getItem(authConfig.refreshTokenKey)
    const storedUser = storedToken ? userFromToken(storedToken) : null

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
          // Revokes the whole refresh family; the access token dies within the hour anyway.
          await post('/auth/logout', { refresh_token: refreshToken }).catch(() => undefined)
        }
      },

      // One refresh at a time: concurrent 401s share it, and a spent refresh token is never
      // sent twice (the server would revoke the family as a replay).
      refreshAuth: () => {
        if (refreshing) return refreshing
        const held = get().refreshToken
        if (!held) {
          signOut(SESSION_ENDED)
          return Promise.reject(new ApiError({ status: 401, title: 'Unauthorized', detail: 'not signed in' }))
        }
        refreshing = (async () => {
          try {
            await withLock(async () => {
              // Storage is the truth shared by every tab: another one may have rotated the pair
              // (or logged out) while this one waited. Spending a rotated refresh token again would
              // make the server revoke the whole family.
              const storedRefresh = deps.storage.getItem(authConfig.refreshTokenKey)
              const storedToken = deps.storage.getItem(authConfig.tokenKey)
              if (!storedRefresh) {
                signOut(SESSION_ENDED)
                throw new ApiError({ status: 401, title: 'Unauthorized', detail: 'signed out' })
              }
              if (storedRefresh !== held && storedToken) {
                const user = userFromToken(storedToken)
                const exp = expiresAt(storedToken)
                if (user && exp !== null && exp - deps.now() > REFRESH_AHEAD_MS) {
                  adopt(storedToken, storedRefresh, user)
                  return
                }
              }
              const res = await post('/auth/refresh', { refresh_token: storedRefresh })
              if (res.status === 401 || res.status === 400 || res.status === 403) {
                const problem = await problemFrom(res)
                signOut(SESSION_ENDED)
                throw problem
              }
              if (!res.ok) throw await problemFrom(res)
              accept((await res.json()) as TokenResponse)
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
        const user = token ? userFromToken(token) : null
        if (!token || !refreshToken || !user) {
          if (get().isAuthenticated) signOut(null)
          return
        }
        if (token !== get().token || refreshToken !== get().refreshToken) adopt(token, refreshToken, user)
      },

      restore: async () => {
        const { token, refreshToken } = get()
        if (!token) {
          // Something was stored but does not decode: the seed's "Token validation failed".
          if (deps.storage.getItem(authConfig.tokenKey) || deps.storage.getItem(authConfig.refreshTokenKey)) {
            signOut(TOKEN_VALIDATION_FAILED)
          }
          return
        }
        try {
          const current = await get().validToken()
          const res = await deps.fetch(`${deps.apiBase}/auth/me`, {
            headers: { authorization: `Bearer ${current}` },
          })
          if (res.status === 401 && refreshToken) {
            await get().refreshAuth()
            const again = await deps.fetch(`${deps.apiBase}/auth/me`, {
              headers: { authorization: `Bearer ${get().token}` },
            })
            if (!again.ok) throw await problemFrom(again)
          } else if (!res.ok) {
            throw await problemFrom(res)
          }
          schedule(get().token as string)
        } catch (e) {
          // Unreachable API: keep the tokens, the screens say what is wrong.
          if (e instanceof ApiError && (e.status === 401 || e.status === 403)) signOut(TOKEN_VALIDATION_FAILED)
          else if (!(e instanceof TypeError)) signOut(TOKEN_VALIDATION_FAILED)
        }
      },

      validToken: async () => {
        const { token } = get()
        if (!token) return null
        const exp = expiresAt(token)
        if (exp !== null && exp - deps.now() < REFRESH_AHEAD_MS) {
          await get().refreshAuth()
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
