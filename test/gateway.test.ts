/**
 * The gateway against a hand-written device on a real TCP socket, a real broker and a real client:
 * what it acknowledges, what it raises, and what it refuses ([DEV-GW-*], [DEV-ACK-1], [GW-*]).
 */
import { chmod, mkdir, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { parseGatewayConfig, startGateway, type Gateway } from '@herald/gateway'
import { createTwoLevelServicePersistence, type AppendOutcome, type ServicePersistence } from '@herald/service-endpoint'
import type { Logger, RaisedEvent } from '@herald/protocol'
import { waitFor } from '@herald/protocol/testing'
import { collect } from './support/collect.js'
import { Harness } from './support/harness.js'
import { ScriptedDevice } from './support/scripted-device.js'
import { deviceChainYaml, gatewayYaml } from './support/gateway-yaml.js'
import { freePort } from './support/ports.js'

function configText (brokerUrl: string, data: string, devices: readonly string[]): string {
  return gatewayYaml(brokerUrl, data, devices, `  - { name: readings, category: queueing, lifetime: 1d }
  - { name: temperature, category: replacing }
  - { name: alarms, category: queueing, lifetime: 7d }`, `lines:
  reopenInitial: 20ms
  reopenMax: 200ms
  staleAfter: 10s
mapping:
  - on: STATE
    raise: readings
    payload: { serial: $serial, boot: $boot, seq: $seq, n: n:int }
  - on: STATE
    where: { kind: temp }
    raise: temperature
    payload: { celsius: temp:number }
  - on: ALARM
    raise: alarms
    payload: { serial: $serial, code: $code }
`)
}

describe('gateway with a scripted device', () => {
  let h: Harness
  let brokerUrl = ''
  const gateways: Gateway[] = []

  beforeEach(async () => {
    h = await Harness.create()
    brokerUrl = (await h.broker()).url
  })
  afterEach(async () => {
    for (const g of gateways.splice(0)) await g.close()
    await h.close()
  })

  async function gateway (devices: readonly string[]): Promise<Gateway> {
    const config = await parseGatewayConfig(join(h.dir, 'gateway.yaml'), configText(brokerUrl, join(h.dir, 'gw'), devices))
    const g = await startGateway(config)
    gateways.push(g)
    return g
  }

  /** A scripted device, a client collecting `readings`, and a gateway on the device's line, connected. */
  async function scene (): Promise<{ device: ScriptedDevice, readings: Awaited<ReturnType<typeof collect>>, g: Gateway }> {
    const device = await ScriptedDevice.listen()
    h.onClose(() => device.close())
    const readings = await collect(h.client(brokerUrl, 'alice', 'watch'), 'readings', { start: 'all' })
    const g = await gateway([device.url])
    await device.connected()
    return { device, readings, g }
  }

  /** The `n` of each reading received. */
  const ns = (readings: Awaited<ReturnType<typeof collect>>): number[] => readings.payloads().map((p) => (p as { n: number }).n)

  it('acknowledges a report only once its events are durable, raises each report once, and re-acknowledges a resent one', async () => {
    const { device, readings, g } = await scene()
    await waitFor(() => device.syncs() >= 1, 'SYNC when the line opens')
    device.hello('TH-1', 1, { boot: 1, seq: 1 })
    for (let seq = 1; seq <= 5; seq++) device.send(device.state(1, seq, { n: String(seq) }))
    await device.acked(1, 5)
    expect(g.endpoint.marks().get('device:TH-1')).toBe('1:5')
    // the ACK was lost: the device resends 3..5 and one new report
    for (let seq = 3; seq <= 6; seq++) device.send(device.state(1, seq, { n: String(seq) }))
    await device.acked(1, 6)
    await readings.until(6)
    expect(readings.payloads()).toEqual([1, 2, 3, 4, 5, 6].map((n) => ({ serial: 'TH-1', boot: 1, seq: n, n })))
    const status = g.status()
    expect(status.devices[0]).toMatchObject({ state: 'online', serial: 'TH-1', model: 'thermostat', mark: '1:6' })
    expect(status.devices[0]?.counters).toMatchObject({ handled: 6, raised: 6, duplicates: 3, outOfOrder: 0 })
  })

  it('keeps its marks across a restart: frames resent to the new gateway are not raised again', async () => {
    const device = await ScriptedDevice.listen()
    h.onClose(() => device.close())
    const client = h.client(brokerUrl, 'alice', 'watch')
    const readings = await collect(client, 'readings', { start: 'all' })
    const first = await gateway([device.url])
    await device.connected()
    device.hello('TH-2', 3, { boot: 3, seq: 10 })
    for (let seq = 10; seq <= 14; seq++) device.send(device.state(3, seq, { n: String(seq) }))
    await device.acked(3, 14)
    await first.close()
    gateways.splice(gateways.indexOf(first), 1)

    await gateway([device.url])
    await device.connected(2)
    // the device never saw the ACKs of 12..14
    device.hello('TH-2', 3, { boot: 3, seq: 12 })
    await device.acked(3, 14) // answered from the mark read back from the file
    for (let seq = 12; seq <= 16; seq++) device.send(device.state(3, seq, { n: String(seq) }))
    await device.acked(3, 16)
    await readings.until(7)
    expect(ns(readings)).toEqual([10, 11, 12, 13, 14, 15, 16])
  })

  it('counts corrupt frames without stopping, drops a frame after a lost one, and asks for a resend', async () => {
    const { device, readings, g } = await scene()
    device.hello('TH-3', 1, { boot: 1, seq: 1 })
    device.send(device.state(1, 1, { n: '1' }))
    await device.acked(1, 1)
    const syncsBefore = device.syncs()
    device.raw('garbage \x00\xff bytes\n$STATE boot=1 seq=2 n=2*00000000\n$STATE boot=1 se')
    device.send(device.state(1, 3, { n: '3' })) // 2 never arrived intact
    await waitFor(() => device.syncs() > syncsBefore, 'SYNC after an out-of-order frame')
    device.hello('TH-3', 1, { boot: 1, seq: 2 })
    device.send(device.state(1, 2, { n: '2' }), device.state(1, 3, { n: '3' }))
    await device.acked(1, 3)
    await readings.until(3)
    expect(ns(readings)).toEqual([1, 2, 3])
    const d = g.status().devices[0]
    expect(d?.corrupt).toBe(2) // the bad CRC and the cut frame
    expect(d?.counters).toMatchObject({ handled: 3, outOfOrder: 1 })
  })

  it('crosses a reboot only when the new boot names the last frame of the old one', async () => {
    const { device, readings } = await scene()
    device.hello('TH-4', 1, { boot: 1, seq: 1 })
    device.send(device.state(1, 1, { n: '1' }))
    await device.acked(1, 1)
    // (1,2) is lost on the line; the device reboots and sends boot 2's first frame, naming (1,2)
    device.send(device.state(2, 1, { n: '21', prev: '1:2' }))
    device.hello('TH-4', 2, { boot: 1, seq: 2 })
    device.send(device.state(1, 2, { n: '2' }), device.state(2, 1, { n: '21', prev: '1:2' }))
    await device.acked(2, 1)
    await readings.until(3)
    expect(ns(readings)).toEqual([1, 2, 21])
  })

  it('handles a report the mapping cannot fully use, and reports why', async () => {
    const device = await ScriptedDevice.listen()
    h.onClose(() => device.close())
    const client = h.client(brokerUrl, 'alice', 'watch')
    const temps = await collect(client, 'temperature', { start: 'all' })
    const readings = await collect(client, 'readings', { start: 'all' })
    const g = await gateway([device.url])
    await device.connected()
    device.hello('TH-5', 1, { boot: 1, seq: 1 })
    device.send(device.state(1, 1, { n: '1', kind: 'temp', temp: 'n/a' }), device.state(1, 2, { n: '2', kind: 'temp', temp: '19.5' }))
    await device.acked(1, 2)
    await temps.until(1)
    await readings.until(2)
    expect(temps.payloads()).toEqual([{ celsius: 19.5 }])
    expect(g.status().devices[0]?.counters).toMatchObject({ handled: 2, raised: 3, unmapped: 1 })
  })

  it('refuses a second line whose device says a serial already online', async () => {
    const a = await ScriptedDevice.listen()
    const b = await ScriptedDevice.listen()
    h.onClose(() => a.close())
    h.onClose(() => b.close())
    const g = await gateway([a.url, b.url])
    await a.connected()
    await b.connected()
    a.hello('SAME-1', 1, { boot: 1, seq: 1 })
    await waitFor(() => g.status().devices[0]?.state === 'online', 'first line online')
    b.hello('SAME-1', 1, { boot: 1, seq: 1 })
    await waitFor(() => g.status().devices[1]?.state === 'refused', 'second line refused')
    expect(g.status().devices[1]?.lastError).toBe('serial SAME-1 is online on ' + a.url)
  })

  it('reopens a line that went away, and carries on from the mark', async () => {
    const { device, readings, g } = await scene()
    device.hello('TH-6', 1, { boot: 1, seq: 1 })
    device.send(device.state(1, 1, { n: '1' }))
    await device.acked(1, 1)
    device.unplug()
    await device.connected(2)
    device.send(device.state(1, 2, { n: '2' })) // before its HELLO on the new line: not handled
    await waitFor(() => device.syncs() >= 2, 'SYNC on the new line')
    device.hello('TH-6', 1, { boot: 1, seq: 2 })
    device.send(device.state(1, 2, { n: '2' }))
    await device.acked(1, 2)
    await readings.until(2)
    expect(ns(readings)).toEqual([1, 2])
    expect(g.status().devices[0]?.opens).toBe(2)
  })
})

/** A real persistence whose appends the test holds and lets go of, to choose when a commit finishes. */
class HeldPersistence implements ServicePersistence {
  appends = 0
  #held: Array<() => void> = []
  #holding = false
  constructor (private readonly inner: ServicePersistence) {}
  get instance (): string { return this.inner.instance }
  hold (): void { this.#holding = true }
  release (): void {
    this.#holding = false
    for (const go of this.#held.splice(0)) go()
  }

  lastSeq (): number { return this.inner.lastSeq() }
  async append (events: readonly RaisedEvent[], supersede?: readonly number[], marks?: ReadonlyMap<string, string>): Promise<AppendOutcome> {
    this.appends++
    if (this.#holding) await new Promise<void>((resolve) => { this.#held.push(resolve) })
    return await this.inner.append(events, supersede, marks)
  }

  marks (): ReadonlyMap<string, string> { return this.inner.marks() }
  read (after: number, limit: number): Promise<RaisedEvent[]> { return this.inner.read(after, limit) }
  acknowledge (upTo: number): Promise<void> { return this.inner.acknowledge(upTo) }
  remove (seqs: readonly number[]): Promise<void> { return this.inner.remove(seqs) }
  stats (): ReturnType<ServicePersistence['stats']> { return this.inner.stats() }
  close (): Promise<void> { return this.inner.close() }
}

describe('gateway commit loop and acknowledgements while not durable', () => {
  let h: Harness
  const gateways: Gateway[] = []
  beforeEach(async () => { h = await Harness.create() })
  afterEach(async () => {
    for (const g of gateways.splice(0)) await g.close()
    await h.close()
  })

  async function gateway (brokerUrl: string, device: ScriptedDevice, persistence: ServicePersistence): Promise<Gateway> {
    const config = await parseGatewayConfig(join(h.dir, 'gateway.yaml'), configText(brokerUrl, join(h.dir, 'gw'), [device.url]))
    const g = await startGateway(config, { persistence })
    gateways.push(g)
    await device.connected()
    return g
  }

  it('[GW-PUMP-1] frames that arrive while a commit is in flight are committed right after it, without waiting for another frame', async () => {
    const broker = await h.broker()
    const device = await ScriptedDevice.listen()
    h.onClose(() => device.close())
    const readings = await collect(h.client(broker.url, 'alice', 'watch'), 'readings', { start: 'all' })
    const persistence = new HeldPersistence(await createTwoLevelServicePersistence({ path: join(h.dir, 'held.db') }))
    const g = await gateway(broker.url, device, persistence)
    device.hello('TH-7', 1, { boot: 1, seq: 1 })
    persistence.hold()
    device.send(device.state(1, 1, { n: '1' }))
    await waitFor(() => persistence.appends === 1, 'the first commit under way')
    device.send(device.state(1, 2, { n: '2' }), device.state(1, 3, { n: '3' }))
    await waitFor(() => g.status().devices[0]?.frames === 4, 'frames 2 and 3 at the gateway') // HELLO + 3
    persistence.release() // the first commit finishes; nothing else arrives from the device
    await device.acked(1, 3)
    expect(persistence.appends).toBe(2) // frames 2 and 3 went into the next commit together
    await readings.until(3)
    expect(readings.payloads().map((p) => (p as { n: number }).n)).toEqual([1, 2, 3])
  })

  it('[GW-ACK-2] with memory-only persistence, a report is acknowledged only once the broker has acknowledged its events', async () => {
    const port = await freePort()
    const url = `mqtt://127.0.0.1:${port}`
    const device = await ScriptedDevice.listen()
    h.onClose(() => device.close())
    // a level 2 that cannot be opened (its path is a directory): memory only from the start
    const persistence = await createTwoLevelServicePersistence({ path: h.dir, openFailure: 'memory' })
    const g = await gateway(url, device, persistence)
    const handled: string[] = []
    g.on('handled', ({ upTo }) => { handled.push(`${upTo.boot}:${upTo.seq}`) })
    device.hello('TH-8', 1, { boot: 1, seq: 1 })
    device.send(device.state(1, 1, { n: '1' }), device.state(1, 2, { n: '2' }))
    await waitFor(() => handled.includes('1:2'), 'reports 1 and 2 handled in memory')
    device.send(device.state(1, 2, { n: '2' })) // resent: a duplicate, answered with what the device may delete
    await waitFor(() => g.status().devices[0]?.counters?.duplicates === 1, 'the resent report judged')
    const s = g.status()
    expect(s).toMatchObject({ durable: false, acks: 'after-broker-ack', service: { durable: false, backlog: 2 } })
    expect(s.devices[0]).toMatchObject({ mark: '1:2', acknowledged: null, awaitingBroker: 2 })
    expect(device.received.filter((f) => f.type === 'ACK')).toEqual([]) // no broker yet: nothing acknowledged

    await h.broker({ port })
    const readings = await collect(h.client(url, 'alice', 'watch'), 'readings', { start: 'all' })
    await device.acked(1, 2)
    expect(g.status().devices[0]).toMatchObject({ acknowledged: '1:2', awaitingBroker: 0 })
    expect(g.endpoint.acked).toBeGreaterThanOrEqual(2)
    // a report that maps to nothing waits for the reports before it, then is acknowledged with them
    device.send(device.state(1, 3, { n: '3' }), { type: 'CLEAR', boot: 1, seq: 4, code: 'door', fields: {} }) // no rule maps CLEAR
    await device.acked(1, 4)
    await readings.until(3)
    expect(readings.payloads().map((p) => (p as { n: number }).n)).toEqual([1, 2, 3])
  })
})

describe('[FILES-PRIVATE-1] the gateway\'s data directory', () => {
  let h: Harness
  afterEach(async () => { await h.close() })

  async function modeOf (path: string): Promise<string> {
    return `0${((await stat(path)).mode & 0o777).toString(8)}`
  }

  it('is created 0700 with gateway.db, its -wal and -shm and status.json 0600, whatever the umask lets through', async () => {
    h = await Harness.create()
    const old = process.umask(0o022)
    h.onClose(async () => { process.umask(old) })
    const brokerUrl = (await h.broker()).url
    const device = await ScriptedDevice.listen()
    h.onClose(() => device.close())
    const data = join(h.dir, 'new', 'gw')
    const config = await parseGatewayConfig(join(h.dir, 'gateway.yaml'), deviceChainYaml(brokerUrl, data, [device.url], '100ms'))
    const g = await startGateway(config)
    h.onClose(() => g.close())
    await device.connected()
    device.hello('TH-9', 1, { boot: 1, seq: 1 })
    device.send(device.state(1, 1, {}))
    await device.acked(1, 1)
    await waitFor(async () => stat(join(data, 'status.json')).then(() => true, () => false), 'status.json')
    expect(await modeOf(data)).toBe('0700')
    for (const f of ['gateway.db', 'gateway.db-wal', 'gateway.db-shm', 'status.json']) {
      expect([f, await modeOf(join(data, f))]).toEqual([f, '0600'])
    }
  })

  it('an existing directory open to others is left as it is, with a warning; gateway.db in it is made 0600', async () => {
    h = await Harness.create()
    const brokerUrl = (await h.broker()).url
    const device = await ScriptedDevice.listen()
    h.onClose(() => device.close())
    const data = join(h.dir, 'shared-gw')
    await mkdir(data)
    await chmod(data, 0o755)
    const first = await startGateway(await parseGatewayConfig(join(h.dir, 'gateway.yaml'), deviceChainYaml(brokerUrl, data, [device.url], '10s')))
    await first.close()
    await chmod(join(data, 'gateway.db'), 0o644) // as an older gateway left it
    const warnings: string[] = []
    const logger: Logger = { debug () {}, info () {}, error () {}, warn (_o, msg) { warnings.push(msg ?? '') } }
    const g = await startGateway(await parseGatewayConfig(join(h.dir, 'gateway.yaml'), deviceChainYaml(brokerUrl, data, [device.url], '10s')), { logger })
    h.onClose(() => g.close())
    expect(await modeOf(data)).toBe('0755')
    expect(warnings.filter((w) => w.includes('open to other users'))).toHaveLength(1)
    expect(await modeOf(join(data, 'gateway.db'))).toBe('0600')
  })
})
