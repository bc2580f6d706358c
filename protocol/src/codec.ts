/**
 * Frames exchanged on Herald's topics, encoded and decoded without I/O ([FRAME-*] in docs/protocol.md).
 * The first byte of every frame is its type. Event frames are binary, so a payload's bytes travel from
 * raise() to the client's handler without being parsed or re-encoded; control frames are JSON.
 */
import { BinaryReader, BinaryWriter, utf8Decode, utf8Encode } from './binary.js'
import type { PayloadKind} from './event.js';
import { CATEGORY_BY_CODE, CATEGORY_CODE, type Category, type RaisedEvent, type StoredEvent, type UpEvent } from './event.js'
import { ProtocolError } from './errors.js'
import { KEY_LIMITS } from './site-model.js'

/** Frame type bytes ([FRAME-TYPE-1]). */
export const FrameType = {
  UP: 1,
  ACK: 2,
  REQUEST: 3,
  EVENTS: 4,
  CONTROL: 5,
  /** EVENTS of one segment of a group subscription ([GROUP-FRAME-1]). */
  GROUP_EVENTS: 6
} as const
export type FrameType = (typeof FrameType)[keyof typeof FrameType]

/** Hard bounds of the decoder, independent of the site's own limits. */
export const FRAME_LIMITS = {
  /** Largest frame accepted on any Herald topic: the largest payload a site may allow, plus headroom. */
  maxFrameBytes: 17 * 1024 * 1024,
  /** Most events in one UP or EVENTS frame. */
  maxEventsPerFrame: 10_000,
  /** Longest name or id string. */
  maxStringBytes: 256,
  /** Largest single payload the decoder will read (the site's limit is usually far lower). */
  maxPayloadBytes: 16 * 1024 * 1024
} as const

const MAX_STR = FRAME_LIMITS.maxStringBytes

/** Flag bit of an event that carries a replacing key ([FRAME-KEY-1]); a frame without keys never sets it. */
const FLAG_KEY = 32

function flags (category: Category, isNull: boolean, kind: PayloadKind, key: string | undefined): number {
  return CATEGORY_CODE[category] | (isNull ? 4 : 0) | (kind << 3) | (key === undefined ? 0 : FLAG_KEY)
}

/**
 * Reads and checks an event's flag byte (bits 0-1 category, 2 null, 3-4 payload kind, 5 key; as
 * `flags` writes it) and returns it, read with the four functions below: a number, not an object,
 * since this runs once per event on both decode paths.
 */
function readFlags (r: BinaryReader): number {
  const f = r.u8('flags')
  if ((f & 3) === 3 || ((f >> 3) & 3) > 2 || f > 63) throw new ProtocolError(`invalid event flags ${f}`)
  if ((f & FLAG_KEY) !== 0 && (f & 3) !== CATEGORY_CODE.replacing) throw new ProtocolError(`invalid event flags ${f}: only a replacing event has a key`)
  return f
}

function categoryOf (f: number): Category { return CATEGORY_BY_CODE[f & 3] as Category }
function isNullOf (f: number): boolean { return (f & 4) !== 0 }
function payloadKindOf (f: number): PayloadKind { return ((f >> 3) & 3) as PayloadKind }
function isKeyed (f: number): boolean { return (f & FLAG_KEY) !== 0 }

/** Reads the key of a keyed event ([FRAME-KEY-1]): 1 to 128 characters (checked again by the broker). */
function readKey (r: BinaryReader): string {
  const key = r.string('key', 4 * KEY_LIMITS.maxKeyChars)
  if (key === '') throw new ProtocolError('an event key must not be empty')
  return key
}

function checkCount (n: number): number {
  if (n > FRAME_LIMITS.maxEventsPerFrame) throw new ProtocolError(`${n} events in one frame is over the limit of ${FRAME_LIMITS.maxEventsPerFrame}`)
  return n
}

