/**
 * Where a client endpoint keeps, per subscription, the position of the last event its handler
 * finished, and which events after it may have been started ([CLI-POS-*]).
 * O(subscriptions), never O(events). Every backend passes `describePositionStoreConformance`.
 */
import type { HeraldError } from '@herald/protocol'
import type { DeadLetterStore } from './dead-letter-store.js'

/** What is recorded for one subscription key. */
export interface SubscriptionPosition {
  /** Position of the last event whose handler finished (0: none yet). */
  readonly position: number
  /**
   * Null, or: every event of the subscription after `position`, up to and including this one, may
   * have been started without being committed ([CLI-REDELIVER-1]). After a process crash that is the
   * one event whose handler was running; after a power loss, every event reserved ([CLI-POS-5]).
   */
  readonly started: number | null
  /**
   * [CLI-CONC-3] With `concurrency` > 1: events after `position` (up to `started`) whose handlers
   * finished and were recorded, ascending; they are not delivered again. Absent or empty otherwise.
   * At most the subscription's window of them.
   */
  readonly done?: readonly number[]
}

/**
 * `get` is synchronous; the writes are synchronous by design (like better-sqlite3, so a commit can sit
 * inside the application's own transaction) or, for an asynchronous backend (IndexedDB), return a
 * promise ([CLI-BROWSER-2]): such a store answers `get` from what it loaded when it opened and from
 * the writes made since, and does its writes in the order they were made. The endpoint waits only
 * for a promise actually returned, so a synchronous store costs no extra turn per event.
 *
 * - [CLI-POS-1] `commit(key, p)` records p as the position and clears `started`.
 * - [CLI-POS-2] `markStarted(key, p)` records p as started and leaves the position as it was.
 * - [CLI-POS-3] A durable backend's records survive the process being killed right after the call
 *   (an asynchronous backend: once its promise resolved).
 * - [CLI-POS-4] `advance(key, c, s)` records c as the position and s as started, in one write.
 * - [CLI-POS-5] `reserve(key, upTo)` records that the handlers of events up to `upTo` may start; a
 *   backend durable against power loss has made it, and every call before it, durable when it returns.
 */
export interface PositionStore {
  get (key: string): SubscriptionPosition | null
  markStarted (key: string, position: number): void | Promise<void>
  commit (key: string, position: number): void | Promise<void>
  /**
   * [CLI-POS-4] `commit(key, committed)` and `markStarted(key, started)` in one write: what a client
   * does between two events it handles back to back, at the cost of one write instead of two.
   */
  advance (key: string, committed: number, started: number): void | Promise<void>
  /**
   * [CLI-POS-5] Before the handlers of a received batch run, the client reserves up to the batch's
   * last position. It neither changes the position nor `started` as `get` returns them while the
   * machine stays up; after a power loss (a new boot), `get` returns as started every reserved event
   * after the surviving position. Leaves nothing to do for a store that does not survive power loss;
   * a store without it is taken as one.
   */
  reserve? (key: string, upTo: number): void | Promise<void>
  /**
   * [CLI-CONC-3] Records `committed` as the position (a low-water mark), `started` as started (null:
   * none) and `done`, ascending positions above `committed` whose handlers finished, in one write.
   * `commit` and `advance` clear `done`. A store without it refuses `concurrency` > 1 (IndexedDB).
   */
  settle? (key: string, committed: number, started: number | null, done: readonly number[]): void | Promise<void>
  /** Whether records survive a restart. */
  readonly durable: boolean
  /**
   * [CLI-DEAD-1] Where dead letters go, for a store that keeps them (SQLite, memory); without it a
   * subscription with `maxAttempts` is refused ([CLI-DEAD-6]).
   */
  readonly deadLetters?: DeadLetterStore
  /**
   * [CLI-BROWSER-3] For a store that can be taken away while open (another tab took its lock):
   * resolves with the error when that happened. The endpoint then stops and reports it.
   */
  readonly lost?: Promise<HeraldError>
  /** Waits for the writes made, then releases the store. */
  close (): void | Promise<void>
}
