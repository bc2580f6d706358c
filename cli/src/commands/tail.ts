/**
 * `herald tail`: a console client for operators. Subscribes to one or more events with a
 * ClientEndpoint and prints each event as it arrives (a human line, or JSON with --json), with a live
 * summary line on a terminal. Refused credentials, refused access and unknown events end it with exit
 * code 2; an unreachable broker does not (the endpoint keeps retrying, the summary shows it, and a
 * warning names the URL and the reason once per run of identical connection errors).
 */
import { readFileSync } from 'node:fs'
import { hostname } from 'node:os'
import { Command, InvalidArgumentError, Option } from 'commander'
import { pino } from 'pino'
import { ClientEndpoint, SqlitePositionStore, type GapInfo, type HeraldEvent, type StartOption, type Subscription } from '@herald/client-endpoint'
import { AuthError, ConfigError, ErrorCode, HeraldError, isValidName, keyProblem, KEY_LIMITS, parseDuration, toHeraldError } from '@herald/protocol'
import { humanLogLine as humanLine, isSecureUrl, readTlsClientFiles, type TlsClientOptions } from '@herald/node-runtime'
import {
  EventStats, LiveConsole, colorEnabled, formatClockTime, renderEventJson, renderEventLine, renderSummary, style, summaryModeFor, terminalSafeJson
} from '../console/index.js'
import { defaultLogLevel } from './options.js'

/** The options of `herald tail`, as parsed. */
export interface TailOptions {
  readonly url: string
  /** --more-url: other brokers of the cluster ([CLUSTER-URL-1]). */
  readonly moreUrl?: string[]
  /** CA certificate file (PEM) the broker's certificate must chain to, for an mqtts:// URL. */
  readonly ca?: string
  /** Client certificate and key files (PEM), for a broker that requires one. */
  readonly cert?: string
  readonly key?: string
  readonly user?: string
  readonly guest?: boolean
  readonly passwordEnv?: string
  readonly passwordFile?: string
  readonly client?: string
  readonly services?: readonly string[]
  /** [CLI-KEY-3] --event-key, repeatable: only instances of keyed events with these keys. */
  readonly eventKey?: readonly string[]
  readonly start: StartOption
  readonly positions?: string
  readonly json?: boolean
  /** False with --no-summary. */
  readonly summary: boolean
  /** Seconds between summary lines when stderr is not a terminal. */
  /** ms between summary lines (--summary-every; --summary-interval in seconds is its old spelling). */
  readonly summaryEvery: number
  readonly summaryInterval?: number
  readonly count?: number
  readonly logLevel: string
}

/**
 * The line `herald tail` prints for a gap notice ([CLI-GAP-3]): events removed at the broker before
 * this tail was sent them. With --json, one object `{"gap": {...}}` (an event's object has an `id`).
 */
export function renderGap (g: GapInfo, options: { json: boolean, color: boolean, at: number }): string {
  const { key: _key, ...fields } = g
  if (options.json) return terminalSafeJson({ gap: fields })
  const s = style(options.color)
  const services = g.services.length === 0 ? '' : ` from ${g.services.join(',')}`
  const why = [g.pushedOut > 0 ? `${g.pushedOut} pushed out` : '', g.expired > 0 ? `${g.expired} expired` : ''].filter((x) => x !== '').join(', ')
  return `${s.dim(formatClockTime(options.at))} ${s.yellow('[gap]')} ${s.bold(g.event)}${services}: ${g.exact ? '' : 'at least '}${g.missed} event${g.missed === 1 ? '' : 's'} missed (${why}) after #${g.after}, up to #${g.upTo}`
}

/** --start: all, new, latest, a position (digits), or an ISO 8601 time [CLI-START-2], [CLI-START-3]. */
export function startArg (v: string): StartOption {
  if (v === 'all' || v === 'new' || v === 'latest') return v
  if (/^\d+$/.test(v)) {
    const position = Number(v)
    if (Number.isSafeInteger(position)) return { position }
  }
  // a time needs at least a date with its dashes, so that a typo in a position is not taken for a year
  if (/^\d{4}-\d{2}-\d{2}/.test(v)) {
    const time = Date.parse(v)
    if (!Number.isNaN(time)) return { time }
  }
  throw new InvalidArgumentError('give all, new, latest, a position (e.g. 1234) or an ISO time (e.g. 2026-12-02T14:00:00Z)')
}