function checkFrame (buf: Uint8Array, expected: FrameType, what: string): BinaryReader {
  if (buf.length > FRAME_LIMITS.maxFrameBytes) throw new ProtocolError(`${what} frame of ${buf.length} bytes is over the limit of ${FRAME_LIMITS.maxFrameBytes}`)
  const r = new BinaryReader(buf)
  const type = r.u8('frame type')
  if (type !== expected) throw new ProtocolError(`expected a ${what} frame (type ${expected}), got type ${type}`)
  return r
}

/** Reads the type byte of a frame, or throws a ProtocolError for an empty one. */
/** A frame of one type byte and a JSON text. */
function tagged (type: FrameType, json: string): Uint8Array {
  const text = utf8Encode(json)
  const out = new Uint8Array(1 + text.byteLength)
  out[0] = type
  out.set(text, 1)
  return out
}

export function frameType (buf: Uint8Array): number {
  if (buf.length === 0) throw new ProtocolError('empty frame')
  return buf[0] as number
}

/** Bytes an event takes in an UP or EVENTS frame, at most (fixed fields plus names, recipient, payload). */
export function frameBytesOf (e: RaisedEvent): number {
  return 96 + e.name.length + (e.recipient?.length ?? 0) + (e.key === undefined ? 0 : 3 * e.key.length) + e.payload.byteLength
}

/**
 * Splits events into runs that each fit one frame ([FRAME-TYPE-1]): at most `maxEvents` events and
 * about `targetBytes` bytes. An event larger than the target goes alone (the site bounds a payload
 * below FRAME_LIMITS.maxFrameBytes).
 */
export function frameChunks<T extends RaisedEvent> (events: readonly T[], maxEvents: number, targetBytes: number): T[][] {
  const chunks: T[][] = []
  let chunk: T[] = []
  let bytes = 0
  for (const e of events) {
    const size = frameBytesOf(e)
    if (chunk.length > 0 && (chunk.length >= maxEvents || bytes + size > targetBytes)) {
      chunks.push(chunk)
      chunk = []
      bytes = 0
    }
    chunk.push(e)
    bytes += size
  }
  if (chunk.length > 0) chunks.push(chunk)
  return chunks
}

// ---------------------------------------------------------------- UP (service -> broker)

/** A batch of events a service uploads ([FRAME-UP-1]), with events of type `E`. */
export interface UpFrameOf<E extends RaisedEvent> {
  /** The persistence instance the events come from. */
  readonly instance: string
  /**
   * The sequence number of the last event this instance sent before this frame, or 0. The broker
   * refuses the frame as OUT_OF_ORDER if it has not yet handled that sequence number ([SVC-ORDER-1]).
   */
  readonly after: number
  readonly events: readonly E[]
}

/** An UP frame as decoded: each event with its age when the frame was built ([FRAME-UP-1]). */
export type UpFrame = UpFrameOf<UpEvent>

/**
 * Encodes an UP frame ([FRAME-UP-1]). Each event's age (ms since it was raised, by the sender's clock,
 * a whole number >= 0) is the event's own `age`, or what `ageOf` says when given: a sender passes
 * `ageOf` so that the age is measured as the frame is built, without copying its events.
 */
export function encodeUp (frame: UpFrame): Uint8Array
export function encodeUp<E extends RaisedEvent> (frame: UpFrameOf<E>, ageOf: (e: E) => number): Uint8Array
export function encodeUp (frame: UpFrameOf<RaisedEvent>, ageOf?: (e: RaisedEvent) => number): Uint8Array {
  let size = 64
  for (const e of frame.events) size += 56 + e.name.length + e.payload.byteLength + (e.key === undefined ? 0 : 3 * e.key.length)
  const w = new BinaryWriter(size)
  w.u8(FrameType.UP).string(frame.instance).varint(frame.after).varint(frame.events.length)
  for (const e of frame.events) {
    const age = ageOf === undefined ? (e as UpEvent).age : ageOf(e)
    const key = e.category === 'replacing' ? e.key : undefined
    w.varint(e.seq).string(e.name).u8(flags(e.category, e.isNull, e.payloadKind, key)).varint(e.raisedAt).varint(age)
    if (e.category === 'private') w.string(e.recipient ?? '')
    if (key !== undefined) w.string(key)
    w.bytes(e.payload)
  }
  return w.finish()
}

