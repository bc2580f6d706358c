/**
 * The PostgreSQL event store ([PG-*]) on a real, throwaway PostgreSQL (test/support/postgres.ts):
 * the conformance suite every store passes, then what is PostgreSQL's own: migrations, a newer
 * schema refused, two stores (two brokers) on one database.
 */
import { afterAll, describe, expect, it } from 'vitest'
import pg from 'pg'
import { Category, PayloadKind, PersistenceError, type RaisedEvent, type StoredEvent } from '@herald/protocol'
import { createPostgresEventStore, PG_SCHEMA_VERSION, type LimitsOf, type QueueLimits } from '@herald/broker'
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
  log: { category: Category.queueing, lifetimeMs: null, maxQueueSize: 1_000_000, maxPerRecipient: 1 }
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
})
