/**
 * Fault injection, per device: corrupted bytes on the line (garbage, truncated frames, bad
 * checksums) and events in time (reboots, silences, bursts of reports, unplugging the line). Every
 * draw comes from the device's own "faults" random stream, so a run is reproducible from its seed.
 */
import { SimConfigError } from './errors.js'
import type { Random } from './random.js'

/** When a timed fault happens: every `everyMs` (at a phase drawn per device), or at given times. */
export type FaultTimes =
  | { readonly everyMs: number }
  /** Milliseconds since the simulation started. */
  | { readonly atMs: readonly number[] }

/** Which faults a device suffers. Absent: none of that kind. */
export interface FaultOptions {
  /** Probability, per frame written, of 1 to 16 random bytes before it (noise on the line). */
  readonly garbage?: number | undefined
  /** Probability, per frame written, that it is cut short: the next frame follows without LF. */
  readonly truncate?: number | undefined
  /** Probability, per frame written, that one digit of its CRC is wrong. */
  readonly badCrc?: number | undefined
  /** The device reboots: boot + 1, seq from 1, the outbox kept ([DEV-SEQ-2]). */
  readonly reboot?: FaultTimes | undefined
  /** The device writes nothing for `durationMs` (it still makes reports and reads ACKs). */
  readonly silence?: (FaultTimes & { readonly durationMs: number }) | undefined
  /** The device makes `count` STATE reports at once. */
  readonly burst?: (FaultTimes & { readonly count: number }) | undefined
  /** The line is unplugged for `durationMs` (TCP: connection dropped and port closed; serial: port closed). */
  readonly unplug?: (FaultTimes & { readonly durationMs: number }) | undefined
}

/** Faults injected so far, by kind. */
export interface FaultCounters {
  readonly garbage: number
  readonly truncated: number
  readonly badCrc: number
  readonly reboots: number
  readonly silences: number
  readonly bursts: number
  readonly unplugs: number
}

export const NO_FAULTS: FaultOptions = Object.freeze({})

/** Bounds of the fault options. */
export const FAULT_LIMITS = Object.freeze({
  minEveryMs: 100,
  maxTimes: 1000,
  maxBurst: 10_000,
  maxDurationMs: 86_400_000
})

function checkProbability (name: string, p: unknown): void {
  if (p === undefined) return
  if (typeof p !== 'number' || !(p >= 0 && p <= 1)) throw new SimConfigError(`${name}: a probability from 0 to 1, not ${typeof p === 'number' ? p : typeof p}`)
}

function checkTimes (name: string, t: FaultTimes): void {
  if ('everyMs' in t) {
    if (!(Number.isFinite(t.everyMs) && t.everyMs >= FAULT_LIMITS.minEveryMs)) throw new SimConfigError(`${name}: every must be at least ${FAULT_LIMITS.minEveryMs} ms, not ${t.everyMs}`)
  } else if ('atMs' in t && Array.isArray(t.atMs)) {
    if (t.atMs.length === 0 || t.atMs.length > FAULT_LIMITS.maxTimes) throw new SimConfigError(`${name}: from 1 to ${FAULT_LIMITS.maxTimes} times, not ${t.atMs.length}`)
    for (const at of t.atMs) {
      if (!(Number.isFinite(at) && at >= 0)) throw new SimConfigError(`${name}: a time is milliseconds from 0, not ${at}`)
    }
  } else {
    throw new SimConfigError(`${name}: needs everyMs or atMs`)
  }
}

function checkDuration (name: string, ms: unknown): void {
  if (typeof ms !== 'number' || !(ms > 0 && ms <= FAULT_LIMITS.maxDurationMs)) throw new SimConfigError(`${name}: a duration from 1 ms to 24 h, not ${typeof ms === 'number' ? ms : typeof ms}`)
}

/** Checks fault options; throws a SimConfigError naming the option (`${prefix}.reboot`, ...). */
export function validateFaults (faults: FaultOptions, prefix = 'faults'): FaultOptions {
  if (typeof faults !== 'object' || faults === null) throw new SimConfigError(`${prefix}: an object, not ${faults === null ? 'null' : typeof faults}`)
  const known = new Set(['garbage', 'truncate', 'badCrc', 'reboot', 'silence', 'burst', 'unplug'])
  for (const key of Object.keys(faults)) {
    if (!known.has(key)) throw new SimConfigError(`${prefix}.${key}: unknown fault (known: ${[...known].join(', ')})`)
  }
  checkProbability(`${prefix}.garbage`, faults.garbage)
  checkProbability(`${prefix}.truncate`, faults.truncate)
  checkProbability(`${prefix}.badCrc`, faults.badCrc)
  if (faults.reboot !== undefined) checkTimes(`${prefix}.reboot`, faults.reboot)
  if (faults.silence !== undefined) {
    checkTimes(`${prefix}.silence`, faults.silence)
    checkDuration(`${prefix}.silence.durationMs`, faults.silence.durationMs)
  }
  if (faults.unplug !== undefined) {
    checkTimes(`${prefix}.unplug`, faults.unplug)
    checkDuration(`${prefix}.unplug.durationMs`, faults.unplug.durationMs)
  }
  if (faults.burst !== undefined) {
    checkTimes(`${prefix}.burst`, faults.burst)
    const n = faults.burst.count
    if (!(Number.isInteger(n) && n >= 1 && n <= FAULT_LIMITS.maxBurst)) throw new SimConfigError(`${prefix}.burst.count: a whole number from 1 to ${FAULT_LIMITS.maxBurst}, not ${n}`)
  }
  return faults
}

/**
 * The times of one timed fault, in device time (ms since the simulation started): `next` is the
 * next one (Infinity if none is left).
 */
export class FaultSchedule {
  private nextAt: number
  private index = 0

  constructor (private readonly times: FaultTimes | undefined, random: Random, fromMs: number) {
    if (times === undefined) this.nextAt = Infinity
    else if ('everyMs' in times) this.nextAt = fromMs + times.everyMs * (1 - random.float()) // phase in (0, every]
    else {
      const sorted = [...times.atMs].sort((a, b) => a - b)
      this.times = { atMs: sorted }
      while (this.index < sorted.length && sorted[this.index]! < fromMs) this.index++
      this.nextAt = sorted[this.index] ?? Infinity
    }
  }

  get next (): number {
    return this.nextAt
  }

  /** The fault at `next` happened: moves to the one after. */
  advance (): void {
    const t = this.times
    if (t === undefined) return
    if ('everyMs' in t) {
      this.nextAt += t.everyMs
    } else {
      this.index++
      this.nextAt = t.atMs[this.index] ?? Infinity
    }
  }
}
