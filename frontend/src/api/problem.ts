// Errors as the engine reports them: RFC 9457 problems over REST, coded errors over GraphQL.
export interface FieldProblem {
  pointer: string
  message: string
}

export class ApiError extends Error {
  readonly status: number
  readonly title: string
  readonly code: string | undefined
  readonly problems: FieldProblem[]
  /** The server's request id, for support ("quote the request id"). */
  readonly requestId: string | undefined

  constructor(opts: {
    status: number
    title: string
    detail: string
    code?: string
    problems?: FieldProblem[]
    requestId?: string
  }) {
    super(opts.detail)
    this.name = 'ApiError'
    this.status = opts.status
    this.title = opts.title
    this.code = opts.code
    this.problems = opts.problems ?? []
    this.requestId = opts.requestId
  }
}

function isFieldProblem(v: unknown): v is FieldProblem {
  return (
    typeof v === 'object' &&
    v !== null &&
    typeof (v as FieldProblem).pointer === 'string' &&
    typeof (v as FieldProblem).message === 'string'
  )
}

export function fieldProblems(v: unknown): FieldProblem[] {
  return Array.isArray(v) ? v.filter(isFieldProblem) : []
}

/** Builds an ApiError from a non-2xx response, whatever its body. */
export async function problemFrom(res: Response): Promise<ApiError> {
  let body: Record<string, unknown> = {}
  try {
    const parsed = (await res.json()) as unknown
    if (parsed !== null && typeof parsed === 'object') body = parsed as Record<string, unknown>
  } catch {
    // not JSON: a proxy's or gateway's page
  }
  const title = typeof body.title === 'string' ? body.title : res.statusText || `HTTP ${res.status}`
  const detail = typeof body.detail === 'string' ? body.detail : title
  // The engine lists field problems under `errors` (each with its JSON pointer).
  return new ApiError({
    status: res.status,
    title,
    detail,
    problems: fieldProblems(body.errors ?? body.problems),
    requestId: typeof body.request_id === 'string' ? body.request_id : (res.headers.get('x-request-id') ?? undefined),
  })
}

/** A message fit for the screen from anything thrown. */
export function messageOf(e: unknown): string {
  if (e instanceof Error) return e.message
  return String(e)
}

/** Field problems a GraphQL error carries (BAD_USER_INPUT puts them in `extensions.problems`). */
export function graphqlProblems(e: unknown): FieldProblem[] {
  const errors = (e as { errors?: { extensions?: { problems?: unknown } }[] } | null)?.errors ?? []
  return errors.flatMap((x) => fieldProblems(x.extensions?.problems))
}

/** The request id a failed call carries, REST or GraphQL. */
export function requestIdOf(e: unknown): string | undefined {
  if (e instanceof ApiError) return e.requestId
  const errors = (e as { errors?: { extensions?: { requestId?: unknown; request_id?: unknown } }[] } | null)?.errors ?? []
  const id = errors.map((x) => x.extensions?.requestId ?? x.extensions?.request_id).find((v) => typeof v === 'string')
  return id as string | undefined
}
