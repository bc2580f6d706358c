/**
 * Positions in a SQLite database: a file of their own, or the application's own better-sqlite3
 * database, so a position commits in the same transaction as the handler's writes ([CLI-TX-1]).
 */
import { readFileSync } from 'node:fs'
import { uptime } from 'node:os'
import Database from 'better-sqlite3'
import { PersistenceError, ConfigError } from '@herald/protocol'
import { ensurePrivateSqliteFileSync } from '@herald/node-runtime'
import type { PositionStore, SubscriptionPosition } from './position-store.js'
import { POSITIONS_SCHEMA_VERSION, SqliteDeadLetters } from './sqlite-dead-letters.js'

export { POSITIONS_SCHEMA_VERSION }
import { checkMaxDeadLetters } from './dead-letter-store.js'

/** What a SqlitePositionStore survives ([CLI-POS-3], [CLI-POS-5]). */
export const PositionDurability = Object.freeze({
  /** Default: a power loss of the client machine loses no event and redelivers none unflagged. */
  POWER_LOSS: 'power-loss',
  /** Faster, safe against the process being killed only: a power loss may roll positions back silently. */
  PROCESS_CRASH: 'process-crash'
} as const)
export type PositionDurability = typeof PositionDurability[keyof typeof PositionDurability]

export interface SqlitePositionStoreOptions {
  /** A file path (opened and owned by the store), or the application's open database (not closed by the store). */
  readonly database: string | Database.Database
  /** Table name. Default `herald_positions` (and `<table>_boot` for the boot id). */
  readonly table?: string
  /**
   * `'power-loss'` (default): every reservation ([CLI-POS-5]) is committed with `synchronous=FULL`
   * (one fsync per received batch, per `window` positions or per `positionSyncMs`, which also syncs
   * the per-event commits before it). `'process-crash'`: no fsync of its own at all (the old behaviour; a power loss may roll the
   * positions back to the last WAL checkpoint and redeliver events unflagged, or with `start: 'new'`,
   * skip them).
   */
  readonly durability?: PositionDurability
  /**
   * The identity of the running boot of the machine, to tell a power loss (a new boot: the writes not
   * fsync'd may be gone) from a process crash (the same boot: every write is there). Default: Linux's
   * `/proc/sys/kernel/random/boot_id`, elsewhere the boot time to the minute. For tests.
   */
  readonly bootId?: string
  /**
   * Most dead letters kept in `<table>_dead` ([CLI-DEAD-4]); past it a subscription stops at the
   * event it would give up on, with a PersistenceError CAPACITY_EXCEEDED. Default 10,000.
   */
  readonly maxDeadLetters?: number
}

let osBoot: string | null = null
/** The OS boot id; a wrong guess (a boot time read across a minute boundary) only flags more events. */
function currentBootId (): string {
  if (osBoot !== null) return osBoot
  try {
    osBoot = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim()
  } catch {
    osBoot = `boot-at-${Math.round((Date.now() - uptime() * 1000) / 60_000)}`
  }
  return osBoot
}

/**
 * WAL with synchronous NORMAL: every call is written to the OS before it returns, so it survives the
 * process being killed ([CLI-POS-3]). Against power loss ([CLI-POS-5], `durability: 'power-loss'`,
 * the default): `reserve()` commits with `synchronous=FULL`, so it and every write before it (WAL
 * frames are synced in order) are on disk when it returns; the client reserves a batch's positions
 * before any of its handlers run. Each row keeps the precise `started` (the event whose handler runs,
 * written without fsync) and the durable `reserved`; the store records the boot id, and when it opens
 * after a new boot it turns every reservation beyond the position into `started`, durably, before
 * anything else: so after a power loss every event that may have been handled is flagged, after a
 * process crash only the one that was running. On the application's database its own settings apply,
 * except that `reserve()` raises `synchronous` to FULL for its own commit.
 *
 * A file the store opens itself belongs to it alone: it holds SQLite's exclusive lock while open
 * (another connection, in this process or another, gets SQLITE_BUSY until `close()`), and a new file
 * gets 512-byte pages. Both are for the one write per handled event: without the per-transaction
 * file locks, and with a small page to append to the WAL, a write costs about a third.
 */
