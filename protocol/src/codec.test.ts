import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { BinaryWriter, utf8Encode } from './binary.js'
import {
  FRAME_LIMITS, FrameType, decodeAck, decodeControl, decodeEvents, decodeGroupEvents, decodeRequest, decodeUp,
  encodeAck, encodeControl, encodeEvents, encodeGroupEvents, encodeRequest, encodeUp, frameType
} from './codec.js'
import type { AckFrame, Control, Request, UpFrame } from './codec.js'
import { ErrorCode, ProtocolError } from './errors.js'
import { PayloadKind } from './event.js'
import type { RaisedEvent, StoredEvent, UpEvent } from './event.js'
import { seededRandom } from './testing/index.js'

const MAX = Number.MAX_SAFE_INTEGER
const ALL_BYTES = Uint8Array.from({ length: 256 }, (_, i) => i)
const json = (v: unknown): Uint8Array => utf8Encode(JSON.stringify(v))

/** Runs `fn` and returns the error it threw, failing the test if it returned. */
function thrown (fn: () => unknown): unknown {
  try {
    fn()
  } catch (err) {
    return err
  }
  throw new Error('expected a throw, but the call returned')
}

/** Asserts `fn` throws a ProtocolError with code MALFORMED_FRAME whose message matches every pattern. */
function expectMalformed (fn: () => unknown, ...patterns: Array<string | RegExp>): void {
  const err = thrown(fn)
  expect(err).toBeInstanceOf(ProtocolError)
  expect((err as ProtocolError).code).toBe(ErrorCode.MALFORMED_FRAME)
  for (const p of patterns) expect((err as Error).message).toMatch(p)
}

// ---------------------------------------------------------------- fixtures

function raised (over: Partial<UpEvent> & Pick<UpEvent, 'seq'>): UpEvent {
  return {
    name: 'temperature',
    category: 'replacing',
    raisedAt: 1_700_000_000_000,
    age: 0,
    isNull: false,
    recipient: null,
    payloadKind: PayloadKind.json,
    payload: json({ celsius: 21.5 }),
    ...over
  }
}

const RAISED: UpEvent[] = [
  raised({ seq: 1, age: 1, payload: json({ celsius: 21.5, unit: '°C', tags: ['a', null, true], nested: { deep: [1, 2, 3] } }) }),
  raised({ seq: 2, name: 'alarm', category: 'queueing', age: 127, payloadKind: PayloadKind.bytes, payload: ALL_BYTES }),
  raised({ seq: 3, name: 'alarm', category: 'queueing', age: 128, payloadKind: PayloadKind.bytes, payload: new Uint8Array(0) }),
  raised({ seq: 4, isNull: true, payloadKind: PayloadKind.none, payload: new Uint8Array(0) }),
  raised({ seq: 5, name: 'message', category: 'private', age: 86_400_000, recipient: 'alice/phone', payload: json('hello') }),
  raised({ seq: 6, name: 'Nachricht-Größe', category: 'private', recipient: 'zoë/電話📱', payload: json({ text: 'grüße 👋' }) }),
  raised({ seq: MAX, name: 'n', raisedAt: MAX, age: MAX, payload: json(null) }),
  raised({ seq: 0, raisedAt: 0, category: 'queueing', payload: json(0) })
]

const UP_FIXTURES: UpFrame[] = [
  { instance: 'gw-1', after: 0, events: [] },
  { instance: 'Gerät-Ω-网关', after: 41, events: RAISED },
  { instance: '', after: MAX, events: [RAISED[1] as UpEvent] }
]

const ACK_FIXTURES: AckFrame[] = [
  { instance: 'gw-1', acked: 0, rejections: [], error: null },
  {
    instance: 'Gerät-Ω',
    acked: MAX,
    rejections: [
      { seq: 3, code: 'UNKNOWN_EVENT', message: 'event "x" is not in the site' },
      { seq: MAX, code: 'PAYLOAD_TOO_LARGE', message: 'payload of 70000 bytes — über dem Limit ✗' }
    ],
    error: null
  },
  { instance: 'gw-2', acked: 128, rejections: [], error: { code: 'OUT_OF_ORDER', message: 'after 5 was never handled' } },
  { instance: 'gw-3', acked: 16_384, rejections: [{ seq: 1, code: '', message: '' }], error: { code: '', message: '' } }
]

function stored (over: Partial<StoredEvent> & Pick<StoredEvent, 'position'>): StoredEvent {
  return {
    seq: 1,
    name: 'temperature',
    category: 'queueing',
    raisedAt: 1_700_000_000_000,
    isNull: false,
    recipient: null,
    payloadKind: PayloadKind.json,
    payload: json({ celsius: 21.5 }),
    serviceId: 'boiler',
    instance: 'gw-1',
    receivedAt: 1_700_000_000_123,
    expiresAt: 1_700_604_800_123,
    uploadAge: 250,
    ...over
  }
}

interface EventsFixture { sub: number, brokerNow: number, name: string, events: StoredEvent[] }

const EVENTS_FIXTURES: EventsFixture[] = [
  { sub: 1, brokerNow: 0, name: 'temperature', events: [] },
  {
    sub: 7,
    brokerNow: 1_700_000_001_000,
    name: 'temperature',
    events: [
      stored({ position: 1, category: 'replacing', expiresAt: null, payload: json([1, 'two', { three: 3 }]) }),
      stored({ position: 2, payloadKind: PayloadKind.bytes, payload: ALL_BYTES }),
      stored({ position: 3, payloadKind: PayloadKind.bytes, payload: new Uint8Array(0), uploadAge: 0 }),
      stored({ position: 4, category: 'replacing', isNull: true, payloadKind: PayloadKind.none, payload: new Uint8Array(0), expiresAt: null }),
      stored({ position: 5, category: 'private', recipient: 'alice/phone' }),
      stored({ position: 6, category: 'private', recipient: 'zoë/電話📱', serviceId: 'Dienst-ü', instance: 'Gerät-Ω', payload: json('grüße 👋') }),
      stored({ position: MAX, seq: MAX, raisedAt: MAX, receivedAt: MAX, expiresAt: MAX, uploadAge: MAX })
    ]
  },
  { sub: MAX, brokerNow: MAX, name: 'Größe-名前', events: [stored({ position: 128, name: 'Größe-名前' })] }
]

