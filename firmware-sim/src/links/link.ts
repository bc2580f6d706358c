/**
 * The line between a simulated device and a gateway: bytes both ways, and whether the line is open.
 * The device side of every link implements {@link DeviceLink}.
 */

/** What a link tells its device. Called from the link's own I/O callbacks, never re-entrantly from write(). */
export interface LinkHandler {
  /** The line opened (a client connected, the port opened): the device says HELLO ([DEV-SESSION-1]). */
  open (): void
  /** Bytes from the gateway. */
  data (bytes: Buffer): void
  /** The line closed. */
  close (): void
}

/** Bytes a link moved or dropped. */
export interface LinkStats {
  /** Times the line opened. */
  readonly opens: number
  readonly bytesWritten: number
  readonly bytesRead: number
  /** Bytes written while the line was closed, or beyond the write buffer's limit: lost, like a UART overrun. */
  readonly bytesDropped: number
}

/** The device's end of a line. */
export interface DeviceLink {
  /** Where a gateway reaches the device (`tcp://127.0.0.1:7000`, `serial:///dev/pts/5?baud=115200`); final once start() resolved. */
  readonly url: string
  readonly isOpen: boolean
  readonly stats: LinkStats
  /** Sets the device that hears this link (one). */
  attach (handler: LinkHandler): void
  /** Starts listening / opens the port. Rejects with a LinkError if it cannot. */
  start (): Promise<void>
  /** Writes bytes if the line is open and its write buffer has room; false if they were dropped. */
  write (bytes: Uint8Array): boolean
  /** Closes the line as if its cable were pulled, until replug(). */
  unplug (): Promise<void>
  /** Reopens the line after unplug(). */
  replug (): Promise<void>
  /** Closes the link for good. */
  close (): Promise<void>
}

/** Bytes a link keeps waiting to be written at most; beyond, writes are dropped (and counted). */
export const MAX_PENDING_WRITE_BYTES = 64 * 1024

/** Counting helper for link implementations. */
export class MutableLinkStats implements LinkStats {
  opens = 0
  bytesWritten = 0
  bytesRead = 0
  bytesDropped = 0
  snapshot (): LinkStats {
    return { opens: this.opens, bytesWritten: this.bytesWritten, bytesRead: this.bytesRead, bytesDropped: this.bytesDropped }
  }
}

const NO_HANDLER: LinkHandler = { open () {}, data () {}, close () {} }
export { NO_HANDLER }
