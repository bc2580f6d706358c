import { writeFile } from 'node:fs/promises'
import Database from 'better-sqlite3'
import { join } from 'node:path'
import { describe, it, expect, beforeEach, afterEach } from 'vitest'
import { Category, ConfigError, ErrorCode, PayloadKind, PersistenceError, type RaisedEvent } from '@herald/protocol'
import { tempDir } from '@herald/node-runtime/testing'
import { describeEventStoreConformance } from '../testing/index.js'
import type { AppendBatch, ArrivingEvent, LimitsOf, QueueLimits } from './event-store.js'
import { createSqliteEventStore } from './sqlite-event-store.js'
import type { SqliteEventStore, SqliteEventStoreOptions } from './sqlite-event-store.js'

describeEventStoreConformance('SqliteEventStore', async (limitsOf, options) => {
  const dir = await tempDir('herald-event-store-')
  const path = join(dir.path, 'events.db')
  return {
    store: await createSqliteEventStore({ path, limitsOf, ...options }),
    reopen: async () => await createSqliteEventStore({ path, limitsOf, ...options }),
    cleanup: dir.remove
  }
}, { durable: true })

const T0 = 1_700_000_000_000
const LIMITS: Record<string, QueueLimits> = {
  blob: { category: Category.queueing, lifetimeMs: 1000, maxQueueSize: 1_000_000, maxPerRecipient: 1 },
  tick: { category: Category.queueing, lifetimeMs: null, maxQueueSize: 20_000, maxPerRecipient: 1 },
  door: { category: Category.replacing, lifetimeMs: null, maxQueueSize: 1, maxPerRecipient: 1 },
  thermo: { category: Category.replacing, lifetimeMs: null, maxQueueSize: 1, maxPerRecipient: 1, key: { kind: 'raise' } }
}
const limitsOf: LimitsOf = (name) => LIMITS[name]

function ev (seq: number, name: string, size: number): RaisedEvent {
  const payload = new Uint8Array(size).fill(seq % 251)
  return { seq, name, category: LIMITS[name]?.category ?? Category.queueing, raisedAt: T0, isNull: false, recipient: null, payloadKind: PayloadKind.bytes, payload }
}

function batch (serviceId: string, events: ArrivingEvent[], receivedAt = T0): AppendBatch {
  return { serviceId, instance: 'i1', events, handledUpTo: events[events.length - 1]?.seq ?? 0, receivedAt }
}

