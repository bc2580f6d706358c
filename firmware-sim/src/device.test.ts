import { describe, expect, it } from 'vitest'
import { FrameDecoder, type DataFrame } from '@herald/device-protocol'
import { ManualClock } from './clock.js'
import { SimDevice, type EmittedReport, type SimDeviceOptions } from './device.js'
import { MemoryLink } from './links/memory-link.js'
import type { DeviceModel, ModelEvent } from './models/model.js'
import { MODELS } from './models/index.js'
import { thermostat } from './models/thermostat.js'
import { flush, ScriptedGateway } from './testing/index.js'

// A model that never changes by itself: only the periodic STATE reports, and the events a test
// queues, so that protocol tests know exactly when frames are made.
function quietModel (): DeviceModel & { queue: ModelEvent[] } {
  const queue: ModelEvent[] = []
  return {
    queue,
    name: 'quiet',
    prefix: 'QT',
    fw: '0.1',
    description: 'a test model',
    fields: [{ name: 'v', description: 'always 1' }],
    alarms: [],
    create: () => ({ tick: () => queue.splice(0), state: () => ({ v: '1' }), activeAlarms: () => [] })
  }
}

async function setup (options: Partial<SimDeviceOptions> = {}) {
  const clock = new ManualClock()
  const link = new MemoryLink('device')
  const emitted: EmittedReport[] = []
  const device = new SimDevice({ model: quietModel(), seed: 1, modelIndex: 0, link, clock, rate: 10, onEmitted: (r) => { emitted.push(r) }, ...options })
  const bytes: Buffer[] = []
  const gw = new ScriptedGateway((b) => { link.gateway.write(b) }, () => clock.now())
  const events: string[] = []
  link.gateway.onData((b) => { bytes.push(b); gw.push(b) })
  link.gateway.onOpen(() => { events.push(`open@${clock.now()}`); gw.lineOpened() })
  link.gateway.onClose(() => { events.push(`close@${clock.now()}`) })
  await device.start()
  await flush()
  // moves time in 10 ms steps, letting the line deliver after each
  const run = async (ms: number): Promise<void> => {
    for (let t = 0; t < ms; t += 10) {
      clock.advance(10)
      await flush()
    }
  }
  return { clock, link, device, gw, emitted, bytes, events, run }
}

const positions = (frames: ReadonlyArray<{ boot: number, seq: number }>): string[] => frames.map((f) => `${f.boot}:${f.seq}`)
const range = (boot: number, from: number, to: number): string[] => Array.from({ length: to - from + 1 }, (_, i) => `${boot}:${from + i}`)

