/**
 * The EventStore on PostgreSQL ([STORE-*], [PG-*], [CLUSTER-*] in docs/protocol.md), which several
 * brokers can share. Schema and migrations: postgres-schema.ts.
 *
 * Positions ([PG-POS-1]). Every writing transaction (a group commit, a purge chunk) first locks the
 * `head` row of herald_meta (SELECT ... FOR UPDATE) and holds it to its COMMIT. Positions are taken
 * from that row, so a transaction's positions are all above those of every transaction committed
 * before it, and below those of every transaction that commits after it: position order is commit
 * order, across brokers. A reader therefore never sees a position while a lower one is still to
 * commit, and `position > after` never skips a late commit. (A PostgreSQL sequence would not give
 * that: sequence values are taken before the commit and commit out of order.) The cost: the writing
 * transactions of all brokers run one at a time; each broker's group commit takes whatever arrived
 * meanwhile, so the batches grow with the load.
 *
 * A subscription sees the events of all services in position order, which is the order in which
 * their transactions committed; within one (service, instance), seq order ([CLUSTER-ORDER-1]).
 *
 * Group commit ([STORE-ACK-1], [PG-ACK-1]): appends queue; one transaction at a time writes every
 * queued batch (dedup, insert, push-out or replace, dedup record) and commits with
 * `synchronous_commit = on` (set on the connection), then resolves each call in order. Batches that
 * arrive during a commit go into the next one. A failed transaction rejects its appends (no ACK); the
 * dedup record is in the same transaction, so the services' resends are judged against the database.
 *
 * The feed ([CLUSTER-FEED-1]): each commit NOTIFYs the channel with its new head (a doorbell: it
 * carries no event). The store LISTENs, and reads every position it has not told yet, in order, from
 * the table; its own commits are told from memory when nothing else committed in between. A poll of
 * the head every `pollMs` catches a doorbell lost while the listening connection was down.
 */
import pg from 'pg'
import { CATEGORY_CODE, Category, ClosedError, ConfigError, ErrorCode, PersistenceError, RequestError, silentLogger, type Logger, type StoredEvent } from '@herald/protocol'
import { DEDUP_KEY_DEFAULTS } from './event-store.js'
import type { AppendBatch, AppendResult, CommitObserver, EventCounters, EventStore, ExpiredUnpurged, LimitsOf, QueueLimits, ReadQuery } from './event-store.js'
import { capOf, checkBatch, checkMaxDedupKeys, countFor, expiresAtOf, keyLimitRefusal, maxKeysOf, NO_RECIPIENT, recipientKeyOf, snapshotCounters, storedFrom } from './event-store-rules.js'
import { EVENT_COLUMNS as COLUMNS, FLAG_NULL, toStored, type EventRow as Row } from './event-row.js'
import { RemovalLog, type Gap, type GapQuery, type RemovalReason } from './removal-log.js'
import { migrate, PG_SCHEMA_VERSION } from './postgres-schema.js'

/** What `createPostgresEventStore` takes. */
export interface PostgresEventStoreOptions {
  /** A postgres:// connection URL. Required. */
  readonly url: string
  /** Each event name's category and limits (from the site). Required. */
  readonly limitsOf: LimitsOf
  /** Where the store logs. Default: silent. */
  readonly logger?: Logger
  /** Dedup keys remembered per (service, instance) ([STORE-DEDUP-2]). Default 10,000. */
  readonly maxDedupKeys?: number
  /** Connections for reads (delivery, feed, lastSeq), besides the writer and the listener. Default 4. */
  readonly maxReadConnections?: number
  /** How often the head is polled, in ms (a missed doorbell, /readyz). Default 1,000. */
  readonly pollMs?: number
  /** The LISTEN/NOTIFY channel: lowercase letters, digits and '_'. Default 'herald_events'. */
  readonly channel?: string
}

/** Defaults of the optional options. */
export const POSTGRES_EVENT_STORE_DEFAULTS = Object.freeze({
  logger: silentLogger,
  maxDedupKeys: DEDUP_KEY_DEFAULTS.maxDedupKeys,
  maxReadConnections: 4,
  pollMs: 1000,
  channel: 'herald_events'
})

/** Expired events deleted per transaction by purgeExpired. */
const PURGE_CHUNK = 10_000
/** Events read per step of the feed. */
const FEED_CHUNK = 1000
/** A statement that takes longer fails (ms): a hung database must not hold appends forever. */
const QUERY_TIMEOUT_MS = 30_000

interface Pending {
  readonly batch: AppendBatch
  readonly limits: readonly QueueLimits[]
  readonly resolve: (r: AppendResult) => void
  readonly reject: (err: unknown) => void
}

interface FlushOutcome {
  results: AppendResult[]
  /** The head before and after the transaction. */
  from: number
  to: number
  /** Rows per queue after the transaction, for the queues it touched. */
  queues: Map<string, number>
  counted: Map<string, EventCounters>
  removals: Array<[service: string, event: string, recipient: string, position: number, reason: RemovalReason]>
  writtenAt: number
}

/** bigint (int8) columns as numbers: positions, seqs and times stay far below 2^53. */
const TYPES = {
  getTypeParser: (oid: number, format?: 'text' | 'binary'): ((v: string) => unknown) => {
    if (oid === 20) return (v: string) => Number(v)
    return pg.types.getTypeParser(oid, format) as (v: string) => unknown
  }
}

/** Key of a queue: (service, event, recipient, replacing key), the key '' for unkeyed events ([STORE-KEY-1]). */
function queueKey (service: string, event: string, recipient: string, rkey: string): string {
  return `${service}\u0000${event}\u0000${recipient}\u0000${rkey}`
}

/**
 * [STORE-KEY-3] What one flush knows of the keys of one keyed (service, event), read under the head
 * lock: the key count (herald_keys), and, in position order, the stored instances of the flush's
 * keys and the oldest null instances (2 per event of the flush, plus one: more than the flush can
 * touch or evict, so the first null here is always the oldest null key of the whole table).
 */
class FlushKeys {
  readonly keys = new Map<string, boolean>()
  count: number
  readonly before: number

  constructor (count: number) {
    this.count = this.before = count
  }

