/**
 * A browser's Transport ([CONN-WSC-*] in docs/protocol.md): MQTT 3.1.1 over a WHATWG WebSocket
 * (`ws://`, `wss://`), with its own small packet codec (mqtt-packets.ts): no Node API, no mqtt.js.
 * One dial is one connection; Link above reconnects with backoff. Its timers are a Clock's, so unit
 * tests move time by hand. In Node, give the `ws` package's WebSocket as option `WebSocket`.
 */
import { AuthError, ConfigError, ErrorCode, FRAME_LIMITS, HeraldError, ProtocolError, checkInt, systemClock, withDefaults, type Clock, type DialHandlers, type DialOptions, type TimerHandle, type Transport, type TransportConnection, type Widened } from '@herald/protocol'
import { ConnackCode, DISCONNECT, MqttPacketReader, PINGREQ, PacketType, SUBACK_FAILURE, encodeConnect, encodePublish, encodeSubscribe, packetTypeName, type IncomingPacket } from './mqtt-packets.js'

/**
 * What the transport uses of a WebSocket: the WHATWG interface (a browser's, or the `ws` package's
 * in Node). Handlers take `never` so that both implementations' own event types fit.
 */
export interface WebSocketLike {
  binaryType: string
  readonly bufferedAmount: number
  readonly protocol: string
  send (data: Uint8Array): void
  close (code?: number, reason?: string): void
  onopen: ((event: never) => void) | null
  onmessage: ((event: never) => void) | null
  onclose: ((event: never) => void) | null
  onerror: ((event: never) => void) | null
}

/** A WebSocket class: `new WebSocket(url, protocols)`. */
export type WebSocketConstructor = new (url: string, protocols: string[]) => WebSocketLike

export interface WebSocketTransportOptions {
  /** The WebSocket class. Default `globalThis.WebSocket` (every browser; Node 22+); in Node 20 give the `ws` package's. */
  readonly WebSocket?: WebSocketConstructor | undefined
  /**
   * Largest MQTT packet accepted from the broker, fixed header included, in bytes ([CONN-WSC-4]);
   * a larger one closes the connection before it is buffered. Default 17 MiB + 4 KiB: the largest
   * frame the codec takes (FRAME_LIMITS.maxFrameBytes, one event of the largest payload a site may
   * allow) with its topic.
   */
  readonly maxPacketBytes?: number | undefined
  /**
   * Most bytes waiting in the WebSocket's send buffer (`bufferedAmount`) when a packet is sent
   * ([CONN-WSC-5]); over it the connection is closed (CONNECTION_LOST) instead of buffering without
   * bound. A client sends small requests and acks, so a full buffer means the link is not moving.
   * Default 4 MiB.
   */
  readonly maxBufferedBytes?: number | undefined
  /**
   * How long a PINGREQ waits for the broker to answer (any packet) before the connection is declared
   * dead and closed ([CONN-WSC-2]), in ms. Default 10,000.
   */
  readonly pingTimeoutMs?: number | undefined
  /** Time and timers. Default the system clock. */
  readonly clock?: Clock | undefined
}

/** Defaults of the numeric WebSocketTransportOptions. */
export const WEBSOCKET_TRANSPORT_DEFAULTS = Object.freeze({
  maxPacketBytes: FRAME_LIMITS.maxFrameBytes + 4096,
  maxBufferedBytes: 4 * 1024 * 1024,
  pingTimeoutMs: 10_000
})

/** The path MQTT over WebSocket is served on when a URL names none ([CONN-WS-1]). */
export const WEBSOCKET_DEFAULT_PATH = '/mqtt'
/** The WebSocket subprotocol of MQTT ([CONN-WSC-1]). */
export const MQTT_SUBPROTOCOL = 'mqtt'

/** The packet identifier of the one SUBSCRIBE a connection sends. */
const SUBSCRIBE_ID = 1

/**
 * The URL a WebSocket opens for a broker URL: `ws://` or `wss://` only (a ConfigError otherwise),
 * `/mqtt` when it names no path ([CONN-WS-1]); the rest as given.
 */
export function webSocketUrl (url: string): string {
  let u: URL
  try {
    u = new URL(url)
  } catch (err) {
    throw new ConfigError(`webSocketTransport: "${url}" is not a URL (ws://host:port/mqtt or wss://host:port/mqtt)`, { cause: err })
  }
  if (u.protocol !== 'ws:' && u.protocol !== 'wss:') throw new ConfigError(`webSocketTransport: "${url}" is not a ws:// or wss:// URL (in a browser, the broker is reached over WebSocket: ws://host:port/mqtt)`)
  if (u.pathname === '/' || u.pathname === '') u.pathname = WEBSOCKET_DEFAULT_PATH
  return u.toString()
}

