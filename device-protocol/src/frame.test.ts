import { describe, expect, it } from 'vitest'
import {
  comparePos, decodeValue, DeviceProtocolError, encodeFrame, encodeValue, formatPos, FrameDecoder, MAX_FIELDS,
  MAX_FRAME_BYTES, parsePos, type DataFrame, type DeviceFrame, type HelloFrame
} from './index.js'
import { FIXTURE_FRAMES, TestRandom } from './testing/index.js'

function decodeOne (bytes: Uint8Array): DeviceFrame {
  const d = new FrameDecoder()
  const frames = d.push(bytes)
  expect(d.stats).toMatchObject({ frames: 1, truncated: 0, oversized: 0, badCrc: 0, malformed: 0 })
  expect(frames).toHaveLength(1)
  return frames[0]!
}

function nullProto (entries: Record<string, string>): Record<string, string> {
  return Object.assign(Object.create(null) as Record<string, string>, entries)
}

function state (fields: Record<string, string>, seq = 1): DataFrame {
  return { type: 'STATE', boot: 1, seq, code: null, fields }
}

function expectCode (fn: () => unknown, code: string, message: RegExp): void {
  let thrown: unknown
  try { fn() } catch (err) { thrown = err }
  expect(thrown).toBeInstanceOf(DeviceProtocolError)
  expect(thrown).toBeInstanceOf(RangeError)
  expect((thrown as DeviceProtocolError).code).toBe(code)
  expect((thrown as Error).message).toMatch(message)
}

