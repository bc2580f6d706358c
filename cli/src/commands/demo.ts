/**
 * `herald demo` (what `npm start` runs): the whole chain on one machine, on the embedded default.
 * A broker on the example site with SQLite, a simulated fleet on TCP ports (firmware-sim), a gateway
 * on the example gateway configuration pointed at the fleet, and a console client that prints events
 * as they arrive with a one-line live summary; and on the broker's WebSocket port the demo page,
 * which shows the same events in a browser ([CONN-WSC-7]). Ctrl-C closes everything in order.
 */
import { once } from 'node:events'
import { mkdir } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { Command, InvalidArgumentError } from 'commander'
import { pino } from 'pino'
import { startBrokerServer } from '@herald/broker'
import { ClientEndpoint, SqlitePositionStore, type HeraldEvent } from '@herald/client-endpoint'
import { parseDevices, parseFaults, parseRate, startSim, type FaultOptions, type SimHandle } from '@herald/firmware-sim'
import { loadGatewayConfig, parseDeviceUrl, startGateway, type Gateway } from '@herald/gateway'
import { ErrorCode, HeraldError, mayReceive, toHeraldError } from '@herald/protocol'
import { loadSite } from '@herald/node-runtime'
import { EventStats, LiveConsole, colorEnabled, renderEventLine, renderSummary, summaryModeFor } from '../console/index.js'
import { demoPageHandler, demoPageUrl } from '../web/demo-page.js'
import { defaultLogLevel, port } from './options.js'

export interface DemoOptions {
  readonly site: string
  readonly gateway: string
  readonly data: string
  readonly port: number
  readonly wsPort: number
  readonly devices: string
  readonly rate: string
  readonly seed: number
  readonly faults?: string
  readonly user: string
  readonly summary: boolean
  readonly logLevel: string
}

/** The example site's password of the demo user (examples/site.yaml says it at the top). */
const EXAMPLE_PASSWORDS: Readonly<Record<string, string>> = { alice: 'alice-password', bob: 'bob-password' }

function wrap<T> (parse: (text: string) => T) {
  return (text: string): T => {
    try {
      return parse(text)
    } catch (err) {
      throw new InvalidArgumentError((err as Error).message)
    }
  }
}

export function demoCommand (): Command {
  return new Command('demo')
    .description('run the whole chain locally: broker, simulated devices, gateway and a console client (what npm start runs)')
    .option('--site <file>', 'site structure file', 'examples/site.yaml')
    .option('--gateway <file>', 'gateway configuration; its devices are replaced by the simulated fleet', 'examples/gateway.yaml')
    .option('--data <dir>', 'data directory (broker/, gateway/, sim-state.json, demo-client.db, demo.log)', '.herald-data')
    .option('--port <n>', 'broker TCP port (0: any free port)', port, 1883)
    .option('--ws-port <n>', 'broker WebSocket port, with the demo page at / (0: any free port)', port, 8083)
    .option('--devices <list>', 'the simulated fleet, model:count,...', 'thermostat:1,door:1,pump:1')
    .option('--rate <rate>', 'state reports per device, e.g. 1/s or 2/min', '1/s')
    .option('--seed <n>', 'simulation seed', (v) => { const n = Number(v); if (!Number.isSafeInteger(n)) throw new InvalidArgumentError('a whole number'); return n }, 1)
    .option('--faults <list>', 'faults to inject, as for herald sim (e.g. garbage=0.01,reboot=60s)')
    .option('--user <name>', 'the console client\'s user (password from HERALD_PASSWORD, or the example site\'s)', 'alice')
    .option('--no-summary', 'no summary line')
    .option('--log-level <level>', 'level of the log written to <data>/demo.log', defaultLogLevel)
    .action(async (opts: DemoOptions) => {
      await runDemo(opts)
    })
}

