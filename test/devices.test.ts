/**
 * The device chain end to end, with real processes: simulated devices on a pty (through a real
 * socat) and on TCP -> `herald gateway` (a child process, SIGKILLed and restarted) -> `herald broker`
 * (a child process, SIGKILLed once) -> a client. Meanwhile devices reboot, a TCP line is unplugged and replugged,
 * the pty's cable is pulled out and put back, and garbage, cut frames and bad checksums are injected.
 * Every report a device made must arrive at the client exactly once ([GW-ONCE-1]).
 */
import { readFileSync } from 'node:fs'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ClientEndpoint, type HeraldEvent } from '@herald/client-endpoint'
import { parseFaults, startSim, type EmittedReport, type SimHandle } from '@herald/firmware-sim'
import { waitFor } from '@herald/protocol/testing'
import { tempDir } from '@herald/node-runtime/testing'
import { startBrokerProcess, startGatewayProcess, writeTestSite } from './support/processes.js'
import type { Proc } from './support/processes.js'
import { PtyPair } from './support/pty-pair.js'
import { deviceChainYaml } from './support/gateway-yaml.js'
import { SECRETS } from './support/site.js'

const GATEWAY_KILLS = 3

function gatewayConfig (brokerUrl: string, data: string, devices: readonly string[]): string {
  return deviceChainYaml(brokerUrl, data, devices, '500ms')
}

const key = (r: { serial: string, boot: number, seq: number }): string => `${r.serial}/${r.boot}:${r.seq}`
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

