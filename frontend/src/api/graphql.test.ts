import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { GATEWAY_UNREACHABLE, graphqlFetch } from './graphql'
import { useAuth } from '../auth/store'

function jwt(exp: number): string {
  const b64 = (o: unknown) => btoa(JSON.stringify(o)).replace(/=+$/, '')
  return `${b64({ alg: 'HS256' })}.${b64({ sub: 'ada', tenant: 't', roles: [], exp })}.s`
}

const unauthenticated = JSON.stringify({ data: null, errors: [{ message: 'sign in', extensions: { code: 'UNAUTHENTICATED' } }] })

beforeEach(() => {
  localStorage.clear()
  localStorage.setItem('auth_token', jwt(Math.floor(Date.now() / 1000) + 3600))
  localStorage.setItem('refresh_token', 'r1')
  useAuth.getState().syncFromStorage()
})
afterEach(() => vi.unstubAllGlobals())

describe('GraphQL transport', () => {
  it('says the gateway is unreachable when nothing answers', async () => {
    vi.stubGlobal('fetch', vi.fn(async () => Promise.reject(new TypeError('Failed to fetch'))))
    await expect(graphqlFetch('/graphql', { method: 'POST', body: '{}' })).rejects.toThrow(GATEWAY_UNREACHABLE)
  })

  it("passes on the proxy's problem detail for a 502", async () => {
    const detail = 'GraphQL gateway unreachable: ensure the graphql-gateway service is running on port 4010'
    vi.stubGlobal('fetch', vi.fn(async () => new Response(JSON.stringify({ title: 'Bad Gateway', status: 502, detail }), { status: 502 })))
    await expect(graphqlFetch('/graphql', { method: 'POST', body: '{}' })).rejects.toThrow(detail)
  })

  it('refreshes once on UNAUTHENTICATED and retries with the new token', async () => {
    const fresh = jwt(Math.floor(Date.now() / 1000) + 7200)
    const seen: string[] = []
    vi.stubGlobal(
      'fetch',
      vi.fn(async (url: string, init?: RequestInit) => {
        if (url.endsWith('/auth/refresh')) return new Response(JSON.stringify({ access_token: fresh, refresh_token: 'r2', expires_in: 3600 }))
        const auth = new Headers(init?.headers).get('authorization') ?? ''
        seen.push(auth)
        return new Response(auth === `Bearer ${fresh}` ? '{"data":{"me":{"id":"ada"}}}' : unauthenticated)
      }),
    )
    const res = await graphqlFetch('/graphql', { method: 'POST', body: '{}' })
    expect(await res.json()).toEqual({ data: { me: { id: 'ada' } } })
    expect(seen).toHaveLength(2)
    expect(useAuth.getState().refreshToken).toBe('r2')
  })

  it('signs out when the retry is refused too', async () => {
    vi.stubGlobal(
      'fetch',
      vi.fn(async (url: string) =>
        url.endsWith('/auth/refresh')
          ? new Response(JSON.stringify({ access_token: jwt(Math.floor(Date.now() / 1000) + 7200), refresh_token: 'r2', expires_in: 3600 }))
          : new Response(unauthenticated),
      ),
    )
    await graphqlFetch('/graphql', { method: 'POST', body: '{}' })
    expect(useAuth.getState().isAuthenticated).toBe(false)
    expect(localStorage.getItem('auth_token')).toBeNull()
  })
})