async function runDemo (opts: DemoOptions): Promise<void> {
  // checked before anything starts, so a typo costs nothing
  const groups = wrap(parseDevices)(opts.devices)
  const rate = wrap(parseRate)(opts.rate)
  const faults: FaultOptions | undefined = opts.faults === undefined ? undefined : wrap(parseFaults)(opts.faults)
  const fromEnv = process.env.HERALD_PASSWORD
  const password = fromEnv ?? EXAMPLE_PASSWORDS[opts.user]
  if (password === undefined) throw new InvalidArgumentError(`no password for user "${opts.user}": set HERALD_PASSWORD`)
  const site = await loadSite(opts.site)
  const gatewayConfig = await loadGatewayConfig(opts.gateway, process.env)

  await mkdir(opts.data, { recursive: true })
  const logFile = join(opts.data, 'demo.log')
  const destination = pino.destination({ dest: logFile, mkdir: true, sync: false })
  // pino flushes the file synchronously when the process exits, which throws "sonic boom is not
  // ready yet" if the file is not open by then (an early exit, e.g. a busy port): wait for it
  await once(destination, 'ready')
  const logger = pino({ level: opts.logLevel }, destination)
  const { stdout, stderr } = process
  const closers: Array<() => Promise<void>> = []
  const closeAll = async (): Promise<void> => {
    for (const c of closers.reverse()) await c().catch((err: unknown) => { logger.error({ err }, 'while closing') })
  }

  let sim: SimHandle | null = null
  let gateway: Gateway | null = null
  let out: LiveConsole | null = null
  try {
    // the console client and the demo page watch every event the gateway raises that the user may receive
    const user = site.users.get(opts.user) ?? null
    const events = gatewayConfig.events.map((e) => e.name).filter((n) => {
      const def = site.events.get(n)
      return def !== undefined && def.category !== 'private' && mayReceive(def, user)
    })
    // [CONN-WSC-7] the demo page on the WebSocket port; the password filled in only if it is the example site's (never one from the environment)
    const page = demoPageHandler({ config: { events, user: opts.user, ...(fromEnv === undefined ? { password } : {}), clientName: 'demo-page', autoConnect: fromEnv === undefined } })
    const broker = await startBrokerServer({ site, dataDir: join(opts.data, 'broker'), port: opts.port, host: '127.0.0.1', webSocket: { port: opts.wsPort, httpHandler: page }, logger: logger.child({ part: 'broker' }) })
    closers.push(() => broker.close())

    // the fleet's non-volatile memory survives npm start runs: a run is a power cycle of the same devices
    sim = await startSim({ devices: groups, link: { kind: 'tcp', host: '127.0.0.1', basePort: 0 }, rate, seed: opts.seed, stateFile: join(opts.data, 'sim-state.json'), ...(faults === undefined ? {} : { faults }) })
    closers.push(() => (sim as SimHandle).close())
    const perModel = new Map<string, number>()
    const devices = sim.devices.map((d) => {
      const n = (perModel.get(d.model) ?? 0) + 1
      perModel.set(d.model, n)
      return { name: `${d.model}-${n}`, url: d.url, address: parseDeviceUrl(d.url), model: d.model }
    })

    gateway = await startGateway({
      ...gatewayConfig,
      brokerUrl: broker.url,
      dataDir: join(opts.data, 'gateway'),
      devices
    }, { logger: logger.child({ part: 'gateway' }) })
    closers.push(() => (gateway as Gateway).close())
    // [CONN-AUTH-2] a refused secret (or any background failure) on the console too, not only in the log
    gateway.on('error', (err) => {
      logger.error({ part: 'gateway', code: err.code, err }, err.message)
      out?.note(`herald demo: gateway: ${err.message} [${err.code}]`)
    })

    const stats = new EventStats(Date.now(), { names: events })
    const colorOut = colorEnabled(stdout, process.env)
    const colorErr = colorEnabled(stderr, process.env)
    const g = gateway
    const s = sim
    out = new LiveConsole({
      out: stdout,
      err: stderr,
      summary: summaryModeFor(stderr, opts.summary),
      render: () => {
        const gs = g.status()
        const ss = s.summary()
        return `${renderSummary(stats.view(Date.now()), { color: colorErr })} · devices ${gs.devicesOnline}/${gs.devices.length} · reports ${ss.reportsMade} · corrupt ${gs.totals.corrupt} · backlog ${gs.service.backlog}`
      }
    })
    const client = new ClientEndpoint({
      url: broker.url,
      clientName: 'demo-console',
      user: opts.user,
      password,
      positions: new SqlitePositionStore({ database: join(opts.data, 'demo-client.db') }),
      logger: logger.child({ part: 'client' })
    })
    const o = out
    closers.push(() => client.close())
    client.on('status', (st) => { stats.connection(st, Date.now()); o.refresh() })
    client.start()
    const handler = async (e: HeraldEvent): Promise<void> => {
      const now = Date.now()
      stats.record(e.name, now)
      await o.line(renderEventLine(e, { arrivedAt: now, color: colorOut }))
    }
    o.note(`herald demo: broker ${broker.url} (site ${opts.site}, data ${opts.data}), log in ${logFile}`)
    if (broker.webSocketUrl !== null) o.note(`herald demo: demo page ${demoPageUrl(broker.webSocketUrl)} (the same events live in a browser, MQTT over WebSocket on ${broker.webSocketUrl})`)
    for (const d of devices) o.note(`herald demo: ${d.name} at ${d.url} -> gateway ${gatewayConfig.serviceId}`)
    o.note(`herald demo: ${opts.user} watches ${events.join(', ')}; Ctrl-C stops everything`)
    for (const name of events) await client.subscribe(name, { start: 'all' }, handler)
    o.start()
  } catch (err) {
    out?.stop(false)
    await closeAll()
    const e = toHeraldError(err)
    if (e.code === ErrorCode.ADDRESS_IN_USE) {
      throw new HeraldError(e.code, e.message.startsWith('WebSocket ')
        ? `${e.message}; pick another with --ws-port (npm start -- --ws-port 8084)`
        : `${e.message}; pick another with --port (npm start -- --port 1884)`, { cause: err })
    }
    if (e.code === ErrorCode.DATA_DIR_LOCKED) throw new HeraldError(e.code, `data directory ${resolve(opts.data, 'broker')} is in use by another broker: another herald demo running? Stop it, or run this one apart (npm start -- --data .herald-data-2 --port 1884)`, { cause: err })
    throw e
  }

  const console = out
  let stopping = false
  const stop = (): void => {
    if (stopping) process.exit(130)
    stopping = true
    console.note('herald demo: stopping')
    closeAll().then(() => {
      console.stop(true)
      logger.flush()
      process.stderr.write('herald demo: stopped cleanly\n', () => { process.exit(0) })
    }, () => { process.exit(1) })
  }
  process.on('SIGINT', stop)
  process.on('SIGTERM', stop)
}
