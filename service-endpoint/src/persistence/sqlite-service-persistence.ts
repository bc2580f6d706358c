/**
 * Durable service persistence in one SQLite file, WAL mode ([SVC-PERSIST-*]).
 *
 * Layout
 * - The file header carries `application_id` HERALD_SERVICE_PERSISTENCE_APP_ID and `user_version`
 *   SCHEMA_VERSION, so a file that is not ours is recognised before any table is touched.
 * - `meta`: one row: format tag, schema version, `instance` (a random UUID made with the file,
 *   [SVC-PERSIST-1]), `last_seq` ([SVC-PERSIST-2]), and the `count` and `bytes` of the held events.
 *   Keeping the counters in `meta`, written in the same transaction as the rows, lets `open` load
 *   them without scanning the table; in memory they change only after a commit succeeded.
 * - `events(seq INTEGER PRIMARY KEY, ...)`: one row per held event; `size` is its `eventSize`, so
 *   dropping and acknowledging know the bytes they free.
 * - `events.rkey`: the replacing key of a keyed event ([SVC-KEY-3]), null for unkeyed ones; a file
 *   made before keys gets the column when opened (same schema version: the column is only added).
 * - `marks(source TEXT PRIMARY KEY, value TEXT NOT NULL)`: the source marks ([SVC-MARK-1]), upserted
 *   in the transaction of their append, loaded into memory at open. Files made before marks existed
 *   get the table when opened (same schema version: the table is only added).
 *
 * Writes (group commit, [SVC-PERSIST-3]): `append`, `acknowledge` and `remove` queue an operation
 * and schedule one flush with setImmediate; the flush runs every queued operation, in call order,
 * in one transaction, then resolves each call in order. Each operation is judged on its own: one
 * that breaks a rule (INVALID_ARGUMENT, CAPACITY_EXCEEDED) rejects alone and writes nothing; a
 * SQLite error fails the whole transaction and rejects every operation of the flush with
 * PERSISTENCE_FAILED (the counters stay those of the file). No `await` runs inside a transaction.
 *
 * Syncs: with `synchronous = FULL` (the default) a commit fsyncs the WAL, so an append resolves only
 * when durable. A flush made only of acknowledgements and removals needs no sync of its own
 * ([SVC-PERSIST-6]): it commits with `synchronous = NORMAL` (no fsync), and the next FULL commit
 * syncs its WAL frames along with its own. A crash can therefore bring back an acknowledged event;
 * the broker discards the duplicate.
 */
import { randomUUID } from 'node:crypto'
import { createRequire } from 'node:module'
import Database from 'better-sqlite3'
import { CATEGORY_BY_CODE, CATEGORY_CODE, ClosedError, ConfigError, ErrorCode, HeraldError, PersistenceError, RequestError, eventSize, silentLogger, withDefaults, type Logger, type PayloadKind, type RaisedEvent } from '@herald/protocol'
import { WalCheckpointer, ensurePrivateSqliteFileSync, SqliteSynchronous } from '@herald/node-runtime'
import { capacityExceeded, checkAppend } from './event-ring.js'
import { MarkTable, checkMarks } from './mark-table.js'
import { checkCapacityAndPolicy } from './memory-service-persistence.js'
import { OverflowPolicy } from './service-persistence.js'
import type { AppendOutcome, PersistenceStats, ServicePersistence } from './service-persistence.js'

/** How each commit reaches the disk. */
export { SqliteSynchronous }

