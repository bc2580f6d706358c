/**
 * Two-level service persistence ([SVC-PERSIST-*]): a bounded memory level in front of a SQLite file.
 *
 * - Level 2 (the file) is the store of record while it works: every append, acknowledgement and
 *   removal goes there, with its policy and capacity, and resolves when it is committed.
 * - Level 1 (memory) holds the OLDEST held events, a contiguous prefix of the backlog, since that is
 *   what an upload reads next. It is kept in step synchronously from level 2's commits (an observer
 *   on the flush, before any call is resolved), so it never disagrees with the file: new events join
 *   it only while it holds the whole backlog and they fit; otherwise they live in the file only, and
 *   level 1 is refilled from the file as acknowledgements and removals free room.
 * - `read` serves from level 1 as far as it can, and the rest from the file.
 *
 * When level 2 fails (a commit or a read throws PERSISTENCE_FAILED, or the file cannot be opened
 * and `openFailure` is 'memory'), the persistence switches to memory only, once and for good:
 * it reads into level 1 as many of the file-only events as fit (never dropping one already there),
 * closes the file, calls `onFailure({ error, lost })` once, and from then on keeps the backlog in
 * level 1 with level 1's capacity and the same policy (`stats().durable` is false). Calls that
 * failed with level 2, or were queued behind the failure, are retried on level 1, in order, so an
 * append still resolves (subject to the policy, like any other memory append). The instance id and
 * lastSeq carry on: seqs never go back.
 *
 * Marks ([SVC-MARK-1]) go to the file with their append, and `marks()` reads the file's committed
 * marks. Once memory-only, the marks live on in memory, starting from those the file last committed;
 * a retried append carries its marks with it.
 */
import { randomUUID } from 'node:crypto'
import { ClosedError, ConfigError, ErrorCode, PersistenceError, RequestError, eventSize, silentLogger, withDefaults, type Logger, type RaisedEvent } from '@herald/protocol'
import { EventRing, appendToRing, isBackendFailure } from './event-ring.js'
import { MarkTable, checkMarks } from './mark-table.js'
import { checkCapacityAndPolicy } from './memory-service-persistence.js'
import { OverflowPolicy } from './service-persistence.js'
import type { AppendOutcome, PersistenceStats, ServicePersistence } from './service-persistence.js'
import { SqliteSynchronous, createSqliteServicePersistence } from './sqlite-service-persistence.js'
import type { CommittedOp, SqliteServicePersistence } from './sqlite-service-persistence.js'

/** Which levels are in use. */
export const PersistenceLevel = {
  /** Memory in front of the file; the file is the store of record. */
  twoLevel: 'two-level',
  /** The file failed; events are held in memory only. */
  memoryOnly: 'memory-only'
} as const
export type PersistenceLevel = (typeof PersistenceLevel)[keyof typeof PersistenceLevel]

/** What `onFailure` is told when level 2 fails. */
export interface LevelFailure {
  /** The failure (PERSISTENCE_FAILED; its cause is the SQLite error). */
  readonly error: PersistenceError
  /**
   * Events that were only in the file and could not be read into memory: lost to this process
   * (they may still be in the file). 0 when the file could not be opened at all: its content is
   * unknown, and the file is left untouched.
   */
  readonly lost: number
}

/** What `createTwoLevelServicePersistence` takes. */
export interface TwoLevelServicePersistenceOptions {
  /** The level 2 file; created if missing (its directory must exist). Required. */
  readonly path: string
  /** Most bytes level 1 (memory) holds, by `eventSize`; the capacity once memory-only. Default 64 MiB. */
  readonly memoryCapacityBytes?: number
  /** Most bytes level 2 (the file) holds, by `eventSize`. Default 1 GiB. */
  readonly fileCapacityBytes?: number
  /** What to do when the store of record is full ([SVC-CAPACITY-1]). Default dropOldest. */
  readonly policy?: OverflowPolicy
  /** If the file cannot be opened: 'reject' (default) rejects; 'memory' starts memory-only and calls onFailure. */
  readonly openFailure?: 'reject' | 'memory'
  /** Called once, synchronously, when level 2 fails (at open: before the create call resolves). Default none. */
  readonly onFailure?: ((info: LevelFailure) => void) | null
  /** Where the levels log. Default: silent. */
  readonly logger?: Logger
  /** Level 2's `synchronous` ('FULL' default; 'NORMAL' for tests and benchmarks only). */
  readonly synchronous?: SqliteSynchronous
  /** Level 2's `maxSizeBytes` (largest file size; null default = no limit). Meant for tests. */
  readonly maxSizeBytes?: number | null
  /** Level 2's `integrityCheck` at open ('quick' default, or 'none'). */
  readonly integrityCheck?: 'quick' | 'none'
}

