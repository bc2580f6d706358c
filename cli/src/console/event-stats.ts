/**
 * What a console client's summary line shows: events counted in total and per event name, the
 * recent rate, the connection state and reconnects. No clock of its own: callers pass `now`.
 */
import { RateMeter, type RateMeterOptions } from './rate-meter.js'

/** A connection state as a client endpoint reports it (ClientStatus fits). */
export interface ConnectionStatus {
  readonly state: 'connecting' | 'online' | 'offline' | 'closed'
  readonly lastError: { readonly code: string, readonly message: string } | null
}

/** Everything the summary line shows, at one moment. */
export interface SummaryView {
  readonly state: ConnectionStatus['state']
  /** Why the connection is not online, when known. */
  readonly lastError: ConnectionStatus['lastError']
  /** ms since the connection was last online (or since the start); null while online. */
  readonly downForMs: number | null
  readonly total: number
  /** Events per second over the rate window. */
  readonly rate: number
  readonly rateWindowMs: number
  /** Counts per event name, in the order the names were first seen (or declared). */
  readonly perEvent: ReadonlyArray<readonly [string, number]>
  /** Times the connection came back online after having been online. */
  readonly reconnects: number
}

/** Defaults of EventStatsOptions. */
export const EVENT_STATS_DEFAULTS = Object.freeze({
  maxNames: 100
})

/** What EventStats counts by name, and its rate window. */
export interface EventStatsOptions extends RateMeterOptions {
  /** Event names counted one by one; events of further names count under `other`. Default 100. */
  readonly maxNames?: number
  /** Names to list from the start, at 0 (e.g. the events subscribed to). */
  readonly names?: readonly string[]
}

/** Counts shown events and follows the connection, for the summary line. */
export class EventStats {
  private readonly rateMeter: RateMeter
  private readonly perName = new Map<string, number>()
  private readonly maxNames: number
  private other = 0
  private total = 0
  private state: ConnectionStatus['state'] = 'connecting'
  private lastError: ConnectionStatus['lastError'] = null
  private downSince: number | null
  private wasOnline = false
  private reconnects = 0

  constructor (now: number, options: EventStatsOptions = {}) {
    this.rateMeter = new RateMeter(now, options)
    this.maxNames = options.maxNames ?? EVENT_STATS_DEFAULTS.maxNames
    this.downSince = now
    for (const name of options.names ?? []) if (this.perName.size < this.maxNames) this.perName.set(name, 0)
  }

  /** Counts one event of `name` shown at `now`. */
  record (name: string, now: number): void {
    this.total++
    this.rateMeter.record(now)
    const n = this.perName.get(name)
    if (n !== undefined) this.perName.set(name, n + 1)
    else if (this.perName.size < this.maxNames) this.perName.set(name, 1)
    else this.other++
  }

  /** Takes a connection status; a return to `online` after having been online counts as a reconnect. */
  connection (status: ConnectionStatus, now: number): void {
    if (status.state === 'online' && this.state !== 'online') {
      if (this.wasOnline) this.reconnects++
      this.wasOnline = true
      this.downSince = null
    } else if (status.state !== 'online' && this.downSince === null) {
      this.downSince = now
    }
    this.state = status.state
    this.lastError = status.lastError
  }

  /** The summary at `now`. */
  view (now: number): SummaryView {
    const perEvent: Array<readonly [string, number]> = [...this.perName]
    if (this.other > 0) perEvent.push(['other', this.other])
    return {
      state: this.state,
      lastError: this.lastError,
      downForMs: this.downSince === null ? null : Math.max(0, now - this.downSince),
      total: this.total,
      rate: this.rateMeter.rate(now),
      rateWindowMs: this.rateMeter.windowMs,
      perEvent,
      reconnects: this.reconnects
    }
  }
}