const REQUEST_FIXTURES: Request[] = [
  { op: 'sub', sub: 1, event: 'temperature', services: null, position: 0, start: 'all', window: 100 },
  { op: 'sub', sub: MAX, event: 'Größe-名前', services: ['boiler', 'Dienst-ü', ''], position: MAX, start: 'new', window: MAX },
  { op: 'sub', sub: 2, event: '', services: [], position: 17, start: 'new', window: 1 },
  { op: 'ack', sub: 1, position: 0 },
  { op: 'ack', sub: 3, position: MAX },
  { op: 'unsub', sub: MAX },
  { op: 'sub', sub: 5, event: 'alarms', services: null, position: 3, start: 'all', window: 10, gaps: true },
  { op: 'sub', sub: 6, event: 'alarms', services: null, position: 0, start: { position: 17 }, window: 10 },
  { op: 'sub', sub: 7, event: 'alarms', services: ['a'], position: 0, start: { time: 1_700_000_000_000 }, window: 10 }
]

const CONTROL_FIXTURES: Control[] = [
  { op: 'subscribed', sub: 1, category: 'replacing', head: 0, reset: false },
  { op: 'subscribed', sub: MAX, category: 'queueing', head: MAX, reset: true },
  { op: 'subscribed', sub: 2, category: 'private', head: 5, reset: false },
  { op: 'error', sub: null, code: 'NOT_AUTHORIZED', message: 'user "bob" may not receive "alarm" — ✗' },
  { op: 'error', sub: 9, code: 'UNKNOWN_EVENT', message: '' },
  { op: 'accessGranted' },
  { op: 'gap', sub: 7, event: 'alarms', services: ['boiler-1'], missed: 40, exact: true, pushedOut: 38, expired: 2, after: 12, upTo: MAX },
  { op: 'gap', sub: 1, event: 'e', services: [], missed: 1, exact: false, pushedOut: 0, expired: 1, after: 0, upTo: 1 }
]

const nameOfFixture = (f: EventsFixture) => (sub: number): string | null => (sub === f.sub ? f.name : null)

/** Every fixture as bytes with the decoder that reads it. */
const ENCODED: Array<{ label: string, bytes: Uint8Array, decode: (b: Uint8Array) => unknown }> = [
  ...UP_FIXTURES.map((f, i) => ({ label: `UP #${i}`, bytes: encodeUp(f), decode: decodeUp })),
  ...ACK_FIXTURES.map((f, i) => ({ label: `ACK #${i}`, bytes: encodeAck(f), decode: decodeAck })),
  ...REQUEST_FIXTURES.map((f, i) => ({ label: `REQUEST #${i}`, bytes: encodeRequest(f), decode: decodeRequest })),
  ...EVENTS_FIXTURES.map((f, i) => ({
    label: `EVENTS #${i}`,
    bytes: encodeEvents(f.sub, f.brokerNow, f.events),
    decode: (b: Uint8Array) => decodeEvents(b, nameOfFixture(f))
  })),
  ...CONTROL_FIXTURES.map((f, i) => ({ label: `CONTROL #${i}`, bytes: encodeControl(f), decode: decodeControl }))
]

// ---------------------------------------------------------------- round trips

