/** A device behind a serial device server (ser2net, Moxa NPort) in raw TCP mode. */
import { connect } from 'node:net'
import type { Socket } from 'node:net'
import type { TcpAddress } from '../config/device-url.js'
import { MAX_LINE_WRITE_BUFFER } from './device-line.js'
import type { DeviceLine } from './device-line.js'

export class TcpLine implements DeviceLine {
  readonly #address: TcpAddress
  readonly #openTimeoutMs: number
  #socket: Socket | null = null
  #data: (chunk: Buffer) => void = () => {}
  #close: (err: Error | null) => void = () => {}
  #closedByUs = false

  constructor (address: TcpAddress, openTimeoutMs: number) {
    this.#address = address
    this.#openTimeoutMs = openTimeoutMs
  }

  open (): Promise<void> {
    return new Promise((resolve, reject) => {
      const socket = connect({ host: this.#address.host, port: this.#address.port, noDelay: true })
      this.#socket = socket
      const timer = setTimeout(() => { socket.destroy(new Error(`no connection within ${this.#openTimeoutMs} ms`)) }, this.#openTimeoutMs)
      socket.once('connect', () => {
        clearTimeout(timer)
        socket.setKeepAlive(true, 10_000)
        let failure: Error | null = null
        socket.on('error', (err) => { failure = err })
        socket.on('close', () => { this.#close(this.#closedByUs ? null : failure ?? new Error('the device server closed the connection')) })
        socket.on('data', (chunk: Buffer) => { this.#data(chunk) })
        resolve()
      })
      socket.once('error', (err) => {
        clearTimeout(timer)
        if (socket.connecting || !socket.readable) reject(err)
      })
    })
  }

  write (bytes: Buffer): void {
    const s = this.#socket
    if (s === null || s.destroyed) return
    if (s.writableLength > MAX_LINE_WRITE_BUFFER) {
      s.destroy(new Error(`more than ${MAX_LINE_WRITE_BUFFER} bytes waiting to be written: the device server does not read`))
      return
    }
    s.write(bytes)
  }

  close (): void {
    this.#closedByUs = true
    this.#socket?.destroy()
  }

  onData (listener: (chunk: Buffer) => void): void { this.#data = listener }
  onClose (listener: (err: Error | null) => void): void { this.#close = listener }
}
