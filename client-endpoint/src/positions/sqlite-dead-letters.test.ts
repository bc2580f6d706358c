/**
 * Dead letters in SQLite ([CLI-DEAD-2]): in the positions file, with the position in one transaction;
 * kept across a reopen, payload bytes as received; bounded; the tool's view (openDeadLetters) of a
 * file not in use, refused while its client runs; in transactional mode, in the application's
 * database in the same transaction as the position.
 */
import { join } from 'node:path'
import Database from 'better-sqlite3'
import { describe, it, expect } from 'vitest'
import { ConfigError, ErrorCode, ManualClock, PayloadKind, PersistenceError, encodeControl, encodeEvents, type Request, type StoredEvent } from '@herald/protocol'
import { MemoryTransport } from '@herald/protocol/testing'
import { tempDir } from '@herald/node-runtime/testing'
import { ClientEndpoint } from '../client-endpoint.js'
import { describeDeadLetterStoreConformance } from '../testing/dead-letter-store-conformance.js'
import { SqlitePositionStore } from './sqlite-position-store.js'
import { POSITIONS_SCHEMA_VERSION, openDeadLetters } from './sqlite-dead-letters.js'

function stored (position: number, payload = new Uint8Array([0, 255, position])): StoredEvent {
  return {
    position, serviceId: 'svc', instance: 'inst', seq: position, name: 'log', category: 'queueing',
    raisedAt: 1_000, receivedAt: 2_000, expiresAt: 9_000, uploadAge: 5, isNull: false, recipient: 'alice/app',
    payloadKind: PayloadKind.bytes, payload
  }
}

describeDeadLetterStoreConformance('sqlite file', async (maxDeadLetters) => {
  const dir = await tempDir()
  const store = new SqlitePositionStore({ database: join(dir.path, 'positions.db'), bootId: 'b', maxDeadLetters })
  return { store, cleanup: async () => { store.close(); await dir.remove() } }
})

describeDeadLetterStoreConformance('sqlite, application database', async (maxDeadLetters) => {
  const dir = await tempDir()
  const db = new Database(join(dir.path, 'app.db'))
  const store = new SqlitePositionStore({ database: db, bootId: 'b', maxDeadLetters })
  return { store, cleanup: async () => { db.close(); await dir.remove() } }
})

const letter = (position: number, key = 'log') => ({ key, event: stored(position), attempts: 3, lastError: `bad ${position}`, deadAt: 42, age: 7 })

