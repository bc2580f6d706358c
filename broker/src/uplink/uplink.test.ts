/**
 * The broker's Uplink alone, with a memory event store, a manual clock and a captured
 * `sendToService`: ack batching on the clock's defer ([SVC-ACK-1]), duplicates, gaps and out-of-order
 * frames ([SVC-ORDER-1]), poison frames ([SVC-MALFORMED-1], [SVC-MALFORMED-2], [SVC-REJECT-1]) and a
 * failing store ([SVC-ORDER-2]). No sockets, no real time.
 */
import { describe, expect, it } from 'vitest'
import { ErrorCode, ManualClock, PayloadKind, RequestError, decodeAck, encodeUp, silentLogger, utf8Encode, type AckFrame, type ServiceDefinition, type Site, type StoredEvent, type UpEvent } from '@herald/protocol'
import { parseSite } from '@herald/node-runtime'
import type { AppendBatch, AppendResult } from '../event-store/event-store.js'
import { MemoryEventStore } from '../event-store/memory-event-store.js'
import { Uplink } from './uplink.js'

const INSTANCE = 'inst-1'

/** A memory store whose appends fail with `failWith` while it is set. */
class FailingStore extends MemoryEventStore {
  failWith: Error | null = null
  override async append (batch: AppendBatch): Promise<AppendResult> {
    if (this.failWith !== null) throw this.failWith
    return await super.append(batch)
  }
}

async function flush (): Promise<void> {
  for (let i = 0; i < 10; i++) await Promise.resolve()
}

function ev (seq: number, over: Partial<UpEvent> = {}): UpEvent {
  return { seq, name: 'log', category: 'queueing', raisedAt: 1_000, isNull: false, recipient: null, payloadKind: PayloadKind.json, payload: utf8Encode(JSON.stringify(seq)), age: 0, ...over }
}

function up (after: number, events: UpEvent[], instance = INSTANCE): Uint8Array {
  return encodeUp({ instance, after, events })
}

interface Harness {
  uplink: Uplink
  store: FailingStore
  clock: ManualClock
  service: ServiceDefinition
  acks: AckFrame[]
  stored: StoredEvent[]
  failures: Array<{ serviceId: string, err: unknown }>
  /** Lets the store's appends resolve, then runs the deferred ack flush. */
  settle: () => Promise<void>
}

async function makeUplink (): Promise<Harness> {
  const site: Site = await parseSite({
    events: [{ name: 'log', category: 'queueing' }, { name: 'other', category: 'queueing' }, { name: 'state', category: 'replacing' }],
    services: [{ id: 'svc', secret: 'svc-secret-1', events: ['log', 'state'] }]
  })
  const store = new FailingStore({ limitsOf: (n) => site.events.get(n) })
  const clock = new ManualClock()
  const acks: AckFrame[] = []
  const stored: StoredEvent[] = []
  const failures: Array<{ serviceId: string, err: unknown }> = []
  const uplink = new Uplink({
    site,
    store,
    clock,
    logger: silentLogger,
    sendToService: (serviceId, frame) => {
      expect(serviceId).toBe('svc')
      acks.push(decodeAck(frame))
    },
    onStored: (events) => { stored.push(...events) },
    onStoreFailure: (serviceId, err) => { failures.push({ serviceId, err }) }
  })
  const service = site.services.get('svc') as ServiceDefinition
  return {
    uplink, store, clock, service, acks, stored, failures,
    settle: async () => { await flush(); clock.runDeferred() }
  }
}