describe('codec round trips', () => {
  it.each(UP_FIXTURES.map((f, i) => [i, f] as const))('UP #%i decodes to exactly what was encoded', (_i, f) => {
    const bytes = encodeUp(f)
    expect(bytes[0]).toBe(FrameType.UP)
    expect(frameType(bytes)).toBe(FrameType.UP)
    expect(decodeUp(bytes)).toEqual(f)
  })

  it('UP keeps every payload byte, the null flag, the payload kind and the recipient of each event', () => {
    const back = decodeUp(encodeUp({ instance: 'gw', after: 0, events: RAISED })).events
    expect(back.map((e) => e.seq)).toEqual([1, 2, 3, 4, 5, 6, MAX, 0])
    expect([...(back[1]?.payload ?? [])]).toEqual([...ALL_BYTES])
    expect(back[1]?.payloadKind).toBe(PayloadKind.bytes)
    expect(back[2]?.payload.byteLength).toBe(0)
    expect(back[3]).toMatchObject({ isNull: true, payloadKind: PayloadKind.none, category: 'replacing' })
    expect(back.map((e) => e.recipient)).toEqual([null, null, null, null, 'alice/phone', 'zoë/電話📱', null, null])
    expect(back[5]?.name).toBe('Nachricht-Größe')
    expect(JSON.parse(Buffer.from(back[5]?.payload ?? []).toString('utf8'))).toEqual({ text: 'grüße 👋' })
    expect(back[6]?.raisedAt).toBe(MAX)
    expect(back.map((e) => e.age)).toEqual([1, 127, 128, 0, 86_400_000, 0, MAX, 0])
  })

  it('UP with ageOf carries the age ageOf gives when the frame is built, and leaves the events as they are', () => {
    const plainEvents: RaisedEvent[] = RAISED.map(({ age: _age, ...e }) => e)
    const asked: number[] = []
    const bytes = encodeUp({ instance: 'gw', after: 0, events: plainEvents }, (e) => { asked.push(e.seq); return e.seq === MAX ? 0 : e.seq * 1000 })
    expect(asked).toEqual(plainEvents.map((e) => e.seq))
    expect(decodeUp(bytes).events.map((e) => e.age)).toEqual([1000, 2000, 3000, 4000, 5000, 6000, 0, 0])
    expect(plainEvents.every((e) => !('age' in e))).toBe(true)
    for (const age of [-1, 0.5, MAX + 1, Number.NaN]) {
      expect(() => encodeUp({ instance: 'gw', after: 0, events: plainEvents.slice(0, 1) }, () => age)).toThrow(RangeError)
    }
  })

  it('a decoded payload is a copy that does not change when the frame buffer is reused', () => {
    const bytes = encodeUp({ instance: 'gw', after: 0, events: [RAISED[1] as UpEvent] })
    const back = decodeUp(bytes)
    bytes.fill(0)
    expect([...(back.events[0]?.payload ?? [])]).toEqual([...ALL_BYTES])
  })

  it('payloads decoded from a Node Buffer, small (from a shared slab) or large, are copies apart from the frame and from each other', () => {
    const big = Uint8Array.from({ length: 5000 }, (_, i) => i & 0xff)
    const events = [1, 2, 3].map((seq) => raised({ seq, payloadKind: PayloadKind.bytes, payload: Uint8Array.of(seq, seq, seq) }))
    events.push(raised({ seq: 4, payloadKind: PayloadKind.bytes, payload: big }))
    // MQTT hands the frame over as a Buffer, whose own slice() is a view, not a copy
    const frame = Buffer.from(encodeUp({ instance: 'gw', after: 0, events }))
    const back = decodeUp(frame)
    frame.fill(0)
    const [a, b, c, d] = back.events.map((e) => e.payload)
    a?.fill(9)
    expect([...(b ?? [])]).toEqual([2, 2, 2])
    expect([...(c ?? [])]).toEqual([3, 3, 3])
    expect([...(d ?? [])]).toEqual([...big])
    expect(d?.buffer.byteLength).toBe(big.byteLength)
  })

  it.each(ACK_FIXTURES.map((f, i) => [i, f] as const))('ACK #%i decodes to exactly what was encoded', (_i, f) => {
    const bytes = encodeAck(f)
    expect(frameType(bytes)).toBe(FrameType.ACK)
    expect(decodeAck(bytes)).toEqual(f)
  })

  it.each(REQUEST_FIXTURES.map((f, i) => [i, f] as const))('REQUEST #%i decodes to exactly what was encoded', (_i, f) => {
    const bytes = encodeRequest(f)
    expect(frameType(bytes)).toBe(FrameType.REQUEST)
    expect(decodeRequest(bytes)).toEqual(f)
  })

  it('a sub REQUEST without "services" decodes with services null', () => {
    const bytes = Buffer.concat([Uint8Array.of(FrameType.REQUEST), json({ op: 'sub', sub: 4, event: 'e', position: 0, start: 'all', window: 10 })])
    expect(decodeRequest(bytes)).toEqual({ op: 'sub', sub: 4, event: 'e', services: null, position: 0, start: 'all', window: 10 })
  })

  it('[CLI-GAP-3] "gaps" in a sub REQUEST is optional, must be a boolean, and false decodes as absent', () => {
    const sub = { op: 'sub', sub: 4, event: 'e', services: null, position: 0, start: 'all', window: 10 }
    expect(decodeRequest(Buffer.concat([Uint8Array.of(FrameType.REQUEST), json({ ...sub, gaps: false })]))).toEqual(sub)
    expectMalformed(() => decodeRequest(Buffer.concat([Uint8Array.of(FrameType.REQUEST), json({ ...sub, gaps: 'yes' })])), 'REQUEST', '"gaps" must be a boolean')
  })

  it('[CLI-GAP-2] a gap CONTROL with a field missing or of the wrong type is refused', () => {
    const gap = { op: 'gap', sub: 7, event: 'alarms', services: ['a'], missed: 4, exact: true, pushedOut: 4, expired: 0, after: 1, upTo: 9 }
    for (const bad of [{ ...gap, missed: -1 }, { ...gap, services: [1] }, { ...gap, exact: 'yes' }, { ...gap, upTo: undefined }]) {
      expectMalformed(() => decodeControl(Buffer.concat([Uint8Array.of(FrameType.CONTROL), json(bad)])), 'CONTROL', 'unknown shape')
    }
  })

  it.each(EVENTS_FIXTURES.map((f, i) => [i, f] as const))('EVENTS #%i decodes to exactly what was encoded', (_i, f) => {
    const bytes = encodeEvents(f.sub, f.brokerNow, f.events)
    expect(frameType(bytes)).toBe(FrameType.EVENTS)
    expect(decodeEvents(bytes, nameOfFixture(f))).toEqual({ sub: f.sub, brokerNow: f.brokerNow, events: f.events })
  })

  it('EVENTS takes every event name from the subscription, asked for with the frame\'s sub', () => {
    const asked: number[] = []
    const bytes = encodeEvents(42, 1, [stored({ position: 1, name: 'ignored' }), stored({ position: 2, name: 'also-ignored' })])
    const back = decodeEvents(bytes, (sub) => { asked.push(sub); return 'pressure' })
    expect(asked).toEqual([42])
    expect(back?.events.map((e) => e.name)).toEqual(['pressure', 'pressure'])
  })

  it('EVENTS keeps a null expiresAt null and a set one exact', () => {
    const f = EVENTS_FIXTURES[1] as EventsFixture
    const back = decodeEvents(encodeEvents(f.sub, f.brokerNow, f.events), nameOfFixture(f))
    expect(back?.events.map((e) => e.expiresAt)).toEqual([null, 1_700_604_800_123, 1_700_604_800_123, null, 1_700_604_800_123, 1_700_604_800_123, MAX])
  })

  it.each(CONTROL_FIXTURES.map((f, i) => [i, f] as const))('CONTROL #%i decodes to exactly what was encoded', (_i, f) => {
    const bytes = encodeControl(f)
    expect(frameType(bytes)).toBe(FrameType.CONTROL)
    expect(decodeControl(bytes)).toEqual(f)
  })

  it('the encoder refuses integers a varint cannot carry', () => {
    for (const seq of [-1, 1.5, MAX + 1, Number.NaN]) {
      expect(() => encodeUp({ instance: 'gw', after: 0, events: [raised({ seq })] })).toThrow(RangeError)
    }
  })
})