export function decodeUp (buf: Uint8Array): UpFrame {
  const r = checkFrame(buf, FrameType.UP, 'UP')
  const instance = r.string('instance', MAX_STR)
  const after = r.varint('after')
  const n = checkCount(r.varint('event count'))
  const events: UpEvent[] = new Array<UpEvent>(n)
  for (let i = 0; i < n; i++) {
    const seq = r.varint('seq')
    const name = r.string('event name', MAX_STR)
    const f = readFlags(r)
    const category = categoryOf(f)
    const isNull = isNullOf(f)
    const payloadKind = payloadKindOf(f)
    const raisedAt = r.varint('raisedAt')
    const age = r.varint('age')
    const recipient = category === 'private' ? r.string('recipient', MAX_STR) : null
    const key = isKeyed(f) ? readKey(r) : undefined
    const payload = r.bytes('payload', FRAME_LIMITS.maxPayloadBytes)
    events[i] = key === undefined
      ? { seq, name, category, isNull, payloadKind, raisedAt, age, recipient, payload }
      : { seq, name, category, isNull, payloadKind, raisedAt, age, recipient, payload, key }
  }
  r.end('UP')
  return { instance, after, events }
}

// ---------------------------------------------------------------- ACK (broker -> service)

/** One event the broker refused; it counts as handled and is not sent again ([SVC-REJECT-1]). */
export interface Rejection {
  readonly seq: number
  readonly code: string
  readonly message: string
}

/**
 * The broker's answer to UP frames ([FRAME-ACK-1]). `acked` is cumulative: every event of `instance`
 * with seq <= acked is durably stored at the broker (fsync'd) or rejected, and will never be stored
 * again. `error` is set when a whole frame was refused (malformed, out of order, not authorized).
 */
export interface AckFrame {
  readonly instance: string
  readonly acked: number
  readonly rejections: readonly Rejection[]
  readonly error: { readonly code: string, readonly message: string } | null
}

export function encodeAck (frame: AckFrame): Uint8Array {
  const w = new BinaryWriter(32 + frame.rejections.length * 64)
  w.u8(FrameType.ACK).string(frame.instance).varint(frame.acked).varint(frame.rejections.length)
  for (const rj of frame.rejections) w.varint(rj.seq).string(rj.code).string(rj.message)
  if (frame.error === null) w.u8(0)
  else w.u8(1).string(frame.error.code).string(frame.error.message)
  return w.finish()
}

export function decodeAck (buf: Uint8Array): AckFrame {
  const r = checkFrame(buf, FrameType.ACK, 'ACK')
  const instance = r.string('instance', MAX_STR)
  const acked = r.varint('acked')
  const n = checkCount(r.varint('rejection count'))
  const rejections: Rejection[] = []
  for (let i = 0; i < n; i++) rejections.push({ seq: r.varint('seq'), code: r.string('code', MAX_STR), message: r.string('message', 4096) })
  const flag = r.u8('error flag')
  if (flag > 1) throw new ProtocolError(`ACK error flag must be 0 or 1, got ${flag}`)
  const error = flag === 1 ? { code: r.string('code', MAX_STR), message: r.string('message', 4096) } : null
  r.end('ACK')
  return { instance, acked, rejections, error }
}

// ---------------------------------------------------------------- REQUEST (client -> broker), JSON

/**
 * Where a subscription starts when the client has no position yet ([CLI-START-1]): everything
 * stored, only new events, at a position (the first event delivered is the first stored at or after
 * it, [CLI-START-2]), or at a time (the first event received at or after it, ms since the epoch on
 * the broker's clock, [CLI-START-3]), or at the latest instance per service ([CLI-START-4]). An
 * older broker refuses the forms other than "all" and "new" (MALFORMED_FRAME).
 */
export type StartFrom = 'all' | 'new' | 'latest' | { readonly position: number } | { readonly time: number }

