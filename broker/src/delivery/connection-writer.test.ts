import { Duplex } from 'node:stream'
import { describe, it, expect } from 'vitest'
import mqtt from 'mqtt-packet'
import { ConnectionWriter, type SlowReason } from './connection-writer.js'

/** A stream that takes every write at once, or, while `holding`, none: a peer that does not read. */
class HeldStream extends Duplex {
  readonly written: Buffer[] = []
  holding = false
  private held: Array<() => void> = []
  constructor () { super({ highWaterMark: 16 * 1024 }) }
  override _read (): void {}
  override _write (chunk: Buffer, _enc: BufferEncoding, cb: () => void): void {
    this.written.push(chunk)
    if (this.holding) this.held.push(cb)
    else cb()
  }
  release (): void {
    this.holding = false
    const h = this.held
    this.held = []
    for (const cb of h) cb()
  }
}

const LIMITS = { maxQueuedBytes: 64 * 1024, stuckTimeoutMs: 60_000, hardLimitBytes: 256 * 1024 }

function parse (bytes: Buffer): Array<{ topic: string, payload: Buffer }> {
  const parser = mqtt.parser({ protocolVersion: 4 })
  const out: Array<{ topic: string, payload: Buffer }> = []
  parser.on('packet', (p) => { if (p.cmd === 'publish') out.push({ topic: p.topic, payload: p.payload as Buffer }) })
  parser.parse(bytes)
  return out
}

describe('ConnectionWriter', () => {
  it('writes each frame as a QoS 0 PUBLISH on the topic, at every remaining-length size', () => {
    const s = new HeldStream()
    const w = new ConnectionWriter(s, 'herald/c/u/app/msg', { ...LIMITS, maxQueuedBytes: 64 * 1024 * 1024, hardLimitBytes: 128 * 1024 * 1024 }, () => true, () => {})
    const sizes = [0, 1, 100, 107, 108, 16_000, 16_363, 16_364, 2_097_130, 2_097_131, 3_000_000]
    for (const n of sizes) w.write(Buffer.alloc(n, n % 251))
    const got = parse(Buffer.concat(s.written))
    expect(got.map((p) => p.topic)).toEqual(sizes.map(() => 'herald/c/u/app/msg'))
    expect(got.map((p) => p.payload.length)).toEqual(sizes)
    expect(got.every((p, i) => p.payload.every((b) => b === (sizes[i] as number) % 251))).toBe(true)
  })

  it('writes nothing before the peer subscribed to its topic', () => {
    const s = new HeldStream()
    let subscribed = false
    const w = new ConnectionWriter(s, 't', LIMITS, () => subscribed, () => {})
    w.write(Buffer.from('early'))
    subscribed = true
    w.write(Buffer.from('late'))
    expect(parse(Buffer.concat(s.written)).map((p) => p.payload.toString())).toEqual(['late'])
  })

  it('is blocked above its bound until the stream drains, and says so once', async () => {
    const s = new HeldStream()
    s.holding = true
    const w = new ConnectionWriter(s, 't', LIMITS, () => true, () => {})
    let drains = 0
    w.onDrain = () => { drains++ }
    w.write(Buffer.alloc(32 * 1024))
    expect(w.blocked).toBe(false)
    w.write(Buffer.alloc(40 * 1024))
    expect(w.blocked).toBe(true)
    s.release()
    await new Promise((resolve) => setImmediate(resolve))
    expect(w.blocked).toBe(false)
    expect(drains).toBe(1)
    w.close()
  })

  it('closes the connection at once when control frames take it past the hard limit', () => {
    const s = new HeldStream()
    s.holding = true
    const slow: SlowReason[] = []
    const w = new ConnectionWriter(s, 't', LIMITS, () => true, (reason) => { slow.push(reason) })
    w.write(Buffer.alloc(70 * 1024))
    expect(w.blocked).toBe(true)
    for (let i = 0; i < 3 && !s.destroyed; i++) w.write(Buffer.alloc(100 * 1024))
    expect(slow).toEqual(['overflow'])
    expect(s.destroyed).toBe(true)
  })
})
