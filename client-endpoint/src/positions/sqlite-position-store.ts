/**
 * Positions in a SQLite database: a file of their own, or the application's own better-sqlite3
 * database, so a position commits in the same transaction as the handler's writes ([CLI-TX-1]).
 */
import Database from 'better-sqlite3'
import { PersistenceError, ConfigError } from '@herald/shared'
import type { PositionStore, SubscriptionPosition } from './position-store.js'

export interface SqlitePositionStoreOptions {
  /** A file path (opened and owned by the store), or the application's open database (not closed by the store). */
  readonly database: string | Database.Database
  /** Table name. Default `herald_positions`. */
  readonly table?: string
}

/**
 * WAL with synchronous NORMAL: every call is written to the OS before it returns, so it survives the
 * process being killed; a power loss may lose the last calls, which then means an event handled
 * again ([CLI-POS-3], docs/architecture.md). On the application's database its own settings apply.
 *
 * A file the store opens itself belongs to it alone: it holds SQLite's exclusive lock while open
 * (another connection, in this process or another, gets SQLITE_BUSY until `close()`), and a new file
 * gets 512-byte pages. Both are for the one write per handled event: without the per-transaction
 * file locks, and with a small page to append to the WAL, a write costs about a third.
 */
export class SqlitePositionStore implements PositionStore {
  readonly durable = true
  private readonly db: Database.Database
  private readonly owned: boolean
  private readonly getStmt: Database.Statement<[string], { position: number, started: number | null }>
  private readonly startStmt: Database.Statement<[string, number]>
  private readonly commitStmt: Database.Statement<[string, number]>
  private readonly advanceStmt: Database.Statement<[string, number, number]>

  constructor (options: SqlitePositionStoreOptions) {
    const table = options.table ?? 'herald_positions'
    if (!/^[A-Za-z_][A-Za-z0-9_]{0,63}$/.test(table)) throw new ConfigError(`SqlitePositionStore: table name ${JSON.stringify(table)} is not a plain SQL identifier`)
    try {
      if (typeof options.database === 'string') {
        this.db = new Database(options.database)
        this.db.pragma('locking_mode = EXCLUSIVE')
        this.db.pragma('page_size = 512') // a new file only; an existing one keeps its page size
        this.db.pragma('journal_mode = WAL')
        this.db.pragma('synchronous = NORMAL')
        this.owned = true
      } else {
        this.db = options.database
        this.owned = false
      }
      this.db.exec(`CREATE TABLE IF NOT EXISTS ${table} (key TEXT PRIMARY KEY, position INTEGER NOT NULL, started INTEGER) WITHOUT ROWID`)
      this.getStmt = this.db.prepare(`SELECT position, started FROM ${table} WHERE key = ?`)
      this.startStmt = this.db.prepare(`INSERT INTO ${table} (key, position, started) VALUES (?, 0, ?) ON CONFLICT(key) DO UPDATE SET started = excluded.started`)
      this.commitStmt = this.db.prepare(`INSERT INTO ${table} (key, position, started) VALUES (?, ?, NULL) ON CONFLICT(key) DO UPDATE SET position = excluded.position, started = NULL`)
      this.advanceStmt = this.db.prepare(`INSERT INTO ${table} (key, position, started) VALUES (?, ?, ?) ON CONFLICT(key) DO UPDATE SET position = excluded.position, started = excluded.started`)
    } catch (err) {
      const where = typeof options.database === 'string' ? options.database : 'the given database'
      throw new PersistenceError(`cannot open positions in ${where}: ${(err as Error).message}`, { cause: err })
    }
  }

  get (key: string): SubscriptionPosition | null {
    const r = this.getStmt.get(key)
    return r === undefined ? null : { position: r.position, started: r.started }
  }

  markStarted (key: string, position: number): void {
    this.startStmt.run(key, position)
  }

  commit (key: string, position: number): void {
    this.commitStmt.run(key, position)
  }

  advance (key: string, committed: number, started: number): void {
    this.advanceStmt.run(key, committed, started)
  }

  close (): void {
    if (this.owned && this.db.open) this.db.close()
  }
}
