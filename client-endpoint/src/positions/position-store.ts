/**
 * Where a client endpoint keeps, per subscription, the position of the last event its handler
 * finished, and the position of an event whose handler started but did not finish ([CLI-POS-*]).
 * O(subscriptions), never O(events). Every backend passes `describePositionStoreConformance`.
 */

/** What is recorded for one subscription key. */
export interface SubscriptionPosition {
  /** Position of the last event whose handler finished (0: none yet). */
  readonly position: number
  /** Position of an event whose handler started and has not been committed, or null. */
  readonly started: number | null
}

/**
 * Synchronous by design (like better-sqlite3), so a commit can sit inside the application's own
 * transaction.
 *
 * - [CLI-POS-1] `commit(key, p)` records p as the position and clears `started`.
 * - [CLI-POS-2] `markStarted(key, p)` records p as started and leaves the position as it was.
 * - [CLI-POS-3] A durable backend's records survive the process being killed right after the call.
 * - [CLI-POS-4] `advance(key, c, s)` records c as the position and s as started, in one write.
 */
export interface PositionStore {
  get (key: string): SubscriptionPosition | null
  markStarted (key: string, position: number): void
  commit (key: string, position: number): void
  /**
   * [CLI-POS-4] `commit(key, committed)` and `markStarted(key, started)` in one write: what a client
   * does between two events it handles back to back, at the cost of one write instead of two.
   */
  advance (key: string, committed: number, started: number): void
  /** Whether records survive a restart. */
  readonly durable: boolean
  close (): void
}
