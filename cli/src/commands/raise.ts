/**
 * `herald raise <event> [json]`: raises one event from a shell, like `mosquitto_pub`, but through a
 * service endpoint with its guarantee: it exits 0 only once the broker has stored the event
 * ([SVC-ACKED-1]), 1 if it could not within `--timeout` (with `--persistence <file>` the event stays
 * in that file and the next `herald raise` on it sends it first), 2 on a usage error. The secret is
 * read from $HERALD_SECRET, never from the command line, where `ps` shows it.
 */
import { Command, InvalidArgumentError, Option } from 'commander'
import { ConfigError, ErrorCode, HeraldError, parseDuration, type Category, type JsonValue } from '@herald/protocol'
import { isSecureUrl, readTlsClientFiles } from '@herald/node-runtime'
import { MemoryServicePersistence, ServiceEndpoint, createSqliteServicePersistence } from '@herald/service-endpoint'
import { brokerUrl, moreBrokerUrls } from './tail.js'

export const SECRET_ENV = 'HERALD_SECRET'

interface RaiseOptions {
  service: string
  url: string
  moreUrl?: string[]
  category: Category
  lifetime?: number
  to?: string
  null?: boolean
  persistence?: string
  timeout: number
  ca?: string
  cert?: string
  key?: string
  /** [CLI-KEY-3] --event-key: the replacing key of a keyed event. */
  eventKey?: string
}

function duration (value: string): number {
  try {
    return parseDuration(value, 'the duration')
  } catch {
    throw new InvalidArgumentError('a duration with its unit, e.g. 30s or 7d')
  }
}

function json (value: string): JsonValue {
  try {
    return JSON.parse(value) as JsonValue
  } catch {
    throw new InvalidArgumentError('the payload is JSON text, e.g. \'{"t":21.5}\' or \'"on"\' (quote it for the shell)')
  }
}

/** Raises, waits for the broker's acknowledgement, and says what happened; resolves the exit code. */
export async function runRaise (event: string, payload: JsonValue | undefined, o: RaiseOptions, env: NodeJS.ProcessEnv = process.env): Promise<number> {
  const secret = env[SECRET_ENV]
  if (secret === undefined || secret === '') throw new ConfigError(`the service's secret goes in $${SECRET_ENV}`)
  if (o.null === true && (o.category !== 'replacing' || payload !== undefined)) throw new ConfigError('--null raises a null instance of a replacing event: give --category replacing and no payload')
  if (o.null !== true && payload === undefined) throw new ConfigError('give the payload (JSON), or --null for a null instance of a replacing event')
  if ((o.to !== undefined) !== (o.category === 'private')) throw new ConfigError('a private event needs --to <user>/<client>, and only a private event takes --to')
  if (o.eventKey !== undefined && o.category !== 'replacing') throw new ConfigError('--event-key names the replacing key of a keyed event: give --category replacing')
  const tls = o.ca === undefined && o.cert === undefined && o.key === undefined
    ? undefined
    : isSecureUrl(o.url) ? readTlsClientFiles({ ca: o.ca, cert: o.cert, key: o.key }, 'herald raise') : undefined
  if (tls === undefined && (o.ca !== undefined || o.cert !== undefined || o.key !== undefined)) throw new ConfigError(`--ca, --cert and --key are for TLS: use an mqtts:// URL, not ${o.url}`)
  const persistence = o.persistence === undefined
    ? new MemoryServicePersistence()
    : await createSqliteServicePersistence({ path: o.persistence })
  const endpoint = new ServiceEndpoint({
    url: o.url,
    ...(o.moreUrl !== undefined ? { moreUrls: o.moreUrl } : {}),
    ...(tls !== undefined ? { tls } : {}),
    serviceId: o.service,
    secret,
    events: [{ name: event, category: o.category, ...(o.lifetime !== undefined ? { lifetimeMs: o.lifetime } : {}), ...(o.eventKey !== undefined ? { key: { kind: 'raise' as const } } : {}) }],
    persistence
  })
  let lastError: HeraldError | null = null
  endpoint.on('error', (err) => { lastError = err })
  // an event the broker refused (unknown event, not this service's, too large) is acknowledged as
  // handled, never stored: say so, do not call it stored
  let refused: HeraldError | null = null
  endpoint.on('rejected', (info) => { refused = info.error })
  endpoint.on('expired', () => { refused = new HeraldError(ErrorCode.EXPIRED, 'its lifetime ran out before it was uploaded') })
  try {
    const keyed = o.eventKey !== undefined ? { key: o.eventKey } : undefined
    const r = o.null === true
      ? await endpoint.raiseNull(event, keyed)
      : o.to !== undefined ? await endpoint.raisePrivate(event, o.to, payload as JsonValue) : await endpoint.raise(event, payload as JsonValue, keyed)
    endpoint.start()
    let timer: NodeJS.Timeout | undefined
    const timedOut = new Promise<false>((resolve) => { timer = setTimeout(() => { resolve(false) }, o.timeout) })
    const stored = await Promise.race([endpoint.whenAcked(r.seq).then(() => true), timedOut])
    clearTimeout(timer)
    const refusal = refused as HeraldError | null
    if (refusal !== null) {
      process.stderr.write(`herald raise: the broker refused ${event} #${r.seq}: ${refusal.message} [${refusal.code}]\n`)
      return 1
    }
    if (stored) {
      process.stdout.write(`raised ${event} #${r.seq} (${r.id}): stored by the broker\n`)
      return 0
    }
    const why = lastError ?? endpoint.status.lastError
    const kept = o.persistence === undefined ? 'not kept: it is lost with this process (give --persistence <file> to keep it)' : `kept in ${o.persistence}, sent first by the next herald raise on it`
    process.stderr.write(`herald raise: ${event} #${r.seq} was not stored by the broker within ${o.timeout} ms${why !== null ? ` (${why.message})` : ''}; ${kept}\n`)
    return 1
  } finally {
    await endpoint.close()
  }
}

