import { describe, expect, it } from 'vitest'
import { edgesOf, layout, stepStates } from './graph'

const def = {
  start: 'fan',
  steps: {
    fan: { type: 'parallel', branches: [{ start: 'a' }, { start: 'b' }], next: 'each' },
    a: { type: 'template', template: 'x' },
    b: { type: 'http', url: 'http://x', catch: [{ next: 'oops' }] },
    each: { type: 'map', items: 'input.items', iterator: { start: 'item' }, next: 'pick' },
    item: { type: 'template', template: 'y' },
    pick: { type: 'condition', branches: [{ when: 'input.ok', next: 'ok' }], default: 'oops' },
    ok: { type: 'approval' },
    oops: { type: 'fail', error: 'E' },
  },
}

describe('the workflow graph', () => {
  it('draws next, branches, parallel, map and catch edges', () => {
    const { edges } = edgesOf(def)
    expect(edges).toEqual(
      expect.arrayContaining([
        { from: 'fan', to: 'each', label: undefined },
        { from: 'fan', to: 'a', label: 'branch 1' },
        { from: 'fan', to: 'b', label: 'branch 2' },
        { from: 'b', to: 'oops', label: 'catch' },
        { from: 'each', to: 'item', label: 'each item' },
        { from: 'pick', to: 'ok', label: 'input.ok' },
        { from: 'pick', to: 'oops', label: 'default' },
      ]),
    )
  })

  it('ignores edges to steps that do not exist (the editor draws half-written definitions)', () => {
    expect(edgesOf({ steps: { a: { type: 'template', next: 'ghost' } } }).edges).toEqual([])
    expect(edgesOf(null).nodes).toEqual([])
  })

  it('lays every step out without overlaps', () => {
    const g = layout(def)
    expect(g.nodes).toHaveLength(8)
    for (const a of g.nodes)
      for (const b of g.nodes)
        if (a !== b) expect(Math.abs(a.x - b.x) >= a.width || Math.abs(a.y - b.y) >= a.height).toBe(true)
  })

  it('colours a step run many times (a map) by its most telling state', () => {
    expect(
      stepStates([
        { step: 'item', status: 'SUCCEEDED' },
        { step: 'item', status: 'FAILED' },
        { step: 'item', status: 'RUNNING' },
        { step: 'ok', status: 'AWAITING_APPROVAL' },
      ]),
    ).toEqual({ item: 'FAILED', ok: 'AWAITING_APPROVAL' })
  })
})

describe('hostile step names', () => {
  it('do not reach into Object.prototype', () => {
    const g = edgesOf({ steps: { a: { type: 'template', next: 'constructor' }, b: { type: 'template', next: 'toString' } } })
    expect(g.edges).toEqual([])
    expect(() => layout({ steps: { a: { type: 'template', next: '__proto__' } } })).not.toThrow()
  })
})