// ---------------------------------------------------------------- malformed input

describe('[FRAME-KEY-1] replacing keys on the wire', () => {
  it('UP and EVENTS carry the key of a keyed event and no key field for an unkeyed one', () => {
    const events = [raised({ seq: 1, key: 't1' }), raised({ seq: 2 }), raised({ seq: 3, key: 'Größe-📱', isNull: true, payloadKind: PayloadKind.none, payload: new Uint8Array(0) })]
    const back = decodeUp(encodeUp({ instance: 'gw', after: 0, events })).events
    expect(back).toEqual(events)
    expect('key' in (back[1] as object)).toBe(false)
    const st = [stored({ position: 1, category: 'replacing', expiresAt: null, key: 't1' }), stored({ position: 2 })]
    const got = decodeEvents(encodeEvents(1, 5, st), () => 'temperature')?.events
    expect(got).toEqual(st)
    expect('key' in (got?.[1] as object)).toBe(false)
  })

  it('an unkeyed frame has the same bytes as before keys existed (no key flag, no key bytes)', () => {
    const e = raised({ seq: 1 })
    const old = new BinaryWriter().u8(FrameType.UP).string('gw').varint(0).varint(1)
      .varint(1).string(e.name).u8(0 | (PayloadKind.json << 3)).varint(e.raisedAt).varint(0).bytes(e.payload).finish()
    expect([...encodeUp({ instance: 'gw', after: 0, events: [e] })]).toEqual([...old])
  })

  it('a key on a queueing or private event is not encoded, and a key flag on one is refused', () => {
    const back = decodeUp(encodeUp({ instance: 'gw', after: 0, events: [raised({ seq: 1, category: 'queueing', key: 'x' })] })).events[0]
    expect(back?.key).toBeUndefined()
    const keyedQueueing = new BinaryWriter().u8(FrameType.UP).string('g').varint(0).varint(1)
      .varint(1).string('n').u8(1 | 32).varint(0).varint(0).string('k').bytes(new Uint8Array(0)).finish()
    expectMalformed(() => decodeUp(keyedQueueing), 'only a replacing event has a key')
    const emptyKey = new BinaryWriter().u8(FrameType.UP).string('g').varint(0).varint(1)
      .varint(1).string('n').u8(32).varint(0).varint(0).string('').bytes(new Uint8Array(0)).finish()
    expectMalformed(() => decodeUp(emptyKey), 'key must not be empty')
  })

  it('[CLI-KEY-1] a sub REQUEST carries keys; an empty list, a non-string or more than 1000 are refused', () => {
    const base = { op: 'sub', sub: 1, event: 'e', services: null, position: 0, start: 'all', window: 10 } as const
    expect(decodeRequest(encodeRequest({ ...base, keys: ['t1', 't2'] }))).toEqual({ ...base, keys: ['t1', 't2'] })
    expect('keys' in decodeRequest(encodeRequest(base))).toBe(false)
    const many = Array.from({ length: 1000 }, (_, i) => `k${i}`.padEnd(128, 'x'))
    expect((decodeRequest(encodeRequest({ ...base, keys: many })) as unknown as { keys: string[] }).keys).toHaveLength(1000)
    for (const keys of [[], [1], [''], ['x'.repeat(129)], [...many, 'one-more']]) {
      expectMalformed(() => decodeRequest(Buffer.concat([Uint8Array.of(FrameType.REQUEST), json({ ...base, keys })])), '"keys"')
    }
  })
})

