import { describe, expect, it } from 'vitest'
import { ConfigError, ManualClock } from '@herald/protocol'
import { LoginThrottle, addressKey, type LoginThrottleOptions } from './login-throttle.js'

/** A check the test resolves by hand, recording that it ran. */
class Check {
  runs = 0
  private pending: Array<(ok: boolean) => void> = []
  readonly fn = (): Promise<boolean> => {
    this.runs++
    return new Promise((resolve) => { this.pending.push(resolve) })
  }
  get waiting (): number { return this.pending.length }
  finish (ok: boolean): void { this.pending.shift()?.(ok) }
}

const right = (): Promise<boolean> => Promise.resolve(true)
const wrong = (): Promise<boolean> => Promise.resolve(false)

function make (options: LoginThrottleOptions = {}): { t: LoginThrottle, clock: ManualClock } {
  const clock = new ManualClock()
  return { t: new LoginThrottle(options, clock), clock }
}

/** Lets promise callbacks run. */
const settle = (): Promise<void> => new Promise((resolve) => { setImmediate(resolve) })

describe('LoginThrottle', () => {
  it('refuses an address without checking once its failure budget is spent, and forgives one failure per decay period', async () => {
    const { t, clock } = make({ failuresPerAddress: 3, failuresPerName: 100, failureDecayMs: 1000 })
    for (let i = 0; i < 3; i++) expect(await t.attempt('10.0.0.1', `u${i}`, wrong)).toBe('failed')
    let ran = 0
    const counted = (): Promise<boolean> => { ran++; return Promise.resolve(true) }
    expect(await t.attempt('10.0.0.1', 'alice', counted)).toBe('throttled')
    expect(ran).toBe(0)
    // other addresses are not affected
    expect(await t.attempt('10.0.0.2', 'alice', counted)).toBe('ok')
    clock.advance(999)
    expect(await t.attempt('10.0.0.1', 'alice', counted)).toBe('throttled')
    clock.advance(1)
    expect(await t.attempt('10.0.0.1', 'bob', wrong)).toBe('failed')
    // the failure after the budget was spent again waits a whole decay period
    clock.advance(999)
    expect(await t.attempt('10.0.0.1', 'alice', counted)).toBe('throttled')
    clock.advance(1)
    expect(await t.attempt('10.0.0.1', 'alice', counted)).toBe('ok')
    expect(ran).toBe(2)
    expect(t.stats).toEqual({ checks: 6, succeeded: 2, failed: 4, throttled: 3, busy: 0 })
  })

  it('a name guessed from many addresses is refused from new addresses, but not from one it logged in from', async () => {
    const { t, clock } = make({ failuresPerAddress: 100, failuresPerName: 5, failureDecayMs: 1000 })
    expect(await t.attempt('10.0.0.9', 'alice', right)).toBe('ok')
    for (let i = 0; i < 5; i++) expect(await t.attempt(`10.0.1.${i}`, 'alice', wrong)).toBe('failed')
    expect(await t.attempt('10.0.2.1', 'alice', right)).toBe('throttled')
    expect(await t.attempt('10.0.0.9', 'alice', right)).toBe('ok')
    expect(await t.attempt('10.0.2.1', 'bob', right)).toBe('ok')
    // trust lapses after trustMs
    const { t: t2, clock: c2 } = make({ failuresPerName: 1, trustMs: 5000, failureDecayMs: 1_000_000 })
    expect(await t2.attempt('10.0.0.9', 'alice', right)).toBe('ok')
    expect(await t2.attempt('10.0.1.1', 'alice', wrong)).toBe('failed')
    expect(await t2.attempt('10.0.1.2', 'alice', right)).toBe('throttled')
    expect(await t2.attempt('10.0.0.9', 'alice', wrong)).toBe('failed') // trusted, so checked; counts for the name
    c2.advance(4999)
    expect(await t2.attempt('10.0.0.9', 'alice', right)).toBe('ok')
    c2.advance(4999)
    expect(await t2.attempt('10.0.0.9', 'alice', right)).toBe('ok') // renewed by the previous success
    c2.advance(5001)
    expect(await t2.attempt('10.0.0.9', 'alice', right)).toBe('throttled')
    clock.advance(0)
  })

  it('a trusted pair is not locked out by other failures behind its address, but has a budget of its own', async () => {
    const { t } = make({ failuresPerAddress: 3, failuresPerName: 100 })
    expect(await t.attempt('10.0.0.1', 's/svc-b', right)).toBe('ok')
    // a misconfigured neighbour on the same host spends the address's budget
    for (let i = 0; i < 3; i++) expect(await t.attempt('10.0.0.1', 's/svc-a', wrong)).toBe('failed')
    expect(await t.attempt('10.0.0.1', 's/svc-a', right)).toBe('throttled')
    expect(await t.attempt('10.0.0.1', 'alice', right)).toBe('throttled')
    expect(await t.attempt('10.0.0.1', 's/svc-b', right)).toBe('ok')
    // guessing svc-b's secret from its own address spends the pair's budget
    for (let i = 0; i < 3; i++) expect(await t.attempt('10.0.0.1', 's/svc-b', wrong)).toBe('failed')
    expect(await t.attempt('10.0.0.1', 's/svc-b', right)).toBe('throttled')
  })

  it('a check that throws counts as a failure', async () => {
    const { t } = make({ failuresPerAddress: 1 })
    expect(await t.attempt('a', 'n', () => Promise.reject(new Error('scrypt failed')))).toBe('failed')
    expect(await t.attempt('a', 'n', right)).toBe('throttled')
  })

  it('runs at most maxConcurrentChecks checks at once and serves the cleanest waiter first', async () => {
    const { t } = make({ maxConcurrentChecks: 1, failuresPerAddress: 100, failuresPerName: 100 })
    // give 10.0.0.66 two failures
    expect(await t.attempt('10.0.0.66', 'x', wrong)).toBe('failed')
    expect(await t.attempt('10.0.0.66', 'y', wrong)).toBe('failed')
    const c = new Check()
    const first = t.attempt('10.0.0.1', 'a', c.fn)
    await settle()
    expect(c.runs).toBe(1)
    const order: string[] = []
    const guesser = t.attempt('10.0.0.66', 'z', () => { order.push('guesser'); return Promise.resolve(false) })
    const clean = t.attempt('10.0.0.2', 'b', () => { order.push('clean'); return Promise.resolve(true) })
    await settle()
    expect(c.runs).toBe(1)
    expect(t.queued).toBe(2)
    c.finish(true)
    expect(await first).toBe('ok')
    expect(await clean).toBe('ok')
    expect(await guesser).toBe('failed')
    expect(order).toEqual(['clean', 'guesser'])
    // a pair that logged in before goes before a clean stranger
    const c2 = new Check()
    const busy = t.attempt('10.0.0.3', 'c', c2.fn)
    await settle()
    const stranger = t.attempt('10.0.0.4', 'd', () => { order.push('stranger'); return Promise.resolve(true) })
    const known = t.attempt('10.0.0.2', 'b', () => { order.push('known'); return Promise.resolve(true) })
    await settle()
    c2.finish(true)
    expect([await busy, await stranger, await known]).toEqual(['ok', 'ok', 'ok'])
    expect(order.slice(2)).toEqual(['known', 'stranger'])
  })

  it('keeps one of the check slots for logins without recent failures', async () => {
    const { t } = make({ maxConcurrentChecks: 2, failuresPerAddress: 100, failuresPerName: 100 })
    expect(await t.attempt('g1', 'x', wrong)).toBe('failed')
    expect(await t.attempt('g2', 'y', wrong)).toBe('failed')
    const c = new Check()
    const g1 = t.attempt('g1', 'x', c.fn)
    const g2 = t.attempt('g2', 'y', c.fn)
    await settle()
    // the second guesser waits although a slot is free ...
    expect([c.runs, t.queued]).toEqual([1, 1])
    // ... which a clean login takes at once
    let cleanRan = false
    expect(await t.attempt('a', 'alice', () => { cleanRan = true; return Promise.resolve(true) })).toBe('ok')
    expect(cleanRan).toBe(true)
    c.finish(false)
    expect(await g1).toBe('failed')
    await settle()
    expect([c.runs, t.queued]).toEqual([2, 0])
    c.finish(false)
    expect(await g2).toBe('failed')
  })

  it('refuses as busy when the queue is full (pushing out the waiter with most failures) and beyond maxChecksPerAddress', async () => {
    const { t } = make({ maxConcurrentChecks: 1, maxQueuedChecks: 2, maxChecksPerAddress: 2, failuresPerAddress: 100, failuresPerName: 100 })
    expect(await t.attempt('dirty', 'x', wrong)).toBe('failed')
    const c = new Check()
    const running = t.attempt('a1', 'n', c.fn)
    const q1 = t.attempt('dirty', 'n', c.fn)
    const q2 = t.attempt('a2', 'n', c.fn)
    await settle()
    expect(t.queued).toBe(2)
    // the queue is full: a clean newcomer takes the dirty waiter's place
    const q3 = t.attempt('a3', 'n', c.fn)
    expect(await q1).toBe('busy')
    // a newcomer no cleaner than the worst waiter gets no place
    expect(await t.attempt('dirty', 'n', c.fn)).toBe('busy')
    // a2 has one check queued; a second is allowed, a third is not
    const extra = t.attempt('a2', 'm', c.fn)
    expect(await extra).toBe('busy') // the queue is full and it is no cleaner than a2's first
    const r2 = make({ maxConcurrentChecks: 1, maxQueuedChecks: 10, maxChecksPerAddress: 2 })
    const c2 = new Check()
    const p1 = r2.t.attempt('same', 'n', c2.fn)
    const p2 = r2.t.attempt('same', 'n', c2.fn)
    expect(await r2.t.attempt('same', 'n', c2.fn)).toBe('busy')
    c2.finish(true)
    expect(await p1).toBe('ok')
    await settle()
    c2.finish(true)
    expect(await p2).toBe('ok')
    for (let i = 0; i < 3; i++) { await settle(); c.finish(true) }
    expect([await running, await q2, await q3]).toEqual(['ok', 'ok', 'ok'])
    expect(t.stats.busy).toBe(3)
    expect(c.waiting).toBe(0)
  })

  it('keeps at most maxTrackedKeys addresses, names and trusted pairs', async () => {
    const { t } = make({ maxTrackedKeys: 16 })
    for (let i = 0; i < 200; i++) {
      expect(await t.attempt(`10.1.${i >> 8}.${i & 255}`, `name-${i}`, i % 2 === 0 ? wrong : right)).not.toBe('busy')
    }
    expect(t.tracked).toEqual({ addresses: 16, names: 16, pairs: 16, trusted: 16 })
  })

  it('holds back refusals longer as an address fails more, and longest once throttled', async () => {
    const { t } = make({ failuresPerAddress: 10, maxDelayMs: 1000 })
    expect(t.refusalDelayMs('a', 'failed')).toBe(0)
    expect(t.refusalDelayMs('a', 'busy')).toBe(100)
    const delays: number[] = []
    for (let i = 0; i < 6; i++) {
      await t.attempt('a', 'n', wrong)
      delays.push(t.refusalDelayMs('a', 'failed'))
    }
    expect(delays).toEqual([100, 200, 400, 800, 1000, 1000])
    expect(t.refusalDelayMs('b', 'throttled')).toBe(1000)
  })

  it('checks its options', () => {
    expect(() => make({ maxConcurrentChecks: 0 })).toThrow(ConfigError)
    expect(() => make({ maxConcurrentChecks: 0 })).toThrow(/maxConcurrentLoginChecks/)
    expect(() => make({ failuresPerAddress: 1.5 })).toThrow(/loginFailuresPerAddress/)
    expect(() => make({ maxChecksPerAddress: 10, maxConcurrentChecks: 1, maxQueuedChecks: 2 })).toThrow(/maxLoginChecksPerAddress/)
  })
})

describe('addressKey', () => {
  it('keys IPv4 as is, IPv4-mapped IPv6 as IPv4, IPv6 by its /64, and no address as unknown', () => {
    expect(addressKey('127.0.0.1')).toBe('127.0.0.1')
    expect(addressKey('::ffff:10.1.2.3')).toBe('10.1.2.3')
    expect(addressKey('2001:db8:0:1:aaaa:bbbb:cccc:dddd')).toBe('2001:db8:0:1::/64')
    expect(addressKey('2001:db8:0:1::7')).toBe('2001:db8:0:1::/64')
    expect(addressKey('2001:0DB8::1')).toBe('2001:db8:0:0::/64')
    expect(addressKey('::1')).toBe('0:0:0:0::/64')
    expect(addressKey(undefined)).toBe('unknown')
  })
})
