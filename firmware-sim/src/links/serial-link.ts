/**
 * The device on a real tty, through `serialport`: the simulator opens `path` and the gateway opens
 * the other end (a null-modem cable, or a pty pair made by socat). The device sees the line open
 * when its port opens; if the port closes without being asked to (the tty went away), it tries to
 * reopen it every second.
 */
import { SerialPort } from 'serialport'
import { LinkError } from '../errors.js'
import { MAX_PENDING_WRITE_BYTES, MutableLinkStats, NO_HANDLER, type DeviceLink, type LinkHandler, type LinkStats } from './link.js'

export interface SerialLinkOptions {
  readonly path: string
  /** Default 115200. */
  readonly baudRate?: number | undefined
  /** Bytes waiting to be written at most before writes are dropped. Default 64 KiB. */
  readonly maxPendingBytes?: number | undefined
}

const REOPEN_RETRY_MS = 1000

export class SerialLink implements DeviceLink {
  readonly path: string
  readonly baudRate: number
  private readonly maxPending: number
  private handler: LinkHandler = NO_HANDLER
  private port: SerialPort | null = null
  private open = false
  private plugged = true
  private closed = false
  private retry: NodeJS.Timeout | null = null
  private readonly counts = new MutableLinkStats()

  constructor (options: SerialLinkOptions) {
    this.path = options.path
    this.baudRate = options.baudRate ?? 115200
    this.maxPending = options.maxPendingBytes ?? MAX_PENDING_WRITE_BYTES
  }

  get url (): string {
    return `serial://${this.path}?baud=${this.baudRate}`
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
    await this.openPort()
  }

  write (bytes: Uint8Array): boolean {
    const p = this.port
    if (!this.open || p === null || p.writableLength > this.maxPending) {
      this.counts.bytesDropped += bytes.length
      return false
    }
    this.counts.bytesWritten += bytes.length
    p.write(Buffer.from(bytes))
    return true
  }

  async unplug (): Promise<void> {
    if (!this.plugged || this.closed) return
    this.plugged = false
    await this.closePort()
  }

  async replug (): Promise<void> {
    if (this.plugged || this.closed) return
    this.plugged = true
    await this.openOrRetry()
  }

  async close (): Promise<void> {
    if (this.closed) return
    this.closed = true
    await this.closePort()
  }

  private async closePort (): Promise<void> {
    if (this.retry !== null) clearTimeout(this.retry)
    this.retry = null
    const p = this.port
    this.port = null
    if (p === null) return
    if (this.open) {
      this.open = false
      this.handler.close()
    }
    if (p.isOpen) await new Promise<void>((resolve) => { p.close(() => { resolve() }) })
  }

  private async openOrRetry (): Promise<void> {
    try {
      await this.openPort()
    } catch {
      if (this.plugged && !this.closed) this.retry = setTimeout(() => { this.retry = null; void this.openOrRetry() }, REOPEN_RETRY_MS)
    }
  }

  private openPort (): Promise<void> {
    const port = new SerialPort({ path: this.path, baudRate: this.baudRate, autoOpen: false })
    return new Promise((resolve, reject) => {
      port.open((err) => {
        if (err !== null && err !== undefined) {
          reject(new LinkError(`cannot open serial port ${this.path}: ${err.message}`, { cause: err }))
          return
        }
        if (this.closed || !this.plugged) {
          port.close()
          resolve()
          return
        }
        this.port = port
        port.on('data', (chunk: Buffer) => {
          if (this.port !== port) return
          this.counts.bytesRead += chunk.length
          this.handler.data(chunk)
        })
        port.on('error', () => {}) // followed by 'close'
        port.on('close', () => {
          if (this.port !== port) return
          this.port = null
          if (this.open) {
            this.open = false
            this.handler.close()
          }
          // the tty went away by itself: try to get it back
          if (this.plugged && !this.closed) this.retry = setTimeout(() => { this.retry = null; void this.openOrRetry() }, REOPEN_RETRY_MS)
        })
        this.open = true
        this.counts.opens++
        this.handler.open()
        resolve()
      })
    })
  }
}
