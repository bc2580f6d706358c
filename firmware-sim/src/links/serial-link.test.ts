import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { SerialPort } from 'serialport'
import { afterEach, describe, expect, it } from 'vitest'
import { LinkError } from '../errors.js'
import { startSim } from '../sim.js'
import { ScriptedGateway, tempDir, waitFor } from '../testing/index.js'

const cleanup: Array<() => Promise<void>> = []
afterEach(async () => {
  for (const fn of cleanup.splice(0).reverse()) await fn()
})

/** A pty pair made by socat (a real child, killed at the end): two tty paths joined like a null-modem cable. */
async function ptyPair (): Promise<{ a: string, b: string }> {
  const dir = await tempDir('herald-pty-')
  cleanup.push(dir.remove)
  const a = join(dir.path, 'dev-a')
  const b = join(dir.path, 'dev-b')
  const socat: ChildProcess = spawn('socat', ['-d', '-d', `pty,raw,echo=0,link=${a}`, `pty,raw,echo=0,link=${b}`], { stdio: ['ignore', 'ignore', 'pipe'] })
  let stderr = ''
  socat.stderr!.on('data', (d: Buffer) => { stderr += d.toString() })
  const exited = new Promise<void>((resolve) => { socat.once('exit', () => { resolve() }) })
  cleanup.push(async () => {
    socat.kill('SIGTERM')
    await exited
  })
  await waitFor(() => existsSync(a) && existsSync(b) && stderr.includes('starting data transfer loop'), `socat's ptys (stderr: ${stderr})`)
  return { a, b }
}

async function openPort (path: string): Promise<SerialPort> {
  const port = new SerialPort({ path, baudRate: 115200, autoOpen: false })
  await new Promise<void>((resolve, reject) => { port.open((err) => { if (err) reject(err); else resolve() }) })
  cleanup.push(() => new Promise((resolve) => { if (port.isOpen) port.close(() => { resolve() }); else resolve() }))
  return port
}

describe('serial links', () => {
  it('runs a device on a tty: the gateway at the other end of a pty pair gets HELLO and reports, and its ACKs drain the outbox', async () => {
    const { a, b } = await ptyPair()
    const s = await startSim({ devices: [{ model: 'pump', count: 1 }], link: { kind: 'serial', paths: [a] }, rate: 20 })
    cleanup.push(() => s.close())
    expect(s.devices[0]!.url).toBe(`serial://${a}?baud=115200`)
    const port = await openPort(b)
    const gw = new ScriptedGateway((bytes) => { port.write(bytes) })
    port.on('data', (chunk: Buffer) => { gw.push(chunk) })
    gw.sync()
    await waitFor(() => gw.handled.length >= 10, 'ten reports over the tty')
    expect(gw.hellos.at(-1)).toMatchObject({ type: 'HELLO', model: 'pump', serial: s.devices[0]!.serial })
    expect(gw.handled[0]).toMatchObject({ type: 'STATE', boot: 1, seq: 1 })
    expect(Object.keys(gw.handled[0]!.fields)).toEqual(['prev', 'run', 'pressure', 'flow', 'level', 'motor', 'fault'])
    await waitFor(() => s.counters()[0]!.acked >= 10, 'ACKs over the tty')
    expect(s.summary().linksOpen).toBe(1)
  })

  it('closes and reopens the port on unplug and replug', async () => {
    const { a, b } = await ptyPair()
    const s = await startSim({ devices: [{ model: 'door', count: 1 }], link: { kind: 'serial', paths: [a] }, rate: 20 })
    cleanup.push(() => s.close())
    const device = s.devices[0]!.device!
    const port = await openPort(b)
    const gw = new ScriptedGateway((bytes) => { port.write(bytes) })
    port.on('data', (chunk: Buffer) => { gw.push(chunk) })
    await device.link.unplug()
    expect(device.link.isOpen).toBe(false)
    await device.link.replug()
    expect(device.link.isOpen).toBe(true)
    gw.sync()
    await waitFor(() => gw.hellos.length >= 2 && gw.handled.length >= 3, 'HELLO and reports after the replug')
    expect(device.link.stats.opens).toBe(2)
  })

  it('fails with a LinkError naming a tty that does not exist', async () => {
    await expect(startSim({ devices: [{ model: 'door', count: 1 }], link: { kind: 'serial', paths: ['/dev/herald-no-such-tty'] } }))
      .rejects.toThrow(LinkError)
    await expect(startSim({ devices: [{ model: 'door', count: 1 }], link: { kind: 'serial', paths: ['/dev/herald-no-such-tty'] } }))
      .rejects.toThrow(/^cannot open serial port \/dev\/herald-no-such-tty: /)
  })
})
