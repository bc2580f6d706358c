/**
 * Seeded randomness: xoshiro128** per device and purpose, its state derived from the run seed, the
 * device's index and a stream name, so that a device's model, its faults and its identity never
 * draw from the same sequence (switching a fault on does not change how a thermostat drifts).
 */

// splitmix32: spreads a 32-bit value into a well-mixed one (for seeding)
function splitmix32 (x: number): number {
  x = (x + 0x9e3779b9) >>> 0
  let z = x
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0
  return (z ^ (z >>> 16)) >>> 0
}

/** A 32-bit hash of the parts (FNV-1a over their text, then mixed). */
export function hashParts (...parts: ReadonlyArray<number | string>): number {
  let h = 0x811c9dc5
  const text = parts.join('\u0000')
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193) >>> 0
  return splitmix32(h)
}

/** xoshiro128**: fast, small state, good enough for simulation. Deterministic from its seed. */
export class Random {
  private a: number
  private b: number
  private c: number
  private d: number

  /** A generator whose state is derived from `parts` (e.g. run seed, device index, "model"). */
  constructor (...parts: ReadonlyArray<number | string>) {
    let s = hashParts(...parts)
    s = splitmix32(s); this.a = s
    s = splitmix32(s); this.b = s
    s = splitmix32(s); this.c = s
    s = splitmix32(s); this.d = s
    if ((this.a | this.b | this.c | this.d) === 0) this.a = 1
  }

  /** A uniform 32-bit unsigned integer. */
  nextU32 (): number {
    const result = Math.imul(rotl(Math.imul(this.b, 5), 7), 9) >>> 0
    const t = this.b << 9
    this.c ^= this.a
    this.d ^= this.b
    this.b ^= this.c
    this.a ^= this.d
    this.c ^= t
    this.d = rotl(this.d, 11)
    return result
  }

  /** Uniform in [0, 1). */
  float (): number {
    return this.nextU32() / 0x1_0000_0000
  }

  /** Uniform in [lo, hi). */
  range (lo: number, hi: number): number {
    return lo + (hi - lo) * this.float()
  }

  /** A uniform integer from 0 to n - 1. */
  int (n: number): number {
    return Math.floor(this.float() * n)
  }

  /** True with probability p. */
  chance (p: number): boolean {
    return p > 0 && this.float() < p
  }

  /** Normally distributed, mean 0, standard deviation `sd` (Box-Muller). */
  normal (sd = 1): number {
    const u = 1 - this.float()
    return sd * Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * this.float())
  }

  /** Exponentially distributed with the given mean (waiting times of random events). */
  exponential (mean: number): number {
    return -mean * Math.log(1 - this.float())
  }

  /** One element of `items`. */
  pick<T> (items: readonly T[]): T {
    return items[this.int(items.length)]!
  }
}

function rotl (x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0
}
