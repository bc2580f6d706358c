/** A broker on a site file, a data directory and a TCP or TLS port (and a WebSocket one): what `herald broker` runs. */
import { readFile } from 'node:fs/promises'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { isIP } from 'node:net'
import { join } from 'node:path'
import type { Duplex } from 'node:stream'
import { ConfigError, ErrorCode, silentLogger, type EventDefinition, type Logger, type Site } from '@herald/protocol'
import { METRICS_SERVER_DEFAULTS, loadSite, startMetricsServer, type MetricsServer, type MetricsServerOptions } from '@herald/node-runtime'
import { createBroker, type Broker, type BrokerOptions } from './broker.js'
import { describeSiteChange, type SiteChangeReport } from './site/site-change.js'
import { lockDataDir, type DataDirLock } from './data-dir.js'
import type { Registry } from 'prom-client'
import { brokerMetricsRegistry } from './metrics.js'
import { createSqliteEventStore } from './event-store/sqlite-event-store.js'
import { createPostgresEventStore } from './event-store/postgres-event-store.js'
import { listenTcp, type TcpListener } from './listeners/tcp-listener.js'
import { checkTlsCertificates, listenTls, type TlsCertificates, type TlsListener } from './listeners/tls-listener.js'
import { listenWebSocket, type HttpHandler, type WebSocketListener } from './listeners/websocket-listener.js'
import { DASHBOARD_DEFAULTS, Dashboard, type DashboardOptions } from './dashboard/dashboard.js'

/** The files a TLS listener serves with ([CONN-TLS-1]). */
export interface BrokerTlsFiles {
  /** The broker's certificate chain, PEM. */
  readonly certFile: string
  /** Its private key, PEM (unencrypted). */
  readonly keyFile: string
  /** The CA that signs client certificates, PEM; required with `clientAuth`. */
  readonly caFile?: string | undefined
  /** Require a client certificate signed by `caFile` ([CONN-TLS-2]), besides the credentials. Default false. */
  readonly clientAuth?: boolean | undefined
  /** A handshake not done after this long is closed, ms. Default 10,000. */
  readonly handshakeTimeoutMs?: number | undefined
  /** Most handshakes in progress at once. Default 1,000. */
  readonly maxHandshakes?: number | undefined
}

/** A WebSocket listener beside the TCP or TLS one ([CONN-WS-1..5]): wss:// with the TLS files, else ws://. */
export interface BrokerWebSocketOptions {
  /** Its port, on the same host; 0 picks a free one. */
  readonly port: number
  /** A connection not upgraded this long after it was accepted is closed, in ms. Default 10,000. */
  readonly handshakeTimeoutMs?: number | undefined
  /** Most connections not yet upgraded at once. Default 1,000. */
  readonly maxHandshakes?: number | undefined
  /** Most connections not yet upgraded from one source address. Default 100. */
  readonly maxHandshakesPerAddress?: number | undefined
  /** Plain HTTP requests (a page, say); default 404 for all. */
  readonly httpHandler?: HttpHandler | undefined
}

/** The HTTP listener of /metrics, /healthz and /readyz ([OPS-METRICS-1]); plain HTTP, no secrets. */
export type BrokerMetricsOptions = Omit<MetricsServerOptions, 'metrics' | 'ready' | 'logger'>

/** The dashboard on the metrics listener ([OPS-DASH-1..8]): needs `metrics`. */
export type BrokerDashboardOptions = Omit<DashboardOptions, 'broker' | 'secure' | 'logger'>

