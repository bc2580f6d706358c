/**
 * Time for the simulator: a monotonic clock with one-shot timers, injectable so that unit tests move
 * time by hand ({@link ManualClock}, @herald/protocol's, starting at 0) while the CLI uses the real one.
 */
import { ManualClock as ProtocolManualClock, systemClock, type Clock, type TimerHandle } from '@herald/protocol'

export type { TimerHandle }

/** A monotonic clock in milliseconds (`now`), with one-shot timers. */
export type SimClock = Pick<Clock, 'now' | 'setTimer'>

/** The real clock: `performance.now()` and `setTimeout`. */
export const realClock: SimClock = {
  now: () => performance.now(),
  setTimer: (fn, delayMs) => systemClock.setTimer(fn, delayMs)
}

/** A clock tests move by hand, from `start` (default 0): `advance` runs the timers that fall due, in time order. */
export class ManualClock extends ProtocolManualClock {
  constructor (start = 0) {
    super(start)
  }
}
