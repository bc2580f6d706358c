/**
 * A byte pipe to one device: a tty or a serial device server's TCP socket. The gateway opens it,
 * reads and writes bytes, and learns when it closes; reopening is the caller's business.
 */
import type { DeviceAddress } from '../config/device-url.js'
import { SerialLine } from './serial-line.js'
import { TcpLine } from './tcp-line.js'

/** Most bytes a line buffers for writing before it is considered stuck and closed. */
export const MAX_LINE_WRITE_BUFFER = 64 * 1024

export interface DeviceLine {
  /** Opens the line; rejects with the reason if it cannot. Called once per line object. */
  open (): Promise<void>
  /** Queues bytes for the device. A line whose write buffer passes MAX_LINE_WRITE_BUFFER closes. */
  write (bytes: Buffer): void
  /** Closes the line; `onClose` is called once, with null. */
  close (): void
  /** Bytes from the device. */
  onData (listener: (chunk: Buffer) => void): void
  /** The line closed (null: closed by us; else why). Called once, only after a successful open. */
  onClose (listener: (err: Error | null) => void): void
}

/** Makes the line object for an address (not yet opened). */
export function createDeviceLine (address: DeviceAddress, openTimeoutMs: number): DeviceLine {
  return address.kind === 'tcp' ? new TcpLine(address, openTimeoutMs) : new SerialLine(address)
}
