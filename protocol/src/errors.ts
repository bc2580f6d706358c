/**
 * Herald's errors: one base class with a stable string `code`, one subclass per kind of failure.
 * Codes are part of the wire protocol (docs/protocol.md, "Error codes") and never change meaning.
 */

/** Every stable error code, grouped by the subclass that carries it. */
export const ErrorCode = {
  // configuration and site structure
  CONFIG_INVALID: 'CONFIG_INVALID',
  SITE_INVALID: 'SITE_INVALID',
  DATA_DIR_LOCKED: 'DATA_DIR_LOCKED',
  ADDRESS_IN_USE: 'ADDRESS_IN_USE',
  // authentication and authorization
  BAD_CREDENTIALS: 'BAD_CREDENTIALS',
  NOT_AUTHORIZED: 'NOT_AUTHORIZED',
  // what a sender asked for
  UNKNOWN_EVENT: 'UNKNOWN_EVENT',
  WRONG_CATEGORY: 'WRONG_CATEGORY',
  PAYLOAD_TOO_LARGE: 'PAYLOAD_TOO_LARGE',
  INVALID_ARGUMENT: 'INVALID_ARGUMENT',
  MALFORMED_FRAME: 'MALFORMED_FRAME',
  OUT_OF_ORDER: 'OUT_OF_ORDER',
  EXPIRED: 'EXPIRED',
  /** [GROUP-JOIN-3] a member's event, service filter or segment count differs from its group's. */
  GROUP_MISMATCH: 'GROUP_MISMATCH',
  /** [STORE-KEY-3] a new key of a keyed replacing event past the site's maxKeys for its (service, event). */
  KEY_LIMIT: 'KEY_LIMIT',
  // persistence
  PERSISTENCE_FAILED: 'PERSISTENCE_FAILED',
  CAPACITY_EXCEEDED: 'CAPACITY_EXCEEDED',
  /** [CLI-BROWSER-3] another tab (or worker) holds, or took over, the positions of this client key. */
  POSITIONS_LOCKED: 'POSITIONS_LOCKED',
  // lifecycle
  CLOSED: 'CLOSED',
  TIMEOUT: 'TIMEOUT',
  CONNECTION_LOST: 'CONNECTION_LOST',
  INTERNAL: 'INTERNAL'
} as const
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode]

const CODES = new Set<string>(Object.values(ErrorCode))

/** True if `code` is one of Herald's stable error codes. */
export function isErrorCode (code: unknown): code is ErrorCode {
  return typeof code === 'string' && CODES.has(code)
}

/** Base class of every error Herald throws, rejects with or reports. */
export class HeraldError extends Error {
  readonly code: ErrorCode
  constructor (code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.code = code
    this.name = new.target.name
  }
}

/** An option, a configuration file or the site structure is wrong. */
export class ConfigError extends HeraldError {
  constructor (message: string, options?: { cause?: unknown; code?: typeof ErrorCode.CONFIG_INVALID | typeof ErrorCode.SITE_INVALID | typeof ErrorCode.DATA_DIR_LOCKED | typeof ErrorCode.ADDRESS_IN_USE }) {
    super(options?.code ?? ErrorCode.CONFIG_INVALID, message, options)
  }
}

/** Credentials were refused, or the principal may not do what it asked. */
export class AuthError extends HeraldError {
  constructor (code: typeof ErrorCode.BAD_CREDENTIALS | typeof ErrorCode.NOT_AUTHORIZED, message: string, options?: { cause?: unknown }) {
    super(code, message, options)
  }
}

/** A request named something that does not exist or broke a rule of the site (unknown event, oversized payload, ...). */
export class RequestError extends HeraldError {}

/** Bytes on the wire could not be decoded, or broke the protocol's ordering rules. */
export class ProtocolError extends HeraldError {
  constructor (message: string, options?: { cause?: unknown; code?: typeof ErrorCode.MALFORMED_FRAME | typeof ErrorCode.OUT_OF_ORDER }) {
    super(options?.code ?? ErrorCode.MALFORMED_FRAME, message, options)
  }
}

/** A storage level failed (I/O error, disk full, corrupt file), is full, or is held by another tab. */
export class PersistenceError extends HeraldError {
  constructor (message: string, options?: { cause?: unknown; code?: typeof ErrorCode.PERSISTENCE_FAILED | typeof ErrorCode.CAPACITY_EXCEEDED | typeof ErrorCode.POSITIONS_LOCKED }) {
    super(options?.code ?? ErrorCode.PERSISTENCE_FAILED, message, options)
  }
}

/** The object was closed before or while the call ran. */
export class ClosedError extends HeraldError {
  constructor (message = 'closed', options?: { cause?: unknown }) {
    super(ErrorCode.CLOSED, message, options)
  }
}

/** A deadline passed. */
export class TimeoutError extends HeraldError {
  constructor (message: string, options?: { cause?: unknown }) {
    super(ErrorCode.TIMEOUT, message, options)
  }
}

/** Rebuilds a typed error from a code and message received on the wire. */
export function errorFromWire (code: string, message: string): HeraldError {
  if (!isErrorCode(code)) return new HeraldError(ErrorCode.INTERNAL, `${code}: ${message}`)
  switch (code) {
    case ErrorCode.BAD_CREDENTIALS:
    case ErrorCode.NOT_AUTHORIZED:
      return new AuthError(code, message)
    case ErrorCode.MALFORMED_FRAME:
    case ErrorCode.OUT_OF_ORDER:
      return new ProtocolError(message, { code })
    case ErrorCode.CLOSED:
      return new ClosedError(message)
    case ErrorCode.TIMEOUT:
      return new TimeoutError(message)
    case ErrorCode.PERSISTENCE_FAILED:
    case ErrorCode.CAPACITY_EXCEEDED:
    case ErrorCode.POSITIONS_LOCKED:
      return new PersistenceError(message, { code })
    default:
      return new RequestError(code, message)
  }
}

/** Any thrown value as a HeraldError: itself if it is one, else INTERNAL with it as cause. */
export function toHeraldError (err: unknown): HeraldError {
  if (err instanceof HeraldError) return err
  return new HeraldError(ErrorCode.INTERNAL, err instanceof Error ? err.message : String(err), { cause: err })
}
