/**
 * The mapping from device reports to events ([GW-MAP-*] in docs/gateway.md): which data frame
 * raises which event, with which payload, and when a replacing event goes null.
 *
 * A mapping is stateless on purpose: what a frame raises depends only on the frame and the device's
 * identity, never on frames before it. A frame resent after a gateway restart is then mapped to
 * exactly the events it was mapped to the first time, which is what makes the device-to-broker chain
 * exactly-once.
 */
import type { DataFrame } from '@herald/device-protocol'
import type { JsonValue } from '@herald/protocol'

/** Data frame types a rule can match. */
export type DataFrameType = DataFrame['type']

/** How a payload value is taken from a frame. */
export type ValueSource =
  | { readonly kind: 'meta', readonly name: MetaName }
  | { readonly kind: 'field', readonly name: string, readonly type: FieldType }

/** Metadata a payload can carry: `$serial`, `$model`, ... */
export const META_NAMES = ['serial', 'model', 'fw', 'device', 'type', 'code', 'boot', 'seq', 'fields'] as const
export type MetaName = (typeof META_NAMES)[number]

/** Conversions of a field's text: `temp:number`, `count:int`, `heater:bool`, `label` (text). */
export const FIELD_TYPES = ['string', 'number', 'int', 'bool'] as const
export type FieldType = (typeof FIELD_TYPES)[number]

/** One rule: a match and an action. */
export interface MappingRule {
  /** Frame type matched. */
  readonly on: DataFrameType
  /** Device model matched, or any. */
  readonly model: string | null
  /** ALARM/CLEAR code matched, or any. */
  readonly code: string | null
  /** Fields that must have exactly these values. */
  readonly where: ReadonlyMap<string, string>
  readonly action:
  | { readonly kind: 'raise', readonly event: string, readonly payload: ReadonlyArray<readonly [string, ValueSource]> }
  | { readonly kind: 'raiseNull', readonly event: string }
}

/** Who sent a frame, as the mapping sees it. */
export interface DeviceIdentity {
  /** The configured device name. */
  readonly name: string
  readonly serial: string
  readonly model: string
  readonly fw: string
}

/** One event a frame raises: the argument of ServiceEndpoint.raiseBatch. */
export interface MappedRaise {
  readonly name: string
  readonly payload?: JsonValue
  readonly isNull?: boolean
}

/** What mapping one frame gave. */
export interface MappingResult {
  readonly raises: MappedRaise[]
  /** Rules that matched but could not build their payload (a missing or malformed field), with why. */
  readonly problems: string[]
}

/** Parses a payload source: `$serial`, `temp:number`, `label`. Throws an Error saying what is wrong. */
export function parseValueSource (text: string): ValueSource {
  if (text.startsWith('$')) {
    const name = text.slice(1)
    if (!(META_NAMES as readonly string[]).includes(name)) throw new Error(`"${text}": unknown metadata (one of ${META_NAMES.map((n) => `$${n}`).join(', ')})`)
    return { kind: 'meta', name: name as MetaName }
  }
  const [name = '', type = 'string', ...rest] = text.split(':')
  if (rest.length > 0 || !/^[a-z][a-z0-9_]{0,31}$/.test(name)) throw new Error(`"${text}": a source is $<metadata> or <field>[:type], with a field name like the device sends (lowercase, digits, _)`)
  if (!(FIELD_TYPES as readonly string[]).includes(type)) throw new Error(`"${text}": unknown type "${type}" (one of ${FIELD_TYPES.join(', ')})`)
  return { kind: 'field', name, type: type as FieldType }
}

function matches (rule: MappingRule, device: DeviceIdentity, frame: DataFrame): boolean {
  if (rule.on !== frame.type) return false
  if (rule.model !== null && rule.model !== device.model) return false
  if (rule.code !== null && rule.code !== frame.code) return false
  for (const [k, v] of rule.where) if (frame.fields[k] !== v) return false
  return true
}

const TRUE = new Set(['on', 'true', '1', 'yes'])
const FALSE = new Set(['off', 'false', '0', 'no'])

/** The value of one source for a frame; throws an Error naming the field if it cannot be made. */
function valueOf (source: ValueSource, device: DeviceIdentity, frame: DataFrame): JsonValue {
  if (source.kind === 'meta') {
    switch (source.name) {
      case 'serial': return device.serial
      case 'model': return device.model
      case 'fw': return device.fw
      case 'device': return device.name
      case 'type': return frame.type
      case 'code': return frame.code
      case 'boot': return frame.boot
      case 'seq': return frame.seq
      case 'fields': {
        const all: Record<string, JsonValue> = {}
        for (const [k, v] of Object.entries(frame.fields)) if (k !== 'prev') all[k] = v
        return all
      }
    }
  }
  const text = frame.fields[source.name]
  if (text === undefined) throw new Error(`field "${source.name}" is missing`)
  switch (source.type) {
    case 'string': return text
    case 'number': {
      const n = Number(text)
      if (text.trim() === '' || !Number.isFinite(n)) throw new Error(`field "${source.name}" = "${text}" is not a number`)
      return n
    }
    case 'int': {
      const n = Number(text)
      if (!/^-?\d+$/.test(text) || !Number.isSafeInteger(n)) throw new Error(`field "${source.name}" = "${text}" is not an integer`)
      return n
    }
    case 'bool': {
      const lower = text.toLowerCase()
      if (TRUE.has(lower)) return true
      if (FALSE.has(lower)) return false
      throw new Error(`field "${source.name}" = "${text}" is not on/off, true/false, yes/no or 1/0`)
    }
  }
}

/** Maps one data frame: every matching rule, in order, raises its event. */
export function mapFrame (rules: readonly MappingRule[], device: DeviceIdentity, frame: DataFrame): MappingResult {
  const raises: MappedRaise[] = []
  const problems: string[] = []
  rules.forEach((rule, index) => {
    if (!matches(rule, device, frame)) return
    const action = rule.action
    if (action.kind === 'raiseNull') {
      raises.push({ name: action.event, isNull: true })
      return
    }
    try {
      const payload: Record<string, JsonValue> = {}
      for (const [key, source] of action.payload) payload[key] = valueOf(source, device, frame)
      raises.push({ name: action.event, payload })
    } catch (err) {
      problems.push(`mapping[${index}] (${action.event}): ${(err as Error).message}`)
    }
  })
  return { raises, problems }
}
