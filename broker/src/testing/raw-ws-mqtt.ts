/**
 * A raw MQTT 3.1.1 connection over WebSocket for adversarial tests, like RawMqtt over TCP: a real
 * WebSocket (from `localAddress`, any 127.x.y.z on Linux, to act as a distinct source address) that
 * sends exactly the bytes a test gives it, cut into binary messages as the test says, and records
 * what comes back. Needs the `ws` and `mqtt-packet` packages.
 */
import mqttPacket, { type IConnectPacket, type Packet } from 'mqtt-packet'
import { WebSocket } from 'ws'

export interface RawWsConnectOptions {
  /** `ws://host:port/mqtt` or `wss://...`. */
  readonly url: string
  /** Source address of the socket. */
  readonly localAddress?: string
  /** Subprotocols to offer. Default ['mqtt']. */
  readonly protocols?: readonly string[]
  /** CA certificate(s) for wss:// (PEM). */
  readonly ca?: Buffer | string
  /** A client certificate and its key for wss:// (PEM). */
  readonly cert?: Buffer | string
  readonly key?: Buffer | string
  /** The CONNECT to send once open (fields not given: protocol 4, clean, keepalive 30); null sends none. */
  readonly connect: Partial<IConnectPacket> | null
}

/** How a WebSocket connection ended. */
export interface RawWsEnd {
  /** The WebSocket close code (1006: no close frame came). */
  readonly code: number
  /** An error seen first (a refused upgrade says its HTTP status here), or null. */
  readonly error: string | null
}

/** One raw MQTT-over-WebSocket connection. */
export class RawWsMqtt {
  readonly ws: WebSocket
  readonly packets: Packet[] = []
  /** Binary messages received. */
  messages = 0
  /** Text messages received (MQTT over WebSocket has none). */
  textMessages = 0
  /** Called with each packet received, after it is recorded. */
  onPacket: ((p: Packet) => void) | null = null
  /** Resolves when the WebSocket is open; with false if it closed first (the upgrade refused). */
  readonly opened: Promise<boolean>
  /** The CONNACK return code, or null if the connection closed before one came. */
  readonly connack: Promise<number | null>
  /** Resolves when the connection has closed. */
  readonly closed: Promise<RawWsEnd>
  private readonly parser = mqttPacket.parser({ protocolVersion: 4 })
  private error: string | null = null

  constructor (options: RawWsConnectOptions) {
    const ws = new WebSocket(options.url, [...(options.protocols ?? ['mqtt'])], {
      ...(options.localAddress !== undefined ? { localAddress: options.localAddress } : {}),
      ...(options.ca !== undefined ? { ca: options.ca } : {}),
      ...(options.cert !== undefined ? { cert: options.cert } : {}),
      ...(options.key !== undefined ? { key: options.key } : {})
    })
    this.ws = ws
    ws.on('error', (err) => { this.error ??= err.message })
    this.closed = new Promise((resolve) => { ws.once('close', (code) => { resolve({ code, error: this.error }) }) })
    this.opened = new Promise((resolve) => {
      ws.once('open', () => { resolve(true) })
      void this.closed.then(() => { resolve(false) })
    })
    this.connack = new Promise((resolve) => {
      this.parser.on('packet', (p: Packet) => {
        this.packets.push(p)
        if (p.cmd === 'connack') resolve(p.returnCode ?? 0)
        this.onPacket?.(p)
      })
      void this.closed.then(() => { resolve(null) })
    })
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      if (!isBinary) {
        this.textMessages++
        return
      }
      this.messages++
      this.parser.parse(data)
    })
    if (options.connect !== null) {
      const connect = options.connect
      ws.once('open', () => { this.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, keepalive: 30, clientId: '', ...connect }) })
    }
  }

  /** One packet as one binary message. */
  send (packet: Packet): void {
    this.sendBytes(mqttPacket.generate(packet))
  }

  /** Bytes as one binary message. */
  sendBytes (bytes: Uint8Array): void {
    this.ws.send(bytes, { binary: true })
  }

  destroy (): void {
    this.ws.terminate()
  }
}

/** The bytes of an MQTT packet, for a test to cut into messages itself. */
export function mqttBytes (packet: Packet): Buffer {
  return mqttPacket.generate(packet)
}
