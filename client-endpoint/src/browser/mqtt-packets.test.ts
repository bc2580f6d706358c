import mqttPacket from 'mqtt-packet'
import type { Packet } from 'mqtt-packet'
import { describe, expect, it } from 'vitest'
import { ConfigError, ProtocolError } from '@herald/protocol'
import { DISCONNECT, MAX_REMAINING_LENGTH, MqttPacketReader, PINGREQ, PacketType, decodePacket, encodeConnect, encodePublish, encodeSubscribe, type IncomingPacket } from './mqtt-packets.js'

/** Parses what we encode with mqtt-packet (another implementation), packet by packet. */
function parseWithMqttPacket (bytes: Uint8Array): Packet[] {
  const parser = mqttPacket.parser({ protocolVersion: 4 })
  const out: Packet[] = []
  const errors: Error[] = []
  parser.on('packet', (p) => out.push(p))
  parser.on('error', (e: Error) => errors.push(e))
  parser.parse(Buffer.from(bytes))
  expect(errors).toEqual([])
  return out
}

const gen = (p: Parameters<typeof mqttPacket.generate>[0]): Uint8Array => new Uint8Array(mqttPacket.generate(p))

/** Feeds `bytes` to a fresh reader in the given chunks and returns the packets. */
function readChunks (chunks: readonly Uint8Array[], max = 1024 * 1024): IncomingPacket[] {
  const reader = new MqttPacketReader(max)
  const out: IncomingPacket[] = []
  for (const c of chunks) reader.push(c, (p) => out.push(p))
  expect(reader.buffered).toBe(0)
  return out
}

function concat (parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0))
  let at = 0
  for (const p of parts) { out.set(p, at); at += p.byteLength }
  return out
}

const text = (b: Uint8Array): string => new TextDecoder().decode(b)

describe('MQTT packet encoding (read back by mqtt-packet)', () => {
  it('CONNECT: protocol level 4, clean session, client id, user name, password, keepalive', () => {
    const [p] = parseWithMqttPacket(encodeConnect({ clientId: 'herald-c-ops/dash', username: 'ops', password: 'pä55', keepaliveSec: 30 }))
    expect(p).toMatchObject({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, clientId: 'herald-c-ops/dash', username: 'ops', keepalive: 30 })
    expect(Buffer.from((p as { password: Buffer }).password).toString('utf8')).toBe('pä55')
  })

  it('CONNECT without credentials (a guest), and keepalive 0', () => {
    const [p] = parseWithMqttPacket(encodeConnect({ clientId: 'g', keepaliveSec: 0 }))
    expect(p).toMatchObject({ cmd: 'connect', clientId: 'g', keepalive: 0, clean: true })
    expect((p as { username?: string }).username).toBeUndefined()
    expect((p as { password?: Buffer }).password).toBeUndefined()
  })

  it('CONNECT refuses a password without a user name, a keepalive out of range and a field over 65,535 bytes (ConfigError)', () => {
    expect(() => encodeConnect({ clientId: 'c', password: 'x', keepaliveSec: 1 })).toThrow(/password needs a user name/)
    expect(() => encodeConnect({ clientId: 'c', keepaliveSec: 70_000 })).toThrow(ConfigError)
    expect(() => encodeConnect({ clientId: 'c', keepaliveSec: 1.5 })).toThrow(/keepalive/)
    expect(() => encodeConnect({ clientId: 'c'.repeat(70_000), keepaliveSec: 1 })).toThrow(/client id is 70000 bytes/)
  })

  it('SUBSCRIBE with its packet id and QoS; a packet id 0 is refused', () => {
    const [p] = parseWithMqttPacket(encodeSubscribe(7, 'herald/c/ops/dash/r', 0))
    expect(p).toMatchObject({ cmd: 'subscribe', messageId: 7, subscriptions: [{ topic: 'herald/c/ops/dash/r', qos: 0 }] })
    expect(() => encodeSubscribe(0, 't', 0)).toThrow(ConfigError)
  })

  it('PUBLISH QoS 0 of every remaining-length size (1 to 3 length bytes), PINGREQ, DISCONNECT', () => {
    for (const size of [0, 1, 120, 125, 16_380, 16_384, 70_000]) {
      const payload = Uint8Array.from({ length: size }, (_, i) => (i * 31) & 0xff)
      const [p] = parseWithMqttPacket(encodePublish('herald/c/x/q', payload))
      expect(p).toMatchObject({ cmd: 'publish', topic: 'herald/c/x/q', qos: 0, retain: false, dup: false })
      expect(new Uint8Array((p as { payload: Buffer }).payload)).toEqual(payload)
    }
    expect(parseWithMqttPacket(concat([PINGREQ, DISCONNECT])).map((p) => p.cmd)).toEqual(['pingreq', 'disconnect'])
  })
})