/** MQTT over a WebSocket. Options are checked here: a wrong one is a ConfigError naming it. */
export function webSocketTransport (options: WebSocketTransportOptions = {}): Transport {
  const { WebSocket: givenWebSocket, clock: givenClock, ...rest } = options
  const opts = withDefaults('webSocketTransport', WEBSOCKET_TRANSPORT_DEFAULTS, rest)
  checkInt('webSocketTransport', 'maxPacketBytes', opts.maxPacketBytes, 1024, 256 * 1024 * 1024)
  checkInt('webSocketTransport', 'maxBufferedBytes', opts.maxBufferedBytes, 1024, 1024 * 1024 * 1024)
  checkInt('webSocketTransport', 'pingTimeoutMs', opts.pingTimeoutMs, 10, 600_000)
  const WebSocketClass = givenWebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket
  if (typeof WebSocketClass !== 'function') {
    throw new ConfigError('webSocketTransport: there is no WebSocket here (globalThis.WebSocket is missing): give option "WebSocket" (in Node 20, the ws package\'s WebSocket class)')
  }
  const clock = givenClock ?? systemClock
  return { dial: (dial, handlers) => new WebSocketConnection(WebSocketClass, dial, handlers, opts, clock) }
}

type Phase = 'handshake' | 'connect' | 'subscribe' | 'open' | 'closed'

/** One WebSocket and the MQTT session on it. */
class WebSocketConnection implements TransportConnection {
  private phase: Phase = 'handshake'
  private ws: WebSocketLike | null = null
  private readonly reader: MqttPacketReader
  private connectTimer: TimerHandle | null = null
  private keepaliveTimer: TimerHandle | null = null
  private pingTimer: TimerHandle | null = null
  private lastReceived = 0
  private lastSent = 0
  /** `handlers.close` was called (once). */
  private reported = false
  /** The error of an attempt that failed before it started, reported by defer or by end(). */
  private early: HeraldError | null = null
  private readonly keepaliveMs: number
  private readonly now: () => number

  constructor (
    WebSocketClass: WebSocketConstructor,
    private readonly o: DialOptions,
    private readonly handlers: DialHandlers,
    private readonly opts: Widened<typeof WEBSOCKET_TRANSPORT_DEFAULTS>,
    private readonly clock: Clock
  ) {
    this.reader = new MqttPacketReader(opts.maxPacketBytes)
    this.keepaliveMs = o.keepaliveSec * 1000
    this.now = clock.monotonic !== undefined ? () => (clock.monotonic as () => number)() : () => clock.now()
    let url: string
    let connect: Uint8Array
    try {
      url = webSocketUrl(o.url)
      connect = encodeConnect({ clientId: o.clientId, username: o.username, password: o.password, keepaliveSec: o.keepaliveSec })
    } catch (err) {
      // reported as the close of this attempt, after dial() has returned (never thrown, never re-entrant)
      this.failSoon(err instanceof HeraldError ? err : new ConfigError(String(err)))
      return
    }
    let ws: WebSocketLike
    try {
      // [CONN-WSC-1] subprotocol mqtt, binary messages as ArrayBuffer
      ws = new WebSocketClass(url, [MQTT_SUBPROTOCOL])
      ws.binaryType = 'arraybuffer'
    } catch (err) {
      // a browser throws for a URL it will not open (SyntaxError; SecurityError for ws:// from an https:// page)
      this.failSoon(new HeraldError(ErrorCode.CONNECTION_LOST, `cannot open a WebSocket to ${url}: ${err instanceof Error ? err.message : String(err)}${/^ws:/i.test(url) ? ' (a page served over https:// may only open wss://)' : ''}`, { cause: err }))
      return
    }
    this.ws = ws
    // [CONN-WSC-6] the WebSocket handshake, CONNACK and SUBACK within connectTimeoutMs
    this.connectTimer = clock.setTimer(() => {
      this.connectTimer = null
      this.fail(new HeraldError(ErrorCode.CONNECTION_LOST, this.phase === 'handshake'
        ? `no WebSocket connection to ${url} within ${o.connectTimeoutMs} ms`
        : `the broker did not answer ${this.phase === 'connect' ? 'CONNECT' : 'SUBSCRIBE'} within ${o.connectTimeoutMs} ms (${url})`))
    }, o.connectTimeoutMs)
    ws.onopen = () => {
      if (this.phase !== 'handshake') return
      if (ws.protocol !== MQTT_SUBPROTOCOL) {
        this.fail(new HeraldError(ErrorCode.CONNECTION_LOST, `the WebSocket server at ${url} did not accept the subprotocol mqtt (it chose "${ws.protocol}"): not an MQTT over WebSocket endpoint`))
        return
      }
      this.phase = 'connect'
      this.write(connect)
    }
    ws.onmessage = (event: { data: unknown }) => { this.message(event.data) }
    ws.onerror = () => {
      // a browser says nothing more here; 'close' follows with the code
    }
    ws.onclose = (event: { code?: number, reason?: string }) => {
      if (this.phase === 'closed') return
      const how = `code ${event.code ?? 'unknown'}${event.reason !== undefined && event.reason !== '' ? `: ${event.reason}` : ''}`
      this.fail(new HeraldError(ErrorCode.CONNECTION_LOST, this.phase === 'handshake' || this.phase === 'connect'
        // [CONN-TLS-3] closed with no word: never a silent retry, say what the likely causes are
        ? `the broker closed the WebSocket connection before answering CONNECT, or refused the upgrade (${how}); check that ${url} serves MQTT over WebSocket (herald broker --ws-port) on the path /mqtt, wss:// if it serves TLS`
        : `the WebSocket connection to the broker closed (${how})`))
    }
  }

