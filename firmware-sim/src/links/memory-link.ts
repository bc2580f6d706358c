/**
 * An in-memory line, for tests: the device's end is a {@link DeviceLink}, the other end
 * ({@link MemoryGatewayEnd}) is what a test's scripted gateway reads and writes. Bytes are
 * delivered asynchronously (a microtask later), in order, never lost or changed: losses and
 * corruption are the faults' job. Bytes the device writes before the gateway end has a data
 * listener wait for it (up to MAX_PENDING_WRITE_BYTES; beyond, they are dropped and counted).
 */
import { MAX_PENDING_WRITE_BYTES, MutableLinkStats, NO_HANDLER, type DeviceLink, type LinkHandler, type LinkStats } from './link.js'

/** The gateway's end of a memory link. */
export interface MemoryGatewayEnd {
  readonly isOpen: boolean
  /** Sends bytes to the device; dropped if the line is closed. */
  write (bytes: Uint8Array): void
  /** Sets the listener of the bytes the device writes. */
  onData (listener: (bytes: Buffer) => void): void
  /** Sets listeners of the line opening and closing. */
  onOpen (listener: () => void): void
  onClose (listener: () => void): void
}

export class MemoryLink implements DeviceLink {
  readonly url: string
  private handler: LinkHandler = NO_HANDLER
  private open = false
  private closed = false
  private readonly counts = new MutableLinkStats()
  private gwData: ((bytes: Buffer) => void) | null = null
  private pending: Buffer[] = []
  private pendingBytes = 0
  private gwOpen: () => void = () => {}
  private gwClose: () => void = () => {}
  /** The other end, for the test's gateway. */
  readonly gateway: MemoryGatewayEnd

  constructor (name = 'device') {
    this.url = `memory://${encodeURIComponent(name)}`
    const isOpen = (): boolean => this.open
    this.gateway = {
      get isOpen () { return isOpen() },
      write: (bytes) => {
        if (!this.open) return
        const copy = Buffer.from(bytes)
        queueMicrotask(() => {
          if (!this.open) return
          this.counts.bytesRead += copy.length
          this.handler.data(copy)
        })
      },
      onData: (l) => {
        this.gwData = l
        const waiting = this.pending
        this.pending = []
        this.pendingBytes = 0
        for (const b of waiting) l(b)
      },
      onOpen: (l) => { this.gwOpen = l },
      onClose: (l) => { this.gwClose = l }
    }
  }

  get isOpen (): boolean {
    return this.open
  }

  get stats (): LinkStats {
    return this.counts.snapshot()
  }

  attach (handler: LinkHandler): void {
    this.handler = handler
  }

  async start (): Promise<void> {
    this.setOpen(true)
  }

  write (bytes: Uint8Array): boolean {
    if (!this.open) {
      this.counts.bytesDropped += bytes.length
      return false
    }
    const copy = Buffer.from(bytes)
    if (this.gwData === null && this.pendingBytes + copy.length > MAX_PENDING_WRITE_BYTES) {
      this.counts.bytesDropped += copy.length
      return false
    }
    this.counts.bytesWritten += copy.length
    if (this.gwData === null) {
      this.pending.push(copy)
      this.pendingBytes += copy.length
    } else {
      queueMicrotask(() => { this.deliver(copy) })
    }
    return true
  }

  private deliver (bytes: Buffer): void {
    if (this.gwData !== null) this.gwData(bytes)
    else this.pending.push(bytes)
  }

  async unplug (): Promise<void> {
    this.setOpen(false)
  }

  async replug (): Promise<void> {
    this.setOpen(true)
  }

  async close (): Promise<void> {
    this.setOpen(false)
    this.closed = true
  }

  private setOpen (open: boolean): void {
    if (this.closed || this.open === open) return
    this.open = open
    if (open) {
      this.counts.opens++
      this.gwOpen()
      this.handler.open()
    } else {
      this.gwClose()
      this.handler.close()
    }
  }
}