describe('Uplink', () => {
  it('acknowledges after the commit, once per deferred turn: the frames handled together share one ACK [SVC-ACK-1]', async () => {
    const h = await makeUplink()
    h.uplink.handle(h.service, up(0, [ev(1), ev(2)]))
    h.uplink.handle(h.service, up(2, [ev(3)]))
    await flush()
    // committed, but the ACK waits for the deferred flush
    expect(h.stored.map((e) => e.seq)).toEqual([1, 2, 3])
    expect(h.acks).toEqual([])
    h.clock.runDeferred()
    expect(h.acks).toEqual([{ instance: INSTANCE, acked: 3, rejections: [], error: null }])
    h.uplink.handle(h.service, up(3, [ev(4)]))
    await h.settle()
    expect(h.acks.map((a) => a.acked)).toEqual([3, 4])
    expect(h.stored.map((e) => e.position)).toEqual([1, 2, 3, 4])
    expect(h.uplink.stats).toMatchObject({ frames: 3, stored: 4, duplicates: 0 })
  })

  it('keeps separate ACKs per instance and never merges an error ACK', async () => {
    const h = await makeUplink()
    h.uplink.handle(h.service, up(0, [ev(1)], 'a'))
    h.uplink.handle(h.service, up(0, [ev(1)], 'b'))
    h.uplink.handle(h.service, up(5, [ev(6)], 'b'))
    await h.settle()
    // an error ACK goes out as it is judged, the others after their commit
    const seen = h.acks.map((a) => [a.instance, a.error?.code ?? null, a.acked])
    expect(seen).toHaveLength(3)
    expect(seen).toContainEqual(['a', null, 1])
    expect(seen).toContainEqual(['b', null, 1])
    expect(seen.filter((a) => a[0] === 'b' && a[1] === ErrorCode.OUT_OF_ORDER)).toHaveLength(1)
  })

  it('stores a resent event once: an UP whose `after` is below what is stored is acknowledged up to its end, only the new events stored', async () => {
    const h = await makeUplink()
    h.uplink.handle(h.service, up(0, [ev(1), ev(2), ev(3)]))
    await h.settle()
    // the ACK was lost: the service resends from the last ACK it saw (0), with one new event
    h.uplink.handle(h.service, up(0, [ev(1), ev(2), ev(3), ev(4)]))
    await h.settle()
    expect(h.stored.map((e) => e.seq)).toEqual([1, 2, 3, 4])
    expect(h.acks.map((a) => a.acked)).toEqual([3, 4])
    expect(h.uplink.stats.duplicates).toBe(3)
    expect(h.uplink.stats.stored).toBe(4)
  })

  it('an empty UP (the [SVC-SEQ-1] probe) is answered with the highest seq held', async () => {
    const h = await makeUplink()
    h.uplink.handle(h.service, up(0, [ev(1), ev(7)]))
    await h.settle()
    h.uplink.handle(h.service, up(0, []))
    await h.settle()
    expect(h.acks.map((a) => [a.acked, a.error])).toEqual([[7, null], [7, null]])
  })

  it('accepts gaps in seq, but refuses a frame whose `after` was never handled, with what it holds [SVC-ORDER-1]', async () => {
    const h = await makeUplink()
    h.uplink.handle(h.service, up(0, [ev(2), ev(5)]))
    await h.settle()
    // after 5: a gap in seq is normal (skipped on purpose)
    h.uplink.handle(h.service, up(5, [ev(9)]))
    await h.settle()
    // after 12: frames between 9 and 12 are missing
    h.uplink.handle(h.service, up(12, [ev(13)]))
    await h.settle()
    expect(h.stored.map((e) => e.seq)).toEqual([2, 5, 9])
    expect(h.acks.map((a) => [a.acked, a.error?.code ?? null])).toEqual([[5, null], [9, null], [9, ErrorCode.OUT_OF_ORDER]])
    expect(h.uplink.stats.outOfOrder).toBe(1)
  })

  it('answers a frame that cannot be decoded, or has no instance, as MALFORMED_FRAME, stores nothing, and goes on [SVC-MALFORMED-1]', async () => {
    const h = await makeUplink()
    h.uplink.handle(h.service, new Uint8Array([1, 0xff, 0xff, 0xff]))
    h.uplink.handle(h.service, new Uint8Array([]))
    h.uplink.handle(h.service, up(0, [ev(1)], ''))
    h.uplink.handle(h.service, up(0, [ev(1)]))
    await h.settle()
    expect(h.acks.map((a) => [a.instance, a.acked, a.error?.code ?? null])).toEqual([
      ['', 0, ErrorCode.MALFORMED_FRAME],
      ['', 0, ErrorCode.MALFORMED_FRAME],
      ['', 0, ErrorCode.MALFORMED_FRAME],
      [INSTANCE, 1, null]
    ])
    expect(h.stored.map((e) => e.seq)).toEqual([1])
    expect(h.uplink.stats.malformed).toBe(3)
  })

  it('answers a frame of the persistence instance "mqtt", the broker\'s for plain-MQTT ingest, as MALFORMED_FRAME, storing nothing [PLAIN-INGEST-3]', async () => {
    const h = await makeUplink()
    h.uplink.handle(h.service, up(0, [ev(1)], 'mqtt'))
    await h.settle()
    expect(h.acks.map((a) => [a.instance, a.acked, a.error?.code ?? null])).toEqual([['mqtt', 0, ErrorCode.MALFORMED_FRAME]])
    expect(h.stored).toEqual([])
    expect(h.store.lastSeq('svc', 'mqtt')).toBe(0)
  })

  it('refuses a whole frame whose seqs do not increase, with what it holds', async () => {
    const h = await makeUplink()
    h.uplink.handle(h.service, up(0, [ev(1)]))
    await h.settle()
    h.uplink.handle(h.service, up(1, [ev(3), ev(2)]))
    h.uplink.handle(h.service, up(1, [ev(1)]))
    await h.settle()
    expect(h.acks.map((a) => [a.acked, a.error?.code ?? null])).toEqual([[1, null], [1, ErrorCode.MALFORMED_FRAME], [1, ErrorCode.MALFORMED_FRAME]])
    expect(h.stored.map((e) => e.seq)).toEqual([1])
  })

  it('rejects bad events one by one; they count as handled and do not hold back the others [SVC-REJECT-1]', async () => {
    const h = await makeUplink()
    h.uplink.handle(h.service, up(0, [
      ev(1),
      ev(2, { name: 'nope' }),
      ev(3, { name: 'other' }),
      ev(4, { category: 'replacing' }),
      ev(5, { payload: utf8Encode('{not json') }),
      ev(6, { payload: new Uint8Array([0x22, 0xff, 0x22]) }),
      ev(7, { isNull: true, payloadKind: PayloadKind.none, payload: new Uint8Array(0) }),
      ev(8)
    ]))
    await h.settle()
    expect(h.stored.map((e) => e.seq)).toEqual([1, 8])
    const ack = h.acks[0]
    expect(h.acks).toHaveLength(1)
    expect(ack?.acked).toBe(8)
    expect(ack?.rejections.map((r) => [r.seq, r.code])).toEqual([
      [2, ErrorCode.UNKNOWN_EVENT],
      [3, ErrorCode.NOT_AUTHORIZED],
      [4, ErrorCode.WRONG_CATEGORY],
      [5, ErrorCode.MALFORMED_FRAME],
      [6, ErrorCode.MALFORMED_FRAME],
      [7, ErrorCode.INVALID_ARGUMENT]
    ])
    expect(h.uplink.stats.rejected).toBe(6)
  })

  it('a store failure acknowledges nothing, reports the service, and forgets what it had accepted so the resend is stored [SVC-ORDER-2]', async () => {
    const h = await makeUplink()
    h.uplink.handle(h.service, up(0, [ev(1)]))
    await h.settle()
    h.store.failWith = new Error('disk I/O error')
    h.uplink.handle(h.service, up(1, [ev(2), ev(3)]))
    await h.settle()
    expect(h.failures.map((f) => [f.serviceId, (f.err as Error).message])).toEqual([['svc', 'disk I/O error']])
    expect(h.acks.map((a) => a.acked)).toEqual([1])
    h.store.failWith = null
    // the failed frame's end was forgotten: a frame continuing after it is out of order
    h.uplink.handle(h.service, up(3, [ev(4)]))
    // the resend (after the reconnect) is accepted and stored
    h.uplink.handle(h.service, up(1, [ev(2), ev(3), ev(4)]))
    await h.settle()
    expect(h.acks.map((a) => [a.acked, a.error?.code ?? null])).toEqual([[1, null], [1, ErrorCode.OUT_OF_ORDER], [4, null]])
    expect(h.stored.map((e) => e.seq)).toEqual([1, 2, 3, 4])
  })

  it('a store that refuses the batch itself answers MALFORMED_FRAME and keeps the connection [SVC-MALFORMED-2]', async () => {
    const h = await makeUplink()
    h.store.failWith = new RequestError(ErrorCode.PAYLOAD_TOO_LARGE, 'the store limits payloads')
    h.uplink.handle(h.service, up(0, [ev(1)]))
    await h.settle()
    expect(h.failures).toEqual([])
    expect(h.acks.map((a) => [a.acked, a.error?.code ?? null])).toEqual([[0, ErrorCode.MALFORMED_FRAME]])
    h.store.failWith = null
    h.uplink.handle(h.service, up(0, [ev(1)]))
    await h.settle()
    expect(h.acks.map((a) => a.acked)).toEqual([0, 1])
    expect(h.stored.map((e) => e.seq)).toEqual([1])
  })
})
