// What every benchmark child shares: JSON lines to the harness, commands from it, the payload with
// its send time, and latency statistics.
import { createInterface } from 'node:readline'

export const PAYLOAD_BYTES = 200

/** Sends one JSON message to the harness. */
export function report (msg) {
  process.stdout.write(`${JSON.stringify(msg)}\n`)
}

/** Monotonic time in ms (CLOCK_MONOTONIC: the same clock in every process of the machine). */
export function nowMs () {
  return Number(process.hrtime.bigint()) / 1e6
}

/** Resolves with the first command line equal to `word` on stdin. */
export function command (word) {
  return new Promise((resolve) => {
    const rl = createInterface({ input: process.stdin })
    rl.on('line', (line) => {
      if (line.trim() === word) {
        rl.close()
        resolve()
      }
    })
  })
}

/** A fresh payload of PAYLOAD_BYTES bytes carrying its send time (ns, monotonic) in the first 8. */
export function stampedPayload () {
  const b = Buffer.alloc(PAYLOAD_BYTES, 0x61)
  b.writeBigUInt64LE(process.hrtime.bigint(), 0)
  return b
}

/** Latency in ms of a payload made by stampedPayload(). */
export function latencyOf (payload) {
  const b = Buffer.isBuffer(payload) ? payload : Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength)
  return Number(process.hrtime.bigint() - b.readBigUInt64LE(0)) / 1e6
}

/** Collects latencies (every one, or every `every`-th) and summarises them. */
export class Latencies {
  constructor (expected, every = 1) {
    this.every = every
    this.values = new Float64Array(Math.ceil(expected / every) + 16)
    this.n = 0
    this.seen = 0
  }

  add (ms) {
    if (this.seen++ % this.every !== 0) return
    if (this.n < this.values.length) this.values[this.n++] = ms
  }

  summary () {
    const v = this.values.slice(0, this.n).sort()
    const q = (p) => v.length === 0 ? null : v[Math.min(v.length - 1, Math.floor(p * v.length))]
    return { n: v.length, p50: q(0.5), p99: q(0.99), max: v.length === 0 ? null : v[v.length - 1] }
  }
}

/**
 * Calls `step(i)` for i in [0, count): as fast as `room()` allows (rate 0), or paced at `rate` per
 * second (and within `room()`). Call `kick()` when room was freed. `done` resolves when all were
 * started.
 */
export function paced (count, rate, room, step) {
  let i = 0
  let scheduled = false
  let resolveDone
  const done = new Promise((resolve) => { resolveDone = resolve })
  const t0 = nowMs()
  const run = () => {
    scheduled = false
    let allowed = room()
    if (rate > 0) allowed = Math.min(allowed, Math.floor((nowMs() - t0) * rate / 1000) + 1 - i)
    while (allowed-- > 0 && i < count) step(i++)
    if (i >= count) resolveDone()
    else if (rate > 0) setTimeout(run, 1)
  }
  const kick = () => {
    if (scheduled || i >= count || rate > 0) return
    scheduled = true
    setImmediate(run)
  }
  run()
  return { done, kick }
}
