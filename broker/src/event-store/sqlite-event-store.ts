/**
 * The durable EventStore: one SQLite file in WAL mode ([STORE-*]).
 *
 * Layout
 * - `meta(key, value)`: `schema` (version) and `head` (the highest position ever assigned). Positions
 *   come from an in-memory counter that is written to `head` in the transaction that uses them, so
 *   they are never reused even when the newest rows are deleted ([STORE-POS-1]).
 * - `dedup(service, instance, last_seq)`: [STORE-DEDUP-1], cached in a Map.
 * - `dedup_keys(service, instance, key, seq)`: [STORE-DEDUP-2], the newest `maxDedupKeys` keys per
 *   (service, instance), cached in a Map of insertion-ordered Maps (oldest first).
 * - `events(position, ...)`: one row per stored event; `recipient` is '' for non-private events so
 *   that every lookup is a plain equality on an index:
 *   `events_read (event, recipient, position)` serves `read`,
 *   `events_queue (service, event, recipient, rkey, position)` serves replacement and push-out;
 *   `rkey` is the replacing key of a keyed event ([STORE-KEY-1]), '' for every other,
 *   `events_expiry (expires_at)` (partial, non-null only) serves `purgeExpired`.
 *
 * Group commit ([STORE-ACK-1]): `append` queues the batch and schedules one flush with
 * setImmediate; the flush writes every queued batch in one transaction (one fsync with
 * `synchronous = FULL`) and then resolves each call in order. Batches that arrive while a commit
 * blocks the process go into the next flush. No `await` ever runs inside a transaction, and the
 * in-memory caches (head, dedup, queue counts) change only after a commit succeeded.
 *
 * Recent events ([CLI-LIVE-1] for subscriptions a little behind): the store keeps the events of the
 * last commits in memory, every stored event with a position above `recentFloor`, of every name, in
 * position order (at most RECENT_MAX_EVENTS and RECENT_MAX_BYTES of payload). A read that starts at
 * or above the floor is answered from there, with the same filters as the query, and never touches
 * the file. Rows deleted while still recent (push-out, replacement, purge: their positions come back
 * with RETURNING) are blanked in it after the commit, so it never returns what the file no longer has.
 */
import { createRequire } from 'node:module'
import Database from 'better-sqlite3'
import { CATEGORY_CODE, Category, ClosedError, ConfigError, ErrorCode, PersistenceError, RequestError, silentLogger, type Logger, type StoredEvent } from '@herald/protocol'
import { WalCheckpointer, SqliteSynchronous } from '@herald/node-runtime'
import { DEDUP_KEY_DEFAULTS } from './event-store.js'
import type { AppendBatch, AppendResult, CommitObserver, EventCounters, EventStore, ExpiredUnpurged, LimitsOf, QueueLimits, ReadQuery } from './event-store.js'
import { capOf, checkBatch, checkMaxDedupKeys, countFor, expiresAtOf, keyLimitRefusal, KeyTable, maxKeysOf, NO_RECIPIENT, recipientKeyOf, snapshotCounters, storedFrom } from './event-store-rules.js'
import { EVENT_COLUMNS as COLUMNS, FLAG_NULL, toStored, type EventRow as Row } from './event-row.js'
import { RemovalLog, type Gap, type GapQuery, type RemovalReason } from './removal-log.js'
import { SqliteGroupTables, type GroupChange } from '../groups/sqlite-group-tables.js'
import type { GroupStore } from '../groups/group-store.js'

/** How each commit reaches the disk. */
export { SqliteSynchronous }

/** What `createSqliteEventStore` takes. */
export interface SqliteEventStoreOptions {
  /** The database file; created if missing (its directory must exist). Required. */
  readonly path: string
  /** Each event name's category and limits (from the site). Required. */
  readonly limitsOf: LimitsOf
  /** Where the store logs opening, purges and failed commits. Default: silent. */
  readonly logger?: Logger
  /** 'FULL' (default, durable) or 'NORMAL' (not durable on power loss: tests and benchmarks only). */
  readonly synchronous?: SqliteSynchronous
  /**
   * Largest the database file may grow, in bytes (rounded down to whole pages; SQLite keeps it at
   * least the current size). A commit that needs more fails with a PersistenceError whose cause has
   * code SQLITE_FULL. Default: null, SQLite's own limit.
   */
  readonly maxSizeBytes?: number | null
  /**
   * Where WAL checkpoints run: 'worker' (default) from a worker thread with its own connection, so
   * that no commit waits for one (the WAL stays bounded: see WalCheckpointer); 'inline': SQLite's
   * automatic checkpoint, inside the commit that crosses 1,000 pages.
   */
  readonly walCheckpoint?: 'worker' | 'inline'
  /** Dedup keys remembered per (service, instance) ([STORE-DEDUP-2]). Default 10,000 (DEDUP_KEY_DEFAULTS). */
  readonly maxDedupKeys?: number
}

/** Defaults of the optional options. */
export const SQLITE_EVENT_STORE_DEFAULTS: Readonly<{ logger: Logger, synchronous: SqliteSynchronous, maxSizeBytes: number | null, walCheckpoint: 'worker' | 'inline', maxDedupKeys: number }> = Object.freeze({
  logger: silentLogger,
  synchronous: SqliteSynchronous.FULL,
  maxSizeBytes: null,
  walCheckpoint: 'worker',
  maxDedupKeys: DEDUP_KEY_DEFAULTS.maxDedupKeys
})

/** Where the checkpoint worker loads the SQLite driver from. */
const DRIVER = createRequire(import.meta.url).resolve('better-sqlite3')

/**
 * 2: events.upload_age ([EVT-AGE-1]); a version 1 file gets the column (0 for its rows) when opened.
 * 3: the dedup_keys table ([STORE-DEDUP-2]); a version 1 or 2 file gets it (empty) when opened.
 * 4: events.rkey, the replacing key ([STORE-KEY-1], '' for unkeyed events), and events_queue with
 *    it; a version 1, 2 or 3 file gets the column ('' for its rows) and the index when opened.
 */
