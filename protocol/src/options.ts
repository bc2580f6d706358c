/** Checks user options against a frozen defaults table; a wrong value throws a ConfigError naming the option. */
import { ConfigError } from './errors.js'

/** Widens literal types of a defaults table (`2000` -> `number`). */
export type Widened<T> = { -readonly [K in keyof T]: T[K] extends number ? number : T[K] extends boolean ? boolean : T[K] }

/** Merges `given` over `defaults`; unknown keys and values of the wrong type are ConfigErrors. */
export function withDefaults<T extends object> (component: string, defaults: T, given: { readonly [K in keyof T]?: Widened<T>[K] | undefined } | undefined): Widened<T> {
  const out = { ...defaults } as Record<string, unknown>
  for (const [k, v] of Object.entries(given ?? {})) {
    if (v === undefined) continue
    if (!(k in defaults)) throw new ConfigError(`${component}: unknown option "${k}"`)
    const d = (defaults as Record<string, unknown>)[k]
    if (d !== null && d !== undefined && typeof d !== typeof v) throw new ConfigError(`${component}: option "${k}" must be a ${typeof d}, got ${typeof v}`)
    out[k] = v
  }
  return out as Widened<T>
}

/** Throws a ConfigError unless `value` is a whole number in [min, max]. */
export function checkInt (component: string, name: string, value: number, min: number, max: number): void {
  if (!Number.isSafeInteger(value) || value < min || value > max) {
    throw new ConfigError(`${component}: option "${name}" must be a whole number from ${min} to ${max}, got ${value}`)
  }
}