describe('SimDevice: the device side of the line protocol', () => {
  it('says HELLO when the line opens, naming the boot report as oldest, then sends it', async () => {
    const { gw, device } = await setup()
    expect(gw.received.map((f) => f.type)).toEqual(['HELLO', 'STATE'])
    expect(gw.hellos[0]).toEqual({ type: 'HELLO', model: 'quiet', serial: device.serial, fw: '0.1', boot: 1, oldest: { boot: 1, seq: 1 }, fields: {} })
    expect(device.serial).toMatch(/^QT-\d{6}$/)
  })

  it('ACKs drain the outbox: every report is handled once, in order', async () => {
    const { gw, device, emitted, run } = await setup()
    await run(10_000)
    const c = device.counters
    expect(c.reportsMade).toBe(101) // the boot report and one each 100 ms
    expect(emitted).toHaveLength(101)
    expect(gw.handledPositions).toEqual(positions(emitted))
    expect(c).toMatchObject({ outbox: 0, acked: 101, retransmitted: 0, acksReceived: 101, hellosSent: 1, droppedFull: 0 })
    expect(gw.duplicates + gw.outOfOrder).toBe(0)
  })

  it('goes back to the oldest unacknowledged frame after the retransmission timeout (go-back-N)', async () => {
    const { gw, device, run } = await setup()
    gw.autoSync = false // the timeout, not a SYNC, brings the resend
    let lost = false
    gw.lose = (f) => {
      if (f.seq !== 3 || lost) return false
      lost = true
      return true
    }
    // seq 3 goes out at 200 ms and is lost; 4..7 arrive out of order and are not acknowledged
    await run(690)
    expect(gw.handledPositions).toEqual(range(1, 1, 2))
    expect(gw.outOfOrder).toBe(4)
    expect(device.counters.retransmitted).toBe(0)
    // 500 ms after seq 3 was sent: seq 8 (due at 700) goes out, then 3..8 again
    await run(10)
    expect(gw.handledPositions).toEqual(range(1, 1, 8))
    expect(gw.outOfOrder).toBe(5)
    expect(device.counters.retransmitted).toBe(6)
    await run(1000)
    expect(gw.handledPositions).toEqual(range(1, 1, 18))
    expect(device.counters).toMatchObject({ outbox: 0, retransmitted: 6 })
  })

  it('keeps at most `window` frames in flight beyond the last ACK', async () => {
    const { gw, device, run } = await setup({ rate: 100, window: 32 })
    gw.autoAck = false
    await run(450)
    const sent = (): number[] => gw.received.filter((f): f is DataFrame => f.type === 'STATE').map((f) => f.seq)
    expect(device.counters.reportsMade).toBe(46)
    // 1:1 was acknowledged when the line opened: 2..33 in flight
    expect(sent()).toEqual(Array.from({ length: 33 }, (_, i) => i + 1))
    gw.ack({ boot: 1, seq: 10 })
    await flush()
    expect(sent()).toEqual(Array.from({ length: 42 }, (_, i) => i + 1))
    expect(device.counters.outbox).toBe(46 - 10)
  })

  it('reboots: boot + 1, HELLO with the old boot\'s oldest frame, the old frames first, then boot 2 from seq 1', async () => {
    const { gw, device, emitted, run } = await setup({ faults: { reboot: { atMs: [1000] } } })
    gw.autoSync = false
    await run(500) // 1:1 .. 1:6 handled
    gw.lose = () => true
    await run(500) // 1:7 .. 1:10 lost on the line; the reboot is due at 1000
    gw.lose = () => false
    expect(device.bootCount).toBe(2)
    await run(1000)
    expect(gw.hellos.map((h) => [h.boot, h.oldest])).toEqual([[1, { boot: 1, seq: 1 }], [2, { boot: 1, seq: 7 }]])
    expect(gw.handledPositions).toEqual([...range(1, 1, 10), ...range(2, 1, 11)])
    expect(gw.handledPositions).toEqual(positions(emitted))
    expect(device.counters).toMatchObject({ boot: 2, outbox: 0, faultsInjected: 1, faults: { reboots: 1 } })
  })

  it('marks the first frame of each boot with prev, the last frame made before it [DEV-SEQ-1]', async () => {
    const { gw, emitted, run } = await setup({ faults: { reboot: { atMs: [500, 520, 1000] } } })
    await run(1500)
    const firsts = gw.handled.filter((f) => f.seq === 1).map((f) => [`${f.boot}:${f.seq}`, f.fields.prev])
    // boot 1: 0..400 ms; boot 2 lasts 20 ms, only its boot report; boot 3: 520, 620, ... 920
    expect(firsts).toEqual([['1:1', 'none'], ['2:1', '1:5'], ['3:1', '2:1'], ['4:1', '3:5']])
    expect(emitted.filter((r) => r.seq === 1).map((r) => r.prev)).toEqual(['none', '1:5', '2:1', '3:5'])
    expect(gw.handledPositions).toEqual(positions(emitted))
    expect(gw.handled.every((f) => f.seq === 1 || f.fields.prev === undefined)).toBe(true)
  })

  it('sends HELLO with oldest = the position of its next frame when the outbox is empty', async () => {
    const { gw, run } = await setup({ rate: 0 })
    await run(100)
    gw.sync()
    await run(10)
    expect(gw.hellos.map((h) => h.oldest)).toEqual([{ boot: 1, seq: 1 }, { boot: 1, seq: 2 }])
  })

  it('counts reports that find the outbox full, without using a seq for them', async () => {
    const { gw, device, emitted, run } = await setup({ outboxCapacity: 5 })
    gw.autoAck = false // from 1:2 on
    await run(1000)
    expect(device.counters).toMatchObject({ reportsMade: 6, droppedFull: 5, outbox: 5 })
    expect(positions(emitted)).toEqual(range(1, 1, 6))
    gw.ack({ boot: 1, seq: 6 })
    await flush()
    expect(device.counters.outbox).toBe(0)
    await run(100)
    expect(positions(emitted)).toEqual(range(1, 1, 7))
  })

  it('answers SYNC with HELLO and resends what is unacknowledged', async () => {
    const { gw, device, run } = await setup()
    gw.autoAck = false
    await run(200)
    const before = gw.received.length
    gw.sync()
    await flush()
    const after = gw.received.slice(before)
    // 1:1 was acknowledged when the line opened; 1:2 and 1:3 were not
    expect(after.map((f) => f.type)).toEqual(['HELLO', 'STATE', 'STATE'])
    expect(after[0]).toMatchObject({ type: 'HELLO', oldest: { boot: 1, seq: 2 } })
    expect(device.counters).toMatchObject({ syncsReceived: 1, hellosSent: 2, retransmitted: 2 })
  })

  it('makes ALARM and CLEAR reports from model events, and a STATE on change', async () => {
    const model = quietModel()
    const { gw, run } = await setup({ model, rate: 0 })
    model.queue.push({ kind: 'alarm', code: 'overheat', fields: { temp: '31.00' } }, { kind: 'changed' })
    await run(100)
    model.queue.push({ kind: 'clear', code: 'overheat', fields: {} })
    await run(100)
    expect(gw.handled).toEqual([
      { type: 'STATE', boot: 1, seq: 1, code: null, fields: { prev: 'none', v: '1' } },
      { type: 'ALARM', boot: 1, seq: 2, code: 'overheat', fields: { temp: '31.00' } },
      { type: 'STATE', boot: 1, seq: 3, code: null, fields: { v: '1' } },
      { type: 'CLEAR', boot: 1, seq: 4, code: 'overheat', fields: {} }
    ])
  })
})

