/**
 * The sans-I/O frame decoder ([DEV-FRAME-2]): bytes in, frames out. Bounded memory (one buffer of
 * MAX_FRAME_BYTES, allocated once), no per-byte allocation: it scans with indexOf for `$` and LF and
 * copies each frame's bytes once.
 */
import { crc32 } from 'node:zlib'
import { MAX_FRAME_BYTES, parseBody, type DeviceFrame } from './frame.js'

/** What a decoder has seen, by outcome. Counts only grow, until the decoder is replaced. */
export interface DecoderStats {
  /** Frames accepted (well-formed, matching CRC). */
  readonly frames: number
  /** Bytes outside any frame, skipped while hunting for `$` (not the bytes of rejected frames). */
  readonly noiseBytes: number
  /** Frames cut by a `$` before their LF (or by {@link FrameDecoder.reset}). */
  readonly truncated: number
  /** Frames with no LF within MAX_FRAME_BYTES; each is skipped up to the next `$`. */
  readonly oversized: number
  /** Frames whose trailer is well-formed but whose CRC does not match the body. */
  readonly badCrc: number
  /** Frames that break the grammar or miss a required field (or end in CR LF, [DEV-FRAME-3]). */
  readonly malformed: number
}

const DOLLAR = 0x24
const LF = 0x0a
const STAR = 0x2a
// bytes between "$" and LF, at most: the frame's limit minus those two
const MAX_CONTENT = MAX_FRAME_BYTES - 2
// "*" and 8 hex digits
const TRAILER = 9

// what the decoder is doing: hunting for "$" (bytes are noise), reading a frame, or skipping the
// rest of an oversized frame up to the next "$"
const HUNTING = 0
const IN_FRAME = 1
const SKIPPING = 2
type Mode = typeof HUNTING | typeof IN_FRAME | typeof SKIPPING

function hexDigit (b: number): number {
  if (b >= 0x30 && b <= 0x39) return b - 0x30
  if (b >= 0x41 && b <= 0x46) return b - 0x41 + 10
  return -1 // lowercase is not accepted: the CRC is uppercase hex ([DEV-FRAME-1])
}

/**
 * Turns a byte stream into frames. Feed it whatever the line delivers, in any chunks: the result
 * (frames and stats) does not depend on how the stream is split. Never throws on input.
 */
export class FrameDecoder {
  // the bytes after "$" of the frame being read; never more than MAX_CONTENT are kept
  private readonly buf = Buffer.alloc(MAX_CONTENT)
  private len = 0
  private mode: Mode = HUNTING
  private nFrames = 0
  private nNoise = 0
  private nTruncated = 0
  private nOversized = 0
  private nBadCrc = 0
  private nMalformed = 0

  /** A snapshot of the counts so far. */
  get stats (): DecoderStats {
    return {
      frames: this.nFrames,
      noiseBytes: this.nNoise,
      truncated: this.nTruncated,
      oversized: this.nOversized,
      badCrc: this.nBadCrc,
      malformed: this.nMalformed
    }
  }

  /** Decodes the next bytes of the stream; returns the frames they complete, in order. */
  push (chunk: Uint8Array): DeviceFrame[] {
    const out: DeviceFrame[] = []
    const end = chunk.length
    let i = 0
    // next "$" and LF at or after i, cached so that each byte is scanned at most once per kind
    let nextDollar = -2
    let nextLf = -2
    while (i < end) {
      if (nextDollar !== -1 && nextDollar < i) nextDollar = chunk.indexOf(DOLLAR, i)
      if (this.mode !== IN_FRAME) {
        if (nextDollar < 0) {
          if (this.mode === HUNTING) this.nNoise += end - i
          return out
        }
        if (this.mode === HUNTING) this.nNoise += nextDollar - i
        this.mode = IN_FRAME
        this.len = 0
        i = nextDollar + 1
        continue
      }
      if (nextLf !== -1 && nextLf < i) nextLf = chunk.indexOf(LF, i)
      // the frame ends at the first of "$" (cut), LF (complete) or the end of the chunk (continues)
      let stop = end
      if (nextDollar >= 0) stop = nextDollar
      if (nextLf >= 0 && nextLf < stop) stop = nextLf
      const n = stop - i
      if (this.len + n > MAX_CONTENT) {
        // [DEV-FRAME-2] no LF within the limit: oversized, skipped up to the next "$"
        this.nOversized++
        this.mode = SKIPPING
        continue
      }
      if (n > 0) {
        this.buf.set(n === end ? chunk : chunk.subarray(i, stop), this.len)
        this.len += n
      }
      if (stop === end) return out
      if (stop === nextDollar) {
        // [DEV-FRAME-2] a "$" inside a frame starts a new one; the cut one is truncated
        this.nTruncated++
        this.len = 0
        i = stop + 1
        continue
      }
      const frame = this.complete()
      if (frame !== undefined) out.push(frame)
      this.mode = HUNTING
      i = stop + 1
    }
    return out
  }

  /**
   * Forgets the frame being read, if any (counted as truncated): call it when the line closes or
   * reopens, so that bytes before and after do not join. The stats are kept.
   */
  reset (): void {
    if (this.mode === IN_FRAME) this.nTruncated++
    this.mode = HUNTING
    this.len = 0
  }

  // at LF: check the trailer, the CRC, then the grammar
  private complete (): DeviceFrame | undefined {
    const { buf, len } = this
    const bodyLen = len - TRAILER
    if (bodyLen < 1 || buf[bodyLen] !== STAR) {
      this.nMalformed++
      return undefined
    }
    let crc = 0
    for (let k = bodyLen + 1; k < len; k++) {
      const d = hexDigit(buf[k]!)
      if (d < 0) {
        this.nMalformed++
        return undefined
      }
      crc = crc * 16 + d
    }
    if (crc32(buf.subarray(0, bodyLen)) !== crc) {
      this.nBadCrc++
      return undefined
    }
    const frame = parseBody(buf.toString('latin1', 0, bodyLen))
    if (frame === undefined) {
      this.nMalformed++
      return undefined
    }
    this.nFrames++
    return frame
  }
}
