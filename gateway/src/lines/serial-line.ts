/** A device on a local tty (RS-232, or RS-485 through an adapter), through the serialport package. */
import { SerialPort } from 'serialport'
import type { SerialAddress } from '../config/device-url.js'
import { MAX_LINE_WRITE_BUFFER } from './device-line.js'
import type { DeviceLine } from './device-line.js'

export class SerialLine implements DeviceLine {
  readonly #address: SerialAddress
  #port: SerialPort | null = null
  #data: (chunk: Buffer) => void = () => {}
  #close: (err: Error | null) => void = () => {}
  #closedByUs = false
  #opened = false
  #closed = false

  constructor (address: SerialAddress) {
    this.#address = address
  }

  open (): Promise<void> {
    return new Promise((resolve, reject) => {
      const port = new SerialPort({ path: this.#address.path, baudRate: this.#address.baudRate, autoOpen: false })
      this.#port = port
      let failure: Error | null = null
      port.on('error', (err) => { failure = err })
      port.on('data', (chunk: Buffer) => { this.#data(chunk) })
      port.on('close', (err: Error | null | undefined) => {
        if (!this.#opened || this.#closed) return
        this.#closed = true
        this.#close(this.#closedByUs ? null : err ?? failure ?? new Error('the tty closed'))
      })
      port.open((err) => {
        if (err !== null && err !== undefined) {
          reject(err)
          return
        }
        this.#opened = true
        resolve()
      })
    })
  }

  write (bytes: Buffer): void {
    const p = this.#port
    if (p === null || !p.isOpen) return
    if (p.writableLength > MAX_LINE_WRITE_BUFFER) {
      p.destroy(new Error(`more than ${MAX_LINE_WRITE_BUFFER} bytes waiting to be written: the tty does not drain`))
      return
    }
    p.write(bytes)
  }

  close (): void {
    this.#closedByUs = true
    const p = this.#port
    if (p === null) return
    if (p.isOpen) p.close(() => {})
    else p.destroy()
  }

  onData (listener: (chunk: Buffer) => void): void { this.#data = listener }
  onClose (listener: (err: Error | null) => void): void { this.#close = listener }
}
