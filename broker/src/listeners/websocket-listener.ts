/**
 * MQTT over WebSocket for a broker ([CONN-WS-1..5]): an HTTP (or HTTPS, for wss://) server whose
 * upgrade requests on `/mqtt` offering the `mqtt` subprotocol become WebSocket connections, each
 * handed to `broker.handle` as a byte stream (websocket-duplex.ts), so that the broker's limits,
 * back-pressure and authentication are the same as on TCP. Other requests get HTTP 404, or go to
 * an optional `httpHandler` (a page for the browser demo, say).
 */
import { randomBytes } from 'node:crypto'
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { createServer as createHttpsServer } from 'node:https'
import type { AddressInfo, Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import { WebSocketServer, type ServerOptions, type WebSocket } from 'ws'
import { ConfigError, checkInt, silentLogger, withDefaults, type Logger } from '@herald/protocol'
import { addressKey } from '../auth/login-throttle.js'
import type { Broker } from '../broker.js'
import type { TcpListener } from './tcp-listener.js'
import { checkTlsCertificates, type TlsCertificates } from './tls-listener.js'
import { WebSocketDuplex } from './websocket-duplex.js'

/** The one path MQTT over WebSocket is served on ([CONN-WS-1]). */
export const WEBSOCKET_PATH = '/mqtt'
/** The WebSocket subprotocol of MQTT 3.1.1 ([CONN-WS-2]). */
export const WEBSOCKET_SUBPROTOCOL = 'mqtt'
/** Bytes of an MQTT fixed header at most (type byte and a 4-byte remaining length). */
const FIXED_HEADER_MAX = 5

/**
 * Serves a plain HTTP request (not a WebSocket upgrade); returns false to leave it to the
 * listener, which answers 404 (426 on `/mqtt`).
 */
export type HttpHandler = (req: IncomingMessage, res: ServerResponse) => boolean

export interface WebSocketListenerOptions {
  readonly port: number
  /** Default 127.0.0.1. */
  readonly host?: string
  /** Serve wss:// with these certificates (replaceable with setCertificates); default ws://. */
  readonly certificates?: TlsCertificates | undefined
  /** With `certificates`: require a client certificate signed by `certificates.ca` ([CONN-TLS-2]). Default false. */
  readonly clientAuth?: boolean
  /**
   * The broker's largest MQTT packet (`maxPacketBytes`): a WebSocket message may hold one such
   * packet with its fixed header, no more. Default 18 MiB, as the broker's.
   */
  readonly maxPacketBytes?: number
  /**
   * A connection not upgraded to WebSocket this long after it was accepted (the TLS handshake and
   * the HTTP request included) is closed, in ms. Default 10,000.
   */
  readonly handshakeTimeoutMs?: number
  /** Most connections not yet upgraded at once; one beyond is closed at once. Default 1,000. */
  readonly maxHandshakes?: number
  /**
   * Most connections not yet upgraded from one source address (IPv6: one /64), so that one address
   * cannot hold every place of `maxHandshakes`. Default 100 (the broker's maxPendingConnectionsPerAddress).
   */
  readonly maxHandshakesPerAddress?: number
  /** How long a closing WebSocket waits for the peer's close frame before it is cut, in ms. Default 2,000. */
  readonly closeTimeoutMs?: number
  /** Plain HTTP requests; default: none (404). */
  readonly httpHandler?: HttpHandler | undefined
  readonly logger?: Logger
}

/** Defaults of the numeric and boolean WebSocketListenerOptions. */
export const WEBSOCKET_LISTENER_DEFAULTS = Object.freeze({
  clientAuth: false,
  maxPacketBytes: 18 * 1024 * 1024,
  handshakeTimeoutMs: 10_000,
  maxHandshakes: 1000,
  maxHandshakesPerAddress: 100,
  closeTimeoutMs: 2000
})

/** Why connections were refused before they became WebSocket connections. */
export interface WebSocketRefusals {
  /** A request on another path than /mqtt (HTTP 404), or a plain request on /mqtt (426). */
  path: number
  /** An upgrade that does not offer the `mqtt` subprotocol (HTTP 400). */
  subprotocol: number
  /** Not HTTP, or an upgrade ws refuses (no key, wrong version, ...). */
  badRequest: number
  /** Not upgraded within handshakeTimeoutMs. */
  timeout: number
  /** Over maxHandshakes, or maxHandshakesPerAddress. */
  busy: number
  /** The TLS handshake failed (wss://). */
  tls: number
}

/** A listening WebSocket server feeding connections to a broker. */
export interface WebSocketListener extends TcpListener {
  /** `ws://host:port/mqtt`, or `wss://...` with certificates. */
  readonly url: string
  /** Whether it serves wss://. */
  readonly secure: boolean
  /** Connections not yet upgraded now. */
  readonly handshaking: number
  /** Connections refused before the upgrade, by reason. */
  readonly refused: Readonly<WebSocketRefusals>
  /** As TlsListener.setCertificates ([CONN-TLS-4]); a ConfigError without TLS. */
  setCertificates (certificates: TlsCertificates): void
}

/** `host:port` as in a URL (an IPv6 address in brackets). */
function hostPort (a: AddressInfo): string {
  return `${a.address.includes(':') ? `[${a.address}]` : a.address}:${a.port}`
}

/** Answers an HTTP request on a socket not taken over by node:http (an upgrade) and closes it. */
function refuseUpgrade (socket: Duplex, status: number, reason: string, message: string): void {
  socket.once('finish', () => { socket.destroy() })
  socket.end(`HTTP/1.1 ${status} ${reason}\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: ${Buffer.byteLength(message)}\r\n\r\n${message}`)
}

/** Listens on `port` (0 for any free port) for MQTT over WebSocket and hands each connection to `broker.handle`. */
export async function listenWebSocket (broker: Pick<Broker, 'handle'>, options: WebSocketListenerOptions): Promise<WebSocketListener> {
  const { port, host, certificates, httpHandler, logger: givenLogger, ...rest } = options
  const opts = withDefaults('listenWebSocket', WEBSOCKET_LISTENER_DEFAULTS, rest)
  checkInt('listenWebSocket', 'maxPacketBytes', opts.maxPacketBytes, 1024, 256 * 1024 * 1024)
  checkInt('listenWebSocket', 'handshakeTimeoutMs', opts.handshakeTimeoutMs, 100, 600_000)
  checkInt('listenWebSocket', 'maxHandshakes', opts.maxHandshakes, 1, 100_000)
  checkInt('listenWebSocket', 'maxHandshakesPerAddress', opts.maxHandshakesPerAddress, 1, 100_000)
  checkInt('listenWebSocket', 'closeTimeoutMs', opts.closeTimeoutMs, 100, 600_000)
  if (httpHandler !== undefined && typeof httpHandler !== 'function') throw new ConfigError('listenWebSocket: option "httpHandler" must be a function')
  if (opts.clientAuth && certificates === undefined) throw new ConfigError('listenWebSocket: option "clientAuth" needs "certificates" (client certificates are a TLS feature)')
  const logger = givenLogger ?? silentLogger
  const context = certificates !== undefined ? checkTlsCertificates(certificates, opts.clientAuth) : null

  const refused: WebSocketRefusals = { path: 0, subprotocol: 0, badRequest: 0, timeout: 0, busy: 0, tls: 0 }
  const sockets = new Set<Socket>()
  // connections accepted and not upgraded, by peer address and port (a TLS socket and the TCP
  // socket under it share them); each closed when its time is up
  const pending = new Map<string, { socket: Socket, timer: NodeJS.Timeout, address: string }>()
  const pendingPerAddress = new Map<string, number>()
  const peer = (s: Socket): string => `${s.remoteAddress ?? ''}:${s.remotePort ?? ''}`
  const forget = (key: string): void => {
    const p = pending.get(key)
    if (p === undefined) return
    clearTimeout(p.timer)
    pending.delete(key)
    const n = (pendingPerAddress.get(p.address) ?? 1) - 1
    if (n <= 0) pendingPerAddress.delete(p.address)
    else pendingPerAddress.set(p.address, n)
  }

  const server: Server = context !== null
    ? createHttpsServer({
      ...context,
      // [CONN-TLS-2] the same transport requirement as the TLS listener
      requestCert: opts.clientAuth,
      rejectUnauthorized: opts.clientAuth,
      handshakeTimeout: opts.handshakeTimeoutMs,
      minVersion: 'TLSv1.2'
    })
    : createHttpServer()
  // node:http's own bounds for plain requests (the handshake timer covers upgrades)
  server.headersTimeout = opts.handshakeTimeoutMs
  server.requestTimeout = opts.handshakeTimeoutMs
  const wss = new WebSocketServer({
    noServer: true,
    // [CONN-WS-4] one message holds one largest packet at most; ws closes the connection (1009) on a larger one
    maxPayload: opts.maxPacketBytes + FIXED_HEADER_MAX,
    perMessageDeflate: false,
    clientTracking: false,
    // [CONN-WS-2] the upgrade handler has checked that `mqtt` is offered
    handleProtocols: () => WEBSOCKET_SUBPROTOCOL,
    closeTimeout: opts.closeTimeoutMs
  } as ServerOptions & { closeTimeout: number })

  server.on('connection', (raw: Socket) => {
    const address = addressKey(raw.remoteAddress)
    if (pending.size >= opts.maxHandshakes || (pendingPerAddress.get(address) ?? 0) >= opts.maxHandshakesPerAddress) {
      refused.busy++
      raw.destroy()
      return
    }
    const key = peer(raw)
    const timer = setTimeout(() => {
      refused.timeout++
      forget(key)
      raw.destroy()
    }, opts.handshakeTimeoutMs)
    timer.unref()
    pending.set(key, { socket: raw, timer, address })
    pendingPerAddress.set(address, (pendingPerAddress.get(address) ?? 0) + 1)
    sockets.add(raw)
    raw.once('close', () => {
      sockets.delete(raw)
      if (pending.get(key)?.socket === raw) forget(key)
    })
  })
  if (context !== null) {
    server.on('tlsClientError', (err: Error & { code?: string }, socket: Socket) => {
      refused.tls++
      logger.debug({ err: err.message, code: err.code, remote: socket.remoteAddress }, 'TLS handshake failed (WebSocket listener)')
      socket.destroy()
    })
  }
  server.on('clientError', (err: Error & { code?: string }, socket: Duplex) => {
    // not HTTP, headers too large, a timeout of node:http: answered 400 if still possible, closed
    refused.badRequest++
    logger.debug({ err: err.message, code: err.code }, 'bad HTTP request (WebSocket listener)')
    if (socket.writable && err.code !== 'ECONNRESET') refuseUpgrade(socket, 400, 'Bad Request', 'not an HTTP request')
    else socket.destroy()
  })
  server.on('request', (req: IncomingMessage, res: ServerResponse) => {
    try {
      if (httpHandler?.(req, res) === true) return
    } catch (err) {
      // a failing page handler costs its request, not the broker
      logger.error({ err: (err as Error).message, url: req.url }, 'the WebSocket listener\'s httpHandler threw')
      if (!res.headersSent) res.writeHead(500, { 'Content-Type': 'text/plain', Connection: 'close' })
      res.end()
      return
    }
    const onPath = pathOf(req) === WEBSOCKET_PATH
    refused.path++
    const body = onPath ? 'MQTT over WebSocket: upgrade to WebSocket with subprotocol mqtt\n' : 'not found: MQTT over WebSocket is on /mqtt\n'
    res.writeHead(onPath ? 426 : 404, { 'Content-Type': 'text/plain', 'Content-Length': Buffer.byteLength(body), Connection: 'close', ...(onPath ? { Upgrade: 'websocket' } : {}) })
    res.end(body)
  })
  server.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => {
    // [CONN-WS-1] /mqtt only (a query string is ignored)
    if (pathOf(req) !== WEBSOCKET_PATH) {
      refused.path++
      refuseUpgrade(socket, 404, 'Not Found', 'not found: MQTT over WebSocket is on /mqtt\n')
      return
    }
    // [CONN-WS-2] the client offers `mqtt`; ws refuses a malformed list itself
    const offered = (req.headers['sec-websocket-protocol'] ?? '').split(',').map((p) => p.trim())
    if (!offered.includes(WEBSOCKET_SUBPROTOCOL)) {
      refused.subprotocol++
      refuseUpgrade(socket, 400, 'Bad Request', 'MQTT over WebSocket needs the subprotocol mqtt (Sec-WebSocket-Protocol: mqtt)\n')
      return
    }
    wss.handleUpgrade(req, socket, head, (ws: WebSocket) => {
      forget(peer(socket))
      broker.handle(new WebSocketDuplex(ws, { remoteAddress: socket.remoteAddress, remotePort: socket.remotePort }))
    })
  })
  // an upgrade request ws refuses: not GET, no or a malformed Sec-WebSocket-Key, a version other than 13, ...
  wss.on('wsClientError', (err: Error, socket: Duplex) => {
    refused.badRequest++
    logger.debug({ err: err.message }, 'bad WebSocket upgrade request')
    refuseUpgrade(socket, 400, 'Bad Request', `${err.message}\n`)
  })

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, host ?? '127.0.0.1', () => { server.off('error', reject); resolve() })
  })
  const address = server.address() as AddressInfo
  return {
    address,
    url: `${context !== null ? 'wss' : 'ws'}://${hostPort(address)}${WEBSOCKET_PATH}`,
    secure: context !== null,
    get handshaking () { return pending.size },
    get refused () { return { ...refused } },
    setCertificates (c: TlsCertificates) {
      if (context === null) throw new ConfigError('this WebSocket listener does not serve TLS: no certificate to replace')
      const s = server as unknown as { setSecureContext (o: object): void, setTicketKeys (k: Buffer): void }
      s.setSecureContext(checkTlsCertificates(c, opts.clientAuth))
      // [CONN-TLS-4] as the TLS listener: no resumption of a session made with the old certificate
      s.setTicketKeys(randomBytes(48))
    },
    close: () => new Promise<void>((resolve) => {
      for (const p of pending.values()) clearTimeout(p.timer)
      pending.clear()
      pendingPerAddress.clear()
      server.close(() => { resolve() })
      for (const s of sockets) s.destroy()
    })
  }
}

/** The path of a request, without its query string. */
function pathOf (req: IncomingMessage): string {
  const target = req.url ?? ''
  const q = target.indexOf('?')
  return q === -1 ? target : target.slice(0, q)
}
