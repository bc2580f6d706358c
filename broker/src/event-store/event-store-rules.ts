/**
 * Checks and derivations every EventStore backend shares, so that memory and SQLite judge a batch
 * and a query the same way. Internal to the broker: the event-store folder, and the uplink, which runs
 * checkBatch before it accepts a frame so that a batch the store would refuse never reaches it.
 */
import { Category, ConfigError, ErrorCode, RequestError, SITE_DEFAULTS, keyProblem, type StoredEvent } from '@herald/protocol'
import { DEDUP_KEY_DEFAULTS, emptyEventCounters, type AppendBatch, type ArrivingEvent, type EventCounters, type LimitsOf, type QueueLimits, type ReadQuery } from './event-store.js'

/** The recipient key of an event that has none (replacing and queueing events). */
export const NO_RECIPIENT = ''

/** How many events a queue keeps: 1 for replacing ([STORE-REPLACE-1]), else its limit ([STORE-QUEUE-1]). */
export function capOf (limits: QueueLimits): number {
  switch (limits.category) {
    case Category.replacing: return 1
    case Category.queueing: return Math.max(1, limits.maxQueueSize)
    default: return Math.max(1, limits.maxPerRecipient)
  }
}

/**
 * When an event received at `receivedAt`, `age` ms after it was raised (by the service's clock),
 * expires on the broker's clock, or null if it never does ([STORE-EXPIRE-1]): its raise time plus
 * its lifetime. An expiry at or before `receivedAt` means it arrived expired ([STORE-EXPIRE-2]).
 */
export function expiresAtOf (limits: QueueLimits, receivedAt: number, age = 0): number | null {
  return limits.lifetimeMs === null ? null : receivedAt - age + limits.lifetimeMs
}

/** Adds `n` to one counter of `name` in `counters`. */
export function countFor (counters: Map<string, EventCounters>, name: string, kind: keyof EventCounters, n = 1): void {
  let c = counters.get(name)
  if (c === undefined) counters.set(name, c = emptyEventCounters())
  c[kind] += n
}

/** A snapshot of per-name counters, as `EventStore.counters()` returns it. */
export function snapshotCounters (counters: ReadonlyMap<string, EventCounters>): Record<string, EventCounters> {
  const out: Record<string, EventCounters> = {}
  for (const [name, c] of counters) out[name] = { ...c }
  return out
}

function invalid (message: string): RequestError {
  return new RequestError(ErrorCode.INVALID_ARGUMENT, `event store: ${message}`)
}

/**
 * Checks a batch before it is queued and returns each event's limits (same order as `batch.events`).
 * Throws a RequestError (UNKNOWN_EVENT, WRONG_CATEGORY or INVALID_ARGUMENT); a rejected batch
 * changes nothing, not even the dedup record.
 */
export function checkBatch (batch: AppendBatch, limitsOf: LimitsOf): QueueLimits[] {
  if (typeof batch.serviceId !== 'string' || batch.serviceId === '') throw invalid('serviceId must be a non-empty string')
  if (typeof batch.instance !== 'string' || batch.instance === '') throw invalid('instance must be a non-empty string')
  if (!Number.isSafeInteger(batch.handledUpTo) || batch.handledUpTo < 0) throw invalid(`handledUpTo must be a whole number >= 0, got ${batch.handledUpTo}`)
  if (!Number.isSafeInteger(batch.receivedAt)) throw invalid(`receivedAt must be a whole number of ms, got ${batch.receivedAt}`)
  const out: QueueLimits[] = []
  let prev = 0
  for (const e of batch.events) {
    if (!Number.isSafeInteger(e.seq) || e.seq <= prev) throw invalid(`seqs must be whole numbers >= 1 and increasing, got ${e.seq} after ${prev}`)
    prev = e.seq
    const limits = limitsOf(e.name)
    if (limits === undefined) throw new RequestError(ErrorCode.UNKNOWN_EVENT, `event store: unknown event "${e.name}"`)
    if (limits.category !== e.category) {
      throw new RequestError(ErrorCode.WRONG_CATEGORY, `event store: event "${e.name}" is ${limits.category}, got ${e.category}`)
    }
    if ((e.category === Category.private) !== (e.recipient !== null)) {
      throw invalid(`event "${e.name}" seq ${e.seq}: a private event needs a recipient and only a private event has one`)
    }
    if (e.recipient === NO_RECIPIENT) throw invalid(`event "${e.name}" seq ${e.seq}: recipient must not be empty`)
    if (!(e.payload instanceof Uint8Array)) throw invalid(`event "${e.name}" seq ${e.seq}: payload must be a Uint8Array`)
    if (e.dedupKey !== undefined && (typeof e.dedupKey !== 'string' || e.dedupKey.length === 0 || e.dedupKey.length > DEDUP_KEY_DEFAULTS.maxKeyLength)) {
      throw invalid(`event "${e.name}" seq ${e.seq}: dedupKey must be a string of 1 to ${DEDUP_KEY_DEFAULTS.maxKeyLength} characters`)
    }
    if (limits.key !== undefined) {
      // [STORE-KEY-1] a keyed event carries its key; an unkeyed one none
      const problem = keyProblem(e.key)
      if (problem !== null) throw invalid(`event "${e.name}" seq ${e.seq} is keyed: ${problem}`)
    } else if (e.key !== undefined) {
      throw invalid(`event "${e.name}" seq ${e.seq}: has key ${JSON.stringify(e.key)}, but "${e.name}" is not a keyed event`)
    }
    if (e.age !== undefined && (!Number.isSafeInteger(e.age) || e.age < 0)) throw invalid(`event "${e.name}" seq ${e.seq}: age must be a whole number of ms >= 0, got ${e.age}`)
    out.push(limits)
  }
  if (batch.handledUpTo < prev) throw invalid(`handledUpTo ${batch.handledUpTo} is below the last seq of the batch ${prev}`)
  return out
}

