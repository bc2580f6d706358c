import { readFile, writeFile } from 'node:fs/promises'
import { createServer, connect, type Socket } from 'node:net'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { ManualClock } from './clock.js'
import { LinkError, SimConfigError } from './errors.js'
import { startSim, type SimHandle, type SimOptions } from './sim.js'
import { flush, ScriptedGateway, tempDir, waitFor } from './testing/index.js'

const cleanup: Array<() => Promise<void>> = []
afterEach(async () => {
  for (const fn of cleanup.splice(0).reverse()) await fn()
})

async function sim (options: SimOptions): Promise<SimHandle> {
  const s = await startSim(options)
  cleanup.push(() => s.close())
  return s
}

describe('startSim with memory links', () => {
  it('starts the fleet, logs every report, and sums the counters', async () => {
    const dir = await tempDir()
    cleanup.push(dir.remove)
    const clock = new ManualClock()
    const log = join(dir.path, 'emitted.jsonl')
    const s = await sim({ devices: [{ model: 'thermostat', count: 2 }, { model: 'pump', count: 1 }], link: { kind: 'memory' }, clock, rate: 2, seed: 5, emittedLog: log })
    expect(s.devices.map((d) => [d.kind, d.model])).toEqual([['sim', 'thermostat'], ['sim', 'thermostat'], ['sim', 'pump']])
    expect(s.devices.map((d) => d.serial)).toEqual([expect.stringMatching(/^TH-\d{6}$/), expect.stringMatching(/^TH-\d{6}$/), expect.stringMatching(/^PU-\d{6}$/)])
    expect(new Set(s.devices.map((d) => d.serial)).size).toBe(3)
    expect(s.devices[0]!.url).toMatch(/^memory:\/\//)
    const gateways = s.devices.map((d) => {
      const gw = new ScriptedGateway((b) => { d.memory!.write(b) }, () => clock.now())
      d.memory!.onData((b) => { gw.push(b) })
      return gw
    })
    // what the devices wrote before the gateways listened (HELLO, the boot report) waited for them
    expect(gateways.map((gw) => gw.hellos.length)).toEqual([1, 1, 1])
    for (let t = 0; t < 10_000; t += 50) {
      clock.advance(50)
      await flush()
    }
    const sum = s.summary()
    const made = s.counters().reduce((n, c) => n + c.reportsMade, 0)
    expect(made).toBeGreaterThanOrEqual(3 * 21)
    expect(sum).toMatchObject({ devices: 3, linksOpen: 3, reportsMade: made, acked: made, outbox: 0, droppedFull: 0, faultsInjected: 0 })
    expect(gateways.reduce((n, gw) => n + gw.handled.length, 0)).toBe(made)
    const lines = (await readFile(log, 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as { serial: string, boot: number, seq: number, type: string })
    expect(lines).toHaveLength(made)
    expect(lines[0]).toMatchObject({ serial: s.devices[0]!.serial, model: 'thermostat', boot: 1, seq: 1, type: 'STATE', code: null, prev: 'none' })
    // the log and what the gateways handled are the same reports
    const logged = lines.map((l) => `${l.serial}/${l.boot}:${l.seq}`).sort()
    const handled = gateways.flatMap((gw, i) => gw.handledPositions.map((p) => `${s.devices[i]!.serial}/${p}`)).sort()
    expect(handled).toEqual(logged)
  })

  it('keeps the devices\' non-volatile memory in a state file: a second run is each device\'s next boot', async () => {
    const dir = await tempDir()
    cleanup.push(dir.remove)
    const stateFile = join(dir.path, 'state.json')
    const clock = new ManualClock()
    const first = await startSim({ devices: [{ model: 'door', count: 2 }], link: { kind: 'memory' }, clock, seed: 3, stateFile })
    const serials = first.devices.map((d) => d.serial)
    await first.close()
    const saved = JSON.parse(await readFile(stateFile, 'utf8')) as { format: string, devices: Record<string, { boot: number, outbox: unknown[] }> }
    expect(saved.format).toBe('herald-sim-state')
    // nobody acknowledged the boot reports: they are still in the outboxes
    expect(serials.map((s) => [saved.devices[s]?.boot, saved.devices[s]?.outbox.length])).toEqual([[1, 1], [1, 1]])
    const second = await sim({ devices: [{ model: 'door', count: 2 }], link: { kind: 'memory' }, clock, seed: 3, stateFile })
    expect(second.counters().map((c) => [c.boot, c.outbox])).toEqual([[2, 2], [2, 2]])
  })

  it('refuses a state file that is not one, naming it', async () => {
    const dir = await tempDir()
    cleanup.push(dir.remove)
    const stateFile = join(dir.path, 'state.json')
    await writeFile(stateFile, '{"format":"other"}')
    await expect(startSim({ devices: [{ model: 'door', count: 1 }], link: { kind: 'memory' }, stateFile })).rejects.toThrow(`state file ${stateFile}: not a herald-sim-state file of version 1`)
  })

  it('derives serials from the seed, and switches faults per device', async () => {
    const a = await sim({ devices: [{ model: 'door', count: 2 }], link: { kind: 'memory' }, clock: new ManualClock(), seed: 5 })
    const b = await sim({ devices: [{ model: 'door', count: 2 }], link: { kind: 'memory' }, clock: new ManualClock(), seed: 5 })
    const c = await sim({ devices: [{ model: 'door', count: 2 }], link: { kind: 'memory' }, clock: new ManualClock(), seed: 6 })
    expect(a.devices.map((d) => d.serial)).toEqual(b.devices.map((d) => d.serial))
    expect(a.devices.map((d) => d.serial)).not.toEqual(c.devices.map((d) => d.serial))
    a.setFaults({ garbage: 0.5 }, [a.devices[1]!.serial])
    expect(a.devices.map((d) => d.device!.faultOptions)).toEqual([{}, { garbage: 0.5 }])
    a.setFaults({ truncate: 0.1 })
    expect(a.devices.map((d) => d.device!.faultOptions)).toEqual([{ truncate: 0.1 }, { truncate: 0.1 }])
    expect(() => { a.setFaults({}, ['XX-1']) }).toThrow('serials: no simulated device "XX-1"')
    expect(() => { a.setFaults({ badCrc: -1 }) }).toThrow('faults.badCrc: a probability from 0 to 1, not -1')
  })

  it('refuses wrong options, naming them', async () => {
    const bad = async (options: Partial<SimOptions>, message: string): Promise<void> => {
      await expect(startSim({ devices: [{ model: 'pump', count: 1 }], link: { kind: 'memory' }, ...options })).rejects.toThrow(message)
      await expect(startSim({ devices: [{ model: 'pump', count: 1 }], link: { kind: 'memory' }, ...options })).rejects.toBeInstanceOf(SimConfigError)
    }
    await bad({ devices: [{ model: 'toaster', count: 1 }] }, 'devices[0].model: unknown model "toaster" (models: thermostat, door, pump)')
    await bad({ devices: [{ model: 'door', count: 0 }] }, 'devices[0].count: a whole number from 1, not 0')
    await bad({ devices: [] }, 'devices: no device to simulate')
    await bad({ devices: [{ model: 'door', count: 10_001 }] }, 'devices: 10001 devices, more than 10000')
    await bad({ link: { kind: 'serial', paths: ['/dev/a', '/dev/b'] } }, 'link.paths: 1 devices need 1 serial paths, not 2')
    await bad({ link: { kind: 'tcp', basePort: 65535 }, devices: [{ model: 'door', count: 2 }] }, 'link.basePort: 2 devices from port 65535 go beyond 65535')
    await bad({ rate: -1 }, 'rate: reports per second from 0 to 1000, not -1')
    await bad({ seed: 1.5 }, 'seed: a whole number, not 1.5')
    await bad({ faults: { reboot: { everyMs: 1 } } }, 'faults.reboot: every must be at least 100 ms, not 1')
    await bad({ devices: [{ model: 'door', count: 1, faults: { garbage: 9 } }] }, 'devices[0].faults.garbage: a probability from 0 to 1, not 9')
  })
})

/** A TCP client of one simulated device, with a scripted gateway on it. */
async function client (url: string): Promise<{ socket: Socket, gw: ScriptedGateway, closed: Promise<void> }> {
  const { hostname, port } = new URL(url)
  const socket = connect({ host: hostname, port: Number(port) })
  await new Promise<void>((resolve, reject) => { socket.once('connect', resolve); socket.once('error', reject) })
  const gw = new ScriptedGateway((b) => { if (!socket.destroyed) socket.write(b) })
  socket.on('data', (b: Buffer) => { gw.push(b) })
  socket.on('error', () => {})
  const closed = new Promise<void>((resolve) => { socket.once('close', () => { resolve() }) })
  cleanup.push(async () => { socket.destroy() })
  return { socket, gw, closed }
}

describe('startSim with TCP links', () => {
  it('listens on a free port per device; a client sends SYNC and ACKs, gets HELLO and STATE frames', async () => {
    const s = await sim({ devices: [{ model: 'thermostat', count: 2 }, { model: 'door', count: 1 }], link: { kind: 'tcp', basePort: 0 }, rate: 20 })
    const urls = s.devices.map((d) => d.url)
    for (const url of urls) expect(url).toMatch(/^tcp:\/\/127\.0\.0\.1:\d+$/)
    expect(new Set(urls).size).toBe(3)
    expect(s.summary().linksOpen).toBe(0)
    const { gw } = await client(urls[0]!)
    gw.sync()
    await waitFor(() => gw.handled.length >= 10, 'ten reports handled')
    expect(gw.hellos[0]).toMatchObject({ model: 'thermostat', serial: s.devices[0]!.serial, boot: 1 })
    expect(gw.handled[0]).toMatchObject({ type: 'STATE', boot: 1, seq: 1, fields: { prev: 'none' } })
    await waitFor(() => s.counters()[0]!.acked >= 10, 'ACKs to drain the outbox')
    expect(s.summary().linksOpen).toBe(1)
    // the devices nobody connected to keep their reports
    expect(s.counters()[2]!.acked).toBe(0)
    expect(s.counters()[2]!.outbox).toBeGreaterThan(0)
  })

  it('replaces the client when a second one connects', async () => {
    const s = await sim({ devices: [{ model: 'pump', count: 1 }], link: { kind: 'tcp', basePort: 0 }, rate: 20 })
    const first = await client(s.devices[0]!.url)
    await waitFor(() => first.gw.hellos.length === 1, 'HELLO on the first connection')
    const second = await client(s.devices[0]!.url)
    await first.closed
    await waitFor(() => second.gw.hellos.length === 1 && second.gw.handled.length >= 3, 'HELLO and reports on the second connection')
    expect(s.devices[0]!.device!.link.stats.opens).toBe(2)
  })

  it('unplugs: drops the connection and stops listening, then listens again on the same port', async () => {
    const s = await sim({ devices: [{ model: 'door', count: 1 }], link: { kind: 'tcp', basePort: 0 }, rate: 5 })
    const url = s.devices[0]!.url
    const { closed } = await client(url)
    const device = s.devices[0]!.device!
    device.setFaults({ unplug: { atMs: [device.time + 100], durationMs: 60_000 } })
    await closed
    await expect(client(url)).rejects.toMatchObject({ code: 'ECONNREFUSED' })
    await device.link.replug()
    const again = await client(url)
    await waitFor(() => again.gw.hellos.length === 1, 'HELLO after the replug')
    expect(device.counters.faults.unplugs).toBe(1)
  })

  it('fails with a LinkError naming the port when it is taken', async () => {
    const server = createServer()
    await new Promise<void>((resolve) => { server.listen(0, '127.0.0.1', resolve) })
    cleanup.push(() => new Promise((resolve) => { server.close(() => { resolve() }) }))
    const port = (server.address() as { port: number }).port
    const attempt = startSim({ devices: [{ model: 'door', count: 1 }], link: { kind: 'tcp', basePort: port } })
    await expect(attempt).rejects.toBeInstanceOf(LinkError)
    await expect(startSim({ devices: [{ model: 'door', count: 1 }], link: { kind: 'tcp', basePort: port } })).rejects.toThrow(`cannot listen on 127.0.0.1:${port}: EADDRINUSE`)
  })
})
