/**
 * `@herald/device-protocol`: the codec of the device line protocol (docs/device-protocol.md).
 * Sans-I/O: {@link encodeFrame} turns a frame into bytes, {@link FrameDecoder} turns a byte stream
 * into frames.
 */
export { DeviceProtocolError, DeviceProtocolErrorCode } from './errors.js'
export {
  MAX_FRAME_BYTES, MAX_FIELDS, MAX_KEY_LENGTH, MAX_COUNTER, FrameType,
  type FramePos, type HelloFrame, type DataFrameType, type DataFrame, type SyncFrame, type AckFrame, type DeviceFrame,
  isDataFrame, comparePos, formatPos, parsePos, parseCounter, isValidKey, encodeValue, decodeValue, encodeFrame
} from './frame.js'
export { FrameDecoder, type DecoderStats } from './frame-decoder.js'
