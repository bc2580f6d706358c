/**
 * An EventStore in memory: the same rules as the durable backends ([STORE-*]), nothing survives the
 * process. For tests and for brokers that need no durability.
 */
import { Category, ClosedError, ConfigError, type StoredEvent } from '@herald/protocol'
import type { AppendBatch, AppendResult, EventCounters, EventStore, ExpiredUnpurged, LimitsOf, ReadQuery } from './event-store.js'
import { RemovalLog, type Gap, type GapQuery } from './removal-log.js'
import { MemoryGroupStore } from '../groups/group-store.js'
import { capOf, checkBatch, checkMaxDedupKeys, countFor, expiresAtOf, keyLimitRefusal, KeyTable, maxKeysOf, NO_RECIPIENT, recipientKeyOf, snapshotCounters, storedFrom } from './event-store-rules.js'

/** What a MemoryEventStore is built from. */
export interface MemoryEventStoreOptions {
  /** Each event name's category and limits (from the site). Required. */
  readonly limitsOf: LimitsOf
  /** Dedup keys remembered per (service, instance) ([STORE-DEDUP-2]). Default 10,000 (DEDUP_KEY_DEFAULTS). */
  readonly maxDedupKeys?: number
}

/** Key of a queue: (service, event, recipient), and the replacing key of a keyed event ([STORE-KEY-1]). */
function queueKey (serviceId: string, name: string, recipient: string, key?: string): string {
  return key === undefined ? `${serviceId}\u0000${name}\u0000${recipient}` : `${serviceId}\u0000${name}\u0000${recipient}\u0000${key}`
}

/** Key of a dedup record: (service, instance). */
function seqKey (serviceId: string, instance: string): string {
  return `${serviceId}\u0000${instance}`
}

/**
 * An in-memory EventStore. `append` applies the batch at once and resolves on a later tick, so
 * results come back in call order; payloads are copied so a caller may reuse its buffers.
 */
export class MemoryEventStore implements EventStore {
  /** [GROUP-STORE-1] consumer groups' marks, in memory like the events. */
  readonly groups = new MemoryGroupStore()
  readonly #limitsOf: LimitsOf
  /** Per event name: its events by position, in position order (Maps keep insertion order). */
  readonly #byEvent = new Map<string, Map<number, StoredEvent>>()
  /** Per queue: its events by position, oldest first. */
  readonly #queues = new Map<string, Map<number, StoredEvent>>()
  readonly #seqs = new Map<string, number>()
  /** [STORE-DEDUP-2] per (service, instance): remembered keys, oldest first. */
  readonly #keys = new Map<string, Set<string>>()
  readonly #maxDedupKeys: number
  readonly #counters = new Map<string, EventCounters>()
  /** [STORE-KEY-3] the keys stored per (service, event) of keyed events. */
  readonly #keyTable = new KeyTable()
  #head = 0
  #count = 0
  #closed = false
  /** [CLI-GAP-1] what was pushed out or expired, for gap notices. */
  readonly #removals = new RemovalLog()

  constructor (options: MemoryEventStoreOptions) {
    if (typeof options?.limitsOf !== 'function') throw new ConfigError('MemoryEventStore: option "limitsOf" must be a function')
    this.#limitsOf = options.limitsOf
    this.#maxDedupKeys = checkMaxDedupKeys('MemoryEventStore', options.maxDedupKeys)
  }

