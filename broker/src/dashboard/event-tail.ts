/**
 * The last few hundred stored events, for the dashboard's live tail ([OPS-DASH-5]). A ring of fixed
 * size with its fields in parallel arrays and the payload previews in one preallocated buffer, so
 * that `push` costs O(1) per event and allocates nothing: no payload is kept alive, only the first
 * `previewBytes` of each, copied. Reads (a filter over at most `size` entries) happen once a second
 * per open dashboard feed, never on the hot path.
 */
import { ConfigError, PayloadKind, checkInt, withDefaults, type StoredEvent } from '@herald/protocol'

export interface EventTailOptions {
  /** Events kept. Default 500. */
  readonly size?: number | undefined
  /** Bytes of each payload kept as its preview. Default 256. */
  readonly previewBytes?: number | undefined
}

export const EVENT_TAIL_DEFAULTS = Object.freeze({ size: 500, previewBytes: 256 })

/** One entry of the tail, as the dashboard shows it. */
export interface TailEntry {
  readonly position: number
  readonly event: string
  readonly service: string
  readonly receivedAt: number
  /** The payload's full size in bytes. */
  readonly bytes: number
  readonly isNull: boolean
  /** Its first `previewBytes`: JSON text (a character cut at the bound shows as U+FFFD), hex for bytes. */
  readonly preview: string
  /** The preview is shorter than the payload. */
  readonly truncated: boolean
}

/** Which events a read returns: exact names, absent or empty for any. */
export interface TailFilter {
  readonly event?: string | undefined
  readonly service?: string | undefined
}

export class EventTail {
  readonly size: number
  readonly previewBytes: number
  private readonly positions: Float64Array
  private readonly receivedAt: Float64Array
  private readonly bytes: Float64Array
  private readonly previewLength: Uint32Array
  private readonly kinds: Uint8Array
  private readonly nulls: Uint8Array
  private readonly names: string[]
  private readonly services: string[]
  private readonly previews: Uint8Array
  /** Events pushed since creation; the next slot is `pushed % size`. */
  pushed = 0

  constructor (options: EventTailOptions = {}) {
    const o = withDefaults('event tail', EVENT_TAIL_DEFAULTS, { size: options.size, previewBytes: options.previewBytes })
    checkInt('event tail', 'size', o.size, 1, 100_000)
    checkInt('event tail', 'previewBytes', o.previewBytes, 0, 65_536)
    if (o.size * o.previewBytes > 64 * 1024 * 1024) throw new ConfigError('event tail: size times previewBytes is above 64 MiB')
    this.size = o.size
    this.previewBytes = o.previewBytes
    this.positions = new Float64Array(o.size)
    this.receivedAt = new Float64Array(o.size)
    this.bytes = new Float64Array(o.size)
    this.previewLength = new Uint32Array(o.size)
    this.kinds = new Uint8Array(o.size)
    this.nulls = new Uint8Array(o.size)
    this.names = new Array<string>(o.size).fill('')
    this.services = new Array<string>(o.size).fill('')
    this.previews = new Uint8Array(o.size * o.previewBytes)
  }

  /** Records stored events (the broker's onStored): O(1) per event, a copy of at most `previewBytes`. */
  push (events: readonly StoredEvent[]): void {
    for (const e of events) {
      const i = this.pushed++ % this.size
      this.positions[i] = e.position
      this.receivedAt[i] = e.receivedAt
      this.bytes[i] = e.payload.byteLength
      this.kinds[i] = e.payloadKind
      this.nulls[i] = e.isNull ? 1 : 0
      this.names[i] = e.name
      this.services[i] = e.serviceId
      const n = Math.min(this.previewBytes, e.payload.byteLength)
      this.previewLength[i] = n
      // a whole payload is copied as it is; a longer one through a view of its first bytes
      if (n === e.payload.byteLength) this.previews.set(e.payload, i * this.previewBytes)
      else if (n > 0) this.previews.set(e.payload.subarray(0, n), i * this.previewBytes)
    }
  }

  /** Up to `limit` entries matching `filter`, newest first. */
  read (filter: TailFilter = {}, limit = this.size): TailEntry[] {
    const out: TailEntry[] = []
    const held = Math.min(this.pushed, this.size)
    const event = filter.event === '' ? undefined : filter.event
    const service = filter.service === '' ? undefined : filter.service
    for (let k = 1; k <= held && out.length < limit; k++) {
      const i = (this.pushed - k) % this.size
      if (event !== undefined && this.names[i] !== event) continue
      if (service !== undefined && this.services[i] !== service) continue
      out.push(this.entry(i))
    }
    return out
  }

  private entry (i: number): TailEntry {
    const n = this.previewLength[i] as number
    const raw = this.previews.subarray(i * this.previewBytes, i * this.previewBytes + n)
    const bytes = this.bytes[i] as number
    const preview = this.kinds[i] === PayloadKind.bytes
      ? Buffer.from(raw).toString('hex')
      : Buffer.from(raw).toString('utf8')
    return {
      position: this.positions[i] as number,
      event: this.names[i] as string,
      service: this.services[i] as string,
      receivedAt: this.receivedAt[i] as number,
      bytes,
      isNull: this.nulls[i] === 1,
      preview,
      truncated: n < bytes
    }
  }
}
