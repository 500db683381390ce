// Where the app finds the engine. The defaults are same-origin paths that the dev and preview
// servers (vite.config.ts) and the local runner's web port proxy to the REST API and the gateway.
// The seed's REACT_APP_* names are honoured as aliases (vite.config.ts exposes that prefix).
const env = import.meta.env as Record<string, string | undefined>

function pick(...values: (string | undefined)[]): string | undefined {
  return values.find((v) => v !== undefined && v.trim() !== '')
}

export const API_BASE_URL = (pick(env.VITE_API_URL, env.REACT_APP_API_URL) ?? '/api').replace(/\/+$/, '')
export const GRAPHQL_URL = pick(env.VITE_GRAPHQL_URL, env.REACT_APP_GRAPHQL_URL) ?? '/graphql'

// The seed's auth configuration: storage keys and the access token's life.
export const authConfig = {
  tokenKey: 'auth_token',
  refreshTokenKey: 'refresh_token',
  tokenExpiration: 3_600_000,
} as const