describe('MQTT packet decoding', () => {
  const fixtures: Array<[string, Uint8Array, IncomingPacket]> = [
    ['CONNACK accepted', gen({ cmd: 'connack', returnCode: 0, sessionPresent: false }), { type: PacketType.CONNACK, returnCode: 0, sessionPresent: false }],
    ['CONNACK refused (4)', gen({ cmd: 'connack', returnCode: 4, sessionPresent: false }), { type: PacketType.CONNACK, returnCode: 4, sessionPresent: false }],
    ['SUBACK granted', gen({ cmd: 'suback', messageId: 1, granted: [0] }), { type: PacketType.SUBACK, packetId: 1, granted: [0] }],
    ['SUBACK refused', gen({ cmd: 'suback', messageId: 300, granted: [128] }), { type: PacketType.SUBACK, packetId: 300, granted: [128] }],
    ['PINGRESP', gen({ cmd: 'pingresp' }), { type: PacketType.PINGRESP }],
    ['UNSUBACK', gen({ cmd: 'unsuback', messageId: 9, granted: [] }), { type: PacketType.UNSUBACK, packetId: 9 }],
    ['PUBLISH QoS 0', gen({ cmd: 'publish', topic: 'herald/c/ü/r', payload: Buffer.from([1, 2, 3]), qos: 0, dup: false, retain: false }),
      { type: PacketType.PUBLISH, topic: 'herald/c/ü/r', payload: Uint8Array.of(1, 2, 3), qos: 0, dup: false, retain: false, packetId: null }],
    ['PUBLISH QoS 1', gen({ cmd: 'publish', topic: 't', payload: Buffer.from('x'), qos: 1, messageId: 5, dup: true, retain: false }),
      { type: PacketType.PUBLISH, topic: 't', payload: Uint8Array.of(120), qos: 1, dup: true, retain: false, packetId: 5 }],
    ['PUBLISH of 20 KiB (3 length bytes)', gen({ cmd: 'publish', topic: 'big', payload: Buffer.alloc(20 * 1024, 7), qos: 0, dup: false, retain: false }),
      { type: PacketType.PUBLISH, topic: 'big', payload: new Uint8Array(20 * 1024).fill(7), qos: 0, dup: false, retain: false, packetId: null }]
  ]

  it('decodes what mqtt-packet generates, in one chunk', () => {
    for (const [name, bytes, expected] of fixtures) expect(readChunks([bytes]), name).toEqual([expected])
  })

  it('every fixture split at every byte offset, and into single bytes', () => {
    for (const [name, bytes, expected] of fixtures) {
      const step = bytes.byteLength > 4096 ? 997 : 1
      for (let cut = 0; cut <= bytes.byteLength; cut += step) {
        expect(readChunks([bytes.subarray(0, cut), bytes.subarray(cut)]), `${name} cut at ${cut}`).toEqual([expected])
      }
      if (bytes.byteLength < 4096) expect(readChunks(Array.from(bytes, (b) => Uint8Array.of(b))), name).toEqual([expected])
    }
  })

  it('several packets in one chunk, and a chunk that ends inside the next packet, come out whole and in order', () => {
    const all = concat(fixtures.map(([, b]) => b))
    const expected = fixtures.map(([, , p]) => p)
    expect(readChunks([all])).toEqual(expected)
    for (const size of [3, 64, 1000, 65_536]) {
      const chunks: Uint8Array[] = []
      for (let i = 0; i < all.byteLength; i += size) chunks.push(all.subarray(i, i + size))
      expect(readChunks(chunks), `chunks of ${size}`).toEqual(expected)
    }
  })

  it('a remaining length of more than 4 bytes is refused', () => {
    const reader = new MqttPacketReader(MAX_REMAINING_LENGTH + 5)
    expect(() => { reader.push(Uint8Array.of(0x30, 0xff, 0xff, 0xff, 0xff, 0x01), () => {}) }).toThrow(/remaining length longer than 4 bytes/)
    // the stream has lost its framing: the reader stays failed
    expect(() => { reader.push(gen({ cmd: 'pingresp' }), () => {}) }).toThrow(ProtocolError)
  })

  it('a packet over maxPacketBytes is refused when its length is read, before its body arrives', () => {
    const big = gen({ cmd: 'publish', topic: 't', payload: Buffer.alloc(5000), qos: 0, dup: false, retain: false })
    const reader = new MqttPacketReader(4096)
    expect(() => { reader.push(big.subarray(0, 3), () => {}) }).toThrow(`MQTT PUBLISH of ${big.byteLength} bytes is over the limit of 4096 (maxPacketBytes)`)
    // exactly at the bound is taken
    const exact = gen({ cmd: 'publish', topic: 't', payload: Buffer.alloc(4096 - 3 - 2 - 1), qos: 0, dup: false, retain: false })
    expect(exact.byteLength).toBe(4096)
    expect(readChunks([exact], 4096)).toHaveLength(1)
  })

  it('types a broker does not send, and reserved types, are refused on their first byte', () => {
    for (const [first, name] of [[0x00, 'type 0 (reserved)'], [0xf0, 'type 15 (reserved)'], [0x10, 'CONNECT'], [0x82, 'SUBSCRIBE'], [0xc0, 'PINGREQ'], [0xe0, 'DISCONNECT'], [0x62, 'PUBREL']] as const) {
      expect(() => { new MqttPacketReader(1024).push(Uint8Array.of(first), () => {}) }, name).toThrow(`MQTT ${name}`)
    }
    // text, say an HTTP answer where MQTT was expected: 'H' (0x48) reads as PUBACK with flags 8
    expect(() => { new MqttPacketReader(1024).push(new TextEncoder().encode(`HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\n\r\n${'not found '.repeat(10)}`), () => {}) }).toThrow('MQTT PUBACK with reserved flags 8 set')
  })

  it('reserved flags, wrong lengths, QoS 3, DUP at QoS 0, a topic longer than the packet or not UTF-8 are refused', () => {
    const cases: Array<[number, number[], RegExp]> = [
      [0x21, [0, 0], /CONNACK with reserved flags 1/],
      [0x20, [0, 0, 0], /CONNACK of 3 bytes/],
      [0x20, [2, 0], /reserved acknowledge flags 2/],
      [0xd0, [0], /PINGRESP of 1 bytes/],
      [0x90, [0, 1], /SUBACK of 2 bytes/],
      [0x90, [0, 1, 3], /SUBACK with return code 3/],
      [0x36, [0, 1, 116, 0, 1], /QoS 3/],
      [0x38, [0, 1, 116], /DUP flag/],
      [0x30, [0], /no room for its topic length/],
      [0x30, [0, 9, 116], /no room for its topic of 9 bytes/],
      [0x32, [0, 1, 116, 0], /and its packet identifier/],
      [0x30, [0, 2, 0xc3, 0x28], /not UTF-8/]
    ]
    for (const [first, body, message] of cases) {
      expect(() => decodePacket(first, Uint8Array.from(body)), message.source).toThrow(message)
      // and through the reader
      expect(() => { new MqttPacketReader(1024).push(Uint8Array.from([first, body.length, ...body]), () => {}) }).toThrow(ProtocolError)
    }
  })

  it('garbage of every kind ends in a ProtocolError or whole packets, never anything else (seeded)', () => {
    let seed = 42
    const random = (): number => { seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31; return seed / 2 ** 31 }
    for (let round = 0; round < 2000; round++) {
      const bytes = Uint8Array.from({ length: 1 + Math.floor(random() * 40) }, () => Math.floor(random() * 256))
      const reader = new MqttPacketReader(4096)
      try {
        reader.push(bytes, () => {})
      } catch (err) {
        expect(err).toBeInstanceOf(ProtocolError)
      }
      expect(reader.buffered).toBeLessThanOrEqual(4096)
    }
  })

  it('the payload of a packet in one chunk is a view of the chunk (no copy), the text of its topic right', () => {
    const bytes = gen({ cmd: 'publish', topic: 'herald/c/ops/dash/r', payload: Buffer.from('hello'), qos: 0, dup: false, retain: false })
    const [p] = readChunks([bytes])
    if (p?.type !== PacketType.PUBLISH) throw new Error('expected a PUBLISH')
    expect(p.payload.buffer).toBe(bytes.buffer)
    expect(text(p.payload)).toBe('hello')
  })
})
