import { describe, expect, it } from 'vitest'
import { lineOfPointer, parseDefinition, placeProblems, render } from './definition'

const yaml = `name: demo
start: fetch
steps:
  fetch:
    type: http
    url: "https://example.com/{{ input.id }}"
    next: decide
  decide:
    type: condition
    branches:
      - when: steps.fetch.output.ok
        next: done
      - when: "true"
        next: nowhere
    default: done
  done:
    type: succeed
`

describe('the definition editor places problems on their lines', () => {
  it('maps pointers through maps and sequences to the key line', () => {
    expect(lineOfPointer(yaml, '/start')).toBe(2)
    expect(lineOfPointer(yaml, '/steps/fetch/url')).toBe(6)
    expect(lineOfPointer(yaml, '/steps/decide/branches/1/next')).toBe(14)
    expect(lineOfPointer(yaml, '/steps/decide/branches/1')).toBe(13)
  })

  it('puts a missing property on its deepest existing parent, and the document on line 1', () => {
    expect(lineOfPointer(yaml, '/steps/done/output')).toBe(16)
    expect(lineOfPointer(yaml, '/steps/ghost/type')).toBe(3)
    expect(lineOfPointer(yaml, '')).toBe(1)
  })

  it('unescapes ~1 and ~0 in pointer tokens', () => {
    const text = 'headers:\n  a/b: 1\n  c~d: 2\n'
    expect(lineOfPointer(text, '/headers/a~1b')).toBe(2)
    expect(lineOfPointer(text, '/headers/c~0d')).toBe(3)
  })

  it('places pointers in JSON text too', () => {
    const json = render(parseDefinition(yaml, 'yaml').value, 'json')
    const line = lineOfPointer(json, '/steps/decide/default')
    expect(json.split('\n')[line - 1]).toContain('"default"')
  })

  it('sorts server problems by line', () => {
    const placed = placeProblems(yaml, [
      { pointer: '/steps/decide/branches/1/next', message: 'unknown step `nowhere`' },
      { pointer: '/start', message: 'x' },
    ])
    expect(placed.map((p) => p.line)).toEqual([2, 14])
    expect(placed[1].message).toBe('unknown step `nowhere`')
  })

  it('reports YAML syntax errors at their line without a value', () => {
    const broken = 'name: demo\nsteps:\n  a: [1, 2\n  b: 3\n'
    const parsed = parseDefinition(broken, 'yaml')
    expect(parsed.value).toBeUndefined()
    expect(parsed.errors.length).toBeGreaterThan(0)
    expect(parsed.errors[0].line).toBeGreaterThanOrEqual(3)
  })

  it('refuses duplicate keys rather than keeping the last one silently', () => {
    const parsed = parseDefinition('name: a\nname: b\n', 'yaml')
    expect(parsed.errors[0].line).toBe(2)
  })

  it('reports JSON syntax errors at their line', () => {
    const parsed = parseDefinition('{\n  "name": "x",\n  "start": \n}\n', 'json')
    expect(parsed.value).toBeUndefined()
    expect(parsed.errors[0].line).toBe(4)
  })

  it('round-trips between YAML and JSON', () => {
    const value = parseDefinition(yaml, 'yaml').value
    expect(parseDefinition(render(value, 'json'), 'json').value).toEqual(value)
    expect(parseDefinition(render(value, 'yaml'), 'yaml').value).toEqual(value)
  })
})

describe('hostile YAML', () => {
  it('an alias bomb is refused, not expanded', () => {
    const bomb = ['a: &a [x, x, x, x, x, x, x, x, x, x]']
    for (let i = 1; i < 12; i++) bomb.push(`${String.fromCharCode(97 + i)}: &${String.fromCharCode(97 + i)} [${Array(10).fill('*' + String.fromCharCode(96 + i)).join(', ')}]`)
    const parsed = parseDefinition(bomb.join('\n') + '\n', 'yaml')
    expect(parsed.value).toBeUndefined()
    expect(parsed.errors.length).toBe(1)
  })
})