  async append (batch: AppendBatch): Promise<AppendResult> {
    this.#checkOpen()
    const limits = checkBatch(batch, this.#limitsOf)
    const key = seqKey(batch.serviceId, batch.instance)
    let last = this.#seqs.get(key) ?? 0
    const stored: StoredEvent[] = []
    let duplicates = 0
    let expired = 0
    let nullsDropped = 0
    const refused: Array<{ seq: number, code: string, message: string }> = []
    this.#removals.begin()
    try {
      for (let i = 0; i < batch.events.length; i++) {
        const e = batch.events[i]!
        const lim = limits[i]!
        // [STORE-DEDUP-1]
        if (e.seq <= last) { duplicates++; continue }
        last = e.seq
        if (e.dedupKey !== undefined) {
          // [STORE-DEDUP-2] a key seen before: handled, not stored; a new one is remembered, oldest forgotten
          let keys = this.#keys.get(key)
          if (keys === undefined) this.#keys.set(key, keys = new Set<string>())
          if (keys.has(e.dedupKey)) { duplicates++; continue }
          keys.add(e.dedupKey)
          if (keys.size > this.#maxDedupKeys) keys.delete(keys.values().next().value as string)
        }
        const expiresAt = expiresAtOf(lim, batch.receivedAt, e.age)
        if (expiresAt !== null && expiresAt <= batch.receivedAt) {
          // [STORE-EXPIRE-2] handled, never stored
          expired++
          countFor(this.#counters, e.name, 'expiredOnArrival')
          continue
        }
        const kq = e.key === undefined ? null : KeyTable.queueOf(batch.serviceId, e.name)
        if (kq !== null && e.key !== undefined) {
          if (!this.#keyTable.has(kq, e.key)) {
            if (e.isNull) {
              // [STORE-KEY-2] a null of a key with nothing stored has nothing to clear
              nullsDropped++
              countFor(this.#counters, e.name, 'nullsDropped')
              continue
            }
            const max = maxKeysOf(lim)
            if (this.#keyTable.size(kq) >= max) {
              // [STORE-KEY-3] at the limit: the oldest null key makes room, else the new key is refused
              const victim = this.#keyTable.oldestNull(kq)
              if (victim === undefined) {
                refused.push(keyLimitRefusal(e, batch.serviceId, max))
                continue
              }
              for (const old of [...(this.#queues.get(queueKey(batch.serviceId, e.name, NO_RECIPIENT, victim))?.values() ?? [])]) {
                this.#remove(old)
                countFor(this.#counters, e.name, 'replaced')
              }
              this.#keyTable.delete(kq, victim)
            }
          } else if (e.isNull && this.#keyTable.isNull(kq, e.key)) {
            // [STORE-REPLACE-2] per key
            nullsDropped++
            countFor(this.#counters, e.name, 'nullsDropped')
            continue
          }
          this.#keyTable.set(kq, e.key, e.isNull)
        } else if (e.isNull && this.#storedIsNull(batch.serviceId, e.name)) {
          // [STORE-REPLACE-2] null over null says nothing new
          nullsDropped++
          countFor(this.#counters, e.name, 'nullsDropped')
          continue
        }
        // a copy of the payload, so the caller's buffer can be reused
        const s = storedFrom(e, new Uint8Array(e.payload), {
          position: ++this.#head, // [STORE-POS-1]
          serviceId: batch.serviceId,
          instance: batch.instance,
          receivedAt: batch.receivedAt,
          expiresAt
        })
        this.#insert(s, capOf(lim), batch.receivedAt)
        stored.push(s)
      }
    } finally {
      this.#removals.end()
    }
    this.#seqs.set(key, Math.max(last, batch.handledUpTo))
    return { stored, duplicates, lastSeq: Math.max(last, batch.handledUpTo), expired, nullsDropped, refused }
  }

  lastSeq (serviceId: string, instance: string): number {
    this.#checkOpen()
    return this.#seqs.get(seqKey(serviceId, instance)) ?? 0
  }

  async read (query: ReadQuery): Promise<StoredEvent[]> {
    this.#checkOpen()
    const recipient = recipientKeyOf(query, this.#limitsOf)
    const out: StoredEvent[] = []
    if (query.limit === 0) return out
    const maxBytes = query.maxBytes ?? Infinity
    let bytes = 0
    for (const e of this.#byEvent.get(query.event)?.values() ?? []) {
      if (e.position <= query.after) continue
      if (e.expiresAt !== null && e.expiresAt <= query.now) continue // [STORE-EXPIRE-1]
      if ((e.recipient ?? NO_RECIPIENT) !== recipient) continue
      if (query.services !== null && !query.services.has(e.serviceId)) continue
      if (query.keys != null && (e.key === undefined || !query.keys.has(e.key))) continue
      out.push(e)
      bytes += e.payload.byteLength
      if (out.length >= query.limit || bytes >= maxBytes) break
    }
    return out
  }

  latestPerService (query: Omit<ReadQuery, 'limit' | 'maxBytes' | 'after'>): number[] {
    const recipient = recipientKeyOf({ ...query, after: 0, limit: 0 }, this.#limitsOf)
    const newest = new Map<string, number>()
    for (const e of this.#byEvent.get(query.event)?.values() ?? []) {
      if (e.expiresAt !== null && e.expiresAt <= query.now) continue
      if ((e.recipient ?? NO_RECIPIENT) !== recipient) continue
      if (query.services !== null && !query.services.has(e.serviceId)) continue
      if (query.keys != null && (e.key === undefined || !query.keys.has(e.key))) continue
      // in position order: the last one set is the newest, per service and per key ([CLI-START-4])
      newest.set(e.key === undefined ? e.serviceId : `${e.serviceId}\u0000${e.key}`, e.position)
    }
    return [...newest.values()].sort((a, b) => a - b)
  }

  positionAt (time: number): number | null {
    this.#checkOpen()
    let first: number | null = null
    for (const events of this.#byEvent.values()) {
      for (const e of events.values()) {
        if (e.receivedAt >= time) {
          if (first === null || e.position < first) first = e.position
          break // positions increase along a name's events, and so do arrival times
        }
      }
    }
    return first
  }

  head (): number {
    this.#checkOpen()
    return this.#head
  }

  count (): number {
    this.#checkOpen()
    return this.#count
  }

  async purgeExpired (now: number): Promise<number> {
    this.#checkOpen()
    this.#removals.begin()
    try {
      return this.#purgeNow(now)
    } finally {
      this.#removals.end()
    }
  }

  removalEpoch (event: string): number {
    return this.#removals.epochOf(event)
  }

  gap (query: GapQuery): Gap | null {
    return this.#removals.gap(query)
  }

  expiredUnpurged (query: Omit<ReadQuery, 'limit' | 'maxBytes'>): ExpiredUnpurged | null {
    const recipient = recipientKeyOf({ ...query, limit: 0 }, this.#limitsOf)
    let count = 0
    let upTo = 0
    const services = new Set<string>()
    for (const e of this.#byEvent.get(query.event)?.values() ?? []) {
      if (e.position <= query.after || e.expiresAt === null || e.expiresAt > query.now) continue
      if ((e.recipient ?? NO_RECIPIENT) !== recipient) continue
      if (query.services !== null && !query.services.has(e.serviceId)) continue
      count++
      upTo = e.position
      services.add(e.serviceId)
    }
    return count === 0 ? null : { count, upTo, services: [...services].sort().slice(0, 100) }
  }

  #purgeNow (now: number): number {
    let n = 0
    for (const events of this.#byEvent.values()) {
      for (const e of events.values()) {
        if (e.expiresAt !== null && e.expiresAt <= now) {
          this.#remove(e)
          countFor(this.#counters, e.name, 'expired')
          this.#removals.record(e.serviceId, e.name, e.recipient ?? null, e.position, 'expired')
          n++
        }
      }
    }
    return n
  }

  counters (): Record<string, EventCounters> {
    this.#checkOpen()
    return snapshotCounters(this.#counters)
  }

  /** Events stored per event name, expired-but-unpurged ones included (a site reload checks removals with it). */
  storedByEvent (): Map<string, number> {
    this.#checkOpen()
    const out = new Map<string, number>()
    for (const [name, events] of this.#byEvent) if (events.size > 0) out.set(name, events.size)
    return out
  }

  /** [STORE-KEY-3] Keys stored per keyed event name (for metrics). */
  keysByEvent (): Map<string, number> {
    return this.#keyTable.perEvent()
  }

  /** Idempotent: a second call resolves at once. */
  async close (): Promise<void> {
    this.#closed = true
  }

  /** Whether the stored instance of a replacing (service, event) is a null one. */
  #storedIsNull (serviceId: string, name: string): boolean {
    const queue = this.#queues.get(queueKey(serviceId, name, NO_RECIPIENT))
    if (queue === undefined) return false
    let newest: StoredEvent | undefined
    for (const e of queue.values()) newest = e // a replacing queue holds one
    return newest?.isNull === true && newest.category === Category.replacing
  }

  #insert (e: StoredEvent, cap: number, now: number): void {
    let events = this.#byEvent.get(e.name)
    if (events === undefined) this.#byEvent.set(e.name, events = new Map<number, StoredEvent>())
    events.set(e.position, e)
    const key = queueKey(e.serviceId, e.name, e.recipient ?? NO_RECIPIENT, e.key)
    let queue = this.#queues.get(key)
    if (queue === undefined) this.#queues.set(key, queue = new Map<number, StoredEvent>())
    queue.set(e.position, e)
    this.#count++
    // [STORE-REPLACE-1] [STORE-QUEUE-1]: push out the oldest beyond the cap.
    for (const old of queue.values()) {
      if (queue.size <= cap) break
      this.#remove(old)
      const kind = old.expiresAt !== null && old.expiresAt <= now ? 'expired' : old.category === Category.replacing ? 'replaced' : 'pushedOut'
      countFor(this.#counters, old.name, kind)
      if (kind !== 'replaced') this.#removals.record(old.serviceId, old.name, old.recipient ?? null, old.position, kind)
    }
  }

  #remove (e: StoredEvent): void {
    const events = this.#byEvent.get(e.name)
    if (events?.delete(e.position) !== true) return
    if (events.size === 0) this.#byEvent.delete(e.name)
    const key = queueKey(e.serviceId, e.name, e.recipient ?? NO_RECIPIENT, e.key)
    const queue = this.#queues.get(key)
    queue?.delete(e.position)
    if (queue?.size === 0) this.#queues.delete(key)
    this.#count--
  }

  #checkOpen (): void {
    if (this.#closed) throw new ClosedError('event store is closed')
  }
}