  send (topic: string, payload: Uint8Array): void {
    if (this.phase !== 'open') return
    let packet: Uint8Array
    try {
      packet = encodePublish(topic, payload)
    } catch (err) {
      this.fail(new HeraldError(ErrorCode.CONNECTION_LOST, `cannot send on ${topic}: ${err instanceof Error ? err.message : String(err)}`, { cause: err }))
      return
    }
    this.write(packet)
  }

  async end (): Promise<void> {
    if (this.phase === 'closed') {
      this.report(this.early)
      return
    }
    if (this.phase === 'open') this.write(DISCONNECT)
    this.finish(null, 1000)
  }

  /** Writes a packet, unless the send buffer is over its bound ([CONN-WSC-5]). */
  private write (packet: Uint8Array): void {
    const ws = this.ws
    if (ws === null || this.phase === 'closed') return
    const waiting = ws.bufferedAmount
    if (waiting > 0 && waiting + packet.byteLength > this.opts.maxBufferedBytes) {
      this.fail(new HeraldError(ErrorCode.CONNECTION_LOST, `${waiting} bytes are waiting to be sent on the WebSocket, over the limit of ${this.opts.maxBufferedBytes} (maxBufferedBytes): the connection is not moving`))
      return
    }
    try {
      ws.send(packet)
    } catch (err) {
      this.fail(new HeraldError(ErrorCode.CONNECTION_LOST, `WebSocket send failed: ${err instanceof Error ? err.message : String(err)}`, { cause: err }))
      return
    }
    this.lastSent = this.now()
  }

  private message (data: unknown): void {
    if (this.phase === 'closed') return
    if (!(data instanceof ArrayBuffer)) {
      // [CONN-WSC-3] MQTT over WebSocket is binary messages only
      this.fail(new HeraldError(ErrorCode.CONNECTION_LOST, typeof data === 'string'
        ? 'the broker sent a text WebSocket message: MQTT over WebSocket is binary messages only'
        : 'a WebSocket message that is not an ArrayBuffer (binaryType must be "arraybuffer")'))
      return
    }
    this.lastReceived = this.now()
    try {
      this.reader.push(new Uint8Array(data), (p) => { this.packet(p) })
    } catch (err) {
      if (!(err instanceof ProtocolError)) throw err
      this.fail(new HeraldError(ErrorCode.CONNECTION_LOST, `the broker sent bytes that are not MQTT: ${err.message}`, { cause: err }))
    }
  }

  private packet (p: IncomingPacket): void {
    if (this.phase === 'closed') return
    switch (p.type) {
      case PacketType.CONNACK:
        if (this.phase !== 'connect') return this.unexpected(p)
        if (p.returnCode !== ConnackCode.ACCEPTED) return this.fail(connackError(p.returnCode))
        this.phase = 'subscribe'
        this.write(encodeSubscribe(SUBSCRIBE_ID, this.o.replyTopic, 0))
        return
      case PacketType.SUBACK:
        if (this.phase !== 'subscribe' || p.packetId !== SUBSCRIBE_ID) return this.unexpected(p)
        if (p.granted.length !== 1) return this.fail(new HeraldError(ErrorCode.CONNECTION_LOST, `the broker answered one subscription with ${p.granted.length} return codes`))
        if (p.granted[0] === SUBACK_FAILURE) return this.fail(new AuthError(ErrorCode.NOT_AUTHORIZED, `the broker refused the subscription to ${this.o.replyTopic}`))
        this.connectTimer?.cancel()
        this.connectTimer = null
        this.phase = 'open'
        this.startKeepalive()
        this.handlers.open()
        return
      case PacketType.PUBLISH:
        // a broker may send PUBLISH for a subscription before its SUBACK (MQTT 3.1.1, 3.8.4); QoS 0 only here
        if (this.phase !== 'open' && this.phase !== 'subscribe') return this.unexpected(p)
        if (p.qos !== 0) return this.fail(new HeraldError(ErrorCode.CONNECTION_LOST, `the broker sent a QoS ${p.qos} PUBLISH on ${p.topic}; this client subscribes at QoS 0 only`))
        this.handlers.frame(p.payload)
        return
      case PacketType.PINGRESP:
        return
      default:
        return this.unexpected(p)
    }
  }

