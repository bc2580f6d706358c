/**
 * `maxAttempts` and `backoff` of a subscription ([CLI-DEAD-1]): how long a failing handler is retried
 * and when its event is given up on, to the position store's dead letters. Without `maxAttempts` a
 * handler is retried forever ([CLI-RETRY-1]).
 */
import { ConfigError } from '@herald/protocol'
import type { DeadLetterStore } from './positions/dead-letter-store.js'

/** subscribe() option `backoff`: the delays between the attempts of one event. */
export interface BackoffPolicy {
  /** Delay before the second attempt, ms. Default: the endpoint's `retryInitialMs` (100). */
  readonly initialMs?: number
  /** Largest delay, ms. Default: the endpoint's `retryMaxMs` (30,000). */
  readonly maxMs?: number
  /** Growth per attempt, 1 to 10. Default 2. */
  readonly factor?: number
}

/** A subscription's checked policy. */
export interface AttemptPolicy {
  /** Attempts before giving up; null: never ([CLI-RETRY-1]). */
  readonly maxAttempts: number | null
  readonly initialMs: number
  readonly maxMs: number
  readonly factor: number
}

function int (name: string, v: unknown, min: number, max: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) throw new ConfigError(`subscribe: option "${name}" must be an integer from ${min} to ${max}, got ${JSON.stringify(v)}`)
  return v
}

/** Checks the options; a ConfigError names the wrong one. `store`: the subscription's dead letters, if its position store keeps them. */
export function attemptPolicy (
  options: { readonly maxAttempts?: number, readonly backoff?: BackoffPolicy },
  defaults: { readonly initialMs: number, readonly maxMs: number },
  store: DeadLetterStore | undefined
): AttemptPolicy {
  const maxAttempts = options.maxAttempts === undefined ? null : int('maxAttempts', options.maxAttempts, 1, 1_000_000)
  // [CLI-DEAD-6] a store without dead letters (the browser's IndexedDB) cannot give up on an event safely
  if (maxAttempts !== null && store === undefined) throw new ConfigError('subscribe: option "maxAttempts" needs a position store that keeps dead letters (SQLite or memory); this one keeps none (IndexedDB)')
  const b = options.backoff ?? {}
  if (typeof b !== 'object' || b === null) throw new ConfigError('subscribe: option "backoff" must be an object { initialMs, maxMs, factor }')
  const initialMs = int('backoff.initialMs', b.initialMs ?? defaults.initialMs, 0, 3_600_000)
  const maxMs = int('backoff.maxMs', b.maxMs ?? Math.max(defaults.maxMs, initialMs), initialMs, 86_400_000)
  const factor = b.factor ?? 2
  if (typeof factor !== 'number' || !(factor >= 1 && factor <= 10)) throw new ConfigError(`subscribe: option "backoff.factor" must be a number from 1 to 10, got ${JSON.stringify(factor)}`)
  return { maxAttempts, initialMs, maxMs, factor }
}

/**
 * The delay after failed attempt `attempt` (1-based): a random value in [base/2, base], base =
 * initialMs * factor^(attempt-1) capped at maxMs (with factor 2 and no `backoff`, the same delays as
 * before [CLI-RETRY-1]). Finite for any attempt: a growth that overflows is capped at maxMs.
 */
export function attemptDelay (attempt: number, p: AttemptPolicy, random: () => number): number {
  const base = p.initialMs === 0 ? 0 : Math.min(p.maxMs, p.initialMs * p.factor ** (attempt - 1))
  return Math.round(base / 2 + random() * base / 2)
}

/** The message of what a handler threw, as kept with a dead letter. */
export function errorMessage (error: unknown): string {
  if (error instanceof Error) return error.message
  try {
    return String(error)
  } catch {
    return 'unprintable error'
  }
}