describe('SqliteEventStore', () => {
  let dir: { path: string, remove: () => Promise<void> }
  let path: string
  const open: SqliteEventStore[] = []

  async function openStore (extra: Partial<SqliteEventStoreOptions> = {}): Promise<SqliteEventStore> {
    const s = await createSqliteEventStore({ path, limitsOf, ...extra })
    open.push(s)
    return s
  }

  beforeEach(async () => {
    dir = await tempDir('herald-event-store-')
    path = join(dir.path, 'events.db')
  })

  afterEach(async () => {
    for (const s of open.splice(0)) await s.close()
    await dir.remove()
  })

  it('rejects wrong options with a ConfigError naming the option', async () => {
    const cases: Array<[string, Record<string, unknown>]> = [
      ['path', { path: '' }],
      ['path', { path: ':memory:' }],
      ['limitsOf', { limitsOf: undefined }],
      ['synchronous', { synchronous: 'OFF' }],
      ['maxSizeBytes', { maxSizeBytes: -1 }],
      ['logger', { logger: 'console' }],
      ['maxDedupKeys', { maxDedupKeys: 0 }],
      ['colour', { colour: 'blue' }]
    ]
    for (const [option, bad] of cases) {
      const opts = { path, limitsOf, ...bad } as unknown as SqliteEventStoreOptions
      const err: unknown = await createSqliteEventStore(opts).then(() => null, (e: unknown) => e)
      expect(err).toBeInstanceOf(ConfigError)
      expect((err as Error).message).toContain(`"${option}"`)
    }
  })

  it('rejects a file that is not an event store with a PersistenceError', async () => {
    await writeFile(path, 'this is not a database, just some text that is long enough to look like a header....')
    await expect(createSqliteEventStore({ path, limitsOf })).rejects.toBeInstanceOf(PersistenceError)
  })

  it('[STORE-KEY-1] opens a schema 3 file (no replacing keys) as schema 4: its events stay, read without a key; keyed events work from then on', async () => {
    const s = await openStore()
    await s.append(batch('svc', [ev(1, 'tick', 3), ev(2, 'door', 3)]))
    await s.close()
    open.splice(0)
    const raw = new Database(path)
    raw.exec(`DROP INDEX events_queue; ALTER TABLE events DROP COLUMN rkey; CREATE INDEX events_queue ON events (service, event, recipient, position); UPDATE meta SET value = 3 WHERE key = 'schema'`)
    raw.close()
    const s4 = await openStore()
    const read = await s4.read({ event: 'door', after: 0, services: null, recipient: null, now: T0, limit: 10 })
    expect(read.map((e) => [e.seq, 'key' in e])).toEqual([[2, false]])
    await s4.append(batch('svc', [{ ...ev(3, 'thermo', 3), key: 't1' }, { ...ev(4, 'thermo', 3), key: 't2' }, { ...ev(5, 'thermo', 3), key: 't1' }, ev(6, 'door', 3)]))
    expect((await s4.read({ event: 'thermo', after: 0, services: null, recipient: null, now: T0, limit: 10 })).map((e) => [e.seq, e.key])).toEqual([[4, 't2'], [5, 't1']])
    expect((await s4.read({ event: 'door', after: 0, services: null, recipient: null, now: T0, limit: 10 })).map((e) => e.seq)).toEqual([6])
    await s4.close()
    open.splice(0)
    const check = new Database(path, { readonly: true })
    expect(check.prepare(`SELECT value FROM meta WHERE key = 'schema'`).pluck().get()).toBe(4)
    // [STORE-KEY-1] the replace of a keyed event is one delete on the queue index
    const plan = check.prepare(`EXPLAIN QUERY PLAN SELECT position FROM events WHERE service = 'a' AND event = 'e' AND recipient = '' AND rkey = 'k' ORDER BY position LIMIT 1`).raw(true).all() as unknown[][]
    expect(plan.map((r) => String(r[3])).join(' ')).toMatch(/USING (COVERING )?INDEX events_queue \(service=\? AND event=\? AND recipient=\? AND rkey=\?\)/)
    check.close()
  })

  it('opens a schema 2 file (no dedup keys) as schema 4: its events stay, keys are remembered from then on', async () => {
    const s = await openStore()
    await s.append(batch('svc', [ev(1, 'tick', 3)]))
    await s.close()
    open.splice(0)
    // make it what a schema 2 broker wrote
    const raw = new Database(path)
    raw.exec(`DROP INDEX events_queue; ALTER TABLE events DROP COLUMN rkey; CREATE INDEX events_queue ON events (service, event, recipient, position); DROP TABLE dedup_keys; UPDATE meta SET value = 2 WHERE key = 'schema'`)
    raw.close()
    const s2 = await openStore()
    expect(s2.lastSeq('svc', 'i1')).toBe(1)
    await s2.append(batch('svc', [{ ...ev(2, 'tick', 3), dedupKey: 'k1' }]))
    await s2.close()
    open.splice(0)
    const check = new Database(path, { readonly: true })
    expect(check.prepare(`SELECT value FROM meta WHERE key = 'schema'`).pluck().get()).toBe(4)
    expect(check.prepare('SELECT service, instance, key, seq FROM dedup_keys').raw(true).all()).toEqual([['svc', 'i1', 'k1', 2]])
    check.close()
    const s3 = await openStore()
    const r = await s3.append(batch('svc', [{ ...ev(3, 'tick', 3), dedupKey: 'k1' }]))
    expect([r.stored.length, r.duplicates]).toEqual([0, 1])
    expect((await s3.read({ event: 'tick', after: 0, services: null, recipient: null, now: T0, limit: 10 })).map((e) => e.seq)).toEqual([1, 2])
  })

  it('opens a schema 1 file (no upload ages): its events read with uploadAge 0, new ones keep theirs, a newer schema is refused', async () => {
    const s = await openStore()
    await s.append(batch('svc', [ev(1, 'blob', 3)]))
    await s.close()
    open.splice(0)
    // make it what a schema 1 broker wrote
    const raw = new Database(path)
    raw.exec(`DROP INDEX events_queue; ALTER TABLE events DROP COLUMN rkey; CREATE INDEX events_queue ON events (service, event, recipient, position); ALTER TABLE events DROP COLUMN upload_age; UPDATE meta SET value = 1 WHERE key = 'schema'`)
    raw.close()
    const s1 = await openStore()
    expect((await s1.read({ event: 'blob', after: 0, services: null, recipient: null, now: T0, limit: 10 })).map((e) => [e.seq, e.uploadAge, e.expiresAt])).toEqual([[1, 0, T0 + 1000]])
    await s1.append(batch('svc', [{ ...ev(2, 'blob', 3), age: 400 }]))
    await s1.close()
    open.splice(0)
    const s2 = await openStore()
    expect((await s2.read({ event: 'blob', after: 0, services: null, recipient: null, now: T0, limit: 10 })).map((e) => [e.seq, e.uploadAge, e.expiresAt])).toEqual([[1, 0, T0 + 1000], [2, 400, T0 + 600]])
    await s2.close()
    open.splice(0)
    const future = new Database(path)
    future.exec(`UPDATE meta SET value = 99 WHERE key = 'schema'`)
    future.close()
    await expect(openStore()).rejects.toThrow('schema version 99')
  })

  it('a commit that fails (disk full) rejects every append of its flush and changes nothing; space freed, appends work again', async () => {
    const store = await openStore({ maxSizeBytes: 256 * 1024 })
    const size = 8 * 1024
    let seq = 0
    let failure: unknown = null
    while (seq < 200) {
      const before = { head: store.head(), count: store.count(), lastSeq: store.lastSeq('svc', 'i1') }
      failure = await store.append(batch('svc', [ev(seq + 1, 'blob', size)])).then(() => null, (e: unknown) => e)
      if (failure !== null) {
        expect({ head: store.head(), count: store.count(), lastSeq: store.lastSeq('svc', 'i1') }).toEqual(before)
        break
      }
      seq++
    }
    expect(seq).toBeGreaterThan(3) // a few fitted before the file was full
    expect(failure).toBeInstanceOf(PersistenceError)
    // [OPS-METRICS-2] /readyz says why until a commit succeeds again
    expect(store.problem()).toMatch(/^the last commit failed: .*full/)
    expect(failure).toMatchObject({ code: ErrorCode.PERSISTENCE_FAILED, cause: { code: 'SQLITE_FULL' } })
    expect((failure as Error).message).toMatch(/commit of 1 append\(s\) with 1 event\(s\).*SQLITE_FULL/)

    // still serves reads of everything committed
    const stored = await store.read({ event: 'blob', after: 0, services: null, recipient: null, now: T0, limit: 1000 })
    expect(stored.map((e) => e.seq)).toEqual(Array.from({ length: seq }, (_, i) => i + 1))
    expect(stored.every((e) => e.payload.byteLength === size && e.payload[0] === e.seq % 251)).toBe(true)

    // appends of one flush fail together, though the first alone might fit
    const head = store.head()
    const together = await Promise.allSettled(['a', 'b', 'c'].map((svc) => store.append(batch(svc, [1, 2, 3].map((s) => ev(s, 'blob', size))))))
    expect(together.map((r) => r.status)).toEqual(['rejected', 'rejected', 'rejected'])
    for (const r of together) expect((r as PromiseRejectedResult).reason).toMatchObject({ code: ErrorCode.PERSISTENCE_FAILED, message: expect.stringContaining('commit of 3 append(s) with 9 event(s)') as unknown })
    expect(['a', 'b', 'c'].map((svc) => store.lastSeq(svc, 'i1'))).toEqual([0, 0, 0])
    expect(store.head()).toBe(head)
    expect(store.count()).toBe(seq)

    // free space by purging, then the store takes appends again
    expect(await store.purgeExpired(T0 + LIMITS.blob!.lifetimeMs!)).toBe(seq)
    expect(store.count()).toBe(0)
    const later = T0 + 5000
    const ok = await store.append(batch('svc', [ev(seq + 1, 'blob', size), ev(seq + 2, 'blob', size)], later))
    expect(ok.stored.map((e) => e.seq)).toEqual([seq + 1, seq + 2])
    expect(ok.stored[0]!.position).toBe(head + 1)
    expect(store.lastSeq('svc', 'i1')).toBe(seq + 2)
    expect(store.problem()).toBeNull()

    await store.close()
    expect(store.problem()).toBe('event store is closed')
    const again = await openStore()
    expect(again.head()).toBe(head + 2)
    expect(again.count()).toBe(2)
    expect(again.lastSeq('svc', 'i1')).toBe(seq + 2)
  })

  it('pushes out of a 20,000-event queue without loading it, across flushes and a reopen', async () => {
    const max = LIMITS.tick!.maxQueueSize
    const total = max + 5000
    const per = 500
    let store = await openStore({ synchronous: 'NORMAL' })
    // first half one batch at a time, second half all in one tick (one flush)
    let seq = 0
    while (seq < total / 2) {
      await store.append(batch('svc', Array.from({ length: per }, () => ev(++seq, 'tick', 16))))
    }
    const concurrent: Array<Promise<unknown>> = []
    while (seq < total) concurrent.push(store.append(batch('svc', Array.from({ length: per }, () => ev(++seq, 'tick', 16)))))
    await Promise.all(concurrent)
    expect(store.count()).toBe(max)
    const first = await store.read({ event: 'tick', after: 0, services: null, recipient: null, now: T0, limit: 1 })
    expect(first.map((e) => e.seq)).toEqual([total - max + 1])

    await store.close()
    store = await openStore({ synchronous: 'NORMAL' })
    expect(store.count()).toBe(max)
    await store.append(batch('svc', [ev(total + 1, 'tick', 16), ev(total + 2, 'tick', 16)]))
    expect(store.count()).toBe(max)
    const page = await store.read({ event: 'tick', after: 0, services: null, recipient: null, now: T0, limit: 3 })
    expect(page.map((e) => e.seq)).toEqual([total - max + 3, total - max + 4, total - max + 5])
  })

  it('answers reads of recent positions from memory exactly as the file does', async () => {
    // replacing, pushed-out, private, expired and filtered events, more than the store keeps in memory
    const limits: Record<string, QueueLimits> = {
      tick: { category: Category.queueing, lifetimeMs: null, maxQueueSize: 9000, maxPerRecipient: 1 },
      short: { category: Category.queueing, lifetimeMs: 1000, maxQueueSize: 1000, maxPerRecipient: 1 },
      state: { category: Category.replacing, lifetimeMs: null, maxQueueSize: 1, maxPerRecipient: 1 },
      note: { category: Category.private, lifetimeMs: null, maxQueueSize: 1, maxPerRecipient: 3 }
    }
    const names = ['tick', 'tick', 'short', 'state', 'note'] as const
    const store = await openStore({ limitsOf: (n) => limits[n], synchronous: 'NORMAL' })
    const seqs = new Map<string, number>()
    for (let round = 0; round < 60; round++) {
      const pending: Array<Promise<unknown>> = []
      for (const service of ['a', 'b']) {
        const events: RaisedEvent[] = []
        for (let i = 0; i < 250; i++) {
          const seq = (seqs.get(service) ?? 0) + 1
          seqs.set(service, seq)
          const name = names[(seq * 7 + round) % names.length]!
          events.push({
            seq, name, category: limits[name]!.category, raisedAt: T0, isNull: false,
            recipient: name === 'note' ? `u/c${seq % 3}` : null, payloadKind: PayloadKind.bytes, payload: new Uint8Array([seq % 251, round])
          })
        }
        pending.push(store.append(batch(service, events, T0 + round * 100)))
      }
      await Promise.all(pending)
    }
    const queries = []
    for (const event of ['tick', 'short', 'state', 'note']) {
      for (const services of [null, new Set(['b'])]) {
        for (const recipient of event === 'note' ? ['u/c0', 'u/c2'] : [null]) {
          for (const after of [0, 5000, 10_000, 20_000, 26_000, 29_990, 30_000]) {
            for (const now of [T0, T0 + 4000]) queries.push({ event, services, recipient, after, now, limit: 700 })
          }
        }
      }
    }
    const fromMemory = await Promise.all(queries.map((q) => store.read(q)))
    await store.close()
    const reopened = await openStore({ limitsOf: (n) => limits[n], synchronous: 'NORMAL' })
    const fromFile = await Promise.all(queries.map((q) => reopened.read(q)))
    const positions = (list: Array<{ position: number, payload: Uint8Array }>): string[] => list.map((e) => `${e.position}:${Array.from(e.payload).join(',')}`)
    expect(fromMemory.map(positions)).toEqual(fromFile.map(positions))
    expect(fromFile.some((r) => r.length > 0)).toBe(true)
  })
})