  set (key: string, isNull: boolean): void {
    if (!this.keys.delete(key)) this.count++
    this.keys.set(key, isNull)
  }

  delete (key: string): void {
    if (this.keys.delete(key)) this.count--
  }

  oldestNull (): string | undefined {
    for (const [key, isNull] of this.keys) if (isNull) return key
    return undefined
  }
}

function seqKey (service: string, instance: string): string {
  return `${service}\u0000${instance}`
}

function checkOptions (options: PostgresEventStoreOptions): Required<PostgresEventStoreOptions> {
  const where = 'PostgresEventStore'
  if (options === null || typeof options !== 'object') throw new ConfigError(`${where}: options must be an object`)
  for (const k of Object.keys(options)) {
    if (!['url', 'limitsOf', 'logger', 'maxDedupKeys', 'maxReadConnections', 'pollMs', 'channel'].includes(k)) throw new ConfigError(`${where}: unknown option "${k}"`)
  }
  if (typeof options.url !== 'string' || !/^postgres(ql)?:\/\//.test(options.url)) throw new ConfigError(`${where}: option "url" must be a postgres:// URL`)
  if (typeof options.limitsOf !== 'function') throw new ConfigError(`${where}: option "limitsOf" must be a function`)
  const logger = options.logger ?? POSTGRES_EVENT_STORE_DEFAULTS.logger
  if (typeof logger !== 'object' || logger === null || typeof logger.error !== 'function') throw new ConfigError(`${where}: option "logger" must be a pino-compatible logger`)
  const maxReadConnections = options.maxReadConnections ?? POSTGRES_EVENT_STORE_DEFAULTS.maxReadConnections
  if (!Number.isSafeInteger(maxReadConnections) || maxReadConnections < 1 || maxReadConnections > 100) throw new ConfigError(`${where}: option "maxReadConnections" must be a whole number from 1 to 100, got ${String(maxReadConnections)}`)
  const pollMs = options.pollMs ?? POSTGRES_EVENT_STORE_DEFAULTS.pollMs
  if (!Number.isSafeInteger(pollMs) || pollMs < 10 || pollMs > 60_000) throw new ConfigError(`${where}: option "pollMs" must be a whole number of ms from 10 to 60000, got ${String(pollMs)}`)
  const channel = options.channel ?? POSTGRES_EVENT_STORE_DEFAULTS.channel
  if (typeof channel !== 'string' || !/^[a-z_][a-z0-9_]{0,62}$/.test(channel)) throw new ConfigError(`${where}: option "channel" must be 1 to 63 lowercase letters, digits or '_', got ${String(channel)}`)
  return { url: options.url, limitsOf: options.limitsOf, logger, maxDedupKeys: checkMaxDedupKeys(where, options.maxDedupKeys), maxReadConnections, pollMs, channel }
}

/** The URL without its password, for logs and errors. */
function redact (url: string): string {
  try {
    const u = new URL(url)
    if (u.password !== '') u.password = '***'
    return u.toString()
  } catch {
    return 'postgres://(unparsable)'
  }
}

/**
 * Connects, applies the migrations ([PG-SCHEMA-1]) and loads the queue counts. Rejects with a
 * PersistenceError when the database is unreachable or its schema is newer ([PG-SCHEMA-2]).
 */
export async function createPostgresEventStore (options: PostgresEventStoreOptions): Promise<PostgresEventStore> {
  const opts = checkOptions(options)
  const where = redact(opts.url)
  const client = new pg.Client(clientConfig(opts.url))
  client.on('error', () => {}) // a connection lost while idle is found at its next query
  try {
    await client.connect()
    const { from, to } = await migrate(client, where)
    if (from !== to) opts.logger.info({ url: where, from, to }, 'event store schema migrated')
    const store = new PostgresEventStore(client, opts, where)
    await store.load()
    return store
  } catch (err) {
    await client.end().catch(() => {})
    if (err instanceof PersistenceError || err instanceof ConfigError) throw err
    throw new PersistenceError(`event store: cannot open ${where}: ${(err as Error).message}`, { cause: err })
  }
}

function clientConfig (url: string): pg.ClientConfig {
  // [PG-ACK-1] every commit waits for the WAL flush (and for a synchronous standby, if configured)
  return { connectionString: url, types: TYPES, query_timeout: QUERY_TIMEOUT_MS, connectionTimeoutMillis: 5000, options: '-c synchronous_commit=on' }
}

/** The PostgreSQL EventStore; made by `createPostgresEventStore`. */
export class PostgresEventStore implements EventStore {
  readonly #opts: Required<PostgresEventStoreOptions>
  readonly #where: string
  readonly #limitsOf: LimitsOf
  readonly #logger: Logger
  /** The connection that runs the group commits; null after it broke (a new one at the next flush). */
  #writer: pg.Client | null
  readonly #pool: pg.Pool
  #listener: pg.Client | null = null
  #listenTimer: NodeJS.Timeout | null = null
  readonly #poll: NodeJS.Timeout
  #polls = 0
  /** Rows per queue (service, event, recipient), as of the last transaction or poll that saw it. */
  readonly #counts = new Map<string, number>()
  #count = 0
  readonly #counters = new Map<string, EventCounters>()
  readonly #removals = new RemovalLog()
  /** The highest position this store knows committed (own commits, doorbells, polls). */
  #head = 0
  /** The highest position told to the onCommitted listener. */
  #emitted = 0
  #feed: Promise<void> = Promise.resolve()
  #feedListener: ((events: readonly StoredEvent[]) => void) | null = null
  #pending: Pending[] = []
  #flushing: Promise<void> | null = null
  #timer: NodeJS.Immediate | null = null
  #closed = false
  #commitFailure: string | null = null
  #pollFailure: string | null = null
  #commitObserver: CommitObserver | null = null

  /** [CLUSTER-INGEST-1] appends may leave the numbering to the store. */
  readonly assignsSeqs = true

  /** Use `createPostgresEventStore`; takes ownership of `writer`. */
  constructor (writer: pg.Client, opts: Required<PostgresEventStoreOptions>, where: string) {
    this.#opts = opts
    this.#where = where
    this.#limitsOf = opts.limitsOf
    this.#logger = opts.logger
    this.#writer = writer
    this.#pool = new pg.Pool({ ...clientConfig(opts.url), max: opts.maxReadConnections })
    this.#pool.on('error', (err) => { this.#logger.warn({ err }, 'event store: an idle PostgreSQL connection failed') })
    this.#poll = setInterval(() => { this.#pollHead() }, opts.pollMs)
    this.#poll.unref()
  }

  /** Loads the head and the queue counts, and starts listening. Called once by the factory. */
  async load (): Promise<void> {
    const head = await this.#pool.query<{ value: number }>("SELECT value FROM herald_meta WHERE key = 'head'")
    this.#head = this.#emitted = head.rows[0]?.value ?? 0
    await this.#loadCounts()
    await this.#listen()
    this.#logger.info({ url: this.#where, schema: PG_SCHEMA_VERSION, head: this.#head, events: this.#count }, 'event store opened')
  }

  async append (batch: AppendBatch): Promise<AppendResult> {
    this.#checkOpen()
    const limits = checkBatch(batch, this.#limitsOf)
    return await new Promise<AppendResult>((resolve, reject) => {
      this.#pending.push({ batch, limits, resolve, reject })
      if (this.#flushing === null) this.#timer ??= setImmediate(() => { this.#startFlush() })
    })
  }

  /** [PG-ASYNC-1] The dedup record, read from the database (another broker may have moved it). */
  lastSeq (serviceId: string, instance: string): Promise<number> {
    this.#checkOpen()
    return this.#pool.query<{ last_seq: number }>('SELECT last_seq FROM herald_dedup WHERE service = $1 AND instance = $2', [serviceId, instance])
      .then((r) => r.rows[0]?.last_seq ?? 0, (err: unknown) => { throw this.#failure('reading the dedup record', err) })
  }

  head (): number {
    this.#checkOpen()
    return this.#head
  }

  async freshHead (): Promise<number> {
    this.#checkOpen()
    try {
      const r = await this.#pool.query<{ value: number }>("SELECT value FROM herald_meta WHERE key = 'head'")
      const h = r.rows[0]?.value ?? 0
      this.#learnHead(h)
      return h
    } catch (err) {
      throw this.#failure('reading the head', err)
    }
  }

  onCommitted (listener: (events: readonly StoredEvent[]) => void): void {
    this.#feedListener = listener
  }

  async read (query: ReadQuery): Promise<StoredEvent[]> {
    this.#checkOpen()
    const recipient = recipientKeyOf(query, this.#limitsOf)
    if (query.limit === 0 || query.services?.size === 0 || query.keys?.size === 0) return []
    const args: unknown[] = [query.event, recipient, query.after, query.now, query.limit]
    let services = ''
    if (query.services !== null) {
      args.push([...query.services])
      services = `AND service = ANY($${args.length}::text[])`
    }
    if (query.keys != null) {
      // [CLI-KEY-1]
      args.push([...query.keys])
      services += ` AND rkey = ANY($${args.length}::text[])`
    }
    const inner = `SELECT ${COLUMNS} FROM herald_events WHERE event = $1 AND recipient = $2 AND position > $3
      AND (expires_at IS NULL OR expires_at > $4) ${services} ORDER BY position LIMIT $5`
    // bounded by bytes in the database: rows up to the one that reaches maxBytes, no more
    const text = query.maxBytes === undefined
      ? inner
      : `SELECT ${COLUMNS} FROM (SELECT *, sum(octet_length(payload)) OVER (ORDER BY position) AS upto FROM (${inner}) AS i) AS w
         WHERE upto - octet_length(payload) < ${Math.max(1, Math.floor(query.maxBytes))} ORDER BY position`
    try {
      const r = await this.#pool.query<Row>({ text, values: args, rowMode: 'array' })
      return r.rows.map(toStored)
    } catch (err) {
      throw this.#failure(`reading "${query.event}"`, err)
    }
  }

  async latestPerService (query: Omit<ReadQuery, 'limit' | 'maxBytes' | 'after'>): Promise<number[]> {
    this.#checkOpen()
    const recipient = recipientKeyOf({ ...query, after: 0, limit: 0 }, this.#limitsOf)
    try {
      // [CLI-START-4] per service, and per key for a keyed event
      const r = await this.#pool.query<[string, number, string]>({
        text: `SELECT service, max(position), rkey FROM herald_events WHERE event = $1 AND recipient = $2
          AND (expires_at IS NULL OR expires_at > $3) GROUP BY service, rkey`,
        values: [query.event, recipient, query.now],
        rowMode: 'array'
      })
      return r.rows.filter(([s, , k]) => (query.services === null || query.services.has(s)) && (query.keys == null || query.keys.has(k)))
        .map(([, p]) => p).sort((a, b) => a - b)
    } catch (err) {
      throw this.#failure(`reading the latest "${query.event}"`, err)
    }
  }

  /** A binary search over positions, as in SQLite: about log2(head) lookups of the primary key. */
  async positionAt (time: number): Promise<number | null> {
    this.#checkOpen()
    try {
      const rowAt = async (p: number): Promise<[number, number] | undefined> =>
        (await this.#pool.query<[number, number]>({ text: 'SELECT position, received_at FROM herald_events WHERE position >= $1 ORDER BY position LIMIT 1', values: [p], rowMode: 'array' })).rows[0]
      let lo = 1
      let hi = (await this.freshHead()) + 1
      while (lo < hi) {
        const mid = Math.floor((lo + hi) / 2)
        const row = await rowAt(mid)
        if (row === undefined || row[1] >= time) hi = mid
        else lo = mid + 1
      }
      const row = await rowAt(lo)
      return row === undefined ? null : row[0]
    } catch (err) {
      if (err instanceof PersistenceError) throw err
      throw this.#failure('searching a position by time', err)
    }
  }

  count (): number {
    this.#checkOpen()
    return this.#count
  }

  storedByEvent (): Map<string, number> {
    this.#checkOpen()
    const out = new Map<string, number>()
    for (const [key, n] of this.#counts) {
      if (n <= 0) continue
      const name = key.split('\u0000')[1]!
      out.set(name, (out.get(name) ?? 0) + n)
    }
    return out
  }

  /** [STORE-KEY-3] Keys stored per keyed event name, as of the last commit or count refresh (metrics). */
  keysByEvent (): Map<string, number> {
    this.#checkOpen()
    const out = new Map<string, number>()
    for (const [key, n] of this.#counts) {
      const [, name, , rkey] = key.split('\u0000')
      if (n > 0 && rkey !== '') out.set(name!, (out.get(name!) ?? 0) + 1)
    }
    return out
  }

  counters (): Record<string, EventCounters> {
    this.#checkOpen()
    return snapshotCounters(this.#counters)
  }

  /** [CLI-GAP-1] Removals this broker made (its push-outs and purges; see [CLUSTER-GAP-1]). */
  removalEpoch (event: string): number {
    return this.#removals.epochOf(event)
  }

  gap (query: GapQuery): Gap | null {
    return this.#removals.gap(query)
  }

  async expiredUnpurged (query: Omit<ReadQuery, 'limit' | 'maxBytes'>): Promise<ExpiredUnpurged | null> {
    this.#checkOpen()
    const recipient = recipientKeyOf({ ...query, limit: 0 }, this.#limitsOf)
    const args: unknown[] = [query.now, query.event, recipient, query.after]
    let services = ''
    if (query.services !== null) {
      args.push([...query.services])
      services = 'AND service = ANY($5::text[])'
    }
    try {
      const r = await this.#pool.query<[string, number, number]>({
        text: `SELECT service, count(*), max(position) FROM herald_events
          WHERE expires_at IS NOT NULL AND expires_at <= $1 AND event = $2 AND recipient = $3 AND position > $4 ${services}
          GROUP BY service ORDER BY service`,
        values: args,
        rowMode: 'array'
      })
      if (r.rows.length === 0) return null
      let count = 0
      let upTo = 0
      for (const [, n, p] of r.rows) {
        count += Number(n)
        upTo = Math.max(upTo, p)
      }
      return { count, upTo, services: r.rows.map(([s]) => s).slice(0, 100) }
    } catch (err) {
      throw this.#failure(`reading the expired "${query.event}"`, err)
    }
  }

  /** Deletes in chunks of PURGE_CHUNK, one transaction each, under the head lock ([PG-POS-1]). */
  async purgeExpired (now: number): Promise<number> {
    this.#checkOpen()
    if (typeof now !== 'number' || Number.isNaN(now)) throw new RequestError(ErrorCode.INVALID_ARGUMENT, `event store: purgeExpired needs a time, got ${now}`)
    let total = 0
    let client: pg.PoolClient
    try {
      client = await this.#pool.connect()
    } catch (err) {
      throw this.#failure('purging expired events', err)
    }
    try {
      for (;;) {
        await client.query('BEGIN')
        await client.query("SELECT value FROM herald_meta WHERE key = 'head' FOR UPDATE")
        const r = await client.query<[string, string, string, number]>({
          text: `DELETE FROM herald_events WHERE position IN (SELECT position FROM herald_events WHERE expires_at <= $1 LIMIT ${PURGE_CHUNK})
            RETURNING service, event, recipient, position, rkey`,
          values: [now],
          rowMode: 'array'
        })
        const perQueue = new Map<string, [string, string, string, string, number]>()
        for (const [s, e, rc, , rk] of r.rows as unknown as Array<[string, string, string, number, string]>) {
          const k = queueKey(s, e, rc, rk)
          const q = perQueue.get(k)
          if (q === undefined) perQueue.set(k, [s, e, rc, rk, 1])
          else q[4]++
        }
        const counts = perQueue.size === 0 ? [] : await this.#subtractQueues(client, [...perQueue.values()])
        await client.query('COMMIT')
        for (const [k, n] of counts) this.#setCount(k, n)
        this.#removals.begin()
        for (const [s, e, rc, p] of r.rows) {
          countFor(this.#counters, e, 'expired')
          this.#removals.record(s, e, rc === NO_RECIPIENT ? null : rc, p, 'expired')
        }
        this.#removals.end()
        total += r.rows.length
        if (r.rows.length < PURGE_CHUNK || this.#closed) break
      }
    } catch (err) {
      await client.query('ROLLBACK').catch(() => {})
      client.release(true)
      this.#logger.error({ err, url: this.#where }, 'event store purge failed')
      throw this.#failure('purging expired events', err)
    }
    client.release()
    if (total > 0) this.#logger.debug({ purged: total, now }, 'event store purged expired events')
    return total
  }

  problem (): string | null {
    if (this.#closed) return 'event store is closed'
    if (this.#commitFailure !== null) return this.#commitFailure
    if (this.#pollFailure !== null) return this.#pollFailure
    if (this.#listener === null) return 'event store: the LISTEN connection to PostgreSQL is down'
    return null
  }

  observeCommits (observer: CommitObserver | null): void {
    this.#commitObserver = observer
  }

  /** Commits pending appends, then releases the connections. Idempotent. */
  async close (): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    clearInterval(this.#poll)
    if (this.#listenTimer !== null) clearTimeout(this.#listenTimer)
    if (this.#timer !== null) {
      clearImmediate(this.#timer)
      this.#timer = null
    }
    while (this.#flushing !== null || this.#pending.length > 0) {
      if (this.#flushing === null) this.#startFlush()
      await this.#flushing
    }
    await this.#feed
    const listener = this.#listener
    this.#listener = null
    await listener?.end().catch(() => {})
    await this.#writer?.end().catch(() => {})
    this.#writer = null
    await this.#pool.end().catch(() => {})
    this.#logger.info({ url: this.#where, head: this.#head }, 'event store closed')
  }

  /** One group commit at a time; the next takes everything queued meanwhile. */
  #startFlush (): void {
    this.#timer = null
    if (this.#flushing !== null || this.#pending.length === 0) return
    const pending = this.#pending
    this.#pending = []
    this.#flushing = this.#flush(pending).finally(() => {
      this.#flushing = null
      if (this.#pending.length > 0) this.#startFlush()
    })
  }

  async #flush (pending: readonly Pending[]): Promise<void> {
    const startedAt = performance.now()
    let out: FlushOutcome
    let client: pg.Client | null = null
    try {
      client = await this.#writerClient()
      out = await this.#write(client, pending)
    } catch (err) {
      if (client !== null) {
        // a connection that cannot even roll back is dropped: the next flush opens a new one
        await client.query('ROLLBACK').catch(() => {
          if (this.#writer === client) this.#writer = null
          client?.end().catch(() => {})
        })
      }
      const events = pending.reduce((n, p) => n + p.batch.events.length, 0)
      this.#commitFailure = `the last commit failed: ${(err as Error).message}`
      this.#logger.error({ err, url: this.#where, appends: pending.length, events }, 'event store commit failed')
      const code = (err as { code?: unknown }).code
      const message = `event store: commit of ${pending.length} append(s) with ${events} event(s) to ${this.#where} failed` +
        `${typeof code === 'string' ? ` (${code})` : ''}: ${(err as Error).message}`
      for (const p of pending) p.reject(new PersistenceError(message, { cause: err }))
      return
    }
    if (this.#commitObserver !== null) {
      const doneAt = performance.now()
      this.#commitObserver((doneAt - startedAt) / 1000, (doneAt - out.writtenAt) / 1000)
    }
    this.#commitFailure = null
    // committed: only now do the local views change
    for (const [k, n] of out.queues) this.#setCount(k, n)
    for (const [name, c] of out.counted) {
      for (const kind of Object.keys(c) as Array<keyof EventCounters>) if (c[kind] > 0) countFor(this.#counters, name, kind, c[kind])
    }
    if (out.removals.length > 0) {
      this.#removals.begin()
      for (const [s, e, rc, p, reason] of out.removals) this.#removals.record(s, e, rc === NO_RECIPIENT ? null : rc, p, reason)
      this.#removals.end()
    }
    if (out.to > out.from) {
      // the feed tells them from memory when nothing committed between what it told and them
      const own: StoredEvent[] = []
      for (const r of out.results) for (const e of r.stored) own.push(e)
      if (out.to > this.#head) this.#head = out.to
      this.#advance(out.to, { from: out.from, events: own })
    }
    for (let i = 0; i < pending.length; i++) pending[i]!.resolve(out.results[i]!)
  }

  async #writerClient (): Promise<pg.Client> {
    if (this.#writer !== null) return this.#writer
    const c = new pg.Client(clientConfig(this.#opts.url))
    c.on('error', () => { if (this.#writer === c) this.#writer = null })
    try {
      await c.connect()
    } catch (err) {
      await c.end().catch(() => {})
      throw err
    }
    this.#writer = c
    return c
  }

  /**
   * One transaction: the whole group commit ([PG-TXN-1]), in two round trips: the reads (BEGIN,
   * the head lock, the dedup records locked, known keys, null heads), then every write and COMMIT.
   * Both are simple-protocol statement lists with the values as escaped literals (numbers checked
   * by checkBatch, strings through escapeLiteral, payloads as bytea hex), so a flush costs two
   * round trips whatever it holds. Changes nothing in memory.
   */
  async #write (client: pg.Client, pending: readonly Pending[]): Promise<FlushOutcome> {
    const lit = (v: string): string => client.escapeLiteral(v)
    const int = (n: number): string => {
      if (!Number.isSafeInteger(n)) throw new RequestError(ErrorCode.INVALID_ARGUMENT, `event store: ${n} is not a whole number`)
      return String(n)
    }
    // what the flush must know from the database: dedup records (locked), known keys, null heads
    const inst = new Map<string, [string, string]>()
    const keyed = new Map<string, [string, string, string]>()
    const replacing = new Map<string, [string, string, string]>()
    // [STORE-KEY-3] keyed (service, event) pairs with their number of events, and the keys of the flush
    const keyPairs = new Map<string, { service: string, event: string, events: number }>()
    const rkeys = new Map<string, [string, string, string]>()
    for (const { batch, limits } of pending) {
      inst.set(seqKey(batch.serviceId, batch.instance), [batch.serviceId, batch.instance])
      for (let i = 0; i < batch.events.length; i++) {
        const e = batch.events[i]!
        if (e.dedupKey !== undefined) keyed.set(`${seqKey(batch.serviceId, batch.instance)}\u0000${e.dedupKey}`, [batch.serviceId, batch.instance, e.dedupKey])
        if (e.key !== undefined) {
          const pk = seqKey(batch.serviceId, e.name)
          const kp = keyPairs.get(pk)
          if (kp === undefined) keyPairs.set(pk, { service: batch.serviceId, event: e.name, events: 1 })
          else kp.events++
          rkeys.set(`${pk}\u0000${e.key}`, [batch.serviceId, e.name, e.key])
        } else if (limits[i]!.category === Category.replacing) {
          const rc = e.recipient ?? NO_RECIPIENT
          replacing.set(queueKey(batch.serviceId, e.name, rc, ''), [batch.serviceId, e.name, rc])
        }
      }
    }
    const tuples = (rows: Iterable<readonly string[]>): string => [...rows].map((r) => `(${r.map(lit).join(', ')})`).join(', ')
    // [PG-POS-1] the commit-order lock first, so no deadlock between writers;
    // [CLUSTER-DEDUP-1] then the dedup records, FOR UPDATE: the database's, not a broker's memory
    const reads = ['BEGIN', "SELECT value FROM herald_meta WHERE key = 'head' FOR UPDATE",
      `SELECT service, instance, last_seq FROM herald_dedup WHERE (service, instance) IN (VALUES ${tuples(inst.values())}) FOR UPDATE`]
    if (keyed.size > 0) reads.push(`SELECT service, instance, key FROM herald_dedup_keys WHERE (service, instance, key) IN (VALUES ${tuples(keyed.values())})`)
    if (replacing.size > 0) {
      reads.push(`SELECT service, event, recipient FROM herald_events WHERE category = ${CATEGORY_CODE.replacing} AND (flags & ${FLAG_NULL}) <> 0
        AND rkey = '' AND (service, event, recipient) IN (VALUES ${tuples(replacing.values())})`)
    }
    if (keyPairs.size > 0) {
      // [STORE-KEY-1..3] read after the head lock: no other broker changes these keys until COMMIT
      const pairs = [...keyPairs.values()]
      reads.push(`SELECT service, event, count FROM herald_keys WHERE (service, event) IN (VALUES ${tuples(pairs.map((p) => [p.service, p.event]))})`,
        `SELECT service, event, rkey, flags, position FROM herald_events WHERE recipient = '' AND rkey <> ''
          AND (service, event, rkey) IN (VALUES ${tuples(rkeys.values())})`,
        `SELECT n.service, n.event, n.rkey, n.flags, n.position FROM (VALUES ${pairs.map((p) => `(${lit(p.service)}, ${lit(p.event)}, ${2 * p.events + 1})`).join(', ')}) AS p(s, e, lim)
          CROSS JOIN LATERAL (SELECT service, event, rkey, flags, position FROM herald_events
            WHERE service = p.s AND event = p.e AND rkey <> '' AND (flags & ${FLAG_NULL}) <> 0 ORDER BY position LIMIT p.lim) AS n`)
    }
    const rr = await client.query({ text: reads.join(';\n'), rowMode: 'array' }) as unknown as Array<pg.QueryResult<unknown[]>>
    const from = Number(rr[1]!.rows[0]![0])
    const seqs = new Map<string, { service: string, instance: string, last: number, before: number }>()
    const known = new Map<string, number>()
    for (const [s, i, l] of rr[2]!.rows as Array<[string, string, number]>) known.set(seqKey(s, i), l)
    for (const [k, [s, i]] of inst) seqs.set(k, { service: s, instance: i, last: known.get(k) ?? 0, before: known.get(k) ?? -1 })
    let next = 3
    const knownKeys = new Set<string>()
    if (keyed.size > 0) for (const [s, i, k] of rr[next++]!.rows as Array<[string, string, string]>) knownKeys.add(`${seqKey(s, i)}\u0000${k}`)
    const nulls = new Map<string, boolean>()
    if (replacing.size > 0) for (const [s, e, rc] of rr[next++]!.rows as Array<[string, string, string]>) nulls.set(queueKey(s, e, rc, ''), true)
    const keyState = new Map<string, FlushKeys>()
    if (keyPairs.size > 0) {
      const counts = new Map<string, number>()
      for (const [s, e, n] of rr[next++]!.rows as Array<[string, string, number]>) counts.set(seqKey(s, e), n)
      for (const pk of keyPairs.keys()) keyState.set(pk, new FlushKeys(counts.get(pk) ?? 0))
      const rows = new Map<number, [string, string, string, number]>()
      for (const r of [...rr[next]!.rows, ...rr[next + 1]!.rows] as Array<[string, string, string, number, number]>) rows.set(r[4], [r[0], r[1], r[2], r[3]])
      // in position order: the order of their last store, as in the KeyTable of the SQLite store
      for (const [, [s, e, k, flags]] of [...rows].sort((a, b) => a[0] - b[0])) keyState.get(seqKey(s, e))!.keys.set(k, (flags & FLAG_NULL) !== 0)
    }

    // the same judgement as the SQLite store's #write, row by row
    const values: string[] = []
    const queues = new Map<string, { service: string, event: string, recipient: string, rkey: string, cap: number, added: number, replacing: boolean }>()
    const counted = new Map<string, EventCounters>()
    const addedKeys: string[] = []
    const keyTouched = new Map<string, [string, string]>()
    const flushKeys = new Set<string>()
    const results: AppendResult[] = []
    let position = from
    let now = -Infinity
    for (const { batch, limits } of pending) {
      const { serviceId, instance, receivedAt } = batch
      const sk = seqKey(serviceId, instance)
      const sd = seqs.get(sk)!
      if (receivedAt > now) now = receivedAt
      let last = sd.last
      const stored: StoredEvent[] = []
      let duplicates = 0
      let expired = 0
      let nullsDropped = 0
      const refused: Array<{ seq: number, code: string, message: string }> = []
      // [CLUSTER-INGEST-1] numbered here, under the lock of the dedup record
      const assign = batch.assignSeqs === true
      for (let i = 0; i < batch.events.length; i++) {
        const given = batch.events[i]!
        const e = assign ? { ...given, seq: last + 1 } : given
        if (e.seq <= last) { duplicates++; continue } // [STORE-DEDUP-1]
        last = e.seq
        if (e.dedupKey !== undefined) {
          // [STORE-DEDUP-2]
          const kk = `${sk}\u0000${e.dedupKey}`
          if (flushKeys.has(kk) || knownKeys.has(kk)) { duplicates++; continue }
          flushKeys.add(kk)
          addedKeys.push(`(${lit(serviceId)}, ${lit(instance)}, ${lit(e.dedupKey)}, ${int(e.seq)})`)
          keyTouched.set(sk, [serviceId, instance])
        }
        const lim = limits[i]!
        const expiresAt = expiresAtOf(lim, receivedAt, e.age)
        if (expiresAt !== null && expiresAt <= receivedAt) {
          expired++ // [STORE-EXPIRE-2]
          countFor(counted, e.name, 'expiredOnArrival')
          continue
        }
        const recipient = e.recipient ?? NO_RECIPIENT
        const rkey = e.key ?? ''
        const qk = queueKey(serviceId, e.name, recipient, rkey)
        if (e.key !== undefined) {
          // [STORE-KEY-1..3] the same judgement as the SQLite store's, on the keys read under the head lock
          const kp = keyState.get(seqKey(serviceId, e.name))!
          if (!kp.keys.has(e.key)) {
            if (e.isNull) { // [STORE-KEY-2] nothing stored for the key: nothing to clear
              nullsDropped++
              countFor(counted, e.name, 'nullsDropped')
              continue
            }
            const max = maxKeysOf(lim)
            if (kp.count >= max) {
              const victim = kp.oldestNull()
              if (victim === undefined) {
                refused.push(keyLimitRefusal(e, serviceId, max))
                continue
              }
              // the oldest null key makes room: its queue is emptied by the push-out below
              const vq = queues.get(queueKey(serviceId, e.name, NO_RECIPIENT, victim))
              if (vq === undefined) queues.set(queueKey(serviceId, e.name, NO_RECIPIENT, victim), { service: serviceId, event: e.name, recipient: NO_RECIPIENT, rkey: victim, cap: 0, added: 0, replacing: true })
              else vq.cap = 0
              kp.delete(victim)
            }
          } else if (e.isNull && kp.keys.get(e.key) === true) { // [STORE-REPLACE-2] per key
            nullsDropped++
            countFor(counted, e.name, 'nullsDropped')
            continue
          }
          kp.set(e.key, e.isNull)
        } else if (e.category === Category.replacing) {
          if (e.isNull && nulls.get(qk) === true) { // [STORE-REPLACE-2]
            nullsDropped++
            countFor(counted, e.name, 'nullsDropped')
            continue
          }
          nulls.set(qk, e.isNull)
        }
        position++ // [STORE-POS-1] [PG-POS-1]
        const hex = Buffer.from(e.payload.buffer, e.payload.byteOffset, e.payload.byteLength).toString('hex')
        values.push(`(${position}, ${lit(serviceId)}, ${lit(instance)}, ${int(e.seq)}, ${lit(e.name)}, ${CATEGORY_CODE[e.category]}, ${lit(recipient)}, ` +
          `${int(e.raisedAt)}, ${int(receivedAt)}, ${expiresAt === null ? 'NULL' : int(expiresAt)}, ${e.isNull ? FLAG_NULL : 0}, ${int(e.payloadKind)}, '\\x${hex}', ${int(e.age ?? 0)}, ${lit(rkey)})`)
        const q = queues.get(qk)
        if (q === undefined) queues.set(qk, { service: serviceId, event: e.name, recipient, rkey, cap: capOf(lim), added: 1, replacing: e.category === Category.replacing })
        else {
          q.added++
          q.cap = capOf(lim) // a key evicted earlier in this flush and stored again keeps this one
        }
        stored.push(storedFrom(e, e.payload, { position, serviceId, instance, receivedAt, expiresAt }))
      }
      sd.last = assign ? last : Math.max(last, batch.handledUpTo)
      results.push({ stored, duplicates, lastSeq: sd.last, expired, nullsDropped, refused })
    }

    const writes: string[] = []
    let deleted = -1
    let trimmed = -1
    if (position > from) {
      writes.push(`INSERT INTO herald_events (${COLUMNS}) VALUES ${values.join(', ')}`)
      const ql = [...queues.values()]
      writes.push(`INSERT INTO herald_queues (service, event, recipient, rkey, count) VALUES ${ql.map((q) => `(${lit(q.service)}, ${lit(q.event)}, ${lit(q.recipient)}, ${lit(q.rkey)}, ${q.added})`).join(', ')}
        ON CONFLICT (service, event, recipient, rkey) DO UPDATE SET count = herald_queues.count + excluded.count`)
      // [STORE-REPLACE-1] [STORE-QUEUE-1] [STORE-KEY-3] the oldest beyond each cap go (all of an evicted key's), then the counts follow
      const caps = `(VALUES ${ql.map((q) => `(${lit(q.service)}, ${lit(q.event)}, ${lit(q.recipient)}, ${lit(q.rkey)}, ${q.cap})`).join(', ')}) AS c(s, e, r, k, cap)`
      const match = 'q.service = c.s AND q.event = c.e AND q.recipient = c.r AND q.rkey = c.k'
      deleted = writes.length
      writes.push(`DELETE FROM herald_events WHERE position IN (
          SELECT x.position FROM herald_queues q JOIN ${caps} ON ${match} AND q.count > c.cap
          CROSS JOIN LATERAL (SELECT position FROM herald_events WHERE service = q.service AND event = q.event AND recipient = q.recipient AND rkey = q.rkey
            ORDER BY position LIMIT q.count - c.cap) AS x)
        RETURNING position, service, event, recipient, expires_at, rkey`)
      trimmed = writes.length
      writes.push(`UPDATE herald_queues AS q SET count = least(q.count, c.cap) FROM ${caps}
        WHERE ${match} RETURNING q.service, q.event, q.recipient, q.rkey, q.count`)
      // an evicted key's queue row goes with it: herald_queues holds no more keys than maxKeys
      if (ql.some((q) => q.cap === 0)) writes.push(`DELETE FROM herald_queues AS q USING ${caps} WHERE ${match} AND c.cap = 0 AND q.count = 0`)
    }
    const keyDeltas = [...keyPairs].map(([pk, p]) => ({ ...p, delta: keyState.get(pk)!.count - keyState.get(pk)!.before })).filter((p) => p.delta !== 0)
    if (keyDeltas.length > 0) {
      writes.push(`INSERT INTO herald_keys (service, event, count) VALUES ${keyDeltas.map((p) => `(${lit(p.service)}, ${lit(p.event)}, ${p.delta})`).join(', ')}
        ON CONFLICT (service, event) DO UPDATE SET count = herald_keys.count + excluded.count`)
    }
    const changed = [...seqs.values()].filter((x) => x.last !== x.before)
    if (changed.length > 0) {
      writes.push(`INSERT INTO herald_dedup (service, instance, last_seq) VALUES ${changed.map((x) => `(${lit(x.service)}, ${lit(x.instance)}, ${int(x.last)})`).join(', ')}
        ON CONFLICT (service, instance) DO UPDATE SET last_seq = excluded.last_seq`)
    }
    if (addedKeys.length > 0) {
      writes.push(`INSERT INTO herald_dedup_keys (service, instance, key, seq) VALUES ${addedKeys.join(', ')}
        ON CONFLICT (service, instance, key) DO UPDATE SET seq = excluded.seq`)
      // beyond maxDedupKeys per (service, instance), the oldest (lowest seqs) go
      writes.push(`DELETE FROM herald_dedup_keys d USING (VALUES ${tuples(keyTouched.values())}) AS t(s, i)
        WHERE d.service = t.s AND d.instance = t.i AND d.seq <= (
          SELECT seq FROM herald_dedup_keys WHERE service = t.s AND instance = t.i ORDER BY seq DESC OFFSET ${this.#opts.maxDedupKeys} LIMIT 1)`)
    }
    // [CLUSTER-FEED-1] the doorbell rings at COMMIT, with the new head only
    if (position > from) writes.push(`UPDATE herald_meta SET value = ${position} WHERE key = 'head'`, `NOTIFY ${this.#opts.channel}, '${position}'`)
    const writtenAt = performance.now()
    writes.push('COMMIT')
    const wr = await client.query({ text: writes.join(';\n'), rowMode: 'array' }) as unknown as pg.QueryResult<unknown[]> | Array<pg.QueryResult<unknown[]>>
    const wl = Array.isArray(wr) ? wr : [wr]

    const counts = new Map<string, number>()
    const removals: FlushOutcome['removals'] = []
    if (deleted >= 0) {
      for (const [p, s, e, rc, expiresAt, rk] of wl[deleted]!.rows as Array<[number, string, string, string, number | null, string]>) {
        const q = queues.get(queueKey(s, e, rc, rk))!
        const kind = expiresAt !== null && expiresAt <= now ? 'expired' : q.replacing ? 'replaced' : 'pushedOut'
        countFor(counted, e, kind)
        if (kind !== 'replaced') removals.push([s, e, rc, p, kind])
      }
      for (const [s, e, rc, rk, n] of wl[trimmed]!.rows as Array<[string, string, string, string, number]>) counts.set(queueKey(s, e, rc, rk), n)
    }
    return { results, from, to: position, queues: counts, counted, removals, writtenAt }
  }

  /** Subtracts removed rows from herald_queues; returns the counts left. */
  async #subtractQueues (client: pg.ClientBase, gone: ReadonlyArray<[string, string, string, string, number]>): Promise<Array<[string, number]>> {
    const r = await client.query<[string, string, string, string, number]>({
      text: `UPDATE herald_queues AS q SET count = q.count - g.n FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[]) AS g(s, e, r, k, n)
        WHERE q.service = g.s AND q.event = g.e AND q.recipient = g.r AND q.rkey = g.k RETURNING q.service, q.event, q.recipient, q.rkey, q.count`,
      values: [gone.map((x) => x[0]), gone.map((x) => x[1]), gone.map((x) => x[2]), gone.map((x) => x[3]), gone.map((x) => x[4])],
      rowMode: 'array'
    })
    return r.rows.map(([s, e, rc, rk, n]) => [queueKey(s, e, rc, rk), n])
  }

  #setCount (key: string, n: number): void {
    this.#count += n - (this.#counts.get(key) ?? 0)
    if (n > 0) this.#counts.set(key, n)
    else this.#counts.delete(key)
  }

  async #loadCounts (): Promise<void> {
    const r = await this.#pool.query<[string, string, string, string, number]>({ text: 'SELECT service, event, recipient, rkey, count FROM herald_queues WHERE count > 0', rowMode: 'array' })
    const seen = new Set<string>()
    for (const [s, e, rc, rk, n] of r.rows) {
      const k = queueKey(s, e, rc, rk)
      seen.add(k)
      this.#setCount(k, n)
    }
    for (const k of [...this.#counts.keys()]) if (!seen.has(k)) this.#setCount(k, 0)
  }

  #learnHead (h: number): void {
    if (h <= this.#head) return
    this.#head = h
    this.#advance(h, null)
  }

  /**
   * [CLUSTER-FEED-1] Tells the listener every position up to `to`, in order, each once: from the
   * table, except a commit's own events when nothing committed between the last told and them.
   */
  #advance (to: number, own: { from: number, events: readonly StoredEvent[] } | null): void {
    this.#feed = this.#feed.then(async () => {
      if (this.#emitted >= to) return
      if (own !== null && this.#emitted === own.from) {
        this.#emitted = to
        if (own.events.length > 0) this.#feedListener?.(own.events)
        return
      }
      while (this.#emitted < to) {
        const r = await this.#pool.query<Row>({
          text: `SELECT ${COLUMNS} FROM herald_events WHERE position > $1 AND position <= $2 ORDER BY position LIMIT ${FEED_CHUNK}`,
          values: [this.#emitted, to],
          rowMode: 'array'
        })
        const events = r.rows.map(toStored)
        // fewer than a chunk: everything up to `to` is read (deleted positions are gaps)
        this.#emitted = events.length < FEED_CHUNK ? to : events[events.length - 1]!.position
        if (events.length > 0) this.#feedListener?.(events)
      }
    }).catch((err: unknown) => {
      // told later: the next doorbell or poll reads from where the feed stopped
      this.#logger.warn({ err, emitted: this.#emitted, to }, 'event store: reading committed events for live delivery failed')
    })
  }

  /** [CLUSTER-FEED-1] LISTEN on its own connection; reconnects after a failure. */
  async #listen (): Promise<void> {
    const c = new pg.Client(clientConfig(this.#opts.url))
    const retry = (): void => {
      if (this.#listener === c) this.#listener = null
      c.end().catch(() => {})
      if (!this.#closed && this.#listenTimer === null) {
        this.#listenTimer = setTimeout(() => {
          this.#listenTimer = null
          this.#listen().catch(() => {})
        }, this.#opts.pollMs)
        this.#listenTimer.unref()
      }
    }
    c.on('error', retry)
    c.on('end', retry)
    c.on('notification', (n) => {
      const h = Number(n.payload)
      if (Number.isSafeInteger(h)) this.#learnHead(h)
    })
    try {
      await c.connect()
      await c.query(`LISTEN ${this.#opts.channel}`)
    } catch (err) {
      retry()
      throw err
    }
    if (this.#closed) {
      await c.end().catch(() => {})
      return
    }
    this.#listener = c
    this.#pollHead() // what committed while it was not listening
  }

  /** The head from the table: catches a lost doorbell; its failure shows in problem() (/readyz). */
  #pollHead (): void {
    if (this.#closed) return
    const refreshCounts = ++this.#polls % 10 === 0
    this.#pool.query<{ value: number }>("SELECT value FROM herald_meta WHERE key = 'head'").then(async (r) => {
      this.#pollFailure = null
      this.#learnHead(r.rows[0]?.value ?? 0)
      // other brokers' commits change the queues too: the counts (stats only) follow every 10 polls
      if (refreshCounts) await this.#loadCounts()
    }, (err: unknown) => {
      this.#pollFailure = `event store: PostgreSQL is unreachable: ${(err as Error).message}`
    }).catch(() => {})
  }

  #failure (what: string, err: unknown): PersistenceError {
    if (err instanceof ClosedError) return err
    return new PersistenceError(`event store: ${what} failed: ${(err as Error).message}`, { cause: err })
  }

  #checkOpen (): void {
    if (this.#closed) throw new ClosedError('event store is closed')
  }
}