/** The `herald raise` subcommand. */
export function raiseCommand (): Command {
  return new Command('raise')
    .description('raise one event as a service and wait until the broker has stored it (secret in $HERALD_SECRET)')
    .argument('<event>', 'the event name')
    .argument('[payload]', 'the payload, JSON text (none with --null)', json)
    .requiredOption('--service <id>', 'the service that raises it (its secret in $HERALD_SECRET)')
    .option('--url <url>', 'broker URL (mqtts://host:8883 for TLS)', brokerUrl, 'mqtt://127.0.0.1:1883')
    .option('--more-url <url>', 'another broker of the same cluster, tried in turn when one is gone (repeatable) [CLUSTER-URL-1]', moreBrokerUrls)
    .addOption(new Option('--category <category>', 'the event\'s category, as in the site').choices(['queueing', 'replacing', 'private']).default('queueing'))
    .option('--lifetime <duration>', 'queueing and private: not sent once this old, e.g. 1h', duration)
    .option('--to <client>', 'private: the recipient, <user>/<client>')
    .option('--null', 'replacing: raise the null instance (the condition no longer holds)')
    .option('--event-key <key>', 'keyed replacing: the replacing key (required for an event keyed by the raise, and with --null; --key is the TLS key file)')
    .option('--persistence <file>', 'keep the event in this SQLite file until the broker has it (default: memory)')
    .option('--timeout <duration>', 'how long to wait for the broker', duration, 30_000)
    .option('--ca <file>', 'with mqtts://: CA certificate (PEM) the broker\'s certificate must be signed by')
    .option('--cert <file>', 'with mqtts://: client certificate (PEM)')
    .option('--key <file>', 'with mqtts://: the private key of --cert (PEM)')
    .action(async (event: string, payload: JsonValue | undefined, opts: RaiseOptions) => {
      process.exitCode = await runRaise(event, payload, opts)
    })
}
