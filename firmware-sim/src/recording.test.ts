import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { encodeFrame, FrameDecoder, type DeviceFrame } from '@herald/device-protocol'
import { ManualClock } from './clock.js'
import { RecordingError } from './errors.js'
import { MemoryLink } from './links/memory-link.js'
import { formatRecording, parseRecording, readRecording, type Recording } from './recording.js'
import { ReplayDevice } from './replay-device.js'
import { startSim } from './sim.js'
import { flush, ScriptedGateway, tempDir } from './testing/index.js'

const cleanup: Array<() => Promise<void>> = []
afterEach(async () => {
  for (const fn of cleanup.splice(0).reverse()) await fn()
})

function decodeAll (bytes: Buffer): { frames: DeviceFrame[], stats: unknown } {
  const d = new FrameDecoder()
  const frames = d.push(bytes)
  return { frames, stats: d.stats }
}

/** Runs a thermostat with line faults for 5 s against a scripted gateway, recording; returns the file and the bytes the gateway got. */
async function record (): Promise<{ file: string, line: Buffer }> {
  const dir = await tempDir()
  cleanup.push(dir.remove)
  const clock = new ManualClock()
  const s = await startSim({
    devices: [{ model: 'thermostat', count: 1 }],
    link: { kind: 'memory' },
    clock,
    rate: 5,
    seed: 11,
    faults: { garbage: 0.1, truncate: 0.1, reboot: { atMs: [2000] } },
    record: dir.path
  })
  const d = s.devices[0]!
  const received: Buffer[] = []
  const gw = new ScriptedGateway((b) => { d.memory!.write(b) }, () => clock.now())
  d.memory!.onData((b) => { received.push(b); gw.push(b) })
  for (let t = 0; t < 5000; t += 7) {
    clock.advance(7)
    await flush()
  }
  await s.close()
  return { file: join(dir.path, `${d.serial}.jsonl`), line: Buffer.concat(received) }
}

describe('recording', () => {
  it('records every byte the device wrote, with device times, in a file that round-trips byte for byte', async () => {
    const { file, line } = await record()
    const text = await readFile(file, 'utf8')
    const rec = readRecording(file)
    expect(rec.header).toMatchObject({ format: 'herald-sim-recording', version: 1, model: 'thermostat', fw: '2.3.1', seed: 11 })
    expect(rec.header.serial).toMatch(/^TH-\d{6}$/)
    expect(Buffer.concat(rec.writes.map((w) => w.bytes)).equals(line)).toBe(true)
    expect(rec.writes.length).toBeGreaterThan(30)
    const times = rec.writes.map((w) => w.t)
    expect(times).toEqual([...times].sort((a, b) => a - b))
    expect(times.at(-1)).toBeLessThanOrEqual(5000)
    expect(formatRecording(parseRecording(text))).toBe(text)
    // and it is readable: frames are text lines
    expect(text.split('\n')[1]).toMatch(/^\{"t":0,"bytes":"\$HELLO model=thermostat serial=TH-\d{6} fw=2\.3\.1 boot=1 oldest=1:1\*[0-9A-F]{8}\\n"\}$/)
  })

  it('plays a recording back: the same bytes at the same times, decoding to the same frames', async () => {
    const { file, line } = await record()
    const rec = readRecording(file)
    const clock = new ManualClock()
    const link = new MemoryLink('replay')
    const got: Buffer[] = []
    link.gateway.onData((b) => { got.push(b) })
    const replay = new ReplayDevice({ recording: rec, link, clock, startOn: 'start' })
    cleanup.push(() => replay.close())
    await replay.start()
    // a tape does not answer
    link.gateway.write(encodeFrame({ type: 'SYNC' }))
    // just before each recorded time the write has not been played; at that time it has
    for (const t of new Set(rec.writes.map((w) => w.t))) {
      if (t - 0.5 > clock.now()) clock.advance(t - 0.5 - clock.now())
      expect(replay.counters.writesPlayed, `before ${t} ms`).toBe(rec.writes.filter((w) => w.t < t).length)
      clock.advance(t - clock.now())
      expect(replay.counters.writesPlayed, `at ${t} ms`).toBe(rec.writes.filter((w) => w.t <= t).length)
    }
    await flush()
    const played = Buffer.concat(got)
    expect(played.equals(line)).toBe(true)
    expect(decodeAll(played)).toEqual(decodeAll(line))
    expect(replay.counters).toMatchObject({ done: true, writesTotal: rec.writes.length, bytesPlayed: line.length })
  })

  it('replays through startSim, starting when the line opens', async () => {
    const { file, line } = await record()
    const clock = new ManualClock()
    const s = await startSim({ devices: [], replay: [file], link: { kind: 'memory' }, clock })
    cleanup.push(() => s.close())
    const d = s.devices[0]!
    expect(d).toMatchObject({ kind: 'replay', model: 'thermostat', serial: readRecording(file).header.serial })
    const got: Buffer[] = []
    d.memory!.onData((b) => { got.push(b) })
    clock.advance(6000)
    await flush()
    expect(Buffer.concat(got).equals(line)).toBe(true)
    expect(s.summary().replayed).toEqual({ played: readRecording(file).writes.length, total: readRecording(file).writes.length })
  })

  it('refuses files that are not recordings, naming the line', async () => {
    const header = '{"format":"herald-sim-recording","version":1,"model":"pump","serial":"PU-1","fw":"1"}\n'
    const bad = (text: string, message: string): void => {
      expect(() => parseRecording(text, 'r.jsonl')).toThrow(RecordingError)
      expect(() => parseRecording(text, 'r.jsonl')).toThrow(message)
    }
    bad('{"format":"other"}\n', 'r.jsonl:1: not a herald-sim-recording header')
    bad(header.replace('"version":1', '"version":2'), 'r.jsonl:1: version 2, this simulator reads version 1')
    bad(header.replace('"serial":"PU-1",', ''), 'r.jsonl:1: header.serial is missing')
    bad(header + '{"t":5,"bytes":"a"}\n{"t":4,"bytes":"b"}\n', 'r.jsonl:3: t must be a number not below the previous one (5), not 4')
    bad(header + '{"t":1,"bytes":"€"}\n', 'r.jsonl:2: bytes must be latin1')
    bad(header + '{"t":1}\n', 'r.jsonl:2: a write is {"t": <ms>, "bytes": <string>}')
    bad(header + 'nope\n', 'r.jsonl:2: not JSON')
    bad(header.trimEnd(), 'r.jsonl: does not end with a newline (a cut file?)')
    const rec: Recording = parseRecording(header + '{"t":0.125,"bytes":"\\u0000\\u00ff$"}\n')
    expect(rec.writes[0]!.bytes).toEqual(Buffer.from([0, 255, 0x24]))
    const dir = await tempDir()
    cleanup.push(dir.remove)
    await writeFile(join(dir.path, 'x.jsonl'), header)
    expect(readRecording(join(dir.path, 'x.jsonl')).writes).toEqual([])
    expect(() => readRecording(join(dir.path, 'missing.jsonl'))).toThrow(/missing\.jsonl: cannot read \(ENOENT\)/)
  })
})
