/**
 * The broker's event storage ([STORE-*] in docs/protocol.md). Every backend passes
 * `describeEventStoreConformance` in `../testing/`.
 */
import type { Category, EventKeySpec, RaisedEvent, StoredEvent } from '@herald/protocol'
import type { Gap, GapQuery } from './removal-log.js'
import type { GroupStore } from '../groups/group-store.js'

/**
 * [PG-ASYNC-1] A value, or a promise of it: what the store methods that a network store must read
 * return. Callers await only a promise (`isPromise`), so a local store costs no extra turn.
 */
export type MaybePromise<T> = T | Promise<T>

/** Whether a MaybePromise is a promise. */
export function isPromise<T> (v: MaybePromise<T>): v is Promise<T> {
  return typeof (v as { then?: unknown } | null)?.then === 'function'
}

/** What the store needs to know of an event name to bound its queues. */
export interface QueueLimits {
  readonly category: Category
  /** Lifetime in ms; null for events that never expire (replacing). */
  readonly lifetimeMs: number | null
  /** Most events kept per (service, event) for queueing events. Replacing always keeps 1. */
  readonly maxQueueSize: number
  /** Most events kept per (service, event, recipient) for private events. */
  readonly maxPerRecipient: number
  /** [STORE-KEY-1] A keyed replacing event: one instance per (service, event, key). Absent: unkeyed. */
  readonly key?: EventKeySpec
  /** [STORE-KEY-3] Most keys kept per (service, event) of a keyed event. Default SITE_DEFAULTS.maxKeys. */
  readonly maxKeys?: number
}

/**
 * An event as it reaches the store: a raised event and, from its UP frame, its age when it was sent
 * ([FRAME-UP-1]). Without an age (0) its lifetime counts from `receivedAt`.
 */
export interface ArrivingEvent extends RaisedEvent {
  /** Ms since the event was raised, by the service's clock when it sent the frame; >= 0. Default 0. */
  readonly age?: number
  /**
   * A de-duplication key ([STORE-DEDUP-2]): an event whose key the store remembers for its
   * (service, instance) is a duplicate. 1 to 128 characters. Default: none (dedup by seq only).
   */
  readonly dedupKey?: string
}

/** The accepted events of one UP frame. */
export interface AppendBatch {
  readonly serviceId: string
  readonly instance: string
  /** Events to store, seq increasing; each name has limits. */
  readonly events: readonly ArrivingEvent[]
  /**
   * The highest seq this frame handled, including events the broker rejected. The store records it
   * as handled in the same transaction ([STORE-DEDUP-1]), so a resent rejected event is not re-judged.
   */
  readonly handledUpTo: number
  /**
   * The broker's clock when the frame arrived; becomes each event's receivedAt. An event's lifetime
   * counts from `receivedAt - age` ([STORE-EXPIRE-1]).
   */
  readonly receivedAt: number
  /**
   * [CLUSTER-INGEST-1] The store numbers the events itself, in the transaction, after its dedup
   * record (the events' seqs are placeholders, increasing, and `handledUpTo` is ignored); the
   * stored events carry the seqs given. Only for stores with `assignsSeqs`. Default false.
   */
  readonly assignSeqs?: boolean
}

/** What one append did. */
export interface AppendResult {
  /** The events newly stored, with their positions, in order. */
  readonly stored: readonly StoredEvent[]
  /** Events skipped because their seq was already handled for (service, instance). */
  readonly duplicates: number
  /** The highest seq handled for (service, instance) after this append. */
  readonly lastSeq: number
  /**
   * Events whose lifetime had already run out when they arrived (`receivedAt - age + lifetime <=
   * receivedAt`): handled (covered by lastSeq), counted, never stored ([STORE-EXPIRE-2]).
   */
  readonly expired: number
  /**
   * Null replacing events that arrived while the stored instance of their (service, event) was
   * already null: handled, counted, never stored ([STORE-REPLACE-2]).
   */
  readonly nullsDropped: number
  /**
   * [STORE-KEY-3] Events refused by the store itself: a new key of a keyed event past its maxKeys
   * (code KEY_LIMIT). Handled (covered by lastSeq), never stored; the uplink reports them to the
   * service as rejections. Empty when none.
   */
  readonly refused: ReadonlyArray<{ readonly seq: number, readonly code: string, readonly message: string }>
}

/**
 * What a store did to the events of one name since it was opened, beyond storing them. Counted in
 * the transaction's outcome, after its commit; not kept across a reopen.
 */
