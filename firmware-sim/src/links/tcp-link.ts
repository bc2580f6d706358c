/**
 * The device behind a serial device server in raw TCP mode (ser2net, Moxa NPort): the simulator
 * listens on one port per device and the gateway connects to it. One client at a time: a new
 * connection REPLACES the current one (the old socket is destroyed), so that a gateway that
 * restarted after a crash is not locked out by its own half-open connection. The device sees the
 * line open when a client connects and close when it goes.
 */
import { createServer, type Server, type Socket } from 'node:net'
import { LinkError } from '../errors.js'
import { MAX_PENDING_WRITE_BYTES, MutableLinkStats, NO_HANDLER, type DeviceLink, type LinkHandler, type LinkStats } from './link.js'

export interface TcpLinkOptions {
  /** Address to listen on. Default 127.0.0.1. */
  readonly host?: string | undefined
  /** Port; 0 for a free one (the chosen port is kept across unplug/replug). */
  readonly port: number
  /** Bytes waiting to be written at most before writes are dropped. Default 64 KiB. */
  readonly maxPendingBytes?: number | undefined
}

const RELISTEN_RETRY_MS = 1000

export class TcpLink implements DeviceLink {
  private readonly host: string
  private port: number
  private readonly maxPending: number
  private handler: LinkHandler = NO_HANDLER
  private server: Server | null = null
  private socket: Socket | null = null
  private plugged = true
  private closed = false
  private retry: NodeJS.Timeout | null = null
  private readonly counts = new MutableLinkStats()

  constructor (options: TcpLinkOptions) {
    this.host = options.host ?? '127.0.0.1'
    this.port = options.port
    this.maxPending = options.maxPendingBytes ?? MAX_PENDING_WRITE_BYTES
  }

  get url (): string {
    return `tcp://${this.host.includes(':') ? `[${this.host}]` : this.host}:${this.port}`
  }

  get isOpen (): boolean {
    return this.socket !== null
  }

  get stats (): LinkStats {
    return this.counts.snapshot()
  }

  /** Clients connected so far (replaced ones included). */
  attach (handler: LinkHandler): void {
    this.handler = handler
  }

  async start (): Promise<void> {
    await this.listen()
  }

  write (bytes: Uint8Array): boolean {
    const s = this.socket
    if (s === null || s.writableLength > this.maxPending) {
      this.counts.bytesDropped += bytes.length
      return false
    }
    this.counts.bytesWritten += bytes.length
    s.write(bytes)
    return true
  }

  async unplug (): Promise<void> {
    if (!this.plugged || this.closed) return
    this.plugged = false
    await this.shut()
  }

  async replug (): Promise<void> {
    if (this.plugged || this.closed) return
    this.plugged = true
    await this.listenOrRetry()
  }

  async close (): Promise<void> {
    if (this.closed) return
    this.closed = true
    await this.shut()
  }

  private async shut (): Promise<void> {
    if (this.retry !== null) clearTimeout(this.retry)
    this.retry = null
    this.dropSocket()
    const server = this.server
    this.server = null
    if (server !== null) await new Promise<void>((resolve) => { server.close(() => { resolve() }) })
  }

  private dropSocket (): void {
    const s = this.socket
    if (s === null) return
    this.socket = null
    s.destroy()
    this.handler.close()
  }

  private async listenOrRetry (): Promise<void> {
    try {
      await this.listen()
    } catch {
      // the port may be taken for a moment (TIME_WAIT, another process): try again
      if (this.plugged && !this.closed) this.retry = setTimeout(() => { this.retry = null; void this.listenOrRetry() }, RELISTEN_RETRY_MS)
    }
  }

  private listen (): Promise<void> {
    const server = createServer({ noDelay: true }, (socket) => { this.accept(socket) })
    return new Promise((resolve, reject) => {
      server.once('error', (err: NodeJS.ErrnoException) => {
        reject(new LinkError(`cannot listen on ${this.host}:${this.port}: ${err.code ?? err.message}`, { cause: err }))
      })
      server.listen({ host: this.host, port: this.port, exclusive: true }, () => {
        const address = server.address()
        if (address !== null && typeof address === 'object') this.port = address.port
        server.on('error', () => {}) // after listening, errors only concern single connections
        if (this.closed || !this.plugged) {
          server.close()
          resolve()
          return
        }
        this.server = server
        resolve()
      })
    })
  }

  private accept (socket: Socket): void {
    if (this.server === null) {
      socket.destroy()
      return
    }
    // a new client replaces the current one
    this.dropSocket()
    this.socket = socket
    socket.setKeepAlive(true, 10_000)
    socket.on('data', (chunk: Buffer) => {
      if (this.socket !== socket) return
      this.counts.bytesRead += chunk.length
      this.handler.data(chunk)
    })
    socket.on('error', () => {}) // a reset by the peer ends in 'close'
    socket.on('close', () => {
      if (this.socket !== socket) return
      this.socket = null
      this.handler.close()
    })
    this.counts.opens++
    this.handler.open()
  }
}
