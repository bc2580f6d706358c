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
import { keyFromValue, keyProblem, type EventKeySpec, type JsonValue } from '@herald/protocol'

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
  /**
   * [GW-KEY-1] For a keyed replacing event: how its key is keyed in the site, and where the rule's
   * key comes from (`key: $device`, `key: $serial`, a field), or null to take the payload's field.
   */
  readonly keyed?: { readonly spec: EventKeySpec, readonly source: ValueSource | null }
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
  /** [GW-KEY-1] The replacing key of a keyed event. */
  readonly key?: string
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

/**
 * [GW-KEY-1] The key of a keyed raise: the rule's key source, else the payload's key field; a key
 * that cannot be made is a problem of the rule (as a missing payload field is), not a refused batch.
 */
function keyOf (keyed: NonNullable<MappingRule['keyed']>, payload: JsonValue | null, device: DeviceIdentity, frame: DataFrame): string {
  let key: string | null
  if (keyed.source !== null) {
    const v = valueOf(keyed.source, device, frame)
    key = typeof v === 'string' ? v : typeof v === 'number' && Number.isSafeInteger(v) ? String(v) : null
    if (key === null) throw new Error(`the key ${JSON.stringify(v)} is not a string or a whole number`)
  } else {
    if (keyed.spec.kind !== 'field') throw new Error('the event is keyed by the raise: give the rule a "key"')
    key = keyFromValue(payload, keyed.spec.field)
    if (key === null) throw new Error(`the payload has no string or whole-number field "${keyed.spec.field}" (the event's key)`)
  }
  const problem = keyProblem(key)
  if (problem !== null) throw new Error(`key ${JSON.stringify(key)}: ${problem}`)
  return key
}

/** Maps one data frame: every matching rule, in order, raises its event. */
export function mapFrame (rules: readonly MappingRule[], device: DeviceIdentity, frame: DataFrame): MappingResult {
  const raises: MappedRaise[] = []
  const problems: string[] = []
  rules.forEach((rule, index) => {
    if (!matches(rule, device, frame)) return
    const action = rule.action
    try {
      if (action.kind === 'raiseNull') {
        raises.push(rule.keyed === undefined ? { name: action.event, isNull: true } : { name: action.event, isNull: true, key: keyOf(rule.keyed, null, device, frame) })
        return
      }
      const payload: Record<string, JsonValue> = {}
      for (const [key, source] of action.payload) payload[key] = valueOf(source, device, frame)
      raises.push(rule.keyed === undefined ? { name: action.event, payload } : { name: action.event, payload, key: keyOf(rule.keyed, payload, device, frame) })
    } catch (err) {
      problems.push(`mapping[${index}] (${action.event}): ${(err as Error).message}`)
    }
  })
  return { raises, problems }
}