  private unexpected (p: IncomingPacket): void {
    this.fail(new HeraldError(ErrorCode.CONNECTION_LOST, `the broker sent an unexpected MQTT ${packetTypeName(p.type)}${'packetId' in p ? ` (packet id ${p.packetId})` : ''} ${this.phase === 'open' ? 'on an open connection' : `while waiting for ${this.phase === 'connect' ? 'CONNACK' : 'SUBACK'}`}`))
  }

  /**
   * [CONN-WSC-2] Every keepalive interval: if nothing was sent or nothing heard in it, a PINGREQ;
   * no packet from the broker within pingTimeoutMs after it and the connection is dead.
   */
  private startKeepalive (): void {
    if (this.keepaliveMs <= 0) return
    this.lastReceived = this.lastSent = this.now()
    const tick = (): void => {
      this.keepaliveTimer = null
      if (this.phase !== 'open') return
      const now = this.now()
      if (this.pingTimer === null && (now - this.lastSent >= this.keepaliveMs || now - this.lastReceived >= this.keepaliveMs)) {
        const pingAt = now
        this.write(PINGREQ)
        if (this.phase !== 'open') return
        this.pingTimer = this.clock.setTimer(() => {
          this.pingTimer = null
          if (this.phase !== 'open') return
          if (this.lastReceived > pingAt) return
          this.fail(new HeraldError(ErrorCode.CONNECTION_LOST, `no answer from the broker within ${this.opts.pingTimeoutMs} ms of a PINGREQ (keepalive): the network or the broker is gone`))
        }, this.opts.pingTimeoutMs)
      }
      this.keepaliveTimer = this.clock.setTimer(tick, this.keepaliveMs)
    }
    this.keepaliveTimer = this.clock.setTimer(tick, this.keepaliveMs)
  }

  /** Reports `error` as this attempt's close once dial() has returned. */
  private failSoon (error: HeraldError): void {
    this.phase = 'closed'
    this.early = error
    this.clock.defer(() => { this.report(error) })
  }

  private report (error: HeraldError | null): void {
    if (this.reported) return
    this.reported = true
    this.handlers.close(error)
  }

  private fail (error: HeraldError): void {
    this.finish(error)
  }

  /** The attempt or connection is over: the WebSocket closed, timers cancelled, `close` called once. */
  private finish (error: HeraldError | null, code?: number): void {
    if (this.phase === 'closed') return
    this.phase = 'closed'
    this.connectTimer?.cancel()
    this.keepaliveTimer?.cancel()
    this.pingTimer?.cancel()
    this.connectTimer = this.keepaliveTimer = this.pingTimer = null
    const ws = this.ws
    if (ws !== null) {
      ws.onopen = ws.onmessage = ws.onclose = null
      // kept: an error after this point has nowhere else to go (ws in Node throws an unhandled one)
      ws.onerror = () => {}
      try {
        if (code !== undefined) ws.close(code)
        else ws.close()
      } catch {
        // already closed
      }
    }
    this.report(error)
  }
}

/** A CONNACK refusal as a typed error, as Node's transport maps them. */
function connackError (code: number): HeraldError {
  if (code === ConnackCode.BAD_USER_NAME_OR_PASSWORD) return new AuthError(ErrorCode.BAD_CREDENTIALS, 'the broker refused the credentials')
  if (code === ConnackCode.NOT_AUTHORIZED || code === ConnackCode.IDENTIFIER_REJECTED) return new AuthError(ErrorCode.NOT_AUTHORIZED, 'the broker refused this identity')
  const why = code === ConnackCode.UNACCEPTABLE_PROTOCOL_VERSION ? 'unacceptable protocol version' : code === ConnackCode.SERVER_UNAVAILABLE ? 'server unavailable' : 'unknown return code'
  return new HeraldError(ErrorCode.CONNECTION_LOST, `the broker refused the connection: ${why} (CONNACK return code ${code})`)
}