export class SqlitePositionStore implements PositionStore {
  readonly durable = true
  readonly durability: PositionDurability
  private readonly db: Database.Database
  private readonly owned: boolean
  private readonly getStmt: Database.Statement<[string], { position: number, started: number | null, done: string | null }>
  private readonly settleStmt: Database.Statement<[string, number, number | null, string | null]>
  private readonly startStmt: Database.Statement<[string, number]>
  private readonly commitStmt: Database.Statement<[string, number]>
  private readonly advanceStmt: Database.Statement<[string, number, number]>
  private readonly reserveStmt: Database.Statement<[string, number]>
  /** [CLI-DEAD-2] in the same database, written with the position that moves past the event. */
  readonly deadLetters: SqliteDeadLetters

  constructor (options: SqlitePositionStoreOptions) {
    const table = options.table ?? 'herald_positions'
    if (!/^[A-Za-z_][A-Za-z0-9_]{0,63}$/.test(table)) throw new ConfigError(`SqlitePositionStore: table name ${JSON.stringify(table)} is not a plain SQL identifier`)
    const durability = options.durability ?? PositionDurability.POWER_LOSS
    if (durability !== PositionDurability.POWER_LOSS && durability !== PositionDurability.PROCESS_CRASH) {
      throw new ConfigError(`SqlitePositionStore: option "durability" must be "power-loss" or "process-crash", got ${JSON.stringify(durability)}`)
    }
    this.durability = durability
    checkMaxDeadLetters('SqlitePositionStore', options.maxDeadLetters)
    const bootId = options.bootId ?? currentBootId()
    if (typeof bootId !== 'string' || bootId.length === 0 || bootId.length > 200) throw new ConfigError('SqlitePositionStore: option "bootId" must be a string of 1 to 200 characters')
    let ownDb: Database.Database | null = null
    try {
      if (typeof options.database === 'string') {
        ensurePrivateSqliteFileSync(options.database) // [FILES-PRIVATE-1] 0600 before SQLite creates -wal/-shm from its mode
        ownDb = new Database(options.database)
        this.db = ownDb
        this.db.pragma('locking_mode = EXCLUSIVE')
        this.db.pragma('page_size = 512') // a new file only; an existing one keeps its page size
        this.db.pragma('journal_mode = WAL')
        this.db.pragma('synchronous = NORMAL')
        this.owned = true
      } else {
        this.db = options.database
        this.owned = false
      }
      // [CLI-DEAD-8] the schema's version, in a table of its own (the application's database keeps
      // its user_version): a file from a newer Herald is refused rather than half understood
      this.db.exec(`CREATE TABLE IF NOT EXISTS ${table}_schema (id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL)`)
      const version = this.db.prepare(`SELECT version FROM ${table}_schema WHERE id = 1`).pluck().get() as number | undefined
      if (version !== undefined && version > POSITIONS_SCHEMA_VERSION) throw new PersistenceError(`the positions were written by a newer Herald (schema version ${version}; this one knows up to ${POSITIONS_SCHEMA_VERSION})`)
      // the migrations are idempotent, so a crash between them is harmless: version 1 (none
      // recorded) the positions and boot tables, with the columns added since; version 2 dead letters;
      // version 3 the `done` column ([CLI-CONC-3])
      this.db.exec(`CREATE TABLE IF NOT EXISTS ${table} (key TEXT PRIMARY KEY, position INTEGER NOT NULL, started INTEGER, reserved INTEGER, reservations INTEGER) WITHOUT ROWID`)
      const columns = (this.db.pragma(`table_info(${table})`) as Array<{ name: string }>).map((c) => c.name)
      if (!columns.includes('reserved')) this.db.exec(`ALTER TABLE ${table} ADD COLUMN reserved INTEGER`) // a file from before [CLI-POS-5]
      if (!columns.includes('reservations')) this.db.exec(`ALTER TABLE ${table} ADD COLUMN reservations INTEGER`) // a file from before [CLI-POS-6]
      if (!columns.includes('done')) this.db.exec(`ALTER TABLE ${table} ADD COLUMN done TEXT`) // a file from before [CLI-CONC-3]
      this.db.exec(`CREATE TABLE IF NOT EXISTS ${table}_boot (id INTEGER PRIMARY KEY CHECK (id = 1), boot TEXT NOT NULL)`)
      this.getStmt = this.db.prepare(`SELECT position, started, done FROM ${table} WHERE key = ?`)
      this.startStmt = this.db.prepare(`INSERT INTO ${table} (key, position, started) VALUES (?, 0, ?) ON CONFLICT(key) DO UPDATE SET started = excluded.started`)
      this.commitStmt = this.db.prepare(`INSERT INTO ${table} (key, position, started) VALUES (?, ?, NULL) ON CONFLICT(key) DO UPDATE SET position = excluded.position, started = NULL, done = NULL`)
      this.advanceStmt = this.db.prepare(`INSERT INTO ${table} (key, position, started) VALUES (?, ?, ?) ON CONFLICT(key) DO UPDATE SET position = excluded.position, started = excluded.started, done = NULL`)
      // [CLI-CONC-3] the finished events above the low-water mark, as comma-separated positions
      this.settleStmt = this.db.prepare(`INSERT INTO ${table} (key, position, started, done) VALUES (?, ?, ?, ?) ON CONFLICT(key) DO UPDATE SET position = excluded.position, started = excluded.started, done = excluded.done`)
      // [CLI-POS-6] the count changes the row on every reservation: SQLite writes nothing (and so
      // syncs nothing) for an update that leaves the page as it was, e.g. the same reservation as
      // one a killed process wrote but had not synced yet
      this.reserveStmt = this.db.prepare(`INSERT INTO ${table} (key, position, reserved, reservations) VALUES (?, 0, ?, 1) ON CONFLICT(key) DO UPDATE SET reserved = excluded.reserved, reservations = coalesce(reservations, 0) + 1`)
      this.deadLetters = new SqliteDeadLetters(this.db, table, options.maxDeadLetters, (key, position, started, done) => {
        if (done !== undefined) this.settleStmt.run(key, position, started, done.length === 0 ? null : done.join(','))
        else if (started === null) this.commitStmt.run(key, position)
        else this.advanceStmt.run(key, position, started)
      })
      if (version !== POSITIONS_SCHEMA_VERSION) this.db.prepare(`INSERT INTO ${table}_schema (id, version) VALUES (1, ?) ON CONFLICT(id) DO UPDATE SET version = excluded.version`).run(POSITIONS_SCHEMA_VERSION)
      const recorded = this.db.prepare(`SELECT boot FROM ${table}_boot WHERE id = 1`).pluck().get() as string | undefined
      if (recorded !== bootId) {
        // [CLI-POS-5] a new boot: the writes after the last fsync may be lost, so every reserved
        // event after the position may have been handled; durable before any event is handed over
        const afterBoot = this.db.transaction(() => {
          this.db.prepare(`UPDATE ${table} SET started = reserved WHERE reserved > position AND (started IS NULL OR started < reserved)`).run()
          this.db.prepare(`INSERT INTO ${table}_boot (id, boot) VALUES (1, ?) ON CONFLICT(id) DO UPDATE SET boot = excluded.boot`).run(bootId)
        })
        this.durably(() => { afterBoot() })
      }
    } catch (err) {
      // a file it opened itself is closed again: it would otherwise stay locked for this process
      if (ownDb?.open === true) ownDb.close()
      const where = typeof options.database === 'string' ? options.database : 'the given database'
      throw new PersistenceError(`cannot open positions in ${where}: ${(err as Error).message}`, { cause: err })
    }
  }

