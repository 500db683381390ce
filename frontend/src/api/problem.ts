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

  constructor(opts: { status: number; title: string; detail: string; code?: string; problems?: FieldProblem[] }) {
    super(opts.detail)
    this.name = 'ApiError'
    this.status = opts.status
    this.title = opts.title
    this.code = opts.code
    this.problems = opts.problems ?? []
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
  return new ApiError({ status: res.status, title, detail, problems: fieldProblems(body.problems) })
}

/** A message fit for the screen from anything thrown. */
export function messageOf(e: unknown): string {
  if (e instanceof Error) return e.message
  return String(e)
}