describe('codec rejects malformed frames', () => {
  it('frameType throws a ProtocolError for an empty frame', () => {
    expectMalformed(() => frameType(new Uint8Array(0)), 'empty frame')
  })

  it('every truncation of every fixture at every byte offset throws a MALFORMED_FRAME ProtocolError and nothing else', () => {
    const failures: string[] = []
    let checked = 0
    for (const { label, bytes, decode } of ENCODED) {
      for (let k = 0; k < bytes.length; k++) {
        checked++
        try {
          decode(bytes.subarray(0, k))
          failures.push(`${label} cut at ${k}: returned`)
        } catch (err) {
          if (!(err instanceof ProtocolError) || err.code !== ErrorCode.MALFORMED_FRAME) failures.push(`${label} cut at ${k}: ${String(err)}`)
        }
      }
    }
    expect(failures).toEqual([])
    expect(checked).toBeGreaterThan(2500)
  })

  it('a binary frame cut inside a field names that field', () => {
    const up = encodeUp({ instance: 'gw-1', after: 5, events: [raised({ seq: 1, payload: utf8Encode('abcd') })] })
    expectMalformed(() => decodeUp(up.subarray(0, 0)), 'frame type')
    expectMalformed(() => decodeUp(up.subarray(0, 3)), 'truncated', 'instance')
    expectMalformed(() => decodeUp(up.subarray(0, up.length - 1)), 'truncated', 'payload')
    // the age is the last field before the (here empty) payload: age 0 and length 0 are one byte each
    const bare = encodeUp({ instance: 'gw-1', after: 5, events: [raised({ seq: 1, age: 0, payload: new Uint8Array(0) })] })
    expectMalformed(() => decodeUp(bare.subarray(0, bare.length - 2)), 'truncated', 'age')
  })

  it('trailing bytes after a complete frame are rejected', () => {
    for (const { label, bytes, decode } of ENCODED) {
      for (const extra of [Uint8Array.of(0), utf8Encode('xyz')]) {
        const err = thrown(() => decode(Buffer.concat([bytes, extra])))
        expect(err, label).toBeInstanceOf(ProtocolError)
        expect((err as ProtocolError).code, label).toBe(ErrorCode.MALFORMED_FRAME)
      }
    }
    expectMalformed(() => decodeUp(Buffer.concat([encodeUp(UP_FIXTURES[0] as UpFrame), Uint8Array.of(9, 9, 9)])), 'UP', '3 unexpected trailing bytes')
    expectMalformed(() => decodeAck(Buffer.concat([encodeAck(ACK_FIXTURES[0] as AckFrame), Uint8Array.of(1)])), 'ACK', '1 unexpected trailing bytes')
    expectMalformed(() => decodeEvents(Buffer.concat([encodeEvents(1, 1, []), Uint8Array.of(1)]), () => 'e'), 'EVENTS', '1 unexpected trailing bytes')
    expectMalformed(() => decodeRequest(Buffer.concat([encodeRequest(REQUEST_FIXTURES[0] as Request), utf8Encode('}')])), 'REQUEST', 'not valid JSON')
    expectMalformed(() => decodeControl(Buffer.concat([encodeControl(CONTROL_FIXTURES[0] as Control), utf8Encode('x')])), 'CONTROL', 'not valid JSON')
  })

  it('each decoder rejects every other frame type, naming both types', () => {
    const decoders: Array<[string, number, (b: Uint8Array) => unknown]> = [
      ['UP', FrameType.UP, decodeUp],
      ['ACK', FrameType.ACK, decodeAck],
      ['REQUEST', FrameType.REQUEST, decodeRequest],
      ['EVENTS', FrameType.EVENTS, (b) => decodeEvents(b, () => 'e')],
      ['CONTROL', FrameType.CONTROL, decodeControl]
    ]
    for (const { bytes } of ENCODED) {
      const type = bytes[0] as number
      for (const [name, expected, decode] of decoders) {
        if (expected === type) continue
        expectMalformed(() => decode(bytes), `expected a ${name} frame (type ${expected}), got type ${type}`)
      }
    }
    expectMalformed(() => decodeUp(Uint8Array.of(0, 0, 0, 0)), 'got type 0')
    expectMalformed(() => decodeUp(Uint8Array.of(255)), 'got type 255')
  })

  it('a frame over maxFrameBytes is rejected before it is read', () => {
    const big = Buffer.alloc(FRAME_LIMITS.maxFrameBytes + 1)
    big[0] = FrameType.UP
    expectMalformed(() => decodeUp(big), `${FRAME_LIMITS.maxFrameBytes + 1} bytes`, 'over the limit')
    const bigRequest = Buffer.concat([Uint8Array.of(FrameType.REQUEST), Buffer.from(JSON.stringify({ op: 'unsub', sub: 1, pad: 'x'.repeat(256 * 1024) }))])
    expectMalformed(() => decodeRequest(bigRequest), `REQUEST frame of ${bigRequest.length} bytes is over the limit of 262144`)
  })

  it('UP and EVENTS accept maxEventsPerFrame events and reject one more, naming both numbers', () => {
    const limit = FRAME_LIMITS.maxEventsPerFrame
    const small = (seq: number): UpEvent => raised({ seq, payloadKind: PayloadKind.bytes, payload: Uint8Array.of(seq & 0xff) })
    const atLimit = Array.from({ length: limit }, (_, i) => small(i + 1))
    expect(decodeUp(encodeUp({ instance: 'gw', after: 0, events: atLimit })).events).toHaveLength(limit)
    expectMalformed(() => decodeUp(encodeUp({ instance: 'gw', after: 0, events: [...atLimit, small(limit + 1)] })), `${limit + 1} events`, `limit of ${limit}`)

    const storedAtLimit = Array.from({ length: limit }, (_, i) => stored({ position: i + 1 }))
    expect(decodeEvents(encodeEvents(1, 1, storedAtLimit), () => 'temperature')?.events).toHaveLength(limit)
    expectMalformed(() => decodeEvents(encodeEvents(1, 1, [...storedAtLimit, stored({ position: limit + 1 })]), () => 'temperature'), `${limit + 1} events`)
  })

  it('a huge event or rejection count is rejected from the count alone', () => {
    const up = new BinaryWriter().u8(FrameType.UP).string('gw').varint(0).varint(MAX).finish()
    expectMalformed(() => decodeUp(up), `${MAX} events`)
    const ack = new BinaryWriter().u8(FrameType.ACK).string('gw').varint(0).varint(FRAME_LIMITS.maxEventsPerFrame + 1).finish()
    expectMalformed(() => decodeAck(ack), `${FRAME_LIMITS.maxEventsPerFrame + 1} events`)
    const events = new BinaryWriter().u8(FrameType.EVENTS).varint(1).varint(0).varint(2 ** 40).finish()
    expectMalformed(() => decodeEvents(events, () => 'e'), `${2 ** 40} events`)
  })

  it('strings up to maxStringBytes UTF-8 bytes are accepted and longer ones rejected, naming the field', () => {
    const max = FRAME_LIMITS.maxStringBytes
    const fits = 'é'.repeat(max / 2) // 2 bytes each: exactly the limit
    const over = `${fits}a`
    expect(decodeUp(encodeUp({ instance: fits, after: 0, events: [] })).instance).toBe(fits)
    expectMalformed(() => decodeUp(encodeUp({ instance: over, after: 0, events: [] })), 'instance', `${max + 1} bytes`, `limit of ${max}`)
    expectMalformed(() => decodeUp(encodeUp({ instance: 'gw', after: 0, events: [raised({ seq: 1, name: over })] })), 'event name', `${max + 1} bytes`)
    expectMalformed(() => decodeUp(encodeUp({ instance: 'gw', after: 0, events: [raised({ seq: 1, category: 'private', recipient: over })] })), 'recipient', `${max + 1} bytes`)
    expectMalformed(() => decodeAck(encodeAck({ instance: 'gw', acked: 1, rejections: [{ seq: 1, code: over, message: '' }], error: null })), 'code', `${max + 1} bytes`)
    expectMalformed(() => decodeAck(encodeAck({ instance: 'gw', acked: 1, rejections: [{ seq: 1, code: 'X', message: 'm'.repeat(4097) }], error: null })), 'message', '4097 bytes')
    expect(decodeAck(encodeAck({ instance: 'gw', acked: 1, rejections: [{ seq: 1, code: 'X', message: 'm'.repeat(4096) }], error: null })).rejections[0]?.message).toHaveLength(4096)
    expectMalformed(() => decodeEvents(encodeEvents(1, 1, [stored({ position: 1, serviceId: over })]), () => 'e'), 'serviceId', `${max + 1} bytes`)
    expectMalformed(() => decodeEvents(encodeEvents(1, 1, [stored({ position: 1, instance: over })]), () => 'e'), 'instance', `${max + 1} bytes`)
  })

  it('invalid event flags are rejected, naming the flags byte', () => {
    // UP with one event whose flags byte is `f`: type, instance "g", after 0, count 1, seq 1, name "n", flags, raisedAt 0, age 0, payload ""
    const upWithFlags = (f: number): Uint8Array => new BinaryWriter().u8(FrameType.UP).string('g').varint(0).varint(1)
      .varint(1).string('n').u8(f).varint(0).varint(0).bytes(new Uint8Array(0)).finish()
    expect(decodeUp(upWithFlags(1 | (1 << 3))).events[0]).toMatchObject({ category: 'queueing', payloadKind: PayloadKind.bytes, isNull: false })
    expect(decodeUp(upWithFlags(0 | 4 | (2 << 3))).events[0]).toMatchObject({ category: 'replacing', payloadKind: PayloadKind.none, isNull: true })
    for (const f of [3, 3 | (1 << 3), 3 << 3, 33, 34, 64, 128, 255]) expectMalformed(() => decodeUp(upWithFlags(f)), `invalid event flags ${f}`)
  })

  it('a varint longer than a safe integer is rejected, naming the field', () => {
    const up = Buffer.concat([new BinaryWriter().u8(FrameType.UP).string('gw').finish(), Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f])])
    expectMalformed(() => decodeUp(up), 'after', 'varint too long')
    const nine = Buffer.concat([Uint8Array.of(FrameType.EVENTS), Buffer.alloc(8, 0x80), Uint8Array.of(0)])
    expectMalformed(() => decodeEvents(nine, () => 'e'), 'sub', 'varint too long')
    // 2^53 - 1 in 8 bytes is the largest accepted
    const maxVarint = new BinaryWriter().u8(FrameType.EVENTS).varint(MAX).varint(MAX).varint(0).finish()
    expect(maxVarint.length).toBe(18)
    expect(decodeEvents(maxVarint, () => 'e')).toEqual({ sub: MAX, brokerNow: MAX, events: [] })
  })

  it('decodeEvents returns null for a subscription the client no longer has', () => {
    const f = EVENTS_FIXTURES[1] as EventsFixture
    const bytes = encodeEvents(f.sub, f.brokerNow, f.events)
    expect(decodeEvents(bytes, (sub) => (sub === f.sub + 1 ? 'temperature' : null))).toBeNull()
    expect(decodeEvents(encodeEvents(8, 0, []), () => null)).toBeNull()
  })
})