export interface BrokerServerOptions extends Omit<BrokerOptions, 'site' | 'store'> {
  /** A site file path, or an already loaded site. */
  readonly site: string | Site
  /**
   * Directory of the SQLite event store (`events.db`), created 0700 if missing, its files 0600, and
   * locked by this broker until close() ([BROKER-DIR-1], [BROKER-LOCK-1]).
   */
  readonly dataDir: string
  /**
   * [PG-CLI-1] A postgres:// URL: the events are stored in that PostgreSQL database, which several
   * brokers may share ([CLUSTER-*]), instead of SQLite in `dataDir` (which is then still locked, and
   * holds no events). Default: none (SQLite).
   */
  readonly storeUrl?: string | undefined
  /** TCP port; 0 picks a free one. */
  readonly port: number
  /** Default 127.0.0.1. */
  readonly host?: string
  /** Serve TLS (`mqtts://`) with these files instead of plain MQTT. */
  readonly tls?: BrokerTlsFiles | undefined
  /** Also serve MQTT over WebSocket (wss:// with `tls`, with the same certificate). Default: not. */
  readonly webSocket?: BrokerWebSocketOptions | undefined
  /**
   * Allow plain MQTT on an address that is not loopback ([CONN-TLS-3]): credentials then cross the
   * network in the clear. Default false: such a listener refuses to start.
   */
  readonly insecure?: boolean | undefined
  /** Also serve /metrics, /healthz and /readyz over HTTP on this port (host default 127.0.0.1). Default: not. */
  readonly metrics?: BrokerMetricsOptions | undefined
  /**
   * Serve the admin dashboard under /admin on the metrics listener ([OPS-DASH-1]). Off loopback the
   * listener then serves HTTPS with `tls`, or plain HTTP only with `insecure` ([OPS-DASH-3]). Default: not.
   */
  readonly dashboard?: BrokerDashboardOptions | undefined
  readonly logger?: Logger
}

export interface BrokerServer {
  readonly broker: Broker
  /** The TCP or TLS listener. */
  readonly listener: TcpListener
  /** `mqtt://host:port`, or `mqtts://host:port` with TLS. */
  readonly url: string
  /** Whether the listener serves TLS. */
  readonly tls: boolean
  /** The listener, when it serves TLS (its handshake failures, its certificates). */
  readonly tlsListener: TlsListener | null
  /** The WebSocket listener, if any (its address, `url` and refusals). */
  readonly webSocketListener: WebSocketListener | null
  /** `ws://host:port/mqtt` or `wss://host:port/mqtt`, or null without a WebSocket listener. */
  readonly webSocketUrl: string | null
  /** The metrics listener's `http://host:port` (`https://` for a dashboard off loopback), or null without one. */
  readonly metricsUrl: string | null
  /** The dashboard, if any (`metricsUrl` + `/admin`). */
  readonly dashboard: Dashboard | null
  /**
   * Reads the TLS files again and serves new connections with them (a renewed certificate, no
   * restart), on the WebSocket listener too; open connections keep theirs. Rejects with a ConfigError, keeping the old
   * certificate, if the files do not load; a ConfigError too without TLS.
   */
  reloadTls (): Promise<void>
  /**
   * Reads the site file again and applies it ([SITE-RELOAD-1]): resolves to what changed (JSON, also
   * logged as one line), or rejects with a ConfigError (SITE_INVALID) naming the problem (the file
   * does not load or validate, or a change stored data cannot follow), changing nothing. Reloads
   * run one at a time, in call order. A broker started with a Site object, not a path, has no file
   * to read: a ConfigError (use `broker.reloadSite(site)`).
   */
  reloadSite (): Promise<SiteChangeReport>
  close (): Promise<void>
}

/**
 * True if `host` is a loopback address: 127.0.0.0/8, ::1 (also IPv4-mapped) or `localhost`. Any
 * other name counts as not loopback, since what it resolves to can change.
 */
export function isLoopbackHost (host: string): boolean {
  const h = host.replace(/^\[(.*)\]$/, '$1').toLowerCase()
  if (h === 'localhost') return true
  if (isIP(h) === 4) return h.startsWith('127.')
  if (isIP(h) === 6) {
    // the URL parser writes an IPv6 address in its shortest form: ::1, and ::ffff:7f00:1 for ::ffff:127.0.0.1
    const n = new URL(`http://[${h}]/`).hostname.slice(1, -1)
    return n === '::1' || /^::ffff:7f[0-9a-f]{2}:[0-9a-f]{1,4}$/.test(n)
  }
  return false
}