/**
 * Checks a query and returns the recipient key to match: the query's recipient for private events
 * (required), NO_RECIPIENT for the others (a recipient given for them is ignored). For an event
 * name the site no longer knows, the query's recipient or NO_RECIPIENT.
 */
export function recipientKeyOf (query: ReadQuery, limitsOf: LimitsOf): string {
  if (typeof query.event !== 'string') throw invalid('query.event must be a string')
  if (typeof query.after !== 'number' || Number.isNaN(query.after)) throw invalid(`query.after must be a number, got ${query.after}`)
  if (typeof query.now !== 'number' || Number.isNaN(query.now)) throw invalid(`query.now must be a number, got ${query.now}`)
  if (!Number.isSafeInteger(query.limit) || query.limit < 0) throw invalid(`query.limit must be a whole number >= 0, got ${query.limit}`)
  const limits = limitsOf(query.event)
  if (limits === undefined) return query.recipient ?? NO_RECIPIENT
  if (limits.category !== Category.private) return NO_RECIPIENT
  if (query.recipient === null || query.recipient === NO_RECIPIENT) {
    throw invalid(`reading private event "${query.event}" needs a recipient`)
  }
  return query.recipient
}

/** The stored form of a raised event: its fields plus where and when the broker stored it. */
export function storedFrom (
  e: ArrivingEvent, payload: Uint8Array,
  at: { position: number, serviceId: string, instance: string, receivedAt: number, expiresAt: number | null }
): StoredEvent {
  const s: StoredEvent = {
    seq: e.seq,
    name: e.name,
    category: e.category,
    raisedAt: e.raisedAt,
    isNull: e.isNull,
    recipient: e.recipient,
    payloadKind: e.payloadKind,
    payload,
    position: at.position,
    serviceId: at.serviceId,
    instance: at.instance,
    receivedAt: at.receivedAt,
    expiresAt: at.expiresAt,
    uploadAge: e.age ?? 0
  }
  // [STORE-KEY-1] set only on keyed events: an unkeyed one is the same object literal as before keys
  if (e.key !== undefined) (s as { key?: string }).key = e.key
  return s
}

/** [STORE-KEY-3] The maxKeys of a keyed event. */
export function maxKeysOf (limits: QueueLimits): number {
  return limits.maxKeys ?? SITE_DEFAULTS.maxKeys
}

/** [STORE-KEY-3] The refusal of a new key past maxKeys. */
export function keyLimitRefusal (e: ArrivingEvent, serviceId: string, max: number): { seq: number, code: string, message: string } {
  return { seq: e.seq, code: ErrorCode.KEY_LIMIT, message: `event "${e.name}" of service "${serviceId}" already keeps ${max} keys (maxKeys); key ${JSON.stringify(e.key)} is refused` }
}

/**
 * [STORE-KEY-3] The keys stored per (service, event) of keyed events, each with whether its stored
 * instance is a null one, in the order of their last store (oldest first). Both backends keep it in
 * memory: at most maxKeys entries per (service, event).
 */
export class KeyTable {
  readonly #byQueue = new Map<string, Map<string, boolean>>()
  #total = 0

  static queueOf (serviceId: string, name: string): string {
    return `${serviceId}\u0000${name}`
  }

  /** Whether `key` has an instance stored for the (service, event) `queue`. */
  has (queue: string, key: string): boolean {
    return this.#byQueue.get(queue)?.has(key) === true
  }

  isNull (queue: string, key: string): boolean {
    return this.#byQueue.get(queue)?.get(key) === true
  }

  size (queue: string): number {
    return this.#byQueue.get(queue)?.size ?? 0
  }

  /** Records the newest stored instance of `key` (it moves to the end). */
  set (queue: string, key: string, isNull: boolean): void {
    let keys = this.#byQueue.get(queue)
    if (keys === undefined) this.#byQueue.set(queue, keys = new Map<string, boolean>())
    if (keys.delete(key)) this.#total--
    keys.set(key, isNull)
    this.#total++
  }

  delete (queue: string, key: string): void {
    const keys = this.#byQueue.get(queue)
    if (keys?.delete(key) !== true) return
    this.#total--
    if (keys.size === 0) this.#byQueue.delete(queue)
  }

  /** The key whose stored instance is the oldest null one, if any (looks at up to maxKeys entries). */
  oldestNull (queue: string): string | undefined {
    for (const [key, isNull] of this.#byQueue.get(queue) ?? []) if (isNull) return key
    return undefined
  }

  /** Keys stored per event name (for metrics). */
  perEvent (): Map<string, number> {
    const out = new Map<string, number>()
    for (const [queue, keys] of this.#byQueue) {
      const name = queue.slice(queue.indexOf('\u0000') + 1)
      out.set(name, (out.get(name) ?? 0) + keys.size)
    }
    return out
  }

  get total (): number { return this.#total }

  clear (): void {
    this.#byQueue.clear()
    this.#total = 0
  }
}

/** Checks the `maxDedupKeys` option of a store ([STORE-DEDUP-2]) and returns it or the default. */
export function checkMaxDedupKeys (where: string, value: number | undefined): number {
  const n = value ?? DEDUP_KEY_DEFAULTS.maxDedupKeys
  if (!Number.isSafeInteger(n) || n < 1 || n > 10_000_000) throw new ConfigError(`${where}: option "maxDedupKeys" must be a whole number from 1 to 10000000, got ${String(n)}`)
  return n
}
