/**
 * A bounded binary writer and reader for Herald's frames (sans-I/O). Integers are unsigned LEB128
 * varints up to 2^53; strings are a varint length and UTF-8 bytes; byte strings likewise.
 */
import { ProtocolError } from './errors.js'

/** Appends values to a growable buffer. */
export class BinaryWriter {
  private buf: Buffer
  private len = 0

  constructor (initialSize = 256) {
    this.buf = Buffer.allocUnsafe(initialSize)
  }

  private ensure (n: number): void {
    if (this.len + n <= this.buf.length) return
    let size = this.buf.length * 2
    while (size < this.len + n) size *= 2
    const next = Buffer.allocUnsafe(size)
    this.buf.copy(next, 0, 0, this.len)
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
    const n = Buffer.byteLength(s, 'utf8')
    this.varint(n)
    this.ensure(n)
    this.len += this.buf.write(s, this.len, 'utf8')
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
  finish (): Buffer {
    return this.buf.subarray(0, this.len)
  }
}

/** Reads values from a buffer; every read is bounds-checked and throws a ProtocolError past the end. */
export class BinaryReader {
  private pos = 0
  constructor (private readonly buf: Buffer) {}

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
    const s = this.buf.toString('utf8', this.pos, this.pos + n)
    this.pos += n
    return s
  }

  /** A byte string; `maxBytes` is a sanity bound (the site's payload limits are checked by the caller). */
  bytes (what: string, maxBytes: number): Buffer {
    const n = this.varint(`${what} length`)
    if (n > maxBytes) throw new ProtocolError(`${what}: ${n} bytes is over the limit of ${maxBytes}`)
    this.need(n, what)
    // a copy, so the stored event does not pin the whole frame in memory
    const b = Buffer.from(this.buf.subarray(this.pos, this.pos + n))
    this.pos += n
    return b
  }

  end (what: string): void {
    if (this.pos !== this.buf.length) throw new ProtocolError(`${what}: ${this.buf.length - this.pos} unexpected trailing bytes`)
  }
}
