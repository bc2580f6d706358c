/**
 * The PostgreSQL event store ([PG-*]) on a real, throwaway PostgreSQL (test/support/postgres.ts):
 * the conformance suite every store passes, then what is PostgreSQL's own: migrations, a newer
 * schema refused, two stores (two brokers) on one database.
 */
import { afterAll, describe, expect, it } from 'vitest'
import pg from 'pg'
import { Category, CATEGORY_CODE, PayloadKind, PersistenceError, type RaisedEvent, type StoredEvent } from '@herald/protocol'
import { createPostgresEventStore, migratePostgresSchema, PG_SCHEMA_VERSION, type LimitsOf, type QueueLimits } from '@herald/broker'
import { describeEventStoreConformance } from '@herald/broker/testing'
import { startPostgres, type PostgresCluster } from './support/postgres.js'

let cluster: Promise<PostgresCluster> | null = null
let databases = 0
/** A fresh database on the file's one cluster (started at the first use). */
async function freshDatabase (): Promise<string> {
  cluster ??= startPostgres()
  return await (await cluster).createDatabase(`t${++databases}`)
}
afterAll(async () => { await (await cluster)?.remove() }, 60_000)

describeEventStoreConformance('PostgresEventStore', async (limitsOf, options) => {
  const url = await freshDatabase()
  return {
    store: await createPostgresEventStore({ url, limitsOf, pollMs: 50, ...options }),
    reopen: async () => await createPostgresEventStore({ url, limitsOf, pollMs: 50, ...options }),
    cleanup: async () => {}
  }
}, { durable: true })

const T0 = 1_700_000_000_000
const LIMITS: Record<string, QueueLimits> = {
  log: { category: Category.queueing, lifetimeMs: null, maxQueueSize: 1_000_000, maxPerRecipient: 1 },
  level: { category: Category.replacing, lifetimeMs: null, maxQueueSize: 1, maxPerRecipient: 1 },
  thermo: { category: Category.replacing, lifetimeMs: null, maxQueueSize: 1, maxPerRecipient: 1, key: { kind: 'raise' }, maxKeys: 10 }
}
const limitsOf: LimitsOf = (name) => LIMITS[name]

function ev (seq: number): RaisedEvent {
  return { seq, name: 'log', category: Category.queueing, raisedAt: T0, isNull: false, recipient: null, payloadKind: PayloadKind.bytes, payload: new Uint8Array([seq % 256]) }
}

