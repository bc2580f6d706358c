/**
 * The gateway configuration file (`gateway.yaml`, documented in docs/gateway.md): the service
 * identity and broker, the data directory, the devices and the mapping from reports to events.
 * Every error names the file, the line and the entry.
 */
import { readFile } from 'node:fs/promises'
import { dirname, resolve } from 'node:path'
import { ConfigError, assertName, eventsOfService, parseByteSize, parseDuration, type EventKeySpec } from '@herald/protocol'
import { checkBrokerConnection, isSecureUrl, loadSite, type TlsClientOptions } from '@herald/node-runtime'
import { OverflowPolicy, type ServiceEventSpec } from '@herald/service-endpoint'
import { parseDeviceUrl } from './device-url.js'
import type { DeviceAddress } from './device-url.js'
import { parseValueSource } from '../mapping.js'
import type { MappingRule, ValueSource } from '../mapping.js'
import { readYaml } from './yaml-reader.js'
import type { YamlCursor } from './yaml-reader.js'

/** Limits of a configuration. */
export const GATEWAY_LIMITS = {
  devices: 256,
  rules: 1000,
  payloadFields: 64
} as const

/** One configured device line. */
export interface DeviceConfig {
  /** A name for logs, status and `$device`; default: the URL. */
  readonly name: string
  readonly url: string
  readonly address: DeviceAddress
  /** If set, a device that says another model in its HELLO is refused. */
  readonly model: string | null
}

/** Timing of device lines. */
export interface LineTiming {
  /** First delay before reopening a line that closed or failed to open. Default 200 ms. */
  readonly reopenInitialMs: number
  /** Largest delay between reopen attempts. Default 10 s. */
  readonly reopenMaxMs: number
  /** A line silent this long is stale: the gateway sends SYNC. Default 10 s. */
  readonly staleAfterMs: number
}

/** A validated gateway configuration. */
export interface GatewayConfig {
  /** The file it was read from (for messages). */
  readonly file: string
  readonly serviceId: string
  readonly secret: string
  /** `mqtt://host:port`, or `mqtts://host:port` for TLS ([CONN-TLS-1]). */
  readonly brokerUrl: string
  /** TLS options (files read) for an mqtts:// broker, or null for none (plain, or mqtts:// with the system's root CAs). */
  readonly brokerTls: TlsClientOptions | null
  /** Directory of the level-2 persistence file (`gateway.db`) and `status.json`. */
  readonly dataDir: string
  readonly events: readonly ServiceEventSpec[]
  readonly persistence: {
    readonly memoryCapacityBytes: number
    readonly fileCapacityBytes: number
    readonly policy: OverflowPolicy
  }
  readonly devices: readonly DeviceConfig[]
  readonly lines: LineTiming
  readonly mapping: readonly MappingRule[]
  /** How often the status is logged and written to status.json. Default 10 s. */
  readonly statusIntervalMs: number
  /** Where `herald gateway` serves /metrics, /healthz and /readyz ([OPS-METRICS-1]); null: not served (`metrics:` in the file, or --metrics-port). */
  readonly metrics: { readonly port: number, readonly host: string } | null
}

const TOP_KEYS = ['service', 'broker', 'data', 'site', 'events', 'persistence', 'devices', 'lines', 'mapping', 'status', 'metrics']

/** Reads and validates a gateway configuration file. Relative paths are relative to the file. */
export async function loadGatewayConfig (file: string, env: NodeJS.ProcessEnv = {}): Promise<GatewayConfig> {
  let text: string
  try {
    text = await readFile(file, 'utf8')
  } catch (err) {
    throw new ConfigError(`gateway config ${file}: ${(err as Error).message}`, { cause: err })
  }
  return parseGatewayConfig(file, text, env)
}

