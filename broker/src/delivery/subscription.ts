/** One client subscription at the broker: its cursor, its in-flight window, its filters. */
import type { EventDefinition, StoredEvent } from '@herald/protocol'

export class Subscription {
  /** Position of the last event sent to the client. */
  cursor: number
  /** Positions sent and not yet acknowledged, oldest first (a ring bounded by `window`). */
  private readonly sent: number[] = []
  /** Payload bytes of each sent event, parallel to `sent`. */
  private readonly sentBytes: number[] = []
  private sentHead = 0
  private inflightBytes = 0
  /** True when the last read found nothing more: new events can go straight from memory. */
  caughtUp = false
  /** A read is under way. */
  reading = false
  /** Events were stored while a read was under way: read again. */
  dirty = false
  closed = false
  /** The client asked for gap notices ([CLI-GAP-3]). */
  gaps = false
  /** The store's removal epoch of this event when the subscription last looked for a gap ([CLI-GAP-1]). */
  removalSeen = 0
  /** The first gap check (which also counts expired events not purged yet) was done. */
  gapChecked = false
  /** The highest position a gap notice covered: not told again when the purge deletes it later. */
  gapFloor = 0
  /**
   * [CLI-START-4] A start at the latest instances: up to `until` (the head when it subscribed) only
   * the positions in `keep` are sent; null once past it, or for any other start.
   */
  only: { readonly until: number, readonly keep: ReadonlySet<number> } | null = null
  /** [CLI-KEY-1] Only keyed instances with one of these replacing keys; null for all. */
  keys: ReadonlySet<string> | null = null

  constructor (
    readonly id: number,
    /** Replaced by a site reload with the event's new definition (same name and category). */
    public def: EventDefinition,
    readonly services: ReadonlySet<string> | null,
    /** The recipient key for private events, else null. */
    readonly recipient: string | null,
    readonly window: number,
    /** Most payload bytes in flight; at least one frame is always allowed. */
    readonly maxInflightBytes: number,
    start: number
  ) {
    this.cursor = start
  }

  /** Events in flight (sent, not acknowledged). */
  get inflight (): number {
    return this.sent.length - this.sentHead
  }

  /** How many more events may be sent now. */
  get credit (): number {
    if (this.inflightBytes >= this.maxInflightBytes) return 0
    return this.window - this.inflight
  }

  /** Payload bytes in flight (sent, not acknowledged). */
  get bytesInFlight (): number {
    return this.inflightBytes
  }

  /** How many more payload bytes may be sent now (one more event may cross it). */
  get bytesLeft (): number {
    return this.maxInflightBytes - this.inflightBytes
  }

  matches (e: StoredEvent): boolean {
    if (e.name !== this.def.name || e.position <= this.cursor) return false
    if (this.services !== null && !this.services.has(e.serviceId)) return false
    if (this.recipient !== null && e.recipient !== this.recipient) return false
    if (this.keys !== null && (e.key === undefined || !this.keys.has(e.key))) return false
    return true
  }

  /** Records the first `count` of `events` as sent; returns their payload bytes. */
  markSent (events: readonly StoredEvent[], count = events.length): number {
    let bytes = 0
    for (let i = 0; i < count; i++) {
      const e = events[i] as StoredEvent
      this.sent.push(e.position)
      this.sentBytes.push(e.payload.byteLength)
      bytes += e.payload.byteLength
    }
    this.inflightBytes += bytes
    const last = events[count - 1]
    if (last !== undefined) this.cursor = last.position
    return bytes
  }

  /** The client acknowledged everything up to `position` ([CLI-ACK-1]); returns the payload bytes freed. */
  acknowledge (position: number): number {
    const before = this.inflightBytes
    while (this.sentHead < this.sent.length && (this.sent[this.sentHead] as number) <= position) {
      this.inflightBytes -= this.sentBytes[this.sentHead] as number
      this.sentHead++
    }
    if (this.sentHead > 1024 && this.sentHead * 2 > this.sent.length) {
      this.sent.splice(0, this.sentHead)
      this.sentBytes.splice(0, this.sentHead)
      this.sentHead = 0
    }
    return before - this.inflightBytes
  }
}
