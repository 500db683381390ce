// A start form generated from a workflow's input JSON Schema: one field per top-level property
// (strings, numbers, integers, booleans, enums), anything else edited as JSON.
export type FieldKind = 'string' | 'number' | 'integer' | 'boolean' | 'enum' | 'json'

export interface Field {
  name: string
  kind: FieldKind
  required: boolean
  label: string
  description?: string
  options?: string[]
  initial: string | boolean
}

type Schema = Record<string, unknown>

function asSchema(v: unknown): Schema | null {
  return v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Schema) : null
}

function typeOf(s: Schema): string | undefined {
  const t = s.type
  if (typeof t === 'string') return t
  if (Array.isArray(t)) return t.find((x) => x !== 'null') as string | undefined
  return undefined
}

/** Null when the schema is not an object with properties: the caller offers a JSON editor. */
export function fieldsOf(schema: unknown): Field[] | null {
  const s = asSchema(schema)
  const props = s ? asSchema(s.properties) : null
  if (!s || !props || (s.type !== undefined && typeOf(s) !== 'object')) return null
  const required = new Set(Array.isArray(s.required) ? (s.required as string[]) : [])
  return Object.entries(props).map(([name, raw]) => {
    const p = asSchema(raw) ?? {}
    const base = {
      name,
      required: required.has(name),
      label: typeof p.title === 'string' ? p.title : name,
      description: typeof p.description === 'string' ? p.description : undefined,
    }
    if (Array.isArray(p.enum) && p.enum.every((x) => typeof x === 'string')) {
      const options = p.enum as string[]
      return { ...base, kind: 'enum', options, initial: typeof p.default === 'string' ? p.default : '' }
    }
    const t = typeOf(p)
    if (t === 'string' || t === 'number' || t === 'integer') {
      const d = p.default
      return { ...base, kind: t, initial: d === undefined || d === null ? '' : String(d) }
    }
    if (t === 'boolean') return { ...base, kind: 'boolean', initial: p.default === true }
    return { ...base, kind: 'json', initial: p.default === undefined ? '' : JSON.stringify(p.default, null, 2) }
  })
}

export interface Built {
  value: Record<string, unknown>
  /** Field name → what is wrong with it. */
  errors: Record<string, string>
}

/** Turns the form's raw values into the execution input; empty optional fields are left out. */
export function buildInput(fields: Field[], raw: Record<string, string | boolean>): Built {
  const value: Record<string, unknown> = {}
  const errors: Record<string, string> = {}
  for (const f of fields) {
    const r = raw[f.name] ?? f.initial
    if (f.kind === 'boolean') {
      value[f.name] = r === true
      continue
    }
    const text = typeof r === 'string' ? r : ''
    if (text.trim() === '') {
      if (f.required) errors[f.name] = `${f.label} is required`
      continue
    }
    switch (f.kind) {
      case 'string':
      case 'enum':
        value[f.name] = text
        break
      case 'number':
      case 'integer': {
        const n = Number(text)
        if (!Number.isFinite(n)) errors[f.name] = `${f.label} must be a number`
        else if (f.kind === 'integer' && !Number.isInteger(n)) errors[f.name] = `${f.label} must be a whole number`
        else value[f.name] = n
        break
      }
      case 'json':
        try {
          value[f.name] = JSON.parse(text)
        } catch {
          errors[f.name] = `${f.label} must be JSON`
        }
        break
    }
  }
  return { value, errors }
}