describe('encodeFrame', () => {
  it('writes the example of docs/device-protocol.md byte for byte', () => {
    const frame = state({ temp: '21.37', setpoint: '21.00', heater: 'on' }, 17)
    expect(encodeFrame({ ...frame, boot: 3 }).toString('latin1')).toBe('$STATE boot=3 seq=17 temp=21.37 setpoint=21.00 heater=on*1AD537B2\n')
  })

  it('writes each type with its own fields first, in a fixed order', () => {
    expect(encodeFrame({ type: 'SYNC' }).toString()).toMatch(/^\$SYNC\*[0-9A-F]{8}\n$/)
    expect(encodeFrame({ type: 'ACK', boot: 2, seq: 9 }).toString()).toMatch(/^\$ACK boot=2 seq=9\*[0-9A-F]{8}\n$/)
    expect(encodeFrame({ type: 'HELLO', model: 'pump', serial: 'PU-000001', fw: '1.0', boot: 4, oldest: { boot: 3, seq: 7 }, fields: { hw: 'b' } }).toString())
      .toMatch(/^\$HELLO model=pump serial=PU-000001 fw=1\.0 boot=4 oldest=3:7 hw=b\*[0-9A-F]{8}\n$/)
    expect(encodeFrame({ type: 'HELLO', model: 'pump', serial: 'PU-000001', fw: '1.0', boot: 1, oldest: null, fields: {} }).toString())
      .toMatch(/ oldest=none\*/)
    expect(encodeFrame({ type: 'CLEAR', boot: 1, seq: 2, code: 'tamper', fields: { x: '' } }).toString()).toMatch(/^\$CLEAR boot=1 seq=2 code=tamper x=\*/)
  })

  it('percent-encodes every byte that is not a vchar, in uppercase hex of its UTF-8', () => {
    expect(encodeValue('a b')).toBe('a%20b')
    expect(encodeValue('$*%=')).toBe('%24%2A%25%3D')
    expect(encodeValue('ü')).toBe('%C3%BC')
    expect(encodeValue('\r\n\t\x00\x7f')).toBe('%0D%0A%09%00%7F')
    expect(encodeValue('!"#&\'()+,-./09:;<>?@AZ[\\]^_`az{|}~')).toBe('!"#&\'()+,-./09:;<>?@AZ[\\]^_`az{|}~')
    expect(encodeValue('')).toBe('')
    for (const v of ['a b', '$*%=', 'ü', '🌡️', '', 'x%41']) expect(decodeValue(encodeValue(v))).toBe(v)
  })

  it('refuses a frame longer than 512 bytes, and makes one of exactly 512', () => {
    const base = encodeFrame(state({ pad: '' })).length
    const exact = encodeFrame(state({ pad: 'x'.repeat(MAX_FRAME_BYTES - base) }))
    expect(exact.length).toBe(MAX_FRAME_BYTES)
    expect(decodeOne(exact)).toEqual(state({ pad: 'x'.repeat(MAX_FRAME_BYTES - base) }))
    expectCode(() => encodeFrame(state({ pad: 'x'.repeat(MAX_FRAME_BYTES - base + 1) })), 'FRAME_TOO_LONG', /STATE frame would be 513 bytes, more than 512/)
    // escaping counts: one "ü" is 6 bytes on the wire
    expectCode(() => encodeFrame(state({ pad: 'ü'.repeat(100) })), 'FRAME_TOO_LONG', /would be \d+ bytes/)
  })

  it('refuses more than 24 fields, counting the frame\'s own', () => {
    const fields = (n: number): Record<string, string> => Object.fromEntries(Array.from({ length: n }, (_, i) => [`f${i}`, '1']))
    expect(decodeOne(encodeFrame(state(fields(MAX_FIELDS - 2))))).toEqual(state(fields(MAX_FIELDS - 2)))
    expectCode(() => encodeFrame(state(fields(MAX_FIELDS - 1))), 'TOO_MANY_FIELDS', /STATE frame has 25 fields, more than 24/)
    expectCode(() => encodeFrame({ type: 'ALARM', boot: 1, seq: 1, code: 'x', fields: fields(MAX_FIELDS - 2) }), 'TOO_MANY_FIELDS', /ALARM frame has 25 fields/)
  })

  it('refuses keys that break the grammar or belong to the frame itself', () => {
    for (const key of ['Temp', '1a', '_a', 'a-b', 'a b', '', 'a'.repeat(33), '__proto__', 'tëmp']) {
      expectCode(() => encodeFrame(state({ [key]: '1' })), 'BAD_KEY', /STATE field key .* is not a lowercase letter/)
    }
    expect(decodeOne(encodeFrame(state({ ['a'.repeat(32)]: '1', a_1: '2' })))).toEqual(state({ ['a'.repeat(32)]: '1', a_1: '2' }))
    expectCode(() => encodeFrame(state({ seq: '1' })), 'BAD_KEY', /STATE field key "seq" is set by the frame itself/)
    expectCode(() => encodeFrame(state({ code: 'x' })), 'BAD_KEY', /"code"/)
    expectCode(() => encodeFrame({ type: 'HELLO', model: 'm', serial: 's', fw: '1', boot: 1, oldest: null, fields: { oldest: 'none' } }), 'BAD_KEY', /HELLO field key "oldest"/)
  })

  it('refuses bad counters, text and missing or extra codes', () => {
    for (const n of [0, -1, 1.5, NaN, 2 ** 53, Infinity]) {
      expectCode(() => encodeFrame({ type: 'ACK', boot: n, seq: 1 }), 'BAD_NUMBER', /ACK boot must be a whole number from 1 to 2\^53 - 1/)
      expectCode(() => encodeFrame({ ...state({}), seq: n }), 'BAD_NUMBER', /STATE seq must be/)
    }
    expectCode(() => encodeFrame({ type: 'HELLO', model: 'm', serial: 's', fw: '1', boot: 1, oldest: { boot: 1, seq: 0 }, fields: {} }), 'BAD_NUMBER', /HELLO oldest\.seq/)
    expectCode(() => encodeFrame(state({ v: 'a\uD800b' })), 'BAD_VALUE', /STATE field "v" is not well-formed text/)
    expectCode(() => encodeFrame({ type: 'HELLO', model: 'm', serial: '', fw: '1', boot: 1, oldest: null, fields: {} }), 'BAD_VALUE', /HELLO serial must not be empty/)
    expectCode(() => encodeFrame({ type: 'ALARM', boot: 1, seq: 1, code: null, fields: {} }), 'BAD_VALUE', /ALARM code must be a string/)
    expectCode(() => encodeFrame({ type: 'CLEAR', boot: 1, seq: 1, code: '', fields: {} }), 'BAD_VALUE', /CLEAR code must not be empty/)
    expectCode(() => encodeFrame({ ...state({}), code: 'x' }), 'BAD_FRAME', /a STATE frame has no code/)
    expectCode(() => encodeFrame({ type: 'PING' } as unknown as DeviceFrame), 'BAD_FRAME', /unknown frame type "PING"/)
  })
})

