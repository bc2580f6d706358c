/// <reference lib="dom" />
/**
 * Positions in the browser's IndexedDB ([CLI-BROWSER-1] .. [CLI-BROWSER-3]): one object store, one
 * record per (client key, subscription key), so O(subscriptions). Opened asynchronously
 * (`IndexedDbPositionStore.open`), which loads this client's records; `get` then answers from memory,
 * and each write updates memory at once and returns a promise that resolves when IndexedDB committed
 * it with `durability: 'strict'` (flushed to disk before the commit is reported). Transactions on
 * one object store run in the order they were made, so a write that is done means every write
 * before it is done too.
 *
 * While open, the store holds an exclusive Web Lock (`navigator.locks`) on
 * `herald-positions:<database>:<client key>`: a second tab of the same client gets POSITIONS_LOCKED
 * at open, or waits, or takes the lock over; the tab that lost it is told through `lost` (its
 * endpoint stops) and its writes fail ([CLI-BROWSER-3]).
 */
import { ConfigError, ErrorCode, PersistenceError, assertName, type HeraldError } from '@herald/protocol'
import type { PositionStore, SubscriptionPosition } from '../positions/position-store.js'

const OBJECT_STORE = 'positions'
const VERSION = 1

/** What a second tab does when another one holds this client key's positions. */
export type IfLocked = 'fail' | 'wait' | 'takeover'

export interface IndexedDbPositionStoreOptions {
  /** The client key these positions are for: the endpoint's `key`, `<user>/<clientName>` (a guest: `<clientName>`). */
  readonly clientKey: string
  /** The IndexedDB database. Default `herald-positions`. */
  readonly database?: string
  /**
   * When another tab or worker of this origin holds this client key ([CLI-BROWSER-3]): `'fail'`
   * (default) rejects with POSITIONS_LOCKED; `'wait'` waits until it is released; `'takeover'`
   * takes it: the other tab's endpoint stops with POSITIONS_LOCKED.
   */
  readonly ifLocked?: IfLocked
  /** The IndexedDB factory. Default `globalThis.indexedDB`. */
  readonly indexedDB?: IDBFactory
  /**
   * The Web Locks manager. Default `navigator.locks`. `null`: no lock (only where there is no
   * other tab, e.g. a unit test in Node; two endpoints on one client key then corrupt each other).
   */
  readonly locks?: LockRequester | null
}

/** The part of the Web Locks API (`navigator.locks`) the store uses. */
export interface LockRequester {
  request (name: string, options: LockOptions, callback: (lock: Lock | null) => Promise<void>): Promise<void>
}

interface StoredRecord { readonly k: string, readonly p: number, readonly s: number | null }

function request<T> (r: IDBRequest<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    r.onsuccess = () => { resolve(r.result) }
    r.onerror = () => { reject(r.error ?? new Error('IndexedDB request failed')) }
  })
}

export class IndexedDbPositionStore implements PositionStore {
  readonly durable = true
  readonly lost: Promise<HeraldError>
  private readonly cache = new Map<string, { position: number, started: number | null }>()
  /** The last write made: done means every write before it is done. */
  private last: Promise<void> = Promise.resolve()
  private lostError: HeraldError | null = null
  private closed = false
  private reportLost: (err: HeraldError) => void = () => {}

  private constructor (
    readonly clientKey: string,
    readonly database: string,
    private readonly db: IDBDatabase,
    private readonly release: () => Promise<void>,
    records: readonly StoredRecord[]
  ) {
    for (const r of records) this.cache.set(r.k, { position: r.p, started: r.s })
    this.lost = new Promise((resolve) => { this.reportLost = resolve })
    db.onversionchange = () => { this.lose(new PersistenceError(`the positions database "${database}" is being deleted or upgraded by another tab`)) }
    db.onclose = () => { this.lose(new PersistenceError(`the browser closed the positions database "${database}" (storage cleared?)`)) }
  }

  /** Takes the lock for `clientKey`, opens the database, and loads this client's positions. */
  static async open (options: IndexedDbPositionStoreOptions): Promise<IndexedDbPositionStore> {
    if (options === undefined || options === null) throw new ConfigError('IndexedDbPositionStore: options are required')
    const clientKey = options.clientKey
    if (typeof clientKey !== 'string') throw new ConfigError('IndexedDbPositionStore: option "clientKey" is required (the endpoint\'s key, `<user>/<clientName>`)')
    for (const part of clientKey.split('/')) assertName(part, 'IndexedDbPositionStore: clientKey')
    const database = options.database ?? 'herald-positions'
    if (typeof database !== 'string' || database === '') throw new ConfigError('IndexedDbPositionStore: option "database" must be a non-empty string')
    const ifLocked = options.ifLocked ?? 'fail'
    if (ifLocked !== 'fail' && ifLocked !== 'wait' && ifLocked !== 'takeover') throw new ConfigError('IndexedDbPositionStore: option "ifLocked" must be "fail", "wait" or "takeover"')
    const idb = options.indexedDB ?? (globalThis as { indexedDB?: IDBFactory }).indexedDB
    if (idb === undefined) throw new ConfigError('IndexedDbPositionStore: this environment has no IndexedDB (give option "indexedDB")')
    const locks: LockRequester | null | undefined = options.locks === undefined ? (globalThis as { navigator?: { locks?: LockManager } }).navigator?.locks : options.locks
    if (locks === undefined) throw new ConfigError('IndexedDbPositionStore: this environment has no Web Locks (navigator.locks; a secure context is needed), so two tabs could corrupt each other\'s positions; give option "locks: null" to go without')

    const lock = locks === null ? { release: async () => {}, broken: new Promise<never>(() => {}) } : await takeLock(locks, `herald-positions:${database}:${clientKey}`, ifLocked, clientKey)
    let db: IDBDatabase
    let records: StoredRecord[]
    try {
      const opening = idb.open(database, VERSION)
      opening.onupgradeneeded = () => { opening.result.createObjectStore(OBJECT_STORE) }
      opening.onblocked = () => {} // another tab has an older version open: it is told (versionchange) and closes
      db = await request(opening)
      const tx = db.transaction(OBJECT_STORE, 'readonly')
      // every key of this client: [clientKey, <any string>] sorts between [clientKey] and [clientKey, []]
      records = await request(tx.objectStore(OBJECT_STORE).getAll(IDBKeyRange.bound([clientKey], [clientKey, []]))) as StoredRecord[]
    } catch (err) {
      await lock.release()
      throw new PersistenceError(`cannot open positions in IndexedDB "${database}": ${(err as Error).message}`, { cause: err })
    }
    const store = new IndexedDbPositionStore(clientKey, database, db, lock.release, records)
    void lock.broken.then(() => {
      store.lose(new PersistenceError(`another tab took over the positions of client "${clientKey}"; this one stopped`, { code: ErrorCode.POSITIONS_LOCKED }))
    })
    return store
  }

