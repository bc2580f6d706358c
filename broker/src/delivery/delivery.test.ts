import { describe, it, expect } from 'vitest'
import { ManualClock, decodeControl, encodeRequest, decodeEvents, FrameType, PayloadKind, silentLogger, type Control, type Site, type StoredEvent } from '@herald/protocol'
import { parseSite } from '@herald/node-runtime'
import { waitFor } from '@herald/protocol/testing'
import { MemoryEventStore } from '../event-store/memory-event-store.js'
import type { ReadQuery } from '../event-store/event-store.js'
import { Delivery } from './delivery.js'

/** A memory store whose next read fails, to see what the delivery side does with it. */
class FlakyStore extends MemoryEventStore {
  failNext = false
  override async read (q: ReadQuery): Promise<StoredEvent[]> {
    if (this.failNext) {
      this.failNext = false
      throw new Error('disk I/O error')
    }
    return await super.read(q)
  }
}

const LIMITS = {
  maxWindow: 100, maxEventsPerFrame: 100, maxFrameBytes: 1 << 20, maxSubscriptions: 10, maxInflightBytes: 1 << 20,
  maxConnectionInflightBytes: 1 << 20, guestMaxSubscriptions: 2, guestMaxWindow: 10, guestMaxConnectionInflightBytes: 1 << 16, maxConcurrentReads: 4
}

describe('Delivery', () => {
  it('ends a subscription whose read failed, tells the client, and accepts the same subscription again', async () => {
    const site = await parseSite({ events: [{ name: 'log', category: 'queueing' }], users: [{ name: 'u', password: 'password-1' }] })
    const store = new FlakyStore({ limitsOf: (n) => site.events.get(n) })
    await store.append({ serviceId: 's', instance: 'i', events: [{ seq: 1, name: 'log', category: 'queueing', raisedAt: 1, isNull: false, recipient: null, payloadKind: PayloadKind.json, payload: Buffer.from('1') }], handledUpTo: 1, receivedAt: 1 })
    const frames: Uint8Array[] = []
    const delivery = new Delivery({
      site, store, clock: new ManualClock(2), logger: silentLogger,
      limits: LIMITS
    })
    const session = delivery.open({ kind: 'client', key: 'u/app', user: site.users.get('u') ?? null }, { write: (frame) => { frames.push(frame) }, blocked: false })
    const sub = { op: 'sub', sub: 1, event: 'log', services: null, position: 0, start: 'all', window: 10 } as const
    store.failNext = true
    delivery.handleRequest(session, encodeRequest(sub))
    await waitFor(() => frames.length >= 2, 'two CONTROL frames')
    const controls = (): Control[] => frames.filter((f) => f[0] === FrameType.CONTROL).map(decodeControl)
    expect(controls().map((c) => c.op === 'error' ? c.code : c.op)).toEqual(['subscribed', 'PERSISTENCE_FAILED'])
    expect(session.subs.size).toBe(0)

    delivery.handleRequest(session, encodeRequest(sub))
    await waitFor(() => frames.some((f) => f[0] === FrameType.EVENTS), 'an EVENTS frame')
    expect(controls().map((c) => c.op === 'error' ? c.code : c.op)).toEqual(['subscribed', 'PERSISTENCE_FAILED', 'subscribed'])
    const events = frames.filter((f) => f[0] === FrameType.EVENTS).map((f) => decodeEvents(f, () => 'log'))
    expect(events.map((f) => f?.events.map((e) => e.position))).toEqual([[1]])
  })
})