describe('encode and decode', () => {
  it('round-trips every fixture frame', () => {
    for (const frame of FIXTURE_FRAMES) expect(decodeOne(encodeFrame(frame))).toEqual(frame)
  })

  it('round-trips random frames (seeded)', () => {
    const seed = Number(process.env.TEST_SEED ?? 1) >>> 0
    console.log(`round trip: seed ${seed} (TEST_SEED=${seed} to repeat)`)
    const rnd = new TestRandom(seed)
    const alphabet = ['a', 'Z', '0', ' ', '$', '*', '%', '=', '\n', '\r', '\x00', 'é', '€', '🌡', '~', '_', ':']
    const text = (max: number): string => Array.from({ length: rnd.int(max) }, () => rnd.pick(alphabet)).join('')
    const counter = (): number => rnd.int(2) === 0 ? 1 + rnd.int(1000) : Number.MAX_SAFE_INTEGER - rnd.int(1000)
    let made = 0
    for (let i = 0; i < 2000; i++) {
      const fields = nullProto({})
      const n = rnd.int(8)
      for (let k = 0; k < n; k++) fields[`k${k}_${rnd.pick(['a', 'b', 'zz'])}`] = text(12)
      const kind = rnd.int(6)
      const frame: DeviceFrame = kind === 0
        ? { type: 'HELLO', model: 'm' + text(8), serial: 's' + text(8), fw: 'f' + text(4), boot: counter(), oldest: rnd.int(3) === 0 ? null : { boot: counter(), seq: counter() }, fields }
        : kind === 1
          ? { type: 'SYNC' }
          : kind === 2
            ? { type: 'ACK', boot: counter(), seq: counter() }
            : { type: rnd.pick(['STATE', 'ALARM', 'CLEAR'] as const), boot: counter(), seq: counter(), code: null, fields }
      const withCode: DeviceFrame = frame.type === 'ALARM' || frame.type === 'CLEAR' ? { ...frame, code: 'c' + text(6) } : frame
      let bytes: Buffer
      try {
        bytes = encodeFrame(withCode)
      } catch (err) {
        expect((err as DeviceProtocolError).code, `seed ${seed}`).toBe('FRAME_TOO_LONG')
        continue
      }
      made++
      expect(decodeOne(bytes), `seed ${seed}`).toEqual(withCode)
    }
    expect(made).toBeGreaterThan(1000)
  })

  it('decodes fields into null-prototype objects', () => {
    const frame = decodeOne(encodeFrame(state({ constructor: 'x', hasownproperty: 'y', tostring: '' }))) as DataFrame
    expect(Object.getPrototypeOf(frame.fields)).toBe(null)
    expect({ ...frame.fields }).toEqual({ constructor: 'x', hasownproperty: 'y', tostring: '' })
    const hello = decodeOne(encodeFrame(FIXTURE_FRAMES[1]!)) as HelloFrame
    expect(Object.getPrototypeOf(hello.fields)).toBe(null)
    expect({ ...hello.fields }).toEqual({ hw: 'rev B', note: '' })
  })
})

describe('positions', () => {
  it('orders by boot, then seq', () => {
    expect(comparePos({ boot: 1, seq: 9 }, { boot: 2, seq: 1 })).toBeLessThan(0)
    expect(comparePos({ boot: 2, seq: 1 }, { boot: 1, seq: 9 })).toBeGreaterThan(0)
    expect(comparePos({ boot: 2, seq: 3 }, { boot: 2, seq: 4 })).toBeLessThan(0)
    expect(comparePos({ boot: 2, seq: 4 }, { boot: 2, seq: 4 })).toBe(0)
    expect(comparePos({ boot: 1, seq: Number.MAX_SAFE_INTEGER }, { boot: 2, seq: 1 })).toBeLessThan(0)
  })

  it('formats and parses <boot>:<seq> and none', () => {
    expect(formatPos({ boot: 3, seq: 17 })).toBe('3:17')
    expect(formatPos(null)).toBe('none')
    expect(parsePos('3:17')).toEqual({ boot: 3, seq: 17 })
    expect(parsePos('none')).toBe(null)
    expect(parsePos('9007199254740991:1')).toEqual({ boot: Number.MAX_SAFE_INTEGER, seq: 1 })
    for (const bad of ['', 'None', '3', '3:', ':3', '0:1', '1:0', '01:1', '+1:1', '1:1:1', '1.0:1', ' 1:1', '9007199254740992:1']) {
      expectCode(() => parsePos(bad), 'BAD_POSITION', /a position is "<boot>:<seq>" or "none", not /)
    }
  })
})
