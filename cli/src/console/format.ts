/** Pure formatting helpers for console output: ages, local clock times, counts. */

const UNITS: ReadonlyArray<{ readonly unit: string, readonly ms: number, readonly next: number }> = [
  { unit: 's', ms: 1000, next: 60 },
  { unit: 'm', ms: 60_000, next: 60 },
  { unit: 'h', ms: 3_600_000, next: 24 },
  { unit: 'd', ms: 86_400_000, next: Infinity }
]

/** `v` with one decimal below 10 (without a trailing `.0`), else a whole number. */
function short (v: number): string {
  if (v < 9.95) {
    const t = (Math.round(v * 10) / 10).toFixed(1)
    return t.endsWith('.0') ? t.slice(0, -2) : t
  }
  return String(Math.round(v))
}

/**
 * A duration in milliseconds as a short age: `0ms`, `120ms`, `3.2s`, `42s`, `1.5m`, `12m`, `2h`, `3.5d`.
 * One decimal below 10 of a unit, whole numbers above; the unit changes when the rounded value would
 * reach the next unit (59.97 s is `1m`, not `60s`). Negative or non-finite values count as 0.
 */
export function formatAge (ms: number): string {
  const v = Number.isFinite(ms) && ms > 0 ? ms : 0
  if (Math.round(v) < 1000) return `${Math.round(v)}ms`
  for (const u of UNITS) {
    const text = short(v / u.ms)
    if (Number(text) < u.next) return `${text}${u.unit}`
  }
  return `${Math.round(v / 86_400_000)}d` // not reached: days have no next unit
}

const pad = (n: number, width: number): string => String(n).padStart(width, '0')

/** A time (ms since the epoch) as local wall-clock time `HH:MM:SS.mmm`. */
export function formatClockTime (ms: number): string {
  const d = new Date(ms)
  return `${pad(d.getHours(), 2)}:${pad(d.getMinutes(), 2)}:${pad(d.getSeconds(), 2)}.${pad(d.getMilliseconds(), 3)}`
}

const COUNT = new Intl.NumberFormat('en-US', { maximumFractionDigits: 0 })
const RATE = new Intl.NumberFormat('en-US', { minimumFractionDigits: 1, maximumFractionDigits: 1 })

/** A whole count with thousands separators: `1,234`. Independent of the user's locale. */
export function formatCount (n: number): string {
  return COUNT.format(n)
}

/** A rate per second with one decimal: `12.3/s`. */
export function formatRate (perSecond: number): string {
  return `${RATE.format(Number.isFinite(perSecond) && perSecond > 0 ? perSecond : 0)}/s`
}
