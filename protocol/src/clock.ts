/**
 * Time for libraries: the wall clock, a monotonic clock, and the timers. Libraries never call
 * Date.now(), setTimeout or setImmediate directly, so unit tests move time by hand (ManualClock)
 * and the same code runs in Node and in a browser.
 */

/** A timer that can be cancelled (cancelling twice, or after it ran, does nothing). */
export interface TimerHandle { cancel (): void }

export interface Clock {
  /** Milliseconds since the epoch (the wall clock: it may jump when the system time is set). */
  now (): number
  /**
   * Milliseconds on a monotonic clock with an arbitrary origin: never jumps, only moves forward.
   * Used to measure how long ago something happened in this process (an event's age at upload,
   * [FRAME-UP-1]). A clock without it is treated as steady: `now()` is used instead.
   */
  monotonic? (): number
  /** Calls `fn` once, `delayMs` (0 or more) from now, unless cancelled first. */
  setTimer (fn: () => void, delayMs: number): TimerHandle
  /**
   * Calls `fn` soon, after the work in progress and the I/O already waiting (Node's setImmediate):
   * how a burst of calls is batched into one frame.
   */
  defer (fn: () => void): void
}

const deferImpl: (fn: () => void) => void = typeof (globalThis as { setImmediate?: unknown }).setImmediate === 'function'
  ? (fn) => { (globalThis as unknown as { setImmediate: (f: () => void) => void }).setImmediate(fn) }
  : (fn) => { setTimeout(fn, 0) }

/** The system clock: `Date.now()`, `performance.now()`, `setTimeout`, and setImmediate where there is one. */
export const systemClock: Clock = {
  now: () => Date.now(),
  monotonic: () => performance.now(),
  setTimer (fn, delayMs) {
    const t = setTimeout(fn, Math.max(0, delayMs))
    return { cancel: () => { clearTimeout(t) } }
  },
  defer: deferImpl
}

interface ManualTimer { at: number, order: number, fn: () => void, cancelled: boolean }

/**
 * A clock tests move by hand. `advance` moves the wall clock and the monotonic clock together (time
 * passes), running the deferred calls and the timers that fall due on the way, in time order;
 * `set` moves only the wall clock (someone set the system time: a jump). Timers run on the
 * monotonic clock, as real ones do.
 */
export class ManualClock implements Clock {
  private mono = 0
  private order = 0
  private timers: ManualTimer[] = []
  private deferred: Array<() => void> = []

  constructor (private t = 1_700_000_000_000) {}
  now (): number { return this.t }
  monotonic (): number { return this.mono }

  setTimer (fn: () => void, delayMs: number): TimerHandle {
    const timer: ManualTimer = { at: this.mono + Math.max(0, delayMs), order: this.order++, fn, cancelled: false }
    this.timers.push(timer)
    return { cancel: () => { timer.cancelled = true } }
  }

  defer (fn: () => void): void {
    this.deferred.push(fn)
  }

  /** Runs the deferred calls (also those they defer), without moving time. */
  runDeferred (): void {
    while (this.deferred.length > 0) {
      const batch = this.deferred
      this.deferred = []
      for (const fn of batch) fn()
    }
  }

  /** Moves time forward by `ms`, running the deferred calls and every timer due on the way (also ones they set). */
  advance (ms: number): void {
    const end = this.mono + ms
    this.runDeferred()
    for (;;) {
      this.timers = this.timers.filter((x) => !x.cancelled)
      let next: ManualTimer | undefined
      for (const x of this.timers) {
        if (x.at <= end && (next === undefined || x.at < next.at || (x.at === next.at && x.order < next.order))) next = x
      }
      if (next === undefined) break
      const step = Math.max(0, next.at - this.mono)
      this.mono += step
      this.t += step
      next.cancelled = true
      next.fn()
      this.runDeferred()
    }
    this.t += end - this.mono
    this.mono = end
  }

  /** Timers waiting. */
  get pendingTimers (): number {
    return this.timers.filter((x) => !x.cancelled).length
  }

  /** The delay until the next timer, or null if none waits. */
  get nextTimerInMs (): number | null {
    let at: number | null = null
    for (const x of this.timers) if (!x.cancelled && (at === null || x.at < at)) at = x.at
    return at === null ? null : at - this.mono
  }

  set (t: number): void { this.t = t }
}
