// The definition editor's text model: YAML or JSON in, a definition value out, and every problem
// (a syntax error, or a server-side validation problem with its JSON pointer) placed on its line.
import { parse as parseJsonc, printParseErrorCode, type ParseError } from 'jsonc-parser'
import { isMap, isPair, isScalar, isSeq, LineCounter, parseDocument, stringify, type Node } from 'yaml'

export type Format = 'yaml' | 'json'

export interface PlacedProblem {
  /** 1-based line in the text. */
  line: number
  pointer: string
  message: string
}

export interface Parsed {
  value: unknown
  /** Syntax errors, already placed. Empty when the text parsed. */
  errors: PlacedProblem[]
}

export function parseDefinition(text: string, format: Format): Parsed {
  if (format === 'json') {
    try {
      return { value: JSON.parse(text), errors: [] }
    } catch (e) {
      const at = jsonErrorLine(text)
      return {
        value: undefined,
        errors: [{ line: at?.line ?? 1, pointer: '', message: at ? `${at.message} (${syntaxMessage(e)})` : syntaxMessage(e) }],
      }
    }
  }
  const lc = new LineCounter()
  const doc = parseDocument(text, { lineCounter: lc, prettyErrors: false, uniqueKeys: true })
  if (doc.errors.length > 0) {
    return {
      value: undefined,
      errors: doc.errors.map((e) => ({
        line: lc.linePos(e.pos[0]).line,
        pointer: '',
        message: e.message.split('\n')[0],
      })),
    }
  }
  try {
    return { value: doc.toJS({ maxAliasCount: 100 }), errors: [] }
  } catch (e) {
    // Alias bombs and the like: refused here, before the server sees them.
    return { value: undefined, errors: [{ line: 1, pointer: '', message: syntaxMessage(e) }] }
  }
}

function syntaxMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e)
}

/** Where JSON.parse stopped, from a parser that reports offsets (engines' messages differ). */
function jsonErrorLine(text: string): { line: number; message: string } | null {
  const errors: ParseError[] = []
  parseJsonc(text, errors, { disallowComments: true, allowTrailingComma: false, allowEmptyContent: false })
  if (errors.length === 0) return null
  const e = errors[0]
  return { line: text.slice(0, e.offset).split('\n').length, message: printParseErrorCode(e.error) }
}

function unescapePointer(token: string): string {
  return token.replace(/~1/g, '/').replace(/~0/g, '~')
}

/**
 * The 1-based line a JSON pointer refers to in `text`: the line of its deepest key that exists
 * (a missing property is reported on its parent). JSON is parsed as YAML, whose positions hold
 * for JSON too.
 */
export function lineOfPointer(text: string, pointer: string): number {
  const lc = new LineCounter()
  const doc = parseDocument(text, { lineCounter: lc, prettyErrors: false })
  let node: unknown = doc.contents
  let offset = (doc.contents as Node | null)?.range?.[0] ?? 0
  const tokens = pointer === '' ? [] : pointer.replace(/^\//, '').split('/').map(unescapePointer)
  for (const token of tokens) {
    if (isMap(node)) {
      const pair = node.items.find((p) => isPair(p) && isScalar(p.key) && String(p.key.value) === token)
      if (!pair) break
      offset = (pair.key as Node).range?.[0] ?? offset
      node = pair.value
    } else if (isSeq(node)) {
      const item = node.items[Number(token)] as Node | undefined
      if (!item || !/^\d+$/.test(token)) break
      offset = item.range?.[0] ?? offset
      node = item
    } else {
      break
    }
  }
  return lc.linePos(offset).line
}

export function placeProblems(text: string, problems: { pointer: string; message: string }[]): PlacedProblem[] {
  return problems
    .map((p) => ({ ...p, line: lineOfPointer(text, p.pointer) }))
    .sort((a, b) => a.line - b.line)
}

/** Renders a definition value in the chosen format, for editing. */
export function render(value: unknown, format: Format): string {
  return format === 'json' ? JSON.stringify(value, null, 2) + '\n' : stringify(value, { lineWidth: 0 })
}

export const STARTER_YAML = `name: hello
description: Greets someone, then waits for a person to approve.
input_schema:
  type: object
  required: [who]
  properties:
    who:
      type: string
      description: Who to greet
start: greet
steps:
  greet:
    type: template
    template: "Hello, {{ input.who }}!"
    next: review
  review:
    type: approval
    prompt: Send the greeting?
outputs:
  greeting: "{{ steps.greet.output }}"
`
