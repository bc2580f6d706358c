/**
 * [GROUP-SEG-2] The segment of an event: FNV-1a (32 bit) of its sequencing key, the service id,
 * modulo the group's segment count (a power of two, so a mask). Computed when an event is read for
 * a group, not stored: one hash of a short string per event per member read, cached per key.
 */
const cache = new Map<string, number>()
/** Keys cached at most; the cache is emptied past it. */
const MAX_CACHED = 10_000

export function fnv1a (key: string): number {
  let h = cache.get(key)
  if (h !== undefined) return h
  h = 0x811c9dc5
  for (let i = 0; i < key.length; i++) {
    h ^= key.charCodeAt(i)
    h = Math.imul(h, 0x01000193) >>> 0
  }
  if (cache.size >= MAX_CACHED) cache.clear()
  cache.set(key, h)
  return h
}

export function segmentOf (key: string, segments: number): number {
  return fnv1a(key) & (segments - 1)
}
