/**
 * A raw MQTT 3.1.1 connection for adversarial tests: a real TCP socket (bound to `localAddress`, any
 * 127.x.y.z on Linux, to act as a distinct source address) that sends exactly the packets a test
 * gives it and records what comes back. Needs the `mqtt-packet` package (a dev dependency).
 */
import { connect as netConnect, type Socket } from 'node:net'
import mqttPacket, { type IConnectPacket, type Packet } from 'mqtt-packet'

export interface RawConnectOptions {
  readonly port: number
  /** Default 127.0.0.1. */
  readonly host?: string
  /** Source address of the socket. */
  readonly localAddress?: string
  /** The CONNECT to send at once (fields not given: protocol 4, clean, keepalive 30); null sends none. */
  readonly connect: Partial<IConnectPacket> | null
}

/** One raw connection. */
export class RawMqtt {
  readonly socket: Socket
  readonly packets: Packet[] = []
  /** The CONNACK return code, or null if the connection closed before one came. */
  readonly connack: Promise<number | null>
  /** Resolves when the socket has closed. */
  readonly closed: Promise<void>
  private readonly parser = mqttPacket.parser({ protocolVersion: 4 })

  constructor (options: RawConnectOptions) {
    const socket = netConnect({ port: options.port, host: options.host ?? '127.0.0.1', ...(options.localAddress !== undefined ? { localAddress: options.localAddress } : {}) })
    this.socket = socket
    socket.on('error', () => { /* a refused or reset connection shows as closed */ })
    this.closed = new Promise((resolve) => { socket.once('close', () => { resolve() }) })
    this.connack = new Promise((resolve) => {
      this.parser.on('packet', (p: Packet) => {
        this.packets.push(p)
        if (p.cmd === 'connack') resolve(p.returnCode ?? 0)
      })
      void this.closed.then(() => { resolve(null) })
    })
    socket.on('data', (chunk: Buffer) => { this.parser.parse(chunk) })
    if (options.connect !== null) {
      this.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, keepalive: 30, clientId: '', ...options.connect })
    }
  }

  send (packet: Packet): void {
    this.socket.write(mqttPacket.generate(packet))
  }

  destroy (): void {
    this.socket.destroy()
  }
}

/**
 * Connects, sends CONNECT and waits for the answer: the CONNACK return code (or null if the broker
 * closed the connection first) and the ms it took from the start of the TCP connect. Closes the
 * connection unless `keep` is set.
 */
export async function rawLogin (options: RawConnectOptions & { keep?: boolean }): Promise<{ returnCode: number | null, ms: number, conn: RawMqtt }> {
  const t0 = performance.now()
  const conn = new RawMqtt(options)
  const returnCode = await conn.connack
  const ms = performance.now() - t0
  if (options.keep !== true) conn.destroy()
  return { returnCode, ms, conn }
}
