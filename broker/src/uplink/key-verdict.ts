/**
 * The replacing key of a keyed event as the broker judges it ([SITE-KEY-1]), for the uplink and for
 * plain-MQTT ingest alike.
 */
import { ErrorCode, keyFromValue, keyProblem, type EventDefinition } from '@herald/protocol'

/**
 * [SITE-KEY-1] The key of a keyed event: given with it (`key: raise`, and every null instance), or
 * read from its JSON payload (`key: { field }`; a key given too must be the same). A string: the key
 * to store it with when it came without one; null: accepted as it is; else why it is refused.
 */
export function keyVerdict (spec: NonNullable<EventDefinition['key']>, e: { readonly name: string, readonly seq: number, readonly isNull: boolean, readonly key?: string }, value: unknown): [ErrorCode, string] | string | null {
  if (spec.kind === 'raise' || e.isNull) {
    const problem = keyProblem(e.key)
    if (problem === null) return null
    return [ErrorCode.INVALID_ARGUMENT, e.key === undefined
      ? `event "${e.name}" is keyed${spec.kind === 'field' ? `; a null instance names its key (field "${spec.field}")` : ' by the raise'}: it needs a key`
      : `event "${e.name}": ${problem}`]
  }
  const key = keyFromValue(value, spec.field)
  if (key === null) return [ErrorCode.INVALID_ARGUMENT, `event "${e.name}" is keyed by field "${spec.field}": its payload has no top-level string or whole-number field "${spec.field}"`]
  const problem = keyProblem(key)
  if (problem !== null) return [ErrorCode.INVALID_ARGUMENT, `event "${e.name}", field "${spec.field}": ${problem}`]
  if (e.key !== undefined && e.key !== key) return [ErrorCode.INVALID_ARGUMENT, `event "${e.name}": key ${JSON.stringify(e.key)} differs from its payload's field "${spec.field}" (${JSON.stringify(key)})`]
  return e.key === undefined ? key : null
}