/** What `createSqliteServicePersistence` takes. */
export interface SqliteServicePersistenceOptions {
  /** The database file; created if missing (its directory must exist). Required. */
  readonly path: string
  /** Most bytes held, by `eventSize`. Default 1 GiB. */
  readonly capacityBytes?: number
  /** What to do when full ([SVC-CAPACITY-1]). Default dropOldest. */
  readonly policy?: OverflowPolicy
  /** Where opening and failed commits are logged. Default: silent. */
  readonly logger?: Logger
  /** 'FULL' (default, durable) or 'NORMAL' (not durable on power loss: tests and benchmarks only). */
  readonly synchronous?: SqliteSynchronous
  /**
   * Largest the database file may grow, in bytes (rounded down to whole pages; SQLite keeps it at
   * least its current size). A commit that needs more fails with PERSISTENCE_FAILED whose cause has
   * code SQLITE_FULL, as on a full disk. Default null: SQLite's own limit. Meant for tests.
   */
  readonly maxSizeBytes?: number | null
  /**
   * 'quick' (default): run `PRAGMA quick_check` at open, so a damaged file is refused at once rather
   * than failing later (reads every page once: about a second per GiB). 'none': skip it.
   */
  readonly integrityCheck?: 'quick' | 'none'
  /**
   * Where WAL checkpoints run: 'worker' (default) from a worker thread with its own connection, so
   * that no commit waits for one (the WAL stays bounded: see WalCheckpointer in @herald/node-runtime);
   * 'inline': SQLite's automatic checkpoint, inside the commit that crosses 1,000 pages.
   */
  readonly walCheckpoint?: 'worker' | 'inline'
}

/** Defaults of the optional options. */
export const SQLITE_SERVICE_PERSISTENCE_DEFAULTS: Readonly<Required<Omit<SqliteServicePersistenceOptions, 'path'>>> = Object.freeze({
  capacityBytes: 1024 * 1024 * 1024,
  policy: OverflowPolicy.dropOldest,
  logger: silentLogger,
  synchronous: SqliteSynchronous.FULL,
  maxSizeBytes: null,
  integrityCheck: 'quick',
  walCheckpoint: 'worker'
})

/** Where the checkpoint worker loads the SQLite driver from. */
const DRIVER = createRequire(import.meta.url).resolve('better-sqlite3')

/** `application_id` in the header of every service persistence file ('HRSP'). */
export const HERALD_SERVICE_PERSISTENCE_APP_ID = 0x48525350
const FORMAT = 'herald-service-persistence'
const SCHEMA_VERSION = 1
/** Most queued operations one transaction runs; the rest go to the next flush. */
const MAX_OPS_PER_FLUSH = 10_000
/** Rows read per query when dropping the oldest events. */
const DROP_PAGE = 256
const COMPONENT = 'SqliteServicePersistence'
const COLUMNS = 'seq, name, category, raised_at, is_null, recipient, payload_kind, payload, rkey'
const CREATE_MARKS = 'CREATE TABLE IF NOT EXISTS marks (source TEXT PRIMARY KEY, value TEXT NOT NULL);'

/** An empty list, shared: most appends supersede and drop nothing. */
const NONE: readonly number[] = Object.freeze([])
/** The result of an append that dropped nothing, shared by all of them. */
const NOTHING_DROPPED: Result = Object.freeze({ ok: true, value: Object.freeze({ dropped: Object.freeze([]) }) })

type Row = [seq: number, name: string, category: number, raisedAt: number, isNull: number, recipient: string | null, payloadKind: number, payload: Buffer, rkey: string | null]

type Op =
  | { readonly kind: 'append', readonly events: readonly RaisedEvent[], readonly supersede: readonly number[], readonly marks: ReadonlyMap<string, string> | undefined, readonly resolve: (o: AppendOutcome) => void, readonly reject: (err: unknown) => void }
  | { readonly kind: 'ack', readonly upTo: number, readonly resolve: () => void, readonly reject: (err: unknown) => void }
  | { readonly kind: 'remove', readonly seqs: readonly number[], readonly resolve: () => void, readonly reject: (err: unknown) => void }

/** What one committed operation did; reported to an observer (the two-level persistence). */
export type CommittedOp =
  | { readonly kind: 'append', readonly events: readonly RaisedEvent[], readonly superseded: readonly number[], readonly dropped: readonly RaisedEvent[] }
  | { readonly kind: 'ack', readonly upTo: number }
  | { readonly kind: 'remove', readonly seqs: readonly number[] }

