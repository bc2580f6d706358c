import { describe, it, expect } from 'vitest'
import { ManualClock, parseSite, decodeControl, encodeRequest, decodeEvents, FrameType, PayloadKind, silentLogger, type Control, type StoredEvent } from '@herald/shared'
import { waitFor } from '@herald/shared/testing'
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
    const frames: Buffer[] = []
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
