/**
 * ClientEndpoint alone: a MemoryTransport (the test plays the broker), a ManualClock and a
 * MemoryPositionStore. Subscribing, delivery in order, batched acks, the window, handler retries on
 * the clock, the redelivered flag after a crash, resubscribing from the committed position after a
 * reconnect, duplicate frames, refused credentials, closing in every state. No sockets, no real time.
 */
import { describe, expect, it } from 'vitest'
import { AuthError, ClosedError, ConfigError, ErrorCode, ManualClock, PayloadKind, RequestError, backoffDelay, clientMessageTopic, clientRequestTopic, encodeControl, encodeEvents, utf8Encode, type HeraldError, type Request, type StoredEvent } from '@herald/protocol'
import { MemoryTransport, type MemoryConnection } from '@herald/protocol/testing'
import { ClientEndpoint, type ClientEndpointOptions, type SubscribeOptions, type Subscription } from './client-endpoint.js'
import type { EventHandler } from './client-subscription.js'
import type { HeraldEvent } from './herald-event.js'
import { MemoryPositionStore } from './positions/memory-position-store.js'

const RECONNECT = { initialMs: 200, maxMs: 1_600 }
const RETRY = { initialMs: 100, maxMs: 800 }
const RANDOM = 0.5

/** Runs the promise jobs that are due (handlers, the subscription's idle wait) without moving time. */
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

const range = (from: number, to: number): number[] => Array.from({ length: to - from + 1 }, (_, i) => from + i)

type SubRequest = Extract<Request, { op: 'sub' }>

interface Harness {
  ep: ClientEndpoint
  clock: ManualClock
  transport: MemoryTransport
  positions: MemoryPositionStore
  errors: HeraldError[]
  /** Accepts the latest dial. */
  connect: () => Promise<MemoryConnection>
  /** The latest sub request on the current connection. */
  subRequest: () => SubRequest
  /** Answers the latest sub request as subscribed, with `head` the broker's head. */
  accept: (head?: number) => Promise<void>
  /** Sends events at these positions to the latest subscription of the current connection. */
  deliver: (positions: number[], sub?: number) => Promise<void>
  /** The ack requests sent on a connection: their positions. */
  acksOn: (conn: MemoryConnection) => number[]
}

function makeClient (extra: Partial<ClientEndpointOptions> = {}, positions = new MemoryPositionStore()): Harness {
  const clock = new ManualClock()
  const transport = new MemoryTransport()
  const ep = new ClientEndpoint({
    url: 'mqtt://broker.invalid:1883',
    clientName: 'app',
    user: 'alice',
    password: 'alice-password-1',
    positions,
    transport,
    clock,
    random: () => RANDOM,
    reconnectInitialMs: RECONNECT.initialMs,
    reconnectMaxMs: RECONNECT.maxMs,
    retryInitialMs: RETRY.initialMs,
    retryMaxMs: RETRY.maxMs,
    ...extra
  })
  const errors: HeraldError[] = []
  ep.on('error', (e) => { errors.push(e) })
  const subRequest = (): SubRequest => {
    const subs = transport.last.requests().filter((r): r is SubRequest => r.op === 'sub')
    const last = subs[subs.length - 1]
    if (last === undefined) throw new Error('no sub request on the current connection')
    return last
  }
  return {
    ep, clock, transport, positions, errors, subRequest,
    connect: async () => {
      transport.last.open()
      await flush()
      return transport.last
    },
    accept: async (head = 0) => {
      transport.last.inject(encodeControl({ op: 'subscribed', sub: subRequest().sub, category: 'queueing', head, reset: false }))
      await flush()
    },
    deliver: async (ps, sub = subRequest().sub) => {
      transport.last.inject(encodeEvents(sub, clock.now(), ps.map(stored)))
      await flush()
    },
    acksOn: (conn) => conn.requests().flatMap((r) => r.op === 'ack' ? [r.position] : [])
  }
}

/** A handler that records what it was given. */
function recorder (): { handler: EventHandler, seen: HeraldEvent[] } {
  const seen: HeraldEvent[] = []
  return { seen, handler: (e) => { seen.push(e) } }
}

/** Starts, connects, subscribes to "log" and answers it. */
async function subscribed (h: Harness, handler: EventHandler, options: SubscribeOptions = {}, head = 0): Promise<Subscription> {
  h.ep.start()
  await h.connect()
  const p = h.ep.subscribe('log', options, handler)
  await flush()
  await h.accept(head)
  return await p
}