/**
 * Hears about every flush, synchronously, before any call of it is resolved or rejected.
 * @internal used by the two-level persistence to keep its memory level in step.
 */
export interface SqliteFlushObserver {
  /** The operations of a committed flush, in order (rejected ones left out). */
  committed (ops: readonly CommittedOp[]): void
  /** A flush failed; every operation in it is about to be rejected with `error`. */
  failed (error: PersistenceError): void
}

interface Counters { count: number, bytes: number, last: number }
type Result = { ok: true, value: AppendOutcome | undefined } | { ok: false, error: unknown }

function checkOptions (options: SqliteServicePersistenceOptions): Required<SqliteServicePersistenceOptions> {
  if (options === null || typeof options !== 'object') throw new ConfigError(`${COMPONENT}: options must be an object`)
  const { path, ...rest } = options
  if (typeof path !== 'string' || path === '' || path === ':memory:') throw new ConfigError(`${COMPONENT}: option "path" must be a file path`)
  const o = withDefaults(COMPONENT, SQLITE_SERVICE_PERSISTENCE_DEFAULTS, rest)
  checkCapacityAndPolicy(COMPONENT, 'capacityBytes', o.capacityBytes, o.policy)
  if (typeof o.logger !== 'object' || o.logger === null || typeof o.logger.error !== 'function') {
    throw new ConfigError(`${COMPONENT}: option "logger" must be a pino-compatible logger`)
  }
  if (o.synchronous !== 'FULL' && o.synchronous !== 'NORMAL') throw new ConfigError(`${COMPONENT}: option "synchronous" must be 'FULL' or 'NORMAL', got ${String(o.synchronous)}`)
  if (o.maxSizeBytes !== null && (!Number.isSafeInteger(o.maxSizeBytes) || o.maxSizeBytes < 4096)) {
    throw new ConfigError(`${COMPONENT}: option "maxSizeBytes" must be null or a whole number >= 4096, got ${o.maxSizeBytes}`)
  }
  if (o.integrityCheck !== 'quick' && o.integrityCheck !== 'none') throw new ConfigError(`${COMPONENT}: option "integrityCheck" must be 'quick' or 'none', got ${String(o.integrityCheck)}`)
  if (o.walCheckpoint !== 'worker' && o.walCheckpoint !== 'inline') throw new ConfigError(`${COMPONENT}: option "walCheckpoint" must be 'worker' or 'inline', got ${String(o.walCheckpoint)}`)
  return { path, ...o }
}

/** Wraps anything thrown by SQLite into a PersistenceError PERSISTENCE_FAILED. */
function failure (what: string, err: unknown): PersistenceError {
  if (err instanceof PersistenceError) return err
  const code = (err as { code?: unknown }).code
  return new PersistenceError(`${what}: ${typeof code === 'string' ? `${code}: ` : ''}${(err as Error).message}`, { cause: err })
}

/**
 * Opens (creating if needed, 0600) the service persistence file at `options.path`. Rejects with a
 * PersistenceError naming the path if the file is not a Herald service persistence file, is of
 * another schema version, or is damaged; with a ConfigError if an option is wrong.
 */
export async function createSqliteServicePersistence (options: SqliteServicePersistenceOptions): Promise<SqliteServicePersistence> {
  const opts = checkOptions(options)
  let db: Database.Database | undefined
  try {
    ensurePrivateSqliteFileSync(opts.path) // [FILES-PRIVATE-1] 0600 before SQLite creates -wal/-shm from its mode
    db = new Database(opts.path)
    return new SqliteServicePersistence(db, opts)
  } catch (err) {
    try { db?.close() } catch { /* already failing */ }
    const msg = err instanceof HeraldError ? err.message : `${(err as { code?: string }).code ?? 'error'}: ${(err as Error).message}`
    throw new PersistenceError(`service persistence: cannot open ${opts.path}: ${msg}`, { cause: err })
  }
}