/** Validates a gateway configuration given as YAML text. */
export async function parseGatewayConfig (file: string, text: string, env: NodeJS.ProcessEnv = {}): Promise<GatewayConfig> {
  const root = readYaml(file, text).only(TOP_KEYS)
  const base = dirname(resolve(file))

  const service = root.get('service').only(['id', 'secret', 'secretEnv', 'secretFile'])
  if (!service.present) throw service.error('is required: the service id and its secret')
  const serviceId = service.get('id').string()
  try {
    assertName(serviceId, 'id')
  } catch (err) {
    throw service.get('id').error((err as Error).message)
  }
  const secret = await readSecret(service, env, base)

  const { brokerUrl, brokerTls } = await readBroker(root.get('broker'), base)

  const dataDir = resolve(base, root.get('data').string())

  const events = await readEvents(root, serviceId, base)
  const byName = new Map(events.map((e) => [e.name, e]))

  const p = root.get('persistence').only(['memory', 'file', 'policy'])
  const policyText = p.get('policy').string(OverflowPolicy.dropOldest)
  if (policyText !== OverflowPolicy.dropOldest && policyText !== OverflowPolicy.reject) throw p.get('policy').error(`"${policyText}" is not dropOldest or reject`)
  const persistence = {
    memoryCapacityBytes: p.get('memory').parsed((v) => parseByteSize(v, 'memory'), 64 * 1024 * 1024),
    fileCapacityBytes: p.get('file').parsed((v) => parseByteSize(v, 'file'), 1024 * 1024 * 1024),
    policy: policyText
  }

  const devicesNode = root.get('devices')
  if (!devicesNode.present) throw devicesNode.error('is required: the list of device lines')
  const devices: DeviceConfig[] = []
  const items = devicesNode.items()
  if (items.length === 0) throw devicesNode.error('lists no device')
  if (items.length > GATEWAY_LIMITS.devices) throw devicesNode.error(`lists ${items.length} devices; at most ${GATEWAY_LIMITS.devices}`)
  for (const d of items) {
    d.only(['name', 'url', 'model'])
    const url = d.get('url').string()
    const address = d.get('url').parsed(() => parseDeviceUrl(url))
    const name = d.get('name').string(url)
    if (devices.some((x) => x.name === name)) throw d.get('name').error(`device name "${name}" is used twice`)
    if (devices.some((x) => x.url === url)) throw d.get('url').error(`"${url}" is configured twice`)
    devices.push({ name, url, address, model: d.get('model').optionalString() ?? null })
  }

  const l = root.get('lines').only(['reopenInitial', 'reopenMax', 'staleAfter'])
  const lines: LineTiming = {
    reopenInitialMs: l.get('reopenInitial').parsed((v) => parseDuration(v, 'reopenInitial'), 200),
    reopenMaxMs: l.get('reopenMax').parsed((v) => parseDuration(v, 'reopenMax'), 10_000),
    staleAfterMs: l.get('staleAfter').parsed((v) => parseDuration(v, 'staleAfter'), 10_000)
  }
  if (lines.reopenInitialMs < 10 || lines.reopenMaxMs < lines.reopenInitialMs) throw l.error('reopenInitial must be at least 10ms and reopenMax at least reopenInitial')
  if (lines.staleAfterMs < 100) throw l.get('staleAfter').error('must be at least 100ms')

  const mapping = readMapping(root.get('mapping'), byName)

  const statusIntervalMs = root.get('status').only(['interval']).get('interval').parsed((v) => parseDuration(v, 'interval'), 10_000)
  if (statusIntervalMs < 100) throw root.get('status').get('interval').error('must be at least 100ms')

  const m = root.get('metrics').only(['port', 'host'])
  const metrics = !m.present
    ? null
    : {
        port: m.get('port').parsed((v) => {
          if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0 || v > 65_535) throw new Error(`must be a port number from 0 to 65535, got ${JSON.stringify(v)}`)
          return v
        }),
        host: m.get('host').string('127.0.0.1')
      }

  return { file, serviceId, secret, brokerUrl, brokerTls, dataDir, events, persistence, devices, lines, mapping, statusIntervalMs, metrics }
}

/**
 * The `broker` entry: a URL, or a mapping with the URL and TLS files (relative to the config file):
 * `{ url: mqtts://broker:8883, ca: ca.crt, cert: gateway.crt, key: gateway.key, servername: broker }`.
 */
