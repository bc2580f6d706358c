/**
 * Character rules for names that appear in topics and the site structure ([SITE-NAME-1]).
 * A name is 1 to 64 characters: ASCII letters, digits, `_`, `-` and `.`, starting with a letter or digit.
 * These rules keep every name usable as one MQTT topic level (no `/`, `+`, `#`, no `$` prefix).
 */
import { ConfigError } from './errors.js'

/** The pattern every event name, service id, user name and client name must match. */
export const NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/

/** True if `name` follows the character rules. */
export function isValidName (name: unknown): name is string {
  return typeof name === 'string' && NAME_PATTERN.test(name)
}

/** Throws a ConfigError naming `what` if `name` breaks the character rules. */
export function assertName (name: unknown, what: string): asserts name is string {
  if (!isValidName(name)) {
    throw new ConfigError(`${what} ${JSON.stringify(name)} is not a valid name: 1-64 characters of A-Z a-z 0-9 _ - ., starting with a letter or digit`)
  }
}