/** The SQLite ServicePersistence; made by `createSqliteServicePersistence`. */
export class SqliteServicePersistence implements ServicePersistence {
  readonly instance: string
  /** The file this persistence lives in. */
  readonly path: string
  readonly #db: Database.Database
  readonly #logger: Logger
  readonly #capacityBytes: number
  readonly #policy: OverflowPolicy
  readonly #synchronous: SqliteSynchronous
  /** Counters of the committed file. */
  #counters: Counters
  #queue: Op[] = []
  #timer: NodeJS.Immediate | null = null
  #closed = false
  /** The checkpointer's closing after abandon(), which close() still waits for. */
  #abandoned: Promise<void> = Promise.resolve()
  #observer: SqliteFlushObserver | null = null
  /** The committed marks, with those of the flush in progress staged. */
  readonly #markTable: MarkTable
  /** Runs the WAL checkpoints off this thread; null with walCheckpoint 'inline'. */
  readonly #checkpointer: WalCheckpointer | null

  readonly #insert: Database.Statement
  readonly #sizeOf: Database.Statement
  readonly #deleteOne: Database.Statement
  readonly #deleteUpTo: Database.Statement
  readonly #countUpTo: Database.Statement
  readonly #oldest: Database.Statement
  readonly #select: Database.Statement
  readonly #putMeta: Database.Statement
  readonly #putMark: Database.Statement
  readonly #flushTxn: (ops: readonly Op[], results: Result[], committed: CommittedOp[]) => Counters

