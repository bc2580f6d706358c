import { describe, expect, it } from 'vitest'
import { encodeFrame, FrameDecoder, MAX_FRAME_BYTES, type DecoderStats, type DeviceFrame } from './index.js'
import { crcHex, FIXTURE_FRAMES, FIXTURE_NOISE, fixtureStream, wireFrame } from './testing/index.js'

const ZERO: DecoderStats = { frames: 0, noiseBytes: 0, truncated: 0, oversized: 0, badCrc: 0, malformed: 0 }

function decode (chunks: readonly Uint8Array[]): { frames: DeviceFrame[], stats: DecoderStats } {
  const d = new FrameDecoder()
  const frames: DeviceFrame[] = []
  for (const c of chunks) frames.push(...d.push(c))
  return { frames, stats: d.stats }
}

const bytes = (...parts: Array<string | Buffer>): Buffer => Buffer.concat(parts.map((p) => typeof p === 'string' ? Buffer.from(p, 'latin1') : p))
const sync = encodeFrame({ type: 'SYNC' })
const state1 = encodeFrame({ type: 'STATE', boot: 1, seq: 1, code: null, fields: { temp: '20.00' } })

// A 513-byte frame with a correct CRC: one byte over the limit.
function frameOfLength (n: number): Buffer {
  const head = 'STATE boot=1 seq=1 pad='
  return wireFrame(head + 'x'.repeat(n - 11 - head.length))
}

interface Fixture { name: string, stream: Buffer, frames: readonly DeviceFrame[], stats: DecoderStats }

const noiseTotal = FIXTURE_FRAMES.reduce((sum, _, i) => sum + FIXTURE_NOISE[i % FIXTURE_NOISE.length]!.length, 0)

const FIXTURES: Fixture[] = [
  { name: 'every frame type with noise between', stream: fixtureStream(), frames: FIXTURE_FRAMES, stats: { ...ZERO, frames: FIXTURE_FRAMES.length, noiseBytes: noiseTotal } },
  { name: 'frames back to back', stream: fixtureStream(FIXTURE_FRAMES, [Buffer.alloc(0)]), frames: FIXTURE_FRAMES, stats: { ...ZERO, frames: FIXTURE_FRAMES.length } },
  {
    name: 'every rejection between good frames',
    stream: bytes(
      'noise\n', sync,
      '$STATE boot=1 seq=1 te', // truncated by the next "$"
      state1,
      wireFrame('STATE boot=1 seq=2', '00000000'), // bad crc
      wireFrame('STATE boot=1 seq=2 Temp=1'), // malformed
      '$', 'y'.repeat(600), '\n more of it\n', // oversized, skipped to the next "$" (not noise)
      frameOfLength(MAX_FRAME_BYTES), // the largest frame
      frameOfLength(MAX_FRAME_BYTES + 1), // oversized
      '\r\n', sync // the CR LF is still the oversized frame's, not noise
    ),
    frames: [
      { type: 'SYNC' },
      { type: 'STATE', boot: 1, seq: 1, code: null, fields: { temp: '20.00' } },
      { type: 'STATE', boot: 1, seq: 1, code: null, fields: { pad: 'x'.repeat(MAX_FRAME_BYTES - 34) } },
      { type: 'SYNC' }
    ],
    stats: { frames: 4, noiseBytes: 6, truncated: 1, oversized: 2, badCrc: 1, malformed: 1 }
  },
  {
    name: 'a stream that ends inside a frame',
    stream: bytes(sync, '$ACK boot=1 seq='),
    frames: [{ type: 'SYNC' }],
    stats: { ...ZERO, frames: 1 }
  }
]

describe('FrameDecoder: every fixture, split anywhere', () => {
  for (const fx of FIXTURES) {
    it(`${fx.name}: whole, at every byte offset, and byte by byte`, () => {
      const whole = decode([fx.stream])
      expect(whole.frames).toEqual(fx.frames)
      expect(whole.stats).toEqual(fx.stats)
      for (let k = 0; k <= fx.stream.length; k++) {
        const split = decode([fx.stream.subarray(0, k), fx.stream.subarray(k)])
        expect(split.frames, `split at ${k}`).toEqual(fx.frames)
        expect(split.stats, `split at ${k}`).toEqual(fx.stats)
      }
      // three pieces: every pair of offsets k < m for a stride through the stream
      for (let k = 0; k <= fx.stream.length; k += 7) {
        for (let m = k; m <= fx.stream.length; m += 13) {
          const split = decode([fx.stream.subarray(0, k), fx.stream.subarray(k, m), fx.stream.subarray(m)])
          expect(split.frames, `split at ${k} and ${m}`).toEqual(fx.frames)
          expect(split.stats, `split at ${k} and ${m}`).toEqual(fx.stats)
        }
      }
      const single = decode(Array.from(fx.stream, (b) => Uint8Array.of(b)))
      expect(single.frames).toEqual(fx.frames)
      expect(single.stats).toEqual(fx.stats)
    })
  }
})