const SCHEMA_VERSION = 4
/** Most events kept in memory for reads of recent positions. */
const RECENT_MAX_EVENTS = 20_000
/** Most payload bytes kept in memory for reads of recent positions. */
const RECENT_MAX_BYTES = 16 * 1024 * 1024
/** Expired events deleted per transaction by purgeExpired; appends run between chunks. */
const PURGE_CHUNK = 10_000

interface Pending {
  readonly batch: AppendBatch
  readonly limits: readonly QueueLimits[]
  readonly resolve: (r: AppendResult) => void
  readonly reject: (err: unknown) => void
}

/** A queue touched by a flush: its count including the new rows, before push-out. */
interface QueueDelta { service: string, event: string, recipient: string, rkey: string, cap: number, count: number, replacing: boolean }

interface SeqDelta { service: string, instance: string, last: number, before: number }

/** [STORE-DEDUP-2] keys a flush adds to one (service, instance), in seq order. */
interface KeyDelta { service: string, instance: string, added: Map<string, number> }

interface FlushOutcome {
  results: AppendResult[]
  head: number
  seqs: Map<string, SeqDelta>
  queues: Map<string, QueueDelta>
  added: number
  removed: number
  /** Positions deleted by push-out or replacement. */
  gone: number[]
  /** Per replacing queue touched: whether its stored instance is now a null one ([STORE-REPLACE-2]). */
  nulls: Map<string, boolean>
  /** What the flush dropped, per event name, to add to the counters after the commit. */
  counted: Map<string, EventCounters>
  /** Keys added per (service, instance) ([STORE-DEDUP-2]). */
  keys: Map<string, KeyDelta>
  /** Rows pushed out (not replaced), for gap notices ([CLI-GAP-1]). */
  removals: Array<[service: string, event: string, recipient: string, position: number, reason: RemovalReason]>
}

/** Key of a queue: (service, event, recipient, replacing key), the key '' for unkeyed events ([STORE-KEY-1]). */
function queueKey (service: string, event: string, recipient: string, rkey: string): string {
  return `${service}\u0000${event}\u0000${recipient}\u0000${rkey}`
}

function seqKey (service: string, instance: string): string {
  return `${service}\u0000${instance}`
}

function checkOptions (options: SqliteEventStoreOptions): Required<SqliteEventStoreOptions> {
  const where = 'SqliteEventStore'
  if (options === null || typeof options !== 'object') throw new ConfigError(`${where}: options must be an object`)
  for (const k of Object.keys(options)) {
    if (!['path', 'limitsOf', 'logger', 'synchronous', 'maxSizeBytes', 'walCheckpoint', 'maxDedupKeys'].includes(k)) throw new ConfigError(`${where}: unknown option "${k}"`)
  }
  if (typeof options.path !== 'string' || options.path === '' || options.path === ':memory:') {
    throw new ConfigError(`${where}: option "path" must be a file path`)
  }
  if (typeof options.limitsOf !== 'function') throw new ConfigError(`${where}: option "limitsOf" must be a function`)
  const logger = options.logger ?? SQLITE_EVENT_STORE_DEFAULTS.logger
  if (typeof logger !== 'object' || logger === null || typeof logger.error !== 'function') {
    throw new ConfigError(`${where}: option "logger" must be a pino-compatible logger`)
  }
  const synchronous = options.synchronous ?? SQLITE_EVENT_STORE_DEFAULTS.synchronous
  if (synchronous !== 'FULL' && synchronous !== 'NORMAL') {
    throw new ConfigError(`${where}: option "synchronous" must be 'FULL' or 'NORMAL', got ${String(synchronous)}`)
  }
  const maxSizeBytes = options.maxSizeBytes ?? SQLITE_EVENT_STORE_DEFAULTS.maxSizeBytes
  if (maxSizeBytes !== null && (!Number.isSafeInteger(maxSizeBytes) || maxSizeBytes < 65_536)) {
    throw new ConfigError(`${where}: option "maxSizeBytes" must be null or a whole number >= 65536, got ${maxSizeBytes}`)
  }
  const walCheckpoint = options.walCheckpoint ?? SQLITE_EVENT_STORE_DEFAULTS.walCheckpoint
  if (walCheckpoint !== 'worker' && walCheckpoint !== 'inline') {
    throw new ConfigError(`${where}: option "walCheckpoint" must be 'worker' or 'inline', got ${String(walCheckpoint)}`)
  }
  const maxDedupKeys = checkMaxDedupKeys(where, options.maxDedupKeys)
  return { path: options.path, limitsOf: options.limitsOf, logger, synchronous, maxSizeBytes, walCheckpoint, maxDedupKeys }
}

/** Opens (creating if needed) the store at `options.path` and loads its caches. */
export async function createSqliteEventStore (options: SqliteEventStoreOptions): Promise<SqliteEventStore> {
  const opts = checkOptions(options)
  let db: Database.Database | undefined
  try {
    db = new Database(opts.path)
    return new SqliteEventStore(db, opts)
  } catch (err) {
    db?.close()
    if (err instanceof ConfigError || err instanceof PersistenceError) throw err
    throw new PersistenceError(`event store: cannot open ${opts.path}: ${(err as Error).message}`, { cause: err })
  }
}

