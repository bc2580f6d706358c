/**
 * The small HTTP server of `/metrics`, `/healthz` and `/readyz` that the broker and the gateway run
 * on `--metrics-port` ([OPS-METRICS-1]). It knows no metrics library: it serves what `metrics()`
 * renders. Bounded: GET only (405 otherwise), these three paths only (404 otherwise), small
 * headers, a request timeout and a connection limit. It carries no secrets, so it may listen off
 * loopback without TLS; the default host is 127.0.0.1. The broker's dashboard ([OPS-DASH-1]) adds
 * its routes through `handler`, and serves HTTPS (`tls`) off loopback ([OPS-DASH-3]).
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import { createServer as createHttpsServer } from 'node:https'
import type { AddressInfo, Socket } from 'node:net'
import { ConfigError, ErrorCode, checkInt, silentLogger, withDefaults, type Logger } from '@herald/protocol'

export interface MetricsServerOptions {
  /** TCP port; 0 picks a free one. */
  readonly port: number
  /** Default 127.0.0.1. */
  readonly host?: string | undefined
  /** The `/metrics` body and its content type (Prometheus text format). */
  readonly metrics: () => Promise<{ readonly contentType: string, readonly body: string }>
  /** Null when ready, else a one-line reason: `/readyz` answers 503 with it. */
  readonly ready: () => string | null
  /** Most connections open at once; more are closed at once. Default 16. */
  readonly maxConnections?: number | undefined
  /** Largest request head, in bytes. Default 8,192. */
  readonly maxHeaderBytes?: number | undefined
  /** A request not received in full after this long is answered 408 and closed, in ms. Default 5,000. */
  readonly requestTimeoutMs?: number | undefined
  readonly logger?: Logger | undefined
  /**
   * Other routes on the same listener (the broker's dashboard, [OPS-DASH-1]): called first, returns
   * true if it answered the request. Default none.
   */
  readonly handler?: ((req: IncomingMessage, res: ServerResponse) => boolean) | undefined
  /** Serve HTTPS with this certificate chain and key (PEM) instead of HTTP. Default: HTTP. */
  readonly tls?: { readonly cert: string | Buffer, readonly key: string | Buffer } | undefined
}

/** The defaults of the metrics server's bounds. */
export const METRICS_SERVER_DEFAULTS = Object.freeze({
  maxConnections: 16,
  maxHeaderBytes: 8192,
  requestTimeoutMs: 5000
})

export interface MetricsServer {
  readonly port: number
  /** `http://host:port`, `https://host:port` with `tls`. */
  readonly url: string
  /** With `tls`: serves new connections with a renewed certificate. */
  setCertificates (tls: { readonly cert: string | Buffer, readonly key: string | Buffer }): void
  close (): Promise<void>
}

function reply (res: ServerResponse, status: number, contentType: string, body: string, extra: Record<string, string> = {}): void {
  res.writeHead(status, { 'content-type': contentType, 'content-length': Buffer.byteLength(body), 'cache-control': 'no-store', ...extra })
  res.end(body)
}