  /** Use `createSqliteServicePersistence`; takes ownership of `db`, throws if the file is not usable. */
  constructor (db: Database.Database, opts: Required<SqliteServicePersistenceOptions>) {
    this.#db = db
    this.path = opts.path
    this.#logger = opts.logger
    this.#capacityBytes = opts.capacityBytes
    this.#policy = opts.policy
    this.#synchronous = opts.synchronous

    // The first read of the header: a file that is not SQLite fails here with SQLITE_NOTADB.
    const appId = db.pragma('application_id', { simple: true }) as number
    const tables = db.prepare(`SELECT count(*) FROM sqlite_master`).pluck().get() as number
    const isNew = appId === 0 && tables === 0
    if (!isNew && appId !== HERALD_SERVICE_PERSISTENCE_APP_ID) throw new PersistenceError('not a Herald service persistence file')
    const mode = db.pragma('journal_mode = WAL', { simple: true }) as string
    if (mode.toLowerCase() !== 'wal') throw new PersistenceError(`cannot use WAL mode (got ${mode})`)
    db.pragma(`synchronous = ${opts.synchronous}`)
    if (isNew) {
      this.#create()
    } else {
      const version = db.pragma('user_version', { simple: true }) as number
      if (version !== SCHEMA_VERSION) throw new PersistenceError(`schema version ${version}, this version of Herald reads ${SCHEMA_VERSION}`)
      if (opts.integrityCheck === 'quick') {
        const problems = (db.pragma('quick_check(5)') as Array<{ quick_check: string }>).map((r) => r.quick_check)
        if (problems.length !== 1 || problems[0] !== 'ok') throw new PersistenceError(`file is damaged: ${problems.join('; ')}`)
      }
      db.exec(CREATE_MARKS) // a file from before marks
      // [SVC-KEY-3] a file from before replacing keys gets the column (null: unkeyed); same schema version
      const columns = db.prepare(`SELECT name FROM pragma_table_info('events')`).pluck().all() as string[]
      if (!columns.includes('rkey')) db.exec('ALTER TABLE events ADD COLUMN rkey TEXT')
    }
    if (opts.maxSizeBytes !== null) {
      const pageSize = db.pragma('page_size', { simple: true }) as number
      db.pragma(`max_page_count = ${Math.floor(opts.maxSizeBytes / pageSize)}`)
    }
    const meta = db.prepare(`SELECT format, version, instance, last_seq, count, bytes FROM meta WHERE id = 1`).get() as
      { format: unknown, version: unknown, instance: unknown, last_seq: unknown, count: unknown, bytes: unknown } | undefined
    if (meta?.format !== FORMAT || meta.version !== SCHEMA_VERSION || typeof meta.instance !== 'string' ||
      !Number.isSafeInteger(meta.last_seq) || !Number.isSafeInteger(meta.count) || !Number.isSafeInteger(meta.bytes)) {
      throw new PersistenceError('file is damaged: no valid meta row')
    }
    this.instance = meta.instance
    this.#counters = { count: meta.count as number, bytes: meta.bytes as number, last: meta.last_seq as number }
    const marks = db.prepare(`SELECT source, value FROM marks`).raw(true).all() as Array<[unknown, unknown]>
    if (marks.some(([source, value]) => typeof source !== 'string' || typeof value !== 'string')) throw new PersistenceError('file is damaged: a mark is not text')
    this.#markTable = new MarkTable(marks as Array<[string, string]>)

    this.#insert = db.prepare(`INSERT INTO events (${COLUMNS}, size) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`)
    this.#sizeOf = db.prepare(`SELECT size FROM events WHERE seq = ?`).pluck()
    this.#deleteOne = db.prepare(`DELETE FROM events WHERE seq = ? RETURNING size`).pluck()
    this.#deleteUpTo = db.prepare(`DELETE FROM events WHERE seq <= ?`)
    this.#countUpTo = db.prepare(`SELECT count(*), total(size) FROM events WHERE seq <= ?`).raw(true)
    this.#oldest = db.prepare(`SELECT ${COLUMNS}, size FROM events WHERE seq > ? ORDER BY seq LIMIT ${DROP_PAGE}`).raw(true)
    this.#select = db.prepare(`SELECT ${COLUMNS} FROM events WHERE seq > ? ORDER BY seq LIMIT ?`).raw(true)
    this.#putMeta = db.prepare(`UPDATE meta SET last_seq = ?, count = ?, bytes = ? WHERE id = 1`)
    this.#putMark = db.prepare(`INSERT INTO marks (source, value) VALUES (?, ?) ON CONFLICT (source) DO UPDATE SET value = excluded.value`)
    this.#flushTxn = db.transaction((ops: readonly Op[], results: Result[], committed: CommittedOp[]) => this.#write(ops, results, committed))
    this.#checkpointer = opts.walCheckpoint === 'worker'
      ? new WalCheckpointer({ path: opts.path, db, driver: DRIVER, synchronous: opts.synchronous, logger: opts.logger })
      : null
    this.#logger.info({ path: this.path, instance: this.instance, events: this.#counters.count, bytes: this.#counters.bytes, lastSeq: this.#counters.last, marks: this.#markTable.size },
      'service persistence opened')
  }

  lastSeq (): number {
    return this.#counters.last
  }

  append (events: readonly RaisedEvent[], supersede: readonly number[] = NONE, marks?: ReadonlyMap<string, string>): Promise<AppendOutcome> {
    // one promise per call, not an async function around another: this is the per-raise path
    let checked: ReadonlyMap<string, string> | undefined
    try {
      this.#checkOpen()
      checked = checkMarks(marks)
    } catch (err) {
      // eslint-disable-next-line @typescript-eslint/prefer-promise-reject-errors -- rejects with what was thrown, as an async function would
      return Promise.reject(err)
    }
    return new Promise<AppendOutcome>((resolve, reject) => {
      this.#enqueue({ kind: 'append', events, supersede, marks: checked, resolve, reject })
    })
  }

  /** [SVC-MARK-1] A copy of the committed marks. */
  marks (): ReadonlyMap<string, string> {
    return this.#markTable.snapshot()
  }

  async read (after: number, limit: number): Promise<RaisedEvent[]> {
    this.#checkOpen()
    return this.readSync(after, limit)
  }

  /**
   * `read`, synchronously: sees exactly the committed events.
   * @internal for the two-level persistence; throws PersistenceError PERSISTENCE_FAILED.
   */
  readSync (after: number, limit: number): RaisedEvent[] {
    if (!Number.isSafeInteger(limit) || limit < 0) throw new RequestError(ErrorCode.INVALID_ARGUMENT, `read: limit must be a whole number >= 0, got ${limit}`)
    if (limit === 0) return []
    try {
      return (this.#select.all(after, limit) as Row[]).map(toEvent)
    } catch (err) {
      const error = failure(`service persistence ${this.path}: read failed`, err)
      this.#logger.error({ err, path: this.path }, 'service persistence read failed')
      throw error
    }
  }

  async acknowledge (upTo: number): Promise<void> {
    this.#checkOpen()
    if (typeof upTo !== 'number' || Number.isNaN(upTo)) throw new RequestError(ErrorCode.INVALID_ARGUMENT, `acknowledge: upTo must be a number, got ${upTo}`)
    return await new Promise<void>((resolve, reject) => {
      this.#enqueue({ kind: 'ack', upTo, resolve, reject })
    })
  }

  async remove (seqs: readonly number[]): Promise<void> {
    this.#checkOpen()
    if (seqs.length === 0) return
    return await new Promise<void>((resolve, reject) => {
      this.#enqueue({ kind: 'remove', seqs, resolve, reject })
    })
  }

  stats (): PersistenceStats {
    return { count: this.#counters.count, bytes: this.#counters.bytes, capacityBytes: this.#capacityBytes, durable: true }
  }

  /** Runs the queued operations, then closes the file; later calls reject with CLOSED. Idempotent. */
  async close (): Promise<void> {
    if (this.#closed) {
      // after abandon(): the checkpointer's worker may still hold the file; close() resolves once it let go
      await this.#abandoned
      return
    }
    while (this.#queue.length > 0) this.#flush()
    if (this.#timer !== null) clearImmediate(this.#timer)
    this.#timer = null
    this.#closed = true
    await this.#checkpointer?.close()
    this.#db.close()
    this.#logger.info({ path: this.path }, 'service persistence closed')
  }

  /** @internal the two-level persistence's hook; null to remove. */
  observe (observer: SqliteFlushObserver | null): void {
    this.#observer = observer
  }

  /**
   * Rejects every queued operation with PERSISTENCE_FAILED (cause `error`) and closes the file
   * without running them. @internal for the two-level persistence, when it gives up on this level.
   */
  abandon (error: PersistenceError): void {
    if (this.#closed) return
    this.#closed = true
    if (this.#timer !== null) clearImmediate(this.#timer)
    this.#timer = null
    const queued = this.#queue.splice(0)
    this.#abandoned = this.#checkpointer?.close().catch((err: unknown) => { this.#logger.warn({ err, path: this.path }, 'service persistence: checkpointer close failed') }) ?? Promise.resolve()
    try { this.#db.close() } catch (err) { this.#logger.warn({ err, path: this.path }, 'service persistence: close failed') }
    const err = new PersistenceError(`service persistence ${this.path} abandoned: ${error.message}`, { cause: error })
    for (const op of queued) op.reject(err)
  }

  #checkOpen (): void {
    if (this.#closed) throw new ClosedError(`service persistence ${this.path} is closed`)
  }

  #enqueue (op: Op): void {
    this.#queue.push(op)
    this.#timer ??= setImmediate(() => { this.#flush() })
  }

  #flush (): void {
    this.#timer = null
    if (this.#closed) return
    const ops = this.#queue.splice(0, MAX_OPS_PER_FLUSH)
    if (ops.length === 0) return
    if (this.#queue.length > 0) this.#timer = setImmediate(() => { this.#flush() })
    const results: Result[] = []
    const committed: CommittedOp[] = []
    // [SVC-PERSIST-6] acknowledgements and removals alone need no fsync
    const cheap = this.#synchronous === 'FULL' && !ops.some((op) => op.kind === 'append')
    let counters: Counters
    try {
      if (cheap) this.#db.pragma('synchronous = NORMAL')
      counters = this.#flushTxn(ops, results, committed)
    } catch (err) {
      this.#markTable.rollback()
      if (cheap) this.#restoreSynchronous()
      const error = failure(`service persistence ${this.path}: commit failed`, err)
      this.#logger.error({ err, path: this.path, ops: ops.length }, 'service persistence commit failed')
      this.#notify(() => this.#observer?.failed(error))
      ops.forEach((op, i) => {
        const r = results[i]
        op.reject(r !== undefined && !r.ok ? r.error : error)
      })
      return
    }
    if (cheap) this.#restoreSynchronous()
    this.#checkpointer?.committed()
    this.#counters = counters
    this.#markTable.commit()
    if (committed.length > 0) this.#notify(() => this.#observer?.committed(committed))
    ops.forEach((op, i) => {
      const r = results[i]
      if (r === undefined || !r.ok) op.reject(r?.error)
      else if (op.kind === 'append') op.resolve(r.value ?? { dropped: [] })
      else op.resolve()
    })
  }

  /** Back to FULL after a cheap commit; a failure here shows on the next commit, not this one. */
  #restoreSynchronous (): void {
    try {
      this.#db.pragma('synchronous = FULL')
    } catch (err) {
      this.#logger.warn({ err, path: this.path }, 'service persistence: cannot restore synchronous = FULL')
    }
  }

  #notify (fn: () => void): void {
    try {
      fn()
    } catch (err) {
      this.#logger.error({ err, path: this.path }, 'service persistence observer threw')
    }
  }

  /** The body of one flush transaction; returns the counters after it. */
  #write (ops: readonly Op[], results: Result[], committed: CommittedOp[]): Counters {
    const c = { ...this.#counters }
    for (const op of ops) {
      switch (op.kind) {
        case 'append': {
          let newBytes: number
          try {
            newBytes = checkAppend(op.events, c.last, this.#capacityBytes)
            if (op.marks !== undefined) this.#markTable.check(op.marks)
          } catch (err) {
            results.push({ ok: false, error: err })
            continue
          }
          const supersede = op.supersede.length === 0 ? NONE : [...new Set(op.supersede)]
          let freed = 0
          for (const seq of supersede) freed += (this.#sizeOf.get(seq) as number | undefined) ?? 0
          if (this.#policy === 'reject' && c.bytes - freed + newBytes > this.#capacityBytes) {
            results.push({ ok: false, error: capacityExceeded(c.bytes - freed, newBytes, this.#capacityBytes) })
            continue
          }
          const superseded: number[] = []
          for (const seq of supersede) {
            const size = this.#deleteOne.get(seq) as number | undefined
            if (size !== undefined) { superseded.push(seq); c.count--; c.bytes -= size }
          }
          const dropped = c.bytes + newBytes > this.#capacityBytes ? this.#dropOldest(c, c.bytes + newBytes - this.#capacityBytes) : []
          for (const e of op.events) {
            this.#insert.run(e.seq, e.name, CATEGORY_CODE[e.category], e.raisedAt, e.isNull ? 1 : 0, e.recipient, e.payloadKind, e.payload, e.key ?? null, eventSize(e))
          }
          if (op.marks !== undefined) {
            // [SVC-MARK-1] in the transaction of the events; in call order, so the last writer wins
            for (const [source, value] of op.marks) this.#putMark.run(source, value)
            this.#markTable.stage(op.marks)
          }
          c.count += op.events.length
          c.bytes += newBytes
          c.last = op.events[op.events.length - 1]?.seq ?? c.last
          results.push(dropped.length === 0 ? NOTHING_DROPPED : { ok: true, value: { dropped } })
          committed.push({ kind: 'append', events: op.events, superseded, dropped })
          break
        }
        case 'ack': {
          const [n, bytes] = this.#countUpTo.get(op.upTo) as [number, number]
          if (n > 0) {
            this.#deleteUpTo.run(op.upTo)
            c.count -= n
            c.bytes -= bytes
          }
          results.push({ ok: true, value: undefined })
          committed.push({ kind: 'ack', upTo: op.upTo })
          break
        }
        case 'remove': {
          const removed: number[] = []
          for (const seq of new Set(op.seqs)) {
            const size = this.#deleteOne.get(seq) as number | undefined
            if (size !== undefined) { removed.push(seq); c.count--; c.bytes -= size }
          }
          results.push({ ok: true, value: undefined })
          committed.push({ kind: 'remove', seqs: removed })
          break
        }
      }
    }
    if (c.count !== this.#counters.count || c.bytes !== this.#counters.bytes || c.last !== this.#counters.last) {
      this.#putMeta.run(c.last, c.count, c.bytes)
    }
    return c
  }

  /** Deletes the oldest events until at least `need` bytes are freed; returns them in seq order. */
  #dropOldest (c: Counters, need: number): RaisedEvent[] {
    const dropped: RaisedEvent[] = []
    let freed = 0
    let after = Number.MIN_SAFE_INTEGER
    while (freed < need) {
      const rows = this.#oldest.all(after) as Array<[...Row, number]>
      if (rows.length === 0) break
      for (const row of rows) {
        dropped.push(toEvent(row))
        freed += row[9]
        after = row[0]
        if (freed >= need) break
      }
    }
    if (dropped.length > 0) this.#deleteUpTo.run(after)
    c.count -= dropped.length
    c.bytes -= freed
    return dropped
  }

  /** Makes the schema of a new file, in one transaction. */
  #create (): void {
    const db = this.#db
    db.transaction(() => {
      db.exec(`
        CREATE TABLE meta (
          id INTEGER PRIMARY KEY CHECK (id = 1),
          format TEXT NOT NULL,
          version INTEGER NOT NULL,
          instance TEXT NOT NULL,
          last_seq INTEGER NOT NULL,
          count INTEGER NOT NULL,
          bytes INTEGER NOT NULL
        );
        CREATE TABLE events (
          seq INTEGER PRIMARY KEY,
          name TEXT NOT NULL,
          category INTEGER NOT NULL,
          raised_at INTEGER NOT NULL,
          is_null INTEGER NOT NULL,
          recipient TEXT,
          payload_kind INTEGER NOT NULL,
          payload BLOB NOT NULL,
          size INTEGER NOT NULL,
          rkey TEXT
        );
        ${CREATE_MARKS}
        PRAGMA application_id = ${HERALD_SERVICE_PERSISTENCE_APP_ID};
        PRAGMA user_version = ${SCHEMA_VERSION};
      `)
      db.prepare(`INSERT INTO meta (id, format, version, instance, last_seq, count, bytes) VALUES (1, ?, ?, ?, 0, 0, 0)`)
        .run(FORMAT, SCHEMA_VERSION, randomUUID())
    })()
  }
}

function toEvent (row: Row | [...Row, number]): RaisedEvent {
  const [seq, name, category, raisedAt, isNull, recipient, payloadKind, payload, rkey] = row
  const cat = CATEGORY_BY_CODE[category]
  if (cat === undefined) throw new PersistenceError(`service persistence: event ${seq} has an unknown category code ${category}`)
  const e: RaisedEvent = { seq, name, category: cat, raisedAt, isNull: isNull !== 0, recipient, payloadKind: payloadKind as PayloadKind, payload }
  return rkey === null ? e : { ...e, key: rkey }
}
