/**
 * The few MQTT 3.1.1 packets a Herald client speaks, on Uint8Array (sans-I/O, browser-safe):
 * CONNECT, SUBSCRIBE, PUBLISH QoS 0, PINGREQ and DISCONNECT out; CONNACK, SUBACK, PUBLISH, PINGRESP
 * (and UNSUBACK, PUBACK, decoded so that they can be refused by name) in. `MqttPacketReader` cuts a
 * byte stream into packets however it is split into WebSocket messages ([CONN-WSC-3]), with the
 * remaining length checked (4 bytes at most) and a bound on the packet size ([CONN-WSC-4]).
 * Bytes that are not MQTT are a ProtocolError naming what was wrong.
 */
import { ConfigError, ProtocolError, utf8Encode } from '@herald/protocol'

/** MQTT control packet types (the high nibble of the first byte). */
export const PacketType = {
  CONNECT: 1,
  CONNACK: 2,
  PUBLISH: 3,
  PUBACK: 4,
  PUBREC: 5,
  PUBREL: 6,
  PUBCOMP: 7,
  SUBSCRIBE: 8,
  SUBACK: 9,
  UNSUBSCRIBE: 10,
  UNSUBACK: 11,
  PINGREQ: 12,
  PINGRESP: 13,
  DISCONNECT: 14
} as const
export type PacketType = (typeof PacketType)[keyof typeof PacketType]

const TYPE_NAMES: Readonly<Record<number, string>> = Object.fromEntries(Object.entries(PacketType).map(([k, v]) => [v, k]))

/** The name of a packet type, for messages (`type 15 (reserved)` for one MQTT 3.1.1 does not define). */
export function packetTypeName (type: number): string {
  return TYPE_NAMES[type] ?? `type ${type} (reserved)`
}

/** CONNACK return codes of MQTT 3.1.1 (3.2.2.3). */
export const ConnackCode = {
  ACCEPTED: 0,
  UNACCEPTABLE_PROTOCOL_VERSION: 1,
  IDENTIFIER_REJECTED: 2,
  SERVER_UNAVAILABLE: 3,
  BAD_USER_NAME_OR_PASSWORD: 4,
  NOT_AUTHORIZED: 5
} as const

/** SUBACK's return code for a refused subscription. */
export const SUBACK_FAILURE = 0x80

/** Largest remaining length 4 bytes can encode (MQTT 3.1.1, 2.2.3). */
export const MAX_REMAINING_LENGTH = 268_435_455

/** A packet a broker sends to a client. */
export type IncomingPacket =
  | { readonly type: typeof PacketType.CONNACK, readonly sessionPresent: boolean, readonly returnCode: number }
  | { readonly type: typeof PacketType.PUBLISH, readonly topic: string, readonly payload: Uint8Array, readonly qos: 0 | 1 | 2, readonly dup: boolean, readonly retain: boolean, readonly packetId: number | null }
  | { readonly type: typeof PacketType.SUBACK, readonly packetId: number, readonly granted: readonly number[] }
  | { readonly type: typeof PacketType.UNSUBACK, readonly packetId: number }
  | { readonly type: typeof PacketType.PUBACK, readonly packetId: number }
  | { readonly type: typeof PacketType.PINGRESP }

const strictUtf8 = new TextDecoder('utf-8', { fatal: true })

// ------------------------------------------------------------------ encoding (client -> broker)

/** Bytes of the remaining-length varint for `n`. */
function remainingLengthSize (n: number): number {
  return n < 128 ? 1 : n < 16_384 ? 2 : n < 2_097_152 ? 3 : 4
}

/** A packet of `bodyLength` bytes after its fixed header; returns the buffer and where the body starts. */
function packet (first: number, bodyLength: number): { buf: Uint8Array, at: number } {
  if (bodyLength > MAX_REMAINING_LENGTH) throw new ConfigError(`an MQTT packet of ${bodyLength} bytes is over MQTT's limit of ${MAX_REMAINING_LENGTH}`)
  const buf = new Uint8Array(1 + remainingLengthSize(bodyLength) + bodyLength)
  buf[0] = first
  let at = 1
  let n = bodyLength
  do {
    let b = n % 128
    n = Math.floor(n / 128)
    if (n > 0) b |= 0x80
    buf[at++] = b
  } while (n > 0)
  return { buf, at }
}