/** Whether `v` is a valid StartFrom on the wire. */
function isStart (v: unknown): v is StartFrom {
  if (v === 'all' || v === 'new' || v === 'latest') return true
  if (typeof v !== 'object' || v === null) return false
  const o = v as Record<string, unknown>
  const keys = Object.keys(o)
  return keys.length === 1 && ((keys[0] === 'position' && isInt(o.position)) || (keys[0] === 'time' && isInt(o.time)))
}

/** Client requests ([FRAME-REQUEST-1]). */
export type Request =
  | {
    readonly op: 'sub'
    /** The client's id for this subscription, unique per connection. */
    readonly sub: number
    readonly event: string
    /** Only events from these services; null for all. */
    readonly services: readonly string[] | null
    /** The position of the last event the client handled; 0 with `start` for a first subscription. */
    readonly position: number
    readonly start: StartFrom
    /** Most events in flight (sent, not yet acknowledged) for this subscription. */
    readonly window: number
    /**
     * The client understands gap notices ([CLI-GAP-3]): only then does the broker send them. Absent
     * (an older client): no notices, so an older client never sees a CONTROL op it does not know.
     */
    readonly gaps?: boolean
    /**
     * [CLI-KEY-1] Only instances with one of these replacing keys (1 to KEY_LIMITS.maxKeysPerSubscription
     * keys). Absent: every event, keyed or not. An older broker ignores it.
     */
    readonly keys?: readonly string[]
  }
  | { readonly op: 'ack', readonly sub: number, readonly position: number }
  | { readonly op: 'unsub', readonly sub: number }
  | GroupJoinRequest
  | GroupAckRequest

export function encodeRequest (req: Request): Uint8Array {
  return tagged(FrameType.REQUEST, JSON.stringify(req))
}

function isInt (v: unknown, min = 0): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= min
}

export function decodeRequest (buf: Uint8Array): Request {
  const r = checkFrame(buf, FrameType.REQUEST, 'REQUEST')
  void r
  // 256 KiB: a subscription with 1,000 keys of 128 characters fits ([CLI-KEY-1])
  if (buf.length > 256 * 1024) throw new ProtocolError(`REQUEST frame of ${buf.length} bytes is over the limit of 262144`)
  let v: unknown
  try {
    v = JSON.parse(utf8Decode(buf.subarray(1)))
  } catch (err) {
    throw new ProtocolError('REQUEST frame is not valid JSON', { cause: err })
  }
  const o = v as Record<string, unknown>
  if (typeof v !== 'object' || v === null) throw new ProtocolError('REQUEST frame is not a JSON object')
  if (!isInt(o.sub, 1)) throw new ProtocolError('REQUEST: "sub" must be a positive integer')
  switch (o.op) {
    case 'sub': {
      if (typeof o.event !== 'string') throw new ProtocolError('REQUEST sub: "event" must be a string')
      if (!isInt(o.position)) throw new ProtocolError('REQUEST sub: "position" must be a non-negative integer')
      if (!isStart(o.start)) throw new ProtocolError('REQUEST sub: "start" must be "all", "new", "latest", {"position": n} or {"time": ms}')
      if (!isInt(o.window, 1)) throw new ProtocolError('REQUEST sub: "window" must be a positive integer')
      let services: string[] | null = null
      if (o.services !== null && o.services !== undefined) {
        if (!Array.isArray(o.services) || o.services.length > 1000 || !o.services.every((s) => typeof s === 'string')) {
          throw new ProtocolError('REQUEST sub: "services" must be null or an array of at most 1000 strings')
        }
        services = o.services
      }
      if (o.gaps !== undefined && typeof o.gaps !== 'boolean') throw new ProtocolError('REQUEST sub: "gaps" must be a boolean')
      let keys: string[] | undefined
      if (o.keys !== undefined) {
        if (!Array.isArray(o.keys) || o.keys.length === 0 || o.keys.length > KEY_LIMITS.maxKeysPerSubscription || !o.keys.every((k) => typeof k === 'string' && k !== '' && k.length <= KEY_LIMITS.maxKeyChars)) {
          throw new ProtocolError(`REQUEST sub: "keys" must be an array of 1 to ${KEY_LIMITS.maxKeysPerSubscription} keys of 1 to ${KEY_LIMITS.maxKeyChars} characters`)
        }
        keys = o.keys as string[]
      }
      return { op: 'sub', sub: o.sub, event: o.event, services, position: o.position, start: o.start, window: o.window, ...(o.gaps === true ? { gaps: true } : {}), ...(keys !== undefined ? { keys } : {}) }
    }
    case 'ack':
      if (!isInt(o.position)) throw new ProtocolError('REQUEST ack: "position" must be a non-negative integer')
      return { op: 'ack', sub: o.sub, position: o.position }
    case 'unsub':
      return { op: 'unsub', sub: o.sub }
    case 'gjoin':
    case 'gack':
      return decodeGroupRequest(o, o.sub)
    default:
      throw new ProtocolError(`REQUEST: unknown op ${JSON.stringify(o.op)}`)
  }
}

