import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ConfigError } from '@herald/protocol'
import { makeTestCa } from '@herald/node-runtime/testing'
import { loadGatewayConfig, parseGatewayConfig } from './gateway-config.js'
import { parseDeviceUrl } from './device-url.js'

const GOOD = `# a gateway
service:
  id: plant-1
  secret: plant-secret-1
broker: mqtt://127.0.0.1:1883
data: ./data
events:
  - name: temperature
    category: replacing
  - name: readings
    category: queueing
    lifetime: 1d
    maxPayload: 16KiB
  - name: overheat
    category: replacing
devices:
  - name: boiler-room
    url: tcp://127.0.0.1:7000
    model: thermostat
  - url: serial:///dev/ttyUSB0?baud=9600
lines:
  staleAfter: 5s
mapping:
  - on: STATE
    model: thermostat
    raise: temperature
    payload:
      device: $serial
      celsius: temp:number
  - on: STATE
    raise: readings
    payload: { device: $serial, values: $fields }
  - on: ALARM
    code: overheat
    raise: overheat
    payload: { device: $serial }
  - on: CLEAR
    code: overheat
    raiseNull: overheat
`

/** The config with line `n` (1-based) replaced by `text`. */
function withLine (n: number, text: string): string {
  const lines = GOOD.split('\n')
  lines[n - 1] = text
  return lines.join('\n')
}

async function errorOf (text: string, env: NodeJS.ProcessEnv = {}): Promise<string> {
  try {
    await parseGatewayConfig('gw.yaml', text, env)
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError)
    return (err as Error).message
  }
  throw new Error('expected a ConfigError')
}

