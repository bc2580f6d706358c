/**
 * maxAttempts, backoff and dead letters ([CLI-DEAD-1..6]) with a MemoryTransport (the test plays the
 * broker), a ManualClock and a MemoryPositionStore: attempts counted, the backoff on the clock, the
 * move-on past the event, the `deadLetter` event, the bound, retry and discard.
 */
import { describe, expect, it } from 'vitest'
import { ConfigError, ErrorCode, ManualClock, PayloadKind, encodeControl, encodeEvents, utf8Decode, utf8Encode, type HeraldError, type Request, type StoredEvent } from '@herald/protocol'
import { MemoryTransport } from '@herald/protocol/testing'
import { ClientEndpoint, type ClientEndpointEvents, type SubscribeOptions } from './client-endpoint.js'
import type { EventHandler } from './client-subscription.js'
import { MemoryPositionStore } from './positions/memory-position-store.js'
import { attemptDelay } from './dead-letter-policy.js'
import type { PositionStore } from './positions/position-store.js'

const RANDOM = 0.5

async function flush (): Promise<void> {
  for (let i = 0; i < 50; i++) await Promise.resolve()
}

function stored (position: number): StoredEvent {
  return {
    position, serviceId: 'svc', instance: 'inst', seq: position, name: 'log', category: 'queueing',
    raisedAt: 1_000, receivedAt: 1_000, expiresAt: null, uploadAge: 0, isNull: false, recipient: null,
    payloadKind: PayloadKind.json, payload: utf8Encode(JSON.stringify({ n: position }))
  }
}

type SubRequest = Extract<Request, { op: 'sub' }>
type DeadLetterInfo = Parameters<ClientEndpointEvents['deadLetter']>[0]

function client (positions: PositionStore, clock = new ManualClock()) {
  const transport = new MemoryTransport()
  const ep = new ClientEndpoint({
    url: 'mqtt://broker.invalid:1883', clientName: 'app', user: 'alice', password: 'alice-password-1',
    positions, transport, clock, random: () => RANDOM, retryInitialMs: 100, retryMaxMs: 800
  })
  const errors: HeraldError[] = []
  const dead: DeadLetterInfo[] = []
  const retries: number[] = []
  const stopped: HeraldError[] = []
  ep.on('error', (e) => { errors.push(e) })
  ep.on('deadLetter', (d) => { dead.push(d) })
  ep.on('handlerError', (i) => { retries.push(i.retryInMs) })
  ep.on('subscriptionError', (i) => { stopped.push(i.error) })
  const subRequest = (): SubRequest => {
    const subs = transport.last.requests().filter((r): r is SubRequest => r.op === 'sub')
    return subs[subs.length - 1] as SubRequest
  }
  return {
    ep, clock, transport, errors, dead, retries, stopped,
    subscribe: async (options: SubscribeOptions, handler: EventHandler, head = 0) => {
      ep.start()
      transport.last.open()
      await flush()
      const p = ep.subscribe('log', options, handler)
      await flush()
      transport.last.inject(encodeControl({ op: 'subscribed', sub: subRequest().sub, category: 'queueing', head, reset: false }))
      await flush()
      return await p
    },
    deliver: async (ps: number[]) => {
      transport.last.inject(encodeEvents(subRequest().sub, clock.now(), ps.map(stored)))
      await flush()
    },
    acks: () => transport.last.requests().flatMap((r) => r.op === 'ack' ? [r.position] : [])
  }
}

/** Advances the clock one timer at a time until `done()` or `limit` ms passed. */
async function runClock (clock: ManualClock, done: () => boolean, limit = 60_000): Promise<void> {
  for (let t = 0; t < limit && !done(); t += 10) {
    clock.advance(10)
    await flush()
  }
}