/** How --start reads back in the tail's first line. */
function startText (s: StartOption): string {
  if (typeof s === 'string') return s
  if ('position' in s) return `at #${s.position}`
  return `at ${new Date(s.time).toISOString()}`
}

/** The environment variable a password is read from when neither --password-env nor --password-file is given. */
export const DEFAULT_PASSWORD_ENV = 'HERALD_PASSWORD'

/**
 * Who connects: a user with a password (from --password-file, the variable --password-env names, or
 * HERALD_PASSWORD), or a guest. Passwords are never taken on the command line, where `ps` shows them.
 * Throws a ConfigError saying what is missing or contradictory.
 */
export function resolveCredentials (
  o: Pick<TailOptions, 'user' | 'guest' | 'passwordEnv' | 'passwordFile'>,
  env: Readonly<Record<string, string | undefined>>,
  readFile: (path: string) => string
): { user?: string, password?: string } {
  if (o.guest === true) {
    if (o.user !== undefined) throw new ConfigError('give either --user or --guest, not both')
    if (o.passwordEnv !== undefined || o.passwordFile !== undefined) throw new ConfigError('a guest has no password: drop --password-env / --password-file')
    return {}
  }
  if (o.user === undefined) throw new ConfigError('give --user <name> (password in $HERALD_PASSWORD, --password-env or --password-file), or --guest')
  if (o.passwordEnv !== undefined && o.passwordFile !== undefined) throw new ConfigError('give either --password-env or --password-file, not both')
  if (o.passwordFile !== undefined) {
    let text: string
    try {
      text = readFile(o.passwordFile)
    } catch (err) {
      throw new ConfigError(`cannot read the password file ${o.passwordFile}: ${(err as Error).message}`, { cause: err })
    }
    const password = text.replace(/\r?\n$/, '')
    if (password === '') throw new ConfigError(`the password file ${o.passwordFile} is empty`)
    return { user: o.user, password }
  }
  const variable = o.passwordEnv ?? DEFAULT_PASSWORD_ENV
  const password = env[variable]
  if (password === undefined || password === '') {
    throw new ConfigError(o.passwordEnv === undefined
      ? `no password for user "${o.user}": set ${DEFAULT_PASSWORD_ENV}, or pass --password-env <VAR> or --password-file <file>`
      : `no password for user "${o.user}": the environment variable ${variable} is not set`)
  }
  return { user: o.user, password }
}

/**
 * The client name when --client is not given: `tail-<host>-<pid>`, unique per process, so that two
 * operators tailing as the same user never take over each other's connection ([CLI-TAKEOVER-1]).
 * Positions are kept per event, not per client name, so a restart with --positions resumes anyway.
 */
export function defaultClientName (host: string, pid: number): string {
  const h = host.replace(/[^A-Za-z0-9_.-]+/g, '-').replace(/^[^A-Za-z0-9]+/, '').slice(0, 40)
  return h === '' ? `tail-${pid}` : `tail-${h}-${pid}`
}

/** A refusal as a message naming who was refused and what: for the user, and for exit code 2. */
export function describeRefusal (err: HeraldError, ctx: { event: string, url: string, user: string | null, atConnect: boolean }): HeraldError {
  const who = ctx.user === null ? 'a guest' : `user "${ctx.user}"`
  let message: string
  if (err.code === ErrorCode.BAD_CREDENTIALS) {
    message = `the broker at ${ctx.url} refused the credentials of ${who}: unknown user or wrong password`
  } else if (ctx.atConnect) {
    message = `the broker at ${ctx.url} refused ${who}: ${err.message}${ctx.user === null ? ' (does the site admit guests?)' : ''}`
  } else {
    message = `cannot tail "${ctx.event}" as ${who}: ${err.message}`
  }
  return new HeraldError(err.code, message, { cause: err })
}

/** A pino JSON line as a short human line: `herald tail: warn: <msg> {fields}`. */
export function humanLogLine (json: string): string {
  return humanLine(json, 'herald tail')
}

/** Thrown from the handler for an event that arrives after tail decided to stop: it stays uncommitted. */
class Stopping extends Error {}

function positiveInt (what: string, max: number) {
  return (value: string): number => {
    const n = Number(value)
    if (!Number.isInteger(n) || n < 1 || n > max) throw new InvalidArgumentError(`${what} is a whole number from 1 to ${max.toLocaleString('en-US')}`)
    return n
  }
}