/** The SQLite EventStore; made by `createSqliteEventStore`. */
export class SqliteEventStore implements EventStore {
  readonly #db: Database.Database
  readonly #limitsOf: LimitsOf
  readonly #logger: Logger
  readonly #path: string
  readonly #seqs = new Map<string, number>()
  /** [STORE-DEDUP-2] per (service, instance): key -> seq, oldest first. */
  readonly #keys = new Map<string, Map<string, number>>()
  readonly #maxDedupKeys: number
  /** Rows per queue (service, event, recipient), expired-but-unpurged ones included. */
  readonly #counts = new Map<string, number>()
  /** Replacing queues whose stored instance is a null one ([STORE-REPLACE-2]); unkeyed only. */
  readonly #nullHeads = new Set<string>()
  /** [STORE-KEY-3] the keys stored per (service, event) of keyed events. */
  readonly #keyTable = new KeyTable()
  /** Per event name, what the store dropped since it was opened. */
  readonly #counters = new Map<string, EventCounters>()
  /** [CLI-GAP-1] what was pushed out or expired, for gap notices. */
  readonly #removals = new RemovalLog()
  #head = 0
  #count = 0
  /** Every stored event with position > #recentFloor, in position order; null where since deleted. */
  #recent: Array<StoredEvent | null> = []
  #recentStart = 0
  #recentFloor = 0
  #recentBytes = 0
  #pending: Pending[] = []
  #timer: NodeJS.Immediate | null = null
  #closed = false
  /** Why the last commit failed; null after a successful one. */
  #commitFailure: string | null = null
  #commitObserver: CommitObserver | null = null
  /** performance.now() when #write finished, inside the transaction: the COMMIT starts there. */
  #writtenAt = 0
  /** Runs the WAL checkpoints off this thread; null with walCheckpoint 'inline'. */
  readonly #checkpointer: WalCheckpointer | null

  readonly #insert: Database.Statement
  readonly #pushOut: Database.Statement
  readonly #putSeq: Database.Statement
  readonly #putHead: Database.Statement
  readonly #putKey: Database.Statement
  readonly #dropKeys: Database.Statement
  readonly #read: Database.Statement
  readonly #readServices: Database.Statement
  readonly #readKeys: Database.Statement
  readonly #readServicesKeys: Database.Statement
  readonly #purge: Database.Statement
  readonly #expiredOf: Database.Statement
  readonly #rowFrom: Database.Statement
  readonly #latest: Database.Statement
  readonly #flushTxn: (pending: readonly Pending[], groups: readonly GroupChange[]) => FlushOutcome
  /** [GROUP-STORE-1] the consumer groups' tables, and their changes waiting for the next flush. */
  readonly #groupTables: SqliteGroupTables
  #groupChanges: Array<{ change: GroupChange, resolve: () => void, reject: (err: unknown) => void }> = []
  /** [GROUP-STORE-1] consumer groups' marks, written in the events' group commit. */
  readonly groups: GroupStore
  readonly #purgeTxn: (now: number) => { removed: Map<string, number>, gone: number[], byName: Map<string, number>, rows: FlushOutcome['removals'] }