// ---------------------------------------------------------------- EVENTS (broker -> client)

/** Events delivered to one subscription, in position order ([FRAME-EVENTS-1]). */
export interface EventsFrame {
  readonly sub: number
  /** The broker's clock when it sent the frame: with receivedAt and uploadAge it gives each event's age since its raise without clock skew ([EVT-AGE-1]). */
  readonly brokerNow: number
  readonly events: readonly StoredEvent[]
}

/** Encodes an EVENTS frame; the event name is the subscription's and is not repeated. */
export function encodeEvents (sub: number, brokerNow: number, events: readonly StoredEvent[]): Uint8Array {
  let size = 32
  for (const e of events) size += 96 + e.payload.byteLength + (e.key === undefined ? 0 : 3 * e.key.length)
  const w = new BinaryWriter(size)
  w.u8(FrameType.EVENTS).varint(sub).varint(brokerNow).varint(events.length)
  for (const e of events) {
    const key = e.category === 'replacing' ? e.key : undefined
    w.varint(e.position).string(e.serviceId).string(e.instance).varint(e.seq)
      .u8(flags(e.category, e.isNull, e.payloadKind, key)).varint(e.raisedAt).varint(e.receivedAt)
      .varint(e.expiresAt ?? 0).varint(e.uploadAge)
    if (e.category === 'private') w.string(e.recipient ?? '')
    if (key !== undefined) w.string(key)
    w.bytes(e.payload)
  }
  return w.finish()
}

/**
 * Decodes an EVENTS frame. `nameOf` gives the subscription's event name, or null for a subscription
 * the client no longer has (a frame from before a resubscription): then the frame is skipped and null returned.
 */
export function decodeEvents (buf: Uint8Array, nameOf: (sub: number) => string | null): EventsFrame | null {
  const r = checkFrame(buf, FrameType.EVENTS, 'EVENTS')
  const sub = r.varint('sub')
  const brokerNow = r.varint('brokerNow')
  const name = nameOf(sub)
  if (name === null) return null
  const n = checkCount(r.varint('event count'))
  const events: StoredEvent[] = new Array<StoredEvent>(n)
  for (let i = 0; i < n; i++) {
    const position = r.varint('position')
    const serviceId = r.string('serviceId', MAX_STR)
    const instance = r.string('instance', MAX_STR)
    const seq = r.varint('seq')
    const f = readFlags(r)
    const category = categoryOf(f)
    const isNull = isNullOf(f)
    const payloadKind = payloadKindOf(f)
    const raisedAt = r.varint('raisedAt')
    const receivedAt = r.varint('receivedAt')
    const exp = r.varint('expiresAt')
    const uploadAge = r.varint('uploadAge')
    const recipient = category === 'private' ? r.string('recipient', MAX_STR) : null
    const key = isKeyed(f) ? readKey(r) : undefined
    const payload = r.bytes('payload', FRAME_LIMITS.maxPayloadBytes)
    const e: StoredEvent = { position, serviceId, instance, seq, name, category, isNull, payloadKind, raisedAt, receivedAt, expiresAt: exp === 0 ? null : exp, uploadAge, recipient, payload }
    events[i] = key === undefined ? e : { ...e, key }
  }
  r.end('EVENTS')
  return { sub, brokerNow, events }
}

