/**
 * The conformance suite every EventStore backend passes ([STORE-*] in event-store.ts). A backend's
 * test file is one call to `describeEventStoreConformance`.
 */
import { describe, it, expect, beforeEach, afterEach } from 'vitest'
import { Category, ClosedError, ErrorCode, PayloadKind, RequestError, encodePayload, NULL_PAYLOAD, type RaisedEvent, type StoredEvent } from '@herald/protocol'
import type { AppendBatch, AppendResult, ArrivingEvent, EventStore, LimitsOf, QueueLimits, ReadQuery } from '../event-store/event-store.js'

/** What a backend's factory hands the suite for one test. */
export interface EventStoreFixture {
  /** A fresh, empty store. */
  readonly store: EventStore
  /**
   * For durable backends: opens a new store on the same storage. The suite closes the previous store
   * before calling it, and closes every store it opened before `cleanup`.
   */
  readonly reopen?: () => Promise<EventStore>
  /** Releases the storage (temp files, ...); called after the suite closed the stores. */
  readonly cleanup: () => Promise<void>
}

/** Options the suite sets on a store it makes (and on its reopen). */
export interface EventStoreFactoryOptions {
  /** [STORE-DEDUP-2] keys per (service, instance); the backend's default when missing. */
  readonly maxDedupKeys?: number
}

/** Makes a fresh store that uses `limitsOf` (and `options`, when given). */
export type EventStoreFactory = (limitsOf: LimitsOf, options?: EventStoreFactoryOptions) => Promise<EventStoreFixture>

/** The events the suite's site knows. */
export const CONFORMANCE_LIMITS: Readonly<Record<string, QueueLimits>> = Object.freeze({
  /** replacing: one per (service, event), never expires */
  door: { category: Category.replacing, lifetimeMs: null, maxQueueSize: 1, maxPerRecipient: 1 },
  /** queueing, small queue */
  temp: { category: Category.queueing, lifetimeMs: 60_000, maxQueueSize: 5, maxPerRecipient: 1 },
  /** queueing, large queue, long life */
  log: { category: Category.queueing, lifetimeMs: 3_600_000, maxQueueSize: 10_000, maxPerRecipient: 1 },
  /** queueing, short life */
  blip: { category: Category.queueing, lifetimeMs: 1_000, maxQueueSize: 100, maxPerRecipient: 1 },
  /** private, small per-recipient queue */
  msg: { category: Category.private, lifetimeMs: 60_000, maxQueueSize: 10_000, maxPerRecipient: 3 },
  /** [STORE-KEY-1] keyed replacing: one per (service, event, key), at most 3 keys per (service, event) */
  thermo: { category: Category.replacing, lifetimeMs: null, maxQueueSize: 1, maxPerRecipient: 1, key: { kind: 'raise' }, maxKeys: 3 }
})

/** Limits a test changes while the store runs, as a site reload does ([SITE-RELOAD-6]); cleared after each test. */
const changed = new Map<string, QueueLimits>()
const limitsOf: LimitsOf = (name) => changed.get(name) ?? CONFORMANCE_LIMITS[name]
const T0 = 1_700_000_000_000

function limits (name: string): QueueLimits {
  const l = CONFORMANCE_LIMITS[name]
  if (l === undefined) throw new Error(`no limits for ${name}`)
  return l
}

/** A raised event with a JSON payload naming its seq (or the payload given). */
function ev (seq: number, name: string, opts: { recipient?: string, payload?: { kind: PayloadKind, bytes: Uint8Array }, isNull?: boolean } = {}): RaisedEvent {
  const p = opts.payload ?? encodePayload({ seq, name })
  return {
    seq,
    name,
    category: limits(name).category,
    raisedAt: T0 - 1000 + seq,
    isNull: opts.isNull ?? false,
    recipient: opts.recipient ?? null,
    payloadKind: p.kind,
    payload: p.bytes
  }
}

/** Events `from`..`to` (inclusive) of one name. */
function evs (from: number, to: number, name: string, opts: { recipient?: string } = {}): RaisedEvent[] {
  const out: RaisedEvent[] = []
  for (let s = from; s <= to; s++) out.push(ev(s, name, opts))
  return out
}

function batch (serviceId: string, instance: string, events: ArrivingEvent[], extra: { handledUpTo?: number, receivedAt?: number } = {}): AppendBatch {
  return {
    serviceId,
    instance,
    events,
    handledUpTo: extra.handledUpTo ?? events.reduce((m, e) => Math.max(m, e.seq), 0),
    receivedAt: extra.receivedAt ?? T0
  }
}

function query (event: string, extra: Partial<ReadQuery> = {}): ReadQuery {
  return { event, after: 0, services: null, recipient: null, now: T0, limit: 1_000_000, ...extra }
}

/** A stored event with its payload as plain numbers, so comparisons ignore Buffer vs Uint8Array. */
function plain (e: StoredEvent): Record<string, unknown> {
  return { ...e, payload: Array.from(e.payload) }
}

/** What the store must hold for `e` appended in `b` at `position`. */
function expected (e: ArrivingEvent, b: AppendBatch, position: number): Record<string, unknown> {
  const l = limits(e.name)
  return {
    seq: e.seq,
    name: e.name,
    category: e.category,
    raisedAt: e.raisedAt,
    isNull: e.isNull,
    recipient: e.recipient,
    payloadKind: e.payloadKind,
    payload: Array.from(e.payload),
    position,
    serviceId: b.serviceId,
    instance: b.instance,
    receivedAt: b.receivedAt,
    expiresAt: l.lifetimeMs === null ? null : b.receivedAt - (e.age ?? 0) + l.lifetimeMs,
    uploadAge: e.age ?? 0
  }
}

function seqsOf (events: readonly StoredEvent[]): number[] {
  return events.map((e) => e.seq)
}

function positionsOf (events: readonly StoredEvent[]): number[] {
  return events.map((e) => e.position)
}

function expectIncreasing (xs: readonly number[]): void {
  for (let i = 1; i < xs.length; i++) expect(xs[i]!).toBeGreaterThan(xs[i - 1]!)
}

/** Runs every [STORE-*] rule against the backend `factory` makes. */
/**
 * The suite. `durable: true` declares that the backend keeps its events across a reopen: the
 * fixture must then give `reopen`, and the reopen tests are part of the suite.
 */