describe('gateway configuration', () => {
  let dir = ''
  beforeAll(async () => { dir = await mkdtemp(join(tmpdir(), 'herald-gwcfg-')) })
  afterAll(async () => { await rm(dir, { recursive: true, force: true }) })

  it('reads a valid file, with defaults and paths relative to the file', async () => {
    const file = join(dir, 'gateway.yaml')
    await writeFile(file, GOOD)
    const c = await loadGatewayConfig(file)
    expect(c.serviceId).toBe('plant-1')
    expect(c.secret).toBe('plant-secret-1')
    expect(c.dataDir).toBe(join(dir, 'data'))
    expect(c.events.map((e) => [e.name, e.category, e.lifetimeMs, e.maxPayloadBytes])).toEqual([
      ['temperature', 'replacing', null, 65536], ['readings', 'queueing', 86_400_000, 16384], ['overheat', 'replacing', null, 65536]
    ])
    expect(c.devices).toEqual([
      { name: 'boiler-room', url: 'tcp://127.0.0.1:7000', address: { kind: 'tcp', host: '127.0.0.1', port: 7000 }, model: 'thermostat' },
      { name: 'serial:///dev/ttyUSB0?baud=9600', url: 'serial:///dev/ttyUSB0?baud=9600', address: { kind: 'serial', path: '/dev/ttyUSB0', baudRate: 9600 }, model: null }
    ])
    expect(c.lines).toEqual({ reopenInitialMs: 200, reopenMaxMs: 10_000, staleAfterMs: 5000 })
    expect(c.mapping.map((r) => [r.on, r.action.kind, r.action.event])).toEqual([
      ['STATE', 'raise', 'temperature'], ['STATE', 'raise', 'readings'], ['ALARM', 'raise', 'overheat'], ['CLEAR', 'raiseNull', 'overheat']
    ])
    expect(c.persistence).toEqual({ memoryCapacityBytes: 64 * 1024 * 1024, fileCapacityBytes: 1024 ** 3, policy: 'dropOldest' })
  })

  it('takes the events of the service from a site file', async () => {
    const site = join(process.cwd(), 'examples', 'site.yaml')
    const text = GOOD.replace(/^events:\n(?: {2}.*\n)+/m, `site: ${site}\n`).replace('id: plant-1', 'id: boiler-1').replace(/mapping:[\s\S]*$/, 'mapping:\n  - on: STATE\n    raise: readings\n    payload: { all: $fields }\n')
    const c = await parseGatewayConfig('gw.yaml', text)
    expect(c.events.map((e) => e.name)).toEqual(expect.arrayContaining(['temperature', 'readings', 'alarms']))
  })

  it('reads the secret from the environment or a file', async () => {
    const env = GOOD.replace('  secret: plant-secret-1', '  secretEnv: PLANT_SECRET')
    expect((await parseGatewayConfig('gw.yaml', env, { PLANT_SECRET: 's3cret-value' })).secret).toBe('s3cret-value')
    expect(await errorOf(env)).toBe('gw.yaml:4: service.secretEnv: the environment variable PLANT_SECRET is not set')
    const secretFile = join(dir, 'secret.txt')
    await writeFile(secretFile, 'from-a-file\n')
    expect((await parseGatewayConfig(join(dir, 'gw.yaml'), GOOD.replace('  secret: plant-secret-1', '  secretFile: secret.txt'))).secret).toBe('from-a-file')
  })

  it('takes an optional metrics listener [OPS-METRICS-1]: a port, the host 127.0.0.1 by default', async () => {
    expect((await parseGatewayConfig('gw.yaml', GOOD)).metrics).toBeNull()
    expect((await parseGatewayConfig('gw.yaml', `${GOOD}metrics:\n  port: 9101\n`)).metrics).toEqual({ port: 9101, host: '127.0.0.1' })
    expect((await parseGatewayConfig('gw.yaml', `${GOOD}metrics: { port: 0, host: 0.0.0.0 }\n`)).metrics).toEqual({ port: 0, host: '0.0.0.0' })
    expect(await errorOf(`${GOOD}metrics:\n  port: 70000\n`)).toMatch(/^gw\.yaml:\d+: metrics\.port: must be a port number from 0 to 65535, got 70000$/)
    expect(await errorOf(`${GOOD}metrics:\n  host: 127.0.0.1\n`)).toMatch(/^gw\.yaml:\d+: metrics\.port: is required$/)
  })

  it('[GW-KEY-1] takes keyed events and a key per rule; names every misuse of a key', async () => {
    const keyed = GOOD.replace('  - name: temperature\n    category: replacing\n', '  - name: temperature\n    category: replacing\n    key: { field: device }\n')
      .replace('  - name: overheat\n    category: replacing\n', '  - name: overheat\n    category: replacing\n    key: raise\n')
    const withKeys = keyed.replace('    payload: { device: $serial }\n', '    payload: { device: $serial }\n    key: $serial\n').replace('    raiseNull: overheat\n', '    raiseNull: overheat\n    key: $device\n')
    const c = await parseGatewayConfig('gw.yaml', withKeys)
    expect(c.events.find((e) => e.name === 'temperature')?.key).toEqual({ kind: 'field', field: 'device' })
    expect(c.events.find((e) => e.name === 'overheat')?.key).toEqual({ kind: 'raise' })
    expect(c.mapping[0]?.keyed).toEqual({ spec: { kind: 'field', field: 'device' }, source: null })
    expect(c.mapping[2]?.keyed?.source).toEqual({ kind: 'meta', name: 'serial' })
    expect(c.mapping[3]?.keyed?.source).toEqual({ kind: 'meta', name: 'device' })
    // a raise-keyed event without a key in its rule; a key on an unkeyed event; a key on a queueing event
    expect(await errorOf(keyed)).toMatch(/mapping\[2\]: "overheat" is keyed by the raise: give the rule a "key"/)
    expect(await errorOf(withKeys.replace('    payload: { device: $serial, values: $fields }\n', '    payload: { device: $serial, values: $fields }\n    key: $serial\n'))).toMatch(/mapping\[1\]\.key: "readings" is not a keyed event/)
    expect(await errorOf(withKeys.replace('    lifetime: 1d\n', '    lifetime: 1d\n    key: raise\n'))).toMatch(/events\[1\]\.key: only a replacing event can have a key/)
    expect(await errorOf(withKeys.replace('      device: $serial\n      celsius', '      serial: $serial\n      celsius'))).toMatch(/mapping\[0\]\.payload: "temperature" is keyed by field "device"/)
  })

  it('names the file, the line and the entry of every mistake', async () => {
    expect(await errorOf(withLine(26, '    raise: tempreature'))).toBe('gw.yaml:26: mapping[0].raise: unknown event "tempreature" (this service raises: temperature, readings, overheat)')
    expect(await errorOf(withLine(29, '      celsius: temp:float'))).toBe('gw.yaml:29: mapping[0].payload.celsius: "temp:float": unknown type "float" (one of string, number, int, bool)')
    expect(await errorOf(withLine(18, '    url: tcp://127.0.0.1'))).toBe('gw.yaml:18: devices[0].url: "tcp://127.0.0.1": a port from 1 to 65535 is required')
    expect(await errorOf(withLine(20, '  - url: serial:///dev/ttyUSB0?baud=9601'))).toMatch(/^gw.yaml:20: devices\[1\]\.url: .*baud 9601 is not one of/)
    expect(await errorOf(withLine(22, '  staleAfter: soon'))).toBe('gw.yaml:22: lines.staleAfter: "soon" is not a duration (use a number and a unit: ms, s, m, h, d, w, e.g. "10m" or "7d")')
    expect(await errorOf(withLine(39, '    raiseNull: readings'))).toBe('gw.yaml:39: mapping[3].raiseNull: "readings" is queueing; only a replacing event can be null')
    expect(await errorOf(withLine(24, '  - on: STATUS'))).toBe('gw.yaml:24: mapping[0].on: "STATUS" is not a data frame type (STATE, ALARM or CLEAR)')
    expect(await errorOf(withLine(5, 'brokr: mqtt://127.0.0.1:1883'))).toBe('gw.yaml:5: brokr: unknown key "brokr" (expected one of: service, broker, data, site, events, persistence, devices, lines, mapping, status, metrics)')
    expect(await errorOf(withLine(5, 'broker: http://x'))).toBe('gw.yaml:5: broker: "http://x" is not a broker URL like mqtt://127.0.0.1:1883, or mqtts://broker.example:8883 for TLS')
    expect(await errorOf(withLine(17, '  - name: serial:///dev/ttyUSB0?baud=9600'))).toBe('gw.yaml:20: devices[1].name: device name "serial:///dev/ttyUSB0?baud=9600" is used twice')
    expect(await errorOf(withLine(12, '    lifetime: forever'))).toMatch(/^gw.yaml:12: events\[1\]\.lifetime: "forever" is not a duration/)
    expect(await errorOf('service: [1\n')).toMatch(/^gw.yaml:\d+: not valid YAML/)
    expect(await errorOf('')).toBe('gw.yaml:1: the file is empty')
    expect(await errorOf(GOOD.replace(/mapping:[\s\S]*$/, ''))).toBe('gw.yaml:2: mapping: is required: which device reports raise which events')
  })

  it('takes an mqtts:// broker with TLS files relative to the file [CONN-TLS-1], and names the line of each mistake', async () => {
    const ca = await makeTestCa(dir, 'gw-ca')
    const client = await ca.issueClient('gw-client', 'plant-1')
    const { readFile } = await import('node:fs/promises')
    const tlsBroker = (lines: string): string => GOOD.replace('broker: mqtt://127.0.0.1:1883', `broker:\n${lines}`)
    const at = join(dir, 'gw.yaml')
    // a bare mqtts:// URL: the system's root CAs
    const bare = await parseGatewayConfig(at, GOOD.replace('mqtt://127.0.0.1:1883', 'mqtts://broker.example:8883'))
    expect([bare.brokerUrl, bare.brokerTls]).toEqual(['mqtts://broker.example:8883', null])
    const full = await parseGatewayConfig(at, tlsBroker('  url: mqtts://127.0.0.1:8883\n  ca: gw-ca.crt\n  cert: gw-client.crt\n  key: gw-client.key\n  servername: localhost'))
    expect(full.brokerUrl).toBe('mqtts://127.0.0.1:8883')
    expect(full.brokerTls).toEqual({ ca: await readFile(ca.certFile), cert: await readFile(client.certFile), key: await readFile(client.keyFile), servername: 'localhost' })
    const caOnly = await parseGatewayConfig(at, tlsBroker(`  url: mqtts://127.0.0.1:8883\n  ca: ${ca.certFile}`))
    expect(caOnly.brokerTls).toEqual({ ca: await readFile(ca.certFile) })
    expect((await parseGatewayConfig(at, tlsBroker('  url: mqtt://127.0.0.1:1883'))).brokerTls).toBeNull()

    const err = async (text: string): Promise<string> => {
      try {
        await parseGatewayConfig(at, text)
      } catch (e) {
        expect(e).toBeInstanceOf(ConfigError)
        return (e as Error).message.replaceAll(dir, '<dir>')
      }
      throw new Error('expected a ConfigError')
    }
    expect(await err(tlsBroker('  url: mqtt://127.0.0.1:1883\n  ca: gw-ca.crt'))).toBe(`${at}:7: broker.ca: TLS options need an mqtts:// URL; "mqtt://127.0.0.1:1883" is plain MQTT, where they would be ignored`.replace(dir, '<dir>'))
    expect(await err(tlsBroker('  url: mqtts://127.0.0.1:8883\n  ca: missing.crt'))).toMatch(/gw\.yaml:7: broker\.ca: cannot read <dir>\/missing\.crt: ENOENT/)
    expect(await err(tlsBroker('  url: mqtts://127.0.0.1:8883\n  cert: gw-client.crt'))).toMatch(/gw\.yaml:7: broker\.cert: cert and key go together/)
    expect(await err(tlsBroker('  url: mqtts://127.0.0.1:8883\n  cert: gw-client.crt\n  key: gw-ca.key'))).toMatch(/gw\.yaml:6: broker: option "tls": .*key the key of cert/)
    expect(await err(tlsBroker('  url: mqtts://127.0.0.1:8883\n  ca: gw-client.key'))).toMatch(/gw\.yaml:6: broker: option "tls.ca" holds no PEM certificate/)
    expect(await err(tlsBroker('  url: mqtts://127.0.0.1:8883\n  cafile: gw-ca.crt'))).toMatch(/gw\.yaml:7: broker\.cafile: unknown key "cafile" \(expected one of: url, ca, cert, key, servername\)/)
    expect(await err(tlsBroker('  ca: gw-ca.crt'))).toMatch(/gw\.yaml:6: broker\.url: is required/)
  })
})

