/**
 * Frames of the device line protocol (docs/device-protocol.md): their types, the encoder, frame
 * positions, and the body parser the decoder uses.
 */
import { crc32 } from 'node:zlib'
import { DeviceProtocolError, DeviceProtocolErrorCode as Code } from './errors.js'

/** Bytes of a frame from `$` to LF inclusive, at most ([DEV-FRAME-1]). */
export const MAX_FRAME_BYTES = 512
/** Fields of a frame, at most, counting every field (`boot`, `seq`, ... too) ([DEV-FRAME-1]). */
export const MAX_FIELDS = 24
/** Characters of a key, at most. */
export const MAX_KEY_LENGTH = 32
/** The largest `boot` or `seq`: 2^53 - 1. */
export const MAX_COUNTER = Number.MAX_SAFE_INTEGER

/** Every frame type, as on the wire. */
export const FrameType = {
  HELLO: 'HELLO',
  STATE: 'STATE',
  ALARM: 'ALARM',
  CLEAR: 'CLEAR',
  SYNC: 'SYNC',
  ACK: 'ACK'
} as const
export type FrameType = (typeof FrameType)[keyof typeof FrameType]

/** The position of a data frame: frames are ordered by (`boot`, `seq`) ([DEV-SEQ-1]). */
export interface FramePos { readonly boot: number, readonly seq: number }

/** Who the device is, and the oldest data frame it still holds unacknowledged ([DEV-SESSION-1]). */
export interface HelloFrame {
  readonly type: 'HELLO'
  readonly model: string
  readonly serial: string
  readonly fw: string
  readonly boot: number
  /** `null` on the wire is `none`: the outbox is empty. */
  readonly oldest: FramePos | null
  /** Every field other than `model`, `serial`, `fw`, `boot`, `oldest` (null prototype). */
  readonly fields: Readonly<Record<string, string>>
}

/** The data frame types: each has a (`boot`, `seq`) and stays in the device's outbox until acknowledged. */
export type DataFrameType = 'STATE' | 'ALARM' | 'CLEAR'

/** A report: the whole state (STATE), or a condition that started (ALARM) or ended (CLEAR). */
export interface DataFrame {
  readonly type: DataFrameType
  readonly boot: number
  readonly seq: number
  /** ALARM and CLEAR: the condition, never empty. STATE: `null` (a STATE has no `code` field). */
  readonly code: string | null
  /** Every field except `boot`, `seq`, `code` (null prototype). */
  readonly fields: Readonly<Record<string, string>>
}

/** Gateway to device: "say HELLO and resend what I have not acknowledged". */
export interface SyncFrame { readonly type: 'SYNC' }

/** Gateway to device: every data frame up to (`boot`, `seq`) is durable at the gateway ([DEV-ACK-1]). */
export interface AckFrame { readonly type: 'ACK', readonly boot: number, readonly seq: number }

/** Any frame of the protocol. */
export type DeviceFrame = HelloFrame | DataFrame | SyncFrame | AckFrame

/** True for STATE, ALARM and CLEAR. */
export function isDataFrame (frame: DeviceFrame): frame is DataFrame {
  return frame.type === 'STATE' || frame.type === 'ALARM' || frame.type === 'CLEAR'
}

/** Orders positions by (`boot`, `seq`): negative if `a` is before `b`, 0 if equal, positive if after. */
export function comparePos (a: FramePos, b: FramePos): number {
  return a.boot !== b.boot ? a.boot - b.boot : a.seq - b.seq
}

/** `<boot>:<seq>`, or `none` for null (the `oldest` field of HELLO). */
export function formatPos (pos: FramePos | null): string {
  return pos === null ? 'none' : `${pos.boot}:${pos.seq}`
}

/**
 * Parses `<boot>:<seq>` (each a counter as in {@link parseCounter}) or `none` (null).
 * @throws DeviceProtocolError `BAD_POSITION`
 */
export function parsePos (text: string): FramePos | null {
  const pos = tryParsePos(text)
  if (pos === undefined) throw new DeviceProtocolError(Code.BAD_POSITION, `a position is "<boot>:<seq>" or "none", not ${JSON.stringify(text)}`)
  return pos
}

/** {@link parsePos} that answers `undefined` instead of throwing. */
function tryParsePos (text: string): FramePos | null | undefined {
  if (text === 'none') return null
  const colon = text.indexOf(':')
  if (colon < 0) return undefined
  const boot = parseCounter(text.slice(0, colon))
  const seq = parseCounter(text.slice(colon + 1))
  return boot === undefined || seq === undefined ? undefined : { boot, seq }
}

const COUNTER_RE = /^[1-9][0-9]{0,15}$/