export interface EventCounters {
  /** Pushed out by a newer event past maxQueueSize or maxPerRecipient, unexpired ([STORE-QUEUE-1]). */
  pushedOut: number
  /** Removed by a newer instance of a replacing event ([STORE-REPLACE-1]). */
  replaced: number
  /** Deleted after their lifetime ran out: by the purge, or pushed out once expired ([STORE-EXPIRE-1]). */
  expired: number
  /** Arrived with their lifetime already run out, never stored ([STORE-EXPIRE-2]). */
  expiredOnArrival: number
  /** Null instances dropped over a stored null ([STORE-REPLACE-2]). */
  nullsDropped: number
}

/** A fresh EventCounters, all zero. */
export function emptyEventCounters (): EventCounters {
  return { pushedOut: 0, replaced: 0, expired: 0, expiredOnArrival: 0, nullsDropped: 0 }
}

/** Expired events not purged yet, of one subscription ([CLI-GAP-2]). */
export interface ExpiredUnpurged {
  readonly count: number
  readonly upTo: number
  readonly services: readonly string[]
}

/** A read of stored events for one subscription. */
export interface ReadQuery {
  readonly event: string
  /** Only events with position > after. */
  readonly after: number
  /** Only events from these services; null for all. */
  readonly services: ReadonlySet<string> | null
  /** [CLI-KEY-1] Only keyed events with one of these replacing keys; null or absent for all. */
  readonly keys?: ReadonlySet<string> | null
  /** For private events: only those addressed to this recipient. Must be set for private events. */
  readonly recipient: string | null
  /** Events with expiresAt <= now are never returned ([STORE-EXPIRE-1]). */
  readonly now: number
  readonly limit: number
  /**
   * Stop once the events read hold at least this many payload bytes: the event that reaches it is
   * the last one returned, so a single larger event still comes alone. Default: no byte bound.
   */
  readonly maxBytes?: number
}

/**
 * Durable, bounded storage of events.
 *
 * - [STORE-ACK-1] `append` resolves only when the events and the dedup record are durable (fsync'd
 *   for a durable backend). Calls made in the same tick share one transaction and one sync
 *   (group commit). Results come back in call order.
 * - [STORE-DEDUP-1] An event whose seq is <= the highest seq already handled for its
 *   (service, instance) is a duplicate: not stored, counted. The record is updated in the same
 *   transaction that stores the events.
 * - [STORE-DEDUP-2] An event with a `dedupKey` that the store remembers for its (service, instance) is a
 *   duplicate: not stored, counted in `duplicates`, its seq handled. The key of every event handled
 *   (stored, expired on arrival or dropped as a null over a null) is remembered in the same
 *   transaction; the store keeps the newest `maxDedupKeys` keys per (service, instance) (default
 *   10,000, DEDUP_KEY_DEFAULTS) and forgets the oldest beyond, so a key is recognised while fewer
 *   than that many newer keyed events of its (service, instance) were handled. Durable backends
 *   keep the keys across a reopen.
 * - [STORE-POS-1] Positions are assigned in append order, increase strictly, are never reused (not
 *   even after the newest events are deleted) and survive restarts.
 * - [STORE-REPLACE-1] A replacing event removes every older instance of its (service, event), and
 *   of a keyed event ([STORE-KEY-1]) of its (service, event, key).
 * - [STORE-REPLACE-2] A null replacing event is dropped (handled, counted, not stored) when the stored
 *   instance of its (service, event[, key]) is already null; a null with nothing stored is stored,
 *   except for a keyed event, whose null of a key with nothing stored is dropped ([STORE-KEY-2]).
 * - [STORE-KEY-3] A keyed event whose key has nothing stored for its (service, event), where
 *   maxKeys keys are stored already, takes the place of the key whose stored instance is the oldest
 *   null one (that null is removed, counted as replaced); with no null among them it is refused:
 *   handled, not stored, reported in `refused` with code KEY_LIMIT. Nothing stored is lost.
 * - [STORE-QUEUE-1] A queueing event pushes out the oldest of its (service, event) beyond
 *   maxQueueSize; a private event the oldest of its (service, event, recipient) beyond maxPerRecipient.
 * - [STORE-EXPIRE-1] An event expires at `receivedAt - age + lifetime`, its raise time plus its
 *   lifetime on the broker's clock. Expired events are never returned by `read`, and `purgeExpired`
 *   deletes them.
 * - [STORE-EXPIRE-2] An event that arrives already expired is handled (the dedup record covers it),
 *   counted, and not stored.
 */
