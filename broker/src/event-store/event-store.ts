/**
 * The broker's event storage ([STORE-*] in docs/protocol.md). Every backend passes
 * `describeEventStoreConformance` in `../testing/`.
 */
import type { Category, RaisedEvent, StoredEvent } from '@herald/shared'

/** What the store needs to know of an event name to bound its queues. */
export interface QueueLimits {
  readonly category: Category
  /** Lifetime in ms; null for events that never expire (replacing). */
  readonly lifetimeMs: number | null
  /** Most events kept per (service, event) for queueing events. Replacing always keeps 1. */
  readonly maxQueueSize: number
  /** Most events kept per (service, event, recipient) for private events. */
  readonly maxPerRecipient: number
}

/** The accepted events of one UP frame. */
export interface AppendBatch {
  readonly serviceId: string
  readonly instance: string
  /** Events to store, seq increasing; each name has limits. */
  readonly events: readonly RaisedEvent[]
  /**
   * The highest seq this frame handled, including events the broker rejected. The store records it
   * as handled in the same transaction ([STORE-DEDUP-1]), so a resent rejected event is not re-judged.
   */
  readonly handledUpTo: number
  /** The broker's clock when the frame arrived; becomes each event's receivedAt. */
  readonly receivedAt: number
}

/** What one append did. */
export interface AppendResult {
  /** The events newly stored, with their positions, in order. */
  readonly stored: readonly StoredEvent[]
  /** Events skipped because their seq was already handled for (service, instance). */
  readonly duplicates: number
  /** The highest seq handled for (service, instance) after this append. */
  readonly lastSeq: number
}

/** A read of stored events for one subscription. */
export interface ReadQuery {
  readonly event: string
  /** Only events with position > after. */
  readonly after: number
  /** Only events from these services; null for all. */
  readonly services: ReadonlySet<string> | null
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
 * - [STORE-POS-1] Positions are assigned in append order, increase strictly, are never reused (not
 *   even after the newest events are deleted) and survive restarts.
 * - [STORE-REPLACE-1] A replacing event removes every older instance of its (service, event).
 * - [STORE-QUEUE-1] A queueing event pushes out the oldest of its (service, event) beyond
 *   maxQueueSize; a private event the oldest of its (service, event, recipient) beyond maxPerRecipient.
 * - [STORE-EXPIRE-1] Expired events are never returned by `read`, and `purgeExpired` deletes them.
 */
export interface EventStore {
  append (batch: AppendBatch): Promise<AppendResult>
  /** The highest seq handled for (service, instance), or 0. */
  lastSeq (serviceId: string, instance: string): number
  /** Stored, unexpired events of `query.event` after a position, in position order. */
  read (query: ReadQuery): Promise<StoredEvent[]>
  /** The highest position ever assigned, or 0. */
  head (): number
  /** Number of events stored (expired but not yet purged ones included). */
  count (): number
  /** Deletes expired events; returns how many. */
  purgeExpired (now: number): Promise<number>
  /** Completes pending appends, then releases the backend. Further calls reject with ClosedError. */
  close (): Promise<void>
}

/** How a store learns each event's limits (from the site). */
export type LimitsOf = (eventName: string) => QueueLimits | undefined