function expectDialAfter (h: Harness, delay: number): void {
  const dials = h.transport.dials.length
  h.clock.advance(delay - 1)
  expect(h.transport.dials.length).toBe(dials)
  h.clock.advance(1)
  expect(h.transport.dials.length).toBe(dials + 1)
}

describe('ClientEndpoint (memory transport, manual clock)', () => {
  it('dials with its identity, and subscribe() sends a sub request once online, resolving on "subscribed"', async () => {
    const h = makeClient({ window: 7 })
    let resolved = false
    const p = h.ep.subscribe('log', {}, () => {}).then((s) => { resolved = true; return s })
    h.ep.start()
    const o = h.transport.last.options
    expect([o.clientId, o.username, o.password, o.replyTopic]).toEqual(['c/alice/app', 'alice', 'alice-password-1', clientMessageTopic('alice/app')])
    await h.connect()
    expect(h.transport.last.sent.map((f) => f.topic)).toEqual([clientRequestTopic('alice/app')])
    expect(h.subRequest()).toMatchObject({ op: 'sub', event: 'log', services: null, position: 0, start: 'all', window: 7 })
    await flush()
    expect(resolved).toBe(false)
    const head = 41
    await h.accept(head)
    const sub = await p
    // [CLI-START-1] a first subscription remembers where it started
    expect(sub.position).toBe(head)
    expect(h.positions.get('log')).toEqual({ position: head, started: null })
    await h.ep.close()
  })

  it('sends the subscription\'s own window, its services sorted, and `start`', async () => {
    const h = makeClient()
    h.ep.start()
    await h.connect()
    const waiting = h.ep.subscribe('log', { window: 3, services: ['b', 'a'], start: 'new' }, () => {})
    await flush()
    expect(h.subRequest()).toMatchObject({ window: 3, services: ['a', 'b'], start: 'new', position: 0 })
    await expect(h.ep.subscribe('other', { window: 0 }, () => {})).rejects.toBeInstanceOf(ConfigError)
    await h.ep.close()
    await expect(waiting).rejects.toBeInstanceOf(ClosedError)
  })

  it('a broker refusal of the subscription rejects subscribe() with the typed error', async () => {
    const h = makeClient()
    h.ep.start()
    await h.connect()
    const p = h.ep.subscribe('nope', {}, () => {})
    await flush()
    h.transport.last.inject(encodeControl({ op: 'error', sub: h.subRequest().sub, code: ErrorCode.UNKNOWN_EVENT, message: 'no such event' }))
    await expect(p).rejects.toSatisfy((e: unknown) => e instanceof RequestError && e.code === ErrorCode.UNKNOWN_EVENT)
    expect(h.ep.status.subscriptions).toBe(0)
    await h.ep.close()
  })

  it('hands EVENTS to the handler in position order and acknowledges once per turn with the last committed position [CLI-ACK-1]', async () => {
    const h = makeClient()
    const r = recorder()
    const sub = await subscribed(h, r.handler)
    const conn = h.transport.last
    await h.deliver(range(1, 3))
    await h.deliver(range(4, 5))
    expect(r.seen.map((e) => e.position)).toEqual(range(1, 5))
    expect(r.seen.map((e) => e.payload)).toEqual(range(1, 5).map((n) => ({ n })))
    expect(r.seen.every((e) => !e.redelivered)).toBe(true)
    // the acks wait for the deferred turn, then one ack for the whole run
    expect(h.acksOn(conn)).toEqual([])
    h.clock.runDeferred()
    expect(h.acksOn(conn)).toEqual([5])
    expect(sub.position).toBe(5)
    expect(sub.delivered).toBe(5)
    expect(h.positions.get('log')).toEqual({ position: 5, started: null })
    await h.deliver([6])
    h.clock.runDeferred()
    expect(h.acksOn(conn)).toEqual([5, 6])
    await h.ep.close()
  })

  it('acknowledges what the handler finished, so the broker can open the window; nothing before a handler finishes', async () => {
    const h = makeClient({ window: 2 })
    const gates: Array<() => void> = []
    const seen: number[] = []
    await subscribed(h, async (e) => { seen.push(e.position); await new Promise<void>((resolve) => { gates.push(resolve) }) })
    const conn = h.transport.last
    expect(h.subRequest().window).toBe(2)
    await h.deliver([1, 2])
    h.clock.runDeferred()
    expect(seen).toEqual([1])
    expect(h.acksOn(conn)).toEqual([])
    gates.shift()?.()
    await flush()
    h.clock.runDeferred()
    expect(h.acksOn(conn)).toEqual([1])
    gates.shift()?.()
    await flush()
    h.clock.runDeferred()
    expect(h.acksOn(conn)).toEqual([1, 2])
    await h.ep.close()
  })

  it('retries a failing handler with backoff on the clock, reports each failure, never skips the event [CLI-RETRY-1]', async () => {
    const h = makeClient()
    const failures: Array<{ attempt: number, retryInMs: number, position: number }> = []
    h.ep.on('handlerError', (info) => { failures.push({ attempt: info.attempt, retryInMs: info.retryInMs, position: info.event.position }) })
    const calls: Array<[number, boolean]> = []
    const failTimes = 3
    let failed = 0
    const sub = await subscribed(h, (e) => {
      calls.push([e.position, e.redelivered])
      if (e.position === 1 && failed < failTimes) { failed++; throw new Error('not yet') }
    })
    await h.deliver([1, 2])
    for (let attempt = 1; attempt <= failTimes; attempt++) {
      const f = failures[attempt - 1]
      expect(f).toMatchObject({ attempt, position: 1 })
      const base = Math.min(RETRY.maxMs, RETRY.initialMs * 2 ** (attempt - 1))
      // the jitter comes from the injected random, as the reconnect backoff's [CLI-RETRY-1]
      expect(f?.retryInMs).toBe(Math.round(base / 2 + RANDOM * base / 2))
      // the retry waits on the clock, and event 2 waits behind it
      const before = calls.length
      h.clock.advance((f?.retryInMs ?? 0) - 1)
      await flush()
      expect(calls.length).toBe(before)
      h.clock.advance(1)
      await flush()
      // the retry; after the last, event 2 follows at once
      expect(calls.length).toBe(before + (attempt === failTimes ? 2 : 1))
    }
    expect(calls).toEqual([[1, false], [1, true], [1, true], [1, true], [2, false]])
    expect([sub.retries, sub.delivered, sub.redelivered, sub.position]).toEqual([failTimes, 2, 1, 2])
    expect(h.clock.pendingTimers).toBe(0)
    await h.ep.close()
  })

  it('unsubscribe() while a failed handler waits for its retry resolves at once and leaves no timer', async () => {
    const h = makeClient()
    let calls = 0
    const sub = await subscribed(h, () => { calls++; throw new Error('always') })
    await h.deliver([1])
    let done = false
    const leaving = sub.unsubscribe().then(() => { done = true })
    await flush()
    expect(done).toBe(true)
    await leaving
    expect(calls).toBe(1)
    expect(h.transport.last.requests().filter((r) => r.op === 'unsub')).toHaveLength(1)
    expect(h.clock.pendingTimers).toBe(0)
    expect(h.ep.status.subscriptions).toBe(0)
    await h.ep.close()
  })

  it('flags as redelivered the events a crashed run may have handled: up to the recorded started mark [CLI-REDELIVER-1]', async () => {
    const positions = new MemoryPositionStore()
    // the earlier run committed 2 and had started 4 when it died
    positions.commit('log', 2)
    positions.markStarted('log', 4)
    const h = makeClient({}, positions)
    const r = recorder()
    const sub = await subscribed(h, r.handler)
    expect(h.subRequest()).toMatchObject({ position: 2, start: 'all' })
    await h.deliver(range(3, 6))
    expect(r.seen.map((e) => [e.position, e.redelivered])).toEqual([[3, true], [4, true], [5, false], [6, false]])
    expect(sub.redelivered).toBe(2)
    expect(positions.get('log')).toEqual({ position: 6, started: null })
    await h.ep.close()
  })

  it('records the started mark before the handler runs, so a crash inside it is known', async () => {
    const h = makeClient()
    let release = (): void => {}
    await subscribed(h, async () => { await new Promise<void>((resolve) => { release = resolve }) })
    await h.deliver([1])
    // the handler runs: the store says 1 may have been handled
    expect(h.positions.get('log')).toEqual({ position: 0, started: 1 })
    release()
    await flush()
    expect(h.positions.get('log')).toEqual({ position: 1, started: null })
    await h.ep.close()
  })

  it('after a lost connection resubscribes with a fresh id from the committed position; old ids and handled positions are skipped [CLI-RESUME-1]', async () => {
    const h = makeClient()
    const r = recorder()
    await subscribed(h, r.handler)
    const first = h.transport.last
    const oldSub = h.subRequest().sub
    await h.deliver(range(1, 3))
    h.clock.runDeferred()
    first.drop()
    await flush()
    expect(h.ep.status.state).toBe('offline')
    expectDialAfter(h, backoffDelay(0, RECONNECT, () => RANDOM))
    const second = await h.connect()
    const req = h.subRequest()
    expect(req.sub).not.toBe(oldSub)
    expect(req).toMatchObject({ op: 'sub', event: 'log', position: 3, start: 'all' })
    await h.accept(3)
    // a frame for the old id, then the broker resends from before the position
    await h.deliver([4], oldSub)
    await h.deliver(range(2, 5))
    expect(r.seen.map((e) => e.position)).toEqual(range(1, 5))
    h.clock.runDeferred()
    expect(h.acksOn(second)).toEqual([5])
    await h.ep.close()
  })

  it('does not hand the same position twice when EVENTS repeat on one connection', async () => {
    const h = makeClient()
    const r = recorder()
    const sub = await subscribed(h, r.handler)
    await h.deliver(range(1, 3))
    await h.deliver(range(1, 4))
    await h.deliver([2])
    expect(r.seen.map((e) => e.position)).toEqual(range(1, 4))
    expect(sub.delivered).toBe(4)
    await h.ep.close()
  })

  it('refused credentials fail the waiting subscription with a typed AuthError and are reported once per run of refusals [CLI-AUTH-1] [CONN-AUTH-2]', async () => {
    const h = makeClient()
    h.ep.start()
    const p = h.ep.subscribe('log', {}, () => {})
    h.transport.last.refuse(ErrorCode.BAD_CREDENTIALS)
    await expect(p).rejects.toSatisfy((e: unknown) => e instanceof AuthError && e.code === ErrorCode.BAD_CREDENTIALS)
    expect(h.ep.status.subscriptions).toBe(0)
    for (let i = 0; i < 3; i++) {
      h.clock.advance(h.clock.nextTimerInMs ?? 0)
      h.transport.last.refuse(ErrorCode.BAD_CREDENTIALS)
      await flush()
    }
    expect(h.errors.map((e) => [e instanceof AuthError, e.code])).toEqual([[true, ErrorCode.BAD_CREDENTIALS]])
    expect(h.errors[0]?.message).toContain('"alice"')
    expect(h.ep.status.lastError?.code).toBe(ErrorCode.BAD_CREDENTIALS)
    // online in between: reported again
    h.clock.advance(h.clock.nextTimerInMs ?? 0)
    await h.connect()
    h.transport.last.drop()
    await flush()
    h.clock.advance(h.clock.nextTimerInMs ?? 0)
    h.transport.last.refuse(ErrorCode.BAD_CREDENTIALS)
    await flush()
    expect(h.errors.map((e) => e.code)).toEqual([ErrorCode.BAD_CREDENTIALS, ErrorCode.BAD_CREDENTIALS])
    await h.ep.close()
  })

  describe('close()', () => {
    async function expectClosed (h: Harness): Promise<void> {
      expect(h.clock.pendingTimers).toBe(0)
      expect(h.transport.live).toHaveLength(0)
      const dials = h.transport.dials.length
      h.clock.advance(RECONNECT.maxMs * 10)
      await flush()
      expect(h.transport.dials.length).toBe(dials)
      expect(h.ep.status.state).toBe('closed')
      await expect(h.ep.subscribe('log', {}, () => {})).rejects.toBeInstanceOf(ClosedError)
      expect(() => h.ep.start()).toThrow(ClosedError)
      await h.ep.close()
    }

    it('never started', async () => {
      const h = makeClient()
      await h.ep.close()
      expect(h.transport.dials).toHaveLength(0)
      await expectClosed(h)
    })

    it('connecting, with a subscription waiting: it rejects with ClosedError', async () => {
      const h = makeClient()
      h.ep.start()
      const p = h.ep.subscribe('log', {}, () => {})
      await h.ep.close()
      await expect(p).rejects.toBeInstanceOf(ClosedError)
      expect(h.transport.last.endedByEndpoint).toBe(true)
      await expectClosed(h)
    })

    it('online with a handler running: waits for it, then closes', async () => {
      const h = makeClient()
      let release = (): void => {}
      await subscribed(h, async () => { await new Promise<void>((resolve) => { release = resolve }) })
      await h.deliver([1, 2])
      let closed = false
      const closing = h.ep.close().then(() => { closed = true })
      await flush()
      expect(closed).toBe(false)
      release()
      await closing
      await expectClosed(h)
    })

    it('while a failed handler waits for its retry: resolves without waiting out the backoff, no timer left', async () => {
      const h = makeClient()
      let calls = 0
      await subscribed(h, () => { calls++; throw new Error('always') })
      await h.deliver([1])
      expect(calls).toBe(1)
      expect(h.clock.pendingTimers).toBeGreaterThan(0)
      let closed = false
      const closing = h.ep.close().then(() => { closed = true })
      await flush()
      expect(closed).toBe(true)
      await closing
      expect(calls).toBe(1)
      await expectClosed(h)
    })

    it('while a subscription waits to be sent again after the broker could not read (PERSISTENCE_FAILED): no timer left', async () => {
      const h = makeClient()
      await subscribed(h, () => {})
      h.transport.last.inject(encodeControl({ op: 'error', sub: h.subRequest().sub, code: ErrorCode.PERSISTENCE_FAILED, message: 'read failed' }))
      await flush()
      expect(h.clock.pendingTimers).toBe(1)
      await h.ep.close()
      await expectClosed(h)
    })

    it('offline, waiting for the reconnect timer', async () => {
      const h = makeClient()
      await subscribed(h, () => {})
      h.transport.last.drop()
      await flush()
      expect(h.ep.status.state).toBe('offline')
      expect(h.clock.pendingTimers).toBe(1)
      await h.ep.close()
      await expectClosed(h)
    })
  })
})