describe('SqliteDeadLetters', () => {
  it('records the dead letter and the position in one transaction, kept across a reopen, payload as received', async () => {
    const dir = await tempDir()
    const path = join(dir.path, 'positions.db')
    try {
      let store = new SqlitePositionStore({ database: path, bootId: 'b' })
      store.markStarted('log', 7)
      const id = store.deadLetters.add(letter(7), 7, null)
      const id2 = store.deadLetters.add(letter(9, 'other'), 9, 12)
      expect(store.get('log')).toEqual({ position: 7, started: null })
      expect(store.get('other')).toEqual({ position: 9, started: 12 })
      store.close()
      store = new SqlitePositionStore({ database: path, bootId: 'b' })
      const got = store.deadLetters.get(id)
      expect(got).toMatchObject({ id, key: 'log', eventId: 'inst-7', attempts: 3, lastError: 'bad 7', deadAt: 42, age: 7, retry: false })
      expect(got?.event).toEqual(stored(7))
      expect(store.deadLetters.list().map((l) => l.id)).toEqual([id, id2])
      expect(store.deadLetters.list('other').map((l) => l.id)).toEqual([id2])
      expect(store.deadLetters.retry(id)).toBe(true)
      store.deadLetters.failed(id2, 'again', 50)
      expect(store.deadLetters.get(id2)).toMatchObject({ attempts: 4, lastError: 'again', deadAt: 50, age: 7 + 8 })
      expect(store.deadLetters.discard(id2)).toBe(true)
      store.close()
      // the tool's view of the file, its client stopped
      const tool = openDeadLetters(path)
      expect(tool.deadLetters.list()).toMatchObject([{ id, retry: true }])
      tool.close()
    } finally {
      await dir.remove()
    }
  })

  it('a failed position write rolls the dead letter back too: never one without the other', async () => {
    const dir = await tempDir()
    const db = new Database(join(dir.path, 'app.db'))
    try {
      const store = new SqlitePositionStore({ database: db, bootId: 'b' })
      store.commit('log', 3)
      db.exec("CREATE TRIGGER no_move BEFORE UPDATE ON herald_positions BEGIN SELECT RAISE(ABORT, 'disk says no'); END")
      expect(() => store.deadLetters.add(letter(4), 4, null)).toThrow(/disk says no/)
      expect(store.deadLetters.list()).toEqual([])
      expect(store.get('log')).toEqual({ position: 3, started: null })
    } finally {
      db.close()
      await dir.remove()
    }
  })

  it('is bounded by maxDeadLetters: one more throws CAPACITY_EXCEEDED and writes nothing [CLI-DEAD-4]', async () => {
    const dir = await tempDir()
    try {
      expect(() => new SqlitePositionStore({ database: join(dir.path, 'x.db'), maxDeadLetters: 0 })).toThrow(ConfigError)
      const store = new SqlitePositionStore({ database: join(dir.path, 'p.db'), bootId: 'b', maxDeadLetters: 2 })
      store.deadLetters.add(letter(1), 1, null)
      store.deadLetters.add(letter(2), 2, null)
      const err = (() => { try { store.deadLetters.add(letter(3), 3, null) } catch (e) { return e } })()
      expect(err).toBeInstanceOf(PersistenceError)
      expect((err as PersistenceError).code).toBe(ErrorCode.CAPACITY_EXCEEDED)
      expect(store.get('log')).toEqual({ position: 2, started: null })
      expect(store.deadLetters.list()).toHaveLength(2)
      store.close()
    } finally {
      await dir.remove()
    }
  })

  it('schema version 3 [CLI-DEAD-8] [CLI-CONC-3]: a version 2 file gets the done column, keeps its positions and dead letters, and records 3', async () => {
    const dir = await tempDir()
    try {
      const file = join(dir.path, 'v2.db')
      const o = new Database(file)
      o.exec('CREATE TABLE herald_positions (key TEXT PRIMARY KEY, position INTEGER NOT NULL, started INTEGER, reserved INTEGER, reservations INTEGER) WITHOUT ROWID')
      o.exec('CREATE TABLE herald_positions_boot (id INTEGER PRIMARY KEY CHECK (id = 1), boot TEXT NOT NULL)')
      o.exec("INSERT INTO herald_positions_boot (id, boot) VALUES (1, 'b')")
      o.exec('CREATE TABLE herald_positions_schema (id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL)')
      o.exec('INSERT INTO herald_positions_schema (id, version) VALUES (1, 2)')
      o.prepare('INSERT INTO herald_positions (key, position, started) VALUES (?, ?, ?)').run('log', 7, 9)
      o.close()
      const store = new SqlitePositionStore({ database: file, bootId: 'b' })
      expect(store.get('log')).toEqual({ position: 7, started: 9 })
      store.settle('log', 7, 9, [8])
      expect(store.get('log')).toEqual({ position: 7, started: 9, done: [8] })
      store.deadLetters.add(letter(10), 7, 10, [8, 10])
      expect(store.get('log')).toEqual({ position: 7, started: 10, done: [8, 10] })
      store.close()
      const v = new Database(file)
      expect(v.prepare('SELECT version FROM herald_positions_schema').pluck().get()).toBe(3)
      v.close()
    } finally {
      await dir.remove()
    }
  })

  it('schema versions [CLI-DEAD-8]: a file from before dead letters is migrated to version 2; a newer one is refused; a file without positions has no dead letters', async () => {
    const dir = await tempDir()
    try {
      const old = join(dir.path, 'old.db')
      const o = new Database(old)
      // a positions file as an earlier Herald wrote it: no schema record, no dead letters
      o.exec('CREATE TABLE herald_positions (key TEXT PRIMARY KEY, position INTEGER NOT NULL, started INTEGER, reserved INTEGER, reservations INTEGER) WITHOUT ROWID')
      o.exec('CREATE TABLE herald_positions_boot (id INTEGER PRIMARY KEY CHECK (id = 1), boot TEXT NOT NULL)')
      o.prepare('INSERT INTO herald_positions (key, position) VALUES (?, ?)').run('log', 41)
      o.close()
      expect(() => openDeadLetters(old)).toThrow(/has no dead letters/)
      const store = new SqlitePositionStore({ database: old, bootId: 'b' })
      expect(store.get('log')).toEqual({ position: 41, started: null })
      store.deadLetters.add(letter(42), 42, null)
      store.close()
      const v = new Database(old)
      expect(v.prepare('SELECT version FROM herald_positions_schema').pluck().get()).toBe(POSITIONS_SCHEMA_VERSION)
      v.prepare('UPDATE herald_positions_schema SET version = ?').run(POSITIONS_SCHEMA_VERSION + 1)
      v.close()
      expect(() => new SqlitePositionStore({ database: old, bootId: 'b' })).toThrow(/newer Herald/)
      expect(() => openDeadLetters(old)).toThrow(/newer Herald/)
      const other = join(dir.path, 'other.db')
      new Database(other).close()
      expect(() => openDeadLetters(other)).toThrow(ConfigError)
    } finally {
      await dir.remove()
    }
  })

  it('openDeadLetters refuses a missing file and a file whose client runs (POSITIONS_LOCKED)', async () => {
    const dir = await tempDir()
    const path = join(dir.path, 'positions.db')
    try {
      expect(() => openDeadLetters(path)).toThrow(/does not exist/)
      const store = new SqlitePositionStore({ database: path, bootId: 'b' })
      const err = (() => { try { openDeadLetters(path) } catch (e) { return e } })()
      expect((err as PersistenceError).code).toBe(ErrorCode.POSITIONS_LOCKED)
      store.close()
    } finally {
      await dir.remove()
    }
  })

  it('transactional mode: the dead letter and the position commit together in the application database; failed attempts left nothing [CLI-TX-1] [CLI-DEAD-2]', async () => {
    const dir = await tempDir()
    const db = new Database(join(dir.path, 'app.db'))
    db.exec('CREATE TABLE seen (position INTEGER PRIMARY KEY)')
    const clock = new ManualClock()
    const transport = new MemoryTransport()
    const ep = new ClientEndpoint({ url: 'mqtt://broker.invalid:1883', clientName: 'app', user: 'alice', password: 'alice-password-1', transport, clock, random: () => 0.5 })
    try {
      const dead: number[] = []
      ep.on('deadLetter', (d) => { dead.push(d.event.position) })
      ep.start()
      transport.last.open()
      for (let i = 0; i < 50; i++) await Promise.resolve()
      const insert = db.prepare('INSERT INTO seen (position) VALUES (?)')
      const p = ep.subscribe('log', { transaction: db, maxAttempts: 2, backoff: { initialMs: 10, maxMs: 10 } }, (e) => {
        insert.run(e.position)
        if (e.position === 2) throw new Error('poison')
      })
      for (let i = 0; i < 50; i++) await Promise.resolve()
      const sub = transport.last.requests().find((r): r is Extract<Request, { op: 'sub' }> => r.op === 'sub')?.sub as number
      transport.last.inject(encodeControl({ op: 'subscribed', sub, category: 'queueing', head: 0, reset: false }))
      await p
      transport.last.inject(encodeEvents(sub, clock.now(), [stored(1), stored(2), stored(3)]))
      for (let t = 0; t < 1000 && dead.length === 0; t += 10) {
        clock.advance(10)
        for (let i = 0; i < 50; i++) await Promise.resolve()
      }
      for (let i = 0; i < 50; i++) await Promise.resolve()
      expect(dead).toEqual([2])
      expect(db.prepare('SELECT position FROM seen ORDER BY position').pluck().all()).toEqual([1, 3])
      expect(db.prepare('SELECT position FROM herald_positions WHERE key = ?').pluck().get('log')).toBe(3)
      expect(db.prepare('SELECT position, attempts, last_error FROM herald_positions_dead').all()).toEqual([{ position: 2, attempts: 2, last_error: 'poison' }])
    } finally {
      await ep.close()
      db.close()
      await dir.remove()
    }
  })
})
