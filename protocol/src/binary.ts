/**
 * A bounded binary writer and reader for Herald's frames (sans-I/O). Integers are unsigned LEB128
 * varints up to 2^53; strings are a varint length and UTF-8 bytes; byte strings likewise.
 */
import { ProtocolError } from './errors.js'

const encoder = new TextEncoder()
const decoder = new TextDecoder()

/** UTF-8 bytes of `s` (no BOM handling: the text is the text). */
export function utf8Encode (s: string): Uint8Array {
  return encoder.encode(s)
}

/** The text of UTF-8 bytes; malformed sequences become U+FFFD. */
export function utf8Decode (b: Uint8Array): string {
  return decoder.decode(b)
}

/** Bytes `s` takes in UTF-8 (lone surrogates count as U+FFFD, 3 bytes, as the encoder writes them). */
export function utf8Length (s: string): number {
  let n = 0
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i)
    if (c < 0x80) n += 1
    else if (c < 0x800) n += 2
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length && (s.charCodeAt(i + 1) & 0xfc00) === 0xdc00) { n += 4; i++ } else n += 3
  }
  return n
}

/** One Uint8Array holding `parts` one after another. */
export function concatBytes (parts: readonly Uint8Array[]): Uint8Array {
  let n = 0
  for (const p of parts) n += p.byteLength
  const out = new Uint8Array(n)
  let at = 0
  for (const p of parts) { out.set(p, at); at += p.byteLength }
  return out
}

/**
 * Copies of small byte strings (payloads) are carved out of shared 8 KiB slabs, as Node's Buffer
 * pool does: one ArrayBuffer per payload costs an allocation and garbage-collector work per event.
 * A live copy pins at most its slab (8 KiB); copies of 4 KiB and more get their own buffer.
 */
const SLAB_BYTES = 8 * 1024
let slab = new Uint8Array(SLAB_BYTES)
let slabUsed = 0

function copyOf (src: Uint8Array, from: number, to: number): Uint8Array {
  const n = to - from
  // Uint8Array's slice, a copy (a Buffer's own slice is a view of the frame)
  if (n >= SLAB_BYTES / 2) return Uint8Array.prototype.slice.call(src, from, to)
  if (slabUsed + n > SLAB_BYTES) {
    slab = new Uint8Array(SLAB_BYTES)
    slabUsed = 0
  }
  const out = slab.subarray(slabUsed, slabUsed + n)
  // a loop for the short ones: src.subarray would be one more object per payload
  if (n <= 64) for (let i = 0; i < n; i++) out[i] = src[from + i] as number
  else out.set(src.subarray(from, to))
  // 8-byte aligned, as Node's pool
  slabUsed = (slabUsed + n + 7) & ~7
  return out
}

/** Short strings are mostly ASCII (names, instances): decoding them by hand skips TextDecoder's call cost. */
function decodeShort (buf: Uint8Array, from: number, to: number): string {
  let s = ''
  for (let i = from; i < to; i++) {
    const c = buf[i] as number
    if (c >= 0x80) return decoder.decode(buf.subarray(from, to))
    s += String.fromCharCode(c)
  }
  return s
}

/** Appends values to a growable buffer. */
export class BinaryWriter {
  private buf: Uint8Array
  private len = 0

  constructor (initialSize = 256) {
    this.buf = new Uint8Array(initialSize)
  }

  private ensure (n: number): void {
    if (this.len + n <= this.buf.length) return
    let size = this.buf.length * 2
    while (size < this.len + n) size *= 2
    const next = new Uint8Array(size)
    next.set(this.buf.subarray(0, this.len))
    this.buf = next
  }

  u8 (v: number): this {
    this.ensure(1)
    this.buf[this.len++] = v
    return this
  }

  varint (v: number): this {
    if (!Number.isSafeInteger(v) || v < 0) throw new RangeError(`varint out of range: ${v}`)
    this.ensure(8)
    while (v >= 0x80) {
      this.buf[this.len++] = (v % 0x80) | 0x80
      v = Math.floor(v / 0x80)
    }
    this.buf[this.len++] = v
    return this
  }

  string (s: string): this {
    if (s.length <= 42) {
      // at most 126 bytes: a one-byte length, then the text written straight after it
      this.ensure(1 + s.length * 3)
      const at = this.len
      const { written } = encoder.encodeInto(s, this.buf.subarray(at + 1))
      this.buf[at] = written
      this.len = at + 1 + written
      return this
    }
    const n = utf8Length(s)
    this.varint(n)
    this.ensure(n)
    this.len += encoder.encodeInto(s, this.buf.subarray(this.len)).written
    return this
  }

  bytes (b: Uint8Array): this {
    this.varint(b.byteLength)
    this.ensure(b.byteLength)
    this.buf.set(b, this.len)
    this.len += b.byteLength
    return this
  }

  /** The bytes written so far (a view, valid until the next write). */
  finish (): Uint8Array {
    return this.buf.subarray(0, this.len)
  }
}

/** Reads values from a buffer; every read is bounds-checked and throws a ProtocolError past the end. */
export class BinaryReader {
  private pos = 0
  constructor (private readonly buf: Uint8Array) {}

  get remaining (): number {
    return this.buf.length - this.pos
  }

  private need (n: number, what: string): void {
    if (this.pos + n > this.buf.length) throw new ProtocolError(`frame truncated while reading ${what}`)
  }

  u8 (what: string): number {
    this.need(1, what)
    return this.buf[this.pos++] as number
  }

  varint (what: string): number {
    let result = 0
    let mult = 1
    for (let i = 0; i < 8; i++) {
      this.need(1, what)
      const b = this.buf[this.pos++] as number
      result += (b & 0x7f) * mult
      if (b < 0x80) {
        if (!Number.isSafeInteger(result)) break
        return result
      }
      mult *= 0x80
    }
    throw new ProtocolError(`${what}: varint too long`)
  }

  string (what: string, maxBytes: number): string {
    const n = this.varint(`${what} length`)
    if (n > maxBytes) throw new ProtocolError(`${what}: ${n} bytes is over the limit of ${maxBytes}`)
    this.need(n, what)
    const s = n <= 64 ? decodeShort(this.buf, this.pos, this.pos + n) : decoder.decode(this.buf.subarray(this.pos, this.pos + n))
    this.pos += n
    return s
  }

  /** A byte string; `maxBytes` is a sanity bound (the site's payload limits are checked by the caller). */
  bytes (what: string, maxBytes: number): Uint8Array {
    const n = this.varint(`${what} length`)
    if (n > maxBytes) throw new ProtocolError(`${what}: ${n} bytes is over the limit of ${maxBytes}`)
    this.need(n, what)
    // a copy, so the stored event does not pin the whole frame in memory
    const b = copyOf(this.buf, this.pos, this.pos + n)
    this.pos += n
    return b
  }

  end (what: string): void {
    if (this.pos !== this.buf.length) throw new ProtocolError(`${what}: ${this.buf.length - this.pos} unexpected trailing bytes`)
  }
}
