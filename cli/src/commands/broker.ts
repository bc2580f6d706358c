/**
 * `herald broker`: runs a broker on a site file, a data directory and a port, and `herald
 * hash-secret`: makes a credential hash for the site file.
 */
import { Command, InvalidArgumentError, Option } from 'commander'
import { pino } from 'pino'
import { ConfigError, ErrorCode, HeraldError, formatDuration, parseDuration, type Site } from '@herald/protocol'
import { HashedSecret, LOG_FORMATS, loadSite, logDestination, type LogFormat } from '@herald/node-runtime'
import { demoPageHandler, demoPageUrl } from '../web/demo-page.js'
import { BROKER_DEFAULTS, isLoopbackHost, startBrokerServer, type BrokerTlsFiles } from '@herald/broker'
import { defaultLogLevel, onShutdown, port } from './options.js'

/** A --dashboard-gateway value, checked as the option is read (a usage error before anything starts). */
function gatewayUrl (v: string, all: string[] = []): string[] {
  let u: URL
  try {
    u = new URL(v)
  } catch {
    throw new InvalidArgumentError(`"${v}" is not a URL (e.g. http://127.0.0.1:9101/metrics)`)
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new InvalidArgumentError(`"${v}" is not an http:// or https:// URL`)
  return [...all, v]
}

/** A --store value ([PG-CLI-1]): a postgres:// URL, checked as the option is read. */
function storeUrl (v: string): string {
  if (!/^postgres(ql)?:\/\/./.test(v)) throw new InvalidArgumentError(`"${v}" is not a postgres:// URL (e.g. postgres://herald@db.example:5432/herald); without --store the events are in SQLite in --data`)
  return v
}

async function readStdin (): Promise<string> {
  const chunks: Buffer[] = []
  for await (const c of process.stdin) chunks.push(c as Buffer)
  return Buffer.concat(chunks).toString('utf8').replace(/\r?\n$/, '')
}

/** The options of `herald broker`, as parsed. */
interface BrokerCommandOptions {
  site: string, data: string, store?: string, port?: number, wsPort?: number, wsDemoPage?: boolean, host: string, logLevel: string, logFormat: LogFormat,
  metricsPort?: number, metricsHost?: string, dashboard?: boolean, dashboardGateway?: string[],
  tlsCert?: string, tlsKey?: string, tlsCa?: string, tlsClientAuth?: boolean, insecure?: boolean,
  maxConnectionsPerAddress?: number, maxPendingConnectionsPerAddress?: number, maxGuestConnectionsPerAddress?: number, maxGuestConnections?: number
}

/** The TLS files of `herald broker`, or undefined without --tls-cert; a flag without the ones it needs is a ConfigError. */
export function brokerTlsFiles (o: Pick<BrokerCommandOptions, 'tlsCert' | 'tlsKey' | 'tlsCa' | 'tlsClientAuth' | 'insecure'>): BrokerTlsFiles | undefined {
  if (o.tlsCert === undefined) {
    if (o.tlsKey !== undefined || o.tlsCa !== undefined || o.tlsClientAuth === true) throw new ConfigError('--tls-key, --tls-ca and --tls-client-auth need --tls-cert (the certificate to serve TLS with)')
    return undefined
  }
  if (o.tlsKey === undefined) throw new ConfigError('--tls-cert needs --tls-key (the private key of the certificate)')
  if (o.insecure === true) throw new ConfigError('--insecure is for plain MQTT; with --tls-cert the listener is not insecure: drop one of them')
  return { certFile: o.tlsCert, keyFile: o.tlsKey, caFile: o.tlsCa, clientAuth: o.tlsClientAuth === true }
}

/** A whole number of at least 0; createBroker checks the range and names the option. */
function wholeNumber (value: string): number {
  const n = Number(value)
  if (!Number.isSafeInteger(n) || n < 0) throw new InvalidArgumentError('a whole number is expected')
  return n
}

/** Back-pressure and guest limits ([CLI-BACKPRESSURE-1], [CLI-GUEST-1]): flag, option, help. */
const BACK_PRESSURE_FLAGS = [
  ['--max-connection-queued-bytes <n>', 'maxConnectionQueuedBytes', 'unsent bytes in a connection\'s socket above which it gets no events until it drains'],
  ['--max-connection-inflight-bytes <n>', 'maxConnectionInflightBytes', 'payload bytes in flight per client connection, across its subscriptions'],
  ['--guest-max-subscriptions <n>', 'guestMaxSubscriptions', 'subscriptions per guest connection'],
  ['--guest-max-window <n>', 'guestMaxWindow', 'largest window of a guest subscription, in events'],
  ['--guest-max-connection-inflight-bytes <n>', 'guestMaxConnectionInflightBytes', 'payload bytes in flight per guest connection'],
  ['--max-concurrent-reads <n>', 'maxConcurrentReads', 'event store reads for delivery under way at once'],
  ['--max-ingest-connection-bytes <n>', 'maxIngestConnectionBytes', 'payload bytes of one plain MQTT connection\'s raises waiting for their commit [PLAIN-INGEST-6]'],
  ['--max-ingest-pending-bytes <n>', 'maxIngestPendingBytes', 'payload bytes of all plain MQTT raises waiting for their commit [PLAIN-INGEST-6]'],
  // the plain-MQTT view [PLAIN-VIEW-7]
  ['--plain-max-subscriptions <n>', 'plainMaxSubscriptions', 'subscriptions per plain MQTT connection'],
  ['--plain-max-queued-bytes <n>', 'plainMaxQueuedBytes', 'unsent bytes of a plain MQTT connection above which its QoS 0 events are dropped'],
  ['--plain-max-inflight <n>', 'plainMaxInflight', 'QoS 1 events in flight (not acknowledged) per plain MQTT connection; more wait'],
  // consumer groups [GROUP-LIMIT-1]
  ['--max-groups-per-user <n>', 'maxGroupsPerUser', 'consumer groups per user [GROUP-LIMIT-1]'],
  ['--max-group-members <n>', 'maxGroupMembers', 'live members per consumer group [GROUP-LIMIT-1]']
] as const
type BackPressureOptions = Partial<Record<typeof BACK_PRESSURE_FLAGS[number][1] | 'slowConnectionTimeoutMs' | 'groupLeaseMs' | 'groupRevokeTimeoutMs', number>> & { slowConnectionTimeout?: number, groupLease?: number, groupRevokeTimeout?: number }

/** A duration with its unit (`30s`, `500ms`), in ms. */
function durationArg (value: string): number {
  try {
    return parseDuration(value, 'the duration')
  } catch {
    throw new InvalidArgumentError('a duration with its unit, e.g. 30s or 500ms')
  }
}

export function brokerCommand (): Command {
  const cmd = new Command('broker')
    .description('run a broker')
    .requiredOption('--site <file>', 'site structure file (YAML or JSON)')
    .requiredOption('--data <dir>', 'data directory for the event store (created if missing)')
    .option('--store <url>', 'keep the events in PostgreSQL at this postgres:// URL instead of SQLite in --data; several brokers may share one (--data is still locked)', storeUrl)
    .option('--port <n>', 'TCP port (0: any free port; default 1883, 8883 with --tls-cert)', port)
    .option('--ws-port <n>', 'also serve MQTT over WebSocket on this port, path /mqtt (wss:// with --tls-cert; 0: any free port)', port)
    .option('--ws-demo-page', 'with --ws-port: also serve the demo page (the site\'s events live in a browser) at / on the WebSocket port')
    .option('--host <address>', 'address to listen on; other than loopback needs TLS or --insecure', '127.0.0.1')
    .option('--tls-cert <file>', 'serve TLS (mqtts://) with this certificate chain (PEM); reloaded on SIGHUP')
    .option('--tls-key <file>', 'the private key of --tls-cert (PEM)')
    .option('--tls-ca <file>', 'CA certificate (PEM) that signs client certificates, with --tls-client-auth')
    .option('--tls-client-auth', 'require a client certificate signed by --tls-ca (credentials are still checked)')
    .option('--insecure', 'allow plain MQTT on a non-loopback --host: passwords cross the network in the clear')
    .option('--log-level <level>', 'trace, debug, info, warn, error', defaultLogLevel)
    .addOption(new Option('--log-format <format>', 'logs as JSON lines, or short text lines; auto: text on a terminal').choices(LOG_FORMATS).default('auto'))
    .option('--metrics-port <n>', 'serve /metrics (Prometheus), /healthz and /readyz over plain HTTP on this port (0: any free port)', port)
    .option('--metrics-host <address>', 'address of the metrics listener (no secrets there, so any address is allowed; with --dashboard other than loopback needs TLS or --insecure)', '127.0.0.1')
    // [OPS-DASH-1] the admin dashboard on the metrics listener
    .option('--dashboard', 'with --metrics-port: serve the admin dashboard at /admin on the metrics listener (users with an admin role log in; HTTPS off loopback with --tls-cert)')
    .option('--dashboard-gateway <url>', 'with --dashboard: show this gateway\'s figures, scraped from its metrics URL (repeatable)', gatewayUrl)
    // [CONN-LIMIT-3]: behind a NAT or a proxy many endpoints share one source address
    .option('--max-connections-per-address <n>', 'most connections from one source address (default 1000)', wholeNumber)
    .option('--max-pending-connections-per-address <n>', 'most connections from one source address not yet logged in (default 100)', wholeNumber)
    .option('--max-guest-connections-per-address <n>', 'most guest connections from one source address (default 10)', wholeNumber)
    .option('--max-guest-connections <n>', 'most guest connections in all (default 1000)', wholeNumber)
  for (const [flag, option, help] of BACK_PRESSURE_FLAGS) cmd.option(flag, `${help} (default ${BROKER_DEFAULTS[option]})`, wholeNumber)
  // [CMD-USAGE-1] a duration with its unit; --slow-connection-timeout-ms <n> is its old spelling, still taken
  cmd.option('--slow-connection-timeout <duration>', `close a connection that stays above its queued-bytes bound this long, e.g. 30s (default ${formatDuration(BROKER_DEFAULTS.slowConnectionTimeoutMs)})`, durationArg)
  cmd.addOption(new Option('--slow-connection-timeout-ms <n>', 'the old spelling of --slow-connection-timeout, in ms').argParser(wholeNumber).hideHelp())
  cmd.option('--group-lease <duration>', `how long the segments of a consumer group member whose connection closed wait for it [GROUP-LEASE-1] (default ${formatDuration(BROKER_DEFAULTS.groupLeaseMs)})`, durationArg)
  cmd.option('--group-revoke-timeout <duration>', `longest wait for a segment's owner to finish what it was sent before the segment moves [GROUP-MOVE-1] (default ${formatDuration(BROKER_DEFAULTS.groupRevokeTimeoutMs)})`, durationArg)
  return cmd
    .action(async (opts: BrokerCommandOptions & BackPressureOptions) => {
      const destination = logDestination(opts.logFormat, process.stdout, 'herald broker')
      const logger = destination === undefined ? pino({ level: opts.logLevel }) : pino({ level: opts.logLevel }, destination)
      const tls = brokerTlsFiles(opts)
      const limits: BackPressureOptions = {}
      for (const [, option] of BACK_PRESSURE_FLAGS) if (opts[option] !== undefined) limits[option] = opts[option]
      const slowMs = opts.slowConnectionTimeout ?? opts.slowConnectionTimeoutMs
      if (slowMs !== undefined) limits.slowConnectionTimeoutMs = slowMs
      if (opts.groupLease !== undefined) limits.groupLeaseMs = opts.groupLease
      if (opts.groupRevokeTimeout !== undefined) limits.groupRevokeTimeoutMs = opts.groupRevokeTimeout
      // [CONN-WSC-7] the demo page lists the site's events (not private ones); it fills in no credentials
      if (opts.wsDemoPage === true && opts.wsPort === undefined) throw new ConfigError('--ws-demo-page needs --ws-port: the page is served on the WebSocket port')
      if (opts.dashboard === true && opts.metricsPort === undefined) throw new ConfigError('--dashboard needs --metrics-port: the dashboard is served on the metrics listener')
      if (opts.dashboardGateway !== undefined && opts.dashboard !== true) throw new ConfigError('--dashboard-gateway needs --dashboard')
      const site = opts.wsDemoPage === true ? await loadSite(opts.site) : opts.site
      // the page's event list is read from the site in force at each request, so it follows a reload
      let running: { broker: { site: Site } } | null = null
      const httpHandler = typeof site === 'string'
        ? undefined
        : demoPageHandler({ config: () => ({ events: [...(running?.broker.site ?? site).events.values()].filter((e) => e.category !== 'private').map((e) => e.name) }) })
      // the path, not the loaded site, so that SIGHUP can read it again ([SITE-RELOAD-1])
      const server = await startBrokerServer({
        site: opts.site, dataDir: opts.data, storeUrl: opts.store, port: opts.port ?? (tls !== undefined ? 8883 : 1883), host: opts.host, tls, insecure: opts.insecure, logger,
        ...(opts.metricsPort !== undefined ? { metrics: { port: opts.metricsPort, host: opts.metricsHost } } : {}),
        ...(opts.dashboard === true ? { dashboard: { gateways: opts.dashboardGateway ?? [] } } : {}),
        ...(opts.wsPort !== undefined ? { webSocket: { port: opts.wsPort, ...(httpHandler !== undefined ? { httpHandler } : {}) } } : {}),
        ...(opts.maxConnectionsPerAddress !== undefined ? { maxConnectionsPerAddress: opts.maxConnectionsPerAddress } : {}),
        ...(opts.maxPendingConnectionsPerAddress !== undefined ? { maxPendingConnectionsPerAddress: opts.maxPendingConnectionsPerAddress } : {}),
        ...(opts.maxGuestConnectionsPerAddress !== undefined ? { maxGuestConnectionsPerAddress: opts.maxGuestConnectionsPerAddress } : {}),
        ...(opts.maxGuestConnections !== undefined ? { maxGuestConnections: opts.maxGuestConnections } : {}),
        ...limits
      }).catch((err: unknown) => {
        // a busy port or a held data directory: one line and exit code 2 (cli.ts), no stack
        if (err instanceof HeraldError && err.code === ErrorCode.ADDRESS_IN_USE) throw new ConfigError(err.message.startsWith('metrics ') ? err.message : `${err.message}: choose another with ${err.message.startsWith('WebSocket ') ? '--ws-port' : '--port'}`, { code: err.code, cause: err })
        throw err
      })
      running = server
      logger.info({ url: server.url, ...(server.webSocketUrl !== null ? { webSocketUrl: server.webSocketUrl } : {}), site: opts.site, data: opts.data, ...(opts.store !== undefined ? { store: opts.store.replace(/:[^:@/]*@/, ':***@') } : {}), stored: server.broker.store.count(), clientAuth: opts.tlsClientAuth === true }, 'broker listening')
      if (!server.tls && opts.insecure === true && !isLoopbackHost(opts.host)) logger.warn({ host: opts.host }, 'plain MQTT on a non-loopback address (--insecure): credentials cross the network in the clear')
      // `kill -HUP <pid>`: a renewed certificate and a changed site file are taken up without a restart;
      // handled before the listening line, so that a SIGHUP sent once it is printed never kills the broker
      process.on('SIGHUP', () => {
        if (server.tls) {
          server.reloadTls().then(
            () => { process.stdout.write('herald broker reloaded its TLS certificate\n') },
            (err: unknown) => { logger.error({ err: (err as Error).message }, 'TLS certificate not reloaded; serving the previous one') }
          )
        }
        // [SITE-RELOAD-1] one log line either way (startBrokerServer logs it): what changed, or why
        // nothing did; a refused reload leaves the broker on the previous site
        server.reloadSite().catch(() => undefined)
      })
      // a line for scripts and tests to wait for, also when logs are JSON: the MQTT URL first, then the WebSocket one
      process.stdout.write(`herald broker listening on ${server.url}\n`)
      if (server.webSocketUrl !== null) process.stdout.write(`herald broker listening on ${server.webSocketUrl}\n`)
      if (server.webSocketUrl !== null && httpHandler !== undefined) process.stdout.write(`herald broker demo page on ${demoPageUrl(server.webSocketUrl)}\n`)
      if (server.metricsUrl !== null) process.stdout.write(`herald broker metrics on ${server.metricsUrl}/metrics\n`)
      if (server.dashboard !== null && server.metricsUrl !== null) process.stdout.write(`herald broker dashboard on ${server.metricsUrl}/admin\n`)
      onShutdown(() => server.close(), (msg, err) => { logger.info({ err }, msg) })
    })
}

export function hashSecretCommand (): Command {
  return new Command('hash-secret')
    .description('print the scrypt hash of a secret read from standard input, for secretHash/passwordHash in a site file')
    .action(async () => {
      const secret = await readStdin()
      if (secret.length < 8) throw new InvalidArgumentError('a secret has at least 8 characters')
      process.stdout.write(`${(await HashedSecret.hash(secret)).encode()}\n`)
    })
}