// ---------------------------------------------------------------- CONTROL (broker -> client), JSON

/** Broker answers to client requests ([FRAME-CONTROL-1]). */
export type Control =
  /**
   * The subscription is active. `head` is where it starts: the client records it as its position if
   * it had none. `reset` is true when the client's position was ahead of everything the broker ever
   * assigned (the broker's store was replaced): delivery restarts from the oldest event held.
   */
  | { readonly op: 'subscribed', readonly sub: number, readonly category: Category, readonly head: number, readonly reset: boolean }
  | { readonly op: 'error', readonly sub: number | null, readonly code: string, readonly message: string }
  /**
   * A site reload gave this connection's user access to more events ([SITE-RELOAD-5]): the client
   * sends again the subscriptions the broker refused it for access (NOT_AUTHORIZED).
   */
  | { readonly op: 'accessGranted' }
  /**
   * Events of the subscription were removed before it was sent them ([CLI-GAP-2]): sent before the
   * next EVENTS frame of that subscription, only to a client that asked (`gaps` in its sub request).
   */
  | GapControl
  | GroupControl

/** What a subscription missed ([CLI-GAP-2]): the broker's finding, the CONTROL frame and the client's event carry it. */
export interface GapReport {
  readonly event: string
  /** Services whose events were missed, sorted (at most 100 named). */
  readonly services: readonly string[]
  /** Events missed: exactly when `exact`, else at least this many. */
  readonly missed: number
  readonly exact: boolean
  /** Of `missed`: pushed out past the queue's bound (`maxQueueSize`, `maxPerRecipient`), and expired. */
  readonly pushedOut: number
  readonly expired: number
  /** The highest position among the missed events. */
  readonly upTo: number
}

/** A gap notice ([CLI-GAP-2]). */
export interface GapControl extends GapReport {
  readonly op: 'gap'
  readonly sub: number
  /** The subscription's position when the broker found the gap: the missed events are after it. */
  readonly after: number
}

export function encodeControl (c: Control): Uint8Array {
  return tagged(FrameType.CONTROL, JSON.stringify(c))
}

export function decodeControl (buf: Uint8Array): Control {
  checkFrame(buf, FrameType.CONTROL, 'CONTROL')
  let v: unknown
  try {
    v = JSON.parse(utf8Decode(buf.subarray(1)))
  } catch (err) {
    throw new ProtocolError('CONTROL frame is not valid JSON', { cause: err })
  }
  const o = v as Record<string, unknown>
  if (typeof v !== 'object' || v === null) throw new ProtocolError('CONTROL frame is not a JSON object')
  if (o.op === 'subscribed' && isInt(o.sub, 1) && isInt(o.head) && typeof o.reset === 'boolean' && typeof o.category === 'string' && (CATEGORY_BY_CODE as readonly string[]).includes(o.category)) {
    return { op: 'subscribed', sub: o.sub, category: o.category as Category, head: o.head, reset: o.reset }
  }
  if (o.op === 'error' && (o.sub === null || isInt(o.sub, 1)) && typeof o.code === 'string' && typeof o.message === 'string') {
    return { op: 'error', sub: o.sub, code: o.code, message: o.message }
  }
  if (o.op === 'accessGranted') return { op: 'accessGranted' }
  if (o.op === 'gap' && isInt(o.sub, 1) && typeof o.event === 'string' && Array.isArray(o.services) && o.services.every((x) => typeof x === 'string') &&
    isInt(o.missed) && typeof o.exact === 'boolean' && isInt(o.pushedOut) && isInt(o.expired) && isInt(o.after) && isInt(o.upTo)) {
    return { op: 'gap', sub: o.sub, event: o.event, services: o.services, missed: o.missed, exact: o.exact, pushedOut: o.pushedOut, expired: o.expired, after: o.after, upTo: o.upTo }
  }
  const g = decodeGroupControl(o)
  if (g !== null) return g
  throw new ProtocolError('CONTROL frame has an unknown shape')
}

