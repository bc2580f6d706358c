import { join } from 'node:path'
import Database from 'better-sqlite3'
import { describe, it, expect } from 'vitest'
import { PersistenceError } from '@herald/shared'
import { tempDir } from '@herald/shared/testing'
import { describePositionStoreConformance } from '../testing/position-store-conformance.js'
import { SqlitePositionStore } from './sqlite-position-store.js'

describePositionStoreConformance('sqlite file', async () => {
  const dir = await tempDir()
  const path = join(dir.path, 'positions.db')
  let current = new SqlitePositionStore({ database: path })
  return {
    store: current,
    reopen: () => {
      current.close()
      current = new SqlitePositionStore({ database: path })
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
  let current = new SqlitePositionStore({ database: db, table: 'my_positions' })
  return {
    store: current,
    reopen: () => {
      db.close()
      db = new Database(path)
      current = new SqlitePositionStore({ database: db, table: 'my_positions' })
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

  it('refuses a file that is not SQLite, naming it', async () => {
    const dir = await tempDir()
    const path = join(dir.path, 'garbage.db')
    const { writeFileSync } = await import('node:fs')
    writeFileSync(path, Buffer.alloc(8192, 0x5a))
    expect(() => new SqlitePositionStore({ database: path })).toThrow(PersistenceError)
    expect(() => new SqlitePositionStore({ database: path })).toThrow(path)
    await dir.remove()
  })
})
