import mqttPacket from 'mqtt-packet'
import type { Packet } from 'mqtt-packet'
import { describe, expect, it } from 'vitest'
import { PacketSizeGuard } from './packet-size-guard.js'

const LIMIT = 20_000
const TOPIC = 'herald/t'

const connect = (): Buffer => mqttPacket.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, clientId: 'herald-guard-test', keepalive: 30, username: 'alice', password: Buffer.from('pw') })
const pingreq = (): Buffer => mqttPacket.generate({ cmd: 'pingreq' })

/** A QoS 0 PUBLISH whose remaining length is exactly `remaining` (2 + topic + payload in MQTT 3.1.1). */
function publish (remaining: number, qos: 0 | 1 = 0): Buffer {
  const payload = Buffer.alloc(remaining - 2 - TOPIC.length - (qos > 0 ? 2 : 0), 0xab)
  const packet: Packet = qos === 0
    ? { cmd: 'publish', topic: TOPIC, payload, qos, dup: false, retain: false }
    : { cmd: 'publish', topic: TOPIC, payload, qos, dup: false, retain: false, messageId: 7 }
  return mqttPacket.generate(packet)
}

/** Bytes the remaining-length varint of `remaining` takes. */
const varintBytes = (remaining: number): number => (remaining < 128 ? 1 : remaining < 16_384 ? 2 : remaining < 2_097_152 ? 3 : 4)

/** The remaining lengths mqtt-packet's own parser reads from `stream` (checks the fixtures are what they claim). */
function parsedLengths (stream: Buffer): number[] {
  const parser = mqttPacket.parser({ protocolVersion: 4 })
  const lengths: number[] = []
  parser.on('packet', (p: Packet) => lengths.push(p.length ?? -1))
  parser.on('error', (err: unknown) => { throw err })
  parser.parse(stream)
  return lengths
}

/** Feeds `chunks` until the guard reports; returns the report and the index of the chunk that gave it. */
function run (guard: PacketSizeGuard, chunks: Buffer[]): { problem: string | null, at: number } {
  for (let i = 0; i < chunks.length; i++) {
    const problem = guard.feed(chunks[i] as Buffer)
    if (problem !== null) return { problem, at: i }
  }
  return { problem: null, at: -1 }
}

/** Splits of `stream` into two chunks at every byte offset, including an empty first or last chunk. */
function* splits (stream: Buffer): Generator<[number, Buffer[]]> {
  for (let k = 0; k <= stream.length; k++) yield [k, [stream.subarray(0, k), stream.subarray(k)]]
}

function oneByteChunks (stream: Buffer): Buffer[] {
  return Array.from({ length: stream.length }, (_, i) => stream.subarray(i, i + 1))
}

/** A stream of packets all within LIMIT, covering 1-, 2- and 3-byte remaining lengths and the limit itself. */
const UNDER_SIZES = [10, 127, 128, 16_383, 16_384, LIMIT - 1, LIMIT]
const UNDER = Buffer.concat([connect(), pingreq(), ...UNDER_SIZES.map((n) => publish(n)), publish(300, 1), pingreq()])