/** UTF-8 bytes of an MQTT string field, refused (ConfigError naming it) over 65,535 bytes. */
function field (what: string, s: string): Uint8Array {
  const b = utf8Encode(s)
  if (b.byteLength > 0xffff) throw new ConfigError(`MQTT: the ${what} is ${b.byteLength} bytes in UTF-8, over MQTT's limit of 65535`)
  return b
}

function putU16 (buf: Uint8Array, at: number, n: number): number {
  buf[at] = n >> 8
  buf[at + 1] = n & 0xff
  return at + 2
}

function putField (buf: Uint8Array, at: number, b: Uint8Array): number {
  at = putU16(buf, at, b.byteLength)
  buf.set(b, at)
  return at + b.byteLength
}

export interface ConnectFields {
  readonly clientId: string
  readonly username?: string | undefined
  readonly password?: string | undefined
  /** Seconds, 0..65535 (0: no keepalive). */
  readonly keepaliveSec: number
}

/**
 * CONNECT, MQTT 3.1.1 (protocol level 4), clean session, no will. A password needs a user name
 * ([MQTT-3.1.2-22]): a ConfigError otherwise, as for a field over 65,535 bytes or a keepalive out of range.
 */
export function encodeConnect (o: ConnectFields): Uint8Array {
  if (!Number.isInteger(o.keepaliveSec) || o.keepaliveSec < 0 || o.keepaliveSec > 0xffff) throw new ConfigError(`MQTT: keepalive must be a whole number of seconds from 0 to 65535, got ${o.keepaliveSec}`)
  if (o.password !== undefined && o.username === undefined) throw new ConfigError('MQTT: a password needs a user name (MQTT 3.1.1 has no password without a user name)')
  const id = field('client id', o.clientId)
  const user = o.username !== undefined ? field('user name', o.username) : null
  const pass = o.password !== undefined ? field('password', o.password) : null
  // "MQTT", level 4, flags, keepalive
  let length = 10 + 2 + id.byteLength
  if (user !== null) length += 2 + user.byteLength
  if (pass !== null) length += 2 + pass.byteLength
  const { buf, at: start } = packet(PacketType.CONNECT << 4, length)
  let at = putField(buf, start, utf8Encode('MQTT'))
  buf[at++] = 4
  buf[at++] = 0x02 | (user !== null ? 0x80 : 0) | (pass !== null ? 0x40 : 0)
  at = putU16(buf, at, o.keepaliveSec)
  at = putField(buf, at, id)
  if (user !== null) at = putField(buf, at, user)
  if (pass !== null) putField(buf, at, pass)
  return buf
}

/** SUBSCRIBE to one topic filter (flags 0010, [MQTT-3.8.1-1]). */
export function encodeSubscribe (packetId: number, topic: string, qos: 0 | 1 | 2): Uint8Array {
  checkPacketId(packetId)
  const t = field('topic filter', topic)
  const { buf, at: start } = packet((PacketType.SUBSCRIBE << 4) | 0x02, 2 + 2 + t.byteLength + 1)
  let at = putU16(buf, start, packetId)
  at = putField(buf, at, t)
  buf[at] = qos
  return buf
}

/** PUBLISH at QoS 0, not retained. */
export function encodePublish (topic: string, payload: Uint8Array): Uint8Array {
  const t = field('topic', topic)
  const { buf, at: start } = packet(PacketType.PUBLISH << 4, 2 + t.byteLength + payload.byteLength)
  buf.set(payload, putField(buf, start, t))
  return buf
}

/** PINGREQ. */
export const PINGREQ: Uint8Array = Uint8Array.of(PacketType.PINGREQ << 4, 0)
/** DISCONNECT. */
export const DISCONNECT: Uint8Array = Uint8Array.of(PacketType.DISCONNECT << 4, 0)

