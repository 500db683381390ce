// How numbers, money, durations and times read on screen.
export function usd(n: number | null | undefined): string {
  if (n === null || n === undefined) return '—'
  if (n === 0) return '$0'
  if (Math.abs(n) < 0.01) return `$${n.toFixed(6)}`
  return `$${n.toFixed(2)}`
}

export function tokens(n: number | null | undefined): string {
  return n === null || n === undefined ? '—' : n.toLocaleString('en-US')
}

export function duration(ms: number | null | undefined): string {
  if (ms === null || ms === undefined) return '—'
  if (ms < 1000) return `${ms} ms`
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`
  const m = Math.floor(ms / 60_000)
  return `${m} min ${Math.round((ms % 60_000) / 1000)} s`
}

export function when(iso: string | null | undefined): string {
  if (!iso) return '—'
  const d = new Date(iso)
  return Number.isNaN(d.getTime()) ? iso : d.toLocaleString()
}
