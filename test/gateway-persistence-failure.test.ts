/**
 * [GW-ACK-2] [SVC-PERSIST-FAIL-1] The gateway's SQLite level fails (a real SQLITE_FULL), the gateway
 * goes on in memory, and is then SIGKILLed: with real processes (the gateway and the broker as child
 * processes, simulated devices on TCP ports), every report a device made still reaches the client
 * exactly once, because while the gateway is not durable a report stays in its device's outbox
 * until the broker has acknowledged its events.
 */
import { readFileSync } from 'node:fs'
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ClientEndpoint, type HeraldEvent } from '@herald/client-endpoint'
import { startSim, type EmittedReport, type SimHandle } from '@herald/firmware-sim'
import { waitFor } from '@herald/protocol/testing'
import { tempDir } from '@herald/node-runtime/testing'
import { startBrokerProcess, startFixture, writeTestSite } from './support/processes.js'
import type { Proc } from './support/processes.js'
import { deviceChainYaml } from './support/gateway-yaml.js'
import { SECRETS } from './support/site.js'
import { freePort } from './support/ports.js'

function gatewayConfig (brokerUrl: string, data: string, devices: readonly string[]): string {
  return deviceChainYaml(brokerUrl, data, devices, '200ms')
}

interface StatusFile {
  durable: boolean
  acks: string
  service: { backlog: number, durable: boolean }
  devices: Array<{ state: string, awaitingBroker: number }>
}

const key = (r: { serial: string, boot: number, seq: number }): string => `${r.serial}/${r.boot}:${r.seq}`

