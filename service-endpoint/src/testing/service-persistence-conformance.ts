/**
 * The conformance suite of `ServicePersistence`: every rule of its doc comment ([SVC-PERSIST-*]),
 * with exact values. Each backend's test file is one call to `describeServicePersistenceConformance`.
 */
import { afterEach, describe, expect, it } from 'vitest'
import { ErrorCode, HeraldError, PayloadKind, PersistenceError, eventSize, type Category, type RaisedEvent } from '@herald/protocol'
import { MARK_LIMITS } from '../persistence/service-persistence.js'
import type { OverflowPolicy, ServicePersistence } from '../persistence/service-persistence.js'

/** What a backend's factory returns for one test. */
export interface ServicePersistenceFixture {
  /** A fresh, empty persistence. */
  persistence: ServicePersistence
  /**
   * For durable backends: opens the same storage again. The suite closes the previous persistence
   * first. Its presence declares the backend durable (`stats().durable` must be true).
   */
  reopen?: () => Promise<ServicePersistence>
  /** Removes the storage; called after the suite has closed every persistence it got. */
  cleanup: () => Promise<void>
}

/** Makes a fresh persistence with these settings; called once or more per test. */
export type ServicePersistenceFactory = (opts: { capacityBytes: number, policy: OverflowPolicy }) => Promise<ServicePersistenceFixture>

const NAME = 'sensor.temp'
const BASE_SIZE = eventSize({ seq: 0, name: NAME, category: 'queueing', raisedAt: 0, isNull: false, recipient: null, payloadKind: PayloadKind.bytes, payload: new Uint8Array(0) })

/** A queueing event whose eventSize is exactly `size` (>= 59), with payload bytes derived from seq. */
export function sizedEvent (seq: number, size = 100): RaisedEvent {
  const payload = new Uint8Array(size - BASE_SIZE)
  for (let i = 0; i < payload.length; i++) payload[i] = (seq * 31 + i * 7) & 0xff
  return { seq, name: NAME, category: 'queueing', raisedAt: 1_700_000_000_000 + seq, isNull: false, recipient: null, payloadKind: PayloadKind.bytes, payload }
}

/** An event as plain data, so a Buffer and a Uint8Array with the same bytes compare equal. */
function plain (e: RaisedEvent): Record<string, unknown> {
  return { seq: e.seq, name: e.name, category: e.category, raisedAt: e.raisedAt, isNull: e.isNull, recipient: e.recipient, payloadKind: e.payloadKind, payload: Array.from(e.payload) }
}

const plainAll = (events: readonly RaisedEvent[]): Array<Record<string, unknown>> => events.map(plain)
const seqsOf = (events: readonly RaisedEvent[]): number[] => events.map((e) => e.seq)
const bytesOf = (events: readonly RaisedEvent[]): number => events.reduce((n, e) => n + eventSize(e), 0)
const range = (from: number, to: number): number[] => Array.from({ length: to - from + 1 }, (_, i) => from + i)
/** Marks as sorted [key, value] pairs, for comparisons that do not depend on insertion order. */
const entries = (marks: ReadonlyMap<string, string>): Array<[string, string]> => [...marks].sort(([a], [b]) => a < b ? -1 : a > b ? 1 : 0)

/** The error a promise rejects with, or a failure if it resolves. */
async function rejection (p: Promise<unknown>): Promise<HeraldError> {
  const outcome = await p.then(() => 'resolved' as const, (err: unknown) => err)
  if (outcome === 'resolved') throw new Error('expected a rejection, but the call resolved')
  expect(outcome).toBeInstanceOf(HeraldError)
  return outcome as HeraldError
}