describe('SimDevice: faults', () => {
  it('truncates frames and breaks CRCs as counted, and retransmission still delivers every report once', async () => {
    const { gw, device, emitted, run } = await setup({ faults: { truncate: 0.1, badCrc: 0.1 } })
    await run(20_000)
    device.setFaults({})
    await run(2000)
    const c = device.counters
    gw.decoder.reset() // a frame cut at the very end counts too
    expect(c.faults.truncated).toBeGreaterThan(5)
    expect(c.faults.badCrc).toBeGreaterThan(5)
    expect(gw.decoder.stats.truncated).toBe(c.faults.truncated)
    expect(gw.decoder.stats.badCrc).toBe(c.faults.badCrc)
    expect(gw.handledPositions).toEqual(positions(emitted))
    expect(c.outbox).toBe(0)
  })

  it('writes garbage between frames', async () => {
    const { gw, device, emitted, run } = await setup({ faults: { garbage: 0.2 } })
    await run(5000)
    device.setFaults({})
    await run(2000)
    expect(device.counters.faults.garbage).toBeGreaterThan(5)
    expect(gw.decoder.stats.noiseBytes).toBeGreaterThan(0)
    expect(gw.handledPositions).toEqual(positions(emitted))
  })

  it('is silent for a period: reports made meanwhile go out afterwards', async () => {
    const { device, bytes, emitted, gw, run } = await setup({ faults: { silence: { atMs: [1000], durationMs: 500 } } })
    await run(1000)
    const written = bytes.length
    await run(490)
    expect(bytes.length).toBe(written)
    expect(emitted.length).toBe(15)
    await run(10)
    expect(bytes.length).toBeGreaterThan(written)
    await run(500)
    expect(gw.handledPositions).toEqual(positions(emitted))
    expect(device.counters.faults.silences).toBe(1)
  })

  it('unplugs the line for a period, and says HELLO when it is back', async () => {
    const { device, events, emitted, gw, run } = await setup({ faults: { unplug: { atMs: [1000], durationMs: 500 } } })
    await run(2000)
    expect(events).toEqual(['open@0', 'close@1000', 'open@1500'])
    expect(gw.hellos).toHaveLength(2)
    expect(gw.handledPositions).toEqual(positions(emitted))
    expect(device.counters.faults.unplugs).toBe(1)
  })

  it('makes a burst of reports at once', async () => {
    const { device, emitted, gw, run } = await setup({ faults: { burst: { atMs: [1000], count: 50 } } })
    await run(990)
    expect(emitted).toHaveLength(10)
    await run(10)
    expect(emitted).toHaveLength(61) // the burst and the periodic report due at 1000
    await run(2000)
    expect(gw.handledPositions).toEqual(positions(emitted))
    expect(device.counters.faults.bursts).toBe(1)
  })

  it('refuses fault options that are wrong, naming them', () => {
    const link = new MemoryLink()
    const make = (faults: object): SimDevice => new SimDevice({ model: thermostat, seed: 1, modelIndex: 0, link, faults })
    expect(() => make({ garbage: 2 })).toThrow('faults.garbage: a probability from 0 to 1, not 2')
    expect(() => make({ reboot: { everyMs: 10 } })).toThrow('faults.reboot: every must be at least 100 ms, not 10')
    expect(() => make({ burst: { atMs: [1], count: 0 } })).toThrow('faults.burst.count: a whole number from 1 to 10000, not 0')
    expect(() => make({ silence: { everyMs: 1000 } })).toThrow('faults.silence.durationMs: a duration from 1 ms to 24 h, not undefined')
    expect(() => make({ flood: 1 })).toThrow('faults.flood: unknown fault')
    expect(() => new SimDevice({ model: thermostat, seed: 1, modelIndex: 0, link, window: 0 })).toThrow('window: a whole number from 1 to 4096, not 0')
  })
})

