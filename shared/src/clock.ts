/** An injectable clock: libraries never call Date.now() directly, so tests can move time. */
export interface Clock {
  /** Milliseconds since the epoch (the wall clock: it may jump when the system time is set). */
  now (): number
  /**
   * Milliseconds on a monotonic clock with an arbitrary origin: never jumps, only moves forward.
   * Used to measure how long ago something happened in this process (an event's age at upload,
   * [FRAME-UP-1]). A clock without it is treated as steady: `now()` is used instead.
   */
  monotonic? (): number
}

/** The system clock: `Date.now()`, and `performance.now()` as its monotonic clock. */
export const systemClock: Clock = { now: () => Date.now(), monotonic: () => performance.now() }

/**
 * A clock tests move by hand. `advance` moves the wall clock and the monotonic clock together (time
 * passes); `set` moves only the wall clock (someone set the system time: a jump).
 */
export class ManualClock implements Clock {
  private mono = 0
  constructor (private t = 1_700_000_000_000) {}
  now (): number { return this.t }
  monotonic (): number { return this.mono }
  advance (ms: number): void {
    this.t += ms
    this.mono += ms
  }

  set (t: number): void { this.t = t }
}
