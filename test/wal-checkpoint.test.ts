// WAL checkpoints off the writer's thread (WalCheckpointer): under a sustained write load the WAL
// stays within its limits, the writer never runs SQLite's automatic checkpoint, a writer whose
// worker does not keep up checkpoints itself past the hard limit, and a reopened file has every
// committed row. Real files, real worker threads.
import { statSync } from 'node:fs'
import { createRequire } from 'node:module'
import { join } from 'node:path'
import Database from 'better-sqlite3'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { Category, PayloadKind, type RaisedEvent } from '@herald/protocol'
import { WAL_CHECKPOINTER_DEFAULTS, WalCheckpointer } from '@herald/node-runtime'
import { waitFor } from '@herald/protocol/testing'
import { tempDir } from '@herald/node-runtime/testing'
import { createSqliteEventStore } from '@herald/broker'
import { createSqliteServicePersistence } from '@herald/service-endpoint'

const DRIVER = createRequire(import.meta.url).resolve('better-sqlite3')

function walSize (path: string): number {
  return statSync(`${path}-wal`, { throwIfNoEntry: false })?.size ?? 0
}

describe('WalCheckpointer', () => {
  let dir: { path: string, remove: () => Promise<void> }
  beforeEach(async () => { dir = await tempDir('herald-wal-') })
  afterEach(async () => { await dir.remove() })

  /**
   * Commits `commits` transactions of `rows` 1 KiB rows each, one per turn (every `gapMs` ms, or back
   * to back with 0); returns the largest WAL seen after a commit.
   */
  async function load (db: Database.Database, ck: WalCheckpointer, path: string, commits: number, rows: number, gapMs = 0): Promise<number> {
    const insert = db.prepare('INSERT INTO t (k, v) VALUES (?, ?)')
    const txn = db.transaction((base: number) => {
      for (let i = 0; i < rows; i++) insert.run(base + i, Buffer.alloc(1024, (base + i) % 251))
    })
    let largest = 0
    for (let c = 0; c < commits; c++) {
      txn(c * rows)
      ck.committed()
      largest = Math.max(largest, walSize(path))
      await new Promise((resolve) => gapMs === 0 ? setImmediate(resolve) : setTimeout(resolve, gapMs))
    }
    return largest
  }

  function openDb (path: string): Database.Database {
    const db = new Database(path)
    db.pragma('journal_mode = WAL')
    db.pragma('synchronous = FULL')
    db.exec('CREATE TABLE IF NOT EXISTS t (k INTEGER PRIMARY KEY, v BLOB NOT NULL)')
    return db
  }

  it('keeps the WAL bounded from the worker alone while the writer leaves gaps between commits', async () => {
    const path = join(dir.path, 'a.db')
    const db = openDb(path)
    const softLimitBytes = 1024 * 1024
    const hardLimitBytes = 4 * 1024 * 1024
    const ck = new WalCheckpointer({ path, db, driver: DRIVER, synchronous: 'FULL', intervalMs: 1, softLimitBytes, hardLimitBytes })
    expect(db.pragma('wal_autocheckpoint', { simple: true })).toBe(0)
    const largest = await load(db, ck, path, 1500, 20, 1) // ~30 MiB of rows, 7 times the hard limit
    await waitFor(() => ck.stats().checkpoints > 0, 'a checkpoint from the worker')
    const stats = ck.stats()
    expect(stats.worker).toBe(true)
    expect(stats.inline).toBe(0)
    expect(largest).toBeLessThanOrEqual(hardLimitBytes)
    await ck.close()
    expect(ck.stats().worker).toBe(false)
    db.close()
    const again = new Database(path, { readonly: true })
    expect(again.prepare('SELECT count(*) FROM t').pluck().get()).toBe(30_000)
    expect(again.prepare('SELECT k FROM t WHERE k = 29999').pluck().get()).toBe(29_999)
    again.close()
  })

  it('checkpoints on the writer past the hard limit when the worker does not keep up (commits back to back)', async () => {
    const path = join(dir.path, 'b.db')
    const db = openDb(path)
    const hardLimitBytes = 2 * 1024 * 1024
    // a worker that checkpoints once an hour: only the writer's own checkpoints bound the WAL
    const ck = new WalCheckpointer({ path, db, driver: DRIVER, synchronous: 'FULL', intervalMs: 3_600_000, softLimitBytes: hardLimitBytes, hardLimitBytes })
    const largest = await load(db, ck, path, 600, 20)
    expect(ck.stats().inline).toBeGreaterThan(0)
    // one commit of 20 rows (and its index pages) may go past the limit before the writer looks
    expect(largest).toBeLessThanOrEqual(hardLimitBytes + 512 * 1024)
    await ck.close()
    db.close()
    const again = new Database(path, { readonly: true })
    expect(again.prepare('SELECT count(*) FROM t').pluck().get()).toBe(12_000)
    again.close()
  })
})

