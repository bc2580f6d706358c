/**
 * Test fixtures of the device line protocol, for this package's tests and for the gateway's: a
 * seeded PRNG, crafted wire frames, and fixture frames of every type.
 */
import { crc32 } from 'node:zlib'
import { encodeFrame, type DeviceFrame } from '../frame.js'

/** A small seeded PRNG (mulberry32), so that failing random tests reproduce from their seed. */
export class TestRandom {
  private s: number
  constructor (readonly seed: number) {
    this.s = seed >>> 0
  }

  /** A uniform 32-bit unsigned integer. */
  next (): number {
    this.s = (this.s + 0x6d2b79f5) >>> 0
    let t = this.s
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return (t ^ (t >>> 14)) >>> 0
  }

  /** A uniform integer from 0 to n - 1. */
  int (n: number): number {
    return Math.floor((this.next() / 0x1_0000_0000) * n)
  }

  /** One element of `items`. */
  pick<T> (items: readonly T[]): T {
    return items[this.int(items.length)]!
  }

  /** `n` uniform random bytes. */
  bytes (n: number): Buffer {
    const out = Buffer.allocUnsafe(n)
    for (let i = 0; i < n; i++) out[i] = this.next() & 0xff
    return out
  }
}

/** The CRC-32 of `body` as the protocol writes it: 8 uppercase hex digits. */
export function crcHex (body: string | Uint8Array): string {
  return crc32(body).toString(16).toUpperCase().padStart(8, '0')
}

/**
 * A frame written by hand: `$<body>*<crc>\n` with the body's CRC (or `crc` as given), for inputs
 * the encoder refuses to make. `body` is latin1 text.
 */
export function wireFrame (body: string, crc?: string): Buffer {
  const bytes = Buffer.from(body, 'latin1')
  return Buffer.concat([Buffer.from('$'), bytes, Buffer.from(`*${crc ?? crcHex(bytes)}\n`, 'latin1')])
}

function fields (entries: Record<string, string>): Record<string, string> {
  return Object.assign(Object.create(null) as Record<string, string>, entries)
}

/**
 * Frames of every type, with percent-encoded values (spaces, `$*%=`, UTF-8, control bytes), empty
 * values, the largest counters, HELLO's extra fields and `prev` on `seq` = 1 frames.
 */
export const FIXTURE_FRAMES: readonly DeviceFrame[] = [
  { type: 'HELLO', model: 'thermostat', serial: 'TH-000001', fw: '1.4.2', boot: 3, oldest: { boot: 2, seq: 40 }, fields: fields({}) },
  { type: 'HELLO', model: 'door lock', serial: 'DL-000002', fw: '2.0.0-rc.1', boot: 1, oldest: null, fields: fields({ hw: 'rev B', note: '' }) },
  { type: 'STATE', boot: 3, seq: 17, code: null, fields: fields({ temp: '21.37', setpoint: '21.00', heater: 'on' }) },
  { type: 'STATE', boot: 2, seq: 41, code: null, fields: fields({}) },
  { type: 'STATE', boot: 1, seq: 1, code: null, fields: fields({ prev: 'none', label: 'Raum 1 – Küche', empty: '', odd: '$*%= \t\r\n~', emoji: '🌡️' }) },
  { type: 'ALARM', boot: 3, seq: 18, code: 'overheat', fields: fields({ temp: '31.20', limit: '30.00' }) },
  { type: 'ALARM', boot: 9007199254740991, seq: 9007199254740991, code: 'E17 dry-run', fields: fields({ text: 'pump ran dry' }) },
  { type: 'CLEAR', boot: 3, seq: 19, code: 'overheat', fields: fields({}) },
  { type: 'CLEAR', boot: 4, seq: 1, code: 'E17 dry-run', fields: fields({ prev: '9007199254740991:9007199254740991', after: '' }) },
  { type: 'SYNC' },
  { type: 'ACK', boot: 3, seq: 19 },
  { type: 'ACK', boot: 1, seq: 9007199254740991 }
]

/** Bytes between frames that contain no `$`: text, binary, partial lines, CR LF. */
export const FIXTURE_NOISE: readonly Buffer[] = [
  Buffer.from(''),
  Buffer.from('boot loader v1.2\r\n'),
  Buffer.from([0x00, 0xff, 0x0a, 0x0a, 0x80, 0x2a, 0x0d]),
  Buffer.from('*1AD537B2\n'),
  Buffer.from(' STATE boot=1 seq=1*00000000\n')
]

/** The fixture frames encoded one after another, with `noise[i % noise.length]` before frame i. */
export function fixtureStream (frames: readonly DeviceFrame[] = FIXTURE_FRAMES, noise: readonly Buffer[] = FIXTURE_NOISE): Buffer {
  const parts: Buffer[] = []
  frames.forEach((f, i) => {
    parts.push(noise[i % noise.length] ?? Buffer.alloc(0), encodeFrame(f))
  })
  return Buffer.concat(parts)
}
