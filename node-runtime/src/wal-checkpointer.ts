/**
 * WAL checkpoints of a SQLite file off the writer's event loop.
 *
 * SQLite's automatic checkpoint runs inside the commit that crosses `wal_autocheckpoint` pages: that
 * commit then copies the WAL into the database file and syncs it, on the writer's thread, while
 * every event behind it waits. A `WalCheckpointer` turns the automatic checkpoint off on the
 * writing connection and runs the checkpoints from a worker thread with its own connection to the
 * same file (SQLite's WAL mode lets a checkpointer run beside a writer; commits go on appending to
 * the WAL meanwhile):
 *
 * - after a commit (`committed()`), at most every `intervalMs`, one at a time: `wal_checkpoint(PASSIVE)`,
 *   which never waits for the writer. Once every frame is copied, the writer's next commit starts the
 *   WAL over from its beginning (SQLite's own restart), and `journal_size_limit` shrinks the file.
 * - when the WAL holds more than `softLimitBytes` of frames since its last restart (a steady writer
 *   can keep the passive checkpoints from ever catching up), the worker runs `wal_checkpoint(TRUNCATE)`,
 *   which waits for the commit in progress, holds the next one back while it copies what is left and
 *   empties the file.
 * - the hard bound: when the writer sees the WAL file past `hardLimitBytes` (the worker is slow,
 *   stuck or gone), it runs `wal_checkpoint(TRUNCATE)` itself, on its own thread.
 * - if the worker fails or exits, the writing connection gets SQLite's automatic checkpoint back.
 *
 * Durability does not change: a commit still syncs the WAL as its `synchronous` setting says, before
 * it returns; a checkpoint only moves committed frames into the database file (syncing both), which
 * SQLite makes safe against a crash at any point.
 */
import { statSync } from 'node:fs'
import { Worker } from 'node:worker_threads'
import { ConfigError, type Logger, silentLogger } from '@herald/protocol'
import type { SqliteSynchronous } from './sqlite-synchronous.js'

/** The part of a better-sqlite3 `Database` the checkpointer uses: the writing connection. */
export interface WalConnection {
  pragma (source: string, options?: { simple?: boolean }): unknown
}

/** What `new WalCheckpointer` takes. */
export interface WalCheckpointerOptions {
  /** The database file (in WAL mode); its WAL is `<path>-wal`. Required. */
  readonly path: string
  /** The writing connection: its automatic checkpoint is turned off while the worker runs. Required. */
  readonly db: WalConnection
  /**
   * Where the worker loads better-sqlite3 from: `createRequire(import.meta.url).resolve('better-sqlite3')`
   * in the package that depends on it. Required.
   */
  readonly driver: string
  /** The worker connection's `synchronous` (the syncs of a checkpoint); the writer's. Required. */
  readonly synchronous: SqliteSynchronous
  /** Least time from the start of one worker checkpoint to the next, ms. Default 5. */
  readonly intervalMs?: number
  /** Frames in the WAL (bytes) past which the worker runs a TRUNCATE checkpoint. Default 16 MiB. */
  readonly softLimitBytes?: number
  /** WAL file size past which the writer checkpoints (TRUNCATE) on its own thread. Default 64 MiB. */
  readonly hardLimitBytes?: number
  /** Where failures of the worker are logged. Default: silent. */
  readonly logger?: Logger
}

/** Defaults of the optional options. */
export const WAL_CHECKPOINTER_DEFAULTS: Readonly<{ intervalMs: number, softLimitBytes: number, hardLimitBytes: number }> = Object.freeze({
  intervalMs: 5,
  softLimitBytes: 16 * 1024 * 1024,
  hardLimitBytes: 64 * 1024 * 1024
})

/** SQLite's own automatic checkpoint, in pages; restored when the worker is gone. */
const SQLITE_AUTOCHECKPOINT = 1000
/** Least time between two looks at the WAL file's size from the writer, ms. */
const STAT_EVERY_MS = 2
/** How long the worker's TRUNCATE waits for the writer, ms. */
const WORKER_BUSY_MS = 2000
/** How long close() waits for the worker to close its connection before terminating it, ms. */
const CLOSE_WAIT_MS = 5000

