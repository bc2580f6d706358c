/**
 * One event as a console line: a human line (`renderEventLine`) or a JSON object per line for scripts
 * (`renderEventJson`). Pure functions of the event and the time it was shown.
 */
import type { HeraldEvent } from '@herald/client-endpoint'
import { formatAge, formatClockTime } from './format.js'
import { style } from './style.js'

/** What rendering needs of an event: a HeraldEvent fits. */
export type ConsoleEvent = Pick<HeraldEvent,
  'id' | 'serviceId' | 'name' | 'category' | 'position' | 'raisedAt' | 'receivedAt' | 'age' | 'redelivered' | 'isNull' | 'recipient' | 'payload'> & Pick<Partial<HeraldEvent>, 'key'>

/** How the payload travelled ([EVT-PAYLOAD-1]): JSON text, opaque bytes, or none (a null instance). */
export type PayloadKindName = 'json' | 'bytes' | 'none'

/** Defaults of EventLineOptions. */
export const EVENT_LINE_DEFAULTS = Object.freeze({
  maxPayloadChars: 1000,
  maxHexBytes: 32
})

/** How renderEventLine prints an event. */
export interface EventLineOptions {
  /** When the event was shown (ms since the epoch); printed as local time. */
  readonly arrivedAt: number
  /** ANSI colors. Default false. */
  readonly color?: boolean
  /** A JSON payload longer than this many characters is cut, with its size in bytes. Default 1,000. */
  readonly maxPayloadChars?: number
  /** Bytes payloads show this many leading bytes in hex. Default 32. */
  readonly maxHexBytes?: number
}

/** The payload kind of an event. */
export function payloadKind (e: Pick<ConsoleEvent, 'isNull' | 'payload'>): PayloadKindName {
  if (e.isNull) return 'none'
  return e.payload instanceof Uint8Array ? 'bytes' : 'json'
}

function toBuffer (bytes: Uint8Array): Buffer {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
}

// C1 controls and DEL (some terminals act on them), line and paragraph separators, and bidirectional
// overrides (which can make a line read differently from what it holds). JSON.stringify already
// escapes C0 controls; these are only valid inside JSON strings, where a \u escape means the same.
const UNSAFE = /[\u007f-\u009f\u200e\u200f\u2028-\u202e\u2066-\u2069]/g

/** Compact JSON safe to print on a terminal: no character that could move the cursor or reorder text. */
export function terminalSafeJson (value: unknown): string {
  const text = JSON.stringify(value) ?? 'null'
  return text.replace(UNSAFE, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`)
}

/**
 * A payload as text for a console line: compact JSON (cut after `maxPayloadChars` characters, with the
 * payload's size), bytes as `bytes(<length>) <hex of the first maxHexBytes>…`, or `[null]` for a null
 * instance (a JSON `null` payload prints as `null`).
 */
export function renderPayload (e: Pick<ConsoleEvent, 'isNull' | 'payload'>, options: Omit<EventLineOptions, 'arrivedAt' | 'color'> = {}): string {
  const maxChars = options.maxPayloadChars ?? EVENT_LINE_DEFAULTS.maxPayloadChars
  const maxHex = options.maxHexBytes ?? EVENT_LINE_DEFAULTS.maxHexBytes
  if (e.isNull) return '[null]'
  const p = e.payload
  if (p instanceof Uint8Array) {
    const shown = toBuffer(p).subarray(0, maxHex).toString('hex')
    return `bytes(${p.byteLength})${p.byteLength > 0 ? ` ${shown}` : ''}${p.byteLength > maxHex ? '…' : ''}`
  }
  const text = terminalSafeJson(p)
  if (text.length <= maxChars) return text
  let cut = text.slice(0, maxChars)
  const last = cut.charCodeAt(cut.length - 1)
  if (last >= 0xd800 && last <= 0xdbff) cut = cut.slice(0, -1) // no half of a surrogate pair
  return `${cut}… (${Buffer.byteLength(JSON.stringify(p), 'utf8')} B)`
}

/**
 * One human line: local time shown, service, event, `#position`, age, markers
 * (`[redelivered]`, `[to <recipient>]` for private events, `[key "<key>"]` for keyed events) and the payload, e.g.
 * `14:03:21.123 boiler-1 alarms #1234 120ms {"code":"E42"}`. No trailing newline.
 */
export function renderEventLine (e: ConsoleEvent, options: EventLineOptions): string {
  const s = style(options.color ?? false)
  const parts = [
    s.dim(formatClockTime(options.arrivedAt)),
    s.cyan(e.serviceId),
    s.bold(e.name),
    s.dim(`#${e.position}`),
    formatAge(e.age)
  ]
  if (e.redelivered) parts.push(s.yellow('[redelivered]'))
  if (e.recipient !== null) parts.push(s.magenta(`[to ${e.recipient}]`))
  // [CLI-KEY-3] the replacing key of a keyed event (JSON-quoted: a key may hold spaces)
  if (e.key !== undefined) parts.push(s.magenta(`[key ${JSON.stringify(e.key)}]`))
  const payload = renderPayload(e, options)
  parts.push(e.isNull ? s.blue(payload) : payload)
  return parts.join(' ')
}

/** The object `--json` prints per event. Times are ms since the epoch. */
export interface EventRecord {
  readonly id: string
  readonly serviceId: string
  readonly event: string
  readonly category: ConsoleEvent['category']
  readonly position: number
  /** When the service raised it (gateway clock). */
  readonly raisedAt: number
  /** When the broker stored it (broker clock). */
  readonly receivedAt: number
  /** When it was shown (local clock). */
  readonly arrivedAt: number
  /** ms since the broker stored it, when it was shown. */
  readonly age: number
  readonly redelivered: boolean
  readonly isNull: boolean
  readonly recipient: string | null
  /** [CLI-KEY-3] The replacing key of a keyed event; absent for unkeyed events. */
  readonly key?: string
  readonly payloadKind: PayloadKindName
  /** The JSON value; base64 text for bytes; null for a null instance. */
  readonly payload: unknown
}

/** The JSON record of an event. */
export function eventRecord (e: ConsoleEvent, arrivedAt: number): EventRecord {
  const kind = payloadKind(e)
  return {
    id: e.id,
    serviceId: e.serviceId,
    event: e.name,
    category: e.category,
    position: e.position,
    raisedAt: e.raisedAt,
    receivedAt: e.receivedAt,
    arrivedAt,
    age: e.age,
    redelivered: e.redelivered,
    isNull: e.isNull,
    recipient: e.recipient,
    ...(e.key !== undefined ? { key: e.key } : {}),
    payloadKind: kind,
    payload: kind === 'bytes' ? toBuffer(e.payload as Uint8Array).toString('base64') : kind === 'none' ? null : e.payload
  }
}

/** One line of `--json` output (no trailing newline), escaped like terminalSafeJson (the same JSON value). */
export function renderEventJson (e: ConsoleEvent, arrivedAt: number): string {
  return terminalSafeJson(eventRecord(e, arrivedAt))
}