// ---------------------------------------------------------------- REQUEST and CONTROL fields

describe('decodeRequest names each malformed field', () => {
  const req = (v: unknown): Buffer => Buffer.concat([Uint8Array.of(FrameType.REQUEST), Buffer.from(typeof v === 'string' ? v : JSON.stringify(v))])
  const sub = { op: 'sub', sub: 1, event: 'temperature', services: null, position: 0, start: 'all', window: 10 }

  it.each<[string, unknown, string]>([
    ['invalid JSON', '{"op":', 'REQUEST frame is not valid JSON'],
    ['an empty body', '', 'REQUEST frame is not valid JSON'],
    ['a JSON string', '"x"', 'REQUEST frame is not a JSON object'],
    ['null', null, 'REQUEST frame is not a JSON object'],
    ['a number', 5, 'REQUEST frame is not a JSON object'],
    ['an array', [1, 2], '"sub" must be a positive integer'],
    ['sub missing', { op: 'unsub' }, '"sub" must be a positive integer'],
    ['sub 0', { op: 'unsub', sub: 0 }, '"sub" must be a positive integer'],
    ['sub negative', { op: 'unsub', sub: -3 }, '"sub" must be a positive integer'],
    ['sub fractional', { op: 'unsub', sub: 1.5 }, '"sub" must be a positive integer'],
    ['sub a string', { op: 'unsub', sub: '1' }, '"sub" must be a positive integer'],
    ['sub unsafe', { op: 'unsub', sub: 2 ** 53 }, '"sub" must be a positive integer'],
    ['op unknown', { op: 'pub', sub: 1 }, 'unknown op "pub"'],
    ['op missing', { sub: 1 }, 'unknown op undefined'],
    ['event missing', { ...sub, event: undefined }, '"event" must be a string'],
    ['event a number', { ...sub, event: 5 }, '"event" must be a string'],
    ['position negative', { ...sub, position: -1 }, '"position" must be a non-negative integer'],
    ['position fractional', { ...sub, position: 0.5 }, '"position" must be a non-negative integer'],
    ['position missing', { ...sub, position: undefined }, '"position" must be a non-negative integer'],
    ['start unknown', { ...sub, start: 'oldest' }, '"start" must be "all", "new"'],
    ['start missing', { ...sub, start: undefined }, '"start" must be "all", "new"'],
    ['start position negative', { ...sub, start: { position: -1 } }, '"start" must be "all", "new"'],
    ['start with two keys', { ...sub, start: { position: 1, time: 2 } }, '"start" must be "all", "new"'],
    ['start time a string', { ...sub, start: { time: '2026-01-01' } }, '"start" must be "all", "new"'],
    ['window 0', { ...sub, window: 0 }, '"window" must be a positive integer'],
    ['window a string', { ...sub, window: '10' }, '"window" must be a positive integer'],
    ['services a string', { ...sub, services: 'boiler' }, '"services" must be null or an array of at most 1000 strings'],
    ['services with a number', { ...sub, services: ['boiler', 1] }, '"services" must be null'],
    ['services too many', { ...sub, services: Array.from({ length: 1001 }, (_, i) => `s${i}`) }, 'at most 1000 strings'],
    ['ack position missing', { op: 'ack', sub: 1 }, 'REQUEST ack: "position" must be a non-negative integer'],
    ['ack position negative', { op: 'ack', sub: 1, position: -1 }, 'REQUEST ack: "position" must be a non-negative integer']
  ])('%s', (_label, body, message) => {
    expectMalformed(() => decodeRequest(req(body)), message)
  })

  it('invalid JSON keeps the parser\'s error as cause', () => {
    const err = thrown(() => decodeRequest(req('{')))
    expect((err as Error).cause).toBeInstanceOf(SyntaxError)
  })

  it('1000 services are accepted', () => {
    const services = Array.from({ length: 1000 }, (_, i) => `s${i}`)
    const back = decodeRequest(req({ ...sub, services }))
    expect(back).toMatchObject({ op: 'sub', services })
  })
})

