import { describe, expect, it } from 'vitest'
import { ConfigError, ManualClock } from '@herald/protocol'
import { AdminSessions } from './admin-sessions.js'

describe('admin sessions [OPS-DASH-3]', () => {
  it('gives each login its own random token, and knows its user until logout', () => {
    const s = new AdminSessions({}, new ManualClock())
    const a = s.create('alice')
    const b = s.create('alice')
    expect(a).not.toBe(b)
    expect(a).toMatch(/^[A-Za-z0-9_-]{43}$/)
    expect(s.use(a)).toBe('alice')
    expect(s.end(a)).toBe(true)
    expect(s.use(a)).toBeNull()
    expect(s.use(b)).toBe('alice')
    expect(s.use('made-up')).toBeNull()
    expect(s.use(undefined)).toBeNull()
  })

  it('ends a session unused for idleMs; each use restarts the idle time', () => {
    const clock = new ManualClock()
    const s = new AdminSessions({ idleMs: 10_000 }, clock)
    const a = s.create('alice')
    const b = s.create('carol')
    clock.advance(6000)
    expect(s.use(a)).toBe('alice')
    clock.advance(6000)
    expect(s.use(a)).toBe('alice')
    expect(s.use(b)).toBeNull()
    clock.advance(10_000)
    expect(s.use(a)).toBeNull()
    expect(s.size).toBe(0)
  })

  it('holds at most maxSessions: a new login drops the least recently used', () => {
    const s = new AdminSessions({ maxSessions: 2 }, new ManualClock())
    const a = s.create('a')
    const b = s.create('b')
    s.use(a)
    const c = s.create('c')
    expect(s.size).toBe(2)
    expect([s.use(a), s.use(b), s.use(c)]).toEqual(['a', null, 'c'])
  })

  it('ends every session of a user', () => {
    const s = new AdminSessions({}, new ManualClock())
    const a = s.create('alice')
    const b = s.create('bob')
    s.endUser('alice')
    expect([s.use(a), s.use(b)]).toEqual([null, 'bob'])
  })

  it('checks its options', () => {
    expect(() => new AdminSessions({ maxSessions: 0 })).toThrow(ConfigError)
    expect(() => new AdminSessions({ idleMs: 5 })).toThrow(/idleMs/)
  })
})