// ---------------------------------------------------------------- consumer groups ([GROUP-*])

/** Most segments a group may have ([GROUP-SEG-1]); a power of two. */
export const MAX_GROUP_SEGMENTS = 256

/**
 * [GROUP-JOIN-1] Joins the consumer group `group` of this connection's user as a member: the
 * subscription `sub` gets the events of the segments the broker assigns it. `segments` is the
 * group's segment count (a power of two, 1..256); `start` applies when the group is new.
 */
export interface GroupJoinRequest {
  readonly op: 'gjoin'
  readonly sub: number
  readonly group: string
  readonly event: string
  readonly services: readonly string[] | null
  readonly segments: number
  readonly start: 'all' | 'new'
  /** Most events in flight for this member, split across its segments (at least 1 per segment). */
  readonly window: number
}

/**
 * [GROUP-ACK-1] A member's marks for one segment under the claim `epoch`: every event of the
 * segment up to `done` is handled, and the handler of the event at `started` (>= done) may have run.
 */
export interface GroupAckRequest {
  readonly op: 'gack'
  readonly sub: number
  readonly segment: number
  readonly epoch: number
  readonly done: number
  readonly started: number
}

/** Consumer-group CONTROL ops ([GROUP-CTRL-*]). */
export type GroupControl =
  /** [GROUP-CTRL-1] The member joined; `segments` is the group's segment count. */
  | { readonly op: 'joined', readonly sub: number, readonly category: Category, readonly segments: number }
  /** [GROUP-CTRL-2] Segments now claimed by this member, each under a new epoch. */
  | { readonly op: 'assigned', readonly sub: number, readonly claims: ReadonlyArray<{ readonly segment: number, readonly epoch: number }> }
  /** [GROUP-CTRL-3] Segments no longer this member's: drop their queued events, ack nothing more for them. */
  | { readonly op: 'revoked', readonly sub: number, readonly segments: readonly number[] }
  /** [GROUP-CTRL-4] The marks of a gack are durable (fsync'd) at the broker. */
  | { readonly op: 'committed', readonly sub: number, readonly segment: number, readonly epoch: number, readonly done: number, readonly started: number }

function isSegment (v: unknown): v is number {
  return isInt(v) && v < MAX_GROUP_SEGMENTS
}

function decodeGroupRequest (o: Record<string, unknown>, sub: number): Request {
  if (o.op === 'gjoin') {
    if (typeof o.group !== 'string') throw new ProtocolError('REQUEST gjoin: "group" must be a string')
    if (typeof o.event !== 'string') throw new ProtocolError('REQUEST gjoin: "event" must be a string')
    if (!isInt(o.segments, 1) || o.segments > MAX_GROUP_SEGMENTS || (o.segments & (o.segments - 1)) !== 0) throw new ProtocolError(`REQUEST gjoin: "segments" must be a power of two from 1 to ${MAX_GROUP_SEGMENTS}`)
    if (o.start !== 'all' && o.start !== 'new') throw new ProtocolError('REQUEST gjoin: "start" must be "all" or "new"')
    if (!isInt(o.window, 1)) throw new ProtocolError('REQUEST gjoin: "window" must be a positive integer')
    let services: string[] | null = null
    if (o.services !== null && o.services !== undefined) {
      if (!Array.isArray(o.services) || o.services.length > 1000 || !o.services.every((s) => typeof s === 'string')) {
        throw new ProtocolError('REQUEST gjoin: "services" must be null or an array of at most 1000 strings')
      }
      services = o.services
    }
    return { op: 'gjoin', sub, group: o.group, event: o.event, services, segments: o.segments, start: o.start, window: o.window }
  }
  if (!isSegment(o.segment)) throw new ProtocolError(`REQUEST gack: "segment" must be an integer from 0 to ${MAX_GROUP_SEGMENTS - 1}`)
  if (!isInt(o.epoch, 1)) throw new ProtocolError('REQUEST gack: "epoch" must be a positive integer')
  if (!isInt(o.done) || !isInt(o.started) || o.started < o.done) throw new ProtocolError('REQUEST gack: "done" and "started" must be non-negative integers with started >= done')
  return { op: 'gack', sub, segment: o.segment, epoch: o.epoch, done: o.done, started: o.started }
}

