// A definition's steps as a graph laid out top to bottom (dagre): edges for `next`, condition
// branches, parallel branches, map iterators and catches.
import dagre from '@dagrejs/dagre'

export interface GraphNode {
  id: string
  type: string
  x: number
  y: number
  width: number
  height: number
}

export interface GraphEdge {
  from: string
  to: string
  label?: string
  points: { x: number; y: number }[]
}

export interface Laid {
  nodes: GraphNode[]
  edges: GraphEdge[]
  width: number
  height: number
}

type Obj = Record<string, unknown>
const obj = (v: unknown): Obj => (v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Obj) : {})
const str = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined)

export function edgesOf(definition: unknown): { nodes: { id: string; type: string }[]; edges: { from: string; to: string; label?: string }[] } {
  const steps = obj(obj(definition).steps)
  const nodes = Object.entries(steps).map(([id, s]) => ({ id, type: str(obj(s).type) ?? '?' }))
  const edges: { from: string; to: string; label?: string }[] = []
  const add = (from: string, to: unknown, label?: string) => {
    if (typeof to === 'string' && Object.hasOwn(steps, to)) edges.push({ from, to, label })
  }
  for (const [id, raw] of Object.entries(steps)) {
    const s = obj(raw)
    add(id, s.next)
    if (s.type === 'condition') {
      for (const b of Array.isArray(s.branches) ? s.branches : []) add(id, obj(b).next, str(obj(b).when))
      add(id, s.default, 'default')
    }
    if (s.type === 'parallel') {
      ;(Array.isArray(s.branches) ? s.branches : []).forEach((b, i) => add(id, obj(b).start, `branch ${i + 1}`))
    }
    if (s.type === 'map') add(id, obj(s.iterator).start, 'each item')
    for (const c of Array.isArray(s.catch) ? s.catch : []) add(id, obj(c).next, 'catch')
  }
  return { nodes, edges }
}

export const NODE_WIDTH = 168
export const NODE_HEIGHT = 48

export function layout(definition: unknown): Laid {
  const { nodes, edges } = edgesOf(definition)
  const g = new dagre.graphlib.Graph({ multigraph: true })
  g.setGraph({ rankdir: 'TB', nodesep: 28, ranksep: 44, marginx: 8, marginy: 8 })
  g.setDefaultEdgeLabel(() => ({}))
  for (const n of nodes) g.setNode(n.id, { width: NODE_WIDTH, height: NODE_HEIGHT })
  edges.forEach((e, i) => g.setEdge(e.from, e.to, { label: e.label, width: e.label ? 60 : 0, height: e.label ? 14 : 0 }, String(i)))
  dagre.layout(g)
  const graph = g.graph()
  return {
    nodes: nodes.map((n) => {
      const p = g.node(n.id)
      return { ...n, x: p.x, y: p.y, width: NODE_WIDTH, height: NODE_HEIGHT }
    }),
    edges: edges.map((e, i) => ({ ...e, points: g.edge({ v: e.from, w: e.to, name: String(i) }).points ?? [] })),
    width: graph.width ?? 0,
    height: graph.height ?? 0,
  }
}

/** One state per definition step from the execution's step instances (a map runs a step many times). */
export function stepStates(steps: { step: string; status: string }[]): Record<string, string> {
  const rank = ['FAILED', 'AWAITING_APPROVAL', 'RUNNING', 'RETRY_PENDING', 'RETRY_DUE', 'SCHEDULED', 'CAUGHT', 'SUCCEEDED', 'ABANDONED']
  const out: Record<string, string> = {}
  for (const s of steps) {
    const cur = out[s.step]
    if (cur === undefined || rank.indexOf(s.status) < rank.indexOf(cur)) out[s.step] = s.status
  }
  return out
}
