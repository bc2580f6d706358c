/**
 * Nothing silent at the broker ([STORE-COUNT-1] in docs/protocol.md): the events a store drops by
 * its rules (pushed out, expired, arrived expired, null over null) are counted per event name by the
 * store (`EventStore.counters()`) and shown in `stats()`; this reports what changed since the last
 * report in one log line per interval, never one per event or per commit.
 */
import type { Logger } from '@herald/protocol'
import type { EventCounters, EventStore } from './event-store/event-store.js'

/** What one report logs per event name: the counters' growth since the last report. */
export type DropDelta = Partial<EventCounters>

/** Logs the growth of the store's drop counters since the previous call. */
export class DropReport {
  #last: Record<string, EventCounters> = {}

  constructor (private readonly store: EventStore, private readonly logger: Logger) {}

  /**
   * Logs one line if anything was dropped since the last call, and returns what it logged (empty if
   * nothing). `replaced` is the replacing category's normal working: counted, not logged.
   * Events a client could have wanted and never got (pushed out, arrived expired) log at warn.
   */
  report (): Record<string, DropDelta> {
    const now = this.store.counters()
    const events: Record<string, DropDelta> = {}
    let loud = false
    let any = false
    for (const [name, c] of Object.entries(now)) {
      const before = this.#last[name]
      const d: DropDelta = {}
      for (const kind of ['pushedOut', 'expired', 'expiredOnArrival', 'nullsDropped'] as const) {
        const n = c[kind] - (before?.[kind] ?? 0)
        if (n > 0) d[kind] = n
      }
      if (Object.keys(d).length === 0) continue
      events[name] = d
      any = true
      if ((d.pushedOut ?? 0) > 0 || (d.expiredOnArrival ?? 0) > 0) loud = true
    }
    this.#last = now
    if (any) {
      if (loud) this.logger.warn({ events }, 'events dropped by the store since the last report')
      else this.logger.info({ events }, 'events dropped by the store since the last report')
    }
    return events
  }
}