describe('decodeControl', () => {
  const ctl = (v: unknown): Buffer => Buffer.concat([Uint8Array.of(FrameType.CONTROL), Buffer.from(typeof v === 'string' ? v : JSON.stringify(v))])

  it.each<[string, unknown, string]>([
    ['invalid JSON', '{', 'CONTROL frame is not valid JSON'],
    ['null', null, 'CONTROL frame is not a JSON object'],
    ['an unknown op', { op: 'hello', sub: 1 }, 'CONTROL frame has an unknown shape'],
    ['subscribed with an unknown category', { op: 'subscribed', sub: 1, category: 'broadcast', head: 0, reset: false }, 'unknown shape'],
    ['subscribed with sub 0', { op: 'subscribed', sub: 0, category: 'queueing', head: 0, reset: false }, 'unknown shape'],
    ['subscribed without reset', { op: 'subscribed', sub: 1, category: 'queueing', head: 0 }, 'unknown shape'],
    ['subscribed with a negative head', { op: 'subscribed', sub: 1, category: 'queueing', head: -1, reset: false }, 'unknown shape'],
    ['error without message', { op: 'error', sub: null, code: 'X' }, 'unknown shape'],
    ['error with sub a string', { op: 'error', sub: '1', code: 'X', message: 'm' }, 'unknown shape']
  ])('rejects %s', (_label, body, message) => {
    expectMalformed(() => decodeControl(ctl(body)), message)
  })
})

// ---------------------------------------------------------------- fuzz

describe('codec fuzz', () => {
  const decoders: Array<[string, (b: Uint8Array) => unknown]> = [
    ['UP', decodeUp],
    ['ACK', decodeAck],
    ['REQUEST', decodeRequest],
    ['EVENTS', (b) => decodeEvents(b, () => 'e')],
    ['CONTROL', decodeControl]
  ]
  const types = Object.values(FrameType)

  /** Feeds `buf` to every decoder; records anything thrown that is not a MALFORMED_FRAME ProtocolError. */
  function feed (buf: Buffer, failures: string[], counts: { ok: number, refused: number }): void {
    for (const [name, decode] of decoders) {
      try {
        decode(buf)
        counts.ok++
      } catch (err) {
        counts.refused++
        if (!(err instanceof ProtocolError) || err.code !== ErrorCode.MALFORMED_FRAME) {
          if (failures.length < 10) failures.push(`${name} <${buf.toString('hex')}>: ${String(err)}`)
        }
      }
    }
  }

  // stack traces are not looked at here and cost most of the time of 500,000 throws
  let savedLimit = Error.stackTraceLimit
  beforeAll(() => { savedLimit = Error.stackTraceLimit; Error.stackTraceLimit = 0 })
  afterAll(() => { Error.stackTraceLimit = savedLimit })

  it('100,000 seeded random buffers through each decoder throw only MALFORMED_FRAME ProtocolErrors', () => {
    const rand = seededRandom(0x4e524c44)
    const failures: string[] = []
    const counts = { ok: 0, refused: 0 }
    for (let i = 0; i < 100_000; i++) {
      const buf = Buffer.allocUnsafe(Math.floor(rand() * 65))
      for (let j = 0; j < buf.length; j += 4) {
        const word = Math.floor(rand() * 4294967296)
        for (let k = 0; k < 4 && j + k < buf.length; k++) buf[j + k] = (word >>> (8 * k)) & 0xff
      }
      if (buf.length > 0) buf[0] = types[Math.floor(rand() * types.length)] as number
      feed(buf, failures, counts)
    }
    expect(failures).toEqual([])
    expect(counts.ok + counts.refused).toBe(500_000)
    // random bytes almost never form a valid frame; the mutation test below checks both paths run
  })

  it('30,000 seeded mutations of the fixtures throw only MALFORMED_FRAME ProtocolErrors', () => {
    const rand = seededRandom(12345)
    const failures: string[] = []
    const counts = { ok: 0, refused: 0 }
    for (let i = 0; i < 30_000; i++) {
      const fixture = ENCODED[Math.floor(rand() * ENCODED.length)]
      if (fixture === undefined) continue
      const buf = Buffer.from(fixture.bytes)
      const edits = 1 + Math.floor(rand() * 3)
      for (let e = 0; e < edits && buf.length > 1; e++) {
        const at = 1 + Math.floor(rand() * (buf.length - 1))
        buf[at] = rand() < 0.5 ? Math.floor(rand() * 256) : (buf[at] as number) ^ (1 << Math.floor(rand() * 8))
      }
      feed(buf, failures, counts)
    }
    expect(failures).toEqual([])
    expect(counts.ok).toBeGreaterThan(0)
    expect(counts.refused).toBeGreaterThan(0)
  })
})

