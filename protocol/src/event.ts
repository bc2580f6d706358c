/**
 * The event model ([EVT-*] in docs/protocol.md): categories, payload encoding and the three shapes an
 * event takes on its way: raised at a service, stored at the broker, delivered to a client.
 */
import { utf8Decode, utf8Encode } from './binary.js'
import { RequestError, ErrorCode } from './errors.js'

/** The three event categories ([EVT-CAT-1]). */
export const Category = {
  /** Only the newest instance per (service, event) is kept; a null instance says the condition no longer holds. */
  replacing: 'replacing',
  /** A FIFO per (service, event) bounded by lifetime and max queue size; a new event pushes out the oldest. */
  queueing: 'queueing',
  /** A FIFO per (service, event, recipient); only the recipient client receives it. */
  private: 'private'
} as const
export type Category = (typeof Category)[keyof typeof Category]

/** Category codes on the wire. */
export const CATEGORY_CODE: Readonly<Record<Category, number>> = { replacing: 0, queueing: 1, private: 2 }
export const CATEGORY_BY_CODE: readonly Category[] = ['replacing', 'queueing', 'private']

/** How a payload's bytes are to be read ([EVT-PAYLOAD-1]). */
export const PayloadKind = {
  /** UTF-8 JSON text of any JSON value. */
  json: 0,
  /** Opaque bytes, handed to the client as a Uint8Array. */
  bytes: 1,
  /** No payload: a replacing null event. */
  none: 2
} as const
export type PayloadKind = (typeof PayloadKind)[keyof typeof PayloadKind]

/** Any JSON value. */
export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue }

/** What an application may raise: any JSON value, or bytes. */
export type Payload = JsonValue | Uint8Array

const EMPTY = new Uint8Array(0)

/** Encodes a payload once, at raise time; the bytes travel unchanged to the client. */
export function encodePayload (payload: Payload | undefined): { kind: PayloadKind, bytes: Uint8Array } {
  if (payload instanceof Uint8Array) return { kind: PayloadKind.bytes, bytes: payload }
  if (payload === undefined) return { kind: PayloadKind.json, bytes: utf8Encode('null') }
  let text: string | undefined
  try {
    text = JSON.stringify(payload)
  } catch (err) {
    throw new RequestError(ErrorCode.INVALID_ARGUMENT, `payload is not JSON-serializable: ${(err as Error).message}`, { cause: err })
  }
  if (text === undefined) throw new RequestError(ErrorCode.INVALID_ARGUMENT, 'payload is not a JSON value (functions and symbols are not)')
  return { kind: PayloadKind.json, bytes: utf8Encode(text) }
}

/** The payload of a null event. */
export const NULL_PAYLOAD: { kind: PayloadKind, bytes: Uint8Array } = Object.freeze({ kind: PayloadKind.none, bytes: EMPTY })

/** Decodes stored payload bytes back into what the application raised. */
export function decodePayload (kind: PayloadKind, bytes: Uint8Array): Payload | null {
  switch (kind) {
    case PayloadKind.json:
      return JSON.parse(utf8Decode(bytes)) as JsonValue
    case PayloadKind.bytes:
      return bytes
    default:
      return null
  }
}

/** An event as a service endpoint keeps it until the broker acknowledges it, and as it is uploaded. */
export interface RaisedEvent {
  /** The service's sequence number, unique within its persistence instance, increasing in raise order. */
  readonly seq: number
  readonly name: string
  readonly category: Category
  /** When it was raised, in ms since the epoch by the gateway's clock. */
  readonly raisedAt: number
  readonly isNull: boolean
  /** The recipient client of a private event (`<user>/<clientName>`), otherwise null. */
  readonly recipient: string | null
  readonly payloadKind: PayloadKind
  readonly payload: Uint8Array
  /**
   * The replacing key of a keyed replacing event ([SITE-KEY-1]): the broker keeps the last instance
   * per (service, event, key). Absent for every other event.
   */
  readonly key?: string
}

/**
 * An event as it travels in an UP frame ([FRAME-UP-1]): with its age when the frame was built, in ms
 * by the service's own clock. The broker counts the lifetime from `receivedAt - age` ([STORE-EXPIRE-1]),
 * so the two clocks are never compared.
 */
export interface UpEvent extends RaisedEvent {
  /** Ms since the event was raised, measured on the service's clock when the frame was built; >= 0. */
  readonly age: number
}

/** An event as the broker stores it. */
export interface StoredEvent extends RaisedEvent {
  /** Position in the broker: unique, increasing in store order, never reused, survives restarts. */
  readonly position: number
  readonly serviceId: string
  /** The service persistence instance that raised it. */
  readonly instance: string
  /** When the broker stored it, in ms since the epoch by the broker's clock. */
  readonly receivedAt: number
  /**
   * Ms from the raise to the upload, by the service's clock: the UP frame's age ([FRAME-UP-1]). The
   * event's age at broker time t is `t - receivedAt + uploadAge` ([EVT-AGE-1]).
   */
  readonly uploadAge: number
  /**
   * When it expires by the broker's clock: `receivedAt - age + lifetime`, its raise time plus its
   * lifetime ([STORE-EXPIRE-1]); null if it never does (replacing events).
   */
  readonly expiresAt: number | null
  /** The replacing key of a keyed replacing event ([STORE-KEY-1]); absent for unkeyed events. */
  readonly key?: string
}

/** The unique id of an event: its persistence instance and sequence number ([EVT-ID-1]). */
export function eventId (instance: string, seq: number): string {
  return `${instance}-${seq}`
}

/** Bytes an event occupies in memory and storage accounting (payload plus a fixed overhead per event). */
export function eventSize (e: RaisedEvent): number {
  return e.payload.byteLength + e.name.length + (e.recipient?.length ?? 0) + (e.key?.length ?? 0) + 48
}
