/**
 * TLS wiring for a broker ([CONN-TLS-1]): like the TCP listener, but every connection is a TLS
 * socket, handed to `broker.handle` once the handshake is done. The certificate can be replaced
 * while it runs (`setCertificates`): new connections get the new one, open ones keep theirs.
 */
import { randomBytes } from 'node:crypto'
import type { AddressInfo, Socket } from 'node:net'
import { createSecureContext, createServer, type SecureContextOptions, type TLSSocket } from 'node:tls'
import { ConfigError, checkInt, silentLogger, withDefaults, type Logger } from '@herald/protocol'
import { checkCaCertificates } from '@herald/node-runtime'
import type { Broker } from '../broker.js'
import type { TcpListener } from './tcp-listener.js'

/** The PEM contents the listener serves with. */
export interface TlsCertificates {
  /** The broker's certificate chain (PEM): its certificate, then any intermediates. */
  readonly cert: string | Buffer
  /** Its private key (PEM, unencrypted). */
  readonly key: string | Buffer
  /** CA certificate(s) (PEM) a client certificate must be signed by; required with `clientAuth`. */
  readonly ca?: string | Buffer | undefined
}

export interface TlsListenerOptions {
  readonly port: number
  /** Default 127.0.0.1. */
  readonly host?: string
  readonly certificates: TlsCertificates
  /**
   * Require a client certificate signed by `certificates.ca` ([CONN-TLS-2]). It is a transport
   * requirement on top of the credentials, which are still checked at CONNECT. Default false.
   */
  readonly clientAuth?: boolean
  /** A connection that has not finished its handshake after this long is closed, in ms. Default 10,000. */
  readonly handshakeTimeoutMs?: number
  /** Most handshakes in progress at once; a connection beyond is closed at once (a handshake flood costs CPU). Default 1,000. */
  readonly maxHandshakes?: number
  readonly logger?: Logger
}

/** Defaults of the numeric and boolean TlsListenerOptions. */
export const TLS_LISTENER_DEFAULTS = Object.freeze({
  clientAuth: false,
  handshakeTimeoutMs: 10_000,
  maxHandshakes: 1000
})

/** A listening TLS server feeding connections to a broker. */
export interface TlsListener extends TcpListener {
  /** Handshakes that failed (wrong CA at the client, no client certificate, plain MQTT on this port, ...) or were refused over `maxHandshakes`. */
  readonly handshakeFailures: number
  /** Handshakes in progress now. */
  readonly handshaking: number
  /**
   * Serves new connections with these certificates (a renewed certificate, without a restart); open
   * connections keep theirs, and TLS sessions made before are not resumed ([CONN-TLS-4]). Throws a
   * ConfigError, and keeps the old ones, if they do not load.
   */
  setCertificates (certificates: TlsCertificates): void
}

/**
 * Checks that the certificates load (PEM parses, the key is the certificate's, a CA is there for
 * client authentication) and returns them as node:tls options; a ConfigError says what is wrong.
 */
export function checkTlsCertificates (c: TlsCertificates, clientAuth: boolean): SecureContextOptions {
  if (clientAuth && c.ca === undefined) throw new ConfigError('TLS: client certificate authentication needs the CA that signs client certificates (tls ca)')
  if (c.ca !== undefined) checkCaCertificates('TLS', Buffer.from(c.ca))
  const options: SecureContextOptions = { cert: c.cert, key: c.key, ...(c.ca !== undefined ? { ca: c.ca } : {}) }
  try {
    // loads and checks now: a wrong file, or a key that is not the certificate's, fails here
    createSecureContext(options)
  } catch (err) {
    throw new ConfigError(`TLS: the certificate, key or CA does not load: ${(err as Error).message}`, { cause: err })
  }
  return options
}

/** Listens on `port` (0 for any free port) with TLS and hands each secure connection to `broker.handle`. */
export async function listenTls (broker: Pick<Broker, 'handle'>, options: TlsListenerOptions): Promise<TlsListener> {
  const { port, host, certificates, logger: givenLogger, ...rest } = options
  const opts = withDefaults('listenTls', TLS_LISTENER_DEFAULTS, rest)
  checkInt('listenTls', 'handshakeTimeoutMs', opts.handshakeTimeoutMs, 100, 600_000)
  checkInt('listenTls', 'maxHandshakes', opts.maxHandshakes, 1, 100_000)
  const logger = givenLogger ?? silentLogger
  const clientAuth = opts.clientAuth
  const context = checkTlsCertificates(certificates, clientAuth)
  const sockets = new Set<Socket>()
  let handshakeFailures = 0
  // sockets still in their handshake are closed by close() too, and at most maxHandshakes of them at
  // once; a raw socket and its TLS socket share the peer's address and port
  const handshaking = new Map<string, Socket>()
  const peer = (s: Socket): string => `${s.remoteAddress ?? ''}:${s.remotePort ?? ''}`
  const server = createServer({
    ...context,
    // [CONN-TLS-2] with clientAuth, no certificate or one the CA did not sign fails the handshake
    requestCert: clientAuth,
    rejectUnauthorized: clientAuth,
    handshakeTimeout: opts.handshakeTimeoutMs,
    minVersion: 'TLSv1.2'
  }, (socket: TLSSocket) => {
    handshaking.delete(peer(socket))
    socket.setNoDelay(true)
    sockets.add(socket)
    socket.once('close', () => sockets.delete(socket))
    broker.handle(socket)
  })
  server.on('connection', (raw: Socket) => {
    if (handshaking.size >= opts.maxHandshakes) {
      // counted by the tlsClientError this causes
      raw.destroy()
      return
    }
    const key = peer(raw)
    handshaking.set(key, raw)
    sockets.add(raw)
    raw.once('close', () => {
      sockets.delete(raw)
      if (handshaking.get(key) === raw) handshaking.delete(key)
    })
  })
  server.on('tlsClientError', (err: Error & { code?: string }, socket) => {
    handshakeFailures++
    logger.debug({ err: err.message, code: err.code, remote: socket.remoteAddress }, 'TLS handshake failed')
    // with a listener, node:tls leaves the socket open (a handshake timeout included): close it here
    socket.destroy()
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, host ?? '127.0.0.1', () => { server.off('error', reject); resolve() })
  })
  return {
    address: server.address() as AddressInfo,
    get handshakeFailures () { return handshakeFailures },
    get handshaking () { return handshaking.size },
    setCertificates (c: TlsCertificates) {
      server.setSecureContext(checkTlsCertificates(c, clientAuth))
      // [CONN-TLS-4] new session ticket keys (and, with the new context, an empty session cache): a
      // session made with the old certificate is not resumed, so a client cannot skip the renewed
      // one (a renewal after a key compromise must not be bypassed by resumption)
      server.setTicketKeys(randomBytes(48))
    },
    close: () => new Promise<void>((resolve) => {
      server.close(() => { resolve() })
      for (const s of sockets) s.destroy()
    })
  }
}
