/**
 * A consumer group member alone ([GROUP-ACK-1], [GROUP-ORDER-1], [GROUP-REDELIVER-1], [GROUP-CTRL-*]):
 * a MemoryTransport (the test plays the broker) and a ManualClock. No sockets, no real time.
 */
import { describe, expect, it } from 'vitest'
import { ErrorCode, ManualClock, PayloadKind, encodeControl, encodeGroupEvents, utf8Encode, type GroupAckRequest, type StoredEvent } from '@herald/protocol'
import { MemoryTransport } from '@herald/protocol/testing'
import { ClientEndpoint } from './client-endpoint.js'
import type { HeraldEvent } from './herald-event.js'

async function flush (): Promise<void> {
  for (let i = 0; i < 50; i++) await Promise.resolve()
}

function stored (position: number, serviceId = 'svc'): StoredEvent {
  return {
    position, serviceId, instance: 'inst', seq: position, name: 'jobs', category: 'queueing',
    raisedAt: 1_000, receivedAt: 1_000, expiresAt: null, uploadAge: 0, isNull: false, recipient: null,
    payloadKind: PayloadKind.json, payload: utf8Encode(JSON.stringify({ n: position }))
  }
}

async function member () {
  const clock = new ManualClock()
  const transport = new MemoryTransport()
  const ep = new ClientEndpoint({ url: 'mqtt://broker.invalid:1883', clientName: 'm1', user: 'alice', password: 'alice-password-1', transport, clock, random: () => 0.5, retryInitialMs: 100, retryMaxMs: 800 })
  ep.start()
  transport.last.open()
  await flush()
  const seen: HeraldEvent[] = []
  const gate: { release: (() => void) | null } = { release: null }
  const p = ep.subscribe('jobs', { group: 'billing', segments: 4 }, async (e) => {
    seen.push(e)
    if (e.position === 100) await new Promise<void>((resolve) => { gate.release = resolve })
  })
  await flush()
  const join = transport.last.requests().find((r) => r.op === 'gjoin')
  if (join === undefined || join.op !== 'gjoin') throw new Error('no gjoin request')
  const sub = join.sub
  const inject = async (frame: Uint8Array): Promise<void> => { transport.last.inject(frame); await flush() }
  await inject(encodeControl({ op: 'joined', sub, category: 'queueing', segments: 4 }))
  const g = await p
  const gacks = (): GroupAckRequest[] => transport.last.requests().filter((r): r is GroupAckRequest => r.op === 'gack')
  const commit = async (a: GroupAckRequest): Promise<void> => { await inject(encodeControl({ op: 'committed', sub, segment: a.segment, epoch: a.epoch, done: a.done, started: a.started })) }
  return { ep, g, sub, seen, inject, gacks, commit, join, release: () => { gate.release?.() } }
}

