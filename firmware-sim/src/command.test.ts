/**
 * `herald sim` as users run it: a real child process of the built CLI (run `npm run build` first;
 * `npm test` does), on real TCP ports.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { readdir, readFile } from 'node:fs/promises'
import { connect, type Socket } from 'node:net'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { afterEach, describe, expect, it } from 'vitest'
import { readRecording } from './recording.js'
import { ScriptedGateway, tempDir, waitFor } from './testing/index.js'

const CLI = join(import.meta.dirname, '..', '..', 'cli', 'bin', 'herald.js')

const cleanup: Array<() => Promise<void>> = []
afterEach(async () => {
  for (const fn of cleanup.splice(0).reverse()) await fn()
})

interface Run { child: ChildProcess, lines: string[], stderr: () => string, exited: Promise<number | null> }

function run (args: string[]): Run {
  const child = spawn(process.execPath, [CLI, 'sim', ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
  const lines: string[] = []
  let stderr = ''
  createInterface({ input: child.stdout }).on('line', (l) => { lines.push(l) })
  child.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
  const exited = new Promise<number | null>((resolve) => { child.once('exit', (code) => { resolve(code) }) })
  cleanup.push(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
    await exited
  })
  return { child, lines, stderr: () => stderr, exited }
}

const DEVICE_LINE = /^(thermostat|door|pump) ((?:TH|DL|PU)-\d{6}) (tcp:\/\/127\.0\.0\.1:\d+)$/

describe('herald sim', () => {
  it('prints where each device is, serves the protocol on TCP, summarizes, records, logs, and stops on SIGTERM', async () => {
    const dir = await tempDir()
    cleanup.push(dir.remove)
    const log = join(dir.path, 'emitted.jsonl')
    const rec = join(dir.path, 'rec')
    const r = run(['--devices', 'thermostat:2,pump:1', '--link', 'tcp:0', '--rate', '10/s', '--seed', '3', '--summary-every', '200ms', '--emitted-log', log, '--record', rec])
    await waitFor(() => r.lines.length >= 3, `the device lines (stderr: ${r.stderr()})`)
    const devices = r.lines.slice(0, 3).map((l) => DEVICE_LINE.exec(l))
    expect(devices.map((m) => m?.[1])).toEqual(['thermostat', 'thermostat', 'pump'])
    const url = new URL(devices[0]![3]!)
    const socket: Socket = connect({ host: url.hostname, port: Number(url.port) })
    cleanup.push(async () => { socket.destroy() })
    const gw = new ScriptedGateway((b) => { socket.write(b) })
    socket.on('data', (b: Buffer) => { gw.push(b) })
    await new Promise<void>((resolve) => { socket.once('connect', () => { resolve() }) })
    gw.sync()
    await waitFor(() => gw.handled.length >= 10, 'ten reports from the first thermostat')
    expect(gw.hellos[0]).toMatchObject({ model: 'thermostat', serial: devices[0]![2], fw: '2.3.1' })
    expect(gw.handled.every((f) => f.type !== 'STATE' || ['temp', 'setpoint', 'heater', 'relay'].every((k) => k in f.fields))).toBe(true)
    await waitFor(() => r.lines.some((l) => /, 1 connected \|.*\| acked [1-9]/.test(l)), 'a summary line with ACKs')
    expect(r.lines.filter((l) => l.includes(' | ')).at(-1)).toMatch(/^\d\d:\d\d:\d\d \| 3 devices, 1 connected \| reports \d+ \| sent \d+ \| resent \d+ \| acked \d+ \| outbox \d+ \| full 0 \| faults 0$/)

    r.child.kill('SIGTERM')
    expect(await r.exited).toBe(0)
    expect(r.stderr()).toContain('herald sim: stopped (SIGTERM)')
    // every report the gateway handled is in the emitted log, and every device has a recording
    const logged = new Set((await readFile(log, 'utf8')).trim().split('\n').map((l) => {
      const e = JSON.parse(l) as { serial: string, boot: number, seq: number }
      return `${e.serial}/${e.boot}:${e.seq}`
    }))
    for (const p of gw.handledPositions) expect(logged.has(`${devices[0]![2]}/${p}`)).toBe(true)
    expect((await readdir(rec)).sort()).toEqual(devices.map((m) => `${m![2]}.jsonl`).sort())
    const first = readRecording(join(rec, `${devices[0]![2]}.jsonl`))
    expect(Buffer.concat(first.writes.map((w) => w.bytes)).toString('latin1')).toContain(`$HELLO model=thermostat serial=${devices[0]![2]} `)
  })

  it('lists the models', async () => {
    const r = run(['--help-models'])
    expect(await r.exited).toBe(0)
    const text = r.lines.join('\n')
    for (const s of ['thermostat (serial TH-NNNNNN', 'overheat', 'door (serial DL-NNNNNN', 'tamper', 'pump (serial PU-NNNNNN', 'E17']) expect(text).toContain(s)
  })

  it('exits 2 with a message naming the wrong option', async () => {
    const cases: Array<[string[], RegExp]> = [
      [['--devices', 'toaster:1'], /option '--devices <list>' argument 'toaster:1' is invalid\. unknown model "toaster"/],
      [['--devices', 'door', '--rate', 'fast'], /option '--rate <rate>' argument 'fast' is invalid/],
      [['--devices', 'door', '--faults', 'reboot=soon'], /option '--faults <spec>' argument 'reboot=soon' is invalid\. reboot: "soon" is not a duration/],
      [['--devices', 'door:2', '--link', 'serial:/dev/x'], /--link \(link\.paths: 2 devices need 2 serial paths, not 1\)/],
      [['--devices', 'door', '--link', 'udp:1'], /--link: "udp:1" is not a link/],
      [['--rate', '1/s'], /--devices: which devices to simulate/],
      [['--devices', 'door', '--device-faults', 'XX-1:garbage=0.1'], /--device-faults: serials: no simulated device "XX-1"/]
    ]
    for (const [args, message] of cases) {
      const r = run(args)
      expect(await r.exited, args.join(' ')).toBe(2)
      expect(r.stderr(), args.join(' ')).toMatch(message)
    }
  })
})