/** A summary interval with its unit (`5s`, `500ms`), from 100 ms to 1 hour. */
function summaryEvery (value: string): number {
  let ms: number
  try {
    ms = parseDuration(value, 'the interval')
  } catch {
    throw new InvalidArgumentError('a duration with its unit, e.g. 5s or 500ms')
  }
  if (ms < 100 || ms > 3_600_000) throw new InvalidArgumentError('an interval is from 100ms to 1h')
  return ms
}

/** [CMD-USAGE-1] the old spelling, seconds without a unit: still taken, not shown. */
function seconds (value: string): number {
  const n = Number(value)
  if (!Number.isFinite(n) || n < 0.1 || n > 3600) throw new InvalidArgumentError('an interval is from 0.1 to 3600 seconds')
  return n
}

/** A broker URL: `mqtt://host:port` (or another scheme MQTT.js connects with). */
/** A repeatable --more-url value, checked like --url. */
export function moreBrokerUrls (value: string, all: string[] = []): string[] {
  return [...all, brokerUrl(value)]
}

export function brokerUrl (value: string): string {
  let url: URL
  try {
    url = new URL(value)
  } catch {
    throw new InvalidArgumentError(`${JSON.stringify(value)} is not a URL; a broker URL looks like mqtt://host:1883`)
  }
  if (!['mqtt:', 'mqtts:', 'tcp:', 'tls:', 'ws:', 'wss:'].includes(url.protocol) || url.hostname === '') {
    throw new InvalidArgumentError(`${JSON.stringify(value)} is not a broker URL; one looks like mqtt://host:1883`)
  }
  return value
}

function nameList (value: string): string[] {
  const names = value.split(',').map((s) => s.trim()).filter((s) => s !== '')
  if (names.length === 0) throw new InvalidArgumentError('a comma-separated list of service ids')
  for (const n of names) if (!isValidName(n)) throw new InvalidArgumentError(`${JSON.stringify(n)} is not a valid service id`)
  return names
}

/**
 * The TLS options from --ca, --cert and --key (files read here), or undefined without them. They go
 * with an mqtts:// URL only: with a plain one they would be ignored, so that is a ConfigError.
 */
export function tailTls (o: Pick<TailOptions, 'url' | 'ca' | 'cert' | 'key'>): TlsClientOptions | undefined {
  if (o.ca === undefined && o.cert === undefined && o.key === undefined) return undefined
  if (!isSecureUrl(o.url)) throw new ConfigError(`--ca, --cert and --key are for TLS: use an mqtts:// URL, not ${o.url}`)
  if ((o.cert === undefined) !== (o.key === undefined)) throw new ConfigError('--cert and --key go together: a client certificate needs its key')
  return readTlsClientFiles({ ca: o.ca, cert: o.cert, key: o.key }, 'herald tail')
}

/** The `herald tail` subcommand. */
export function tailCommand (): Command {
  return new Command('tail')
    .description('print events as they arrive, with a live summary (a console client for operators)')
    .argument('<event...>', 'event names to watch (one subscription each)')
    .option('--url <url>', 'broker URL (mqtts://host:8883 for TLS)', brokerUrl, 'mqtt://127.0.0.1:1883')
    .option('--more-url <url>', 'another broker of the same cluster, tried in turn when one is gone (repeatable) [CLUSTER-URL-1]', moreBrokerUrls)
    .option('--ca <file>', 'with mqtts://: CA certificate (PEM) the broker\'s certificate must be signed by (default: the system\'s root CAs)')
    .option('--cert <file>', 'with mqtts://: client certificate (PEM), for a broker that requires one')
    .option('--key <file>', 'with mqtts://: the private key of --cert (PEM)')
    .option('--user <name>', 'user name (password from $HERALD_PASSWORD, --password-env or --password-file)')
    .option('--password-env <var>', 'read the password from this environment variable')
    .option('--password-file <file>', 'read the password from this file (one trailing newline is dropped)')
    .option('--guest', 'connect as a guest, without credentials')
    .option('--client <name>', 'client name (default: tail-<host>-<pid>); it decides which private events you get, and an application\'s name would take over its connection')
    .option('--services <ids>', 'only events from these services (comma-separated)', nameList)
    .option('--event-key <key>', 'keyed replacing events: only instances with this replacing key (repeatable; --key is the TLS key file)', eventKeyArg)
    .option('--start <from>', 'without a stored position: all (what the broker holds), new (only new events), latest (the newest event per service, then new ones), a position (from that event on) or an ISO time (the first event the broker received at or after it, e.g. 2026-12-02T14:00:00Z)', startArg, 'all' as StartOption)
    .option('--positions <file>', 'keep positions in this SQLite file, so a restart resumes where it stopped (default: memory)')
    .option('--json', 'print one JSON object per event, with all its metadata')
    .option('--no-summary', 'no summary line')
    .option('--summary-every <duration>', 'summary line interval when stderr is not a terminal, e.g. 5s or 500ms', summaryEvery, 5000)
    .addOption(new Option('--summary-interval <seconds>', 'the old spelling of --summary-every, in seconds').argParser(seconds).hideHelp())
    .option('--count <n>', 'exit (code 0) after this many events', positiveInt('--count', 1_000_000_000))
    .option('--log-level <level>', 'trace, debug, info, warn, error', defaultLogLevel)
    .action(async (events: string[], opts: TailOptions) => {
      const code = await runTail(events, opts)
      // every line written reaches the reader before the process ends
      await new Promise<void>((resolve) => { process.stdout.write('', () => { resolve() }) })
      process.exit(code)
    })
}