describe('FrameDecoder: each rejection counted by reason', () => {
  it('counts bytes outside frames as noise', () => {
    expect(decode([bytes('hello\r\n\x00', sync, '\n\n')]).stats).toEqual({ ...ZERO, frames: 1, noiseBytes: 10 })
    expect(decode([bytes('no frame at all')]).stats).toEqual({ ...ZERO, noiseBytes: 15 })
  })

  it('counts a frame cut by "$" as truncated, and decodes the frame that follows', () => {
    const cut = state1.subarray(0, 20)
    const r = decode([bytes(cut, state1, cut, cut, sync)])
    expect(r.frames).toEqual([{ type: 'STATE', boot: 1, seq: 1, code: null, fields: { temp: '20.00' } }, { type: 'SYNC' }])
    expect(r.stats).toEqual({ ...ZERO, frames: 2, truncated: 3 })
  })

  it('counts a frame cut by reset() as truncated; the rest of it is noise', () => {
    const d = new FrameDecoder()
    expect(d.push(state1.subarray(0, 10))).toEqual([])
    d.reset()
    expect(d.push(state1.subarray(10))).toEqual([])
    expect(d.stats).toEqual({ ...ZERO, truncated: 1, noiseBytes: state1.length - 10 })
    d.reset() // nothing in progress: nothing counted
    expect(d.push(sync)).toEqual([{ type: 'SYNC' }])
    expect(d.stats).toEqual({ ...ZERO, frames: 1, truncated: 1, noiseBytes: state1.length - 10 })
  })

  it('accepts a frame of exactly 512 bytes and counts one of 513 as oversized', () => {
    expect(frameOfLength(MAX_FRAME_BYTES).length).toBe(MAX_FRAME_BYTES)
    expect(decode([frameOfLength(MAX_FRAME_BYTES)]).stats).toEqual({ ...ZERO, frames: 1 })
    expect(decode([frameOfLength(MAX_FRAME_BYTES + 1)]).stats).toEqual({ ...ZERO, oversized: 1 })
  })

  it('skips an oversized frame up to the next "$", through LFs, in bounded memory', () => {
    const d = new FrameDecoder()
    d.push(Buffer.from('$' + 'x'.repeat(600)))
    const chunk = Buffer.alloc(1 << 20, 'x\nz')
    for (let i = 0; i < 64; i++) expect(d.push(chunk)).toEqual([])
    expect(d.push(bytes('\n', sync))).toEqual([{ type: 'SYNC' }])
    expect(d.stats).toEqual({ ...ZERO, frames: 1, oversized: 1 })
    // the decoder keeps one buffer, never more than a frame
    expect((Reflect.get(d, 'buf') as Buffer).length).toBeLessThanOrEqual(MAX_FRAME_BYTES)
  })

  it('counts a well-formed trailer with the wrong CRC as bad crc', () => {
    const body = 'STATE boot=1 seq=1 temp=20.00'
    const good = crcHex(body)
    const wrong = (parseInt(good, 16) ^ 1).toString(16).toUpperCase().padStart(8, '0')
    const flipped = Buffer.from(state1)
    flipped[18] = 0x32 // seq=1 -> seq=2 under the old CRC
    expect(decode([bytes(wireFrame(body, wrong), flipped, wireFrame('SYNC', 'FFFFFFFF'))]).stats).toEqual({ ...ZERO, badCrc: 3 })
  })

  const MALFORMED: Record<string, Buffer> = {
    'CR LF line end [DEV-FRAME-3]': bytes(state1.subarray(0, -1), '\r\n'),
    'no trailer': bytes('$STATE boot=1 seq=1\n'),
    'short CRC': bytes('$SYNC*1234\n'),
    'lowercase CRC': bytes('$SYNC*', crcHex('SYNC').toLowerCase(), '\n'),
    'CRC with a non-hex digit': bytes('$SYNC*', crcHex('SYNC').slice(0, 7), 'G\n'),
    'empty body': wireFrame(''),
    'unknown type': wireFrame('PING'),
    'lowercase type': wireFrame('sync'),
    'trailing space': wireFrame('SYNC '),
    'two spaces': wireFrame('STATE  boot=1 seq=1'),
    'tab as separator': wireFrame('STATE\tboot=1 seq=1'),
    'field without "="': wireFrame('STATE boot=1 seq=1 temp'),
    'uppercase key': wireFrame('STATE boot=1 seq=1 Temp=1'),
    'key starting with "_" (no __proto__)': wireFrame('STATE boot=1 seq=1 __proto__=1'),
    'key of 33 characters': wireFrame(`STATE boot=1 seq=1 ${'k'.repeat(33)}=1`),
    'duplicate key': wireFrame('STATE boot=1 seq=1 a=1 a=2'),
    'duplicate boot': wireFrame('STATE boot=1 seq=1 boot=2'),
    '25 fields': wireFrame(`STATE boot=1 seq=1 ${Array.from({ length: 23 }, (_, i) => `f${i}=1`).join(' ')}`),
    'missing seq': wireFrame('STATE boot=1'),
    'leading zero': wireFrame('STATE boot=01 seq=1'),
    'zero seq': wireFrame('STATE boot=1 seq=0'),
    'negative boot': wireFrame('STATE boot=-1 seq=1'),
    'boot of 2^53': wireFrame('STATE boot=9007199254740992 seq=1'),
    'STATE with a code': wireFrame('STATE boot=1 seq=1 code=x'),
    'ALARM without code': wireFrame('ALARM boot=1 seq=1'),
    'CLEAR with an empty code': wireFrame('CLEAR boot=1 seq=1 code='),
    'HELLO without oldest': wireFrame('HELLO model=m serial=s fw=1 boot=1'),
    'HELLO with a bad oldest': wireFrame('HELLO model=m serial=s fw=1 boot=1 oldest=0:1'),
    'HELLO with an empty serial': wireFrame('HELLO model=m serial= fw=1 boot=1 oldest=none'),
    'ACK without seq': wireFrame('ACK boot=1'),
    '"*" in a value': wireFrame('STATE boot=1 seq=1 a=*'),
    '"=" in a value': wireFrame('STATE boot=1 seq=1 a=b=c'),
    'bad escape %zz': wireFrame('STATE boot=1 seq=1 a=%zz'),
    'short escape': wireFrame('STATE boot=1 seq=1 a=%4'),
    'lowercase escape': wireFrame('STATE boot=1 seq=1 a=%c3%bc'),
    'escape that is not UTF-8': wireFrame('STATE boot=1 seq=1 a=%FF'),
    'escaped UTF-16 surrogate': wireFrame('STATE boot=1 seq=1 a=%ED%A0%80'),
    'raw byte 0x80 in a value': wireFrame('STATE boot=1 seq=1 a=\x80'),
    'raw control byte in a value': wireFrame('STATE boot=1 seq=1 a=\x01')
  }
  for (const [name, frame] of Object.entries(MALFORMED)) {
    it(`counts as malformed: ${name}`, () => {
      const r = decode([bytes(frame, sync)])
      expect(r.frames).toEqual([{ type: 'SYNC' }])
      expect(r.stats).toEqual({ ...ZERO, frames: 1, malformed: 1 })
    })
  }

  it('has a lowercase-hex test case that can fail', () => {
    expect(crcHex('SYNC')).toMatch(/[A-F]/)
  })

  it('ignores fields a later version may add to SYNC and ACK [DEV-FRAME-4]', () => {
    const r = decode([bytes(wireFrame('SYNC reason=stale'), wireFrame('ACK boot=2 seq=3 window=8'))])
    expect(r.frames).toEqual([{ type: 'SYNC' }, { type: 'ACK', boot: 2, seq: 3 }])
  })

  it('passes prev on in fields without requiring it, and still reads oldest=none', () => {
    const r = decode([bytes(wireFrame('STATE boot=2 seq=1 prev=1:9 v=1'), wireFrame('STATE boot=2 seq=1 v=1'), wireFrame('HELLO model=m serial=s fw=1 boot=1 oldest=none'))])
    expect(r.frames).toEqual([
      { type: 'STATE', boot: 2, seq: 1, code: null, fields: { prev: '1:9', v: '1' } },
      { type: 'STATE', boot: 2, seq: 1, code: null, fields: { v: '1' } },
      { type: 'HELLO', model: 'm', serial: 's', fw: '1', boot: 1, oldest: null, fields: {} }
    ])
  })

  it('accepts escapes of bytes that need none', () => {
    const r = decode([wireFrame('ALARM boot=1 seq=1 code=%41%42 text=caf%C3%A9')])
    expect(r.frames).toEqual([{ type: 'ALARM', boot: 1, seq: 1, code: 'AB', fields: { text: 'café' } }])
  })
})
