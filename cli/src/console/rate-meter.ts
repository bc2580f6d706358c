/** Events per second over a sliding window, in a fixed ring of buckets (bounded memory). */

/** Defaults of RateMeterOptions. */
export const RATE_METER_DEFAULTS = Object.freeze({
  windowMs: 5000,
  buckets: 10
})

/** The window a RateMeter measures over. */
export interface RateMeterOptions {
  /** The window the rate is taken over, ms. Default 5,000. */
  readonly windowMs?: number
  /** Buckets the window is cut into. Default 10. */
  readonly buckets?: number
}

/** Counts events in time buckets and gives the rate over the last `windowMs`. */
export class RateMeter {
  readonly windowMs: number
  private readonly bucketMs: number
  private readonly counts: number[]
  private readonly ids: number[]

  /** `startedAt`: when counting began (ms); before a full window has passed the rate is over the time so far. */
  constructor (private readonly startedAt: number, options: RateMeterOptions = {}) {
    this.windowMs = options.windowMs ?? RATE_METER_DEFAULTS.windowMs
    const n = options.buckets ?? RATE_METER_DEFAULTS.buckets
    if (!Number.isInteger(n) || n < 1 || n > 1000) throw new RangeError('RateMeter: buckets must be a whole number from 1 to 1,000')
    if (!(this.windowMs >= n)) throw new RangeError('RateMeter: windowMs must be at least one ms per bucket')
    this.bucketMs = this.windowMs / n
    this.counts = new Array<number>(n).fill(0)
    this.ids = new Array<number>(n).fill(-1)
  }

  /** Counts `n` events at time `now` (ms). */
  record (now: number, n = 1): void {
    const id = Math.floor(now / this.bucketMs)
    const i = id % this.counts.length
    if (this.ids[i] !== id) {
      this.ids[i] = id
      this.counts[i] = 0
    }
    this.counts[i] = (this.counts[i] ?? 0) + n
  }

  /**
   * Events per second at `now`: the events of the last `windowMs` (whole buckets, the current one
   * included) over the time they cover, at least one second so that a first event does not read as
   * a burst.
   */
  rate (now: number): number {
    const current = Math.floor(now / this.bucketMs)
    const oldest = current - this.counts.length + 1
    let sum = 0
    for (let i = 0; i < this.counts.length; i++) {
      const id = this.ids[i] ?? -1
      if (id >= oldest && id <= current) sum += this.counts[i] ?? 0
    }
    const span = now - Math.max(oldest * this.bucketMs, this.startedAt)
    return sum / (Math.max(span, 1000) / 1000)
  }
}