describe('SimDevice: determinism', () => {
  async function runFleet (seed: number): Promise<{ bytes: Buffer, emitted: EmittedReport[], handled: string[] }> {
    const { bytes, emitted, gw, device, run } = await setup({
      model: thermostat,
      seed,
      rate: 5,
      faults: { garbage: 0.05, truncate: 0.05, badCrc: 0.05, reboot: { everyMs: 3000 }, burst: { everyMs: 2000, count: 5 }, silence: { everyMs: 2500, durationMs: 300 } }
    })
    await run(20_000)
    device.setFaults({})
    await run(3000)
    const missing = positions(emitted).filter((p) => !gw.handledPositions.includes(p))
    if (missing.length > 0) console.log(seed, missing, device.counters, gw.hellos.map((h) => [h.boot, h.oldest]), gw.gaps, gw.outOfOrder, gw.mark)
    return { bytes: Buffer.concat(bytes), emitted, handled: gw.handledPositions }
  }

  it('writes the same bytes and makes the same reports from the same seed; another seed differs', async () => {
    const a = await runFleet(7)
    const b = await runFleet(7)
    const c = await runFleet(8)
    expect(a.bytes.length).toBeGreaterThan(10_000)
    expect(a.bytes.equals(b.bytes)).toBe(true)
    expect(a.emitted).toEqual(b.emitted)
    expect(a.bytes.equals(c.bytes)).toBe(false)
    // and, through every fault, each report handled exactly once
    for (const r of [a, c]) expect(r.handled).toEqual(positions(r.emitted))
  })

  it('delivers every report exactly once through every fault at once, for many seeds, models and windows', async () => {
    const failures: string[] = []
    for (let seed = 1; seed <= 24; seed++) {
      const { emitted, gw, device, run } = await setup({
        model: Object.values(MODELS)[seed % 3]!,
        seed,
        rate: 5,
        window: 1 + (seed % 8),
        faults: { garbage: 0.1, truncate: 0.1, badCrc: 0.1, reboot: { everyMs: 1500 }, burst: { everyMs: 2000, count: 5 }, silence: { everyMs: 2500, durationMs: 300 }, unplug: { everyMs: 3100, durationMs: 400 } }
      })
      await run(20_000)
      device.setFaults({})
      await run(5000)
      if (JSON.stringify(gw.handledPositions) !== JSON.stringify(positions(emitted)) || device.counters.outbox !== 0) {
        failures.push(`seed ${seed}: handled ${gw.handled.length} of ${emitted.length}, outbox ${device.counters.outbox}`)
      }
      expect(device.counters.faults.reboots).toBeGreaterThan(10)
    }
    expect(failures).toEqual([])
  })

  it('decodes every frame it writes when there are no faults', async () => {
    const { bytes, run } = await setup({ model: thermostat, rate: 5 })
    await run(5000)
    const d = new FrameDecoder()
    d.push(Buffer.concat(bytes))
    expect(d.stats).toMatchObject({ noiseBytes: 0, truncated: 0, oversized: 0, badCrc: 0, malformed: 0 })
    expect(d.stats.frames).toBeGreaterThan(25)
  })
})