  get (key: string): SubscriptionPosition | null {
    const r = this.cache.get(key)
    return r === undefined ? null : { position: r.position, started: r.started }
  }

  markStarted (key: string, position: number): Promise<void> {
    const r = this.cache.get(key)
    return this.write(key, r === undefined ? 0 : r.position, position)
  }

  commit (key: string, position: number): Promise<void> {
    return this.write(key, position, null)
  }

  advance (key: string, committed: number, started: number): Promise<void> {
    return this.write(key, committed, started)
  }

  /**
   * One record, in one strict readwrite transaction: done once IndexedDB reports it committed (and
   * flushed). Memory changes at once, so `get` sees it; a failed write is reported through the promise.
   */
  private write (key: string, position: number, started: number | null): Promise<void> {
    if (this.lostError !== null) return Promise.reject(this.lostError)
    if (this.closed) return Promise.reject(new PersistenceError('IndexedDbPositionStore is closed'))
    this.cache.set(key, { position, started })
    const record: StoredRecord = { k: key, p: position, s: started }
    const done = new Promise<void>((resolve, reject) => {
      let tx: IDBTransaction
      try {
        // [CLI-BROWSER-1] strict: the commit is reported after the data is flushed to disk
        tx = this.db.transaction(OBJECT_STORE, 'readwrite', { durability: 'strict' })
        tx.objectStore(OBJECT_STORE).put(record, [this.clientKey, key])
      } catch (err) {
        reject(new PersistenceError(`cannot write the position of "${key}": ${(err as Error).message}`, { cause: err }))
        return
      }
      tx.oncomplete = () => { resolve() }
      tx.onabort = () => { reject(new PersistenceError(`the position write of "${key}" was aborted: ${tx.error?.message ?? 'aborted'}`, { cause: tx.error })) }
    })
    this.last = done.catch(() => {})
    return done
  }

  private lose (err: HeraldError): void {
    if (this.lostError !== null || this.closed) return
    this.lostError = err
    this.reportLost(err)
    this.db.close()
  }

  /** Waits for the writes made, closes the database and releases the lock (resolves once released). */
  async close (): Promise<void> {
    if (this.closed) return
    this.closed = true
    await this.last
    this.db.close()
    await this.release()
  }
}

/**
 * [CLI-BROWSER-3] Takes the exclusive lock named `name` and holds it until `release`; `broken`
 * resolves if another tab takes it over (steal) while held.
 */
async function takeLock (locks: LockRequester, name: string, ifLocked: IfLocked, clientKey: string): Promise<{ release: () => Promise<void>, broken: Promise<void> }> {
  let release: () => void = () => {}
  const held = new Promise<void>((resolve) => { release = resolve })
  let onBroken: () => void = () => {}
  const broken = new Promise<void>((resolve) => { onBroken = resolve })
  let settled: Promise<void> = Promise.resolve()
  const granted = await new Promise<boolean>((resolve, reject) => {
    const options: LockOptions = ifLocked === 'fail' ? { mode: 'exclusive', ifAvailable: true } : ifLocked === 'takeover' ? { mode: 'exclusive', steal: true } : { mode: 'exclusive' }
    let acquired = false
    settled = locks.request(name, options, async (lock) => {
      if (lock === null) {
        resolve(false)
        return
      }
      acquired = true
      resolve(true)
      await held
    }).then(() => {}, (err: unknown) => {
      // a held lock that another tab stole ends here with an AbortError
      if (acquired) onBroken()
      else reject(new PersistenceError(`cannot take the lock of client "${clientKey}": ${(err as Error).message}`, { cause: err }))
    })
  })
  if (!granted) {
    throw new PersistenceError(`the positions of client "${clientKey}" are in use by another tab or worker of this site (one connection per client name: give each tab its own clientName, or open with ifLocked: 'wait' or 'takeover')`, { code: ErrorCode.POSITIONS_LOCKED })
  }
  return { release: async () => { release(); await settled }, broken }
}
