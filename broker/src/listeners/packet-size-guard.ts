/**
 * Bounds the size of MQTT packets before aedes parses them ([CONN-LIMIT-2]): aedes and mqtt-packet
 * accept packets up to 256 MiB. This tracks fixed headers in the byte stream (sans-I/O, no copies)
 * and reports the first packet whose remaining length is over the limit.
 */
export class PacketSizeGuard {
  /** Bytes of the current packet's body still to skip. */
  private skip = 0
  /** 0: expecting a type byte; 1..4: reading the remaining-length varint. */
  private state = 0
  private length = 0
  private mult = 1

  constructor (private readonly maxPacketBytes: number) {}

  /** Feeds a chunk; returns an error message if a packet is too large or its header is malformed. */
  feed (chunk: Uint8Array): string | null {
    let i = 0
    const n = chunk.length
    while (i < n) {
      if (this.skip > 0) {
        const take = Math.min(this.skip, n - i)
        this.skip -= take
        i += take
        continue
      }
      const b = chunk[i++] as number
      if (this.state === 0) {
        this.state = 1
        this.length = 0
        this.mult = 1
        continue
      }
      this.length += (b & 0x7f) * this.mult
      this.mult *= 128
      if (b & 0x80) {
        if (++this.state > 4) return 'malformed MQTT remaining length'
        continue
      }
      if (this.length > this.maxPacketBytes) return `MQTT packet of ${this.length} bytes is over the limit of ${this.maxPacketBytes}`
      this.skip = this.length
      this.state = 0
    }
    return null
  }
}