/**
 * [CONN-TLS-3] Throws a ConfigError saying why, if a plain listener would be on a non-loopback
 * address without `insecure`.
 */
export function checkListenerSecurity (host: string, tls: boolean, insecure: boolean): void {
  if (tls || insecure || isLoopbackHost(host)) return
  throw new ConfigError(
    `refusing to listen on ${host} without TLS: service secrets and user passwords would cross the network in the clear, ` +
    'readable by anyone on the path. Give a certificate and key (--tls-cert, --tls-key) to serve mqtts://, ' +
    'or --insecure if this network is trusted (e.g. a TLS-terminating proxy in front); plain MQTT is allowed on loopback (127.0.0.1, ::1) only')
}

async function readCertificates (files: BrokerTlsFiles): Promise<TlsCertificates> {
  const read = async (label: string, path: string): Promise<Buffer> => {
    try {
      return await readFile(path)
    } catch (err) {
      throw new ConfigError(`TLS: cannot read the ${label} file ${path}: ${(err as Error).message}`, { cause: err })
    }
  }
  if (files.clientAuth === true && files.caFile === undefined) throw new ConfigError('TLS: client certificate authentication needs the CA that signs client certificates (--tls-ca)')
  if (files.caFile !== undefined && files.clientAuth !== true) throw new ConfigError('TLS: the CA file is the CA of client certificates and is only used with client certificate authentication (--tls-client-auth)')
  // read at once, but a failure is reported in this order (certificate, key, CA), not in the order the
  // reads happen to fail: with two files missing, the message always names the certificate
  const [cert, key, ca] = await Promise.allSettled([
    read('certificate', files.certFile),
    read('key', files.keyFile),
    files.caFile !== undefined ? read('CA', files.caFile) : Promise.resolve(undefined)
  ])
  for (const r of [cert, key, ca]) if (r.status === 'rejected') throw r.reason
  const value = <T>(r: PromiseSettledResult<T>): T => (r as PromiseFulfilledResult<T>).value
  return { cert: value(cert), key: value(key), ca: value(ca) }
}

/** The name of the event store's file in the data directory. */
export const EVENTS_FILE = 'events.db'

/**
 * Loads the site, checks the listener's security and TLS files, takes the data directory, listens on
 * TCP or TLS (and WebSocket, if asked), opens the SQLite store and creates the broker. In that order, so that an insecure
 * listener, a wrong site or TLS file, a data directory another broker holds (`DATA_DIR_LOCKED`) or a
 * busy port (`ADDRESS_IN_USE`) fail before the store is opened; each step that fails undoes the ones
 * before. Connections that arrive while the store opens are closed (the endpoints reconnect).
 */