describe('ACK error flag', () => {
  it('is 0 or 1; any other value is a malformed frame', () => {
    const ok = encodeAck({ instance: 'i', acked: 3, rejections: [], error: null })
    for (const flag of [2, 0x7f, 0xff]) {
      const bad = Buffer.from(ok)
      bad[bad.length - 1] = flag
      expect(() => decodeAck(bad)).toThrow(ProtocolError)
      expect(() => decodeAck(bad)).toThrow(`ACK error flag must be 0 or 1, got ${flag}`)
    }
  })
})

describe('consumer group frames [GROUP-FRAME-1] [GROUP-ACK-1] [GROUP-CTRL-1..4]', () => {
  it('round-trips gjoin and gack requests', () => {
    const reqs: Request[] = [
      { op: 'gjoin', sub: 3, group: 'billing', event: 'readings', services: null, segments: 16, start: 'all', window: 1000 },
      { op: 'gjoin', sub: 4, group: 'billing', event: 'readings', services: ['a', 'b'], segments: 256, start: 'new', window: 1 },
      { op: 'gack', sub: 3, segment: 255, epoch: 7, done: 10, started: 12 },
      { op: 'gack', sub: 3, segment: 0, epoch: 1, done: 0, started: 0 }
    ]
    for (const r of reqs) expect(decodeRequest(encodeRequest(r))).toEqual(r)
  })

  it('refuses bad gjoin and gack fields, naming them', () => {
    const req = (o: object): Uint8Array => { const b = json(o); const out = new Uint8Array(b.length + 1); out[0] = FrameType.REQUEST; out.set(b, 1); return out }
    const join = { op: 'gjoin', sub: 1, group: 'g', event: 'e', services: null, segments: 16, start: 'all', window: 10 }
    expectMalformed(() => decodeRequest(req({ ...join, segments: 12 })), '"segments" must be a power of two')
    expectMalformed(() => decodeRequest(req({ ...join, segments: 512 })), '"segments"')
    expectMalformed(() => decodeRequest(req({ ...join, start: 'latest' })), '"start"')
    expectMalformed(() => decodeRequest(req({ ...join, group: 5 })), '"group"')
    expectMalformed(() => decodeRequest(req({ ...join, window: 0 })), '"window"')
    const ack = { op: 'gack', sub: 1, segment: 2, epoch: 1, done: 5, started: 6 }
    expectMalformed(() => decodeRequest(req({ ...ack, started: 4 })), 'started >= done')
    expectMalformed(() => decodeRequest(req({ ...ack, segment: 256 })), '"segment"')
    expectMalformed(() => decodeRequest(req({ ...ack, epoch: 0 })), '"epoch"')
  })

  it('round-trips the group CONTROL ops and refuses malformed ones', () => {
    const cs: Control[] = [
      { op: 'joined', sub: 2, category: 'queueing', segments: 16 },
      { op: 'assigned', sub: 2, claims: [{ segment: 0, epoch: 1 }, { segment: 9, epoch: 33 }] },
      { op: 'revoked', sub: 2, segments: [9] },
      { op: 'committed', sub: 2, segment: 9, epoch: 33, done: 100, started: 101 }
    ]
    for (const c of cs) expect(decodeControl(encodeControl(c))).toEqual(c)
    const ctl = (o: object): Uint8Array => { const b = json(o); const out = new Uint8Array(b.length + 1); out[0] = FrameType.CONTROL; out.set(b, 1); return out }
    expectMalformed(() => decodeControl(ctl({ op: 'assigned', sub: 2, claims: [{ segment: 300, epoch: 1 }] })), 'unknown shape')
    expectMalformed(() => decodeControl(ctl({ op: 'committed', sub: 2, segment: 1, epoch: 0, done: 1, started: 1 })), 'unknown shape')
  })

  it('round-trips a GROUP_EVENTS frame: segment, epoch, the redelivered position and the events as in EVENTS', () => {
    const events = [stored({ position: 7 }), stored({ position: 9, seq: 2 })]
    const buf = encodeGroupEvents(5, 13, 4, 9, 1_700_000_000_999, events)
    expect(frameType(buf)).toBe(FrameType.GROUP_EVENTS)
    expect(decodeGroupEvents(buf, () => 'temperature')).toEqual({ sub: 5, segment: 13, epoch: 4, redelivered: 9, brokerNow: 1_700_000_000_999, events })
    expect(decodeGroupEvents(buf, () => null)).toBeNull()
    expectMalformed(() => decodeGroupEvents(buf.subarray(0, buf.length - 1), () => 'temperature'), 'truncated')
    expectMalformed(() => decodeGroupEvents(encodeEvents(5, 1, events), () => 'temperature'), 'GROUP_EVENTS')
  })
})
