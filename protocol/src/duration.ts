/** Human durations such as `90s`, `10m`, `7d` ([SITE-LIFETIME-1]). */
import { ConfigError } from './errors.js'

const UNIT_MS = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 } as const
const DURATION = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)$/

/** Parses `10m`, `7d`, `1.5h`, or a number of milliseconds. Throws a ConfigError naming `what`. */
export function parseDuration (value: unknown, what: string): number {
  if (typeof value === 'number') {
    if (Number.isFinite(value) && value >= 0) return Math.round(value)
  } else if (typeof value === 'string') {
    const m = DURATION.exec(value.trim())
    if (m !== null) return Math.round(Number(m[1]) * UNIT_MS[m[2] as keyof typeof UNIT_MS])
  }
  throw new ConfigError(`${what}: ${JSON.stringify(value)} is not a duration (use a number and a unit: ms, s, m, h, d, w, e.g. "10m" or "7d")`)
}

/** Parses `64KiB`, `1MiB`, `500B`, or a number of bytes. Throws a ConfigError naming `what`. */
export function parseByteSize (value: unknown, what: string): number {
  if (typeof value === 'number') {
    if (Number.isSafeInteger(value) && value >= 0) return value
  } else if (typeof value === 'string') {
    const m = /^(\d+)\s*(B|KiB|MiB|GiB|KB|MB|GB)?$/.exec(value.trim())
    if (m !== null) {
      const mult = { B: 1, KiB: 1024, MiB: 1024 ** 2, GiB: 1024 ** 3, KB: 1000, MB: 1000 ** 2, GB: 1000 ** 3 }[m[2] ?? 'B'] ?? 1
      return Number(m[1]) * mult
    }
  }
  throw new ConfigError(`${what}: ${JSON.stringify(value)} is not a size (use bytes or a unit: B, KiB, MiB, GiB)`)
}

/** Formats milliseconds for messages: `7d`, `10m`, `1500ms`. */
export function formatDuration (ms: number): string {
  for (const [unit, size] of [['d', 86_400_000], ['h', 3_600_000], ['m', 60_000], ['s', 1000]] as const) {
    if (ms >= size && ms % size === 0) return `${ms / size}${unit}`
  }
  return `${ms}ms`
}