describe('devices -> gateway -> broker -> client, through faults and gateway kills', () => {
  let dir: { path: string, remove: () => Promise<void> }
  const closers: Array<() => Promise<void>> = []

  beforeAll(async () => { dir = await tempDir('herald-devices-') })
  afterAll(async () => {
    for (const c of closers.reverse()) await c().catch(() => {})
    await dir.remove()
  })

  it('delivers every report exactly once', async () => {
    const site = await writeTestSite(dir.path)
    let broker = await startBrokerProcess(site, join(dir.path, 'broker'), 0)
    closers.push(() => broker.proc.kill())

    const emitted: EmittedReport[] = []
    const onEmitted = (r: EmittedReport): void => { emitted.push(r) }
    const lineFaults = parseFaults('garbage=0.02,truncate=0.03,badcrc=0.03')
    // two thermostats and a door on TCP ports; one thermostat reboots twice, the door's line is unplugged now and then
    const tcpSim: SimHandle = await startSim({
      devices: [
        { model: 'thermostat', count: 2, faults: { ...lineFaults, ...parseFaults('reboot=@3s+7s') } },
        { model: 'door', count: 1, faults: { ...lineFaults, ...parseFaults('unplug=800ms/4s') } }
      ],
      link: { kind: 'tcp', host: '127.0.0.1', basePort: 0 },
      rate: 20,
      seed: 7,
      faults: lineFaults,
      onEmitted
    })
    closers.push(() => tcpSim.close())
    // a pump on a pty, whose cable the test pulls out and puts back
    const pty = new PtyPair(dir.path, 'pump')
    await pty.plugIn()
    closers.push(() => pty.unplug())
    const serialSim: SimHandle = await startSim({
      devices: [{ model: 'pump', count: 1 }],
      link: { kind: 'serial', paths: [pty.deviceEnd] },
      rate: 20,
      seed: 7,
      faults: lineFaults,
      onEmitted
    })
    closers.push(() => serialSim.close())

    const devices = [...tcpSim.devices.map((d) => d.url), `serial://${pty.gatewayEnd}?baud=115200`]
    const configFile = join(dir.path, 'gateway.yaml')
    await writeFile(configFile, gatewayConfig(broker.url, join(dir.path, 'gateway'), devices))
    let gateway: Proc = await startGatewayProcess(configFile)
    closers.push(() => gateway.kill())

    const received: HeraldEvent[] = []
    const client = new ClientEndpoint({ url: broker.url, clientName: 'devices-test', user: 'alice', password: SECRETS.alice, reconnectInitialMs: 20, reconnectMaxMs: 200 })
    closers.push(() => client.close())
    client.start()
    for (const event of ['readings', 'alarms']) await client.subscribe(event, { start: 'all' }, (e) => { received.push(e) })

    // the run: gateway SIGKILLed and restarted; the pty cable pulled out once; a broker outage once
    for (let kill = 1; kill <= GATEWAY_KILLS; kill++) {
      await sleep(1500)
      if (kill === 2) {
        await pty.unplug()
        await sleep(600)
        await pty.plugIn()
      }
      if (kill === 3) {
        // the broker is away for a while: the gateway keeps handling reports into its backlog
        await broker.proc.kill()
        await sleep(1000)
        broker = await startBrokerProcess(site, join(dir.path, 'broker'), broker.port)
      }
      await gateway.kill()
      await sleep(300)
      gateway = await startGatewayProcess(configFile)
    }
    await sleep(1500)

    // the devices stop making reports and resend until everything is acknowledged
    tcpSim.setReporting(false)
    serialSim.setReporting(false)
    await waitFor(() => tcpSim.summary().outbox === 0 && serialSim.summary().outbox === 0, 'every device outbox drained', 60_000)
    await waitFor(() => received.length >= emitted.length, `${emitted.length} reports at the client (have ${received.length})`, 60_000)

    expect(emitted.length).toBeGreaterThan(300) // about 4 devices × 20 reports/s × 7 s
    const got = received.map((e) => key(e.payload as { serial: string, boot: number, seq: number }))
    const want = emitted.map(key)
    expect(new Set(got).size).toBe(got.length) // nothing twice
    expect(new Set(got)).toEqual(new Set(want)) // nothing lost
    expect(received.filter((e) => e.name === 'alarms').length).toBe(emitted.filter((r) => r.type !== 'STATE').length)

    // the faults really happened
    const faults = tcpSim.summary().faults
    expect(faults.garbage).toBeGreaterThan(0)
    expect(faults.truncated).toBeGreaterThan(0)
    expect(faults.badCrc).toBeGreaterThan(0)
    expect(faults.reboots).toBe(4) // two thermostats, twice each
    expect(faults.unplugs).toBeGreaterThan(0)
    expect(new Set(emitted.map((r) => r.boot))).toEqual(new Set([1, 2, 3]))
    expect(serialSim.summary().faults.badCrc).toBeGreaterThan(0)
    // the gateway's status file: every line online, and no report was lost before it reached the gateway
    const statusFile = join(dir.path, 'gateway', 'status.json')
    const readStatus = (): { totals: { gaps: number, handled: number }, devices: Array<{ state: string }> } | null => {
      try {
        return JSON.parse(readFileSync(statusFile, 'utf8')) as { totals: { gaps: number, handled: number }, devices: Array<{ state: string }> }
      } catch {
        return null
      }
    }
    await waitFor(() => readStatus()?.devices.every((d) => d.state === 'online') === true, 'every device line online in status.json')
    expect(readStatus()?.totals.gaps).toBe(0)
  }, 180_000)
})

describe('herald gateway command line', () => {
  it('refuses a wrong configuration with exit code 2, naming the file, the line and the entry', async () => {
    const d = await tempDir('herald-gwcli-')
    try {
      const file = join(d.path, 'bad.yaml')
      await writeFile(file, gatewayConfig('mqtt://127.0.0.1:1', join(d.path, 'data'), ['tcp://127.0.0.1:9']).replace('raise: readings', 'raise: readingz'))
      const { spawnSync } = await import('node:child_process')
      const r = spawnSync(process.execPath, [join(import.meta.dirname, '..', 'cli', 'bin', 'herald.js'), 'gateway', '--config', file], { encoding: 'utf8' })
      expect(r.status).toBe(2)
      expect(r.stderr).toBe(`herald: ${file}:19: mapping[0].raise: unknown event "readingz" (this service raises: readings, alarms) [CONFIG_INVALID]\n`)
    } finally {
      await d.remove()
    }
  })
})
