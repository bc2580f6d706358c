/** The logger shape libraries accept: pino's, or anything with the same methods. Defaults to silent. */
export interface Logger {
  debug (obj: object, msg?: string): void
  info (obj: object, msg?: string): void
  warn (obj: object, msg?: string): void
  error (obj: object, msg?: string): void
  child? (bindings: object): Logger
}

const noop = (): void => {}

/** A logger that drops everything. */
export const silentLogger: Logger = { debug: noop, info: noop, warn: noop, error: noop }
