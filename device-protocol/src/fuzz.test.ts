/**
 * Fuzzing the decoder with 100,000 seeded inputs: random bytes, and random mutations of valid
 * streams. Set TEST_SEED to repeat a run; the seed is printed and named in every failure.
 */
import { describe, expect, it } from 'vitest'
import { encodeFrame, FrameDecoder, MAX_FRAME_BYTES, type DecoderStats, type DeviceFrame } from './index.js'
import { FIXTURE_FRAMES, TestRandom } from './testing/index.js'

const SEED = Number(process.env.TEST_SEED ?? 0x5eed) >>> 0
const RANDOM_INPUTS = 30_000
const MUTATED_INPUTS = 70_000

// bytes that make frame-like text more likely than uniform bytes do
const PROTOCOL_BYTES = Buffer.from('$$$***\n\n\n  ==%%0123456789ABCDEFabcdefSTATEALARMCLEARHELLOSYNCACKbootseqcode:\r', 'latin1')

interface Run { frames: DeviceFrame[], stats: DecoderStats }

/** Decodes `input` in random chunks, checking the decoder's memory after every push. */
function decodeChunked (input: Buffer, rnd: TestRandom): Run {
  const d = new FrameDecoder()
  const frames: DeviceFrame[] = []
  let i = 0
  while (i < input.length) {
    const n = 1 + rnd.int(rnd.int(4) === 0 ? 4 : 300)
    frames.push(...d.push(input.subarray(i, i + n)))
    i += n
    const buf = Reflect.get(d, 'buf') as Buffer
    const len = Reflect.get(d, 'len') as number
    if (buf.length > MAX_FRAME_BYTES || len > buf.length) throw new Error(`decoder holds ${len} of ${buf.length} bytes`)
  }
  d.reset()
  return { frames, stats: d.stats }
}

function decodeWhole (input: Buffer): Run {
  const d = new FrameDecoder()
  const frames = d.push(input)
  d.reset()
  return { frames, stats: d.stats }
}

function countDollars (input: Buffer): number {
  let n = 0
  for (let i = input.indexOf(0x24); i >= 0; i = input.indexOf(0x24, i + 1)) n++
  return n
}

/** Every "$" starts one frame, and every frame ends in exactly one outcome. */
function checkAccounting (input: Buffer, { stats }: Run, what: string): void {
  const ended = stats.frames + stats.truncated + stats.oversized + stats.badCrc + stats.malformed
  expect(ended, what).toBe(countDollars(input))
  expect(stats.noiseBytes, what).toBeLessThanOrEqual(input.length)
}

function randomState (rnd: TestRandom, seq: number): DeviceFrame {
  const fields: Record<string, string> = {}
  const n = rnd.int(6)
  for (let k = 0; k < n; k++) fields[`f${k}`] = rnd.bytes(rnd.int(20)).toString('latin1')
  const type = rnd.pick(['STATE', 'ALARM', 'CLEAR'] as const)
  return { type, boot: 1 + rnd.int(5), seq, code: type === 'STATE' ? null : `c${seq}`, fields }
}

interface Base { stream: Buffer, originals: Set<string> }

function makeBase (rnd: TestRandom): Base {
  const parts: Buffer[] = []
  const originals = new Set<string>()
  const count = 2 + rnd.int(9)
  for (let i = 0; i < count; i++) {
    const frame = rnd.int(2) === 0 ? rnd.pick(FIXTURE_FRAMES) : randomState(rnd, i + 1)
    let bytes: Buffer
    try {
      bytes = encodeFrame(frame)
    } catch {
      continue // a random frame too long to encode
    }
    originals.add(bytes.toString('latin1'))
    if (rnd.int(2) === 0) parts.push(Buffer.from(rnd.bytes(rnd.int(30)).toString('latin1').replaceAll('$', '#'), 'latin1'))
    parts.push(bytes)
  }
  return { stream: Buffer.concat(parts), originals }
}

function mutate (input: Buffer, rnd: TestRandom): Buffer {
  let out = Buffer.from(input)
  const n = 1 + rnd.int(5)
  for (let m = 0; m < n; m++) {
    const at = rnd.int(out.length + 1)
    switch (rnd.int(5)) {
      case 0: // flip one bit
        if (out.length > 0) out[Math.min(at, out.length - 1)]! ^= 1 << rnd.int(8)
        break
      case 1: // insert random bytes
        out = Buffer.concat([out.subarray(0, at), rnd.bytes(1 + rnd.int(8)), out.subarray(at)])
        break
      case 2: // insert protocol bytes
        out = Buffer.concat([out.subarray(0, at), Buffer.from(Array.from({ length: 1 + rnd.int(4) }, () => rnd.pick([...PROTOCOL_BYTES]))), out.subarray(at)])
        break
      case 3: // delete a range
        out = Buffer.concat([out.subarray(0, at), out.subarray(at + 1 + rnd.int(40))])
        break
      default: // truncate
        out = out.subarray(0, at)
    }
  }
  return out
}

describe('FrameDecoder fuzz', () => {
  it(`decodes ${RANDOM_INPUTS} random inputs to no frame, and counts every "$"`, () => {
    console.log(`fuzz: seed ${SEED} (TEST_SEED=${SEED} to repeat)`)
    const rnd = new TestRandom(SEED)
    for (let i = 0; i < RANDOM_INPUTS; i++) {
      const len = rnd.int(1200)
      const input = i % 2 === 0
        ? rnd.bytes(len)
        : Buffer.from(Array.from({ length: len }, () => PROTOCOL_BYTES[rnd.int(PROTOCOL_BYTES.length)]!))
      const what = `seed ${SEED}, random input ${i}`
      const chunked = decodeChunked(input, rnd)
      expect(chunked.frames, what).toEqual([])
      checkAccounting(input, chunked, what)
      expect(chunked.stats, what).toEqual(decodeWhole(input).stats)
    }
  })

  it(`accepts no false frame from ${MUTATED_INPUTS} mutated streams`, () => {
    const rnd = new TestRandom(SEED ^ 0x9e3779b9)
    const bases = Array.from({ length: 300 }, () => makeBase(rnd))
    let survived = 0
    for (let i = 0; i < MUTATED_INPUTS; i++) {
      const base = rnd.pick(bases)
      const input = mutate(base.stream, rnd)
      const what = `seed ${SEED}, mutated input ${i}`
      const chunked = decodeChunked(input, rnd)
      for (const frame of chunked.frames) {
        if (!base.originals.has(encodeFrame(frame).toString('latin1'))) {
          expect.fail(`${what}: a frame that was never sent: ${JSON.stringify(frame)}`)
        }
      }
      survived += chunked.frames.length
      checkAccounting(input, chunked, what)
      expect(chunked, what).toEqual(decodeWhole(input))
    }
    // the mutations leave most frames intact: the test does look at accepted frames
    expect(survived).toBeGreaterThan(MUTATED_INPUTS)
  })
})