/** A decimal counter from 1 to 2^53 - 1, no sign, no leading zeros; `undefined` if `text` is not one. */
export function parseCounter (text: string): number | undefined {
  if (!COUNTER_RE.test(text)) return undefined
  const n = Number(text)
  return n <= MAX_COUNTER ? n : undefined
}

function isCounter (n: unknown): n is number {
  return typeof n === 'number' && Number.isSafeInteger(n) && n >= 1
}

/** A key: a lowercase letter, then up to 31 lowercase letters, digits or `_`. */
export const KEY_RE = /^[a-z][a-z0-9_]{0,31}$/
// A value on the wire: vchars (0x21-0x7E except $ * % =) and %XX escapes (uppercase hex).
const WIRE_VALUE_RE = /^(?:[!-#&-)+-<>-~]|%[0-9A-F]{2})*$/
// A value that needs no escaping.
const PLAIN_VALUE_RE = /^[!-#&-)+-<>-~]*$/
const HEX = '0123456789ABCDEF'
// in unicode mode a surrogate pair is one code point, so this matches only unpaired surrogates
const LONE_SURROGATE_RE = /[\uD800-\uDFFF]/u

/** True if `key` follows the key grammar of [DEV-FRAME-1]. */
export function isValidKey (key: string): boolean {
  return KEY_RE.test(key)
}

/** A value as on the wire: every byte of its UTF-8 that is not a vchar becomes `%XX`. */
export function encodeValue (value: string): string {
  if (PLAIN_VALUE_RE.test(value)) return value
  let out = ''
  for (const b of Buffer.from(value, 'utf8')) {
    const vchar = b >= 0x21 && b <= 0x7e && b !== 0x24 && b !== 0x25 && b !== 0x2a && b !== 0x3d
    out += vchar ? String.fromCharCode(b) : '%' + HEX[b >> 4]! + HEX[b & 15]!
  }
  return out
}

/** The text of a wire value; `undefined` if it breaks the grammar or its bytes are not UTF-8. */
export function decodeValue (wire: string): string | undefined {
  if (!WIRE_VALUE_RE.test(wire)) return undefined
  if (!wire.includes('%')) return wire
  try {
    // every % is followed by two hex digits (checked above), so this only decodes UTF-8 escapes,
    // and throws on bytes that are not well-formed UTF-8
    return decodeURIComponent(wire)
  } catch {
    return undefined
  }
}

const HELLO_KEYS = new Set(['model', 'serial', 'fw', 'boot', 'oldest'])
const DATA_KEYS = new Set(['boot', 'seq', 'code'])

function checkText (what: string, value: unknown, nonEmpty: boolean): string {
  if (typeof value !== 'string') throw new DeviceProtocolError(Code.BAD_VALUE, `${what} must be a string, not ${typeof value}`)
  if (LONE_SURROGATE_RE.test(value)) throw new DeviceProtocolError(Code.BAD_VALUE, `${what} is not well-formed text (a lone UTF-16 surrogate)`)
  if (nonEmpty && value === '') throw new DeviceProtocolError(Code.BAD_VALUE, `${what} must not be empty`)
  return value
}

function checkCounter (what: string, value: unknown): number {
  if (!isCounter(value)) throw new DeviceProtocolError(Code.BAD_NUMBER, `${what} must be a whole number from 1 to 2^53 - 1, not ${String(value)}`)
  return value
}

function appendFields (parts: string[], type: string, fields: Readonly<Record<string, string>>, reserved: ReadonlySet<string>): void {
  for (const key of Object.keys(fields)) {
    if (!KEY_RE.test(key)) throw new DeviceProtocolError(Code.BAD_KEY, `${type} field key ${JSON.stringify(key)} is not a lowercase letter then up to 31 of a-z 0-9 _`)
    if (reserved.has(key)) throw new DeviceProtocolError(Code.BAD_KEY, `${type} field key "${key}" is set by the frame itself, not by its fields`)
    parts.push(`${key}=${encodeValue(checkText(`${type} field "${key}"`, fields[key], false))}`)
  }
}

/**
 * Encodes a frame as `$<body>*<crc>\n` ([DEV-FRAME-1]). Fields go out in this order: the type's own
 * (HELLO: model serial fw boot oldest; data frames: boot seq [code]; ACK: boot seq), then `fields`
 * in insertion order.
 * @throws DeviceProtocolError `FRAME_TOO_LONG`, `TOO_MANY_FIELDS`, `BAD_KEY`, `BAD_VALUE`,
 * `BAD_NUMBER`, `BAD_FRAME`, naming what is wrong.
 */
export function encodeFrame (frame: DeviceFrame): Buffer {
  const parts: string[] = [frame.type]
  switch (frame.type) {
    case 'HELLO':
      parts.push(
        `model=${encodeValue(checkText('HELLO model', frame.model, true))}`,
        `serial=${encodeValue(checkText('HELLO serial', frame.serial, true))}`,
        `fw=${encodeValue(checkText('HELLO fw', frame.fw, true))}`,
        `boot=${checkCounter('HELLO boot', frame.boot)}`)
      if (frame.oldest !== null) {
        checkCounter('HELLO oldest.boot', frame.oldest.boot)
        checkCounter('HELLO oldest.seq', frame.oldest.seq)
      }
      parts.push(`oldest=${formatPos(frame.oldest)}`)
      appendFields(parts, 'HELLO', frame.fields, HELLO_KEYS)
      break
    case 'STATE':
    case 'ALARM':
    case 'CLEAR':
      parts.push(`boot=${checkCounter(`${frame.type} boot`, frame.boot)}`, `seq=${checkCounter(`${frame.type} seq`, frame.seq)}`)
      if (frame.type === 'STATE') {
        if (frame.code !== null) throw new DeviceProtocolError(Code.BAD_FRAME, 'a STATE frame has no code (code must be null)')
      } else {
        parts.push(`code=${encodeValue(checkText(`${frame.type} code`, frame.code, true))}`)
      }
      appendFields(parts, frame.type, frame.fields, DATA_KEYS)
      break
    case 'SYNC':
      break
    case 'ACK':
      parts.push(`boot=${checkCounter('ACK boot', frame.boot)}`, `seq=${checkCounter('ACK seq', frame.seq)}`)
      break
    default:
      throw new DeviceProtocolError(Code.BAD_FRAME, `unknown frame type ${JSON.stringify((frame as { type: unknown }).type)}`)
  }
  if (parts.length - 1 > MAX_FIELDS) {
    throw new DeviceProtocolError(Code.TOO_MANY_FIELDS, `${frame.type} frame has ${parts.length - 1} fields, more than ${MAX_FIELDS}`)
  }
  const body = parts.join(' ')
  // body is ASCII: one byte per character; plus "$", "*", 8 hex digits, LF
  const length = body.length + 11
  if (length > MAX_FRAME_BYTES) {
    throw new DeviceProtocolError(Code.FRAME_TOO_LONG, `${frame.type} frame would be ${length} bytes, more than ${MAX_FRAME_BYTES}`)
  }
  const out = Buffer.allocUnsafe(length)
  out[0] = 0x24
  out.write(body, 1, 'latin1')
  out[length - 10] = 0x2a
  out.write(crc32(out.subarray(1, length - 10)).toString(16).toUpperCase().padStart(8, '0'), length - 9, 'latin1')
  out[length - 1] = 0x0a
  return out
}

/**
 * Parses a frame body (between `$` and `*`, CRC already checked) as latin1 text; `undefined` if it
 * is malformed: bad grammar, a duplicate key, too many fields, a missing or bad required field.
 */
export function parseBody (body: string): DeviceFrame | undefined {
  const tokens = body.split(' ')
  if (tokens.length - 1 > MAX_FIELDS) return undefined
  const type = tokens[0]
  const fields: Record<string, string> = Object.create(null) as Record<string, string>
  for (let i = 1; i < tokens.length; i++) {
    const token = tokens[i]!
    const eq = token.indexOf('=')
    if (eq < 0) return undefined
    const key = token.slice(0, eq)
    if (!KEY_RE.test(key) || key in fields) return undefined
    const value = decodeValue(token.slice(eq + 1))
    if (value === undefined) return undefined
    fields[key] = value
  }
  switch (type) {
    case 'HELLO': {
      const { model, serial, fw } = fields
      if (model === undefined || model === '' || serial === undefined || serial === '' || fw === undefined || fw === '') return undefined
      const boot = parseCounter(fields.boot ?? '')
      if (boot === undefined || fields.oldest === undefined) return undefined
      const oldest = tryParsePos(fields.oldest)
      if (oldest === undefined) return undefined
      for (const key of HELLO_KEYS) delete fields[key]
      return { type, model, serial, fw, boot, oldest, fields }
    }
    case 'STATE':
    case 'ALARM':
    case 'CLEAR': {
      const boot = parseCounter(fields.boot ?? '')
      const seq = parseCounter(fields.seq ?? '')
      if (boot === undefined || seq === undefined) return undefined
      const code = fields.code
      if (type === 'STATE' ? code !== undefined : code === undefined || code === '') return undefined
      for (const key of DATA_KEYS) delete fields[key]
      return { type, boot, seq, code: code ?? null, fields }
    }
    case 'SYNC':
      // fields a later version may add to SYNC or ACK are ignored ([DEV-FRAME-4])
      return { type }
    case 'ACK': {
      const boot = parseCounter(fields.boot ?? '')
      const seq = parseCounter(fields.seq ?? '')
      if (boot === undefined || seq === undefined) return undefined
      return { type, boot, seq }
    }
    default:
      return undefined
  }
}