/** Registers the conformance tests of a `ServicePersistence` backend. */
export function describeServicePersistenceConformance (name: string, factory: ServicePersistenceFactory): void {
  describe(`ServicePersistence conformance: ${name}`, () => {
    const open: Array<{ fixture: ServicePersistenceFixture, current: ServicePersistence }> = []

    afterEach(async () => {
      for (const o of open.splice(0)) {
        await o.current.close()
        await o.fixture.cleanup()
      }
    })

    /** A fresh store; `reopen` (if any) closes the current one and returns the reopened one. */
    async function fresh (capacityBytes = 16 * 1024 * 1024, policy: OverflowPolicy = 'dropOldest') {
      const fixture = await factory({ capacityBytes, policy })
      const entry = { fixture, current: fixture.persistence }
      open.push(entry)
      const reopenFn = fixture.reopen
      const reopen = reopenFn === undefined
        ? undefined
        : async (): Promise<ServicePersistence> => {
          await entry.current.close()
          entry.current = await reopenFn()
          return entry.current
        }
      return { p: fixture.persistence, reopen }
    }

    /** Checks the held events (read from 0) and the counters against `expected`. */
    async function expectHeld (p: ServicePersistence, expected: readonly RaisedEvent[]): Promise<void> {
      expect(plainAll(await p.read(0, 1_000_000))).toEqual(plainAll(expected))
      const s = p.stats()
      expect(s.count).toBe(expected.length)
      expect(s.bytes).toBe(bytesOf(expected))
    }

    it('round-trips every field of every kind of event [SVC-PERSIST-5]', async () => {
      const { p, reopen } = await fresh()
      const allBytes = new Uint8Array(256)
      for (let i = 0; i < 256; i++) allBytes[i] = i
      const kinds: Array<[Category, boolean, string | null, PayloadKind, Uint8Array]> = [
        ['queueing', false, null, PayloadKind.json, Buffer.from(JSON.stringify({ t: 21.5, unit: '°C', list: [1, null, 'x'] }), 'utf8')],
        ['private', false, 'alice/phone', PayloadKind.bytes, allBytes],
        ['replacing', true, null, PayloadKind.none, new Uint8Array(0)],
        ['replacing', false, null, PayloadKind.json, Buffer.from('"on"', 'utf8')],
        ['queueing', false, null, PayloadKind.bytes, new Uint8Array(0)]
      ]
      const events: RaisedEvent[] = kinds.map(([category, isNull, recipient, payloadKind, payload], i) => ({
        seq: i + 1, name: `device.thing${i}`, category, raisedAt: 1_731_000_000_123 + i * 1_000, isNull, recipient, payloadKind, payload
      }))
      const outcome = await p.append(events)
      expect(outcome.dropped).toEqual([])
      await expectHeld(p, events)
      if (reopen !== undefined) await expectHeld(await reopen(), events)
    })

    it('[SVC-KEY-3] keeps the replacing key of keyed events, and no key on unkeyed ones', async () => {
      const { p, reopen } = await fresh()
      const base = { category: 'replacing' as const, raisedAt: 1_731_000_000_000, recipient: null, payloadKind: PayloadKind.json, payload: Buffer.from('{"t":1}', 'utf8') }
      const events: RaisedEvent[] = [
        { ...base, seq: 1, name: 'thermo', isNull: false, key: 't1' },
        { ...base, seq: 2, name: 'thermo', isNull: true, payloadKind: PayloadKind.none, payload: new Uint8Array(0), key: 'Größe 📱' },
        { ...base, seq: 3, name: 'door', isNull: false }
      ]
      await p.append(events)
      const check = async (q: ServicePersistence): Promise<void> => {
        const back = await q.read(0, 10)
        expect(back.map((e) => e.key)).toEqual(['t1', 'Größe 📱', undefined])
        expect('key' in (back[2] as object)).toBe(false)
      }
      await check(p)
      if (reopen !== undefined) await check(await reopen())
    })

    it('keeps events in seq order across appends, with gaps in the seqs [SVC-PERSIST-5]', async () => {
      const { p } = await fresh()
      const events = [1, 2, 5, 9, 10, 11, 1_000_000_000_000].map((s) => sizedEvent(s, 60 + s % 50))
      await p.append(events.slice(0, 2))
      await p.append(events.slice(2, 3))
      await p.append(events.slice(3, 6))
      await p.append([])
      await p.append(events.slice(6))
      expect(seqsOf(await p.read(0, 100))).toEqual([1, 2, 5, 9, 10, 11, 1_000_000_000_000])
      await expectHeld(p, events)
    })

    it('stats() counts events and their eventSize bytes, and reports the capacity [SVC-PERSIST-4]', async () => {
      const { p, reopen } = await fresh(123_456)
      expect(p.stats()).toEqual({ count: 0, bytes: 0, capacityBytes: 123_456, durable: reopen !== undefined })
      const events = [sizedEvent(1, 70), sizedEvent(2, 1_000), sizedEvent(3, 59)]
      await p.append(events)
      expect(p.stats()).toEqual({ count: 3, bytes: 1_129, capacityBytes: 123_456, durable: reopen !== undefined })
    })

    it('lastSeq() is the highest seq ever appended and never goes back [SVC-PERSIST-2]', async () => {
      const { p, reopen } = await fresh()
      expect(p.lastSeq()).toBe(0)
      await p.append([sizedEvent(3), sizedEvent(4)])
      expect(p.lastSeq()).toBe(4)
      await p.append([sizedEvent(7)])
      expect(p.lastSeq()).toBe(7)
      await p.acknowledge(7)
      expect(p.stats().count).toBe(0)
      expect(p.lastSeq()).toBe(7)
      await p.append([sizedEvent(8), sizedEvent(9)])
      await p.remove([8, 9])
      expect(p.stats().count).toBe(0)
      expect(p.lastSeq()).toBe(9)
      if (reopen !== undefined) {
        const q = await reopen()
        expect(q.lastSeq()).toBe(9)
        await expectHeld(q, [])
        expect((await rejection(q.append([sizedEvent(9)]))).code).toBe(ErrorCode.INVALID_ARGUMENT)
        await q.append([sizedEvent(10)])
        expect(q.lastSeq()).toBe(10)
      }
    })

    it('has a random instance id, stable across reopening, new for a new store [SVC-PERSIST-1]', async () => {
      const a = await fresh()
      const b = await fresh()
      expect(typeof a.p.instance).toBe('string')
      expect(a.p.instance.length).toBeGreaterThanOrEqual(16)
      expect(b.p.instance).not.toBe(a.p.instance)
      if (a.reopen !== undefined) {
        const instance = a.p.instance
        await a.p.append([sizedEvent(1)])
        expect((await a.reopen()).instance).toBe(instance)
      }
    })

    it('rejects seqs not above lastSeq or not increasing with INVALID_ARGUMENT, storing nothing [SVC-PERSIST-3]', async () => {
      const { p, reopen } = await fresh()
      const held = [sizedEvent(1), sizedEvent(2), sizedEvent(5)]
      await p.append(held)
      const bad: RaisedEvent[][] = [
        [sizedEvent(5)], // equal to lastSeq
        [sizedEvent(4)], // below lastSeq
        [sizedEvent(6), sizedEvent(6)], // repeated
        [sizedEvent(8), sizedEvent(7)], // decreasing
        [sizedEvent(6), sizedEvent(7), sizedEvent(3)], // valid prefix, bad last one
        [sizedEvent(6.5)], // not an integer
        [sizedEvent(-1)]
      ]
      for (const events of bad) {
        const err = await rejection(p.append(events, [1]))
        expect(err.code).toBe(ErrorCode.INVALID_ARGUMENT)
        expect(p.lastSeq()).toBe(5)
        await expectHeld(p, held) // nor was the supersede applied
      }
      if (reopen !== undefined) {
        const q = await reopen()
        expect(q.lastSeq()).toBe(5)
        await expectHeld(q, held)
      }
    })

    it('deletes superseded events in the same append [SVC-PERSIST-3]', async () => {
      const { p, reopen } = await fresh()
      const events = [1, 2, 3, 4].map((s) => sizedEvent(s, 100 + s))
      await p.append(events)
      const e5 = sizedEvent(5, 77)
      // 99 is not held and 2 is listed twice: both are ignored
      const outcome = await p.append([e5], [2, 4, 99, 2])
      expect(outcome.dropped).toEqual([])
      const expected = [events[0], events[2], e5] as RaisedEvent[]
      await expectHeld(p, expected)
      expect(p.stats().bytes).toBe(101 + 103 + 77)
      // supersede without new events
      await p.append([], [1])
      await expectHeld(p, expected.slice(1))
      expect(p.lastSeq()).toBe(5)
      if (reopen !== undefined) await expectHeld(await reopen(), expected.slice(1))
    })

    it('reads pages of events after a seq [SVC-PERSIST-5]', async () => {
      const { p } = await fresh()
      const events = range(1, 10).map((s) => sizedEvent(s * 2, 60 + s))
      await p.append(events.slice(0, 4))
      await p.append(events.slice(4))
      const pages: number[][] = []
      let after = 0
      for (;;) {
        const page = await p.read(after, 3)
        pages.push(seqsOf(page))
        const last = page[page.length - 1]
        if (last === undefined) break
        after = last.seq
      }
      expect(pages).toEqual([[2, 4, 6], [8, 10, 12], [14, 16, 18], [20], []])
      expect(seqsOf(await p.read(7, 2))).toEqual([8, 10])
      expect(seqsOf(await p.read(8, 100))).toEqual([10, 12, 14, 16, 18, 20])
      expect(seqsOf(await p.read(20, 5))).toEqual([])
      expect(seqsOf(await p.read(0, 0))).toEqual([])
      expect(plainAll(await p.read(15, 2))).toEqual(plainAll(events.slice(7, 9)))
    })

    it('read() returns only events whose append has resolved [SVC-PERSIST-5]', async () => {
      const { p } = await fresh()
      const resolved = new Set<number>()
      const appends = range(1, 50).map(async (s) => {
        await p.append([sizedEvent(s)])
        resolved.add(s)
      })
      let seen = 0
      while (resolved.size < 50 || seen < 50) {
        const read = await p.read(0, 100)
        for (const e of read) expect(resolved.has(e.seq)).toBe(true)
        seen = read.length
        await new Promise((resolve) => setImmediate(resolve))
      }
      await Promise.all(appends)
    })

    it('acknowledge(upTo) removes every event with seq <= upTo [SVC-PERSIST-6]', async () => {
      const { p, reopen } = await fresh()
      const events = [1, 2, 3, 5, 8, 13, 21].map((s) => sizedEvent(s, 60 + s))
      await p.append(events)
      await p.acknowledge(0)
      await expectHeld(p, events)
      await p.acknowledge(2)
      await expectHeld(p, events.slice(2))
      await p.acknowledge(7) // between held seqs
      await expectHeld(p, events.slice(4))
      await p.acknowledge(7) // again: nothing to do
      await expectHeld(p, events.slice(4))
      if (reopen !== undefined) {
        const q = await reopen()
        await expectHeld(q, events.slice(4))
        await q.acknowledge(100)
        await expectHeld(q, [])
        expect(q.lastSeq()).toBe(21)
      } else {
        await p.acknowledge(100)
        await expectHeld(p, [])
        expect(p.lastSeq()).toBe(21)
      }
    })

    it('remove(seqs) removes exactly those events [SVC-PERSIST-6]', async () => {
      const { p, reopen } = await fresh()
      const events = range(1, 10).map((s) => sizedEvent(s, 60 + s))
      await p.append(events)
      await p.remove([2, 5, 7, 42, 5])
      const expected = events.filter((e) => ![2, 5, 7].includes(e.seq))
      await expectHeld(p, expected)
      await p.remove([])
      await p.remove([1, 10])
      const expected2 = expected.filter((e) => e.seq !== 1 && e.seq !== 10)
      await expectHeld(p, expected2)
      expect(p.lastSeq()).toBe(10)
      expect(seqsOf(await p.read(2, 2))).toEqual([3, 4])
      if (reopen !== undefined) await expectHeld(await reopen(), expected2)
    })

    it('under dropOldest, drops exactly the oldest events to make room and returns them [SVC-PERSIST-4]', async () => {
      const { p, reopen } = await fresh(1_000, 'dropOldest')
      const e = (seq: number, size: number): RaisedEvent => sizedEvent(seq, size)
      const first = range(1, 5).map((s) => e(s, 200))
      expect((await p.append(first)).dropped).toEqual([]) // exactly full is not over
      await expectHeld(p, first)

      // 300 more bytes: 1,000 - 200 - 200 + 300 = 900
      const e6 = e(6, 300)
      const o1 = await p.append([e6])
      expect(plainAll(o1.dropped)).toEqual(plainAll(first.slice(0, 2)))
      await expectHeld(p, [...first.slice(2), e6])

      // 100 more fits exactly: 1,000
      const e7 = e(7, 100)
      expect((await p.append([e7])).dropped).toEqual([])

      // a batch of 2 x 150: drop 3 and 4 (1,000 - 400 + 300 = 900)
      const e8 = e(8, 150)
      const e9 = e(9, 150)
      const o2 = await p.append([e8, e9])
      expect(seqsOf(o2.dropped)).toEqual([3, 4])
      await expectHeld(p, [first[4] as RaisedEvent, e6, e7, e8, e9])

      // supersede frees room before anything is dropped: 900 - 300 (seq 6) + 350 = 950
      const e10 = e(10, 350)
      const o3 = await p.append([e10], [6])
      expect(o3.dropped).toEqual([])
      await expectHeld(p, [first[4] as RaisedEvent, e7, e8, e9, e10])
      expect(p.stats().bytes).toBe(950)

      // an event of exactly the capacity drops everything else
      const e11 = e(11, 1_000)
      const o4 = await p.append([e11])
      expect(seqsOf(o4.dropped)).toEqual([5, 7, 8, 9, 10])
      await expectHeld(p, [e11])
      expect(p.lastSeq()).toBe(11)
      if (reopen !== undefined) await expectHeld(await reopen(), [e11])
    })

    it('under reject, refuses with CAPACITY_EXCEEDED and stores nothing [SVC-PERSIST-4]', async () => {
      const { p, reopen } = await fresh(1_000, 'reject')
      const first = range(1, 5).map((s) => sizedEvent(s, 200))
      await p.append(first)
      const err = await rejection(p.append([sizedEvent(6, 60)]))
      expect(err).toBeInstanceOf(PersistenceError)
      expect(err.code).toBe(ErrorCode.CAPACITY_EXCEEDED)
      expect(p.lastSeq()).toBe(5)
      await expectHeld(p, first)

      // superseding 200 bytes does not make room for 400: nothing stored, nothing superseded
      const err2 = await rejection(p.append([sizedEvent(6, 400)], [4]))
      expect(err2.code).toBe(ErrorCode.CAPACITY_EXCEEDED)
      await expectHeld(p, first)

      // superseding 400 bytes does
      const e6 = sizedEvent(6, 400)
      expect((await p.append([e6], [3, 4])).dropped).toEqual([])
      await expectHeld(p, [first[0], first[1], first[4], e6] as RaisedEvent[])

      // acknowledging makes room too
      await p.acknowledge(2)
      const e7 = sizedEvent(7, 400)
      await p.append([e7])
      await expectHeld(p, [first[4], e6, e7] as RaisedEvent[])
      expect(p.lastSeq()).toBe(7)
      if (reopen !== undefined) await expectHeld(await reopen(), [first[4], e6, e7] as RaisedEvent[])
    })

    for (const policy of ['dropOldest', 'reject'] as const) {
      it(`always rejects an event or a batch larger than the capacity (${policy}) [SVC-PERSIST-4]`, async () => {
        const { p } = await fresh(1_000, policy)
        const held = [sizedEvent(1, 300), sizedEvent(2, 300)]
        await p.append(held)
        const big = await rejection(p.append([sizedEvent(3, 1_001)]))
        expect(big).toBeInstanceOf(PersistenceError)
        expect(big.code).toBe(ErrorCode.CAPACITY_EXCEEDED)
        const batch = await rejection(p.append([sizedEvent(3, 500), sizedEvent(4, 501)]))
        expect(batch.code).toBe(ErrorCode.CAPACITY_EXCEEDED)
        expect(p.lastSeq()).toBe(2)
        await expectHeld(p, held)
      })
    }

    it('resolves 1000 concurrent appends, all read back in order [SVC-PERSIST-3]', async () => {
      const { p, reopen } = await fresh()
      const events = range(1, 1000).map((s) => sizedEvent(s, 60 + (s % 97)))
      const outcomes = await Promise.all(events.map(async (e) => p.append([e])))
      for (const o of outcomes) expect(o.dropped).toEqual([])
      expect(p.lastSeq()).toBe(1000)
      await expectHeld(p, events)
      if (reopen !== undefined) await expectHeld(await reopen(), events)
    })

    it('judges concurrent appends one by one: a bad one rejects alone [SVC-PERSIST-3]', async () => {
      const { p } = await fresh()
      const calls = range(1, 100).map((s) => s === 50 ? [sizedEvent(49)] : [sizedEvent(s)])
      const results = await Promise.allSettled(calls.map(async (events) => p.append(events)))
      results.forEach((r, i) => {
        if (i === 49) {
          expect(r.status).toBe('rejected')
          expect(((r as PromiseRejectedResult).reason as HeraldError).code).toBe(ErrorCode.INVALID_ARGUMENT)
        } else {
          expect(r.status).toBe('fulfilled')
        }
      })
      await expectHeld(p, range(1, 100).filter((s) => s !== 50).map((s) => sizedEvent(s)))
      expect(p.lastSeq()).toBe(100)
    })

    describe('source marks [SVC-MARK-1]', () => {
      it('writes marks with the events of an append, and never removes them with events', async () => {
        const { p, reopen } = await fresh(1_000, 'dropOldest')
        expect(entries(p.marks())).toEqual([])
        await p.append([sizedEvent(1, 200), sizedEvent(2, 200)], [], new Map([['line-1', 'boot 1 seq 7'], ['line-2', '']]))
        expect(entries(p.marks())).toEqual([['line-1', 'boot 1 seq 7'], ['line-2', '']])
        // a later append replaces one value and adds a key
        await p.append([sizedEvent(3, 200)], undefined, new Map([['line-1', 'boot 1 seq 8'], ['line-3', 'boot 4 seq 1']]))
        const expected: Array<[string, string]> = [['line-1', 'boot 1 seq 8'], ['line-2', ''], ['line-3', 'boot 4 seq 1']]
        expect(entries(p.marks())).toEqual(expected)
        // acknowledging, removing and dropping events leaves every mark
        await p.acknowledge(1)
        await p.remove([2])
        const e4 = sizedEvent(4, 1_000)
        expect(seqsOf((await p.append([e4])).dropped)).toEqual([3])
        await expectHeld(p, [e4])
        expect(entries(p.marks())).toEqual(expected)
        // marks() is a copy
        ;(p.marks() as Map<string, string>).set('line-9', 'not written')
        expect(p.marks().has('line-9')).toBe(false)
        if (reopen !== undefined) {
          const q = await reopen()
          expect(entries(q.marks())).toEqual(expected)
          await expectHeld(q, [e4])
          await q.append([sizedEvent(5)], [], new Map([['line-2', 'boot 2 seq 1']]))
          expect(q.marks().get('line-2')).toBe('boot 2 seq 1')
          expect(entries((await reopen()).marks())).toEqual([['line-1', 'boot 1 seq 8'], ['line-2', 'boot 2 seq 1'], ['line-3', 'boot 4 seq 1']])
        }
      })

      it('an append of marks and no events writes only the marks, as the map was at the call', async () => {
        const { p, reopen } = await fresh()
        const held = [sizedEvent(1), sizedEvent(2)]
        await p.append(held)
        const stats = p.stats()
        const marks = new Map([['dev', 'a']])
        const call = p.append([], undefined, marks)
        marks.set('dev', 'changed after the call')
        marks.set('other', 'added after the call')
        expect((await call).dropped).toEqual([])
        expect(entries(p.marks())).toEqual([['dev', 'a']])
        expect(p.lastSeq()).toBe(2)
        expect(p.stats()).toEqual(stats)
        await expectHeld(p, held)
        // with a supersede, and an empty map (no marks)
        await p.append([], [1], new Map([['dev', 'b']]))
        await p.append([], [], new Map())
        await expectHeld(p, held.slice(1))
        expect(entries(p.marks())).toEqual([['dev', 'b']])
        if (reopen !== undefined) {
          const q = await reopen()
          expect(entries(q.marks())).toEqual([['dev', 'b']])
          await expectHeld(q, held.slice(1))
          expect(q.lastSeq()).toBe(2)
        }
      })

      it('a rejected append writes none of its marks', async () => {
        const { p, reopen } = await fresh(1_000, 'reject')
        const e1 = sizedEvent(1, 600)
        await p.append([e1], [], new Map([['dev', '1']]))
        const marks = new Map([['dev', '2'], ['new', 'x']])
        const refusals: Array<[string, () => Promise<unknown>]> = [
          [ErrorCode.CAPACITY_EXCEEDED, async () => p.append([sizedEvent(2, 600)], [], marks)], // full, policy reject
          [ErrorCode.CAPACITY_EXCEEDED, async () => p.append([sizedEvent(2, 1_001)], [], marks)], // larger than the capacity
          [ErrorCode.INVALID_ARGUMENT, async () => p.append([sizedEvent(1, 60)], [], marks)], // seq not above lastSeq
          [ErrorCode.INVALID_ARGUMENT, async () => p.append([sizedEvent(2, 60)], [], new Map([['dev', '2'], ['bad', 'x'.repeat(201)]]))] // one bad mark
        ]
        for (const [code, call] of refusals) expect((await rejection(call())).code).toBe(code)
        expect(entries(p.marks())).toEqual([['dev', '1']])
        expect(p.lastSeq()).toBe(1)
        await expectHeld(p, [e1])
        if (reopen !== undefined) {
          const q = await reopen()
          expect(entries(q.marks())).toEqual([['dev', '1']])
          await expectHeld(q, [e1])
        }
      })

      it('concurrent appends write their marks in call order: the last writer of a key wins', async () => {
        const { p, reopen } = await fresh()
        const n = 300
        // appends 150 and 300 are refused (their seq is not above the one before): their marks must not count
        const refused = new Set([150, n])
        const eventsOf = (i: number): RaisedEvent[] => refused.has(i) ? [sizedEvent(i - 1)] : i % 4 === 0 ? [] : [sizedEvent(i)]
        const seen: Array<[number, string | undefined]> = []
        const results = await Promise.allSettled(range(1, n).map(async (i) => {
          const marks = new Map([[`dev-${i % 7}`, `frame ${i}`], ['last', `frame ${i}`]])
          if (refused.has(i)) marks.set(`only-refused-${i}`, 'x')
          await p.append(eventsOf(i), [], marks)
          // once resolved, marks() shows this append's marks, or those of a later one
          seen.push([i, p.marks().get('last')])
        }))
        results.forEach((r, index) => {
          if (refused.has(index + 1)) expect(((r as PromiseRejectedResult).reason as HeraldError).code).toBe(ErrorCode.INVALID_ARGUMENT)
          else expect(r.status).toBe('fulfilled')
        })
        expect(seen.length).toBe(n - refused.size)
        for (const [i, last] of seen) expect(Number(last?.slice('frame '.length))).toBeGreaterThanOrEqual(i)
        const expected = new Map<string, string>()
        for (const i of range(1, n)) {
          if (refused.has(i)) continue
          expected.set(`dev-${i % 7}`, `frame ${i}`)
          expected.set('last', `frame ${i}`)
        }
        expect(expected.get('last')).toBe('frame 299')
        expect(entries(p.marks())).toEqual(entries(expected))
        expect(seqsOf(await p.read(0, 1_000))).toEqual(range(1, n).filter((i) => i % 4 !== 0 && !refused.has(i)))
        if (reopen !== undefined) expect(entries((await reopen()).marks())).toEqual(entries(expected))
      })

      it(`checks each append's marks against MARK_LIMITS (${MARK_LIMITS.keyChars} characters, ${MARK_LIMITS.perAppend} per append): INVALID_ARGUMENT, nothing stored`, async () => {
        const { p, reopen } = await fresh()
        const e1 = sizedEvent(1)
        await p.append([e1], [], new Map([['dev', '1']]))
        const tooMany = new Map(range(1, MARK_LIMITS.perAppend + 1).map((i) => [`k${i}`, 'v']))
        const bad: Array<[ReadonlyMap<string, string>, RegExp]> = [
          [new Map([['k'.repeat(201), 'v']]), /longer than 200 characters/],
          [new Map([['k', 'v'.repeat(201)]]), /longer than 200 characters/],
          [new Map([['k', '\u{1F600}'.repeat(201)]]), /longer than 200 characters/],
          [new Map([['k', 'a\ud800']]), /Unicode/],
          [new Map([['\udc00', 'v']]), /Unicode/],
          [new Map([['k', 42 as unknown as string]]), /string/],
          [new Map([[7 as unknown as string, 'v']]), /string/],
          [{ dev: '2' } as unknown as ReadonlyMap<string, string>, /Map/],
          [tooMany, /1001 marks .* limit of 1000/]
        ]
        for (const [marks, message] of bad) {
          const err = await rejection(p.append([sizedEvent(2)], [], marks))
          expect(err.code).toBe(ErrorCode.INVALID_ARGUMENT)
          expect(err.message).toMatch(message)
          expect(p.lastSeq()).toBe(1)
          await expectHeld(p, [e1])
          expect(entries(p.marks())).toEqual([['dev', '1']])
        }
        // exactly at the limits: 1,000 keys of 200 characters, values of 200 characters (an emoji is one)
        const emoji = '\u{1F600}'.repeat(MARK_LIMITS.valueChars)
        const most = new Map(range(1, MARK_LIMITS.perAppend - 1).map((i) => [String(i).padEnd(MARK_LIMITS.keyChars, '.'), `${i}`.padEnd(MARK_LIMITS.valueChars, 'v')]))
        most.set(emoji, emoji)
        expect(most.size).toBe(MARK_LIMITS.perAppend)
        const odd = new Map([['', 'empty key'], ['nul\u0000inside', 'tab\there, \u00e9\u4e2d\u{1F600}']])
        await p.append([sizedEvent(2)], [], most)
        await p.append([], [], odd)
        const expected = entries(new Map([['dev', '1'], ...most, ...odd]))
        expect(entries(p.marks())).toEqual(expected)
        if (reopen !== undefined) expect(entries((await reopen()).marks())).toEqual(expected)
      })

      it(`holds at most ${MARK_LIMITS.keys} distinct keys: an append that would add more is INVALID_ARGUMENT, naming the limit`, async () => {
        const { p, reopen } = await fresh()
        const batch = (from: number, count: number): Map<string, string> => new Map(range(from, from + count - 1).map((i) => [`source-${i}`, `v${i}`]))
        const per = MARK_LIMITS.perAppend
        const full = MARK_LIMITS.keys
        // one key short of the limit, in concurrent marks-only appends
        await Promise.all(range(0, full / per - 1).map(async (b) => p.append([], [], batch(b * per, b === full / per - 1 ? per - 1 : per))))
        expect(p.marks().size).toBe(full - 1)
        // two concurrent appends, each with one new key: the first fills the store, the second is refused
        const [first, second] = await Promise.allSettled([
          p.append([sizedEvent(1)], [], new Map([['new-a', 'a']])),
          p.append([sizedEvent(2)], [], new Map([['new-b', 'b'], ['source-0', 'not written']]))
        ])
        expect(first.status).toBe('fulfilled')
        const err = (second as PromiseRejectedResult).reason as HeraldError
        expect(err.code).toBe(ErrorCode.INVALID_ARGUMENT)
        expect(err.message).toContain(String(full))
        expect(p.marks().size).toBe(full)
        expect(p.marks().get('source-0')).toBe('v0')
        expect(p.lastSeq()).toBe(1)
        // new values for held keys are fine
        await p.append([sizedEvent(3)], [], new Map([['source-0', 'again'], ['new-a', 'again']]))
        expect(p.marks().get('source-0')).toBe('again')
        expect(p.marks().size).toBe(full)
        if (reopen !== undefined) {
          const q = await reopen()
          expect(q.marks().size).toBe(full)
          expect(q.marks().get('new-a')).toBe('again')
          expect((await rejection(q.append([sizedEvent(4)], [], new Map([['new-c', 'c']])))).code).toBe(ErrorCode.INVALID_ARGUMENT)
          expect(q.lastSeq()).toBe(3)
        }
      })
    })

    it('a durable store, reopened, holds exactly the unacknowledged events; a memory store says it is not durable [SVC-PERSIST-2] [SVC-PERSIST-6]', async () => {
      const { p, reopen } = await fresh(3_000, 'dropOldest')
      if (reopen === undefined) {
        expect(p.stats().durable).toBe(false)
        return
      }
      expect(p.stats().durable).toBe(true)
      const events = range(1, 30).map((s) => sizedEvent(s, 100 + s * 3))
      await p.append(events.slice(0, 20))
      await p.acknowledge(5)
      await p.remove([8, 13])
      const o = await p.append(events.slice(20), [15]) // more than 3,000 bytes held: drops the oldest
      let expected = events.filter((e) => e.seq > 5 && e.seq !== 8 && e.seq !== 13 && e.seq !== 15)
      const dropped: RaisedEvent[] = []
      while (bytesOf(expected) > 3_000) dropped.push(expected.shift() as RaisedEvent)
      expect(seqsOf(o.dropped)).toEqual(seqsOf(dropped))
      expect(dropped.length).toBeGreaterThan(0)
      const before = await p.read(0, 1_000)
      const instance = p.instance
      const q = await reopen()
      expect(q.instance).toBe(instance)
      expect(q.lastSeq()).toBe(30)
      expect(q.stats()).toEqual({ count: expected.length, bytes: bytesOf(expected), capacityBytes: 3_000, durable: true })
      await expectHeld(q, expected)
      expect(plainAll(await q.read(0, 1_000))).toEqual(plainAll(before))
      await q.acknowledge(expected[2]?.seq ?? 0)
      expected = expected.slice(3)
      const again = await reopen()
      await expectHeld(again, expected)
      expect(again.lastSeq()).toBe(30)
    })
  })
}