/** Starts the metrics server; a busy port is a ConfigError ADDRESS_IN_USE naming it. */
export async function startMetricsServer (options: MetricsServerOptions): Promise<MetricsServer> {
  const where = 'metrics server'
  if (typeof options?.metrics !== 'function' || typeof options.ready !== 'function') throw new ConfigError(`${where}: options "metrics" and "ready" are required`)
  const limits = withDefaults(where, METRICS_SERVER_DEFAULTS, {
    maxConnections: options.maxConnections,
    maxHeaderBytes: options.maxHeaderBytes,
    requestTimeoutMs: options.requestTimeoutMs
  })
  checkInt(where, 'port', options.port, 0, 65_535)
  checkInt(where, 'maxConnections', limits.maxConnections, 1, 10_000)
  checkInt(where, 'maxHeaderBytes', limits.maxHeaderBytes, 1024, 65_536)
  checkInt(where, 'requestTimeoutMs', limits.requestTimeoutMs, 100, 600_000)
  const host = options.host ?? '127.0.0.1'
  const logger = options.logger ?? silentLogger

  const handle = (req: IncomingMessage, res: ServerResponse): void => {
    if (options.handler?.(req, res) === true) return
    const path = (req.url ?? '/').split('?')[0]
    if (path !== '/metrics' && path !== '/healthz' && path !== '/readyz') return reply(res, 404, 'text/plain; charset=utf-8', 'not found: /metrics, /healthz and /readyz are served here\n')
    if (req.method !== 'GET' && req.method !== 'HEAD') return reply(res, 405, 'text/plain; charset=utf-8', 'method not allowed: GET only\n', { allow: 'GET, HEAD' })
    if (path === '/healthz') return reply(res, 200, 'application/json', '{"status":"ok"}\n')
    if (path === '/readyz') {
      let problem: string | null
      try {
        problem = options.ready()
      } catch (err) {
        problem = `readiness check failed: ${(err as Error).message}`
      }
      return problem === null
        ? reply(res, 200, 'application/json', '{"status":"ready"}\n')
        : reply(res, 503, 'application/json', `${JSON.stringify({ status: 'not ready', reason: problem })}\n`)
    }
    options.metrics().then(({ contentType, body }) => { reply(res, 200, contentType, body) }, (err: unknown) => {
      logger.error({ err }, 'rendering metrics failed')
      reply(res, 500, 'text/plain; charset=utf-8', 'rendering metrics failed\n')
    })
  }

  const httpOptions = { maxHeaderSize: limits.maxHeaderBytes, requestTimeout: limits.requestTimeoutMs, headersTimeout: limits.requestTimeoutMs,
    // how often the timeouts are checked (Node's default, 30 s, would hold a slow request that long)
    connectionsCheckingInterval: Math.max(50, Math.min(1000, Math.floor(limits.requestTimeoutMs / 4))) }
  const tls = options.tls
  const server = tls !== undefined
    ? createHttpsServer({ ...httpOptions, cert: tls.cert, key: tls.key, handshakeTimeout: limits.requestTimeoutMs }, handle)
    : createServer(httpOptions, handle)
  server.maxConnections = limits.maxConnections
  // an idle keep-alive connection holds one of the few slots for at most this long
  server.keepAliveTimeout = Math.min(5000, limits.requestTimeoutMs)
  const sockets = new Set<Socket>()
  server.on('connection', (s: Socket) => {
    sockets.add(s)
    s.once('close', () => { sockets.delete(s) })
  })
  // a bad request gets a status line and the connection closed: 431 for a head over maxHeaderBytes,
  // 408 for one not received within requestTimeoutMs, 400 otherwise
  server.on('clientError', (err: NodeJS.ErrnoException, socket) => {
    const status = err.code === 'HPE_HEADER_OVERFLOW' ? '431 Request Header Fields Too Large' : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? '408 Request Timeout' : '400 Bad Request'
    if (socket.writable) socket.end(`HTTP/1.1 ${status}\r\nconnection: close\r\ncontent-length: 0\r\n\r\n`)
    else socket.destroy()
  })
  await new Promise<void>((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException): void => {
      reject(err.code === 'EADDRINUSE'
        ? new ConfigError(`metrics port ${options.port} on ${host} is in use: choose another with --metrics-port`, { code: ErrorCode.ADDRESS_IN_USE, cause: err })
        : err)
    }
    server.once('error', onError)
    server.listen(options.port, host, () => {
      server.off('error', onError)
      resolve()
    })
  })
  const port = (server.address() as AddressInfo).port
  const urlHost = host.includes(':') ? `[${host}]` : host
  return {
    port,
    url: `${tls !== undefined ? 'https' : 'http'}://${urlHost}:${port}`,
    setCertificates (c): void {
      if (tls !== undefined) (server as ReturnType<typeof createHttpsServer>).setSecureContext({ cert: c.cert, key: c.key })
    },
    async close (): Promise<void> {
      const closed = new Promise<void>((resolve) => { server.close(() => { resolve() }) })
      for (const s of sockets) s.destroy()
      await closed
    }
  }
}
