/**
 * `herald sim`: runs simulated devices on TCP ports or ttys, prints where each can be reached, then
 * a live one-line summary, until SIGINT/SIGTERM (or --duration). Options are checked before
 * anything starts; a wrong one exits with code 2 and a message naming it.
 */
import { Command, InvalidArgumentError, type CommanderError } from 'commander'
import { SimError } from './errors.js'
import { parseDuration, parseDevices, parseFaults, parseLink, parseRate } from './options.js'
import { MODELS } from './models/index.js'
import { formatSummary, startSim, type DeviceGroup, type SimHandle } from './sim.js'
import type { FaultOptions } from './faults.js'

function arg<T> (parse: (text: string) => T): (text: string) => T {
  return (text) => {
    try {
      return parse(text)
    } catch (err) {
      if (err instanceof SimError) throw new InvalidArgumentError(err.message)
      throw err
    }
  }
}

function wholeNumber (min: number, max: number): (text: string) => number {
  return (text) => {
    const n = Number(text)
    if (!/^\d+$/.test(text) || n < min || n > max) throw new InvalidArgumentError(`a whole number from ${min} to ${max}`)
    return n
  }
}

function collect (parse: (text: string) => [string, FaultOptions]): (text: string, previous: Array<[string, FaultOptions]>) => Array<[string, FaultOptions]> {
  return (text, previous) => [...previous, arg(parse)(text)]
}

function parseDeviceFaults (text: string): [string, FaultOptions] {
  const colon = text.indexOf(':')
  if (colon <= 0) throw new InvalidArgumentError(`"${text}" is not <serial>:<faults>`)
  return [text.slice(0, colon), parseFaults(text.slice(colon + 1))]
}

/** The text of --help-models. */
export function modelsHelp (): string {
  const out: string[] = []
  for (const m of Object.values(MODELS)) {
    out.push(`${m.name} (serial ${m.prefix}-NNNNNN, fw ${m.fw}): ${m.description}`, '  STATE fields:')
    for (const f of m.fields) out.push(`    ${f.name.padEnd(10)} ${f.description}`)
    out.push('  alarm codes (ALARM ... CLEAR):')
    for (const a of m.alarms) out.push(`    ${a.name.padEnd(12)} ${a.description}`)
    out.push('')
  }
  return out.join('\n')
}

interface SimCliOptions {
  devices?: DeviceGroup[]
  link: string
  baud: number
  rate: number
  seed: number
  faults?: FaultOptions
  deviceFaults: Array<[string, FaultOptions]>
  record?: string
  replay: string[]
  emittedLog?: string
  state?: string
  outbox?: number
  window?: number
  rto?: number
  duration?: number
  summaryEvery: number
  helpModels?: boolean
}

