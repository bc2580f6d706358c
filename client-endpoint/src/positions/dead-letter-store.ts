/**
 * Dead letters ([CLI-DEAD-1..6]): events a subscription with `maxAttempts` gave up on. A position
 * store that keeps them offers a DeadLetterStore as `deadLetters`; recording one moves the
 * subscription's position past the event in the same write, so after a crash the event is either a
 * dead letter or still to be delivered (flagged), never both, never neither ([CLI-DEAD-2]).
 */
import { PersistenceError, ErrorCode, ConfigError, eventId, type StoredEvent } from '@herald/protocol'

/** Default of `maxDeadLetters` (per store). */
export const DEFAULT_MAX_DEAD_LETTERS = 10_000

/** One dead letter as it is kept. */
export interface DeadLetter {
  /** The store's id of it, increasing, never reused. */
  readonly id: number
  /** The subscription key it was given up by. */
  readonly key: string
  /** The event as received, payload bytes as they came. */
  readonly event: StoredEvent
  /** `<instance>-<seq>` ([EVT-ID-1]). */
  readonly eventId: string
  /** Attempts made before it was given up (the last run's count, [CLI-DEAD-3]), plus failed retries. */
  readonly attempts: number
  /** The message of the last handler error. */
  readonly lastError: string
  /** When it was given up (or last failed a retry), ms since the epoch by the client's clock. */
  readonly deadAt: number
  /** Its age ([EVT-AGE-1]) when it was given up, ms: a retry hands it over aged by the time since `deadAt`. */
  readonly age: number
  /** Marked by `retry(id)`: handed to the handler on the subscription's next start ([CLI-DEAD-5]). */
  readonly retry: boolean
}

/** What the endpoint records when it gives up on an event. */
export interface NewDeadLetter {
  readonly key: string
  readonly event: StoredEvent
  readonly attempts: number
  readonly lastError: string
  readonly deadAt: number
  readonly age: number
}

/**
 * The dead letters of one position store. Synchronous (SQLite, memory); the browser's IndexedDB
 * store keeps none and `maxAttempts` is refused with it ([CLI-DEAD-6]).
 */
export interface DeadLetterStore {
  /** Most kept at once; recording one more throws a PersistenceError CAPACITY_EXCEEDED ([CLI-DEAD-4]). */
  readonly maxDeadLetters: number
  /**
   * [CLI-DEAD-2] Records the dead letter and, in the same write, the subscription's position as
   * `position` with `started` as the started mark (null: none), and with `done` ([CLI-CONC-3]: the
   * subscription's finished events above `position`, this one among them) when given. Returns its
   * id. Full: throws PersistenceError CAPACITY_EXCEEDED and writes nothing.
   */
  add (letter: NewDeadLetter, position: number, started: number | null, done?: readonly number[]): number
  /** Every dead letter (of one subscription key if given), oldest first. */
  list (key?: string): DeadLetter[]
  get (id: number): DeadLetter | null
  /** [CLI-DEAD-5] Marks it to be handed to the handler on its subscription's next start. False: no such id. */
  retry (id: number): boolean
  /** Deletes it. False: no such id. */
  discard (id: number): boolean
  /** A retry failed again: clears the mark, counts the attempt, keeps the error. */
  failed (id: number, lastError: string, at: number): void
}

/** Checks a `maxDeadLetters` option. */
export function checkMaxDeadLetters (where: string, value: number | undefined): number {
  const v = value ?? DEFAULT_MAX_DEAD_LETTERS
  if (!Number.isInteger(v) || v < 1 || v > 10_000_000) throw new ConfigError(`${where}: option "maxDeadLetters" must be an integer from 1 to 10,000,000, got ${String(value)}`)
  return v
}

/** The error when a store is full ([CLI-DEAD-4]). */
export function deadLettersFull (max: number, letter: NewDeadLetter): PersistenceError {
  return new PersistenceError(`dead letters full (${max}, option "maxDeadLetters"): cannot give up on event ${eventId(letter.event.instance, letter.event.seq)} of subscription "${letter.key}"; the subscription stops at it (discard or retry dead letters, then restart)`, { code: ErrorCode.CAPACITY_EXCEEDED })
}

/** Dead letters in memory, for the memory position store: lost with the process, bounded by `maxDeadLetters`. */
export class MemoryDeadLetters implements DeadLetterStore {
  readonly maxDeadLetters: number
  private readonly letters = new Map<number, DeadLetter>()
  private nextId = 1

  constructor (maxDeadLetters: number | undefined, private readonly writePosition: (key: string, position: number, started: number | null, done?: readonly number[]) => void) {
    this.maxDeadLetters = checkMaxDeadLetters('MemoryPositionStore', maxDeadLetters)
  }

  add (letter: NewDeadLetter, position: number, started: number | null, done?: readonly number[]): number {
    if (this.letters.size >= this.maxDeadLetters) throw deadLettersFull(this.maxDeadLetters, letter)
    const id = this.nextId++
    this.letters.set(id, { ...letter, id, eventId: eventId(letter.event.instance, letter.event.seq), retry: false })
    this.writePosition(letter.key, position, started, done)
    return id
  }

  list (key?: string): DeadLetter[] {
    return [...this.letters.values()].filter((l) => key === undefined || l.key === key)
  }

  get (id: number): DeadLetter | null {
    return this.letters.get(id) ?? null
  }

  retry (id: number): boolean {
    const l = this.letters.get(id)
    if (l === undefined) return false
    this.letters.set(id, { ...l, retry: true })
    return true
  }

  discard (id: number): boolean {
    return this.letters.delete(id)
  }

  failed (id: number, lastError: string, at: number): void {
    const l = this.letters.get(id)
    if (l !== undefined) this.letters.set(id, { ...l, retry: false, attempts: l.attempts + 1, lastError, deadAt: at, age: l.age + Math.max(0, at - l.deadAt) })
  }

  clear (): void {
    this.letters.clear()
  }
}