async function readBroker (broker: YamlCursor, base: string): Promise<{ brokerUrl: string, brokerTls: TlsClientOptions | null }> {
  const urlNode = broker.isMapping ? broker.only(['url', 'ca', 'cert', 'key', 'servername']).get('url') : broker
  const brokerUrl = urlNode.string()
  if (!/^(mqtt|tcp|mqtts|tls):\/\/[^/]+:\d+\/?$/.test(brokerUrl)) throw urlNode.error(`"${brokerUrl}" is not a broker URL like mqtt://127.0.0.1:1883, or mqtts://broker.example:8883 for TLS`)
  if (!broker.isMapping) return { brokerUrl, brokerTls: null }
  const given = ['ca', 'cert', 'key', 'servername'].filter((k) => broker.get(k).present)
  if (given.length === 0) return { brokerUrl, brokerTls: null }
  if (!isSecureUrl(brokerUrl)) throw broker.get(given[0] ?? 'ca').error(`TLS options need an mqtts:// URL; "${brokerUrl}" is plain MQTT, where they would be ignored`)
  if (broker.get('cert').present !== broker.get('key').present) throw broker.get(broker.get('cert').present ? 'cert' : 'key').error('cert and key go together: a client certificate needs its key')
  const file = async (key: string): Promise<Buffer | undefined> => {
    const node = broker.get(key)
    if (!node.present) return undefined
    const path = resolve(base, node.string())
    try {
      return await readFile(path)
    } catch (err) {
      throw node.error(`cannot read ${path}: ${(err as Error).message}`)
    }
  }
  const [ca, cert, key] = [await file('ca'), await file('cert'), await file('key')]
  const servername = broker.get('servername').optionalString()
  const tls: TlsClientOptions = {
    ...(ca !== undefined ? { ca } : {}),
    ...(cert !== undefined ? { cert } : {}),
    ...(key !== undefined ? { key } : {}),
    ...(servername !== undefined ? { servername } : {})
  }
  try {
    checkBrokerConnection('broker', brokerUrl, tls)
  } catch (err) {
    throw broker.error((err as Error).message.replace(/^broker: /, ''))
  }
  return { brokerUrl, brokerTls: tls }
}

async function readSecret (service: YamlCursor, env: NodeJS.ProcessEnv, base: string): Promise<string> {
  const given = ['secret', 'secretEnv', 'secretFile'].filter((k) => service.get(k).present)
  if (given.length !== 1) throw service.error('give exactly one of secret, secretEnv (an environment variable) or secretFile')
  if (service.get('secret').present) return service.get('secret').string()
  if (service.get('secretEnv').present) {
    const name = service.get('secretEnv').string()
    const value = env[name]
    if (value === undefined || value === '') throw service.get('secretEnv').error(`the environment variable ${name} is not set`)
    return value
  }
  const path = resolve(base, service.get('secretFile').string())
  try {
    return (await readFile(path, 'utf8')).replace(/\r?\n$/, '')
  } catch (err) {
    throw service.get('secretFile').error(`cannot read ${path}: ${(err as Error).message}`)
  }
}

async function readEvents (root: YamlCursor, serviceId: string, base: string): Promise<ServiceEventSpec[]> {
  const siteNode = root.get('site')
  const eventsNode = root.get('events')
  if (siteNode.present === eventsNode.present) throw root.error('give either "site" (the site file, for the events of this service) or "events" (the list), not both or neither')
  if (siteNode.present) {
    const path = resolve(base, siteNode.string())
    try {
      const site = await loadSite(path)
      return eventsOfService(site, serviceId)
    } catch (err) {
      throw siteNode.error((err as Error).message)
    }
  }
  const specs: ServiceEventSpec[] = []
  for (const e of eventsNode.items()) {
    e.only(['name', 'category', 'lifetime', 'maxPayload', 'key'])
    const name = e.get('name').string()
    try {
      assertName(name, 'name')
    } catch (err) {
      throw e.get('name').error((err as Error).message)
    }
    if (specs.some((s) => s.name === name)) throw e.get('name').error(`event "${name}" is listed twice`)
    const category = e.get('category').string()
    if (category !== 'replacing' && category !== 'queueing' && category !== 'private') throw e.get('category').error(`"${category}" is not replacing, queueing or private`)
    const lifetime = e.get('lifetime')
    const spec: ServiceEventSpec = {
      name,
      category: category,
      lifetimeMs: lifetime.present ? lifetime.parsed((v) => parseDuration(v, 'lifetime')) : null,
      maxPayloadBytes: e.get('maxPayload').parsed((v) => parseByteSize(v, 'maxPayload'), 64 * 1024)
    }
    // [GW-KEY-1] as in the site: `key: raise` or `key: { field: <name> }`, replacing events only
    const keyNode = e.get('key')
    if (!keyNode.present) {
      specs.push(spec)
      continue
    }
    if (category !== 'replacing') throw keyNode.error(`only a replacing event can have a key; "${name}" is ${category}`)
    let key: EventKeySpec
    if (keyNode.isMapping) {
      keyNode.only(['field'])
      key = { kind: 'field', field: keyNode.get('field').string() }
    } else if (keyNode.string() === 'raise') {
      key = { kind: 'raise' }
    } else {
      throw keyNode.error('must be "raise" or { field: <payload field> }')
    }
    specs.push({ ...spec, key })
  }
  if (specs.length === 0) throw eventsNode.error('lists no event')
  return specs
}

