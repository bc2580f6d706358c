/**
 * Service persistence ([SVC-PERSIST-*] in docs/protocol.md): where a service endpoint keeps raised
 * events until the broker has durably acknowledged them. Every backend passes
 * `describeServicePersistenceConformance` in `../testing/`.
 */
import type { PersistenceError, RaisedEvent } from '@herald/protocol'

/** What to do when a level is full ([SVC-CAPACITY-1]). */
export const OverflowPolicy = {
  /** Drop the oldest unacknowledged events to make room (default); they are reported. */
  dropOldest: 'dropOldest',
  /** Refuse the new event: raise() rejects with CAPACITY_EXCEEDED. */
  reject: 'reject'
} as const
export type OverflowPolicy = (typeof OverflowPolicy)[keyof typeof OverflowPolicy]

/**
 * Limits of source marks ([SVC-MARK-1]). Lengths are in characters (Unicode code points); keys and
 * values must be valid Unicode, so that they are stored as UTF-8 and read back unchanged.
 */
export const MARK_LIMITS = Object.freeze({
  /** Longest key, in characters. */
  keyChars: 200,
  /** Longest value, in characters. */
  valueChars: 200,
  /** Most keys in one append. */
  perAppend: 1_000,
  /** Most distinct keys a store holds. */
  keys: 100_000
})

/** What one append did besides storing the new events. */
export interface AppendOutcome {
  /** Older events removed to make room under the dropOldest policy, in seq order. */
  readonly dropped: readonly RaisedEvent[]
}

/** Counters a persistence exposes. */
export interface PersistenceStats {
  /** Unacknowledged events held. */
  readonly count: number
  /** Bytes they occupy by `eventSize`. */
  readonly bytes: number
  /** The capacity in bytes. */
  readonly capacityBytes: number
  /** Whether events held here survive a restart of the process. */
  readonly durable: boolean
}

/**
 * Storage of unacknowledged events, in seq order.
 *
 * - [SVC-PERSIST-1] `instance` identifies this store's lifetime: a new file (or a new memory store)
 *   gets a new random instance id; reopening the same file gives the same one.
 * - [SVC-PERSIST-2] `lastSeq()` is the highest seq ever appended in this instance (0 if none); it
 *   never goes back, even when every event has been acknowledged or dropped, and survives reopening.
 * - [SVC-PERSIST-3] `append` resolves when the events are durable (fsync'd for a durable backend);
 *   concurrent calls share one transaction and one sync (group commit). Seqs must be greater than
 *   `lastSeq()` and increasing, else it rejects with INVALID_ARGUMENT and stores nothing.
 *   `supersede` lists seqs of older unsent events to delete in the same transaction.
 * - [SVC-PERSIST-4] When an append would take the held bytes over `capacityBytes`: under dropOldest,
 *   the oldest events are removed in the same transaction and returned in `dropped`; under reject, it
 *   rejects with a PersistenceError CAPACITY_EXCEEDED and stores nothing. A single event larger than
 *   the whole capacity is always rejected.
 * - [SVC-PERSIST-5] `read(after, limit)` returns held events with seq > after, in seq order: only
 *   events whose append has resolved.
 * - [SVC-PERSIST-6] `acknowledge(upTo)` removes every event with seq <= upTo; `remove(seqs)` removes
 *   those events (expired before upload, or rejected by the broker). Neither needs a sync of its own:
 *   losing one in a crash only means the broker sees a duplicate, which it discards.
 * - [SVC-MARK-1] `marks` (source key -> value, opaque strings) are upserted in the same transaction
 *   as the events: if the append rejects, none of them is written. An append of no events and some
 *   marks only writes the marks (and still resolves only when durable). Concurrent appends apply
 *   their marks in call order, so the last writer of a key wins. `marks()` returns the current
 *   marks: loaded at open by a durable backend, and reflecting every resolved append. Acknowledging,
 *   removing and dropping events never removes a mark. Over MARK_LIMITS (key or value too long, not
 *   a string, more than `perAppend` keys, or more than `keys` distinct keys held after the append),
 *   the append rejects with INVALID_ARGUMENT and stores nothing.
 * - A failing backend rejects with a PersistenceError PERSISTENCE_FAILED carrying the cause.
 */
export interface ServicePersistence {
  readonly instance: string
  lastSeq (): number
  append (events: readonly RaisedEvent[], supersede?: readonly number[], marks?: ReadonlyMap<string, string>): Promise<AppendOutcome>
  /** [SVC-MARK-1] A copy of the current marks. */
  marks (): ReadonlyMap<string, string>
  read (after: number, limit: number): Promise<RaisedEvent[]>
  acknowledge (upTo: number): Promise<void>
  remove (seqs: readonly number[]): Promise<void>
  stats (): PersistenceStats
  close (): Promise<void>
  /**
   * Optional, for backends with a durable level that can fail over to memory ([SVC-PERSIST-FAIL-1]):
   * `listener` is told once, with the error and how many events could not be kept.
   */
  onLevelFailure? (listener: (info: { readonly error: PersistenceError, readonly lost: number }) => void): void
}