/** The `sim` subcommand of `herald`. */
export function simCommand (): Command {
  return new Command('sim')
    .description('simulate devices speaking the device line protocol (docs/firmware-sim.md)')
    .option('--devices <list>', 'models and counts, e.g. thermostat:3,door:2,pump:1 (see --help-models)', arg(parseDevices))
    .option('--link <link>', 'tcp:<port> (one port per device from it), tcp:0 (free ports), tcp:<host>:<port>, serial:<tty>[,<tty>...]', 'tcp:0')
    .option('--baud <n>', 'baud rate of serial links', wholeNumber(50, 4_000_000), 115200)
    .option('--rate <rate>', 'periodic STATE reports per device: 5/s, 30/min, 0 (only on change)', arg(parseRate), 1)
    .option('--seed <n>', 'run seed: same seed, same serials, reports and faults', wholeNumber(0, Number.MAX_SAFE_INTEGER), 1)
    .option('--faults <spec>', 'faults of every device: garbage=0.01,truncate=0.01,badcrc=0.01,reboot=60s,silence=5s/60s,burst=20/30s,unplug=3s/45s (timed faults also at times: reboot=@10s+25s)', arg(parseFaults))
    .option('--device-faults <serial:spec>', 'faults of one device instead (repeatable), e.g. TH-000001:reboot=10s', collect(parseDeviceFaults), [])
    .option('--record <dir>', 'record each device\'s bytes to <dir>/<serial>.jsonl')
    .option('--replay <file>', 'play a recording back as one more device (repeatable)', (v: string, prev: string[]) => [...prev, v], [] as string[])
    .option('--emitted-log <file>', 'append every report made to this JSON Lines file')
    .option('--state <file>', 'keep the devices\' non-volatile memory (boot counter, outbox) in this file: a restart is a power cycle, not a new device')
    .option('--outbox <n>', 'outbox capacity per device, in frames (default 4096)', wholeNumber(1, 1_000_000))
    .option('--window <n>', 'frames in flight beyond the last ACK (default 32)', wholeNumber(1, 4096))
    .option('--rto <duration>', 'retransmission timeout (default 500ms)', arg(parseDuration))
    .option('--duration <duration>', 'stop after this long (default: until SIGINT/SIGTERM)', arg(parseDuration))
    .option('--summary-every <duration>', 'summary line interval when not on a terminal', arg(parseDuration), 5000)
    .option('--help-models', 'list the device models, their STATE fields and alarm codes, and exit')
    .exitOverride((err: CommanderError) => {
      // help and version exit 0; every wrong option exits 2, as the rest of herald does
      process.exit(err.exitCode === 0 ? 0 : 2)
    })
    .action(async (opts: SimCliOptions) => {
      if (opts.helpModels === true) {
        process.stdout.write(modelsHelp())
        return
      }
      if (opts.devices === undefined && opts.replay.length === 0) throw new InvalidArgumentError('--devices: which devices to simulate, e.g. --devices thermostat:2,pump:1 (or --replay <file>)')
      let link
      try {
        link = parseLink(opts.link, opts.baud)
      } catch (err) {
        throw new InvalidArgumentError(`--link: ${(err as Error).message}`)
      }
      if (link.kind === 'memory') throw new InvalidArgumentError('--link: memory links are for tests; use tcp:<port> or serial:<tty>')
      if (opts.rto !== undefined && !Number.isInteger(opts.rto)) throw new InvalidArgumentError('--rto: whole milliseconds')
      let sim: SimHandle
      try {
        sim = await startSim({
          devices: opts.devices ?? [],
          link,
          rate: opts.rate,
          seed: opts.seed,
          faults: opts.faults,
          record: opts.record,
          replay: opts.replay,
          emittedLog: opts.emittedLog,
          stateFile: opts.state,
          outboxCapacity: opts.outbox,
          window: opts.window,
          retransmitMs: opts.rto
        })
      } catch (err) {
        throw prefixOption(err)
      }
      for (const [serial, faults] of opts.deviceFaults) {
        try {
          sim.setFaults(faults, [serial])
        } catch (err) {
          await sim.close()
          throw new InvalidArgumentError(`--device-faults: ${(err as Error).message}`)
        }
      }
      for (const d of sim.devices) process.stdout.write(`${d.model} ${d.serial} ${d.url}${d.kind === 'replay' ? ' (replay)' : ''}\n`)
      runUntilStopped(sim, opts)
    })
}

// names the CLI option for errors that name the API option
function prefixOption (err: unknown): unknown {
  if (!(err instanceof SimError)) return err
  const m = /^(devices|link\.\w+|rate|seed|faults|outboxCapacity|window|retransmitMs)\b/.exec(err.message)
  const cli: Record<string, string> = { devices: '--devices', 'link.paths': '--link', 'link.basePort': '--link', 'link.baudRate': '--baud', rate: '--rate', seed: '--seed', faults: '--faults', outboxCapacity: '--outbox', window: '--window', retransmitMs: '--rto' }
  const name = m === null ? undefined : cli[m[1]!]
  return new InvalidArgumentError(name === undefined ? err.message : `${name} (${err.message})`)
}

function runUntilStopped (sim: SimHandle, opts: SimCliOptions): void {
  const tty = process.stdout.isTTY
  const draw = (final: boolean): void => {
    const line = formatSummary(sim.summary())
    if (tty) process.stdout.write(`\r\x1b[2K${line}${final ? '\n' : ''}`)
    else process.stdout.write(`${line}\n`)
  }
  const timer = setInterval(() => { draw(false) }, tty ? 500 : opts.summaryEvery)
  let stopping = false
  const stop = (why: string): void => {
    if (stopping) process.exit(130)
    stopping = true
    clearInterval(timer)
    sim.close().then(() => {
      draw(true)
      process.stderr.write(`herald sim: stopped (${why})\n`)
      process.exit(0)
    }, (err: unknown) => {
      process.stderr.write(`herald sim: error while stopping: ${(err as Error).message}\n`)
      process.exit(1)
    })
  }
  process.on('SIGINT', () => { stop('SIGINT') })
  process.on('SIGTERM', () => { stop('SIGTERM') })
  if (opts.duration !== undefined) setTimeout(() => { stop(`--duration ${opts.duration} ms`) }, opts.duration)
}