export async function startBrokerServer (options: BrokerServerOptions): Promise<BrokerServer> {
  const { site: siteOpt, dataDir, storeUrl, port, host: hostOpt, tls, insecure, webSocket, metrics, dashboard: dashboardOpt, ...rest } = options
  const host = hostOpt ?? '127.0.0.1'
  const logger = options.logger ?? silentLogger
  // everything that can be refused is refused before the data directory and the store are touched;
  // [CONN-TLS-3] holds for the WebSocket listener too: same host, and TLS for both or neither
  checkListenerSecurity(host, tls !== undefined, insecure === true)
  const site = typeof siteOpt === 'string' ? await loadSite(siteOpt) : siteOpt
  const siteHolder = { site }
  const certificates = tls !== undefined ? await readCertificates(tls) : null
  if (certificates !== null) checkTlsCertificates(certificates, tls?.clientAuth === true)
  // [OPS-DASH-3] admin passwords cross the metrics listener: off loopback it serves HTTPS (with the
  // broker's certificate), or plain HTTP only with insecure
  const metricsHttps = dashboardOpt !== undefined && metrics !== undefined && !isLoopbackHost(metrics.host ?? '127.0.0.1') && certificates !== null
  if (dashboardOpt !== undefined) {
    if (metrics === undefined) throw new ConfigError('the dashboard is served on the metrics listener: give --metrics-port with --dashboard')
    // a feed holds a connection of the listener: leave some for scrapes and logins
    const feeds = dashboardOpt.maxFeeds ?? DASHBOARD_DEFAULTS.maxFeeds
    const connections = metrics.maxConnections ?? METRICS_SERVER_DEFAULTS.maxConnections
    if (feeds >= connections) throw new ConfigError(`dashboard: maxFeeds (${feeds}) must be below the metrics listener's maxConnections (${connections})`)
    if (!metricsHttps && insecure !== true && !isLoopbackHost(metrics.host ?? '127.0.0.1')) {
      throw new ConfigError(`refusing to serve the dashboard on ${metrics.host ?? ''} over plain HTTP: admin passwords would cross the network in the clear. ` +
        'Give --tls-cert and --tls-key (the metrics listener then serves HTTPS), keep --metrics-host on loopback, or --insecure if this network is trusted')
    }
  }
  let dashboard: Dashboard | null = null
  const lock: DataDirLock = await lockDataDir(dataDir, [EVENTS_FILE], logger)
  let listener: TcpListener | null = null
  let tlsListener: TlsListener | null = null
  let wsListener: WebSocketListener | null = null
  let metricsServer: MetricsServer | null = null
  let closing = false
  try {
    let ready: Broker | null = null
    let registry: Registry | null = null
    const gate = { handle: (stream: Duplex) => { if (ready === null) stream.destroy(); else ready.handle(stream) } }
    let listening = `port ${port}`
    try {
      if (tls !== undefined && certificates !== null) {
        tlsListener = await listenTls(gate, {
          port,
          host,
          certificates,
          logger,
          ...(tls.clientAuth !== undefined ? { clientAuth: tls.clientAuth } : {}),
          ...(tls.handshakeTimeoutMs !== undefined ? { handshakeTimeoutMs: tls.handshakeTimeoutMs } : {}),
          ...(tls.maxHandshakes !== undefined ? { maxHandshakes: tls.maxHandshakes } : {})
        })
        listener = tlsListener
      } else {
        listener = await listenTcp(gate, { port, host })
      }
      if (webSocket !== undefined) {
        listening = `WebSocket port ${webSocket.port}`
        wsListener = await listenWebSocket(gate, {
          port: webSocket.port,
          host,
          logger,
          // [CONN-WS-4] a message holds one packet of the broker's largest size
          ...(rest.maxPacketBytes !== undefined ? { maxPacketBytes: rest.maxPacketBytes } : {}),
          ...(certificates !== null ? { certificates, clientAuth: tls?.clientAuth === true } : {}),
          ...(webSocket.handshakeTimeoutMs !== undefined ? { handshakeTimeoutMs: webSocket.handshakeTimeoutMs } : {}),
          ...(webSocket.maxHandshakes !== undefined ? { maxHandshakes: webSocket.maxHandshakes } : {}),
          ...(webSocket.maxHandshakesPerAddress !== undefined ? { maxHandshakesPerAddress: webSocket.maxHandshakesPerAddress } : {}),
          ...(webSocket.httpHandler !== undefined ? { httpHandler: webSocket.httpHandler } : {})
        })
      }
      if (metrics !== undefined) {
        listening = `metrics port ${metrics.port}`
        // with the other listeners, so a busy port fails before the store opens; until the broker is
        // there it is not ready, and /metrics answers 500
        metricsServer = await startMetricsServer({
          ...metrics,
          logger,
          ...(dashboardOpt !== undefined ? { handler: (req: IncomingMessage, res: ServerResponse) => dashboard?.handle(req, res) ?? false } : {}),
          ...(metricsHttps && certificates !== null ? { tls: { cert: certificates.cert, key: certificates.key } } : {}),
          metrics: async () => {
            if (registry === null) throw new Error('the broker is starting')
            return { contentType: registry.contentType, body: await registry.metrics() }
          },
          // [OPS-METRICS-2] ready: listeners up (not closing) and the store open, its last commit good
          ready: () => ready === null ? 'the broker is starting' : closing ? 'the broker is closing' : (ready.store.problem?.() ?? null)
        })
      }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EADDRINUSE') {
        throw new ConfigError(`${listening} on ${host} is in use (another broker running?)`, { code: ErrorCode.ADDRESS_IN_USE, cause: err })
      }
      if ((err as NodeJS.ErrnoException).code === 'EACCES') {
        throw new ConfigError(`${listening} on ${host}: not allowed to listen there (ports below 1024 need privileges)`, { cause: err })
      }
      throw err
    }
    // [SITE-RELOAD-6] the limits of the site in force, reloads included
    const limitsOf = (name: string): EventDefinition | undefined => (ready ?? siteHolder).site.events.get(name)
    const store = storeUrl !== undefined
      ? await createPostgresEventStore({ url: storeUrl, limitsOf, logger })
      : await createSqliteEventStore({ path: join(dataDir, EVENTS_FILE), limitsOf, logger })
    let broker: Broker
    try {
      broker = await createBroker({ ...rest, site, store })
    } catch (err) {
      await store.close()
      throw err
    }
    let reloads: Promise<unknown> = Promise.resolve()
    // [SITE-RELOAD-1] one at a time, in order: SIGHUP and the dashboard's button alike
    const reloadSite = (): Promise<SiteChangeReport> => {
      const run = async (): Promise<SiteChangeReport> => {
        if (typeof siteOpt !== 'string') throw new ConfigError('this broker was started with a site object, not a site file: there is no file to reload (call broker.reloadSite(site))')
        if (closing) throw new ConfigError('the broker is closing')
        let report: SiteChangeReport
        try {
          // [SITE-RELOAD-1] validated first: a file that does not load changes nothing
          report = broker.reloadSite(await loadSite(siteOpt))
        } catch (err) {
          logger.error({ site: siteOpt, err: (err as Error).message }, 'site not reloaded; the broker goes on with the previous site')
          throw err
        }
        logger.info({ site: siteOpt, change: report }, describeSiteChange(report))
        return report
      }
      const next = reloads.then(run, run)
      reloads = next.catch(() => undefined)
      return next
    }
    if (dashboardOpt !== undefined) {
      try {
        // [OPS-DASH-8] the dashboard's reload button runs the same reload as SIGHUP
        dashboard = await Dashboard.create({ reloadSite, ...dashboardOpt, broker, secure: metricsHttps, logger })
      } catch (err) {
        await broker.close()
        throw err
      }
    }
    ready = broker
    registry = metrics !== undefined ? brokerMetricsRegistry(broker) : null
    const db = dashboard
    const ms = metricsServer
    const l = listener
    const tl = tlsListener
    const wl = wsListener
    const { address, port: actual } = l.address
    const shown = address.includes(':') ? `[${address}]` : address
    return {
      broker,
      listener: l,
      url: `${tl !== null ? 'mqtts' : 'mqtt'}://${shown}:${actual}`,
      tls: tl !== null,
      tlsListener: tl,
      webSocketListener: wl,
      webSocketUrl: wl?.url ?? null,
      metricsUrl: ms?.url ?? null,
      dashboard: db,
      async reloadTls () {
        if (tls === undefined || tl === null) throw new ConfigError('this broker does not serve TLS: nothing to reload')
        const c = await readCertificates(tls)
        // checked by the first; the second takes what the first took
        tl.setCertificates(c)
        wl?.setCertificates(c)
        if (metricsHttps) ms?.setCertificates(c)
        logger.info({ cert: tls.certFile }, 'TLS certificate reloaded')
      },
      reloadSite,
      async close () {
        closing = true
        try {
          await l.close()
          await wl?.close()
          db?.close()
          await broker.close()
          await ms?.close()
        } finally {
          lock.release()
        }
      }
    }
  } catch (err) {
    await listener?.close()
    await wsListener?.close()
    await metricsServer?.close()
    lock.release()
    throw err
  }
}
