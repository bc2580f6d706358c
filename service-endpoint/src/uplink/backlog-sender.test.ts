/**
 * BacklogSender alone, over a MemoryServicePersistence, with the link played by its hooks: the window,
 * frame splitting by count and bytes, the in-flight bytes limit, resending from the first
 * unacknowledged event after stop/start, acknowledgements that go back or beyond what was sent,
 * expiry before upload ([SVC-UPLOAD-1], [SVC-ORDER-1], [SVC-ACK-1], [SVC-EXPIRE-1]).
 */
import { describe, expect, it } from 'vitest'
import { ClosedError, PayloadKind, frameBytesOf, type RaisedEvent, type UpFrameOf } from '@herald/protocol'
import { MemoryServicePersistence } from '../persistence/memory-service-persistence.js'
import { BacklogSender } from './backlog-sender.js'

async function flush (): Promise<void> {
  for (let i = 0; i < 20; i++) await Promise.resolve()
}

function ev (seq: number, payloadBytes = 8): RaisedEvent {
  return { seq, name: 'e', category: 'queueing', raisedAt: 1, isNull: false, recipient: null, payloadKind: PayloadKind.bytes, payload: new Uint8Array(payloadBytes).fill(seq % 256) }
}

const range = (from: number, to: number): number[] => Array.from({ length: to - from + 1 }, (_, i) => from + i)

interface Limits { window?: number, maxEventsPerFrame?: number, maxFrameBytes?: number, maxInflightBytes?: number }

interface Harness {
  sender: BacklogSender
  persistence: MemoryServicePersistence
  frames: Array<UpFrameOf<RaisedEvent>>
  expired: number[]
  errors: unknown[]
  expire: Set<number>
  /** Whether the link takes frames (send returns false when not). */
  up: { online: boolean }
  sentSeqs: () => number[]
  append: (events: RaisedEvent[]) => Promise<void>
}

/** A memory persistence whose reads take their result when called and resolve only when the test releases them. */
class GatedPersistence extends MemoryServicePersistence {
  readonly held: Array<() => void> = []
  override async read (after: number, limit: number): Promise<RaisedEvent[]> {
    const events = await super.read(after, limit)
    await new Promise<void>((resolve) => { this.held.push(resolve) })
    return events
  }

  /** Lets the reads under way reach their gate, opens it, and lets what follows run. */
  async release (): Promise<void> {
    await flush()
    for (const r of this.held.splice(0)) r()
    await flush()
  }
}

function makeSender (limits: Limits = {}, persistence = new MemoryServicePersistence({ instance: 'inst' })): Harness {
  const frames: Array<UpFrameOf<RaisedEvent>> = []
  const expired: number[] = []
  const errors: unknown[] = []
  const expire = new Set<number>()
  const up = { online: true }
  const sender = new BacklogSender(persistence, {
    send: (frame) => {
      if (!up.online) return false
      frames.push(frame)
      return true
    },
    isExpired: (e) => expire.has(e.seq),
    onExpired: (events) => { expired.push(...events.map((e) => e.seq)) },
    onError: (err) => { errors.push(err) }
  }, limits.window ?? 100, limits.maxEventsPerFrame ?? 100, limits.maxFrameBytes ?? 1 << 20, limits.maxInflightBytes ?? 1 << 24)
  return {
    sender, persistence, frames, expired, errors, expire, up,
    sentSeqs: () => frames.flatMap((f) => f.events.map((e) => e.seq)),
    append: async (events) => {
      await persistence.append(events)
      sender.notify()
      await flush()
    }
  }
}