describe('Delivery back-pressure ([CLI-BACKPRESSURE-1], [CLI-GUEST-1])', () => {
  /** A memory store that counts reads. */
  class CountingStore extends MemoryEventStore {
    reads = 0
    override async read (q: ReadQuery): Promise<StoredEvent[]> {
      this.reads++
      return await super.read(q)
    }
  }

  async function setup (limits: Partial<typeof LIMITS> = {}): Promise<{ store: CountingStore, delivery: Delivery, append: (n: number) => Promise<void>, site: Site }> {
    const site = await parseSite({ guests: true, events: [{ name: 'log', category: 'queueing', access: 'everyone' }], users: [{ name: 'u', password: 'password-1' }] })
    const store = new CountingStore({ limitsOf: (n) => site.events.get(n) })
    const delivery = new Delivery({ site, store, clock: new ManualClock(2), logger: silentLogger, limits: { ...LIMITS, ...limits } })
    let seq = 0
    const append = async (n: number): Promise<void> => {
      const events = Array.from({ length: n }, () => ({ seq: ++seq, name: 'log', category: 'queueing' as const, raisedAt: 1, isNull: false, recipient: null, payloadKind: PayloadKind.bytes, payload: Buffer.alloc(100) }))
      const r = await store.append({ serviceId: 's', instance: 'i', events, handledUpTo: seq, receivedAt: 1 })
      delivery.onStored(r.stored)
    }
    return { store, delivery, append, site }
  }

  /** An output that records frames and is blocked while `blocked` is set. */
  function output (): { write: (f: Uint8Array) => void, blocked: boolean, frames: Uint8Array[], positions: (sub: number) => number[], controls: () => Control[] } {
    const frames: Uint8Array[] = []
    return {
      frames,
      blocked: false,
      write: (f) => { frames.push(f) },
      positions: (sub) => frames.filter((f) => f[0] === FrameType.EVENTS).map((f) => decodeEvents(f, () => 'log')).filter((f) => f?.sub === sub).flatMap((f) => f?.events.map((e) => e.position) ?? []),
      controls: () => frames.filter((f) => f[0] === FrameType.CONTROL).map(decodeControl)
    }
  }

  const subReq = (sub: number, window = 100): Uint8Array => encodeRequest({ op: 'sub', sub, event: 'log', services: null, position: 0, start: 'all', window })
  const range = (from: number, to: number): number[] => Array.from({ length: to - from + 1 }, (_, i) => from + i)

  it('reads nothing for a blocked connection, also when events are stored meanwhile, and sends them all in order once it drained', async () => {
    const { store, delivery, append, site } = await setup()
    await append(10)
    const out = output()
    out.blocked = true
    const session = delivery.open({ kind: 'client', key: 'u/app', user: site.users.get('u') ?? null }, out)
    delivery.handleRequest(session, subReq(1))
    await append(5)
    await new Promise((resolve) => setImmediate(resolve))
    expect(out.controls().map((c) => c.op)).toEqual(['subscribed'])
    expect(out.positions(1)).toEqual([])
    expect(store.reads).toBe(0)

    out.blocked = false
    delivery.drained(session)
    await waitFor(() => out.positions(1).length >= 15, '15 events')
    // and it is caught up again: a new event goes straight from memory
    const reads = store.reads
    await append(1)
    await waitFor(() => out.positions(1).length >= 16, 'the live event')
    expect(out.positions(1)).toEqual(range(1, 16))
    expect(store.reads).toBe(reads)
  })

  it('stops at a frame boundary when the connection blocks, and goes on from there after drained', async () => {
    const { delivery, append, site } = await setup({ maxEventsPerFrame: 5 })
    await append(20)
    const out = output()
    const write = out.write
    // the connection blocks after the first frame it is given
    out.write = (f) => { write(f); if (f[0] === FrameType.EVENTS) out.blocked = true }
    const session = delivery.open({ kind: 'client', key: 'u/app', user: site.users.get('u') ?? null }, out)
    delivery.handleRequest(session, subReq(1))
    await waitFor(() => out.positions(1).length >= 5, 'a frame')
    await new Promise((resolve) => setImmediate(resolve))
    expect(out.positions(1)).toEqual(range(1, 5))
    out.write = write
    out.blocked = false
    delivery.drained(session)
    await waitFor(() => out.positions(1).length >= 20, '20 events')
    expect(out.positions(1)).toEqual(range(1, 20))
  })

  it('shares one byte budget among the subscriptions of a connection; acks on any let the others go on', async () => {
    const { delivery, append, site } = await setup({ maxConnectionInflightBytes: 1000 })
    await append(20)
    const out = output()
    const session = delivery.open({ kind: 'client', key: 'u/app', user: site.users.get('u') ?? null }, out)
    for (const id of [1, 2, 3]) delivery.handleRequest(session, subReq(id))
    await waitFor(() => out.positions(1).length + out.positions(2).length + out.positions(3).length > 0, 'some events')
    await new Promise((resolve) => setImmediate(resolve))
    const inFlight = (): number => [1, 2, 3].reduce((n, id) => n + out.positions(id).length, 0)
    // 1,000 bytes of 100-byte payloads: 10 events, the one reaching the budget included
    expect(inFlight()).toBe(10)
    for (let round = 0; round < 20 && [1, 2, 3].some((id) => out.positions(id).length < 20); round++) {
      const before = inFlight()
      for (const id of [1, 2, 3]) {
        const p = out.positions(id)
        if (p.length > 0) delivery.handleRequest(session, encodeRequest({ op: 'ack', sub: id, position: p[p.length - 1] as number }))
      }
      await waitFor(() => inFlight() > before || [1, 2, 3].every((id) => out.positions(id).length >= 20), 'more events after the acks')
    }
    for (const id of [1, 2, 3]) expect(out.positions(id)).toEqual(range(1, 20))
  })

  it('gives guests their own, tighter limits on subscriptions, window and bytes', async () => {
    const { delivery, append, site } = await setup({ guestMaxSubscriptions: 2, guestMaxWindow: 5, guestMaxConnectionInflightBytes: 10_000 })
    await append(20)
    const guest = output()
    const g = delivery.open({ kind: 'client', key: '~guest/g', user: null }, guest)
    for (const id of [1, 2, 3]) delivery.handleRequest(g, subReq(id))
    const user = output()
    const u = delivery.open({ kind: 'client', key: 'u/app', user: site.users.get('u') ?? null }, user)
    for (const id of [1, 2, 3]) delivery.handleRequest(u, subReq(id))
    await waitFor(() => [1, 2, 3].every((id) => user.positions(id).length >= 20) && guest.positions(2).length >= 5, 'the events')
    await new Promise((resolve) => setImmediate(resolve))
    expect(guest.controls().map((c) => c.op === 'error' ? c.code : c.op)).toEqual(['subscribed', 'subscribed', 'CAPACITY_EXCEEDED'])
    expect(guest.positions(1)).toEqual(range(1, 5))
    expect(guest.positions(2)).toEqual(range(1, 5))
    expect(user.controls().map((c) => c.op)).toEqual(['subscribed', 'subscribed', 'subscribed'])
  })
})