function decodeGroupControl (o: Record<string, unknown>): GroupControl | null {
  if (!isInt(o.sub, 1)) return null
  switch (o.op) {
    case 'joined':
      if (isInt(o.segments, 1) && typeof o.category === 'string' && (CATEGORY_BY_CODE as readonly string[]).includes(o.category)) {
        return { op: 'joined', sub: o.sub, category: o.category as Category, segments: o.segments }
      }
      return null
    case 'assigned':
      if (Array.isArray(o.claims) && o.claims.length <= MAX_GROUP_SEGMENTS && (o.claims as unknown[]).every((c) => typeof c === 'object' && c !== null && isSegment((c as Record<string, unknown>).segment) && isInt((c as Record<string, unknown>).epoch, 1))) {
        return { op: 'assigned', sub: o.sub, claims: (o.claims as Array<{ segment: number, epoch: number }>).map((c) => ({ segment: c.segment, epoch: c.epoch })) }
      }
      return null
    case 'revoked':
      if (Array.isArray(o.segments) && o.segments.length <= MAX_GROUP_SEGMENTS && o.segments.every(isSegment)) return { op: 'revoked', sub: o.sub, segments: o.segments }
      return null
    case 'committed':
      if (isSegment(o.segment) && isInt(o.epoch, 1) && isInt(o.done) && isInt(o.started)) {
        return { op: 'committed', sub: o.sub, segment: o.segment, epoch: o.epoch, done: o.done, started: o.started }
      }
      return null
    default:
      return null
  }
}

/**
 * A GROUP_EVENTS frame ([GROUP-FRAME-1]): the events of one segment of a group subscription, sent
 * under the claim `epoch`. `redelivered` is the position of the one event among them whose handler
 * may have run before (a started mark above the segment's done position), or 0.
 */
export interface GroupEventsFrame extends EventsFrame {
  readonly segment: number
  readonly epoch: number
  readonly redelivered: number
}

/**
 * Encodes a GROUP_EVENTS frame: type 6, varint segment, varint epoch, varint redelivered, then an
 * EVENTS frame of the events, whole ([FRAME-EVENTS-1]), so that an event is encoded one way only.
 */
export function encodeGroupEvents (sub: number, segment: number, epoch: number, redelivered: number, brokerNow: number, events: readonly StoredEvent[]): Uint8Array {
  const inner = encodeEvents(sub, brokerNow, events)
  const w = new BinaryWriter(inner.byteLength + 32)
  w.u8(FrameType.GROUP_EVENTS).varint(segment).varint(epoch).varint(redelivered)
  const head = w.finish()
  const out = new Uint8Array(head.byteLength + inner.byteLength)
  out.set(head, 0)
  out.set(inner, head.byteLength)
  return out
}

/** Decodes a GROUP_EVENTS frame; null for a subscription the client no longer has (see decodeEvents). */
export function decodeGroupEvents (buf: Uint8Array, nameOf: (sub: number) => string | null): GroupEventsFrame | null {
  const r = checkFrame(buf, FrameType.GROUP_EVENTS, 'GROUP_EVENTS')
  const segment = r.varint('segment')
  if (segment >= MAX_GROUP_SEGMENTS) throw new ProtocolError(`GROUP_EVENTS: segment ${segment} is over ${MAX_GROUP_SEGMENTS - 1}`)
  const epoch = r.varint('epoch')
  const redelivered = r.varint('redelivered')
  const inner = decodeEvents(buf.subarray(buf.length - r.remaining), nameOf)
  if (inner === null) return null
  return { ...inner, segment, epoch, redelivered }
}