export function describeEventStoreConformance (name: string, factory: EventStoreFactory, options: { durable: boolean }): void {
  describe(`EventStore conformance: ${name}`, () => {
    let fixture: EventStoreFixture
    let store: EventStore
    let opened: EventStore[]

    beforeEach(async () => {
      fixture = await factory(limitsOf)
      store = fixture.store
      opened = [store]
    })

    afterEach(async () => {
      changed.clear()
      for (const s of opened) await s.close()
      await fixture.cleanup()
    })

    /** Closes the current store and opens the same storage again (durable backends only). */
    async function reopen (): Promise<EventStore> {
      if (fixture.reopen === undefined) throw new Error('backend is not durable')
      await store.close()
      store = await fixture.reopen()
      opened.push(store)
      return store
    }

    // reopen tests exist only for durable backends: nothing is registered, and so nothing skipped, otherwise
    const durableIt = (title: string, fn: () => Promise<void>): void => {
      if (options.durable) it(title, fn)
    }

    it(`declares reopen exactly when durable (${String(options.durable)})`, () => {
      expect(fixture.reopen !== undefined).toBe(options.durable)
    })

    describe('append and read', () => {
      it('starts empty', async () => {
        expect(store.head()).toBe(0)
        expect(store.count()).toBe(0)
        expect(await store.lastSeq('svc', 'i1')).toBe(0)
        expect(await store.read(query('log'))).toEqual([])
      })

      it('returns every field as appended, for JSON, bytes, null and private events', async () => {
        const bytes = new Uint8Array([0, 1, 2, 127, 128, 254, 255])
        const events = [
          ev(1, 'log', { payload: encodePayload({ text: 'héllo', n: [1, 2.5, null], ok: true }) }),
          ev(2, 'log', { payload: { kind: PayloadKind.bytes, bytes } }),
          ev(3, 'log', { payload: { kind: PayloadKind.bytes, bytes: new Uint8Array(0) } }),
          ev(4, 'door', { payload: NULL_PAYLOAD, isNull: true }),
          ev(5, 'msg', { recipient: 'alice/phone', payload: encodePayload('for alice') })
        ]
        const b = batch('svc', 'i1', events, { receivedAt: T0 + 7 })
        const r = await store.append(b)
        expect(r.duplicates).toBe(0)
        expect(r.lastSeq).toBe(5)
        expect(r.stored.length).toBe(events.length)
        const positions = positionsOf(r.stored)
        expectIncreasing(positions)
        expect(r.stored.map(plain)).toEqual(events.map((e, i) => expected(e, b, positions[i]!)))

        const logs = await store.read(query('log'))
        expect(logs.map(plain)).toEqual(events.slice(0, 3).map((e, i) => expected(e, b, positions[i]!)))
        const doors = await store.read(query('door'))
        expect(doors.map(plain)).toEqual([expected(events[3]!, b, positions[3]!)])
        const msgs = await store.read(query('msg', { recipient: 'alice/phone' }))
        expect(msgs.map(plain)).toEqual([expected(events[4]!, b, positions[4]!)])

        expect(store.head()).toBe(positions[4])
        expect(store.count()).toBe(events.length)
        expect(await store.lastSeq('svc', 'i1')).toBe(5)
      })

      it('stops a read once the events hold maxBytes of payload; a larger event comes alone', async () => {
        const sized = (seq: number, n: number): RaisedEvent => ev(seq, 'log', { payload: { kind: PayloadKind.bytes, bytes: new Uint8Array(n) } })
        const r = await store.append(batch('svc', 'i1', [sized(1, 100), sized(2, 100), sized(3, 100), sized(4, 1000), sized(5, 100)]))
        const p = positionsOf(r.stored)
        const check = async (s: EventStore): Promise<void> => {
          expect(positionsOf(await s.read(query('log', { maxBytes: 250 })))).toEqual(p.slice(0, 3))
          expect(positionsOf(await s.read(query('log', { maxBytes: 200 })))).toEqual(p.slice(0, 2))
          expect(positionsOf(await s.read(query('log', { maxBytes: 1 })))).toEqual(p.slice(0, 1))
          expect(positionsOf(await s.read(query('log', { after: p[2]!, maxBytes: 500 })))).toEqual([p[3]])
          expect(positionsOf(await s.read(query('log', { maxBytes: 10_000, limit: 4 })))).toEqual(p.slice(0, 4))
          expect(positionsOf(await s.read(query('log')))).toEqual(p)
        }
        await check(store)
        if (options.durable) await check(await reopen())
      })

      it('keeps its own copy of the payload bytes', async () => {
        const bytes = new Uint8Array([1, 2, 3])
        await store.append(batch('svc', 'i1', [ev(1, 'log', { payload: { kind: PayloadKind.bytes, bytes } })]))
        bytes.fill(9)
        const [e] = await store.read(query('log'))
        expect(Array.from(e!.payload)).toEqual([1, 2, 3])
      })

      it('rejects an unknown event name and stores nothing of that batch', async () => {
        const bad = { ...ev(2, 'log'), name: 'nope' }
        await expect(store.append(batch('svc', 'i1', [ev(1, 'log'), bad]))).rejects.toMatchObject({ code: ErrorCode.UNKNOWN_EVENT })
        expect(store.count()).toBe(0)
        expect(store.head()).toBe(0)
        expect(await store.lastSeq('svc', 'i1')).toBe(0)
      })

      it('rejects a read of a private event without a recipient', async () => {
        await expect(store.read(query('msg'))).rejects.toBeInstanceOf(RequestError)
      })
    })

    describe('[STORE-POS-1] positions', () => {
      it('increase strictly across batches and calls, and head() is the highest', async () => {
        const all: number[] = []
        for (let b = 0; b < 5; b++) {
          const r = await store.append(batch(`svc${b % 2}`, 'i1', evs(b * 3 + 1, b * 3 + 3, 'log')))
          all.push(...positionsOf(r.stored))
        }
        expect(all.length).toBe(15)
        expectIncreasing(all)
        expect(store.head()).toBe(all[all.length - 1])
        const read = await store.read(query('log'))
        expect(positionsOf(read)).toEqual(all)
      })

      it('are never reused after the newest event is replaced', async () => {
        const r1 = await store.append(batch('svc', 'i1', [ev(1, 'door')]))
        const r2 = await store.append(batch('svc', 'i1', [ev(2, 'door')]))
        const p2 = r2.stored[0]!.position
        expect(p2).toBeGreaterThan(r1.stored[0]!.position)
        expect(store.head()).toBe(p2)
        const r3 = await store.append(batch('svc', 'i1', [ev(3, 'log')]))
        expect(r3.stored[0]!.position).toBeGreaterThan(p2)
      })

      it('are never reused after the newest events are purged', async () => {
        const r = await store.append(batch('svc', 'i1', evs(1, 3, 'blip')))
        const newest = r.stored[2]!.position
        expect(await store.purgeExpired(T0 + limits('blip').lifetimeMs!)).toBe(3)
        expect(store.count()).toBe(0)
        expect(store.head()).toBe(newest)
        const r2 = await store.append(batch('svc', 'i1', [ev(4, 'log')]))
        expect(r2.stored[0]!.position).toBeGreaterThan(newest)
      })

      durableIt('survive a reopen, together with the events', async () => {
        const b = batch('svc', 'i1', [ev(1, 'log'), ev(2, 'door'), ev(3, 'msg', { recipient: 'bob/pc' })])
        const r = await store.append(b)
        const head = store.head()
        const s = await reopen()
        expect(s.head()).toBe(head)
        expect(s.count()).toBe(3)
        expect((await s.read(query('log'))).map(plain)).toEqual([expected(b.events[0]!, b, r.stored[0]!.position)])
        expect((await s.read(query('door'))).map(plain)).toEqual([expected(b.events[1]!, b, r.stored[1]!.position)])
        expect((await s.read(query('msg', { recipient: 'bob/pc' }))).map(plain)).toEqual([expected(b.events[2]!, b, r.stored[2]!.position)])
        const r2 = await s.append(batch('svc', 'i1', [ev(4, 'log')]))
        expect(r2.stored[0]!.position).toBeGreaterThan(head)
      })

      durableIt('are never reused after the newest events were replaced or purged and the store reopened', async () => {
        await store.append(batch('svc', 'i1', [ev(1, 'door')]))
        const r = await store.append(batch('svc', 'i1', [ev(2, 'door'), ...evs(3, 4, 'blip')]))
        const head = store.head()
        expect(head).toBe(r.stored[2]!.position)
        expect(await store.purgeExpired(T0 + limits('blip').lifetimeMs!)).toBe(2)
        let s = await reopen()
        expect(s.head()).toBe(head)
        const r2 = await s.append(batch('svc', 'i1', [ev(5, 'door')])) // replaces seq 2: the newest row is gone again
        expect(r2.stored[0]!.position).toBeGreaterThan(head)
        const head2 = r2.stored[0]!.position
        expect(await s.purgeExpired(T0 + 1e12)).toBe(0) // replacing events never expire
        s = await reopen()
        expect(s.head()).toBe(head2)
        expect(s.count()).toBe(1)
        const r3 = await s.append(batch('svc', 'i1', [ev(6, 'log')]))
        expect(r3.stored[0]!.position).toBeGreaterThan(head2)
      })
    })

    describe('[STORE-DEDUP-1] duplicates', () => {
      it('a resent batch stores nothing and counts its events as duplicates', async () => {
        const b = batch('svc', 'i1', evs(1, 4, 'log'))
        const first = await store.append(b)
        expect(first.stored.length).toBe(4)
        const head = store.head()
        const again = await store.append(b)
        expect(again).toEqual({ stored: [], duplicates: b.events.length, lastSeq: 4, expired: 0, nullsDropped: 0, refused: [] })
        expect(store.head()).toBe(head)
        expect(store.count()).toBe(4)
        expect(seqsOf(await store.read(query('log')))).toEqual([1, 2, 3, 4])
      })

      it('a partly resent batch stores only the new seqs', async () => {
        await store.append(batch('svc', 'i1', evs(1, 4, 'log')))
        const r = await store.append(batch('svc', 'i1', evs(3, 6, 'log')))
        expect(seqsOf(r.stored)).toEqual([5, 6])
        expect(r.duplicates).toBe(2)
        expect(r.lastSeq).toBe(6)
        expect(seqsOf(await store.read(query('log')))).toEqual([1, 2, 3, 4, 5, 6])
      })

      it('a new instance of the same service starts its own seqs', async () => {
        await store.append(batch('svc', 'i1', evs(1, 3, 'log')))
        const r = await store.append(batch('svc', 'i2', evs(1, 3, 'log')))
        expect(seqsOf(r.stored)).toEqual([1, 2, 3])
        expect(r.duplicates).toBe(0)
        expect(await store.lastSeq('svc', 'i1')).toBe(3)
        expect(await store.lastSeq('svc', 'i2')).toBe(3)
        expect(await store.lastSeq('other', 'i1')).toBe(0)
        const read = await store.read(query('log'))
        expect(read.map((e) => `${e.instance}-${e.seq}`)).toEqual(['i1-1', 'i1-2', 'i1-3', 'i2-1', 'i2-2', 'i2-3'])
      })

      it('handledUpTo beyond the stored seqs makes later resends of those seqs duplicates', async () => {
        const r = await store.append(batch('svc', 'i1', evs(1, 2, 'log'), { handledUpTo: 5 }))
        expect(r.lastSeq).toBe(5)
        expect(await store.lastSeq('svc', 'i1')).toBe(5)
        const again = await store.append(batch('svc', 'i1', evs(3, 6, 'log')))
        expect(seqsOf(again.stored)).toEqual([6])
        expect(again.duplicates).toBe(3)
        expect(again.lastSeq).toBe(6)
      })

      it('a batch with no events records handledUpTo', async () => {
        const r = await store.append(batch('svc', 'i1', [], { handledUpTo: 7 }))
        expect(r).toEqual({ stored: [], duplicates: 0, lastSeq: 7, expired: 0, nullsDropped: 0, refused: [] })
        expect(await store.lastSeq('svc', 'i1')).toBe(7)
        expect(store.head()).toBe(0)
        expect(store.count()).toBe(0)
      })

      durableIt('lastSeq survives a reopen', async () => {
        await store.append(batch('svc', 'i1', evs(1, 3, 'log'), { handledUpTo: 9 }))
        await store.append(batch('svc', 'i2', [], { handledUpTo: 4 }))
        const s = await reopen()
        expect(await s.lastSeq('svc', 'i1')).toBe(9)
        expect(await s.lastSeq('svc', 'i2')).toBe(4)
        const r = await s.append(batch('svc', 'i1', evs(8, 10, 'log')))
        expect(seqsOf(r.stored)).toEqual([10])
        expect(r.duplicates).toBe(2)
      })
    })

    describe('[STORE-DEDUP-2] dedup keys', () => {
      const keyed = (seq: number, name: string, key: string, opts: { isNull?: boolean } = {}): ArrivingEvent => {
        const e = ev(seq, name, opts.isNull === true ? { payload: NULL_PAYLOAD, isNull: true } : {})
        return { ...e, dedupKey: key }
      }

      it('an event with a key already handled is a duplicate, though its seq is new; the seq is handled', async () => {
        const first = await store.append(batch('svc', 'i1', [keyed(1, 'log', 'a'), keyed(2, 'log', 'b')]))
        expect(seqsOf(first.stored)).toEqual([1, 2])
        const again = await store.append(batch('svc', 'i1', [keyed(3, 'log', 'b'), keyed(4, 'log', 'c'), ev(5, 'log')]))
        expect(seqsOf(again.stored)).toEqual([4, 5])
        expect(again.duplicates).toBe(1)
        expect(again.lastSeq).toBe(5)
        expect(await store.lastSeq('svc', 'i1')).toBe(5)
        expect(seqsOf(await store.read(query('log')))).toEqual([1, 2, 4, 5])
      })

      it('keys repeated within one append, and in appends of the same turn, are stored once', async () => {
        const [r1, r2] = await Promise.all([
          store.append(batch('svc', 'i1', [keyed(1, 'log', 'k'), keyed(2, 'log', 'k')])),
          store.append(batch('svc', 'i1', [keyed(3, 'log', 'k'), keyed(4, 'log', 'other')]))
        ])
        expect([seqsOf(r1.stored), r1.duplicates, seqsOf(r2.stored), r2.duplicates]).toEqual([[1], 1, [4], 1])
        expect(seqsOf(await store.read(query('log')))).toEqual([1, 4])
      })

      it('keys belong to their (service, instance): the same key elsewhere is a new event', async () => {
        await store.append(batch('svc', 'i1', [keyed(1, 'log', 'k')]))
        const r = await Promise.all([
          store.append(batch('svc', 'i2', [keyed(1, 'log', 'k')])),
          store.append(batch('other', 'i1', [keyed(1, 'log', 'k')]))
        ])
        expect(r.map((x) => x.stored.length)).toEqual([1, 1])
      })

      it('a keyed event that arrived expired or as a null over a null is handled: its key is remembered', async () => {
        await store.append(batch('svc', 'i1', [keyed(1, 'blip', 'late')], { receivedAt: T0 }))
        // blip lives 1 s: an age of 2 s makes it arrive expired
        const expired = await store.append(batch('svc', 'i1', [{ ...keyed(2, 'blip', 'old'), age: 2000 }]))
        expect(expired.expired).toBe(1)
        const retried = await store.append(batch('svc', 'i1', [keyed(3, 'blip', 'old'), keyed(4, 'door', 'n1', { isNull: true })]))
        expect(retried.duplicates).toBe(1)
        const r = await store.append(batch('svc', 'i1', [keyed(5, 'door', 'n1', { isNull: true }), keyed(6, 'door', 'n2', { isNull: true })]))
        expect([r.duplicates, r.nullsDropped, r.stored.length]).toEqual([1, 1, 0])
      })

      it('rejects a dedupKey that is empty or longer than 128 characters, changing nothing', async () => {
        for (const key of ['', 'x'.repeat(129)]) {
          const err = await store.append(batch('svc', 'i1', [keyed(1, 'log', key)])).catch((e: unknown) => e)
          expect(err).toBeInstanceOf(RequestError)
          expect((err as RequestError).code).toBe(ErrorCode.INVALID_ARGUMENT)
        }
        expect(await store.lastSeq('svc', 'i1')).toBe(0)
        expect((await store.append(batch('svc', 'i1', [keyed(1, 'log', 'x'.repeat(128))]))).stored.length).toBe(1)
      })

      it('forgets the oldest keys beyond maxDedupKeys per (service, instance)', async () => {
        const f = await factory(limitsOf, { maxDedupKeys: 3 })
        opened.push(f.store)
        try {
          await f.store.append(batch('svc', 'i1', [keyed(1, 'log', 'a'), keyed(2, 'log', 'b')]))
          await f.store.append(batch('svc', 'i1', [keyed(3, 'log', 'c'), keyed(4, 'log', 'd')]))
          // a is forgotten (4 keys, 3 kept): stored again; b, c and d are still known
          const r = await f.store.append(batch('svc', 'i1', [keyed(5, 'log', 'b'), keyed(6, 'log', 'c'), keyed(7, 'log', 'd')]))
          expect(r.duplicates).toBe(3)
          const a = await f.store.append(batch('svc', 'i1', [keyed(8, 'log', 'a')]))
          expect(seqsOf(a.stored)).toEqual([8])
          // now the newest three are c, d, a: b is gone
          const b = await f.store.append(batch('svc', 'i1', [keyed(9, 'log', 'b'), keyed(10, 'log', 'a')]))
          expect([seqsOf(b.stored), b.duplicates]).toEqual([[9], 1])
          if (f.reopen !== undefined) {
            await f.store.close()
            const s = await f.reopen()
            opened.push(s)
            // after a reopen: the newest three (d, a, b) still known, c forgotten
            const after = await s.append(batch('svc', 'i1', [keyed(11, 'log', 'd'), keyed(12, 'log', 'a'), keyed(13, 'log', 'b'), keyed(14, 'log', 'c')]))
            expect([seqsOf(after.stored), after.duplicates]).toEqual([[14], 3])
          }
        } finally {
          for (const s of opened.splice(opened.indexOf(f.store))) await s.close()
          await f.cleanup()
        }
      })

      durableIt('keys survive a reopen', async () => {
        await store.append(batch('svc', 'i1', [keyed(1, 'log', 'a'), keyed(2, 'msg', 'b')].map((e) => e.name === 'msg' ? { ...e, recipient: 'u/c' } : e)))
        const s = await reopen()
        const r = await s.append(batch('svc', 'i1', [keyed(3, 'log', 'a'), { ...keyed(4, 'msg', 'b'), recipient: 'u/c' }, keyed(5, 'log', 'c')]))
        expect([seqsOf(r.stored), r.duplicates, r.lastSeq]).toEqual([[5], 2, 5])
      })
    })

    describe('[STORE-REPLACE-1] replacing events', () => {
      it('keep only the newest per (service, event); other services keep their own', async () => {
        await store.append(batch('a', 'i1', [ev(1, 'door')]))
        await store.append(batch('b', 'i1', [ev(1, 'door')]))
        await store.append(batch('a', 'i1', [ev(2, 'door')]))
        const last = await store.append(batch('a', 'i1', [ev(3, 'door', { payload: NULL_PAYLOAD, isNull: true })]))
        const read = await store.read(query('door'))
        expect(read.map((e) => `${e.serviceId}-${e.seq}`)).toEqual(['b-1', 'a-3'])
        expect(read[1]!.position).toBe(last.stored[0]!.position)
        expect(read[1]!.isNull).toBe(true)
        expect(read[1]!.payloadKind).toBe(PayloadKind.none)
        expect(store.count()).toBe(2)
      })

      it('within one batch only the last one stays, though each is reported stored', async () => {
        const r = await store.append(batch('a', 'i1', [ev(1, 'door'), ev(2, 'door'), ev(3, 'door'), ev(4, 'log')]))
        expect(seqsOf(r.stored)).toEqual([1, 2, 3, 4])
        expect(seqsOf(await store.read(query('door')))).toEqual([3])
        expect(store.count()).toBe(2)
      })
    })

    describe('[STORE-KEY-*] keyed replacing events', () => {
      const k = (seq: number, key: string, opts: { isNull?: boolean } = {}): ArrivingEvent =>
        ({ ...ev(seq, 'thermo', opts.isNull === true ? { payload: NULL_PAYLOAD, isNull: true } : {}), key })
      const held = async (s: EventStore, extra: Partial<ReadQuery> = {}): Promise<string[]> =>
        (await s.read(query('thermo', extra))).map((e) => `${e.serviceId}:${e.key ?? '-'}:${e.seq}${e.isNull ? 'n' : ''}`)

      it('[STORE-KEY-1] keep the newest per (service, event, key), each read back with its key', async () => {
        await store.append(batch('a', 'i1', [k(1, 't1'), k(2, 't2')]))
        await store.append(batch('b', 'i1', [k(1, 't1')]))
        const r = await store.append(batch('a', 'i1', [k(3, 't1'), k(4, 't1')]))
        expect(seqsOf(r.stored)).toEqual([3, 4])
        expect(await held(store)).toEqual(['a:t2:2', 'b:t1:1', 'a:t1:4'])
        expect(store.count()).toBe(3)
        expect(store.counters().thermo?.replaced).toBe(2)
      })

      it('in appends of one turn too, only the last instance of a key stays', async () => {
        await Promise.all([
          store.append(batch('a', 'i1', [k(1, 't1'), k(2, 't2')])),
          store.append(batch('a', 'i1', [k(3, 't1')], { handledUpTo: 3 })),
          store.append(batch('a', 'i1', [k(4, 't2'), k(5, 't1')]))
        ])
        expect(await held(store)).toEqual(['a:t2:4', 'a:t1:5'])
      })

      it('[STORE-KEY-2] a null clears one key only; a null over its null, or for a key with nothing stored, is dropped', async () => {
        await store.append(batch('a', 'i1', [k(1, 't1'), k(2, 't2')]))
        const n = await store.append(batch('a', 'i1', [k(3, 't1', { isNull: true })]))
        expect(n.stored.map((e) => [e.key, e.isNull])).toEqual([['t1', true]])
        expect(await held(store)).toEqual(['a:t2:2', 'a:t1:3n'])
        const again = await store.append(batch('a', 'i1', [k(4, 't1', { isNull: true }), k(5, 'never', { isNull: true })]))
        expect([again.stored.length, again.nullsDropped, again.lastSeq]).toEqual([0, 2, 5])
        expect(await held(store)).toEqual(['a:t2:2', 'a:t1:3n'])
      })

      it('[STORE-KEY-3] a new key past maxKeys is refused with KEY_LIMIT, handled, and nothing stored is lost', async () => {
        await store.append(batch('a', 'i1', [k(1, 'k1'), k(2, 'k2'), k(3, 'k3')]))
        const r = await store.append(batch('a', 'i1', [k(4, 'k4'), k(5, 'k2'), k(6, 'k5')]))
        expect(r.refused.map((x) => [x.seq, x.code])).toEqual([[4, ErrorCode.KEY_LIMIT], [6, ErrorCode.KEY_LIMIT]])
        expect(r.refused[0]?.message).toMatch(/"thermo".*3 keys.*"k4"/)
        expect(seqsOf(r.stored)).toEqual([5])
        expect(r.lastSeq).toBe(6)
        expect(await held(store)).toEqual(['a:k1:1', 'a:k3:3', 'a:k2:5'])
        // another service has keys of its own
        expect((await store.append(batch('b', 'i1', [k(1, 'k4')]))).refused).toEqual([])
        // the keys per event name, over services (for metrics), where the store counts them
        if (store.keysByEvent !== undefined) expect(store.keysByEvent().get('thermo')).toBe(4)
      })

      it('[STORE-KEY-3] at maxKeys, a new key takes the place of the oldest null key', async () => {
        await store.append(batch('a', 'i1', [k(1, 'k1'), k(2, 'k2'), k(3, 'k3'), k(4, 'k3', { isNull: true }), k(5, 'k1', { isNull: true })]))
        const r = await store.append(batch('a', 'i1', [k(6, 'k4'), k(7, 'k5'), k(8, 'k6')]))
        expect(seqsOf(r.stored)).toEqual([6, 7])
        expect(r.refused.map((x) => x.seq)).toEqual([8])
        expect(await held(store)).toEqual(['a:k2:2', 'a:k4:6', 'a:k5:7'])
        expect(store.count()).toBe(3)
        if (store.keysByEvent !== undefined) expect(store.keysByEvent().get('thermo')).toBe(3)
      })

      it('[CLI-KEY-1] a read and the latest per service and key take a key filter', async () => {
        await store.append(batch('a', 'i1', [k(1, 't1'), k(2, 't2'), k(3, 't3'), k(4, 't1')]))
        await store.append(batch('b', 'i1', [k(1, 't2')]))
        expect(await held(store, { keys: new Set(['t1', 't2']) })).toEqual(['a:t2:2', 'a:t1:4', 'b:t2:1'])
        expect(await held(store, { keys: new Set(['t2']), services: new Set(['b']) })).toEqual(['b:t2:1'])
        expect(await held(store, { keys: new Set(['none']) })).toEqual([])
        const all = await store.read(query('thermo'))
        const pos = (svc: string, key: string): number => all.find((e) => e.serviceId === svc && e.key === key)!.position
        expect(await store.latestPerService?.({ event: 'thermo', services: null, recipient: null, now: T0 })).toEqual([pos('a', 't2'), pos('a', 't3'), pos('a', 't1'), pos('b', 't2')])
        expect(await store.latestPerService?.({ event: 'thermo', services: null, recipient: null, now: T0, keys: new Set(['t2']) })).toEqual([pos('a', 't2'), pos('b', 't2')])
      })

      it('a keyed event without a valid key, and an unkeyed one with a key, are refused, changing nothing', async () => {
        for (const bad of [{ ...ev(1, 'thermo') }, k(1, ''), k(1, 'x'.repeat(129)), k(1, 'a\nb'), { ...ev(1, 'door'), key: 'k' }]) {
          const err = await store.append(batch('a', 'i1', [bad])).catch((e: unknown) => e)
          expect(err).toBeInstanceOf(RequestError)
          expect((err as RequestError).code).toBe(ErrorCode.INVALID_ARGUMENT)
        }
        expect(await store.lastSeq('a', 'i1')).toBe(0)
      })

      durableIt('keys, their last values, nulls and the key limit survive a reopen', async () => {
        await store.append(batch('a', 'i1', [k(1, 'k1'), k(2, 'k2'), k(3, 'k3'), k(4, 'k2', { isNull: true })]))
        const s = await reopen()
        expect(await held(s)).toEqual(['a:k1:1', 'a:k3:3', 'a:k2:4n'])
        const r = await s.append(batch('a', 'i1', [k(5, 'k2', { isNull: true }), k(6, 'k4'), k(7, 'k5')]))
        expect([r.nullsDropped, seqsOf(r.stored), r.refused.map((x) => x.seq)]).toEqual([1, [6], [7]])
        expect(await held(s)).toEqual(['a:k1:1', 'a:k3:3', 'a:k4:6'])
      })
    })

    describe('[STORE-QUEUE-1] push-out', () => {
      it('a queueing event keeps the newest maxQueueSize of its (service, event), in order', async () => {
        const max = limits('temp').maxQueueSize
        const total = max + 3
        await store.append(batch('b', 'i1', evs(1, 2, 'temp')))
        // one at a time, then the rest in one batch
        for (let s = 1; s <= 2; s++) await store.append(batch('a', 'i1', [ev(s, 'temp')]))
        await store.append(batch('a', 'i1', evs(3, total, 'temp')))
        const read = await store.read(query('temp', { services: new Set(['a']) }))
        expect(seqsOf(read)).toEqual(evs(total - max + 1, total, 'temp').map((e) => e.seq))
        expectIncreasing(positionsOf(read))
        expect(seqsOf(await store.read(query('temp', { services: new Set(['b']) })))).toEqual([1, 2])
        expect(store.count()).toBe(max + 2)
        // a next event pushes out exactly one more
        await store.append(batch('a', 'i1', [ev(total + 1, 'temp')]))
        const after = await store.read(query('temp', { services: new Set(['a']) }))
        expect(seqsOf(after)).toEqual(evs(total - max + 2, total + 1, 'temp').map((e) => e.seq))
        expect(store.count()).toBe(max + 2)
      })

      durableIt('push-out still keeps exactly maxQueueSize after a reopen', async () => {
        const max = limits('temp').maxQueueSize
        await store.append(batch('svc', 'i1', evs(1, max + 2, 'temp')))
        const s = await reopen()
        expect(s.count()).toBe(max)
        const newest = max + 4
        await s.append(batch('svc', 'i1', evs(max + 3, newest, 'temp')))
        expect(seqsOf(await s.read(query('temp')))).toEqual(evs(newest - max + 1, newest, 'temp').map((e) => e.seq))
        expect(s.count()).toBe(max)
      })

      it('[SITE-RELOAD-6] a smaller maxQueueSize from the limits in force trims the queue to it at its next append', async () => {
        await store.append(batch('a', 'i1', evs(1, 5, 'temp')))
        changed.set('temp', { ...limits('temp'), maxQueueSize: 2 })
        // nothing changes until the next append to that queue ...
        expect(seqsOf(await store.read(query('temp')))).toEqual([1, 2, 3, 4, 5])
        await store.append(batch('a', 'i1', [ev(6, 'temp')]))
        // ... which keeps the newest two, counted as pushed out
        expect(seqsOf(await store.read(query('temp')))).toEqual([5, 6])
        expect(store.count()).toBe(2)
        expect(store.counters().temp?.pushedOut).toBe(4)
      })

      it('storedByEvent counts the events held per name (a site reload removes an event only when none are held)', async () => {
        await store.append(batch('a', 'i1', [...evs(1, 3, 'log'), ev(4, 'door'), ev(5, 'door')]))
        expect(Object.fromEntries(store.storedByEvent?.() ?? [])).toEqual({ log: 3, door: 1 })
      })

      it('a private event keeps the newest maxPerRecipient of its (service, event, recipient)', async () => {
        const max = limits('msg').maxPerRecipient
        const toAlice = evs(1, max + 2, 'msg', { recipient: 'alice/phone' })
        await store.append(batch('a', 'i1', toAlice.slice(0, 2)))
        await store.append(batch('a', 'i1', [...toAlice.slice(2), ev(max + 3, 'msg', { recipient: 'bob/pc' })]))
        await store.append(batch('b', 'i1', [ev(1, 'msg', { recipient: 'alice/phone' })]))
        const alice = await store.read(query('msg', { recipient: 'alice/phone' }))
        const expectedAlice = [...toAlice.slice(-max).map((e) => `a-${e.seq}`), 'b-1']
        expect(alice.map((e) => `${e.serviceId}-${e.seq}`)).toEqual(expectedAlice)
        expect(alice.every((e) => e.recipient === 'alice/phone')).toBe(true)
        const bob = await store.read(query('msg', { recipient: 'bob/pc' }))
        expect(bob.map((e) => `${e.serviceId}-${e.seq}-${e.recipient}`)).toEqual([`a-${max + 3}-bob/pc`])
        expect(await store.read(query('msg', { recipient: 'carol/tab' }))).toEqual([])
        expect(store.count()).toBe(max + 2)
      })
    })

    describe('[CLI-GAP-1] removals for gap notices', () => {
      const gapOf = (event: string, extra: { after?: number, services?: ReadonlySet<string> | null, recipient?: string | null, sinceEpoch?: number } = {}): ReturnType<NonNullable<EventStore['gap']>> =>
        (store.gap as NonNullable<EventStore['gap']>).call(store, { event, after: extra.after ?? 0, services: extra.services ?? null, recipient: extra.recipient ?? null, sinceEpoch: extra.sinceEpoch ?? 0 })

      it('counts the events pushed out above a position, per service, exactly; none below it or for other names', async () => {
        const max = limits('temp').maxQueueSize
        expect(store.removalEpoch?.('temp')).toBe(0)
        expect(gapOf('temp')).toBe(null)
        const first = await store.append(batch('a', 'i1', evs(1, 3, 'temp')))
        await store.append(batch('a', 'i1', evs(4, max + 7, 'temp')))
        await store.append(batch('b', 'i1', evs(1, 2, 'temp')))
        const epoch = store.removalEpoch?.('temp') ?? 0
        expect(epoch).toBeGreaterThan(0)
        expect(store.removalEpoch?.('log')).toBe(0)
        const stored = await store.read(query('temp'))
        const gap = gapOf('temp')
        expect(gap).toEqual({ event: 'temp', services: ['a'], missed: 7, exact: true, pushedOut: 7, expired: 0, upTo: (stored[0] as StoredEvent).position - 1 })
        // a subscription that had the first 3 missed the next 4 (pushed out in the same commit as those 3)
        expect(gapOf('temp', { after: (first.stored[2] as StoredEvent).position })).toMatchObject({ missed: 4, exact: true, pushedOut: 4 })
        // one that had all 7 missed nothing
        expect(gapOf('temp', { after: (stored[0] as StoredEvent).position - 1 })).toBe(null)
        expect(gapOf('temp', { services: new Set(['b']) })).toBe(null)
        // nothing new since the epoch it saw: no gap
        expect(gapOf('temp', { sinceEpoch: epoch })).toBe(null)
        // replaced instances are no gap
        await store.append(batch('a', 'i1', evs(1, 3, 'door')))
        expect(gapOf('door')).toBe(null)
      })

      it('counts purged events as expired, and private push-outs per recipient', async () => {
        const life = limits('blip').lifetimeMs!
        await store.append(batch('svc', 'i1', evs(1, 3, 'blip'), { receivedAt: T0 }))
        expect(await store.purgeExpired(T0 + life)).toBe(3)
        expect(gapOf('blip')).toMatchObject({ missed: 3, exact: true, pushedOut: 0, expired: 3, services: ['svc'] })
        const max = limits('msg').maxPerRecipient
        await store.append(batch('a', 'i1', evs(1, max + 2, 'msg', { recipient: 'alice/phone' })))
        expect(gapOf('msg', { recipient: 'alice/phone' })).toMatchObject({ missed: 2, pushedOut: 2 })
        expect(gapOf('msg', { recipient: 'bob/pc' })).toBe(null)
      })

      it('expiredUnpurged counts the expired events a read skips until the purge deletes them', async () => {
        const life = limits('blip').lifetimeMs!
        const r = await store.append(batch('svc', 'i1', evs(1, 3, 'blip'), { receivedAt: T0 }))
        await store.append(batch('other', 'i1', evs(1, 1, 'blip'), { receivedAt: T0 }))
        const q = { event: 'blip', services: new Set(['svc']), recipient: null }
        expect(await store.expiredUnpurged?.({ ...q, after: 0, now: T0 + life - 1 })).toBe(null)
        expect(await store.expiredUnpurged?.({ ...q, after: 0, now: T0 + life })).toEqual({ count: 3, upTo: (r.stored[2] as StoredEvent).position, services: ['svc'] })
        expect((await store.expiredUnpurged?.({ ...q, after: (r.stored[0] as StoredEvent).position, now: T0 + life }))?.count).toBe(2)
        expect((await store.expiredUnpurged?.({ ...q, services: null, after: 0, now: T0 + life }))?.count).toBe(4)
        await store.purgeExpired(T0 + life)
        expect(await store.expiredUnpurged?.({ ...q, after: 0, now: T0 + life })).toBe(null)
      })
    })

    describe('[CLI-START-4] latestPerService', () => {
      it('is the newest unexpired event per service, within the filter and for the recipient, in position order', async () => {
        const life = limits('blip').lifetimeMs!
        const a = await store.append(batch('a', 'i1', evs(1, 3, 'log')))
        const b = await store.append(batch('b', 'i1', evs(1, 2, 'log')))
        await store.append(batch('c', 'i1', evs(1, 1, 'blip'), { receivedAt: T0 - life }))
        const last = (r: AppendResult): number => (r.stored[r.stored.length - 1] as StoredEvent).position
        const q = { event: 'log', services: null, recipient: null, now: T0 }
        expect(await store.latestPerService?.(q)).toEqual([last(a), last(b)])
        expect(await store.latestPerService?.({ ...q, services: new Set(['b', 'x']) })).toEqual([last(b)])
        expect(await store.latestPerService?.({ ...q, event: 'blip' })).toEqual([]) // c's only event has expired
        const m = await store.append(batch('a', 'i1', [ev(4, 'msg', { recipient: 'alice/phone' }), ev(5, 'msg', { recipient: 'bob/pc' })]))
        expect(await store.latestPerService?.({ ...q, event: 'msg', recipient: 'alice/phone' })).toEqual([(m.stored[0] as StoredEvent).position])
      })
    })

    describe('[CLI-START-3] positionAt', () => {
      it('is the first position received at or after a time, whatever its name; null after the newest', async () => {
        expect(await store.positionAt?.(T0)).toBe(null)
        const early = await store.append(batch('a', 'i1', evs(1, 3, 'log'), { receivedAt: T0 }))
        const mid = await store.append(batch('a', 'i1', [ev(4, 'door')], { receivedAt: T0 + 100 }))
        const late = await store.append(batch('b', 'i1', evs(1, 2, 'log'), { receivedAt: T0 + 200 }))
        const pos = (r: AppendResult, i = 0): number => (r.stored[i] as StoredEvent).position
        expect(await store.positionAt?.(T0 - 1)).toBe(pos(early))
        expect(await store.positionAt?.(T0)).toBe(pos(early))
        expect(await store.positionAt?.(T0 + 1)).toBe(pos(mid))
        expect(await store.positionAt?.(T0 + 100)).toBe(pos(mid))
        expect(await store.positionAt?.(T0 + 150)).toBe(pos(late))
        expect(await store.positionAt?.(T0 + 201)).toBe(null)
        // a deleted row is skipped: the next one answers
        await store.append(batch('a', 'i1', [ev(5, 'door')], { receivedAt: T0 + 300 }))
        expect(await store.positionAt?.(T0 + 50)).toBe(pos(late))
      })
    })

    describe('read filters and paging', () => {
      it('a services filter returns up to `limit` matching events, skipping the others', async () => {
        // a and c are spread out between many b's
        const positions = new Map<string, number[]>([['a', []], ['b', []], ['c', []]])
        const seqs = new Map<string, number>()
        for (const svc of ['a', 'b', 'b', 'c', 'b', 'b', 'b', 'a', 'b', 'b', 'b', 'b', 'c', 'b', 'a', 'b', 'c']) {
          const seq = (seqs.get(svc) ?? 0) + 1
          seqs.set(svc, seq)
          const r = await store.append(batch(svc, 'i1', [ev(seq, 'log')]))
          positions.get(svc)!.push(...positionsOf(r.stored))
        }
        const ac = [...positions.get('a')!, ...positions.get('c')!].sort((x, y) => x - y)
        const read = await store.read(query('log', { services: new Set(['a', 'c']), limit: 4 }))
        expect(positionsOf(read)).toEqual(ac.slice(0, 4))
        expect(read.every((e) => e.serviceId === 'a' || e.serviceId === 'c')).toBe(true)
        expect(positionsOf(await store.read(query('log', { services: new Set(['c']) })))).toEqual(positions.get('c'))
        expect(await store.read(query('log', { services: new Set() }))).toEqual([])
        expect(await store.read(query('log', { services: new Set(['zzz']) }))).toEqual([])
        expect((await store.read(query('log'))).length).toBe(store.count())
      })

      it('pages with limit and after return every event once, in order', async () => {
        const n = 23
        const pageSize = 5
        const r = await store.append(batch('svc', 'i1', evs(1, n, 'log')))
        const pages: StoredEvent[][] = []
        let after = 0
        for (;;) {
          const page = await store.read(query('log', { after, limit: pageSize }))
          if (page.length === 0) break
          expect(page.length).toBe(Math.min(pageSize, n - pages.length * pageSize))
          pages.push(page)
          after = page[page.length - 1]!.position
        }
        expect(pages.length).toBe(Math.ceil(n / pageSize))
        expect(positionsOf(pages.flat())).toEqual(positionsOf(r.stored))
        expect(await store.read(query('log', { limit: 0 }))).toEqual([])
        const mid = r.stored[10]!.position
        expect(seqsOf(await store.read(query('log', { after: mid })))).toEqual(seqsOf(r.stored.slice(11)))
      })

      it('reads only the asked event name', async () => {
        await store.append(batch('svc', 'i1', [ev(1, 'log'), ev(2, 'temp'), ev(3, 'log')]))
        expect(seqsOf(await store.read(query('log')))).toEqual([1, 3])
        expect(seqsOf(await store.read(query('temp')))).toEqual([2])
      })
    })

    describe('[STORE-EXPIRE-1] expiry', () => {
      it('read hides events with expiresAt <= now; replacing events never expire', async () => {
        const life = limits('blip').lifetimeMs!
        const b = batch('svc', 'i1', [ev(1, 'blip'), ev(2, 'door')], { receivedAt: T0 })
        const r = await store.append(b)
        expect(r.stored[0]!.expiresAt).toBe(T0 + life)
        expect(r.stored[1]!.expiresAt).toBe(null)
        expect(seqsOf(await store.read(query('blip', { now: T0 + life - 1 })))).toEqual([1])
        expect(await store.read(query('blip', { now: T0 + life }))).toEqual([])
        expect(seqsOf(await store.read(query('door', { now: T0 + 1e12 })))).toEqual([2])
        expect(store.count()).toBe(2) // expired but not yet purged
      })

      it('purgeExpired deletes exactly the expired events and returns how many', async () => {
        const life = limits('blip').lifetimeMs!
        await store.append(batch('svc', 'i1', evs(1, 3, 'blip'), { receivedAt: T0 }))
        await store.append(batch('svc', 'i1', evs(4, 5, 'blip'), { receivedAt: T0 + 500 }))
        await store.append(batch('svc', 'i1', [ev(6, 'log'), ev(7, 'door')], { receivedAt: T0 }))
        expect(await store.purgeExpired(T0 + life - 1)).toBe(0)
        expect(await store.purgeExpired(T0 + life)).toBe(3)
        expect(store.count()).toBe(4)
        expect(seqsOf(await store.read(query('blip', { now: T0 })))).toEqual([4, 5])
        expect(await store.purgeExpired(T0 + life)).toBe(0)
        expect(await store.purgeExpired(T0 + 500 + life)).toBe(2)
        expect(store.count()).toBe(2)
        expect(seqsOf(await store.read(query('log')))).toEqual([6])
        expect(seqsOf(await store.read(query('door')))).toEqual([7])
      })

      it('a purged queue is empty for push-out: new events fill it up to maxQueueSize again', async () => {
        const max = limits('temp').maxQueueSize
        const life = limits('temp').lifetimeMs!
        await store.append(batch('svc', 'i1', evs(1, max, 'temp'), { receivedAt: T0 }))
        expect(await store.purgeExpired(T0 + life)).toBe(max)
        const later = T0 + life
        for (let s = max + 1; s <= 2 * max; s++) await store.append(batch('svc', 'i1', [ev(s, 'temp')], { receivedAt: later }))
        expect(seqsOf(await store.read(query('temp', { now: later })))).toEqual(evs(max + 1, 2 * max, 'temp').map((e) => e.seq))
        expect(store.count()).toBe(max)
      })
    })

    describe('[STORE-EXPIRE-1] lifetime from the raise', () => {
      it('an event that arrives `age` ms after its raise expires `age` ms sooner, by read and by purge', async () => {
        const life = limits('blip').lifetimeMs!
        const b = batch('svc', 'i1', [{ ...ev(1, 'blip'), age: 600 }, { ...ev(2, 'blip'), age: 0 }, ev(3, 'blip')], { receivedAt: T0 })
        const r = await store.append(b)
        expect(r.stored.map((e) => e.expiresAt)).toEqual([T0 - 600 + life, T0 + life, T0 + life])
        expect(r.stored.map(plain)).toEqual(b.events.map((e, i) => expected(e, b, r.stored[i]!.position)))
        expect(seqsOf(await store.read(query('blip', { now: T0 - 600 + life - 1 })))).toEqual([1, 2, 3])
        expect(seqsOf(await store.read(query('blip', { now: T0 - 600 + life })))).toEqual([2, 3])
        expect(await store.purgeExpired(T0 - 600 + life)).toBe(1)
        expect(seqsOf(await store.read(query('blip', { now: T0 })))).toEqual([2, 3])
      })

      it('an age does not change the expiry of replacing events: they never expire', async () => {
        const r = await store.append(batch('svc', 'i1', [{ ...ev(1, 'door'), age: 10 * 365 * 86_400_000 }]))
        expect(r.stored[0]!.expiresAt).toBe(null)
        expect(seqsOf(await store.read(query('door', { now: T0 + 1e12 })))).toEqual([1])
      })

      durableIt('the expiry from the raise survives a reopen', async () => {
        const life = limits('blip').lifetimeMs!
        await store.append(batch('svc', 'i1', [{ ...ev(1, 'blip'), age: 900 }, ev(2, 'blip')], { receivedAt: T0 }))
        const s = await reopen()
        expect(seqsOf(await s.read(query('blip', { now: T0 - 900 + life })))).toEqual([2])
      })
    })

    describe('[STORE-EXPIRE-2] events that arrive expired', () => {
      it('are handled and counted, never stored nor given a position; a resend is a duplicate', async () => {
        const life = limits('blip').lifetimeMs!
        const events = [{ ...ev(1, 'blip'), age: life }, { ...ev(2, 'blip'), age: life - 1 }, { ...ev(3, 'blip'), age: 5 * life }, ev(4, 'log')]
        const r = await store.append(batch('svc', 'i1', events, { handledUpTo: 5 }))
        expect(seqsOf(r.stored)).toEqual([2, 4])
        expect(r.expired).toBe(2)
        expect(r.lastSeq).toBe(5)
        expect(await store.lastSeq('svc', 'i1')).toBe(5)
        expect(store.count()).toBe(2)
        expect(store.head()).toBe(r.stored[1]!.position)
        expect(r.stored[1]!.position - r.stored[0]!.position).toBe(1) // no position spent on seq 3
        expect(seqsOf(await store.read(query('blip')))).toEqual([2])
        expect(store.counters().blip).toMatchObject({ expiredOnArrival: 2, expired: 0 })
        const again = await store.append(batch('svc', 'i1', events))
        expect(again).toMatchObject({ stored: [], duplicates: 4, expired: 0, lastSeq: 5 })
        expect(store.counters().blip?.expiredOnArrival).toBe(2)
      })

      it('a batch of nothing but expired events still records the dedup record', async () => {
        const r = await store.append(batch('svc', 'i1', [{ ...ev(1, 'temp'), age: limits('temp').lifetimeMs! }]))
        expect(r).toEqual({ stored: [], duplicates: 0, lastSeq: 1, expired: 1, nullsDropped: 0, refused: [] })
        expect(await store.lastSeq('svc', 'i1')).toBe(1)
        expect(store.head()).toBe(0)
      })
    })

    describe('[STORE-REPLACE-2] null over null', () => {
      const nul = (seq: number): ArrivingEvent => ev(seq, 'door', { payload: NULL_PAYLOAD, isNull: true })

      it('a null over a stored null is dropped: handled, counted, not stored, the stored null stays', async () => {
        await store.append(batch('a', 'i1', [ev(1, 'door')]))
        const first = await store.append(batch('a', 'i1', [nul(2)]))
        expect(seqsOf(first.stored)).toEqual([2])
        expect(first.nullsDropped).toBe(0)
        const head = store.head()
        const second = await store.append(batch('a', 'i1', [nul(3)]))
        expect(second).toEqual({ stored: [], duplicates: 0, lastSeq: 3, expired: 0, nullsDropped: 1, refused: [] })
        expect(store.head()).toBe(head)
        const read = await store.read(query('door'))
        expect(read.map((e) => [e.seq, e.isNull, e.position])).toEqual([[2, true, first.stored[0]!.position]])
        expect(store.counters().door?.nullsDropped).toBe(1)
        // a value again, then a null: both stored
        const back = await store.append(batch('a', 'i1', [ev(4, 'door'), nul(5)]))
        expect(seqsOf(back.stored)).toEqual([4, 5])
        expect(seqsOf(await store.read(query('door')))).toEqual([5])
      })

      it('a null with nothing stored is stored; a second one in the same batch is dropped; other services are their own', async () => {
        const r = await store.append(batch('a', 'i1', [nul(1), nul(2), ev(3, 'log')]))
        expect(seqsOf(r.stored)).toEqual([1, 3])
        expect(r.nullsDropped).toBe(1)
        const b = await store.append(batch('b', 'i1', [nul(1)]))
        expect(seqsOf(b.stored)).toEqual([1])
        const a2 = await store.append(batch('a', 'i2', [nul(1)])) // a new instance of service a: same (service, event)
        expect(a2.nullsDropped).toBe(1)
        expect((await store.read(query('door'))).map((e) => `${e.serviceId}-${e.instance}-${e.seq}`)).toEqual(['a-i1-1', 'b-i1-1'])
        expect(store.counters().door?.nullsDropped).toBe(2)
      })

      it('many appends in one tick judge null over null in call order', async () => {
        const results = await Promise.all([
          store.append(batch('a', 'i1', [ev(1, 'door')])),
          store.append(batch('a', 'i1', [nul(2)])),
          store.append(batch('a', 'i1', [nul(3)])),
          store.append(batch('a', 'i1', [ev(4, 'door')])),
          store.append(batch('a', 'i1', [nul(5)]))
        ])
        expect(results.map((r) => [seqsOf(r.stored), r.nullsDropped])).toEqual([[[1], 0], [[2], 0], [[], 1], [[4], 0], [[5], 0]])
        expect(seqsOf(await store.read(query('door')))).toEqual([5])
      })

      durableIt('a stored null is still known after a reopen', async () => {
        await store.append(batch('a', 'i1', [ev(1, 'door'), nul(2)]))
        await store.append(batch('b', 'i1', [ev(1, 'door')]))
        const s = await reopen()
        const r = await s.append(batch('a', 'i1', [nul(3)]))
        expect(r.nullsDropped).toBe(1)
        const rb = await s.append(batch('b', 'i1', [nul(2)]))
        expect(seqsOf(rb.stored)).toEqual([2])
      })
    })

    describe('[STORE-COUNT-1] counters', () => {
      it('count push-outs, replacements and expiries per event name', async () => {
        expect(store.counters()).toEqual({})
        const max = limits('temp').maxQueueSize
        await store.append(batch('a', 'i1', evs(1, max + 3, 'temp')))
        await store.append(batch('a', 'i1', [ev(max + 4, 'door'), ev(max + 5, 'door'), ev(max + 6, 'door')]))
        await store.append(batch('a', 'i1', evs(max + 7, max + 10, 'blip'), { receivedAt: T0 }))
        expect(await store.purgeExpired(T0 + limits('blip').lifetimeMs!)).toBe(4)
        const toAlice = evs(max + 11, max + 11 + limits('msg').maxPerRecipient, 'msg', { recipient: 'alice/phone' })
        await store.append(batch('a', 'i1', toAlice))
        const c = store.counters()
        expect(c.temp).toEqual({ pushedOut: 3, replaced: 0, expired: 0, expiredOnArrival: 0, nullsDropped: 0 })
        expect(c.door).toEqual({ pushedOut: 0, replaced: 2, expired: 0, expiredOnArrival: 0, nullsDropped: 0 })
        expect(c.blip).toEqual({ pushedOut: 0, replaced: 0, expired: 4, expiredOnArrival: 0, nullsDropped: 0 })
        expect(c.msg?.pushedOut).toBe(1)
        expect(c.log).toBeUndefined()
        // a snapshot: changing it changes nothing, later drops do not show in it
        c.temp!.pushedOut = 1000
        await store.append(batch('a', 'i1', [ev(max + 20, 'temp')]))
        expect(store.counters().temp?.pushedOut).toBe(4)
        expect(c.temp!.pushedOut).toBe(1000)
      })

      it('an event pushed out after its lifetime ran out counts as expired, not pushed out', async () => {
        const max = limits('temp').maxQueueSize
        const life = limits('temp').lifetimeMs!
        await store.append(batch('a', 'i1', evs(1, max, 'temp'), { receivedAt: T0 }))
        await store.append(batch('a', 'i1', evs(max + 1, max + 2, 'temp'), { receivedAt: T0 + life }))
        expect(store.counters().temp).toMatchObject({ pushedOut: 0, expired: 2 })
        expect(store.count()).toBe(max)
      })
    })

    describe('[STORE-ACK-1] concurrent appends', () => {
      it('many appends in one tick resolve in call order with distinct increasing positions', async () => {
        const calls = 60
        const promises: Promise<AppendResult>[] = []
        for (let i = 0; i < calls; i++) {
          // three services, each with consecutive seqs across calls; every fifth call resends the previous one
          const svc = `svc${i % 3}`
          const k = Math.floor(i / 3)
          const resend = k % 5 === 4
          const from = resend ? (k - 1) * 2 + 1 : k * 2 + 1
          promises.push(store.append(batch(svc, 'i1', evs(from, from + 1, 'log'))))
        }
        const order: number[] = []
        promises.forEach((p, i) => { void p.then(() => order.push(i)) })
        const results = await Promise.all(promises)
        expect(order).toEqual(results.map((_, i) => i))
        const positions = results.flatMap((r) => positionsOf(r.stored))
        expectIncreasing(positions)
        expect(store.head()).toBe(positions[positions.length - 1])
        let stored = 0
        results.forEach((r, i) => {
          const k = Math.floor(i / 3)
          const resend = k % 5 === 4
          expect(r.stored.length).toBe(resend ? 0 : 2)
          expect(r.duplicates).toBe(resend ? 2 : 0)
          stored += r.stored.length
        })
        expect(store.count()).toBe(stored)
        expect(positionsOf(await store.read(query('log')))).toEqual(positions)
      })
    })

    describe('close', () => {
      it('completes appends made before it, then every call fails with ClosedError', async () => {
        const pending = store.append(batch('svc', 'i1', evs(1, 3, 'log')))
        await store.close()
        const r = await pending
        expect(seqsOf(r.stored)).toEqual([1, 2, 3])
        await expect(store.append(batch('svc', 'i1', [ev(4, 'log')]))).rejects.toBeInstanceOf(ClosedError)
        await expect(store.read(query('log'))).rejects.toBeInstanceOf(ClosedError)
        await expect(store.purgeExpired(T0)).rejects.toBeInstanceOf(ClosedError)
        expect(() => store.head()).toThrow(ClosedError)
        expect(() => store.count()).toThrow(ClosedError)
        expect(() => store.lastSeq('svc', 'i1')).toThrow(ClosedError)
        await expect(store.close()).resolves.toBeUndefined()
        if (fixture.reopen !== undefined) {
          store = await fixture.reopen()
          opened.push(store)
          expect(seqsOf(await store.read(query('log')))).toEqual([1, 2, 3])
          expect(await store.lastSeq('svc', 'i1')).toBe(3)
        }
      })
    })
  })
}
