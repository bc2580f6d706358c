/**
 * What a device model is: an identity (name, serial prefix, firmware), the fields of its STATE
 * frames and its alarm codes (docs/device-protocol.md, "Device models of firmware-sim"), and a
 * factory of instances that evolve in simulated time from a seeded {@link Random}.
 */
import type { Random } from '../random.js'

/** Something that happened during a tick. */
export type ModelEvent =
  /** A discrete part of the state changed (heater on, door open, ...): worth a STATE report now. */
  | { readonly kind: 'changed' }
  /** A condition started: an ALARM report. */
  | { readonly kind: 'alarm', readonly code: string, readonly fields: Readonly<Record<string, string>> }
  /** A condition ended: a CLEAR report. */
  | { readonly kind: 'clear', readonly code: string, readonly fields: Readonly<Record<string, string>> }

/** One simulated device's physics and logic. Same seed and same ticks give the same events. */
export interface ModelInstance {
  /** Advances the model by `dtMs` of simulated time; returns what happened, in order. */
  tick (dtMs: number): readonly ModelEvent[]
  /** The whole current state, as the fields of a STATE frame, always in the same key order. */
  state (): Record<string, string>
  /** The alarm codes active now. */
  activeAlarms (): readonly string[]
}

/** A documented STATE field or alarm code. */
export interface ModelDoc { readonly name: string, readonly description: string }

/** A kind of device the simulator can run. */
export interface DeviceModel {
  /** As in `--devices thermostat:3` and HELLO's `model`. */
  readonly name: string
  /** Serial numbers are `<prefix>-<6 digits>`. */
  readonly prefix: string
  /** HELLO's `fw`. */
  readonly fw: string
  readonly description: string
  /** The fields of its STATE frames, in order. */
  readonly fields: readonly ModelDoc[]
  /** Its ALARM/CLEAR codes, with the extra fields of the ALARM. */
  readonly alarms: readonly ModelDoc[]
  create (random: Random): ModelInstance
}

/** A number with fixed decimals, as models write them (`-0.00` written as `0.00`). */
export function fixed (n: number, decimals: number): string {
  const s = n.toFixed(decimals)
  return /^-0\.?0*$/.test(s) ? s.slice(1) : s
}

/** Moves `x` toward `target` by the fraction of the way that a time constant `tauMs` covers in `dtMs`. */
export function approach (x: number, target: number, tauMs: number, dtMs: number): number {
  return target + (x - target) * Math.exp(-dtMs / tauMs)
}

/** True with the probability that an event with the given mean interval happens within `dtMs`. */
export function happens (random: Random, meanMs: number, dtMs: number): boolean {
  return random.chance(1 - Math.exp(-dtMs / meanMs))
}
