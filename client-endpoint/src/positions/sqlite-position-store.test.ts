import { chmodSync, existsSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import Database from 'better-sqlite3'
import { describe, it, expect } from 'vitest'
import { PersistenceError } from '@herald/protocol'
import { tempDir } from '@herald/node-runtime/testing'
import { describePositionStoreConformance } from '../testing/position-store-conformance.js'
import { SqlitePositionStore } from './sqlite-position-store.js'

describePositionStoreConformance('sqlite file', async () => {
  const dir = await tempDir()
  const path = join(dir.path, 'positions.db')
  let boot = 1
  const open = (): SqlitePositionStore => new SqlitePositionStore({ database: path, bootId: `boot-${boot}` })
  let current = open()
  return {
    store: current,
    reopen: () => {
      current.close()
      current = open()
      return current
    },
    reboot: () => {
      current.close()
      boot++
      current = open()
      return current
    },
    cleanup: async () => {
      current.close()
      await dir.remove()
    }
  }
})

describePositionStoreConformance('sqlite, application database', async () => {
  const dir = await tempDir()
  const path = join(dir.path, 'app.db')
  let db = new Database(path)
  let boot = 1
  const open = (): SqlitePositionStore => new SqlitePositionStore({ database: db, table: 'my_positions', bootId: `boot-${boot}` })
  let current = open()
  return {
    store: current,
    reopen: () => {
      db.close()
      db = new Database(path)
      current = open()
      return current
    },
    reboot: () => {
      db.close()
      db = new Database(path)
      boot++
      current = open()
      return current
    },
    cleanup: async () => {
      db.close()
      await dir.remove()
    }
  }
})

describe('SqlitePositionStore', () => {
  it('commits inside the application transaction, and rolls back with it', async () => {
    const dir = await tempDir()
    const db = new Database(join(dir.path, 'app.db'))
    db.exec('CREATE TABLE effects (id INTEGER PRIMARY KEY)')
    const store = new SqlitePositionStore({ database: db })
    const step = db.transaction((id: number, fail: boolean) => {
      db.prepare('INSERT INTO effects (id) VALUES (?)').run(id)
      store.commit('sub', id)
      if (fail) throw new Error('handler failed')
    })
    step(1, false)
    expect(() => step(2, true)).toThrow('handler failed')
    expect(store.get('sub')).toEqual({ position: 1, started: null })
    expect(db.prepare('SELECT COUNT(*) AS n FROM effects').get()).toEqual({ n: 1 })
    db.close()
    await dir.remove()
  })

  it('[FILES-PRIVATE-1] creates its file and -wal 0600 under umask 022, and makes an existing file 0600', async () => {
    const dir = await tempDir()
    const modes = (): string[] => readdirSync(dir.path).sort().map((n) => `${n} 0${(statSync(join(dir.path, n)).mode & 0o777).toString(8)}`)
    const old = process.umask(0o022)
    try {
      const path = join(dir.path, 'positions.db')
      const store = new SqlitePositionStore({ database: path })
      store.commit('a', 3)
      // locking_mode EXCLUSIVE keeps the WAL index in memory: no -shm file
      expect(modes()).toEqual(['positions.db 0600', 'positions.db-wal 0600'])
      store.close()
      // as an older version left it: the file and an (empty) -wal readable by all
      chmodSync(path, 0o644)
      writeFileSync(`${path}-wal`, '', { mode: 0o644 })
      const again = new SqlitePositionStore({ database: path })
      expect(again.get('a')).toEqual({ position: 3, started: null })
      again.commit('a', 4)
      expect(modes()).toEqual(['positions.db 0600', 'positions.db-wal 0600'])
      again.close()
    } finally {
      process.umask(old)
      await dir.remove()
    }
  })

  it('refuses a file that is not SQLite, naming it', async () => {
    const dir = await tempDir()
    const path = join(dir.path, 'garbage.db')
    const { writeFileSync } = await import('node:fs')
    writeFileSync(path, Buffer.alloc(8192, 0x5a))
    expect(() => new SqlitePositionStore({ database: path })).toThrow(PersistenceError)
    expect(() => new SqlitePositionStore({ database: path })).toThrow(path)
    await dir.remove()
  })

  it('refuses an unknown durability mode and a bad boot id, naming the option', () => {
    expect(() => new SqlitePositionStore({ database: ':memory:', durability: 'fast' as 'power-loss' })).toThrow(/"durability" must be "power-loss" or "process-crash"/)
    expect(() => new SqlitePositionStore({ database: ':memory:', bootId: '' })).toThrow(/"bootId"/)
    const store = new SqlitePositionStore({ database: ':memory:' })
    expect(store.durability).toBe('power-loss')
    store.close()
  })

  it('[CLI-POS-5] process-crash mode records no reservation: after a reboot only the precise started is left', async () => {
    const dir = await tempDir()
    const path = join(dir.path, 'positions.db')
    const first = new SqlitePositionStore({ database: path, durability: 'process-crash', bootId: 'one' })
    first.advance('a', 4, 5)
    first.reserve('a', 50)
    first.close()
    const second = new SqlitePositionStore({ database: path, durability: 'process-crash', bootId: 'two' })
    expect(second.get('a')).toEqual({ position: 4, started: 5 })
    second.close()
    await dir.remove()
  })

  it('[CLI-POS-6] every reservation writes a WAL frame (so its commit syncs), even one of the value already recorded', async () => {
    // a process killed before its reservation was synced leaves that value in the file; the next
    // process reserves the same one: it must sync too, or it hands over events with nothing durable
    const dir = await tempDir()
    const path = join(dir.path, 'positions.db')
    const store = new SqlitePositionStore({ database: path, bootId: 'x' })
    store.advance('a', 4, 5)
    store.reserve('a', 250)
    const wal = (): number => statSync(`${path}-wal`).size
    const before = wal()
    store.reserve('a', 250)
    expect(wal()).toBeGreaterThan(before)
    store.close()
    await dir.remove()
  })

  it('opens a positions file from before reservations, keeping its positions', async () => {
    const dir = await tempDir()
    const path = join(dir.path, 'old.db')
    const old = new Database(path)
    old.exec('CREATE TABLE herald_positions (key TEXT PRIMARY KEY, position INTEGER NOT NULL, started INTEGER) WITHOUT ROWID')
    old.prepare('INSERT INTO herald_positions VALUES (?, ?, ?)').run('a', 7, 8)
    old.close()
    const store = new SqlitePositionStore({ database: path, bootId: 'x' })
    expect(store.get('a')).toEqual({ position: 7, started: 8 })
    store.reserve('a', 20)
    store.close()
    const rebooted = new SqlitePositionStore({ database: path, bootId: 'y' })
    expect(rebooted.get('a')).toEqual({ position: 7, started: 20 })
    rebooted.close()
    await dir.remove()
  })

  it('[CLI-POS-5] on the application database, reserve commits with synchronous FULL and puts the app setting back', async () => {
    const dir = await tempDir()
    const db = new Database(join(dir.path, 'app.db'))
    db.pragma('journal_mode = WAL')
    db.pragma('synchronous = NORMAL')
    const store = new SqlitePositionStore({ database: db })
    store.reserve('a', 3)
    expect(db.pragma('synchronous', { simple: true })).toBe(1)
    // inside the application's own transaction it commits with it (SQLite refuses a change of level there)
    db.transaction(() => { store.reserve('b', 4) })()
    expect(db.pragma('synchronous', { simple: true })).toBe(1)
    db.close()
    await dir.remove()
  })

  it('[CLI-POS-5] records the boot id of the running machine by default', async () => {
    const dir = await tempDir()
    const path = join(dir.path, 'positions.db')
    new SqlitePositionStore({ database: path }).close()
    const db = new Database(path, { readonly: true })
    const recorded = db.prepare('SELECT boot FROM herald_positions_boot').pluck().get() as string
    db.close()
    const file = '/proc/sys/kernel/random/boot_id'
    if (existsSync(file)) expect(recorded).toBe(readFileSync(file, 'utf8').trim())
    else expect(recorded).toMatch(/^boot-at-\d+$/)
    await dir.remove()
  })
})
