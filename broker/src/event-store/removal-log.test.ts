import { describe, it, expect } from 'vitest'
import { MAX_RUN_POSITIONS, MAX_RUNS, RemovalLog } from './removal-log.js'

/** One commit removing `positions` of queue (svc, ev) for `reason`. */
function commit (log: RemovalLog, positions: readonly number[], reason: 'pushedOut' | 'expired' = 'pushedOut', service = 'svc'): void {
  log.begin()
  for (const p of positions) log.record(service, 'ev', null, p, reason)
  log.end()
}

const range = (from: number, to: number): number[] => Array.from({ length: to - from + 1 }, (_, i) => from + i)
const q = { event: 'ev', services: null, recipient: null }

describe('[CLI-GAP-1] RemovalLog', () => {
  it('counts exactly above a position inside a listed run, and nothing at or below the newest removal', () => {
    const log = new RemovalLog()
    commit(log, range(1, 10))
    commit(log, range(11, 12), 'expired')
    expect(log.gap({ ...q, after: 4, sinceEpoch: 0 })).toMatchObject({ missed: 8, exact: true, pushedOut: 6, expired: 2, upTo: 12, services: ['svc'] })
    expect(log.gap({ ...q, after: 12, sinceEpoch: 0 })).toBe(null)
    expect(log.gap({ ...q, after: 0, sinceEpoch: log.epochOf('ev') })).toBe(null)
  })

  it('a run too long to list, straddled by the position, counts as "at least 1"', () => {
    const log = new RemovalLog()
    commit(log, range(1, MAX_RUN_POSITIONS + 10))
    expect(log.gap({ ...q, after: 5, sinceEpoch: 0 })).toMatchObject({ missed: 1, exact: false })
    expect(log.gap({ ...q, after: 0, sinceEpoch: 0 })).toMatchObject({ missed: MAX_RUN_POSITIONS + 10, exact: true })
  })

  it('keeps at most MAX_RUNS runs per queue, merging the oldest: totals stay exact for a position before them all', () => {
    const log = new RemovalLog()
    for (let i = 0; i < MAX_RUNS * 4; i++) commit(log, [i * 2 + 1, i * 2 + 2])
    expect(log.gap({ ...q, after: 0, sinceEpoch: 0 })).toMatchObject({ missed: MAX_RUNS * 8, exact: true, upTo: MAX_RUNS * 8 })
    // a later epoch than the oldest merged runs: only what is wholly newer counts, a lower bound
    const g = log.gap({ ...q, after: 0, sinceEpoch: 3 })
    expect(g?.missed).toBeLessThanOrEqual(MAX_RUNS * 8 - 6)
    expect(g?.missed).toBeGreaterThan(0)
  })

  it('filters by service', () => {
    const log = new RemovalLog()
    commit(log, [1, 2], 'pushedOut', 'a')
    commit(log, [3], 'pushedOut', 'b')
    expect(log.gap({ ...q, services: new Set(['b']), after: 0, sinceEpoch: 0 })).toMatchObject({ missed: 1, services: ['b'] })
    expect(log.gap({ ...q, services: new Set(['c']), after: 0, sinceEpoch: 0 })).toBe(null)
  })
})
