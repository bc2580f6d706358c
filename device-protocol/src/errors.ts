/**
 * The device protocol's error: a RangeError (what was asked for lies outside what the line protocol
 * can carry) with a stable `code` naming what is wrong.
 */

/** Every stable code a {@link DeviceProtocolError} carries. */
export const DeviceProtocolErrorCode = {
  /** The encoded frame would exceed {@link MAX_FRAME_BYTES} ([DEV-FRAME-1]). */
  FRAME_TOO_LONG: 'FRAME_TOO_LONG',
  /** More than {@link MAX_FIELDS} fields ([DEV-FRAME-1]). */
  TOO_MANY_FIELDS: 'TOO_MANY_FIELDS',
  /** A key breaks the grammar, or is one the frame type sets itself (`boot`, `seq`, `code`, ...). */
  BAD_KEY: 'BAD_KEY',
  /** A value is not a well-formed string (lone UTF-16 surrogate), or a required one is empty. */
  BAD_VALUE: 'BAD_VALUE',
  /** `boot` or `seq` is not a whole number from 1 to 2^53 - 1. */
  BAD_NUMBER: 'BAD_NUMBER',
  /** A position is neither `<boot>:<seq>` nor `none`. */
  BAD_POSITION: 'BAD_POSITION',
  /** Not one of the frame types, or a field the type requires is missing or must be absent. */
  BAD_FRAME: 'BAD_FRAME'
} as const
export type DeviceProtocolErrorCode = (typeof DeviceProtocolErrorCode)[keyof typeof DeviceProtocolErrorCode]

/** Thrown by {@link encodeFrame} and {@link parsePos}; the decoder never throws, it counts. */
export class DeviceProtocolError extends RangeError {
  readonly code: DeviceProtocolErrorCode
  constructor (code: DeviceProtocolErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.code = code
    this.name = new.target.name
  }
}