  /** Use `createSqliteEventStore`; takes ownership of `db`. */
  constructor (db: Database.Database, opts: Required<SqliteEventStoreOptions>) {
    this.#db = db
    this.#limitsOf = opts.limitsOf
    this.#logger = opts.logger
    this.#path = opts.path
    this.#maxDedupKeys = opts.maxDedupKeys

    const mode = db.pragma('journal_mode = WAL', { simple: true }) as string
    if (mode.toLowerCase() !== 'wal') throw new PersistenceError(`event store: ${opts.path} cannot use WAL mode (got ${mode})`)
    db.pragma(`synchronous = ${opts.synchronous}`)
    db.pragma('cache_size = -32768') // 32 MiB
    db.pragma('temp_store = MEMORY')
    this.#migrate()
    if (opts.maxSizeBytes !== null) {
      const pageSize = db.pragma('page_size', { simple: true }) as number
      db.pragma(`max_page_count = ${Math.floor(opts.maxSizeBytes / pageSize)}`)
    }

    this.#insert = db.prepare(`INSERT INTO events (${COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`)
    this.#pushOut = db.prepare(`DELETE FROM events WHERE position IN (
      SELECT position FROM events WHERE service = ? AND event = ? AND recipient = ? AND rkey = ? ORDER BY position LIMIT ?) RETURNING position, expires_at`).raw(true)
    this.#putSeq = db.prepare(`INSERT INTO dedup (service, instance, last_seq) VALUES (?, ?, ?)
      ON CONFLICT (service, instance) DO UPDATE SET last_seq = excluded.last_seq`)
    this.#putHead = db.prepare(`UPDATE meta SET value = ? WHERE key = 'head'`)
    this.#putKey = db.prepare('INSERT INTO dedup_keys (service, instance, key, seq) VALUES (?, ?, ?, ?) ON CONFLICT (service, instance, key) DO UPDATE SET seq = excluded.seq')
    this.#dropKeys = db.prepare('DELETE FROM dedup_keys WHERE service = ? AND instance = ? AND seq <= ?')
    const where = `event = ? AND recipient = ? AND position > ? AND (expires_at IS NULL OR expires_at > ?)`
    this.#read = db.prepare(`SELECT ${COLUMNS} FROM events WHERE ${where} ORDER BY position LIMIT ?`).raw(true)
    this.#readServices = db.prepare(`SELECT ${COLUMNS} FROM events INDEXED BY events_read
      WHERE ${where} AND service IN (SELECT value FROM json_each(?)) ORDER BY position LIMIT ?`).raw(true)
    // [CLI-KEY-1] a key filter: keys as JSON, with or without services
    this.#readKeys = db.prepare(`SELECT ${COLUMNS} FROM events INDEXED BY events_read
      WHERE ${where} AND rkey IN (SELECT value FROM json_each(?)) ORDER BY position LIMIT ?`).raw(true)
    this.#readServicesKeys = db.prepare(`SELECT ${COLUMNS} FROM events INDEXED BY events_read
      WHERE ${where} AND service IN (SELECT value FROM json_each(?)) AND rkey IN (SELECT value FROM json_each(?)) ORDER BY position LIMIT ?`).raw(true)
    this.#purge = db.prepare(`DELETE FROM events WHERE position IN (
      SELECT position FROM events WHERE expires_at <= ? LIMIT ${PURGE_CHUNK}) RETURNING service, event, recipient, position, rkey`).raw(true)
    this.#expiredOf = db.prepare(`SELECT service, position FROM events INDEXED BY events_expiry
      WHERE expires_at IS NOT NULL AND expires_at <= ? AND event = ? AND recipient = ? AND position > ?`).raw(true)
    this.#rowFrom = db.prepare('SELECT position, received_at FROM events WHERE position >= ? ORDER BY position LIMIT 1').raw(true)
    this.#latest = db.prepare(`SELECT service, max(position), rkey FROM events INDEXED BY events_read
      WHERE event = ? AND recipient = ? AND (expires_at IS NULL OR expires_at > ?) GROUP BY service, rkey`).raw(true)
    this.#groupTables = new SqliteGroupTables(db)
    this.#flushTxn = db.transaction((pending: readonly Pending[], groups: readonly GroupChange[]) => {
      const out = this.#write(pending)
      this.#groupTables.apply(groups)
      return out
    })
    const change = async (c: GroupChange): Promise<void> => {
      this.#checkOpen()
      await new Promise<void>((resolve, reject) => {
        this.#groupChanges.push({ change: c, resolve, reject })
        this.#timer ??= setImmediate(() => { this.#flush() })
      })
    }
    this.groups = {
      loadGroup: (user, group) => { this.#checkOpen(); return this.#groupTables.load(user, group) },
      listGroups: (user) => { this.#checkOpen(); return this.#groupTables.listOf(user) },
      writeGroup: async (write) => { await change({ write }) },
      deleteGroup: async (user, group) => { await change({ delete: { user, group } }) }
    }
    this.#purgeTxn = db.transaction((now: number) => this.#purgeChunk(now))

    this.#load()
    this.#checkpointer = opts.walCheckpoint === 'worker'
      ? new WalCheckpointer({ path: opts.path, db, driver: DRIVER, synchronous: opts.synchronous, logger: opts.logger })
      : null
    this.#logger.info({ path: opts.path, synchronous: opts.synchronous, head: this.#head, events: this.#count }, 'event store opened')
  }

  async append (batch: AppendBatch): Promise<AppendResult> {
    this.#checkOpen()
    const limits = checkBatch(batch, this.#limitsOf)
    return await new Promise<AppendResult>((resolve, reject) => {
      this.#pending.push({ batch, limits, resolve, reject })
      this.#timer ??= setImmediate(() => { this.#flush() })
    })
  }

  lastSeq (serviceId: string, instance: string): number {
    this.#checkOpen()
    return this.#seqs.get(seqKey(serviceId, instance)) ?? 0
  }

  async read (query: ReadQuery): Promise<StoredEvent[]> {
    this.#checkOpen()
    const recipient = recipientKeyOf(query, this.#limitsOf)
    if (query.limit === 0 || query.services?.size === 0) return []
    if (query.after >= this.#recentFloor) return this.#readRecent(query, recipient)
    if (query.keys?.size === 0) return []
    try {
      const args: unknown[] = [query.event, recipient, query.after, query.now]
      if (query.services !== null) args.push(JSON.stringify([...query.services]))
      if (query.keys != null) args.push(JSON.stringify([...query.keys]))
      args.push(query.limit)
      const stmt = query.keys == null
        ? query.services === null ? this.#read : this.#readServices
        : query.services === null ? this.#readKeys : this.#readServicesKeys
      if (query.maxBytes === undefined) return (stmt.all(...args) as Row[]).map(toStored)
      // bounded by bytes: step through the rows, so that no more than that is ever in memory
      const out: StoredEvent[] = []
      let bytes = 0
      for (const row of stmt.iterate(...args) as IterableIterator<Row>) {
        const e = toStored(row)
        out.push(e)
        bytes += e.payload.byteLength
        if (bytes >= query.maxBytes) break
      }
      return out
    } catch (err) {
      throw new PersistenceError(`event store: reading "${query.event}" failed: ${(err as Error).message}`, { cause: err })
    }
  }

  /** One pass over the event's rows for the recipient (events_read), grouped by service. */
  latestPerService (query: Omit<ReadQuery, 'limit' | 'maxBytes' | 'after'>): number[] {
    this.#checkOpen()
    const recipient = recipientKeyOf({ ...query, after: 0, limit: 0 }, this.#limitsOf)
    const out: number[] = []
    for (const [service, position, rkey] of this.#latest.iterate(query.event, recipient, query.now) as IterableIterator<[string, number, string]>) {
      if (query.keys != null && !query.keys.has(rkey)) continue
      if (query.services === null || query.services.has(service)) out.push(position)
    }
    return out.sort((a, b) => a - b)
  }

  /** A binary search over positions: about log2(head) lookups of the primary key, no index of its own. */
  positionAt (time: number): number | null {
    this.#checkOpen()
    const rowAt = (p: number): [number, number] | undefined => this.#rowFrom.get(p) as [number, number] | undefined
    let lo = 1
    let hi = this.#head + 1
    // the smallest x whose first row at or after it was received at or after `time` (head + 1: none)
    while (lo < hi) {
      const mid = Math.floor((lo + hi) / 2)
      const row = rowAt(mid)
      if (row === undefined || row[1] >= time) hi = mid
      else lo = mid + 1
    }
    const row = rowAt(lo)
    return row === undefined ? null : row[0]
  }

  head (): number {
    this.#checkOpen()
    return this.#head
  }

  count (): number {
    this.#checkOpen()
    return this.#count
  }

  /** Deletes in chunks of PURGE_CHUNK, one transaction each, letting appends in between. */
  async purgeExpired (now: number): Promise<number> {
    this.#checkOpen()
    if (typeof now !== 'number' || Number.isNaN(now)) throw new RequestError(ErrorCode.INVALID_ARGUMENT, `event store: purgeExpired needs a time, got ${now}`)
    let total = 0
    for (;;) {
      let removed: Map<string, number>
      try {
        const out = this.#purgeTxn(now)
        this.#checkpointer?.committed()
        removed = out.removed
        this.#forgetRecent(out.gone)
        for (const [name, n] of out.byName) countFor(this.#counters, name, 'expired', n)
        this.#recordRemovals(out.rows)
      } catch (err) {
        this.#logger.error({ err, path: this.#path }, 'event store purge failed')
        throw new PersistenceError(`event store: purging expired events failed: ${(err as Error).message}`, { cause: err })
      }
      let n = 0
      for (const [key, gone] of removed) {
        n += gone
        const left = (this.#counts.get(key) ?? 0) - gone
        if (left > 0) this.#counts.set(key, left)
        else this.#counts.delete(key)
      }
      this.#count -= n
      total += n
      if (n < PURGE_CHUNK) break
      await new Promise((resolve) => setImmediate(resolve))
      if (this.#closed) break
    }
    if (total > 0) this.#logger.debug({ purged: total, now }, 'event store purged expired events')
    return total
  }

  counters (): Record<string, EventCounters> {
    this.#checkOpen()
    return snapshotCounters(this.#counters)
  }

  storedByEvent (): Map<string, number> {
    this.#checkOpen()
    const out = new Map<string, number>()
    for (const [key, n] of this.#counts) {
      const name = key.split('\u0000')[1] as string
      out.set(name, (out.get(name) ?? 0) + n)
    }
    return out
  }

  problem (): string | null {
    if (this.#closed) return 'event store is closed'
    return this.#commitFailure
  }

  observeCommits (observer: CommitObserver | null): void {
    this.#commitObserver = observer
  }

  /** Commits pending appends, then closes the file. Idempotent: a second call resolves at once. */
  async close (): Promise<void> {
    if (this.#closed) return
    if (this.#timer !== null) clearImmediate(this.#timer)
    this.#flush()
    this.#closed = true
    await this.#checkpointer?.close()
    this.#db.close()
    this.#logger.info({ path: this.#path, head: this.#head }, 'event store closed')
  }

  #flush (): void {
    this.#timer = null
    const pending = this.#pending
    const groups = this.#groupChanges
    if (pending.length === 0 && groups.length === 0) return
    this.#pending = []
    this.#groupChanges = []
    let out: FlushOutcome
    const startedAt = performance.now()
    try {
      out = this.#flushTxn(pending, groups.map((g) => g.change))
    } catch (err) {
      for (const g of groups) g.reject(new PersistenceError(`event store: commit of consumer group marks to ${this.#path} failed: ${(err as Error).message}`, { cause: err }))
      this.#commitFailure = `the last commit failed: ${(err as Error).message}`
      // the key table changed along the failed transaction: back to what the file holds
      this.#loadKeyTable()
      const events = pending.reduce((n, p) => n + p.batch.events.length, 0)
      this.#logger.error({ err, path: this.#path, appends: pending.length, events }, 'event store commit failed')
      const code = (err as { code?: unknown }).code
      const message = `event store: commit of ${pending.length} append(s) with ${events} event(s) to ${this.#path} failed` +
        `${typeof code === 'string' ? ` (${code})` : ''}: ${(err as Error).message}`
      for (const p of pending) p.reject(new PersistenceError(message, { cause: err }))
      return
    }
    if (this.#commitObserver !== null) {
      const doneAt = performance.now()
      this.#commitObserver((doneAt - startedAt) / 1000, (doneAt - this.#writtenAt) / 1000)
    }
    this.#commitFailure = null
    this.#checkpointer?.committed()
    // Committed: only now do the caches change.
    this.#head = out.head
    this.#count += out.added - out.removed
    for (const [key, s] of out.seqs) this.#seqs.set(key, s.last)
    for (const [key, k] of out.keys) {
      let keys = this.#keys.get(key)
      if (keys === undefined) this.#keys.set(key, keys = new Map<string, number>())
      for (const [name, seq] of k.added) keys.set(name, seq)
      for (const name of keys.keys()) {
        if (keys.size <= this.#maxDedupKeys) break
        keys.delete(name)
      }
    }
    for (const [key, q] of out.queues) {
      if (q.count > 0) this.#counts.set(key, q.count)
      else this.#counts.delete(key)
    }
    for (const [key, isNull] of out.nulls) {
      if (isNull) this.#nullHeads.add(key)
      else this.#nullHeads.delete(key)
    }
    for (const [name, c] of out.counted) {
      for (const kind of Object.keys(c) as Array<keyof EventCounters>) if (c[kind] > 0) countFor(this.#counters, name, kind, c[kind])
    }
    for (const r of out.results) this.#remember(r.stored)
    this.#forgetRecent(out.gone)
    this.#recordRemovals(out.removals)
    for (let i = 0; i < pending.length; i++) pending[i]!.resolve(out.results[i]!)
    for (const g of groups) g.resolve()
  }

  /** Runs inside the flush transaction: writes every pending batch, reads caches, changes none. */
  #write (pending: readonly Pending[]): FlushOutcome {
    const seqs = new Map<string, SeqDelta>()
    const queues = new Map<string, QueueDelta>()
    const nulls = new Map<string, boolean>()
    const counted = new Map<string, EventCounters>()
    const keyDeltas = new Map<string, KeyDelta>()
    const results: AppendResult[] = []
    let head = this.#head
    let added = 0
    /** The latest arrival of the flush: a row pushed out expired by then counts as expired. */
    let now = -Infinity
    for (const { batch, limits } of pending) {
      const { serviceId, instance, receivedAt } = batch
      const sk = seqKey(serviceId, instance)
      let sd = seqs.get(sk)
      if (sd === undefined) {
        const before = this.#seqs.get(sk) ?? 0
        seqs.set(sk, sd = { service: serviceId, instance, last: before, before })
      }
      if (receivedAt > now) now = receivedAt
      let last = sd.last
      const stored: StoredEvent[] = []
      let duplicates = 0
      let expired = 0
      let nullsDropped = 0
      const refused: Array<{ seq: number, code: string, message: string }> = []
      for (let i = 0; i < batch.events.length; i++) {
        const e = batch.events[i]!
        // [STORE-DEDUP-1]
        if (e.seq <= last) { duplicates++; continue }
        last = e.seq
        if (e.dedupKey !== undefined) {
          // [STORE-DEDUP-2] a key remembered (or added earlier in this flush): handled, not stored
          let kd = keyDeltas.get(sk)
          if (kd === undefined) keyDeltas.set(sk, kd = { service: serviceId, instance, added: new Map<string, number>() })
          if (kd.added.has(e.dedupKey) || this.#keys.get(sk)?.has(e.dedupKey) === true) { duplicates++; continue }
          kd.added.set(e.dedupKey, e.seq)
          this.#putKey.run(serviceId, instance, e.dedupKey, e.seq)
        }
        const lim = limits[i]!
        const expiresAt = expiresAtOf(lim, receivedAt, e.age)
        if (expiresAt !== null && expiresAt <= receivedAt) {
          // [STORE-EXPIRE-2] handled (the dedup record covers it), never stored
          expired++
          countFor(counted, e.name, 'expiredOnArrival')
          continue
        }
        const recipient = e.recipient ?? NO_RECIPIENT
        const rkey = e.key ?? ''
        const qk = queueKey(serviceId, e.name, recipient, rkey)
        if (e.key !== undefined) {
          // [STORE-KEY-1..3] judged against the key table, which this flush changes as it goes (reloaded if it fails)
          const kq = KeyTable.queueOf(serviceId, e.name)
          if (!this.#keyTable.has(kq, e.key)) {
            if (e.isNull) {
              // [STORE-KEY-2] nothing stored for the key: nothing to clear
              nullsDropped++
              countFor(counted, e.name, 'nullsDropped')
              continue
            }
            const max = maxKeysOf(lim)
            if (this.#keyTable.size(kq) >= max) {
              const victim = this.#keyTable.oldestNull(kq)
              if (victim === undefined) {
                refused.push(keyLimitRefusal(e, serviceId, max))
                continue
              }
              // the oldest null key makes room: its queue is emptied at the end of the flush
              const vqk = queueKey(serviceId, e.name, NO_RECIPIENT, victim)
              const vq = queues.get(vqk)
              if (vq === undefined) queues.set(vqk, { service: serviceId, event: e.name, recipient: NO_RECIPIENT, rkey: victim, cap: 0, count: this.#counts.get(vqk) ?? 0, replacing: true })
              else vq.cap = 0
              this.#keyTable.delete(kq, victim)
            }
          } else if (e.isNull && this.#keyTable.isNull(kq, e.key)) {
            nullsDropped++
            countFor(counted, e.name, 'nullsDropped')
            continue
          }
          this.#keyTable.set(kq, e.key, e.isNull)
        } else if (e.category === Category.replacing) {
          // [STORE-REPLACE-2] a null over a stored null says nothing new
          if (e.isNull && (nulls.get(qk) ?? this.#nullHeads.has(qk))) {
            nullsDropped++
            countFor(counted, e.name, 'nullsDropped')
            continue
          }
          nulls.set(qk, e.isNull)
        }
        const position = ++head // [STORE-POS-1]
        this.#insert.run(position, serviceId, instance, e.seq, e.name, CATEGORY_CODE[e.category], recipient,
          e.raisedAt, receivedAt, expiresAt, e.isNull ? FLAG_NULL : 0, e.payloadKind, e.payload, e.age ?? 0, rkey)
        const q = queues.get(qk)
        if (q === undefined) {
          queues.set(qk, { service: serviceId, event: e.name, recipient, rkey, cap: capOf(lim), count: (this.#counts.get(qk) ?? 0) + 1, replacing: e.category === Category.replacing })
        } else {
          q.count++
          q.cap = capOf(lim) // a key evicted earlier in this flush and stored again keeps this one
        }
        stored.push(storedFrom(e, e.payload, { position, serviceId, instance, receivedAt, expiresAt }))
      }
      added += stored.length
      sd.last = Math.max(last, batch.handledUpTo)
      results.push({ stored, duplicates, lastSeq: sd.last, expired, nullsDropped, refused })
    }
    // [STORE-REPLACE-1] [STORE-QUEUE-1]: one delete per queue that grew beyond its cap. Deleting the
    // oldest extras at the end leaves the same rows as deleting after each insert.
    let removed = 0
    const gone: number[] = []
    const removals: FlushOutcome['removals'] = []
    for (const q of queues.values()) {
      if (q.count <= q.cap) continue
      const rows = this.#pushOut.all(q.service, q.event, q.recipient, q.rkey, q.count - q.cap) as Array<[position: number, expiresAt: number | null]>
      q.count -= rows.length
      removed += rows.length
      for (const [p, expiresAt] of rows) {
        gone.push(p)
        const kind = expiresAt !== null && expiresAt <= now ? 'expired' : q.replacing ? 'replaced' : 'pushedOut'
        countFor(counted, q.event, kind)
        if (kind !== 'replaced') removals.push([q.service, q.event, q.recipient, p, kind])
      }
    }
    for (const s of seqs.values()) {
      if (s.last !== s.before) this.#putSeq.run(s.service, s.instance, s.last)
    }
    // [STORE-DEDUP-2] beyond maxDedupKeys, the oldest keys (lowest seqs) go: one delete per (service, instance)
    for (const [sk, kd] of keyDeltas) {
      const old = this.#keys.get(sk)
      const excess = (old?.size ?? 0) + kd.added.size - this.#maxDedupKeys
      if (excess <= 0) continue
      // old keys, then this flush's: seqs increase along them, so the excess-th seq is the cut
      let cutoff = 0
      let n = 0
      cut: for (const seqs of [old?.values() ?? [].values(), kd.added.values()]) {
        for (const seq of seqs) {
          cutoff = seq
          if (++n === excess) break cut
        }
      }
      this.#dropKeys.run(kd.service, kd.instance, cutoff)
    }
    if (head !== this.#head) this.#putHead.run(head)
    this.#writtenAt = performance.now()
    return { results, head, seqs, queues, added, removed, gone, nulls, counted, keys: keyDeltas, removals }
  }

  /** After a commit: the rows it pushed out or purged go to the removal log ([CLI-GAP-1]). */
  #recordRemovals (rows: FlushOutcome['removals']): void {
    if (rows.length === 0) return
    this.#removals.begin()
    for (const [service, event, recipient, position, reason] of rows) this.#removals.record(service, event, recipient === NO_RECIPIENT ? null : recipient, position, reason)
    this.#removals.end()
  }

  removalEpoch (event: string): number {
    return this.#removals.epochOf(event)
  }

  gap (query: GapQuery): Gap | null {
    return this.#removals.gap(query)
  }

  /** Through the expiry index: only the rows expired since the last purge are looked at. */
  expiredUnpurged (query: Omit<ReadQuery, 'limit' | 'maxBytes'>): ExpiredUnpurged | null {
    this.#checkOpen()
    const recipient = recipientKeyOf({ ...query, limit: 0 }, this.#limitsOf)
    let count = 0
    let upTo = 0
    const services = new Set<string>()
    for (const [service, position] of this.#expiredOf.iterate(query.now, query.event, recipient, query.after) as IterableIterator<[string, number]>) {
      if (query.services !== null && !query.services.has(service)) continue
      count++
      if (position > upTo) upTo = position
      services.add(service)
    }
    return count === 0 ? null : { count, upTo, services: [...services].sort().slice(0, 100) }
  }

  /** Runs inside a purge transaction: deletes up to PURGE_CHUNK expired rows; returns rows per queue. */
  #purgeChunk (now: number): { removed: Map<string, number>, gone: number[], byName: Map<string, number>, rows: FlushOutcome['removals'] } {
    const removed = new Map<string, number>()
    const byName = new Map<string, number>()
    const gone: number[] = []
    const rows: FlushOutcome['removals'] = []
    for (const [service, event, recipient, position, rkey] of this.#purge.iterate(now) as IterableIterator<[string, string, string, number, string]>) {
      const key = queueKey(service, event, recipient, rkey)
      removed.set(key, (removed.get(key) ?? 0) + 1)
      byName.set(event, (byName.get(event) ?? 0) + 1)
      if (position > this.#recentFloor) gone.push(position)
      rows.push([service, event, recipient, position, 'expired'])
    }
    return { removed, gone, byName, rows }
  }

  /** Adds committed events (in position order, above every recent one) to the recent events. */
  #remember (stored: readonly StoredEvent[]): void {
    for (const e of stored) {
      // its own copy of the payload: the caller may reuse its buffer
      this.#recent.push({ ...e, payload: Buffer.from(e.payload) })
      this.#recentBytes += e.payload.byteLength
    }
    while (this.#recent.length - this.#recentStart > RECENT_MAX_EVENTS || this.#recentBytes > RECENT_MAX_BYTES) {
      const e = this.#recent[this.#recentStart]
      this.#recent[this.#recentStart++] = null
      if (e === undefined) break
      if (e !== null) {
        this.#recentBytes -= e.payload.byteLength
        this.#recentFloor = e.position
      }
    }
    // the floor is the last position evicted; blanks in front of the next event go with it
    while (this.#recentStart < this.#recent.length && this.#recent[this.#recentStart] === null) this.#recentStart++
    if (this.#recentStart > 4096 && this.#recentStart * 2 > this.#recent.length) {
      this.#recent.splice(0, this.#recentStart)
      this.#recentStart = 0
    }
  }

  /** Blanks deleted rows among the recent events (committed deletions only). */
  #forgetRecent (positions: readonly number[]): void {
    for (const p of positions) {
      if (p <= this.#recentFloor) continue
      let i = this.#recentIndex(p)
      while (i < this.#recent.length && this.#recent[i] === null) i++
      const e = this.#recent[i]
      if (e !== undefined && e !== null && e.position === p) {
        this.#recent[i] = null
        this.#recentBytes -= e.payload.byteLength
      }
    }
  }

  /** Index of the first recent slot whose event has a position > `after` (blanks are skipped over). */
  #recentIndex (after: number, strictlyAbove = false): number {
    let lo = this.#recentStart
    let hi = this.#recent.length
    while (lo < hi) {
      const mid = (lo + hi) >>> 1
      // a blank has no position: look at the nearest event after it
      let j = mid
      while (j < hi && this.#recent[j] === null) j++
      if (j === hi) {
        hi = mid
        continue
      }
      const pos = (this.#recent[j] as StoredEvent).position
      if (strictlyAbove ? pos > after : pos >= after) hi = mid
      else lo = j + 1
    }
    return lo
  }

  /** A read answered from the recent events: same filters and order as the query on the file. */
  #readRecent (query: ReadQuery, recipient: string): StoredEvent[] {
    const out: StoredEvent[] = []
    const recent = this.#recent
    const maxBytes = query.maxBytes ?? Infinity
    let bytes = 0
    for (let i = this.#recentIndex(query.after, true); i < recent.length && out.length < query.limit && bytes < maxBytes; i++) {
      const e = recent[i]
      if (e === null || e === undefined || e.name !== query.event) continue
      if ((e.recipient ?? NO_RECIPIENT) !== recipient) continue
      if (e.expiresAt !== null && e.expiresAt <= query.now) continue
      if (query.services !== null && !query.services.has(e.serviceId)) continue
      if (query.keys != null && (e.key === undefined || !query.keys.has(e.key))) continue
      out.push(e)
      bytes += e.payload.byteLength
    }
    return out
  }

  #migrate (): void {
    this.#db.transaction(() => {
      this.#db.exec(`
        CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
        CREATE TABLE IF NOT EXISTS dedup (
          service TEXT NOT NULL, instance TEXT NOT NULL, last_seq INTEGER NOT NULL,
          PRIMARY KEY (service, instance)) WITHOUT ROWID;
        CREATE TABLE IF NOT EXISTS events (
          position INTEGER PRIMARY KEY,
          service TEXT NOT NULL, instance TEXT NOT NULL, seq INTEGER NOT NULL,
          event TEXT NOT NULL, category INTEGER NOT NULL, recipient TEXT NOT NULL,
          raised_at INTEGER NOT NULL, received_at INTEGER NOT NULL, expires_at INTEGER,
          flags INTEGER NOT NULL, payload_kind INTEGER NOT NULL, payload BLOB NOT NULL,
          upload_age INTEGER NOT NULL DEFAULT 0, rkey TEXT NOT NULL DEFAULT '');
        CREATE TABLE IF NOT EXISTS dedup_keys (
          service TEXT NOT NULL, instance TEXT NOT NULL, key TEXT NOT NULL, seq INTEGER NOT NULL,
          PRIMARY KEY (service, instance, key)) WITHOUT ROWID;
        CREATE INDEX IF NOT EXISTS dedup_keys_age ON dedup_keys (service, instance, seq);
        CREATE INDEX IF NOT EXISTS events_read ON events (event, recipient, position);
        CREATE INDEX IF NOT EXISTS events_expiry ON events (expires_at) WHERE expires_at IS NOT NULL;
        INSERT OR IGNORE INTO meta (key, value) VALUES ('head', 0);
      `)
      const version = this.#db.prepare(`SELECT value FROM meta WHERE key = 'schema'`).pluck().get() as number | undefined
      if (version === undefined) {
        this.#db.prepare(`INSERT INTO meta (key, value) VALUES ('schema', ?)`).run(SCHEMA_VERSION)
      } else if (version === 1 || version === 2 || version === 3) {
        // 1 -> 2: the upload_age column; 2 -> 3: dedup_keys, made by CREATE TABLE IF NOT EXISTS above;
        // 3 -> 4: the rkey column and events_queue with it ([STORE-KEY-1])
        if (version === 1) this.#db.exec('ALTER TABLE events ADD COLUMN upload_age INTEGER NOT NULL DEFAULT 0')
        this.#db.exec(`ALTER TABLE events ADD COLUMN rkey TEXT NOT NULL DEFAULT ''; DROP INDEX IF EXISTS events_queue`)
        this.#db.prepare(`UPDATE meta SET value = ? WHERE key = 'schema'`).run(SCHEMA_VERSION)
      } else if (version !== SCHEMA_VERSION) {
        throw new PersistenceError(`event store: ${this.#path} has schema version ${version}; this broker reads version ${SCHEMA_VERSION}`)
      }
      // [STORE-REPLACE-1] [STORE-KEY-1] one indexed delete per queue, keyed or not
      this.#db.exec('CREATE INDEX IF NOT EXISTS events_queue ON events (service, event, recipient, rkey, position)')
    })()
  }

  #load (): void {
    const db = this.#db
    const head = db.prepare(`SELECT value FROM meta WHERE key = 'head'`).pluck().get() as number
    const maxPosition = (db.prepare('SELECT MAX(position) FROM events').pluck().get() as number | null) ?? 0
    this.#head = Math.max(head, maxPosition)
    this.#recentFloor = this.#head
    for (const [service, instance, last] of db.prepare('SELECT service, instance, last_seq FROM dedup').raw(true).iterate() as IterableIterator<[string, string, number]>) {
      this.#seqs.set(seqKey(service, instance), last)
    }
    for (const [service, instance, key, seq] of db.prepare('SELECT service, instance, key, seq FROM dedup_keys ORDER BY service, instance, seq').raw(true).iterate() as IterableIterator<[string, string, string, number]>) {
      const sk = seqKey(service, instance)
      let keys = this.#keys.get(sk)
      if (keys === undefined) this.#keys.set(sk, keys = new Map<string, number>())
      keys.set(key, seq)
    }
    // [STORE-REPLACE-2] a replacing queue holds one row after every commit: a null row is its stored instance
    const nullHeads = db.prepare(`SELECT service, event, recipient FROM events WHERE category = ${CATEGORY_CODE.replacing} AND rkey = '' AND (flags & ${FLAG_NULL}) <> 0`).raw(true)
    for (const [service, event, recipient] of nullHeads.iterate() as IterableIterator<[string, string, string]>) {
      this.#nullHeads.add(queueKey(service, event, recipient, ''))
    }
    const counts = db.prepare('SELECT service, event, recipient, rkey, COUNT(*) FROM events GROUP BY service, event, recipient, rkey').raw(true)
    for (const [service, event, recipient, rkey, n] of counts.iterate() as IterableIterator<[string, string, string, string, number]>) {
      this.#counts.set(queueKey(service, event, recipient, rkey), n)
      this.#count += n
    }
    this.#loadKeyTable()
  }

  /** [STORE-KEY-3] The key table from the file: the stored keys per (service, event), oldest first. */
  #loadKeyTable (): void {
    this.#keyTable.clear()
    const rows = this.#db.prepare(`SELECT service, event, rkey, flags FROM events WHERE rkey <> '' ORDER BY position`).raw(true)
    for (const [service, event, rkey, flags] of rows.iterate() as IterableIterator<[string, string, string, number]>) {
      this.#keyTable.set(KeyTable.queueOf(service, event), rkey, (flags & FLAG_NULL) !== 0)
    }
  }

  /** [STORE-KEY-3] Keys stored per keyed event name (for metrics). */
  keysByEvent (): Map<string, number> {
    return this.#keyTable.perEvent()
  }

  #checkOpen (): void {
    if (this.#closed) throw new ClosedError('event store is closed')
  }
}