/** Defaults of the optional options. */
export const TWO_LEVEL_SERVICE_PERSISTENCE_DEFAULTS: Readonly<Required<Omit<TwoLevelServicePersistenceOptions, 'path'>>> = Object.freeze({
  memoryCapacityBytes: 64 * 1024 * 1024,
  fileCapacityBytes: 1024 * 1024 * 1024,
  policy: OverflowPolicy.dropOldest,
  openFailure: 'reject',
  onFailure: null,
  logger: silentLogger,
  synchronous: SqliteSynchronous.FULL,
  maxSizeBytes: null,
  integrityCheck: 'quick'
})

const COMPONENT = 'TwoLevelServicePersistence'
/** Most events read from the file per refill query. */
const REFILL_PAGE = 512
/** The smallest eventSize (an event with an empty name, payload and recipient). */
const MIN_EVENT_SIZE = 48

function checkOptions (options: TwoLevelServicePersistenceOptions): Required<TwoLevelServicePersistenceOptions> {
  if (options === null || typeof options !== 'object') throw new ConfigError(`${COMPONENT}: options must be an object`)
  const { path, ...rest } = options
  if (typeof path !== 'string' || path === '' || path === ':memory:') throw new ConfigError(`${COMPONENT}: option "path" must be a file path`)
  const o = withDefaults(COMPONENT, TWO_LEVEL_SERVICE_PERSISTENCE_DEFAULTS, rest)
  checkCapacityAndPolicy(COMPONENT, 'memoryCapacityBytes', o.memoryCapacityBytes, o.policy)
  checkCapacityAndPolicy(COMPONENT, 'fileCapacityBytes', o.fileCapacityBytes, o.policy)
  if (o.openFailure !== 'reject' && o.openFailure !== 'memory') throw new ConfigError(`${COMPONENT}: option "openFailure" must be 'reject' or 'memory', got ${String(o.openFailure)}`)
  if (o.onFailure !== null && typeof o.onFailure !== 'function') throw new ConfigError(`${COMPONENT}: option "onFailure" must be a function`)
  return { path, ...o }
}

/**
 * Opens the level 2 file at `options.path` (creating it if needed) and fills level 1 from it.
 * Rejects with a PersistenceError naming the path if the file cannot be used, unless
 * `openFailure` is 'memory'; with a ConfigError if an option is wrong.
 */
export async function createTwoLevelServicePersistence (options: TwoLevelServicePersistenceOptions): Promise<TwoLevelServicePersistence> {
  const opts = checkOptions(options)
  let file: SqliteServicePersistence | null = null
  let openError: PersistenceError | null = null
  try {
    file = await createSqliteServicePersistence({
      path: opts.path,
      capacityBytes: opts.fileCapacityBytes,
      policy: opts.policy,
      logger: opts.logger,
      synchronous: opts.synchronous,
      maxSizeBytes: opts.maxSizeBytes,
      integrityCheck: opts.integrityCheck
    })
  } catch (err) {
    if (!(err instanceof PersistenceError) || opts.openFailure === 'reject') throw err
    openError = err
  }
  return new TwoLevelServicePersistence(file, opts, openError)
}

/** Memory in front of a SQLite file; made by `createTwoLevelServicePersistence`. */
export class TwoLevelServicePersistence implements ServicePersistence {
  readonly instance: string
  readonly #opts: Required<TwoLevelServicePersistenceOptions>
  readonly #logger: Logger
  /** Level 1. */
  readonly #memory = new EventRing()
  /** Level 2, null once memory-only. */
  #file: SqliteServicePersistence | null
  /** Whether level 1 holds the whole backlog (always true once memory-only). */
  #complete: boolean
  /** lastSeq once memory-only. */
  #memoryLast = 0
  /** The marks once memory-only. */
  #memoryMarks = new MarkTable()
  #closed = false
  /** The file level after it failed (abandoned), until close() has waited for it to let go. */
  #abandonedFile: SqliteServicePersistence | null = null