describe('SqliteEventStore for metrics [OPS-METRICS-1]', () => {
  let dir: { path: string, remove: () => Promise<void> }
  beforeEach(async () => { dir = await tempDir('herald-sqlite-metrics-') })
  afterEach(async () => { await dir.remove() })

  it('counts stored events per name and tells each commit\'s duration and its sync\'s, the sync within the commit', async () => {
    const limitsOf: LimitsOf = (name) => name === 'a' || name === 'b' ? { category: Category.queueing, lifetimeMs: 60_000, maxQueueSize: 2, maxPerRecipient: 1 } : undefined
    const store = await createSqliteEventStore({ path: join(dir.path, 'events.db'), limitsOf })
    const commits: Array<[number, number]> = []
    store.observeCommits((c, s) => { commits.push([c, s]) })
    const raised = (seq: number, name: string): ArrivingEvent => ({ name, category: Category.queueing, seq, raisedAt: 1, isNull: false, payloadKind: PayloadKind.bytes, payload: new Uint8Array(4), recipient: null })
    await store.append({ serviceId: 'svc', instance: 'i', events: [raised(1, 'a'), raised(2, 'a'), raised(3, 'a'), raised(4, 'b')], handledUpTo: 4, receivedAt: 1000 })
    await store.append({ serviceId: 'svc', instance: 'i', events: [raised(5, 'b')], handledUpTo: 5, receivedAt: 1000 })
    // a's queue holds 2: one was pushed out
    expect(Object.fromEntries(store.storedByEvent())).toEqual({ a: 2, b: 2 })
    expect(commits).toHaveLength(2)
    for (const [c, s] of commits) expect(0 <= s && s <= c).toBe(true)
    store.observeCommits(null)
    await store.append({ serviceId: 'svc', instance: 'i', events: [raised(6, 'b')], handledUpTo: 6, receivedAt: 1000 })
    expect(commits).toHaveLength(2)
    await store.close()
  })
})
