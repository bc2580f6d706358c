/** Exponential backoff with full jitter ([SVC-RECONNECT-1]). */
export interface BackoffOptions {
  /** First delay in ms. */
  readonly initialMs: number
  /** Largest delay in ms. */
  readonly maxMs: number
}

/** The delay before attempt `attempt` (0-based): a random value in [base/2, base], base = initial * 2^attempt capped at max. */
export function backoffDelay (attempt: number, opts: BackoffOptions, random: () => number = Math.random): number {
  const base = Math.min(opts.maxMs, opts.initialMs * 2 ** Math.min(attempt, 30))
  return Math.round(base / 2 + random() * base / 2)
}