describe('consumer group member (memory transport, manual clock)', () => {
  it('joins with its group, segments and window', async () => {
    const m = await member()
    expect(m.join).toMatchObject({ op: 'gjoin', group: 'billing', event: 'jobs', services: null, segments: 4, start: 'all', window: 1000 })
    await m.ep.close()
  })

  it('runs a handler only once its started mark is committed, one at a time per segment, in order [GROUP-ACK-1] [GROUP-ORDER-1]', async () => {
    const m = await member()
    await m.inject(encodeControl({ op: 'assigned', sub: m.sub, claims: [{ segment: 1, epoch: 3 }] }))
    expect(m.g.segments).toEqual([1])
    await m.inject(encodeGroupEvents(m.sub, 1, 3, 0, 1_000, [stored(5), stored(7)]))
    expect(m.seen).toEqual([])
    expect(m.gacks()).toEqual([{ op: 'gack', sub: m.sub, segment: 1, epoch: 3, done: 0, started: 5 }])
    await m.commit(m.gacks()[0]!)
    expect(m.seen.map((e) => e.position)).toEqual([5])
    expect(m.gacks()[1]).toEqual({ op: 'gack', sub: m.sub, segment: 1, epoch: 3, done: 5, started: 7 })
    await m.commit(m.gacks()[1]!)
    expect(m.seen.map((e) => e.position)).toEqual([5, 7])
    // the queue ran empty: the done mark goes out, not waited for
    expect(m.gacks()[2]).toEqual({ op: 'gack', sub: m.sub, segment: 1, epoch: 3, done: 7, started: 7 })
    expect(m.g.delivered).toBe(2)
    await m.ep.close()
  })

  it('handles segments in parallel: a slow handler in one does not hold another [GROUP-ORDER-1]', async () => {
    const m = await member()
    await m.inject(encodeControl({ op: 'assigned', sub: m.sub, claims: [{ segment: 0, epoch: 1 }, { segment: 2, epoch: 1 }] }))
    await m.inject(encodeGroupEvents(m.sub, 0, 1, 0, 1_000, [stored(100), stored(101)]))
    await m.inject(encodeGroupEvents(m.sub, 2, 1, 0, 1_000, [stored(102)]))
    for (const a of m.gacks()) await m.commit(a)
    // 100 is still running; 102 of the other segment ran; 101 waits behind 100
    expect(m.seen.map((e) => e.position)).toEqual([100, 102])
    m.release()
    await new Promise((resolve) => setImmediate(resolve))
    await m.commit(m.gacks().find((a) => a.started === 101)!)
    expect(m.seen.map((e) => e.position)).toEqual([100, 102, 101])
    await m.ep.close()
  })

  it('flags the event the frame names redelivered, and drops frames of an old epoch and revoked segments [GROUP-REDELIVER-1] [GROUP-CTRL-3]', async () => {
    const m = await member()
    await m.inject(encodeControl({ op: 'assigned', sub: m.sub, claims: [{ segment: 3, epoch: 9 }] }))
    await m.inject(encodeGroupEvents(m.sub, 3, 8, 0, 1_000, [stored(1)])) // an old claim's frame
    expect(m.gacks()).toEqual([])
    await m.inject(encodeGroupEvents(m.sub, 3, 9, 4, 1_000, [stored(4), stored(6)]))
    await m.commit(m.gacks()[0]!)
    await m.commit(m.gacks()[1]!)
    expect(m.seen.map((e) => [e.position, e.redelivered])).toEqual([[4, true], [6, false]])
    expect(m.g.redelivered).toBe(1)
    await m.inject(encodeControl({ op: 'revoked', sub: m.sub, segments: [3] }))
    expect(m.g.segments).toEqual([])
    const before = m.gacks().length
    await m.inject(encodeGroupEvents(m.sub, 3, 9, 0, 1_000, [stored(8)]))
    expect(m.gacks().length).toBe(before)
    await m.ep.close()
  })

  it('rejects subscribe() with the broker\'s typed error, e.g. GROUP_MISMATCH [GROUP-JOIN-3]', async () => {
    const clock = new ManualClock()
    const transport = new MemoryTransport()
    const ep = new ClientEndpoint({ url: 'mqtt://broker.invalid:1883', clientName: 'm1', user: 'alice', password: 'alice-password-1', transport, clock })
    ep.start()
    transport.last.open()
    await flush()
    const p = ep.subscribe('jobs', { group: 'g', segments: 8 }, () => {})
    await flush()
    const join = transport.last.requests().find((r) => r.op === 'gjoin')!
    transport.last.inject(encodeControl({ op: 'error', sub: join.sub, code: ErrorCode.GROUP_MISMATCH, message: 'group "g" has 16 segments' }))
    await expect(p).rejects.toMatchObject({ code: ErrorCode.GROUP_MISMATCH })
    await expect(ep.subscribe('jobs', { group: 'g', segments: 12 }, () => {})).rejects.toMatchObject({ code: ErrorCode.CONFIG_INVALID })
    await ep.close()
  })
})
