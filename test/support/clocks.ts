/** Clocks for end-to-end tests. */
import { ManualClock, systemClock, type TimerHandle } from '@herald/protocol'

/**
 * A clock whose wall and monotonic time a test sets by hand (a gateway clock hours off, a jump, a
 * lifetime passed), while its timers are real ones: the network, reconnects and periodic checks of
 * the endpoint using it run in real time, as they do against real processes.
 */
export class HandSetClock extends ManualClock {
  override setTimer (fn: () => void, delayMs: number): TimerHandle {
    return systemClock.setTimer(fn, delayMs)
  }

  override defer (fn: () => void): void {
    systemClock.defer(fn)
  }
}