function readMapping (node: YamlCursor, events: ReadonlyMap<string, ServiceEventSpec>): MappingRule[] {
  if (!node.present) throw node.error('is required: which device reports raise which events')
  const items = node.items()
  if (items.length > GATEWAY_LIMITS.rules) throw node.error(`has ${items.length} rules; at most ${GATEWAY_LIMITS.rules}`)
  const known = [...events.keys()].join(', ')
  return items.map((r) => {
    r.only(['on', 'model', 'code', 'where', 'raise', 'raiseNull', 'payload', 'key'])
    const on = r.get('on').string()
    if (on !== 'STATE' && on !== 'ALARM' && on !== 'CLEAR') throw r.get('on').error(`"${on}" is not a data frame type (STATE, ALARM or CLEAR)`)
    const code = r.get('code').optionalString() ?? null
    if (code !== null && on === 'STATE') throw r.get('code').error('a STATE frame has no code; match fields with "where"')
    const where = new Map<string, string>()
    const w = r.get('where')
    for (const key of w.keys()) {
      const v = w.get(key).scalar()
      if (v === undefined) throw w.get(key).error('needs a value')
      where.set(key, String(v))
    }
    const raise = r.get('raise')
    const raiseNull = r.get('raiseNull')
    if (raise.present === raiseNull.present) throw r.error('give exactly one of "raise" (an event with a payload) or "raiseNull" (a replacing event no longer holds)')
    const target = raise.present ? raise : raiseNull
    const event = target.string()
    const spec = events.get(event)
    if (spec === undefined) throw target.error(`unknown event "${event}" (this service raises: ${known})`)
    if (spec.category === 'private') throw target.error(`"${event}" is a private event; device reports raise replacing or queueing events`)
    // [GW-KEY-1] the key of a keyed event: `key: <source>` ($device, $serial, a field), or the payload's key field
    const keyNode = r.get('key')
    let keyed: MappingRule['keyed']
    if (spec.key === undefined) {
      if (keyNode.present) throw keyNode.error(`"${event}" is not a keyed event; a rule for it takes no key`)
    } else {
      const keyText = keyNode.present ? keyNode.string() : undefined
      const source = keyText === undefined ? null : keyNode.parsed(() => parseValueSource(keyText))
      if (source === null && (spec.key.kind === 'raise' || raiseNull.present)) {
        throw r.error(`"${event}" is keyed${spec.key.kind === 'raise' ? ' by the raise' : ''}: give the rule a "key", e.g. key: $device`)
      }
      keyed = { spec: spec.key, source }
    }
    const keyedPart = keyed === undefined ? {} : { keyed }
    if (raiseNull.present) {
      if (spec.category !== 'replacing') throw target.error(`"${event}" is ${spec.category}; only a replacing event can be null`)
      if (r.get('payload').present) throw r.get('payload').error('a null event has no payload')
      return { on: on, model: r.get('model').optionalString() ?? null, code, where, action: { kind: 'raiseNull', event }, ...keyedPart }
    }
    const payloadNode = r.get('payload')
    if (!payloadNode.present) throw payloadNode.error('is required with "raise": a mapping of payload keys to sources like $serial or temp:number')
    const keys = payloadNode.keys()
    if (keys.length > GATEWAY_LIMITS.payloadFields) throw payloadNode.error(`has ${keys.length} keys; at most ${GATEWAY_LIMITS.payloadFields}`)
    const payload: Array<readonly [string, ValueSource]> = keys.map((k) => {
      const src = payloadNode.get(k)
      const text = src.string()
      return [k, src.parsed(() => parseValueSource(text))] as const
    })
    if (keyed !== undefined && keyed.source === null && keyed.spec.kind === 'field' && !keys.includes(keyed.spec.field)) {
      throw payloadNode.error(`"${event}" is keyed by field "${keyed.spec.field}": the payload needs that field, or give the rule a "key"`)
    }
    return { on: on, model: r.get('model').optionalString() ?? null, code, where, action: { kind: 'raise', event, payload }, ...keyedPart }
  })
}
