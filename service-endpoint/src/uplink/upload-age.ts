/**
 * Each event's age at upload ([FRAME-UP-1], [SVC-AGE-1] in docs/protocol.md): how long ago it was
 * raised, measured on this gateway's own clock when its UP frame is built. The broker counts the
 * event's lifetime from `receivedAt - age`, so the gateway's wall clock never meets the broker's.
 *
 * An event raised in this process is measured on the monotonic clock (`Clock.monotonic`), so that
 * setting the system time between the raise and the upload does not change its age. Storing a
 * monotonic time per event would cost memory per event; instead the class keeps *epochs*: for every
 * run of seqs raised while `wall - monotonic` stayed the same (within EPOCH_TOLERANCE_MS), that
 * offset. An event's monotonic raise time is then `raisedAt - offset`. A new epoch starts only when
 * the wall clock jumps (or drifts by more than the tolerance), and epochs whose events are all
 * acknowledged are forgotten, so there are usually one or two.
 *
 * An event raised before this process started (read back from SQLite after a restart), or one whose
 * epoch was dropped because more than MAX_EPOCHS were kept, has only its `raisedAt`: its age is
 * `now() - raisedAt` on the wall clock, which is right as long as the wall clock did not jump while
 * the process was down. Ages are whole ms and never negative (a wall clock set back gives 0).
 */
import type { Clock, RaisedEvent } from '@herald/protocol'

/** A change of `wall - monotonic` up to this is drift, not a jump: it starts no new epoch. */
export const EPOCH_TOLERANCE_MS = 100
/** Most epochs kept; past it the oldest is dropped and its events fall back to the wall clock. */
export const MAX_EPOCHS = 1024

export class UploadAge {
  /** First seq of each epoch, increasing. */
  private readonly starts: number[] = []
  /** `wall - monotonic` at the raise of each epoch's events. */
  private readonly offsets: number[] = []
  private readonly mono: () => number

  /**
   * @param clock the endpoint's clock; without `monotonic`, `now()` stands in for it (ages are then
   *   plain wall-clock differences).
   * @param bornAfter the highest seq raised before this process: those events have no epoch.
   */
  constructor (private readonly clock: Clock, private readonly bornAfter: number) {
    this.mono = clock.monotonic === undefined ? () => clock.now() : () => (clock.monotonic as () => number).call(clock)
  }

  /** Events from `firstSeq` on are being raised now, with `raisedAt = wallNow`. */
  raised (firstSeq: number, wallNow: number): void {
    const offset = wallNow - this.mono()
    const n = this.offsets.length
    if (n > 0 && Math.abs(offset - (this.offsets[n - 1] as number)) <= EPOCH_TOLERANCE_MS) return
    if (n > 0 && (this.starts[n - 1] as number) === firstSeq) {
      this.offsets[n - 1] = offset
      return
    }
    this.starts.push(firstSeq)
    this.offsets.push(offset)
    if (this.starts.length > MAX_EPOCHS) {
      this.starts.shift()
      this.offsets.shift()
    }
  }

  /** The event's age now, in whole ms, >= 0. */
  ageOf (e: RaisedEvent): number {
    const i = e.seq > this.bornAfter ? this.epochOf(e.seq) : -1
    const age = i < 0
      ? this.clock.now() - e.raisedAt
      : this.mono() - (e.raisedAt - (this.offsets[i] as number))
    return age > 0 ? Math.round(age) : 0
  }

  /** Every event up to `upTo` was acknowledged: epochs that hold only such events are forgotten. */
  forget (upTo: number): void {
    let drop = 0
    while (drop + 1 < this.starts.length && (this.starts[drop + 1] as number) <= upTo + 1) drop++
    if (drop > 0) {
      this.starts.splice(0, drop)
      this.offsets.splice(0, drop)
    }
  }

  /** Epochs held (for tests). */
  get epochs (): number {
    return this.starts.length
  }

  /** Index of the epoch `seq` belongs to, or -1 if its epoch was dropped. */
  private epochOf (seq: number): number {
    const starts = this.starts
    let lo = 0
    let hi = starts.length - 1
    if (hi < 0 || seq < (starts[0] as number)) return -1
    // usually the newest epoch: check it first
    if (seq >= (starts[hi] as number)) return hi
    while (lo < hi) {
      const mid = (lo + hi + 1) >>> 1
      if ((starts[mid] as number) <= seq) lo = mid
      else hi = mid - 1
    }
    return lo
  }
}
