// Apollo Client against the federation gateway. Tokens come from the auth store; an
// UNAUTHENTICATED answer (the gateway passes the subgraph's code through with HTTP 200) refreshes
// once and retries, like a REST 401.
import { ApolloClient, HttpLink, InMemoryCache } from '@apollo/client'
import { GRAPHQL_URL } from '../config'
import { useAuth } from '../auth/store'
import { authedFetch } from './rest'

export const GATEWAY_UNREACHABLE =
  'GraphQL gateway unreachable: ensure the graphql-gateway service is running on port 4000'

function unauthenticated(body: unknown): boolean {
  const errors = (body as { errors?: { extensions?: { code?: string } }[] } | null)?.errors
  return Array.isArray(errors) && errors.some((e) => e.extensions?.code === 'UNAUTHENTICATED')
}

export async function graphqlFetch(input: RequestInfo | URL, init?: RequestInit): Promise<Response> {
  const url = typeof input === 'string' ? input : input instanceof URL ? input.href : input.url
  let res: Response
  try {
    res = await authedFetch(url, init)
  } catch (e) {
    // Only a failed connection means the gateway (or the origin in front of it) is not there;
    // an aborted request or a refused refresh says so itself.
    if (e instanceof TypeError) throw new Error(GATEWAY_UNREACHABLE)
    throw e
  }
  if (res.status === 502 || res.status === 503 || res.status === 504) {
    const text = await res.text()
    let detail = GATEWAY_UNREACHABLE
    try {
      const p = JSON.parse(text) as { detail?: unknown; errors?: unknown }
      if (p.errors) return new Response(text, { status: res.status, headers: res.headers })
      if (typeof p.detail === 'string') detail = p.detail
    } catch {
      // a proxy's page
    }
    throw new Error(detail)
  }
  if (!res.ok) return res
  const text = await res.text()
  let body: unknown = null
  try {
    body = JSON.parse(text)
  } catch {
    // handed to Apollo as is; it reports the parse error
  }
  if (!unauthenticated(body) || !useAuth.getState().isAuthenticated) {
    return new Response(text, { status: res.status, headers: res.headers })
  }
  try {
    await useAuth.getState().refreshAuth()
  } catch {
    return new Response(text, { status: res.status, headers: res.headers })
  }
  const again = await authedFetch(url, init)
  const againText = await again.text()
  try {
    if (unauthenticated(JSON.parse(againText))) useAuth.getState().signOut('Your session ended: sign in again.')
  } catch {
    // not JSON
  }
  return new Response(againText, { status: again.status, headers: again.headers })
}

export function createClient(): ApolloClient {
  return new ApolloClient({
    link: new HttpLink({ uri: GRAPHQL_URL, fetch: graphqlFetch }),
    cache: new InMemoryCache({
      typePolicies: {
        // Budgets have no id: one per workflow (or the tenant's), replaced whole.
        Budget: { keyFields: ['workflowId', 'period'] },
        Query: { fields: { budgets: { keyArgs: ['workflowId'] } } },
      },
    }),
    defaultOptions: { watchQuery: { fetchPolicy: 'cache-and-network' } },
  })
}