describe('BacklogSender', () => {
  it('keeps at most `window` events in flight and sends more only as acknowledgements free room, each event once, in order', async () => {
    const window = 5
    const h = makeSender({ window, maxEventsPerFrame: 2 })
    const total = 12
    await h.persistence.append(range(1, total).map((s) => ev(s)))
    h.sender.start()
    await flush()
    expect(h.sentSeqs()).toEqual(range(1, window))
    expect(h.sender.inflightCount).toBe(window)
    expect(h.frames.every((f) => f.events.length <= 2)).toBe(true)
    // no acknowledgement, no more frames however often it is nudged
    h.sender.notify()
    await flush()
    expect(h.sentSeqs()).toEqual(range(1, window))

    h.sender.acknowledge(2)
    await flush()
    expect(h.sentSeqs()).toEqual(range(1, window + 2))
    expect(h.sender.inflightCount).toBe(window)
    h.sender.acknowledge(window + 2)
    await flush()
    expect(h.sentSeqs()).toEqual(range(1, total))
    // each frame continues after the last event of the one before it [SVC-ORDER-1]
    let prev = 0
    for (const f of h.frames) {
      expect(f.after).toBe(prev)
      expect(f.instance).toBe('inst')
      prev = (f.events[f.events.length - 1] as RaisedEvent).seq
    }
    h.sender.acknowledge(total)
    await flush()
    expect(h.sender.inflightCount).toBe(0)
    expect(h.persistence.stats().count).toBe(0)
  })

  it('splits frames at maxEventsPerFrame and at about maxFrameBytes; an event over the target goes alone', async () => {
    const perEvent = frameBytesOf(ev(1))
    const perFrame = 3
    // room for `perFrame` events and half another
    const h = makeSender({ maxEventsPerFrame: 50, maxFrameBytes: perFrame * perEvent + Math.floor(perEvent / 2) })
    const bigPayload = perFrame * perEvent * 2
    await h.persistence.append([...range(1, 7).map((s) => ev(s)), ev(8, bigPayload), ev(9)])
    h.sender.start()
    await flush()
    expect(h.frames.map((f) => f.events.map((e) => e.seq))).toEqual([[1, 2, 3], [4, 5, 6], [7], [8], [9]])

    const byCount = makeSender({ maxEventsPerFrame: 4 })
    await byCount.persistence.append(range(1, 10).map((s) => ev(s)))
    byCount.sender.start()
    await flush()
    expect(byCount.frames.map((f) => f.events.length)).toEqual([4, 4, 2])
  })

  it('keeps in-flight payload bytes under maxInflightBytes (overshooting by one frame at most), and always sends one frame', async () => {
    const payload = 1000
    const maxInflightBytes = 2500
    const h = makeSender({ window: 100, maxEventsPerFrame: 1, maxInflightBytes })
    await h.persistence.append(range(1, 20).map((s) => ev(s, payload)))
    h.sender.start()
    await flush()
    // frames go while fewer than maxInflightBytes are in flight
    const expected = Math.ceil(maxInflightBytes / payload)
    expect(h.sender.inflightCount).toBe(expected)
    expect((expected - 1) * payload).toBeLessThan(maxInflightBytes)
    h.sender.acknowledge(1)
    await flush()
    expect(h.sentSeqs()).toEqual(range(1, expected + 1))

    // a single event larger than the limit still goes, alone
    const big = makeSender({ maxEventsPerFrame: 1, maxInflightBytes: 1024 })
    await big.persistence.append([ev(1, 4096), ev(2, 4096)])
    big.sender.start()
    await flush()
    expect(big.sentSeqs()).toEqual([1])
    big.sender.acknowledge(1)
    await flush()
    expect(big.sentSeqs()).toEqual([1, 2])
  })

  it('resends from the first unacknowledged event after stop/start, with `after` the last acknowledged seq', async () => {
    const h = makeSender({ window: 4, maxEventsPerFrame: 2 })
    await h.persistence.append(range(1, 6).map((s) => ev(s)))
    h.sender.start()
    await flush()
    h.sender.acknowledge(1)
    await flush()
    expect(h.sentSeqs()).toEqual(range(1, 5))
    h.sender.stop()
    h.frames.length = 0
    // acknowledgements still count while stopped (one may arrive just before the link goes down)
    h.sender.acknowledge(2)
    await h.append([ev(7)])
    expect(h.frames).toEqual([])
    h.sender.start()
    await flush()
    expect(h.frames[0]?.after).toBe(2)
    expect(h.sentSeqs()).toEqual(range(3, 6))
    h.sender.acknowledge(6)
    await flush()
    expect(h.sentSeqs()).toEqual(range(3, 7))
  })

  it('stops when the link refuses a frame, and resends that frame after start()', async () => {
    const h = makeSender({ maxEventsPerFrame: 2 })
    h.up.online = false
    await h.persistence.append(range(1, 3).map((s) => ev(s)))
    h.sender.start()
    await flush()
    expect(h.frames).toEqual([])
    expect(h.sender.inflightCount).toBe(0)
    await h.append([ev(4)])
    expect(h.frames).toEqual([])
    h.up.online = true
    h.sender.start()
    await flush()
    expect(h.sentSeqs()).toEqual(range(1, 4))
    expect(h.frames[0]?.after).toBe(0)
  })

  it('sends nothing when stopped while a read is under way', async () => {
    const h = makeSender()
    await h.persistence.append([ev(1)])
    h.sender.start()
    h.sender.stop()
    await flush()
    expect(h.frames).toEqual([])
  })

  it('ignores an acknowledgement that goes back; one beyond what was sent skips what the broker holds', async () => {
    const h = makeSender({ window: 3, maxEventsPerFrame: 1 })
    await h.persistence.append(range(1, 10).map((s) => ev(s)))
    h.sender.start()
    await flush()
    h.sender.acknowledge(2)
    await flush()
    expect(h.sentSeqs()).toEqual(range(1, 5))
    h.sender.acknowledge(1)
    await flush()
    expect(h.sender.acked).toBe(2)
    expect(h.sender.inflightCount).toBe(3)
    expect(h.sentSeqs()).toEqual(range(1, 5))
    expect(h.persistence.stats().count).toBe(8)

    // the broker holds up to 7 (e.g. the [SVC-SEQ-1] probe's answer): 6 and 7 are never sent
    h.sender.acknowledge(7)
    await flush()
    expect(h.sender.acked).toBe(7)
    expect(h.sentSeqs()).toEqual([...range(1, 5), ...range(8, 10)])
    const resumed = h.frames.find((f) => f.events[0]?.seq === 8)
    expect(resumed?.after).toBe(7)
    expect(h.errors).toEqual([])
  })

  it('never sends an event whose lifetime ran out: removes it and reports it [SVC-EXPIRE-1]', async () => {
    const h = makeSender()
    h.expire.add(2)
    h.expire.add(4)
    await h.persistence.append(range(1, 5).map((s) => ev(s)))
    h.sender.start()
    await flush()
    expect(h.sentSeqs()).toEqual([1, 3, 5])
    expect(h.expired).toEqual([2, 4])
    expect(h.frames[0]?.after).toBe(0)
    // removed at once, not only by the acknowledgement
    expect(h.persistence.stats().count).toBe(5 - h.expired.length)
    h.sender.acknowledge(5)
    await flush()
    expect(h.persistence.stats().count).toBe(0)
  })

  it('takes events appended while a pass runs in the same drain (none left waiting for the next append)', async () => {
    const h = makeSender({ maxEventsPerFrame: 2 })
    await h.persistence.append(range(1, 3).map((s) => ev(s)))
    h.sender.start()
    await h.persistence.append(range(4, 5).map((s) => ev(s)))
    h.sender.notify()
    await flush()
    expect(h.sentSeqs()).toEqual(range(1, 5))
  })

  it('takes events appended after the pass read the backlog empty, before it ended (the drain loop re-checks)', async () => {
    const persistence = new GatedPersistence({ instance: 'inst' })
    const h = makeSender({}, persistence)
    await persistence.append(range(1, 3).map((s) => ev(s)))
    h.sender.start()
    await persistence.release()
    expect(h.sentSeqs()).toEqual(range(1, 3))
    // the pass's next read found nothing and is on its way back: append now
    await flush()
    expect(persistence.held).toHaveLength(1)
    await persistence.append(range(4, 5).map((s) => ev(s)))
    h.sender.notify()
    for (let i = 0; i < 4; i++) await persistence.release()
    expect(h.sentSeqs()).toEqual(range(1, 5))
  })

  it('reports a persistence failure through onError', async () => {
    const h = makeSender()
    await h.persistence.append([ev(1)])
    await h.persistence.close()
    h.sender.start()
    await flush()
    expect(h.errors).toHaveLength(1)
    expect(h.errors[0]).toBeInstanceOf(ClosedError)
    expect(h.frames).toEqual([])
  })
})