describe('maxAttempts and dead letters (memory transport, manual clock)', () => {
  it('after the last failed attempt the event is a dead letter, the position moves past it, later events are handled [CLI-DEAD-1] [CLI-DEAD-2]', async () => {
    const positions = new MemoryPositionStore()
    const c = client(positions)
    const calls: Array<[number, boolean]> = []
    const sub = await c.subscribe({ maxAttempts: 3, backoff: { initialMs: 50, maxMs: 1000, factor: 3 } }, (e) => {
      calls.push([e.position, e.redelivered])
      if (e.position === 2) throw new Error('poison 2')
    })
    await c.deliver([1, 2, 3])
    // the backoff: attempt 1 fails, wait 50*3^0 jittered; attempt 2 fails, wait 50*3^1 jittered
    expect(c.retries).toEqual([Math.round(25 + RANDOM * 25)])
    c.clock.advance(c.retries[0] as number)
    await flush()
    expect(c.retries).toEqual([Math.round(25 + RANDOM * 25), Math.round(75 + RANDOM * 75)])
    expect(c.dead).toEqual([])
    c.clock.advance((c.retries[1] as number) - 1)
    await flush()
    expect(calls).toEqual([[1, false], [2, false], [2, true]]) // not before its time
    c.clock.advance(1)
    await flush()
    expect(calls).toEqual([[1, false], [2, false], [2, true], [2, true], [3, false]])
    expect(c.dead).toHaveLength(1)
    expect(c.dead[0]).toMatchObject({ key: 'log', attempts: 3, error: 'poison 2', retried: false, event: { position: 2, id: 'inst-2' } })
    expect([sub.position, sub.delivered, sub.deadLettered, sub.retries, c.ep.deadLettered]).toEqual([3, 2, 1, 2, 1])
    c.clock.runDeferred()
    expect(c.acks().at(-1)).toBe(3)
    const letters = positions.deadLetters.list()
    expect(letters).toHaveLength(1)
    expect(letters[0]).toMatchObject({ id: c.dead[0]?.id, key: 'log', eventId: 'inst-2', attempts: 3, lastError: 'poison 2', retry: false })
    expect(JSON.parse(utf8Decode(letters[0]?.event.payload as Uint8Array))).toEqual({ n: 2 }) // as received
    expect(positions.get('log')).toEqual({ position: 3, started: null })
    expect(c.clock.pendingTimers).toBe(0)
    expect(c.errors).toEqual([])
    await c.ep.close()
  })

  it('without maxAttempts a failing handler is still retried forever, never dead-lettered [CLI-RETRY-1]', async () => {
    const positions = new MemoryPositionStore()
    const c = client(positions)
    let attempts = 0
    const sub = await c.subscribe({}, (e) => { if (e.position === 1) { attempts++; throw new Error('always') } })
    await c.deliver([1, 2])
    await runClock(c.clock, () => attempts >= 50)
    expect(attempts).toBeGreaterThanOrEqual(50)
    expect([sub.position, sub.deadLettered, c.dead.length, positions.deadLetters.list().length]).toEqual([0, 0, 0, 0])
    await c.ep.close()
  })

  it('maxAttempts 1 gives up at the first failure, with no wait', async () => {
    const c = client(new MemoryPositionStore())
    const sub = await c.subscribe({ maxAttempts: 1 }, (e) => { if (e.position === 1) throw new Error('once') })
    await c.deliver([1, 2])
    expect([sub.position, sub.delivered, sub.deadLettered, c.retries.length]).toEqual([2, 1, 1, 0])
    await c.ep.close()
  })

  it('refuses wrong options, and maxAttempts with a store that keeps no dead letters, with a ConfigError naming the option [CLI-DEAD-6]', async () => {
    const c = client(new MemoryPositionStore())
    c.ep.start()
    for (const [options, name] of [
      [{ maxAttempts: 0 }, 'maxAttempts'], [{ maxAttempts: 1.5 }, 'maxAttempts'], [{ maxAttempts: '3' }, 'maxAttempts'],
      [{ backoff: { initialMs: -1 } }, 'backoff.initialMs'], [{ backoff: { initialMs: 500, maxMs: 100 } }, 'backoff.maxMs'],
      [{ backoff: { factor: 0.5 } }, 'backoff.factor']
    ] as Array<[SubscribeOptions, string]>) {
      await expect(c.ep.subscribe('log', options, () => {})).rejects.toThrow(new RegExp(`"${name.replace('.', '\\.')}"`))
    }
    await c.ep.close()
    const noDead: PositionStore = { durable: false, get: () => null, markStarted: () => {}, commit: () => {}, advance: () => {}, close: () => {} }
    const d = client(noDead)
    d.ep.start()
    const err = await d.ep.subscribe('log', { maxAttempts: 3 }, () => {}).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(ConfigError)
    expect((err as Error).message).toMatch(/maxAttempts.*keeps none/)
    await d.ep.close()
  })

  it('a full dead-letter store stops the subscription at the event with CAPACITY_EXCEEDED: nothing skipped, nothing dropped [CLI-DEAD-4]', async () => {
    const positions = new MemoryPositionStore({ maxDeadLetters: 1 })
    const c = client(positions)
    const handled: number[] = []
    const sub = await c.subscribe({ maxAttempts: 1 }, (e) => {
      if (e.position === 1 || e.position === 3) throw new Error(`bad ${e.position}`)
      handled.push(e.position)
    })
    await c.deliver([1, 2, 3, 4])
    expect(handled).toEqual([2])
    expect(positions.deadLetters.list().map((l) => l.event.position)).toEqual([1])
    expect(c.stopped.map((e) => e.code)).toEqual([ErrorCode.CAPACITY_EXCEEDED])
    expect(c.stopped[0]?.message).toMatch(/maxDeadLetters/)
    expect(positions.get('log')?.position).toBe(2) // event 3 stays to be delivered on the next start
    expect(sub.position).toBe(2)
    expect(c.transport.last.requests().some((r) => r.op === 'unsub')).toBe(true)
    await c.ep.close()
  })

  it('attempts start again after a crash: the redelivered event (flagged) gets maxAttempts more [CLI-DEAD-3]', async () => {
    const positions = new MemoryPositionStore()
    const first = client(positions)
    let calls = 0
    await first.subscribe({ maxAttempts: 3, backoff: { initialMs: 10, maxMs: 10 } }, () => { calls++; throw new Error('no') })
    await first.deliver([1])
    first.clock.advance(10)
    await flush()
    expect(calls).toBe(2)
    // the process dies here (never closed): the store keeps the started mark
    expect(positions.get('log')).toEqual({ position: 0, started: 1 })
    const second = client(positions)
    const seen: boolean[] = []
    const sub = await second.subscribe({ maxAttempts: 3, backoff: { initialMs: 10, maxMs: 10 } }, (e) => { seen.push(e.redelivered); throw new Error('still no') })
    await second.deliver([1])
    await runClock(second.clock, () => second.dead.length > 0)
    expect(seen).toEqual([true, true, true])
    expect(second.dead[0]).toMatchObject({ attempts: 3, error: 'still no' })
    expect(sub.position).toBe(1)
    await second.ep.close()
  })

  it('a dead letter marked for retry is handed to the handler on the next start, before new events, flagged; done, it is deleted [CLI-DEAD-5]', async () => {
    const positions = new MemoryPositionStore()
    const first = client(positions)
    await first.subscribe({ maxAttempts: 1 }, (e) => { if (e.position === 1) throw new Error('bad') })
    await first.deliver([1, 2])
    const id = positions.deadLetters.list()[0]?.id as number
    expect(positions.deadLetters.retry(id)).toBe(true)
    expect(positions.deadLetters.retry(999)).toBe(false)
    // a second run (the first died): the retried dead letter first, then new events
    const second = client(positions)
    const seen: Array<[number, boolean]> = []
    const sub = await second.subscribe({ maxAttempts: 1 }, (e) => { seen.push([e.position, e.redelivered]) })
    expect(seen).toEqual([[1, true]])
    await second.deliver([3])
    expect(seen).toEqual([[1, true], [3, false]])
    expect(positions.deadLetters.list()).toEqual([])
    expect([sub.delivered, sub.redelivered]).toEqual([2, 1])
    await second.ep.close()
  })

  it('a retried dead letter that fails again stays, with one more attempt, unmarked, and is reported', async () => {
    const positions = new MemoryPositionStore()
    const first = client(positions)
    await first.subscribe({ maxAttempts: 2, backoff: { initialMs: 0, maxMs: 0 } }, () => { throw new Error('bad') })
    await first.deliver([1])
    await runClock(first.clock, () => first.dead.length > 0)
    const id = positions.deadLetters.list()[0]?.id as number
    positions.deadLetters.retry(id)
    const second = client(positions)
    await second.subscribe({}, () => { throw new Error('worse') })
    expect(second.dead).toMatchObject([{ id, attempts: 3, error: 'worse', retried: true }])
    expect(positions.deadLetters.get(id)).toMatchObject({ attempts: 3, lastError: 'worse', retry: false })
    expect(positions.deadLetters.discard(id)).toBe(true)
    expect(positions.deadLetters.discard(id)).toBe(false)
    expect(positions.deadLetters.list()).toEqual([])
    await second.ep.close()
  })
})

describe('attemptDelay', () => {
  const policy = (initialMs: number, maxMs: number, factor: number) => ({ maxAttempts: null, initialMs, maxMs, factor })
  it('grows by the factor up to maxMs, jittered to [base/2, base] by the random source', () => {
    expect([1, 2, 3, 4, 5].map((a) => attemptDelay(a, policy(10, 200, 3), () => 1))).toEqual([10, 30, 90, 200, 200])
    expect([1, 2, 3].map((a) => attemptDelay(a, policy(10, 200, 3), () => 0))).toEqual([5, 15, 45])
  })
  it('stays finite and capped for any attempt, also from 0 ms', () => {
    for (const attempt of [1_000, 1_000_000, Number.MAX_SAFE_INTEGER]) {
      expect(attemptDelay(attempt, policy(100, 30_000, 10), () => 1)).toBe(30_000)
      expect(attemptDelay(attempt, policy(0, 30_000, 10), () => 1)).toBe(0)
    }
  })
})