describe('PostgresEventStore', () => {
  it('[PG-SCHEMA-1] migrates an empty database once, and [PG-SCHEMA-2] refuses a newer schema', async () => {
    const url = await freshDatabase()
    const a = await createPostgresEventStore({ url, limitsOf })
    await a.close()
    const c = new pg.Client({ connectionString: url })
    await c.connect()
    expect((await c.query<{ value: string }>("SELECT value FROM herald_meta WHERE key = 'schema'")).rows[0]?.value).toBe(String(PG_SCHEMA_VERSION))
    await c.query("UPDATE herald_meta SET value = 99 WHERE key = 'schema'")
    await c.end()
    await expect(createPostgresEventStore({ url, limitsOf })).rejects.toThrow(`schema version 99; this broker reads version ${PG_SCHEMA_VERSION}`)
    await expect(createPostgresEventStore({ url, limitsOf })).rejects.toBeInstanceOf(PersistenceError)
  })

  it('[CLUSTER-INGEST-1] two stores numbering one instance themselves (assignSeqs): every event stored, seqs 1..n once each', async () => {
    const url = await freshDatabase()
    const a = await createPostgresEventStore({ url, limitsOf })
    const b = await createPostgresEventStore({ url, limitsOf })
    try {
      expect(a.assignsSeqs).toBe(true)
      const appends = []
      for (let i = 0; i < 100; i++) {
        for (const s of [a, b]) appends.push(s.append({ serviceId: 'svc', instance: '_ingest', events: [ev(1)], handledUpTo: 1, receivedAt: T0, assignSeqs: true }))
      }
      const results = await Promise.all(appends)
      expect(results.every((r) => r.stored.length === 1 && r.duplicates === 0)).toBe(true)
      expect(results.map((r) => r.stored[0]!.seq).sort((x, y) => x - y)).toEqual(Array.from({ length: 200 }, (_, i) => i + 1))
      expect(await a.lastSeq('svc', '_ingest')).toBe(200)
    } finally {
      await a.close()
      await b.close()
    }
  })

  it('[PG-TXN-1] values reach the database as they are: keys with quotes, backslashes and non-ASCII, any payload bytes', async () => {
    const url = await freshDatabase()
    const s = await createPostgresEventStore({ url, limitsOf })
    try {
      const key = "it's a \\ key; DROP TABLE herald_events; -- é\u{1F600}"
      const payload = new Uint8Array(256).map((_, i) => i)
      const r = await s.append({ serviceId: 'svc', instance: 'i1', events: [{ ...ev(1), payload, dedupKey: key }], handledUpTo: 1, receivedAt: T0 })
      expect(r.stored).toHaveLength(1)
      const again = await s.append({ serviceId: 'svc', instance: 'i1', events: [{ ...ev(2), dedupKey: key }], handledUpTo: 2, receivedAt: T0 })
      expect([again.stored.length, again.duplicates]).toEqual([0, 1])
      const read = await s.read({ event: 'log', after: 0, services: null, recipient: null, now: T0, limit: 10 })
      expect(Array.from(read[0]!.payload)).toEqual(Array.from(payload))
    } finally {
      await s.close()
    }
  })

  it('[CLUSTER-DEDUP-1] [PG-POS-1] two stores on one database: one dedup record, positions in commit order, each told every commit once', async () => {
    const url = await freshDatabase()
    const a = await createPostgresEventStore({ url, limitsOf, pollMs: 50 })
    const b = await createPostgresEventStore({ url, limitsOf, pollMs: 50 })
    const told: Record<'a' | 'b', number[]> = { a: [], b: [] }
    a.onCommitted((events) => { for (const e of events) told.a.push(e.position) })
    b.onCommitted((events) => { for (const e of events) told.b.push(e.position) })
    try {
      // the same (service, instance) through both at once, overlapping seqs: each seq stored once
      const appends = []
      for (let i = 0; i < 40; i++) {
        const from = i * 5 + 1
        const events = [ev(from), ev(from + 1), ev(from + 2), ev(from + 3), ev(from + 4)]
        for (const s of [a, b]) appends.push(s.append({ serviceId: 'svc', instance: 'i1', events, handledUpTo: from + 4, receivedAt: T0 }))
      }
      const results = await Promise.all(appends)
      const stored = results.flatMap((r) => r.stored)
      expect(stored.map((e) => e.seq).sort((x, y) => x - y)).toEqual(Array.from({ length: 200 }, (_, i) => i + 1))
      expect(results.reduce((n, r) => n + r.duplicates, 0)).toBe(200)
      expect(await a.lastSeq('svc', 'i1')).toBe(200)
      expect(await b.lastSeq('svc', 'i1')).toBe(200)
      // position order is seq order for one instance: commit order
      const all = await a.read({ event: 'log', after: 0, services: null, recipient: null, now: T0, limit: 1000 })
      expect(all.map((e) => e.seq)).toEqual(Array.from({ length: 200 }, (_, i) => i + 1))
      // each store tells every committed position once, in order, whoever committed it
      const positions = all.map((e: StoredEvent) => e.position)
      const deadline = Date.now() + 10_000
      while ((told.a.length < 200 || told.b.length < 200) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20))
      expect(told.a).toEqual(positions)
      expect(told.b).toEqual(positions)
      expect(await b.freshHead()).toBe(positions[199])
    } finally {
      await a.close()
      await b.close()
    }
  })

  it('[PG-KEY-1] two stores adding new keys to one (service, event) at once: exactly maxKeys stored, the rest refused with KEY_LIMIT', async () => {
    const url = await freshDatabase()
    const a = await createPostgresEventStore({ url, limitsOf })
    const b = await createPostgresEventStore({ url, limitsOf })
    const thermo = (seq: number, key: string): RaisedEvent & { key: string } => ({ ...ev(seq), name: 'thermo', category: Category.replacing, key })
    try {
      // two instances of one service, 8 new keys each through its own broker, appends interleaved
      const appends = []
      for (let i = 1; i <= 8; i++) {
        appends.push(a.append({ serviceId: 'gw', instance: 'ia', events: [thermo(i, `a${i}`)], handledUpTo: i, receivedAt: T0 }))
        appends.push(b.append({ serviceId: 'gw', instance: 'ib', events: [thermo(i, `b${i}`)], handledUpTo: i, receivedAt: T0 }))
      }
      const results = await Promise.all(appends)
      const stored = results.flatMap((r) => r.stored)
      const refused = results.flatMap((r) => r.refused)
      expect(stored).toHaveLength(10)
      expect(refused).toHaveLength(6)
      expect(refused.every((r) => r.code === 'KEY_LIMIT')).toBe(true)
      const held = await b.read({ event: 'thermo', after: 0, services: null, recipient: null, now: T0, limit: 100 })
      expect(held.map((e) => e.key).sort()).toEqual(stored.map((e) => e.key).sort())
      // a known key is replaced through either store; a new one is still refused
      const again = await b.append({ serviceId: 'gw', instance: 'ib', events: [thermo(9, held[0]!.key!), thermo(10, 'new')], handledUpTo: 10, receivedAt: T0 })
      expect([again.stored.length, again.refused.length]).toEqual([1, 1])
      expect((await a.read({ event: 'thermo', after: 0, services: null, recipient: null, now: T0, limit: 100 })).length).toBe(10)
    } finally {
      await a.close()
      await b.close()
    }
  })

  it('[PG-SCHEMA-1] a version 1 database is migrated to keys: its rows stay, unkeyed, and replace as before', async () => {
    const url = await freshDatabase()
    const c = new pg.Client({ connectionString: url })
    await c.connect()
    try {
      expect(await migratePostgresSchema(c, 'test', 1)).toEqual({ from: 0, to: 1 })
      await c.query(`INSERT INTO herald_events (position, service, instance, seq, event, category, recipient, raised_at, received_at, expires_at, flags, payload_kind, payload)
        VALUES (1, 'svc', 'i1', 1, 'level', ${CATEGORY_CODE.replacing}, '', ${T0}, ${T0}, NULL, 0, 0, '\\x01')`)
      await c.query("INSERT INTO herald_queues (service, event, recipient, count) VALUES ('svc', 'level', '', 1)")
      await c.query("INSERT INTO herald_dedup (service, instance, last_seq) VALUES ('svc', 'i1', 1)")
      await c.query("UPDATE herald_meta SET value = 1 WHERE key = 'head'")
    } finally {
      await c.end()
    }
    const s = await createPostgresEventStore({ url, limitsOf })
    try {
      const q = { event: 'level', after: 0, services: null, recipient: null, now: T0, limit: 10 }
      const before = await s.read(q)
      expect(before.map((e) => [e.position, e.key])).toEqual([[1, undefined]])
      const r = await s.append({ serviceId: 'svc', instance: 'i1', events: [{ ...ev(2), name: 'level', category: Category.replacing }], handledUpTo: 2, receivedAt: T0 })
      expect(r.stored).toHaveLength(1)
      expect((await s.read(q)).map((e) => e.seq)).toEqual([2])
      expect(s.count()).toBe(1)
    } finally {
      await s.close()
    }
  })
})