describe('ClientEndpoint: access withdrawn and granted by a site change ([SITE-RELOAD-5])', () => {
  const refuse = (h: Harness, sub: number): void => {
    h.transport.last.inject(encodeControl({ op: 'error', sub, code: ErrorCode.NOT_AUTHORIZED, message: 'user "alice" may no longer receive "log" (the site changed)' }))
  }
  const subRequests = (h: Harness): SubRequest[] => h.transport.last.requests().filter((r): r is SubRequest => r.op === 'sub')

  it('a withdrawn subscription is reported once, waits, and goes on from its position on accessGranted', async () => {
    const h = makeClient()
    const reported: Array<[string, string]> = []
    h.ep.on('subscriptionError', ({ key, error }) => { reported.push([key, error.code]) })
    const r = recorder()
    const sub = await subscribed(h, r.handler)
    await h.deliver([1, 2])
    expect(sub.position).toBe(2)
    refuse(h, h.subRequest().sub)
    await flush()
    expect(reported).toEqual([['log', ErrorCode.NOT_AUTHORIZED]])
    expect(sub.waitingForAccess).toBe(true)
    expect(subRequests(h)).toHaveLength(1)
    // granted: asked again from its position; refused again: not reported twice
    h.transport.last.inject(encodeControl({ op: 'accessGranted' }))
    await flush()
    expect(subRequests(h)).toHaveLength(2)
    expect(h.subRequest()).toMatchObject({ event: 'log', position: 2, start: 'all' })
    refuse(h, h.subRequest().sub)
    await flush()
    expect(reported).toHaveLength(1)
    h.transport.last.inject(encodeControl({ op: 'accessGranted' }))
    await flush()
    await h.accept(2)
    expect(sub.waitingForAccess).toBe(false)
    await h.deliver([3])
    expect(r.seen.map((e) => e.position)).toEqual([1, 2, 3])
    expect(h.errors).toEqual([])
  })

  it('subscribe() rejects a refusal for access, unless waitForAccess: then it resolves, reports it, and waits', async () => {
    const h = makeClient()
    h.ep.start()
    await h.connect()
    const plain = h.ep.subscribe('log', { key: 'plain' }, () => {})
    await flush()
    refuse(h, h.subRequest().sub)
    await expect(plain).rejects.toMatchObject({ code: ErrorCode.NOT_AUTHORIZED })
    const reported: string[] = []
    h.ep.on('subscriptionError', ({ key }) => { reported.push(key) })
    const waiting = h.ep.subscribe('log', { waitForAccess: true }, () => {})
    await flush()
    refuse(h, h.subRequest().sub)
    const sub = await waiting
    expect(sub.waitingForAccess).toBe(true)
    expect(reported).toEqual(['log'])
    // accessGranted sends again only what waits for access
    const before = subRequests(h).length
    h.transport.last.inject(encodeControl({ op: 'accessGranted' }))
    await flush()
    expect(subRequests(h).length).toBe(before + 1)
    // an unsubscribed waiting subscription is not asked for again
    refuse(h, h.subRequest().sub)
    await flush()
    await sub.unsubscribe()
    h.transport.last.inject(encodeControl({ op: 'accessGranted' }))
    await flush()
    expect(subRequests(h).filter((r) => r.op === 'sub').length).toBe(before + 1)
    await expect(h.ep.subscribe('log', { key: 'k2', waitForAccess: 'yes' as unknown as boolean }, () => {})).rejects.toBeInstanceOf(ConfigError)
  })
})
