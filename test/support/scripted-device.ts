/**
 * A device written by hand for gateway tests: a TCP server (a serial device server's port) that
 * lets a test send exactly the bytes it wants and wait for what the gateway answers.
 */
import { createServer } from 'node:net'
import type { Server, Socket } from 'node:net'
import { FrameDecoder, encodeFrame, type DeviceFrame, type FramePos } from '@herald/device-protocol'
import { waitFor } from '@herald/protocol/testing'

export class ScriptedDevice {
  readonly received: DeviceFrame[] = []
  #server: Server
  #socket: Socket | null = null
  #decoder = new FrameDecoder()
  connections = 0
  port = 0

  private constructor (server: Server) {
    this.#server = server
  }

  /** Listens on a free port; the gateway connects to `url`. */
  static async listen (): Promise<ScriptedDevice> {
    const server = createServer()
    const d = new ScriptedDevice(server)
    server.on('connection', (s) => {
      d.#socket?.destroy()
      d.#socket = s
      d.#decoder = new FrameDecoder()
      d.connections++
      s.on('data', (chunk: Buffer) => { d.received.push(...d.#decoder.push(chunk)) })
      s.on('error', () => {})
    })
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    d.port = (server.address() as { port: number }).port
    return d
  }

  get url (): string { return `tcp://127.0.0.1:${this.port}` }

  async connected (n = 1): Promise<void> {
    await waitFor(() => this.connections >= n && this.#socket !== null, `gateway connection ${n}`)
  }

  send (...frames: DeviceFrame[]): void {
    this.raw(Buffer.concat(frames.map((f) => encodeFrame(f))))
  }

  raw (bytes: Buffer | string): void {
    if (this.#socket === null) throw new Error('no gateway connected')
    this.#socket.write(bytes)
  }

  hello (serial: string, boot: number, oldest: FramePos | null, model = 'thermostat'): void {
    this.send({ type: 'HELLO', model, serial, fw: '1.0.0', boot, oldest, fields: {} })
  }

  state (boot: number, seq: number, fields: Record<string, string>): DeviceFrame {
    return { type: 'STATE', boot, seq, code: null, fields }
  }

  /** Waits for an ACK of exactly (boot, seq). */
  async acked (boot: number, seq: number): Promise<void> {
    await waitFor(() => this.received.some((f) => f.type === 'ACK' && f.boot === boot && f.seq === seq), `ACK ${boot}:${seq}`)
  }

  /** How many SYNC frames arrived. */
  syncs (): number {
    return this.received.filter((f) => f.type === 'SYNC').length
  }

  /** Drops the gateway's connection (the line goes away). */
  unplug (): void {
    this.#socket?.destroy()
    this.#socket = null
  }

  async close (): Promise<void> {
    this.#socket?.destroy()
    await new Promise<void>((resolve) => { this.#server.close(() => { resolve() }) })
  }
}
