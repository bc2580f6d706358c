import { describe, expect, it } from 'vitest'
import { backoffDelay } from './backoff.js'

const opts = { initialMs: 100, maxMs: 10_000 }
const fixed = (v: number) => (): number => v

describe('backoffDelay', () => {
  it('is base/2 for random 0, base for random 1 and 3/4 base for random 0.5', () => {
    expect(backoffDelay(0, opts, fixed(0))).toBe(50)
    expect(backoffDelay(0, opts, fixed(1))).toBe(100)
    expect(backoffDelay(0, opts, fixed(0.5))).toBe(75)
  })

  it('doubles the base with each attempt until it reaches maxMs', () => {
    const lows = Array.from({ length: 10 }, (_, attempt) => backoffDelay(attempt, opts, fixed(0)))
    const highs = Array.from({ length: 10 }, (_, attempt) => backoffDelay(attempt, opts, fixed(1)))
    const mids = Array.from({ length: 10 }, (_, attempt) => backoffDelay(attempt, opts, fixed(0.5)))
    expect(highs).toEqual([100, 200, 400, 800, 1600, 3200, 6400, 10_000, 10_000, 10_000])
    expect(lows).toEqual([50, 100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000])
    expect(mids).toEqual([75, 150, 300, 600, 1200, 2400, 4800, 7500, 7500, 7500])
  })

  it('stays capped (and finite) for very large attempt numbers', () => {
    for (const attempt of [30, 31, 100, 1100, 1_000_000, Number.MAX_SAFE_INTEGER]) {
      expect(backoffDelay(attempt, opts, fixed(1))).toBe(10_000)
      expect(backoffDelay(attempt, opts, fixed(0))).toBe(5000)
    }
  })

  it('a base that starts above maxMs is capped from the first attempt', () => {
    expect(backoffDelay(0, { initialMs: 60_000, maxMs: 1000 }, fixed(1))).toBe(1000)
    expect(backoffDelay(0, { initialMs: 60_000, maxMs: 1000 }, fixed(0))).toBe(500)
  })

  it('stays within [base/2, base] for any random value in [0, 1)', () => {
    let state = 7
    const rand = (): number => { state = (state * 1_103_515_245 + 12_345) % 2_147_483_648; return state / 2_147_483_648 }
    for (let attempt = 0; attempt < 40; attempt++) {
      const base = Math.min(opts.maxMs, opts.initialMs * 2 ** attempt)
      for (let i = 0; i < 200; i++) {
        const d = backoffDelay(attempt, opts, rand)
        expect(d).toBeGreaterThanOrEqual(base / 2)
        expect(d).toBeLessThanOrEqual(base)
        expect(Number.isInteger(d)).toBe(true)
      }
    }
  })

  it('uses Math.random by default and still stays within the bounds', () => {
    for (let i = 0; i < 100; i++) {
      const d = backoffDelay(3, opts)
      expect(d).toBeGreaterThanOrEqual(400)
      expect(d).toBeLessThanOrEqual(800)
    }
  })
})