/**
 * Runs a tail until --count is reached or SIGINT/SIGTERM (resolves with exit code 0), or throws the
 * refusal (exit code 2 from the CLI) after closing the endpoint.
 */
async function runTail (eventArgs: readonly string[], opts: TailOptions): Promise<number> {
  const events = [...new Set(eventArgs)]
  for (const e of events) if (!isValidName(e)) throw new ConfigError(`${JSON.stringify(e)} is not a valid event name`)
  const { user, password } = resolveCredentials(opts, process.env, (p) => readFileSync(p, 'utf8'))
  const clientName = opts.client ?? defaultClientName(hostname(), process.pid)
  const tls = tailTls(opts)
  const { stdout, stderr } = process
  const stats = new EventStats(Date.now(), { names: events })
  const colorOut = opts.json !== true && colorEnabled(stdout, process.env)
  const colorErr = colorEnabled(stderr, process.env)
  const mode = summaryModeFor(stderr, opts.summary)
  const out = new LiveConsole({
    out: stdout,
    err: stderr,
    summary: mode,
    render: () => renderSummary(stats.view(Date.now()), { color: colorErr }),
    ...(mode === 'periodic' ? { intervalMs: opts.summaryInterval !== undefined ? Math.round(opts.summaryInterval * 1000) : opts.summaryEvery } : {})
  })
  const logger = pino({ level: opts.logLevel, base: null }, { write: (s: string) => { out.note(humanLogLine(s)) } })
  const positions = opts.positions === undefined ? undefined : new SqlitePositionStore({ database: opts.positions })
  const client = new ClientEndpoint({
    url: opts.url,
    ...(opts.moreUrl !== undefined ? { moreUrls: opts.moreUrl } : {}),
    clientName,
    ...(tls !== undefined ? { tls } : {}),
    ...(user !== undefined ? { user } : {}),
    ...(password !== undefined ? { password } : {}),
    ...(positions !== undefined ? { positions } : {}),
    logger
  })

  // nothing is shown before every subscription is accepted: a refused one ends the tail with no output
  let openGate: () => void = () => {}
  const allSubscribed = new Promise<void>((resolve) => { openGate = resolve })

  // one way out, whatever ends the tail: --count, a signal, a refusal, a closed stdout
  let outcome: { code: number, error: HeraldError | null } | null = null
  let resolveDone: () => void = () => {}
  const done = new Promise<void>((resolve) => { resolveDone = resolve })
  const finish = (code: number, error: HeraldError | null = null): void => {
    if (outcome !== null) return
    outcome = { code, error }
    openGate()
    // close() marks every subscription closed before it awaits anything, so no handler starts after this
    void client.close()
      .catch((err: unknown) => { logger.error({ err: toHeraldError(err).message }, 'error while closing') })
      .then(() => {
        // the last summary stays on screen (or in the log) when all went well
        stats.connection(client.status, Date.now())
        out.stop(code === 0)
        resolveDone()
      })
  }
  const onSignal = (): void => {
    if (outcome !== null) process.exit(130) // a second signal while closing
    finish(0)
  }
  process.on('SIGINT', onSignal)
  process.on('SIGTERM', onSignal)
  stdout.on('error', (err: NodeJS.ErrnoException) => {
    // the reader went away (`herald tail ... | head`): nothing more can be shown
    finish(err.code === 'EPIPE' ? 0 : 1)
  })

  // a connection error (refused TLS, refused connection, ...) is logged once per run of
  // identical ones, not once per retry: with --no-summary nothing else would show it. Refused
  // credentials are logged by the 'error' handler below.
  let shownConnectionError: string | null = null
  client.on('status', (s) => {
    stats.connection(s, Date.now())
    out.refresh()
    if (s.state === 'online') shownConnectionError = null
    else if (s.state === 'offline' && s.lastError !== null && !(s.lastError instanceof AuthError) && s.lastError.message !== shownConnectionError && outcome === null) {
      shownConnectionError = s.lastError.message
      logger.warn({ code: s.lastError.code }, `cannot connect to ${opts.url}: ${s.lastError.message}; retrying`)
    }
  })
  // [CONN-AUTH-2] refused credentials at error level (then the exit with code 2 below names them)
  client.on('error', (e) => { if (e instanceof AuthError) logger.error({ code: e.code }, e.message); else logger.warn({ code: e.code }, e.message) })
  client.on('handlerError', ({ key, event, error }) => {
    if (!(error instanceof Stopping)) logger.warn({ key, position: event.position, err: String(error) }, 'printing an event failed; retrying')
  })
  // [CLI-GAP-3] a line before the events after the gap (their handler waits for the same gate)
  client.on('gap', (g) => {
    void allSubscribed.then(() => {
      if (outcome === null) void out.line(renderGap(g, { json: opts.json === true, color: colorOut, at: Date.now() }))
    })
  })
  client.on('subscriptionError', ({ key, error }) => {
    const event = events.find((e) => key === e || key.startsWith(`${e}?`)) ?? key
    finish(2, describeRefusal(error, { event, url: opts.url, user: user ?? null, atConnect: false }))
  })

  let shown = 0
  const handler = async (e: HeraldEvent): Promise<void> => {
    await allSubscribed
    // not shown, so not committed: a restart with --positions shows it
    if (outcome !== null || (opts.count !== undefined && shown >= opts.count)) throw new Stopping()
    shown++
    const now = Date.now()
    stats.record(e.name, now)
    const written = out.line(opts.json === true ? renderEventJson(e, now) : renderEventLine(e, { arrivedAt: now, color: colorOut }))
    // the line is on its way; stop now, before any other event's handler can start
    if (opts.count !== undefined && shown >= opts.count) finish(0)
    await written
  }

  stats.connection(client.status, Date.now())
  client.start()
  out.start()
  const subscribeOptions = { start: opts.start, ...(opts.services !== undefined ? { services: opts.services } : {}), ...(opts.eventKey !== undefined ? { keys: opts.eventKey } : {}) }
  try {
    const subs: Subscription[] = await Promise.all(events.map(async (event) => {
      try {
        return await client.subscribe(event, subscribeOptions, handler)
      } catch (err) {
        const e = toHeraldError(err)
        throw e.code === ErrorCode.CLOSED ? e : describeRefusal(e, { event, url: opts.url, user: user ?? null, atConnect: client.status.lastError === e })
      }
    }))
    const from = positions === undefined ? `start ${startText(opts.start)}, positions in memory` : `positions in ${opts.positions} (start ${startText(opts.start)} where none)`
    openGate()
    out.note(`herald tail: watching ${subs.map((s) => s.key).join(', ')} at ${opts.url} as ${client.key} (${from})`)
  } catch (err) {
    const e = toHeraldError(err)
    // closed by a signal or by --count while subscribing: not an error
    if (e.code !== ErrorCode.CLOSED || outcome === null) finish(2, e)
  }
  await done
  process.removeListener('SIGINT', onSignal)
  process.removeListener('SIGTERM', onSignal)
  const o = outcome as { code: number, error: HeraldError | null } | null
  if (o?.error != null) throw o.error
  return o?.code ?? 0
}

/** [CLI-KEY-3] One --event-key, added to those before it (at most 1,000, each 1 to 128 characters, no control characters). */
function eventKeyArg (value: string, previous: readonly string[] | undefined): readonly string[] {
  const problem = keyProblem(value)
  if (problem !== null) throw new InvalidArgumentError(problem)
  const all = [...(previous ?? []), value]
  if (all.length > KEY_LIMITS.maxKeysPerSubscription) throw new InvalidArgumentError(`at most ${KEY_LIMITS.maxKeysPerSubscription} keys`)
  return all
}