describe('gateway whose SQLite level fails, then is SIGKILLed', () => {
  let dir: { path: string, remove: () => Promise<void> }
  const closers: Array<() => Promise<void>> = []
  beforeAll(async () => { dir = await tempDir('herald-gw-full-') })
  afterAll(async () => {
    for (const c of closers.reverse()) await c().catch(() => {})
    await dir.remove()
  })

  /** Simulated devices, a gateway configuration on them, and the broker's port (no broker yet). */
  async function scene (name: string): Promise<{ site: string, brokerPort: number, brokerUrl: string, sim: SimHandle, emitted: EmittedReport[], args: object, base: string, readStatus: () => StatusFile | null }> {
    const base = join(dir.path, name)
    await mkdir(base)
    const site = await writeTestSite(base)
    const brokerPort = await freePort()
    const brokerUrl = `mqtt://127.0.0.1:${brokerPort}`
    const emitted: EmittedReport[] = []
    const sim: SimHandle = await startSim({
      devices: [{ model: 'thermostat', count: 2 }],
      link: { kind: 'tcp', host: '127.0.0.1', basePort: 0 },
      rate: 100,
      seed: 11,
      onEmitted: (r) => { emitted.push(r) }
    })
    closers.push(() => sim.close())
    const configFile = join(base, 'gateway.yaml')
    const dataDir = join(base, 'gateway')
    await writeFile(configFile, gatewayConfig(brokerUrl, dataDir, sim.devices.map((d) => d.url)))
    const statusFile = join(dataDir, 'status.json')
    const readStatus = (): StatusFile | null => {
      try {
        return JSON.parse(readFileSync(statusFile, 'utf8')) as StatusFile
      } catch {
        return null
      }
    }
    // a real SQLITE_FULL once the file reaches 48 KiB (a few hundred reports)
    return { site, brokerPort, brokerUrl, sim, emitted, args: { config: configFile, maxSizeBytes: 48 * 1024 }, base, readStatus }
  }

  async function gatewayProcess (args: object): Promise<Proc> {
    const p = startFixture('gateway-proc.mjs', args)
    closers.push(() => p.kill())
    await p.waitLine((l) => l === 'gateway running')
    return p
  }

  async function subscribedClient (brokerUrl: string, name: string): Promise<HeraldEvent[]> {
    const received: HeraldEvent[] = []
    const client = new ClientEndpoint({ url: brokerUrl, clientName: name, user: 'alice', password: SECRETS.alice, reconnectInitialMs: 20, reconnectMaxMs: 200 })
    closers.push(() => client.close())
    client.start()
    for (const event of ['readings', 'alarms']) await client.subscribe(event, { start: 'all' }, (e) => { received.push(e) })
    return received
  }

  /** Stops the reports and waits until every report made is acknowledged to its device, and uploaded. */
  async function settle (sim: SimHandle, readStatus: () => StatusFile | null, received: readonly HeraldEvent[], emitted: readonly EmittedReport[]): Promise<void> {
    sim.setReporting(false)
    await waitFor(() => sim.summary().outbox === 0, 'every device outbox drained', 60_000)
    await waitFor(() => readStatus()?.service.backlog === 0, 'the gateway backlog empty', 60_000)
    await waitFor(() => received.length >= emitted.length, `${emitted.length} reports at the client`, 60_000).catch((err: unknown) => {
      throw new Error(`${(err as Error).message}; have ${received.length}`)
    })
  }

  it('every report still arrives exactly once', async () => {
    // the broker is down at first: the backlog grows in the gateway's file until it is full
    const { site, brokerPort, brokerUrl, sim, emitted, args, base, readStatus } = await scene('once')
    const first = await gatewayProcess(args)
    const failed = await first.waitLine((l) => l.startsWith('persistence failed '), 60_000)
    expect(failed).toMatch(/^persistence failed PERSISTENCE_FAILED lost=0$/)
    // from now on the reports are held in memory only: the devices keep them until the broker has them
    await waitFor(() => {
      const s = readStatus()
      return s !== null && s.durable === false && s.devices.reduce((n, d) => n + d.awaitingBroker, 0) >= 20
    }, 'status.json: not durable, 20 reports waiting for the broker', 60_000)
    expect(readStatus()).toMatchObject({ durable: false, acks: 'after-broker-ack', service: { durable: false } })
    expect(sim.summary().outbox).toBeGreaterThanOrEqual(20)
    await first.kill() // everything held in memory is gone

    await gatewayProcess(args)
    const broker = await startBrokerProcess(site, join(base, 'broker'), brokerPort)
    closers.push(() => broker.proc.kill())
    const received = await subscribedClient(brokerUrl, 'full-test')
    await waitFor(() => received.length >= 100, 'reports flowing to the client', 60_000)
    // the devices stop making reports and resend until everything is acknowledged
    await settle(sim, readStatus, received, emitted)

    const got = received.map((e) => key(e.payload as { serial: string, boot: number, seq: number }))
    expect(got.length).toBe(emitted.length)
    expect(new Set(got).size).toBe(got.length) // nothing twice
    expect(new Set(got)).toEqual(new Set(emitted.map(key))) // nothing lost
    expect(emitted.length).toBeGreaterThan(400)
  }, 240_000)

  it('killed again while memory-only with the broker up, and restarted on the failed file: nothing lost; only reports unacknowledged at the kill come twice', async () => {
    const { site, brokerPort, brokerUrl, sim, emitted, args, base, readStatus } = await scene('again')
    const first = await gatewayProcess(args)
    await first.waitLine((l) => l.startsWith('persistence failed '), 60_000)
    const broker = await startBrokerProcess(site, join(base, 'broker'), brokerPort)
    closers.push(() => broker.proc.kill())
    const received = await subscribedClient(brokerUrl, 'again-test')
    // memory-only events reach the broker, and their reports are acknowledged to the devices
    const atFailure = emitted.length
    await waitFor(() => received.length >= atFailure + 200, 'reports made after the failure at the client', 60_000)
    expect(readStatus()).toMatchObject({ durable: false, acks: 'after-broker-ack' })

    // SIGKILL: what the devices were not told is resent; the broker holds seqs the file never saw
    const unacknowledged = sim.summary().outbox
    const before = emitted.length
    await first.kill()
    const bound = unacknowledged + (emitted.length - before)
    await gatewayProcess(args)
    const atRestart = received.length
    await waitFor(() => received.length >= atRestart + 200, 'reports flowing after the restart', 60_000)
    await settle(sim, readStatus, received, emitted)

    const got = received.map((e) => key(e.payload as { serial: string, boot: number, seq: number }))
    expect(new Set(got)).toEqual(new Set(emitted.map(key))) // nothing lost, not even the new run's first events [SVC-SEQ-1]
    expect(got.length - new Set(got).size).toBeLessThanOrEqual(bound) // twice: only reports unacknowledged at the kill
  }, 240_000)
})