describe('PacketSizeGuard', () => {
  it('the fixtures have the remaining lengths they claim (read by mqtt-packet\'s parser)', () => {
    const lengths = parsedLengths(UNDER)
    expect(lengths).toHaveLength(11)
    expect(lengths.slice(2, 9)).toEqual(UNDER_SIZES)
    expect(lengths[9]).toBe(300)
    expect(lengths[1]).toBe(0)
    expect(Math.max(...lengths)).toBe(LIMIT)
  })

  it('reports nothing for packets within the limit, split at every byte offset', () => {
    const reports: string[] = []
    for (const [k, chunks] of splits(UNDER)) {
      const { problem } = run(new PacketSizeGuard(LIMIT), chunks)
      if (problem !== null) reports.push(`split at ${k}: ${problem}`)
    }
    expect(reports).toEqual([])
  })

  it('reports nothing for packets within the limit fed one byte at a time, and stays in step with the packets', () => {
    const guard = new PacketSizeGuard(LIMIT)
    expect(run(guard, oneByteChunks(UNDER))).toEqual({ problem: null, at: -1 })
    // still at a packet boundary: the next oversized header is read as one
    expect(guard.feed(publish(LIMIT + 1).subarray(0, 4))).toBe(`MQTT packet of ${LIMIT + 1} bytes is over the limit of ${LIMIT}`)
  })

  it('reports a PUBLISH over the limit, naming its size and the limit, wherever the stream is split', () => {
    const before = Buffer.concat([connect(), publish(100), pingreq(), publish(LIMIT)])
    const over = publish(LIMIT + 1)
    const stream = Buffer.concat([before, over, pingreq()])
    expect(parsedLengths(stream).slice(-2)).toEqual([LIMIT + 1, 0])
    const expected = `MQTT packet of ${LIMIT + 1} bytes is over the limit of ${LIMIT}`
    // the report comes with the last byte of the oversized packet's remaining length
    const lastHeaderByte = before.length + varintBytes(LIMIT + 1)
    const wrong: string[] = []
    for (const [k, chunks] of splits(stream)) {
      const { problem, at } = run(new PacketSizeGuard(LIMIT), chunks)
      const expectedChunk = k > lastHeaderByte ? 0 : 1
      if (problem !== expected || at !== expectedChunk) wrong.push(`split at ${k}: ${problem} in chunk ${at}`)
    }
    expect(wrong).toEqual([])
    expect(run(new PacketSizeGuard(LIMIT), oneByteChunks(stream))).toEqual({ problem: expected, at: lastHeaderByte })
    expect(run(new PacketSizeGuard(LIMIT), [stream])).toEqual({ problem: expected, at: 0 })
  })

  it('reports an oversized first packet and a remaining length far over the limit', () => {
    expect(new PacketSizeGuard(LIMIT).feed(publish(LIMIT * 3))).toBe(`MQTT packet of ${LIMIT * 3} bytes is over the limit of ${LIMIT}`)
    // the largest remaining length MQTT can express: 0xff 0xff 0xff 0x7f
    const header = Buffer.of(0x30, 0xff, 0xff, 0xff, 0x7f)
    for (const [k, chunks] of splits(header)) {
      expect(run(new PacketSizeGuard(LIMIT), chunks).problem, `split at ${k}`).toBe(`MQTT packet of 268435455 bytes is over the limit of ${LIMIT}`)
    }
  })

  it('a limit of 0 admits only packets without a body', () => {
    const guard = new PacketSizeGuard(0)
    expect(guard.feed(Buffer.concat([pingreq(), pingreq()]))).toBeNull()
    expect(guard.feed(publish(10))).toBe('MQTT packet of 10 bytes is over the limit of 0')
  })

  it('skips a packet with a 4-byte remaining length under a large limit and reads the next header', () => {
    const big = publish(2_097_152)
    expect(big.subarray(1, 5)).toEqual(Buffer.of(0x80, 0x80, 0x80, 0x01))
    const stream = Buffer.concat([connect(), big, pingreq(), publish(2_097_153)])
    const expected = 'MQTT packet of 2097153 bytes is over the limit of 2097152'
    // every split in and around the headers, and a spread of splits inside the body
    const offsets = new Set<number>()
    for (let k = 0; k <= stream.length; k += 4093) offsets.add(k)
    for (const edge of [0, connect().length, connect().length + big.length, stream.length - publish(2_097_153).length, stream.length]) {
      for (let d = -8; d <= 8; d++) if (edge + d >= 0 && edge + d <= stream.length) offsets.add(edge + d)
    }
    for (const k of offsets) {
      expect(run(new PacketSizeGuard(2_097_152), [stream.subarray(0, k), stream.subarray(k)]).problem, `split at ${k}`).toBe(expected)
    }
    // in chunks of 1000 bytes the body is skipped chunk by chunk
    const chunks = Array.from({ length: Math.ceil(stream.length / 1000) }, (_, i) => stream.subarray(i * 1000, (i + 1) * 1000))
    expect(run(new PacketSizeGuard(2_097_152), chunks).problem).toBe(expected)
  })

  it('reports a 5-byte remaining length as malformed, wherever the stream is split', () => {
    for (const bad of [Buffer.of(0x30, 0x80, 0x80, 0x80, 0x80, 0x01), Buffer.of(0x30, 0xff, 0xff, 0xff, 0xff, 0x7f)]) {
      const prefix = Buffer.concat([connect(), publish(50)])
      const stream = Buffer.concat([prefix, bad])
      // the fourth length byte still has the continuation bit: the report comes with it
      const fourthLengthByte = prefix.length + 4
      const wrong: string[] = []
      for (const [k, chunks] of splits(stream)) {
        const { problem, at } = run(new PacketSizeGuard(1_000_000_000), chunks)
        if (problem !== 'malformed MQTT remaining length' || at !== (k > fourthLengthByte ? 0 : 1)) wrong.push(`split at ${k}: ${problem} in chunk ${at}`)
      }
      expect(wrong).toEqual([])
      expect(run(new PacketSizeGuard(1_000_000_000), oneByteChunks(stream))).toEqual({ problem: 'malformed MQTT remaining length', at: fourthLengthByte })
    }
  })

  it('an empty chunk changes nothing', () => {
    const guard = new PacketSizeGuard(LIMIT)
    const stream = publish(LIMIT + 1)
    expect(guard.feed(Buffer.alloc(0))).toBeNull()
    expect(guard.feed(stream.subarray(0, 1))).toBeNull()
    expect(guard.feed(Buffer.alloc(0))).toBeNull()
    expect(guard.feed(stream.subarray(1, 2))).toBeNull()
    expect(guard.feed(new Uint8Array(0))).toBeNull()
    expect(guard.feed(stream.subarray(2))).toBe(`MQTT packet of ${LIMIT + 1} bytes is over the limit of ${LIMIT}`)
  })
})