/** Counters, for tests and status displays. */
export interface WalCheckpointerStats {
  /** Checkpoints the worker ran (passive and truncating). */
  checkpoints: number
  /** TRUNCATE checkpoints the worker ran past the soft limit. */
  truncates: number
  /** TRUNCATE checkpoints the writer ran itself past the hard limit. */
  inline: number
  /** Whether the worker runs (false after it failed or closed: SQLite's automatic checkpoint is back). */
  worker: boolean
}

type Reply = { readonly done: true, readonly truncated: boolean } | { readonly error: string }

// The worker: one connection to the file, one checkpoint per message. CommonJS, run with eval so
// that it works from the compiled package and from its TypeScript sources alike.
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads')
const Database = require(workerData.driver)
const db = new Database(workerData.path, { timeout: workerData.busyMs })
db.pragma('synchronous = ' + workerData.synchronous)
const pageSize = db.pragma('page_size', { simple: true })
parentPort.on('message', (m) => {
  if (m === 'close') {
    try { db.close() } finally { process.exit(0) }
  }
  try {
    const r = db.pragma('wal_checkpoint(PASSIVE)')[0]
    let truncated = false
    if (r.log * pageSize > workerData.softLimitBytes) {
      db.pragma('wal_checkpoint(TRUNCATE)')
      truncated = true
    }
    parentPort.postMessage({ done: true, truncated })
  } catch (err) {
    parentPort.postMessage({ error: String(err && err.message || err) })
  }
})
`

/** Runs the WAL checkpoints of one SQLite file from a worker thread; see the file's comment. */
export class WalCheckpointer {
  readonly #db: WalConnection
  readonly #walPath: string
  readonly #logger: Logger
  readonly #intervalMs: number
  readonly #hardLimitBytes: number
  #worker: Worker | null
  #inFlight = false
  /** A commit came while a checkpoint ran or too soon after one: run another when allowed. */
  #owed = false
  #lastStart = -Infinity
  #lastStat = -Infinity
  #timer: NodeJS.Timeout | null = null
  #closing: Promise<void> | null = null
  readonly #stats: WalCheckpointerStats = { checkpoints: 0, truncates: 0, inline: 0, worker: true }

  /** Starts the worker and turns the writer's automatic checkpoint off. Throws ConfigError on a wrong option. */
  constructor (options: WalCheckpointerOptions) {
    const d = WAL_CHECKPOINTER_DEFAULTS
    const intervalMs = options.intervalMs ?? d.intervalMs
    const softLimitBytes = options.softLimitBytes ?? d.softLimitBytes
    const hardLimitBytes = options.hardLimitBytes ?? d.hardLimitBytes
    if (typeof options.path !== 'string' || options.path === '') throw new ConfigError('WalCheckpointer: option "path" must be a file path')
    if (typeof options.driver !== 'string' || options.driver === '') throw new ConfigError('WalCheckpointer: option "driver" must be a module path')
    if (!Number.isFinite(intervalMs) || intervalMs < 0) throw new ConfigError(`WalCheckpointer: option "intervalMs" must be a number >= 0, got ${intervalMs}`)
    if (!Number.isSafeInteger(softLimitBytes) || softLimitBytes < 4096) throw new ConfigError(`WalCheckpointer: option "softLimitBytes" must be a whole number >= 4096, got ${softLimitBytes}`)
    if (!Number.isSafeInteger(hardLimitBytes) || hardLimitBytes < softLimitBytes) throw new ConfigError(`WalCheckpointer: option "hardLimitBytes" must be a whole number >= softLimitBytes, got ${hardLimitBytes}`)
    this.#db = options.db
    this.#walPath = `${options.path}-wal`
    this.#logger = options.logger ?? silentLogger
    this.#intervalMs = intervalMs
    this.#hardLimitBytes = hardLimitBytes
    this.#db.pragma(`journal_size_limit = ${softLimitBytes}`)
    this.#db.pragma('wal_autocheckpoint = 0')
    const worker = new Worker(WORKER_SOURCE, {
      eval: true,
      workerData: { driver: options.driver, path: options.path, synchronous: options.synchronous, softLimitBytes, busyMs: WORKER_BUSY_MS }
    })
    worker.unref() // never what keeps a process alive; a checkpoint cut short is safe
    worker.on('message', (m: Reply) => { this.#onReply(m) })
    worker.on('error', (err) => { this.#gone(err) })
    worker.on('exit', (code) => { this.#gone(this.#closing === null ? new Error(`checkpoint worker exited with code ${code}`) : null) })
    this.#worker = worker
  }

  /** Counters of what ran so far. */
  stats (): WalCheckpointerStats {
    return { ...this.#stats }
  }

  /**
   * Call after each commit of the writing connection, on its thread. Asks the worker for a
   * checkpoint when one is due, and checkpoints on this thread past the hard limit.
   */
  committed (): void {
    const now = performance.now()
    if (now - this.#lastStat >= STAT_EVERY_MS) {
      this.#lastStat = now
      const size = statSync(this.#walPath, { throwIfNoEntry: false })?.size ?? 0
      if (size > this.#hardLimitBytes) this.#checkpointInline(size)
    }
    if (this.#worker === null) return
    this.#owed = true
    this.#kick(now)
  }

  /** Stops the worker (it closes its connection first). Resolves once it exited. Idempotent. */
  async close (): Promise<void> {
    this.#closing ??= this.#stop()
    await this.#closing
  }

  async #stop (): Promise<void> {
    if (this.#timer !== null) clearTimeout(this.#timer)
    this.#timer = null
    const worker = this.#worker
    if (worker === null) return
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => { void worker.terminate() }, CLOSE_WAIT_MS)
      worker.once('exit', () => {
        clearTimeout(timer)
        resolve()
      })
      worker.postMessage('close')
    })
  }

  #kick (now: number): void {
    const worker = this.#worker
    if (worker === null || this.#inFlight || !this.#owed || this.#timer !== null) return
    const wait = this.#lastStart + this.#intervalMs - now
    if (wait > 0) {
      this.#timer = setTimeout(() => {
        this.#timer = null
        this.#kick(performance.now())
      }, wait)
      this.#timer.unref()
      return
    }
    this.#owed = false
    this.#inFlight = true
    this.#lastStart = now
    worker.postMessage('checkpoint')
  }

  #onReply (m: Reply): void {
    this.#inFlight = false
    if ('error' in m) {
      this.#logger.warn({ path: this.#walPath, error: m.error }, 'WAL checkpoint in the worker failed')
    } else {
      this.#stats.checkpoints++
      if (m.truncated) this.#stats.truncates++
    }
    if (this.#closing === null) this.#kick(performance.now())
  }

  #checkpointInline (size: number): void {
    this.#stats.inline++
    this.#logger.warn({ path: this.#walPath, bytes: size, limit: this.#hardLimitBytes }, 'WAL past its hard limit: checkpointing on the writer')
    try {
      this.#db.pragma('wal_checkpoint(TRUNCATE)')
    } catch (err) {
      this.#logger.error({ err, path: this.#walPath }, 'WAL checkpoint on the writer failed')
    }
  }

  /** The worker is gone: SQLite's automatic checkpoint takes over again. */
  #gone (err: Error | null): void {
    if (this.#worker === null) return
    this.#worker = null
    this.#stats.worker = false
    this.#inFlight = false
    if (this.#timer !== null) clearTimeout(this.#timer)
    this.#timer = null
    if (err !== null) this.#logger.error({ err, path: this.#walPath }, 'WAL checkpoint worker failed; the writer checkpoints itself again')
    try {
      this.#db.pragma(`wal_autocheckpoint = ${SQLITE_AUTOCHECKPOINT}`)
    } catch {
      // the connection is closed already: nothing to restore
    }
  }
}