describe('Delivery.recheck ([SITE-RELOAD-5])', () => {
  it('ends the subscriptions a new site no longer allows, naming the event, keeps the others, and uses the new roles for new ones', async () => {
    const doc = (aliceRoles: string[], withLog: boolean) => ({
      events: [
        { name: 'alarms', category: 'queueing', access: { roles: ['ops'] } },
        { name: 'readings', category: 'queueing' },
        ...(withLog ? [{ name: 'log', category: 'queueing' }] : [])
      ],
      users: [{ name: 'alice', password: 'password-1', roles: aliceRoles }]
    })
    const before = await parseSite(doc(['ops'], true))
    const after = await parseSite(doc([], false))
    let site: Site = before
    const store = new MemoryEventStore({ limitsOf: (n) => site.events.get(n) })
    const frames: Uint8Array[] = []
    const delivery = new Delivery({ site, store, clock: new ManualClock(2), logger: silentLogger, limits: LIMITS })
    const session = delivery.open({ kind: 'client', key: 'alice/app', user: before.users.get('alice') ?? null }, { write: (frame) => { frames.push(frame) }, blocked: false })
    const sub = (id: number, event: string) => encodeRequest({ op: 'sub', sub: id, event, services: null, position: 0, start: 'all', window: 10 })
    delivery.handleRequest(session, sub(1, 'alarms'))
    delivery.handleRequest(session, sub(2, 'readings'))
    delivery.handleRequest(session, sub(3, 'log'))
    const controls = (): Control[] => frames.filter((f) => f[0] === FrameType.CONTROL).map(decodeControl)
    expect(controls().map((c) => c.op)).toEqual(['subscribed', 'subscribed', 'subscribed'])

    site = after
    delivery.recheck(after, (s) => ({ ...s.principal, user: after.users.get('alice') ?? null }))
    const ended = controls().slice(3)
    expect(ended).toEqual([
      { op: 'error', sub: 1, code: 'NOT_AUTHORIZED', message: 'user "alice" may no longer receive "alarms" (the site changed)' },
      { op: 'error', sub: 3, code: 'UNKNOWN_EVENT', message: 'event "log" was removed from the site' }
    ])
    expect([...session.subs.keys()]).toEqual([2])
    // the kept subscription still gets what is stored
    const r = await store.append({ serviceId: 's', instance: 'i', events: [{ seq: 1, name: 'readings', category: 'queueing', raisedAt: 1, isNull: false, recipient: null, payloadKind: PayloadKind.json, payload: Buffer.from('1') }], handledUpTo: 1, receivedAt: 1 })
    delivery.onStored(r.stored)
    await waitFor(() => frames.some((f) => f[0] === FrameType.EVENTS), 'an EVENTS frame for the kept subscription')
    // a new subscription is checked with the new roles
    delivery.handleRequest(session, sub(4, 'alarms'))
    expect(controls().at(-1)).toMatchObject({ op: 'error', sub: 4, code: 'NOT_AUTHORIZED' })
    expect(delivery.lag(store.head()).has('alarms')).toBe(false)
  })
})