describe('SimDevice: non-volatile memory across a power cycle, and pausing reports', () => {
  it('boots again as the next boot, resending its unacknowledged frames first, then boot+1 naming the last frame made', async () => {
    const first = await setup()
    first.gw.autoAck = false
    await first.run(300)
    const nv = first.device.nvState()
    expect(nv.boot).toBe(1)
    expect(nv.lastMade).toBe(`1:${first.emitted.length}`)
    // the boot report was acknowledged during setup; the rest were not
    const acked = first.device.counters.acked
    expect(acked).toBe(1)
    expect(positions(nv.outbox)).toEqual(positions(first.emitted.slice(acked)))
    await first.device.close()

    const second = await setup({ nvState: nv })
    await second.run(300)
    expect(second.device.bootCount).toBe(2)
    // the old boot's frames, then the new boot's, each handled once by a gateway that knew nothing
    expect(second.gw.handledPositions.slice(0, nv.outbox.length)).toEqual(positions(nv.outbox))
    expect(second.gw.handledPositions[nv.outbox.length]).toBe('2:1')
    expect(second.emitted[0]).toMatchObject({ boot: 2, seq: 1, prev: nv.lastMade })
    expect(second.gw.duplicates + second.gw.outOfOrder + second.gw.gaps).toBe(0)
  })

  it('refuses a memory larger than its outbox', async () => {
    const nv = { boot: 1, lastMade: '1:3', outbox: [{ boot: 1, seq: 2, frame: 'x' }, { boot: 1, seq: 3, frame: 'y' }] }
    await expect(setup({ nvState: nv, outboxCapacity: 1 })).rejects.toThrow('nvState.outbox: 2 frames, more than the outbox holds (1)')
  })

  it('makes no report while paused, but still resends until every frame is acknowledged', async () => {
    const { gw, device, emitted, run } = await setup()
    gw.autoAck = false
    await run(200)
    device.setReporting(false)
    const made = emitted.length
    await run(500)
    expect(emitted).toHaveLength(made)
    expect(device.counters.outbox).toBe(made - device.counters.acked)
    gw.autoAck = true
    gw.lineOpened() // a SYNC: the device says HELLO and resends
    await run(1000)
    expect(device.counters.outbox).toBe(0)
    expect(gw.handledPositions).toEqual(positions(emitted))
    device.setReporting(true)
    await run(200)
    expect(emitted.length).toBeGreaterThan(made)
  })
})
