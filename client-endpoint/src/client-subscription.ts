/** One subscription of a client endpoint: its filters, its queue of received events, its handler loop. */
import type { StartFrom, StoredEvent } from '@herald/protocol'
import type { HeraldEvent } from './herald-event.js'
import type { PositionStore } from './positions/position-store.js'
import type { AttemptPolicy } from './dead-letter-policy.js'
import type { BatchHandler } from './delivery/delivery-options.js'

/** A handler: runs one event at a time per subscription, in order. Throwing means "retry this event". */
export type EventHandler = (event: HeraldEvent) => void | Promise<void>

/** A received event waiting for the handler, with what is needed to compute its age. */
export interface QueuedEvent {
  readonly event: StoredEvent
  /** Age when the broker sent it (broker clock). */
  readonly ageAtSend: number
  /** Local clock when it arrived. */
  readonly arrivedAt: number
}

export class ClientSubscription<Tx = never> {
  /** The id of the current wire subscription; 0 when none (offline or not yet sent). */
  wireId = 0
  /** The position of the last event committed (cached from the store). */
  committed = 0
  /**
   * From an earlier run: every event up to this position (after the committed one) may have been
   * handled and is flagged redelivered ([CLI-REDELIVER-1]); null once passed.
   */
  crashStarted: number | null = null
  /** The highest position reserved in the position store by this process ([CLI-POS-5]); 0: none. */
  reserved = 0
  /** When it was reserved (the endpoint's clock). */
  reservedAt = 0
  readonly queue: QueuedEvent[] = []
  queueHead = 0
  processing = false
  ackDue = false
  closed = false
  delivered = 0
  redelivered = 0
  retries = 0
  /** Events given up on, to the dead letters ([CLI-DEAD-1]). */
  deadLettered = 0
  /** subscribe() options `maxAttempts` and `backoff`; set by subscribe(). */
  attempts: AttemptPolicy | null = null
  /** [CLI-GAP-3] gap notices received, and the events they said were missed. */
  gaps = 0
  missed = 0
  /** [CLI-REPLAY-2] While a replay runs: the position handled when it was reset; events up to it are flagged `replay`. */
  replayUntil: number | null = null
  /** [CLI-REPLAY-1] A reset to a start the broker resolves ('new', 'latest', a time): sent with the next subscription, then cleared. */
  resetStart: StartFrom | null = null
  /** [CLI-BATCH-1] subscribe() option `batch` and the batch handler (then `handler` hands it one event); null: one at a time. */
  batch: { readonly maxEvents: number, readonly maxWaitMs: number, readonly handler: BatchHandler } | null = null
  /** [CLI-CONC-1] subscribe() option `concurrency`, and the sequencing key of an event ([CLI-CONC-2]). */
  concurrency = 1
  sequenceOf: ((e: StoredEvent) => string) | null = null
  /** [CLI-CONC-3] From an earlier run: events after the committed position already handled (not delivered again); null once passed. */
  doneBefore: Set<number> | null = null
  /** While a batch waits to fill ([CLI-BATCH-3]): called when an event is queued. */
  wake: (() => void) | null = null
  /** While a failed handler waits for its retry: ends the wait now (close, unsubscribe). */
  stopRetryWait: (() => void) | null = null
  /** The other waits of the batch and concurrent loops (a batch filling, concurrent retries); ended with the retry wait. */
  readonly stops = new Set<() => void>()
  private idleWaiters: Array<() => void> = []
  settle: { resolve: () => void, reject: (err: Error) => void } | null = null
  /**
   * The broker refused it for access (NOT_AUTHORIZED) and it waits to be granted ([SITE-RELOAD-5]):
   * sent again on the broker's `accessGranted` notice and after every reconnect.
   */
  waitingForAccess = false
  /** subscribe() option `waitForAccess`: a first refusal for access waits too, instead of rejecting. */
  waitForAccess = false
  /** [CLI-KEY-1] subscribe() option `keys`: only these replacing keys, sorted; null for all. */
  keys: readonly string[] | null = null

  constructor (
    readonly key: string,
    readonly event: string,
    readonly services: readonly string[] | null,
    readonly start: StartFrom,
    readonly window: number,
    readonly handler: EventHandler,
    readonly positions: PositionStore,
    /** The application's database in transactional mode, else null. */
    readonly transaction: Tx | null
  ) {}

  get pending (): number {
    return this.queue.length - this.queueHead
  }

  take (): QueuedEvent | undefined {
    if (this.queueHead >= this.queue.length) return undefined
    const item = this.queue[this.queueHead++]
    if (this.queueHead > 1024 && this.queueHead * 2 > this.queue.length) {
      this.queue.splice(0, this.queueHead)
      this.queueHead = 0
    }
    return item
  }

  /** Drops what was received but not handled: it is sent again after resubscribing. */
  clearQueue (): void {
    this.queue.length = 0
    this.queueHead = 0
  }

  /** Ends every wait now (close, unsubscribe, reset). */
  stopWaits (): void {
    this.stopRetryWait?.()
    for (const stop of [...this.stops]) stop()
  }

  /** Resolves when no handler is running. */
  idle (): Promise<void> {
    if (!this.processing) return Promise.resolve()
    return new Promise((resolve) => { this.idleWaiters.push(resolve) })
  }

  markIdle (): void {
    this.processing = false
    for (const w of this.idleWaiters.splice(0)) w()
  }
}