function checkPacketId (id: number): void {
  // [MQTT-2.3.1-1] a packet identifier is non-zero
  if (!Number.isInteger(id) || id < 1 || id > 0xffff) throw new ConfigError(`MQTT: a packet identifier must be from 1 to 65535, got ${id}`)
}

// ------------------------------------------------------------------ decoding (broker -> client)

function u16 (b: Uint8Array, at: number): number {
  return ((b[at] as number) << 8) | (b[at + 1] as number)
}

/**
 * Decodes one packet a broker sends from its first byte and its body (the bytes after the remaining
 * length). Throws a ProtocolError naming what is wrong: a type a broker does not send, reserved
 * flags set ([MQTT-2.2.2-2]), a body of the wrong length, a topic that is not UTF-8.
 */
export function decodePacket (first: number, body: Uint8Array): IncomingPacket {
  const type = first >> 4
  const flags = first & 0x0f
  if (type !== PacketType.PUBLISH && flags !== 0) throw new ProtocolError(`MQTT ${packetTypeName(type)} with reserved flags ${flags} set`)
  const exact = (n: number): void => {
    if (body.byteLength !== n) throw new ProtocolError(`MQTT ${packetTypeName(type)} of ${body.byteLength} bytes (after the fixed header), expected ${n}`)
  }
  switch (type) {
    case PacketType.CONNACK: {
      exact(2)
      const ack = body[0] as number
      if ((ack & 0xfe) !== 0) throw new ProtocolError(`MQTT CONNACK with reserved acknowledge flags ${ack} set`)
      return { type, sessionPresent: (ack & 1) === 1, returnCode: body[1] as number }
    }
    case PacketType.PUBLISH: {
      const qos = (flags >> 1) & 3
      // [MQTT-3.3.1-4] QoS 3 is malformed; [MQTT-3.3.1-2] DUP is 0 at QoS 0
      if (qos === 3) throw new ProtocolError('MQTT PUBLISH with QoS 3')
      const dup = (flags & 0x08) !== 0
      if (qos === 0 && dup) throw new ProtocolError('MQTT PUBLISH at QoS 0 with the DUP flag set')
      if (body.byteLength < 2) throw new ProtocolError(`MQTT PUBLISH of ${body.byteLength} bytes has no room for its topic length`)
      const topicLength = u16(body, 0)
      let at = 2 + topicLength
      if (at + (qos > 0 ? 2 : 0) > body.byteLength) throw new ProtocolError(`MQTT PUBLISH of ${body.byteLength} bytes has no room for its topic of ${topicLength} bytes${qos > 0 ? ' and its packet identifier' : ''}`)
      let topic: string
      try {
        topic = strictUtf8.decode(body.subarray(2, at))
      } catch (err) {
        throw new ProtocolError('MQTT PUBLISH with a topic that is not UTF-8', { cause: err })
      }
      let packetId: number | null = null
      if (qos > 0) {
        packetId = u16(body, at)
        at += 2
      }
      return { type, topic, payload: body.subarray(at), qos: qos as 0 | 1 | 2, dup, retain: (flags & 1) === 1, packetId }
    }
    case PacketType.SUBACK: {
      if (body.byteLength < 3) throw new ProtocolError(`MQTT SUBACK of ${body.byteLength} bytes (after the fixed header), expected 3 or more`)
      const granted = Array.from(body.subarray(2))
      for (const g of granted) if (g > 2 && g !== SUBACK_FAILURE) throw new ProtocolError(`MQTT SUBACK with return code ${g} (0, 1, 2 or 128 expected)`)
      return { type, packetId: u16(body, 0), granted }
    }
    case PacketType.UNSUBACK:
      exact(2)
      return { type, packetId: u16(body, 0) }
    case PacketType.PUBACK:
      exact(2)
      return { type, packetId: u16(body, 0) }
    case PacketType.PINGRESP:
      exact(0)
      return { type }
    default:
      throw new ProtocolError(`MQTT ${packetTypeName(type)}: not a packet a broker sends to a client of QoS 0`)
  }
}

