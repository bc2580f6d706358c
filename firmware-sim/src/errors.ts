/**
 * The simulator's errors: one base class with a stable `code`, one subclass per kind of failure.
 */

/** Every stable code a {@link SimError} carries. */
export const SimErrorCode = {
  /** An option is wrong; the message names it. */
  CONFIG_INVALID: 'CONFIG_INVALID',
  /** A link could not listen or open (port in use, no such tty, ...). */
  LINK_FAILED: 'LINK_FAILED',
  /** A recording file is not one (bad header, bad line, too large). */
  RECORDING_INVALID: 'RECORDING_INVALID'
} as const
export type SimErrorCode = (typeof SimErrorCode)[keyof typeof SimErrorCode]

/** Base class of every error the simulator throws. */
export class SimError extends Error {
  readonly code: SimErrorCode
  constructor (code: SimErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.code = code
    this.name = new.target.name
  }
}

/** An option is wrong: the message starts with the option's name. */
export class SimConfigError extends SimError {
  constructor (message: string, options?: { cause?: unknown }) {
    super(SimErrorCode.CONFIG_INVALID, message, options)
  }
}

/** A link could not be set up. */
export class LinkError extends SimError {
  constructor (message: string, options?: { cause?: unknown }) {
    super(SimErrorCode.LINK_FAILED, message, options)
  }
}

/** A recording file could not be read. */
export class RecordingError extends SimError {
  constructor (message: string, options?: { cause?: unknown }) {
    super(SimErrorCode.RECORDING_INVALID, message, options)
  }
}
