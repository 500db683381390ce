import { describe, expect, it, vi } from 'vitest'
import { authedFetch } from './rest'
import { problemFrom } from './problem'

function auth(tokens: string[]) {
  let i = 0
  return {
    validToken: vi.fn(async () => tokens[i] ?? null),
    refreshAuth: vi.fn(async () => {
      i += 1
    }),
    signOut: vi.fn(),
  }
}

describe('authed REST calls', () => {
  it('send the bearer token', async () => {
    const a = auth(['t1'])
    const f = vi.fn(async (_u: RequestInfo | URL, init?: RequestInit) => new Response(new Headers(init?.headers).get('authorization')))
    const res = await authedFetch('/api/x', {}, a, f as unknown as typeof fetch)
    expect(await res.text()).toBe('Bearer t1')
    expect(a.refreshAuth).not.toHaveBeenCalled()
  })

  it('refresh once on a 401 and retry with the new token', async () => {
    const a = auth(['old', 'new'])
    const seen: (string | null)[] = []
    const f = vi.fn(async (_u: RequestInfo | URL, init?: RequestInit) => {
      const token = new Headers(init?.headers).get('authorization')
      seen.push(token)
      return new Response(null, { status: token === 'Bearer new' ? 200 : 401 })
    })
    const res = await authedFetch('/api/x', {}, a, f as unknown as typeof fetch)
    expect(res.status).toBe(200)
    expect(seen).toEqual(['Bearer old', 'Bearer new'])
    expect(a.refreshAuth).toHaveBeenCalledTimes(1)
    expect(a.signOut).not.toHaveBeenCalled()
  })

  it('sign out after a second 401, without refreshing again', async () => {
    const a = auth(['old', 'new'])
    const f = vi.fn(async () => new Response(null, { status: 401 }))
    const res = await authedFetch('/api/x', {}, a, f as unknown as typeof fetch)
    expect(res.status).toBe(401)
    expect(f).toHaveBeenCalledTimes(2)
    expect(a.refreshAuth).toHaveBeenCalledTimes(1)
    expect(a.signOut).toHaveBeenCalledTimes(1)
  })
})

describe('problems', () => {
  it('carry the detail and the field pointers of a problem+json answer', async () => {
    const res = new Response(
      JSON.stringify({
        type: 'https://workflow-engine.dev/problems/invalid-definition',
        title: 'Bad request',
        status: 400,
        detail: 'the definition is invalid',
        request_id: 'req-1',
        errors: [{ pointer: '/start', message: 'unknown step' }, { bogus: 1 }],
      }),
      { status: 400, headers: { 'content-type': 'application/problem+json' } },
    )
    const e = await problemFrom(res)
    expect(e.message).toBe('the definition is invalid')
    expect(e.status).toBe(400)
    expect(e.problems).toEqual([{ pointer: '/start', message: 'unknown step' }])
    expect(e.requestId).toBe('req-1')
  })

  it('still say something when the body is not JSON', async () => {
    const e = await problemFrom(new Response('<html>bad gateway</html>', { status: 502, statusText: 'Bad Gateway' }))
    expect(e.message).toBe('Bad Gateway')
  })
})
