import { describe, it, expect } from 'vitest'
import { EventStats } from './event-stats.js'
import { RateMeter } from './rate-meter.js'
import { renderSummary } from './summary.js'
import { stripStyle } from './style.js'

const ONLINE = { state: 'online', lastError: null } as const

describe('RateMeter', () => {
  it('counts events per second over the time so far, at least one second', () => {
    const m = new RateMeter(0)
    expect(m.rate(0)).toBe(0)
    m.record(10)
    expect(m.rate(10)).toBe(1)
    for (let t = 100; t <= 1000; t += 100) m.record(t)
    expect(m.rate(1000)).toBe(11)
    expect(m.rate(2000)).toBe(5.5)
  })

  it('takes a steady stream at its rate, and forgets what left the window', () => {
    const m = new RateMeter(0, { windowMs: 5000, buckets: 10 })
    for (let t = 0; t <= 20_000; t += 100) m.record(t)
    const r = m.rate(20_000)
    expect(r).toBeGreaterThan(9.5)
    expect(r).toBeLessThan(10.5)
    expect(m.rate(30_000)).toBe(0)
  })

  it('reuses a bucket for a later slot without carrying its old count', () => {
    const m = new RateMeter(0, { windowMs: 5000, buckets: 10 })
    m.record(0, 100)
    m.record(5000) // same ring slot, ten buckets later
    expect(m.rate(5000) * 4.5).toBeCloseTo(1)
  })

  it('refuses a window it cannot cut into buckets', () => {
    expect(() => new RateMeter(0, { buckets: 0 })).toThrow(RangeError)
    expect(() => new RateMeter(0, { windowMs: 5, buckets: 10 })).toThrow(RangeError)
  })
})

describe('EventStats', () => {
  it('counts in total and per event, declared names first at 0', () => {
    const s = new EventStats(0, { names: ['alarms', 'temperature'] })
    s.record('temperature', 10)
    s.record('readings', 20)
    s.record('temperature', 30)
    const v = s.view(1000)
    expect(v.total).toBe(3)
    expect(v.perEvent).toEqual([['alarms', 0], ['temperature', 2], ['readings', 1]])
  })

  it('keeps at most maxNames names, the rest under "other"', () => {
    const s = new EventStats(0, { maxNames: 2 })
    for (const n of ['a', 'b', 'c', 'd', 'a']) s.record(n, 0)
    expect(s.view(0).perEvent).toEqual([['a', 2], ['b', 1], ['other', 2]])
  })

  it('counts a return online after having been online as a reconnect, and how long it was down', () => {
    const s = new EventStats(0)
    expect(s.view(300)).toMatchObject({ state: 'connecting', downForMs: 300, reconnects: 0 })
    s.connection(ONLINE, 400)
    expect(s.view(500)).toMatchObject({ state: 'online', downForMs: null, reconnects: 0 })
    const lost = { code: 'CONNECTION_LOST', message: 'connect ECONNREFUSED' }
    s.connection({ state: 'offline', lastError: lost }, 1000)
    s.connection({ state: 'connecting', lastError: lost }, 1100)
    s.connection({ state: 'offline', lastError: lost }, 1200)
    expect(s.view(4000)).toMatchObject({ state: 'offline', downForMs: 3000, lastError: lost, reconnects: 0 })
    s.connection(ONLINE, 5000)
    s.connection(ONLINE, 5001)
    expect(s.view(6000)).toMatchObject({ state: 'online', reconnects: 1 })
  })
})

describe('renderSummary', () => {
  it('shows state, total, rate, per-event counts', () => {
    const s = new EventStats(0, { names: ['alarms', 'temperature'] })
    s.connection(ONLINE, 0)
    for (let i = 0; i < 1200; i++) s.record('alarms', 4000)
    for (let i = 0; i < 34; i++) s.record('temperature', 4000)
    // 1,234 events in the 4.5 s the window's buckets cover at 5 s
    expect(renderSummary(s.view(5000))).toBe('online · 1,234 events · 274.2/s · alarms 1,200 · temperature 34')
  })

  it('shows how long the connection is down, why, and the reconnects', () => {
    const s = new EventStats(0, { names: ['alarms'] })
    s.connection(ONLINE, 0)
    s.connection(ONLINE, 0)
    s.record('alarms', 0)
    s.connection({ state: 'offline', lastError: { code: 'CONNECTION_LOST', message: 'connect\nECONNREFUSED 127.0.0.1:1883' } }, 1000)
    s.connection({ state: 'connecting', lastError: { code: 'CONNECTION_LOST', message: 'connect\nECONNREFUSED 127.0.0.1:1883' } }, 2000)
    s.connection(ONLINE, 3000)
    s.connection({ state: 'offline', lastError: { code: 'CONNECTION_LOST', message: 'connect\nECONNREFUSED 127.0.0.1:1883' } }, 4000)
    expect(renderSummary(s.view(16_000))).toBe('offline 12s (CONNECTION_LOST: connect ECONNREFUSED 127.0.0.1:1883) · 1 event · 0.0/s · alarms 1 · reconnects 1')
  })

  it('colors without changing the text', () => {
    const s = new EventStats(0, { names: ['alarms'] })
    const colored = renderSummary(s.view(100), { color: true })
    expect(colored).toContain('\x1b[')
    expect(stripStyle(colored)).toBe(renderSummary(s.view(100)))
    expect(stripStyle(colored)).toBe('connecting 100ms · 0 events · 0.0/s · alarms 0')
  })
})
