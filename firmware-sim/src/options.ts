/**
 * Parsers of the simulator's option strings (the CLI's `--devices`, `--link`, `--rate`, `--faults`):
 * each returns the API's value or throws a SimConfigError saying what is wrong with the text.
 */
import { SimConfigError } from './errors.js'
import type { FaultOptions, FaultTimes } from './faults.js'
import { MODELS } from './models/index.js'
import type { DeviceGroup, LinkOptions } from './sim.js'

const UNITS: Readonly<Record<string, number>> = { ms: 1, s: 1000, m: 60_000, min: 60_000, h: 3_600_000 }

/** `500ms`, `60s`, `1.5s`, `2m`, `1h` → milliseconds. A unit is required. */
export function parseDuration (text: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|min|h)$/.exec(text.trim())
  if (m === null) throw new SimConfigError(`"${text}" is not a duration (a number and a unit: 500ms, 60s, 2m, 1h)`)
  return Number(m[1]) * UNITS[m[2]!]!
}

/** `5/s`, `5`, `30/min`, `100/h` → reports per second. */
export function parseRate (text: string): number {
  const m = /^(\d+(?:\.\d+)?)(?:\/(s|min|m|h))?$/.exec(text.trim())
  if (m === null) throw new SimConfigError(`"${text}" is not a rate (reports per device: 5/s, 30/min, 100/h)`)
  const per = m[2] === undefined || m[2] === 's' ? 1 : m[2] === 'h' ? 3600 : 60
  return Number(m[1]) / per
}

/** `thermostat:3,door:2,pump` → device groups (a model without a count is one device). */
export function parseDevices (text: string): DeviceGroup[] {
  const groups: DeviceGroup[] = []
  for (const part of text.split(',')) {
    const m = /^([a-z][a-z0-9-]*)(?::(\d+))?$/.exec(part.trim())
    if (m === null) throw new SimConfigError(`"${part}" is not <model>[:<count>] (models: ${Object.keys(MODELS).join(', ')})`)
    const model = m[1]!
    if (!Object.hasOwn(MODELS, model)) throw new SimConfigError(`unknown model "${model}" (models: ${Object.keys(MODELS).join(', ')})`)
    const count = m[2] === undefined ? 1 : Number(m[2])
    if (!(Number.isInteger(count) && count >= 1)) throw new SimConfigError(`"${part}": the count is a whole number from 1`)
    groups.push({ model, count })
  }
  return groups
}

/**
 * `tcp:7000` (ports 7000, 7001, ... on 127.0.0.1), `tcp:0` (free ports), `tcp:0.0.0.0:7000`,
 * `tcp:[::1]:7000`, `serial:/dev/ttyS1,/dev/ttyS2` (one tty per device).
 */
export function parseLink (text: string, baudRate?: number): LinkOptions {
  const t = text.trim()
  if (t.startsWith('tcp:')) {
    const m = /^tcp:(?:(\[[0-9a-fA-F:.]+\]|[^:[\]]+):)?(\d+)$/.exec(t)
    if (m === null) throw new SimConfigError(`"${text}" is not tcp:<port> or tcp:<host>:<port>`)
    const basePort = Number(m[2])
    if (basePort > 65535) throw new SimConfigError(`"${text}": a port from 0 to 65535`)
    const host = m[1] === undefined ? undefined : m[1].replace(/^\[(.*)\]$/, '$1')
    return host === undefined ? { kind: 'tcp', basePort } : { kind: 'tcp', host, basePort }
  }
  if (t.startsWith('serial:')) {
    const paths = t.slice('serial:'.length).split(',').map((p) => p.trim())
    if (paths.some((p) => p === '')) throw new SimConfigError(`"${text}" is not serial:<tty>[,<tty>...]`)
    return baudRate === undefined ? { kind: 'serial', paths } : { kind: 'serial', paths, baudRate }
  }
  if (t === 'memory') return { kind: 'memory' }
  throw new SimConfigError(`"${text}" is not a link (tcp:<port>, tcp:<host>:<port>, serial:<tty>[,<tty>...])`)
}

// "@10s+25s" → at times; "60s" → every
function parseTimes (text: string, what: string): FaultTimes {
  if (text.startsWith('@')) return { atMs: text.slice(1).split('+').map((x) => parseDuration(x.replace(/^@/, ''))) }
  if (text === '') throw new SimConfigError(`${what}: when? (<every> or @<time>+<time>...)`)
  return { everyMs: parseDuration(text) }
}

// "5s/60s" → 5 s every 60 s; "5s@30s+90s" → 5 s at 30 s and 90 s
function parseAmountAndTimes (text: string, what: string): [string, FaultTimes] {
  const at = text.indexOf('@')
  if (at >= 0) return [text.slice(0, at), parseTimes(text.slice(at), what)]
  const slash = text.indexOf('/')
  if (slash < 0) throw new SimConfigError(`${what}: "${text}" is not <amount>/<every> or <amount>@<time>+<time>...`)
  return [text.slice(0, slash), parseTimes(text.slice(slash + 1), what)]
}

function parseProbability (text: string, what: string): number {
  const p = Number(text)
  if (text.trim() === '' || !(p >= 0 && p <= 1)) throw new SimConfigError(`${what}: "${text}" is not a probability from 0 to 1`)
  return p
}

const FAULT_NAMES = ['garbage', 'truncate', 'badcrc', 'reboot', 'silence', 'burst', 'unplug']

/**
 * `garbage=0.01,truncate=0.01,badcrc=0.01,reboot=60s,silence=5s/60s,burst=20/30s,unplug=3s/45s`;
 * timed faults also at given times: `reboot=@10s+25s`, `silence=5s@30s+90s`, `burst=20@10s`.
 * An empty text is no faults.
 */
export function parseFaults (text: string): FaultOptions {
  const faults: { -readonly [K in keyof FaultOptions]: FaultOptions[K] } = {}
  for (const part of text.split(',')) {
    const p = part.trim()
    if (p === '') continue
    const eq = p.indexOf('=')
    if (eq < 0) throw new SimConfigError(`"${p}" is not <fault>=<value>`)
    const name = p.slice(0, eq)
    const value = p.slice(eq + 1)
    if (!FAULT_NAMES.includes(name)) throw new SimConfigError(`unknown fault "${name}" (${FAULT_NAMES.join(', ')})`)
    try {
      switch (name) {
        case 'garbage':
          faults.garbage = parseProbability(value, name)
          break
        case 'truncate':
          faults.truncate = parseProbability(value, name)
          break
        case 'badcrc':
          faults.badCrc = parseProbability(value, name)
          break
        case 'reboot':
          faults.reboot = parseTimes(value, name)
          break
        case 'silence':
        case 'unplug': {
          const [duration, times] = parseAmountAndTimes(value, name)
          faults[name] = { ...times, durationMs: parseDuration(duration) }
          break
        }
        case 'burst': {
          const [count, times] = parseAmountAndTimes(value, name)
          const n = Number(count)
          if (!/^\d+$/.test(count) || n < 1) throw new SimConfigError(`"${count}" is not a number of reports`)
          faults.burst = { ...times, count: n }
          break
        }
      }
    } catch (err) {
      if (err instanceof SimConfigError && !err.message.startsWith(`${name}:`)) throw new SimConfigError(`${name}: ${err.message}`, { cause: err })
      throw err
    }
  }
  return faults
}
