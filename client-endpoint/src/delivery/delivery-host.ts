/**
 * What the batch and concurrent delivery loops ([CLI-BATCH-*], [CLI-CONC-*]) use of the endpoint
 * core: its clock, its position bookkeeping, its retry reporting, dead letters and transactions. The
 * one-at-a-time loop stays in the core (its hot path takes nothing of this).
 */
import type { Clock, StoredEvent } from '@herald/protocol'
import type { ClientSubscription } from '../client-subscription.js'
import type { HeraldEvent } from '../herald-event.js'

/** A position write: done when it returns, or when the promise resolves. */
export type Write = void | Promise<void>

export interface DeliveryHost<Tx> {
  readonly clock: Clock
  /** True once the endpoint is closing. */
  isClosed (): boolean
  /** Records `position` as committed in memory and schedules its ack ([CLI-ACK-1]). */
  committed (sub: ClientSubscription<Tx>, position: number): void
  /** Keeps a write not waited for until it is done; a failure is reported ([CLI-BROWSER-2]). */
  track (w: Write): void
  /** [CLI-POS-5] Reserves ahead when `last` is beyond the reservation or it is older than positionSyncMs. */
  reserve (sub: ClientSubscription<Tx>, last: number): Promise<void> | undefined
  /**
   * [CLI-RETRY-1] Reports failed attempt `attempt` (`handlerError`) and waits for the backoff. False:
   * closed meanwhile.
   */
  retryWait (sub: ClientSubscription<Tx>, event: HeraldEvent, error: unknown, attempt: number): Promise<boolean>
  /**
   * [CLI-DEAD-2] Records the dead letter with the position `position` (default: the event's) and,
   * with concurrency, `done` ([CLI-CONC-3]). False: stopped (store full or failed).
   */
  giveUp (sub: ClientSubscription<Tx>, e: StoredEvent, event: HeraldEvent, attempts: number, error: unknown, position?: number, started?: number | null, done?: readonly number[]): boolean
  /** [CLI-TX-1] Runs `fn` in one transaction on the subscription's database. */
  runTransaction (sub: ClientSubscription<Tx>, fn: () => void): void
}

/** True when a handler returned a promise (refused in transactional mode). */
export function isPromise (r: unknown): boolean {
  return r !== undefined && r !== null && typeof (r as { then?: unknown }).then === 'function'
}