describe('stores with checkpoints in a worker', () => {
  let dir: { path: string, remove: () => Promise<void> }
  beforeEach(async () => { dir = await tempDir('herald-wal-') })
  afterEach(async () => { await dir.remove() })

  it('SqliteEventStore: a sustained append load keeps the WAL bounded and a reopened store has every event', async () => {
    const path = join(dir.path, 'events.db')
    const limitsOf = (): { category: Category, lifetimeMs: null, maxQueueSize: number, maxPerRecipient: number } =>
      ({ category: Category.queueing, lifetimeMs: null, maxQueueSize: 1_000_000, maxPerRecipient: 1 })
    let store = await createSqliteEventStore({ path, limitsOf })
    let seq = 0
    let largest = 0
    for (let c = 0; c < 800; c++) {
      const events: RaisedEvent[] = []
      for (let i = 0; i < 25; i++) {
        seq++
        events.push({ seq, name: 'tick', category: Category.queueing, raisedAt: 1, isNull: false, recipient: null, payloadKind: PayloadKind.bytes, payload: Buffer.alloc(400, seq % 251) })
      }
      await store.append({ serviceId: 's', instance: 'i', events, handledUpTo: seq, receivedAt: 1 })
      largest = Math.max(largest, walSize(path))
    }
    expect(largest).toBeLessThanOrEqual(WAL_CHECKPOINTER_DEFAULTS.hardLimitBytes)
    await store.close()
    store = await createSqliteEventStore({ path, limitsOf })
    expect(store.count()).toBe(20_000)
    expect(store.lastSeq('s', 'i')).toBe(20_000)
    const last = await store.read({ event: 'tick', recipient: null, services: null, after: 19_990, now: 2, limit: 100 })
    expect(last.map((e) => e.seq)).toEqual([19_991, 19_992, 19_993, 19_994, 19_995, 19_996, 19_997, 19_998, 19_999, 20_000])
    await store.close()
  })

  it('SqliteServicePersistence: a sustained raise load keeps the WAL bounded and a reopened file has every event', async () => {
    const path = join(dir.path, 'gateway.db')
    let p = await createSqliteServicePersistence({ path })
    let largest = 0
    let seq = 0
    for (let c = 0; c < 800; c++) {
      const calls: Array<Promise<unknown>> = []
      for (let i = 0; i < 25; i++) {
        seq++
        calls.push(p.append([{ seq, name: 'tick', category: Category.queueing, raisedAt: 1, isNull: false, recipient: null, payloadKind: PayloadKind.bytes, payload: Buffer.alloc(400, seq % 251) }]))
      }
      await Promise.all(calls)
      largest = Math.max(largest, walSize(path))
    }
    expect(largest).toBeLessThanOrEqual(WAL_CHECKPOINTER_DEFAULTS.hardLimitBytes)
    await p.close()
    p = await createSqliteServicePersistence({ path })
    expect(p.lastSeq()).toBe(20_000)
    expect(p.stats().count).toBe(20_000)
    const all = await p.read(0, 20_000)
    expect(all.length).toBe(20_000)
    expect(all.every((e, i) => e.seq === i + 1 && e.payload.byteLength === 400 && e.payload[0] === (i + 1) % 251)).toBe(true)
    await p.close()
  })
})
