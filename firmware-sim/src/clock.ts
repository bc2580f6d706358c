/**
 * Time for the simulator: a clock with timers, injectable so that unit tests move time by hand
 * ({@link ManualClock}) while the CLI uses the real one.
 */

/** A timer that can be cancelled. */
export interface TimerHandle { cancel (): void }

/** A monotonic clock in milliseconds, with one-shot timers. */
export interface SimClock {
  now (): number
  /** Calls `fn` once, `delayMs` from now (0 or more). */
  setTimer (fn: () => void, delayMs: number): TimerHandle
}

/** The real clock: `performance.now()` and `setTimeout`. */
export const realClock: SimClock = {
  now: () => performance.now(),
  setTimer (fn, delayMs) {
    const t = setTimeout(fn, Math.max(0, delayMs))
    return { cancel: () => { clearTimeout(t) } }
  }
}

interface ManualTimer { at: number, order: number, fn: () => void, cancelled: boolean }

/** A clock tests move by hand: {@link advance} runs the timers that fall due, in time order. */
export class ManualClock implements SimClock {
  private t: number
  private order = 0
  private timers: ManualTimer[] = []

  constructor (start = 0) {
    this.t = start
  }

  now (): number {
    return this.t
  }

  setTimer (fn: () => void, delayMs: number): TimerHandle {
    const timer: ManualTimer = { at: this.t + Math.max(0, delayMs), order: this.order++, fn, cancelled: false }
    this.timers.push(timer)
    return { cancel: () => { timer.cancelled = true } }
  }

  /** Moves time forward by `ms`, running every timer due on the way (also ones they set). */
  advance (ms: number): void {
    const end = this.t + ms
    for (;;) {
      this.timers = this.timers.filter((x) => !x.cancelled)
      let next: ManualTimer | undefined
      for (const x of this.timers) {
        if (x.at <= end && (next === undefined || x.at < next.at || (x.at === next.at && x.order < next.order))) next = x
      }
      if (next === undefined) break
      this.t = Math.max(this.t, next.at)
      next.cancelled = true
      next.fn()
    }
    this.t = end
  }

  /** Timers waiting. */
  get pending (): number {
    return this.timers.filter((x) => !x.cancelled).length
  }
}
