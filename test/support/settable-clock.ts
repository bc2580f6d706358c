/**
 * For end-to-end tests with real sockets that move a component's clock: the time is the test's
 * (ManualClock's `now`, `monotonic`, `advance`, `set`), the timers and deferred calls run in real time
 * (systemClock's). A ManualClock alone also owns the timers, and runs them only when advanced: an
 * endpoint or a broker given one would never reconnect, time out or flush its batched ACKs.
 */
import { ManualClock, systemClock, type TimerHandle } from '@herald/protocol'

export class SettableClock extends ManualClock {
  override setTimer (fn: () => void, delayMs: number): TimerHandle {
    return systemClock.setTimer(fn, delayMs)
  }

  override defer (fn: () => void): void {
    systemClock.defer(fn)
  }
}