describe('device URLs', () => {
  it('parses serial and TCP addresses', () => {
    expect(parseDeviceUrl('serial:///dev/ttyUSB0')).toEqual({ kind: 'serial', path: '/dev/ttyUSB0', baudRate: 115200 })
    expect(parseDeviceUrl('serial:///dev/pts/7?baud=9600')).toEqual({ kind: 'serial', path: '/dev/pts/7', baudRate: 9600 })
    expect(parseDeviceUrl('tcp://10.0.0.5:4001')).toEqual({ kind: 'tcp', host: '10.0.0.5', port: 4001 })
    expect(parseDeviceUrl('tcp://[::1]:4001')).toEqual({ kind: 'tcp', host: '::1', port: 4001 })
  })

  it('says what is wrong with a bad one', () => {
    expect(() => parseDeviceUrl('serial://dev/ttyUSB0')).toThrow('a serial URL has no host; write serial:///dev/ttyUSB0 (three slashes)')
    expect(() => parseDeviceUrl('serial:///dev/ttyUSB0?parity=even')).toThrow('unknown parameter "parity"')
    expect(() => parseDeviceUrl('udp://x:1')).toThrow('unknown scheme udp:')
    expect(() => parseDeviceUrl('tcp://x:70000')).toThrow(/is not a device URL|a port from 1 to 65535/)
    expect(() => parseDeviceUrl('nonsense')).toThrow('is not a device URL')
  })
})