/** The types decodePacket takes: checked on the first byte, before the rest of a packet is waited for. */
const INCOMING = new Set<number>([PacketType.CONNACK, PacketType.PUBLISH, PacketType.SUBACK, PacketType.UNSUBACK, PacketType.PUBACK, PacketType.PINGRESP])

/**
 * Cuts a byte stream from a broker into packets, however it arrives: a packet split over several
 * chunks, several packets in one ([CONN-WSC-3]). A packet over `maxPacketBytes` (fixed header
 * included) is refused as soon as its length is read, before it is buffered ([CONN-WSC-4]); so is a
 * remaining length over 4 bytes or a type a broker does not send. After a ProtocolError the reader
 * is spent (the stream has lost its framing): every later push throws the same error.
 */
export class MqttPacketReader {
  /** The fixed header read so far (type byte and up to 4 length bytes). */
  private readonly header = new Uint8Array(5)
  private headerLength = 0
  private remaining = 0
  /** The body being filled when a packet is split over chunks. */
  private body: Uint8Array | null = null
  private filled = 0
  private failed: ProtocolError | null = null

  constructor (readonly maxPacketBytes: number) {}

  /** Bytes of an unfinished packet held now (at most maxPacketBytes). */
  get buffered (): number {
    return this.headerLength + this.filled
  }

  /** Feeds a chunk; calls `onPacket` for each whole packet in order. Throws a ProtocolError on bytes that are not MQTT. */
  push (chunk: Uint8Array, onPacket: (packet: IncomingPacket) => void): void {
    if (this.failed !== null) throw this.failed
    try {
      this.read(chunk, onPacket)
    } catch (err) {
      if (err instanceof ProtocolError) this.failed = err
      throw err
    }
  }

  private read (chunk: Uint8Array, onPacket: (packet: IncomingPacket) => void): void {
    let i = 0
    const n = chunk.byteLength
    while (i < n) {
      if (this.body !== null) {
        // the rest of a split packet
        const take = Math.min(n - i, this.remaining - this.filled)
        this.body.set(chunk.subarray(i, i + take), this.filled)
        this.filled += take
        i += take
        if (this.filled < this.remaining) return
        const body = this.body
        this.body = null
        this.filled = 0
        this.headerLength = 0
        onPacket(decodePacket(this.header[0] as number, body))
        continue
      }
      const b = chunk[i++] as number
      this.header[this.headerLength++] = b
      if (this.headerLength === 1) {
        const type = b >> 4
        if (!INCOMING.has(type)) throw new ProtocolError(`MQTT ${packetTypeName(type)} (first byte 0x${b.toString(16).padStart(2, '0')}): not a packet a broker sends to a client of QoS 0`)
        // [MQTT-2.2.2-2] checked here too, so that garbage is refused before its length is waited for
        if (type !== PacketType.PUBLISH && (b & 0x0f) !== 0) throw new ProtocolError(`MQTT ${packetTypeName(type)} with reserved flags ${b & 0x0f} set`)
        continue
      }
      if ((b & 0x80) !== 0) {
        // [CONN-WSC-3] MQTT 3.1.1, 2.2.3: the remaining length takes 4 bytes at most
        if (this.headerLength === 5) throw new ProtocolError('MQTT remaining length longer than 4 bytes')
        continue
      }
      let length = 0
      for (let k = this.headerLength - 1; k >= 1; k--) length = length * 128 + ((this.header[k] as number) & 0x7f)
      const total = this.headerLength + length
      // [CONN-WSC-4] refused before a byte of it is buffered
      if (total > this.maxPacketBytes) throw new ProtocolError(`MQTT ${packetTypeName((this.header[0] as number) >> 4)} of ${total} bytes is over the limit of ${this.maxPacketBytes} (maxPacketBytes)`)
      if (n - i >= length) {
        // the whole body is in this chunk: no copy
        const body = chunk.subarray(i, i + length)
        i += length
        this.headerLength = 0
        onPacket(decodePacket(this.header[0] as number, body))
      } else {
        this.remaining = length
        this.body = new Uint8Array(length)
        this.filled = 0
      }
    }
  }
}
