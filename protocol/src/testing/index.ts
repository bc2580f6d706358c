/** Test helpers shared by every package's tests (browser-safe). Nothing in a library imports this. */
import { TimeoutError } from '../errors.js'

export * from './memory-transport.js'

/** Waits until `cond()` is true (polling every `everyMs`), or throws a TimeoutError after `timeoutMs`. */
export async function waitFor (cond: () => boolean | Promise<boolean>, what: string, timeoutMs = 20_000, everyMs = 10): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await cond())) {
    if (Date.now() > deadline) throw new TimeoutError(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, everyMs))
  }
}

/**
 * A small seeded PRNG (mulberry32): uniform numbers in [0, 1), the same sequence for the same seed,
 * so a failing random test can be repeated from its seed.
 */
export function seededRandom (seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}