  /** Use `createTwoLevelServicePersistence`. `file` null means it could not be opened (`openError`). */
  constructor (file: SqliteServicePersistence | null, opts: Required<TwoLevelServicePersistenceOptions>, openError: PersistenceError | null) {
    this.#opts = opts
    this.#logger = opts.logger
    this.#file = file
    if (file === null) {
      this.instance = randomUUID()
      this.#complete = true
      const error = openError ?? new PersistenceError(`service persistence: cannot open ${opts.path}`)
      this.#logger.error({ err: error, path: opts.path }, 'service persistence: level 2 cannot be opened; holding events in memory only')
      this.#report({ error, lost: 0 })
      return
    }
    this.instance = file.instance
    this.#complete = file.stats().count === 0
    file.observe({ committed: (ops) => { this.#mirror(ops) }, failed: (error) => { this.#fail(error) } })
    this.#refillOrFail()
  }

  /** 'two-level' while the file works, 'memory-only' after it failed. */
  level (): PersistenceLevel {
    return this.#file === null ? PersistenceLevel.memoryOnly : PersistenceLevel.twoLevel
  }

  /** What level 1 (memory) holds now: a prefix of the backlog while two-level, all of it once memory-only. */
  memoryStats (): PersistenceStats {
    return { count: this.#memory.count, bytes: this.#memory.bytes, capacityBytes: this.#opts.memoryCapacityBytes, durable: false }
  }

  lastSeq (): number {
    return this.#file?.lastSeq() ?? this.#memoryLast
  }

  async append (events: readonly RaisedEvent[], supersede: readonly number[] = [], marks?: ReadonlyMap<string, string>): Promise<AppendOutcome> {
    this.#checkOpen()
    // the marks as they are now, for a retry in memory after the caller may have changed its map
    const checked = checkMarks(marks)
    const file = this.#file
    if (file !== null) {
      try {
        return await file.append(events, supersede, checked) // level 1 follows through #mirror
      } catch (err) {
        if (!isBackendFailure(err)) throw err
        this.#fail(err)
      }
    }
    this.#checkOpen()
    const { outcome, lastSeq } = appendToRing(this.#memory, this.#memoryLast, events, supersede, this.#opts.memoryCapacityBytes, this.#opts.policy,
      this.#memoryMarks, checked)
    this.#memoryLast = lastSeq
    return outcome
  }

  /** [SVC-MARK-1] A copy of the current marks: the file's committed ones, or memory's once memory-only. */
  marks (): ReadonlyMap<string, string> {
    return this.#file?.marks() ?? this.#memoryMarks.snapshot()
  }

  async read (after: number, limit: number): Promise<RaisedEvent[]> {
    this.#checkOpen()
    if (!Number.isSafeInteger(limit) || limit < 0) throw new RequestError(ErrorCode.INVALID_ARGUMENT, `read: limit must be a whole number >= 0, got ${limit}`)
    const fromMemory = this.#memory.read(after, limit)
    const file = this.#file
    if (file === null || this.#complete || fromMemory.length >= limit) return fromMemory
    // level 1 is exhausted after `after`: the rest is in the file only
    const from = fromMemory[fromMemory.length - 1]?.seq ?? after
    try {
      return fromMemory.concat(file.readSync(from, limit - fromMemory.length))
    } catch (err) {
      if (!isBackendFailure(err)) throw err
      this.#fail(err)
      return this.#memory.read(after, limit)
    }
  }

  async acknowledge (upTo: number): Promise<void> {
    this.#checkOpen()
    const file = this.#file
    if (file !== null) {
      try {
        await file.acknowledge(upTo)
        return
      } catch (err) {
        if (!isBackendFailure(err)) throw err
        this.#fail(err)
      }
    }
    this.#checkOpen()
    this.#memory.removeUpTo(upTo)
  }

  async remove (seqs: readonly number[]): Promise<void> {
    this.#checkOpen()
    const file = this.#file
    if (file !== null) {
      try {
        await file.remove(seqs)
        return
      } catch (err) {
        if (!isBackendFailure(err)) throw err
        this.#fail(err)
      }
    }
    this.#checkOpen()
    for (const seq of seqs) this.#memory.removeSeq(seq)
  }

  /** The backlog and the capacity of the store of record (the file, or memory once memory-only). */
  stats (): PersistenceStats {
    return this.#file?.stats() ?? { count: this.#memory.count, bytes: this.#memory.bytes, capacityBytes: this.#opts.memoryCapacityBytes, durable: false }
  }

  /** Runs the file's queued operations and closes it; drops level 1. Idempotent. */
  async close (): Promise<void> {
    if (this.#closed) return
    const file = this.#file
    if (file !== null) await file.close()
    // an abandoned file's checkpointer worker may still be letting go of it
    await this.#abandonedFile?.close()
    this.#closed = true
    file?.observe(null)
    this.#memory.clear()
    this.#memoryMarks.clear()
  }

  #checkOpen (): void {
    if (this.#closed) throw new ClosedError(`${COMPONENT} is closed`)
  }

  /** Applies a committed flush of the file to level 1, then refills it. Runs inside the file's flush. */
  #mirror (ops: readonly CommittedOp[]): void {
    if (this.#file === null) return
    const memory = this.#memory
    const capacity = this.#opts.memoryCapacityBytes
    for (const op of ops) {
      switch (op.kind) {
        case 'append':
          for (const seq of op.superseded) memory.removeSeq(seq)
          for (const e of op.dropped) memory.removeSeq(e.seq)
          for (const e of op.events) {
            if (!this.#complete) break
            if (memory.bytes + eventSize(e) <= capacity) memory.push(e)
            else this.#complete = false // from here on the backlog continues in the file only
          }
          break
        case 'ack':
          memory.removeUpTo(op.upTo)
          break
        case 'remove':
          for (const seq of op.seqs) memory.removeSeq(seq)
          break
      }
    }
    this.#refillOrFail()
  }

  #refillOrFail (): void {
    try {
      this.#refill()
    } catch (err) {
      if (!isBackendFailure(err)) throw err
      this.#fail(err)
    }
  }

  /** Moves the oldest file-only events into level 1 while they fit; throws the file's read errors. */
  #refill (): void {
    const file = this.#file
    if (file === null) return
    const memory = this.#memory
    const capacity = this.#opts.memoryCapacityBytes
    while (!this.#complete) {
      // no more events than could possibly fit
      const limit = Math.min(REFILL_PAGE, Math.floor((capacity - memory.bytes) / MIN_EVENT_SIZE))
      if (limit <= 0) return
      const page = file.readSync(memory.lastSeq() ?? 0, limit)
      for (const e of page) {
        if (memory.bytes + eventSize(e) > capacity) return
        memory.push(e)
      }
      if (page.length < limit) this.#complete = true
    }
  }

  /** Switches to memory only, once: keeps level 1, reads in what fits, reports what is lost. */
  #fail (error: PersistenceError): void {
    const file = this.#file
    if (file === null) return
    let lost = 0
    if (!this.#complete) {
      try {
        this.#refill()
      } catch (err) {
        this.#logger.warn({ err, path: file.path }, 'service persistence: cannot read level 2 into memory')
      }
      if (!this.#complete) lost = Math.max(0, file.stats().count - this.#memory.count)
    }
    this.#memoryLast = file.lastSeq()
    this.#memoryMarks = new MarkTable(file.marks())
    this.#file = null
    this.#abandonedFile = file
    this.#complete = true
    file.observe(null)
    file.abandon(error)
    this.#logger.error({ err: error, path: file.path, lost, held: this.#memory.count },
      'service persistence: level 2 failed; holding events in memory only')
    this.#report({ error, lost })
  }

  readonly #failureListeners: Array<(info: LevelFailure) => void> = []
  #failure: LevelFailure | null = null

  /** [SVC-PERSIST-FAIL-1] Adds a listener for the failure of level 2; called at once if it already failed. */
  onLevelFailure (listener: (info: LevelFailure) => void): void {
    if (this.#failure !== null) listener(this.#failure)
    else this.#failureListeners.push(listener)
  }

  #report (info: LevelFailure): void {
    this.#failure = info
    const listeners = this.#opts.onFailure === null ? this.#failureListeners : [this.#opts.onFailure, ...this.#failureListeners]
    for (const listener of listeners) {
      try {
        listener(info)
      } catch (err) {
        this.#logger.error({ err }, 'service persistence: a failure listener threw')
      }
    }
  }
}