describe('Delivery gap notices ([CLI-GAP-1] .. [CLI-GAP-4])', () => {
  async function setup (): Promise<{ delivery: Delivery, frames: Uint8Array[], session: ReturnType<Delivery['open']> }> {
    const site = await parseSite({ events: [{ name: 'log', category: 'queueing', maxQueueSize: 3 }], users: [{ name: 'u', password: 'password-1' }] })
    const store = new MemoryEventStore({ limitsOf: (n) => site.events.get(n) })
    const events = Array.from({ length: 8 }, (_, i) => ({ seq: i + 1, name: 'log', category: 'queueing' as const, raisedAt: 1, isNull: false, recipient: null, payloadKind: PayloadKind.json, payload: Buffer.from('1') }))
    await store.append({ serviceId: 's', instance: 'i', events, handledUpTo: 8, receivedAt: 1 })
    const frames: Uint8Array[] = []
    const delivery = new Delivery({ site, store, clock: new ManualClock(2), logger: silentLogger, limits: LIMITS })
    const session = delivery.open({ kind: 'client', key: 'u/app', user: site.users.get('u') ?? null }, { write: (frame) => { frames.push(frame) }, blocked: false })
    return { delivery, frames, session }
  }
  const ops = (frames: Uint8Array[]): string[] => frames.map((f) => f[0] === FrameType.CONTROL ? decodeControl(f).op : 'events')

  it('tells a subscription that asked, before its first EVENTS frame, and counts it', async () => {
    const { delivery, frames, session } = await setup()
    delivery.handleRequest(session, encodeRequest({ op: 'sub', sub: 1, event: 'log', services: null, position: 2, start: 'all', window: 10, gaps: true }))
    await waitFor(() => frames.some((f) => f[0] === FrameType.EVENTS), 'an EVENTS frame')
    expect(ops(frames)).toEqual(['subscribed', 'gap', 'events'])
    expect(decodeControl(frames[1] as Uint8Array)).toEqual({ op: 'gap', sub: 1, event: 'log', services: ['s'], missed: 3, exact: true, pushedOut: 3, expired: 0, after: 2, upTo: 5 })
    expect(delivery.gapsByEvent.get('log')).toEqual({ gaps: 1, missed: 3 })
  })

  it('sends an older client (no "gaps" in its request) no gap CONTROL, but counts the gap', async () => {
    const { delivery, frames, session } = await setup()
    delivery.handleRequest(session, encodeRequest({ op: 'sub', sub: 1, event: 'log', services: null, position: 0, start: 'all', window: 10 }))
    await waitFor(() => frames.some((f) => f[0] === FrameType.EVENTS), 'an EVENTS frame')
    expect(ops(frames)).toEqual(['subscribed', 'events'])
    expect(delivery.gapsByEvent.get('log')).toEqual({ gaps: 1, missed: 5 })
  })
})

describe('Delivery start latest ([CLI-START-4])', () => {
  it('sends only the newest event per service up to its head, across reads of a few events each, then new ones; skipping is no gap', async () => {
    const site = await parseSite({ events: [{ name: 'log', category: 'queueing', maxQueueSize: 4 }], users: [{ name: 'u', password: 'password-1' }] })
    const store = new MemoryEventStore({ limitsOf: (n) => site.events.get(n) })
    let seq = 0
    const append = async (service: string, n: number): Promise<number[]> => {
      const events = Array.from({ length: n }, () => ({ seq: ++seq, name: 'log', category: 'queueing' as const, raisedAt: 1, isNull: false, recipient: null, payloadKind: PayloadKind.json, payload: Buffer.from('1') }))
      const r = await store.append({ serviceId: service, instance: 'i', events, handledUpTo: seq, receivedAt: 1 })
      delivery.onStored(r.stored)
      return r.stored.map((e) => e.position)
    }
    const frames: Uint8Array[] = []
    const delivery = new Delivery({ site, store, clock: new ManualClock(2), logger: silentLogger, limits: { ...LIMITS, maxEventsPerFrame: 2 } })
    const lasts: number[] = []
    for (const s of ['s1', 's2', 's3', 's1', 's2']) lasts.push(...(await append(s, 3)).slice(-1)) // s1's first 3 are pushed out by its next 3
    const session = delivery.open({ kind: 'client', key: 'u/app', user: site.users.get('u') ?? null }, { write: (frame) => { frames.push(frame) }, blocked: false })
    delivery.handleRequest(session, encodeRequest({ op: 'sub', sub: 1, event: 'log', services: null, position: 0, start: 'latest', window: 10, gaps: true }))
    const positions = (): number[] => frames.filter((f) => f[0] === FrameType.EVENTS).flatMap((f) => decodeEvents(f, () => 'log')?.events.map((e) => e.position) ?? [])
    await waitFor(() => positions().length === 3, 'the three latest')
    const fresh = await append('s3', 1)
    await waitFor(() => positions().length === 4, 'the new one')
    expect(positions()).toEqual([lasts[2], lasts[3], lasts[4], ...fresh])
    expect(frames.filter((f) => f[0] === FrameType.CONTROL).map((f) => decodeControl(f).op)).toEqual(['subscribed'])
  })
})