  get (key: string): SubscriptionPosition | null {
    const r = this.getStmt.get(key)
    if (r === undefined) return null
    if (r.done === null || r.done === '') return { position: r.position, started: r.started }
    return { position: r.position, started: r.started, done: r.done.split(',').map(Number) }
  }

  /** [CLI-CONC-3] one write: the low-water position, the started mark and the finished events above it. */
  settle (key: string, committed: number, started: number | null, done: readonly number[]): void {
    this.settleStmt.run(key, committed, started, done.length === 0 ? null : done.join(','))
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

  /**
   * [CLI-POS-5] With `durability: 'power-loss'`: one commit with fsync, always, even for the value
   * already recorded ([CLI-POS-6]). With `'process-crash'`: nothing.
   */
  reserve (key: string, upTo: number): void {
    if (this.durability !== PositionDurability.POWER_LOSS) return
    this.durably(() => { this.reserveStmt.run(key, upTo) })
  }

  /**
   * Runs `write` with `synchronous=FULL` (a WAL commit then fsyncs the WAL, and so every frame before
   * it). A pragma takes effect when prepared, so it cannot be a prepared statement run again. Inside
   * the application's open transaction SQLite refuses the change: the write then commits with that
   * transaction, as durable as the application's settings make it.
   */
  private durably (write: () => void): void {
    const before = this.owned ? 1 : this.db.pragma('synchronous', { simple: true }) as number
    if (before >= 2 || this.db.inTransaction) {
      write()
      return
    }
    this.db.pragma('synchronous = FULL')
    try {
      write()
    } finally {
      this.db.pragma(`synchronous = ${before}`)
    }
  }

  close (): void {
    if (this.owned && this.db.open) this.db.close()
  }
}