export interface EventStore {
  append (batch: AppendBatch): Promise<AppendResult>
  /**
   * [CLUSTER-INGEST-1] True for a store that takes `AppendBatch.assignSeqs` (a store shared by
   * several brokers, where no broker can number an instance alone).
   */
  readonly assignsSeqs?: boolean
  /**
   * The highest seq handled for (service, instance), or 0. A store shared by several brokers
   * answers with a promise (a read of the dedup record); a caller awaits only a promise, so a
   * local store's answer stays synchronous ([PG-ASYNC-1]).
   */
  lastSeq (serviceId: string, instance: string): MaybePromise<number>
  /** Stored, unexpired events of `query.event` after a position, in position order. */
  read (query: ReadQuery): Promise<StoredEvent[]>
  /**
   * The highest position ever assigned, or 0. For a store shared by several brokers: the highest
   * this broker knows committed (its own commits and the doorbell of the others, [CLUSTER-FEED-1]),
   * which may trail another broker's latest commit by the doorbell's delay; `freshHead` reads it.
   */
  head (): number
  /**
   * [CLUSTER-RESET-1] The highest position committed by any broker, read from the shared storage.
   * Only stores shared by several brokers have it; the broker asks it before telling a client its
   * position is ahead of the head ([CLI-RESET-1]).
   */
  freshHead? (): Promise<number>
  /**
   * [CLUSTER-FEED-1] Stores shared by several brokers: `listener` is told every committed event,
   * this broker's and the others', in position order, each once, as soon as this broker learns of
   * it. A broker whose store has it delivers live events from it instead of from the results of its
   * own appends. Set once, before the first append.
   */
  onCommitted? (listener: (events: readonly StoredEvent[]) => void): void
  /**
   * [CLI-START-3] The position of the first stored event (of any name) received at or after `time`
   * (broker clock, `receivedAt`), or null if none. Positions are assigned in arrival order, so this
   * is a search over positions: exact while the broker's clock never stepped back. Optional: without
   * it a subscription cannot start at a time.
   */
  positionAt? (time: number): MaybePromise<number | null>
  /**
   * [CLI-START-4] The positions of the newest unexpired event of `query.event` per service, and per
   * key for a keyed event (within `query.keys` if given,
   * `query.services`, for `query.recipient`), in position order. Optional: without it a subscription
   * cannot start at the latest instances.
   */
  latestPerService? (query: Omit<ReadQuery, 'limit' | 'maxBytes' | 'after'>): MaybePromise<number[]>
  /** Number of events stored (expired but not yet purged ones included). */
  count (): number
  /** Deletes expired events; returns how many. */
  purgeExpired (now: number): Promise<number>
  /**
   * Per event name, what the store dropped since it was opened (names with nothing dropped may be
   * missing). A snapshot: later changes do not show in it.
   */
  counters (): Record<string, EventCounters>
  /**
   * [GROUP-STORE-1] Where consumer groups keep their segment marks, written in the store's group
   * commit. Optional: without it the broker refuses group subscriptions (INVALID_ARGUMENT).
   */
  readonly groups?: GroupStore
  /** Completes pending appends, then releases the backend. Further calls reject with ClosedError. */
  close (): Promise<void>
  /**
   * Events stored per event name, expired-but-unpurged ones included (for metrics, and for a site
   * reload, which removes an event only when none are held [SITE-RELOAD-2]; without it, none is removed).
   */
  storedByEvent? (): Map<string, number>
  /** [STORE-KEY-3] Keys stored per keyed event name (for metrics; optional). */
  keysByEvent? (): Map<string, number>
  /** Null while the store is open and its last commit succeeded, else why not (for /readyz; optional). */
  problem? (): string | null
  /**
   * [CLI-GAP-1] The removal epoch of `event`: it changes whenever events of that name are pushed out
   * or expired (deleted), 0 while none were since the store was opened. Optional: without it and
   * `gap`, no gap notices.
   */
  removalEpoch? (event: string): number
  /** [CLI-GAP-2] What a subscription missed among the removals after `query.sinceEpoch`, or null. */
  gap? (query: GapQuery): Gap | null
  /**
   * [CLI-GAP-2] The events of a subscription above `query.after` that expired and are not purged
   * yet (a read skips them): their count, highest position and services, or null if none.
   */
  expiredUnpurged? (query: Omit<ReadQuery, 'limit' | 'maxBytes'>): MaybePromise<ExpiredUnpurged | null>
  /** Sets (or with null clears) the observer of commit latencies (for metrics; optional). */
  observeCommits? (observer: CommitObserver | null): void
}

/**
 * Told after each successful commit, with the monotonic clock: `commitSeconds` the whole group
 * commit (writes and COMMIT), `syncSeconds` the COMMIT itself (where the fsync happens).
 */
export type CommitObserver = (commitSeconds: number, syncSeconds: number) => void

/** The bounds of [STORE-DEDUP-2], shared by every backend. */
export const DEDUP_KEY_DEFAULTS = Object.freeze({
  /** Keys remembered per (service, instance); the oldest are forgotten beyond. */
  maxDedupKeys: 10_000,
  /** Longest key, in characters. */
  maxKeyLength: 128
})

/** How a store learns each event's limits (from the site). */
export type LimitsOf = (eventName: string) => QueueLimits | undefined
