/**
 * The device side of docs/device-protocol.md: a simulated device with a boot counter, a bounded
 * outbox that survives reboots, a window of frames in flight, go-back-N retransmission, HELLO at
 * boot, on line open and on SYNC, and fault injection. Sans-timers at its core: everything happens
 * in device time (ms since start) in {@link SimDevice.advanceTo}, so the reports a device makes
 * depend only on its seed and the time elapsed, whatever the timer jitter; the clock only decides
 * when advanceTo runs.
 */
import { comparePos, encodeFrame, formatPos, FrameDecoder, parsePos, type DataFrameType, type DecoderStats, type FramePos } from '@herald/device-protocol'
import { realClock, type SimClock, type TimerHandle } from './clock.js'
import { SimConfigError } from './errors.js'
import { FaultSchedule, NO_FAULTS, validateFaults, type FaultCounters, type FaultOptions } from './faults.js'
import type { DeviceLink } from './links/link.js'
import type { DeviceModel, ModelInstance } from './models/model.js'
import { hashParts, Random } from './random.js'

/** Device defaults: outbox, window and timeout as docs/device-protocol.md describes them. */
export const DEVICE_DEFAULTS = Object.freeze({
  /** Periodic STATE reports per second (0: only on change). */
  rate: 1,
  /** Data frames the outbox holds at most ([DEV-SEQ-2]). */
  outboxCapacity: 4096,
  /** Data frames in flight beyond the last acknowledged one, at most ([DEV-SEQ-3]). */
  window: 32,
  /** Milliseconds without ACK progress before going back to the oldest unacknowledged frame ([DEV-SEQ-3]). */
  retransmitMs: 500
})

/** Milliseconds of simulated time per model tick. */
export const MODEL_STEP_MS = 100
/** The largest rate, in reports per second per device. */
export const MAX_RATE = 1000

/** A data frame the device put into its outbox: what the gateway must turn into events exactly once. */
export interface EmittedReport {
  readonly serial: string
  readonly model: string
  readonly boot: number
  readonly seq: number
  readonly type: DataFrameType
  readonly code: string | null
  /** Only on `seq` 1: the frame's `prev` as written (`<boot>:<seq>` or `none`, [DEV-SEQ-1]). */
  readonly prev?: string
  /** The model's fields (`prev` is not among them). */
  readonly fields: Readonly<Record<string, string>>
}

/**
 * What a device keeps in non-volatile memory across a power cycle ([DEV-SEQ-1], [DEV-SEQ-2]): the
 * boot counter, the position of the last frame it made, and its outbox. A device given one boots
 * as the next boot of that device.
 */
export interface DeviceNvState {
  readonly boot: number
  /** `<boot>:<seq>` or `none`. */
  readonly lastMade: string
  /** Unacknowledged data frames, oldest first, as written on the line (ASCII). */
  readonly outbox: ReadonlyArray<{ readonly boot: number, readonly seq: number, readonly frame: string }>
}

export interface SimDeviceOptions {
  readonly model: DeviceModel
  /** The run seed: with the model and `modelIndex` it decides the serial, the model's course and the faults. */
  readonly seed: number
  /** This device's position among the devices of its model (0, 1, ...). */
  readonly modelIndex: number
  readonly link: DeviceLink
  /** Default: the real clock. */
  readonly clock?: SimClock | undefined
  /** Periodic STATE reports per second; default 1; 0: only on change. */
  readonly rate?: number | undefined
  /** Default 4096. */
  readonly outboxCapacity?: number | undefined
  /** Default 32. */
  readonly window?: number | undefined
  /** Default 500 ms. */
  readonly retransmitMs?: number | undefined
  readonly faults?: FaultOptions | undefined
  /** The non-volatile memory of an earlier run of this device: it boots as that device's next boot. */
  readonly nvState?: DeviceNvState | undefined
  /** Called for every data frame put into the outbox. */
  readonly onEmitted?: ((report: EmittedReport) => void) | undefined
  /** Called with every chunk of bytes the line accepted, with the device time it was written at. */
  readonly onWrite?: ((timeMs: number, bytes: Buffer) => void) | undefined
}

/** What a device did so far. */
export interface DeviceCounters {
  readonly boot: number
  /** Data frames put into the outbox. */
  readonly reportsMade: number
  /** Frames written to the line (HELLO and data, first sends and resends). */
  readonly framesSent: number
  readonly hellosSent: number
  /** Data frames written again (go-back-N, or after a HELLO). */
  readonly retransmitted: number
  /** Data frames removed from the outbox by ACKs. */
  readonly acked: number
  /** Data frames in the outbox now. */
  readonly outbox: number
  /** Reports not made because the outbox was full ([DEV-SEQ-2]). */
  readonly droppedFull: number
  readonly acksReceived: number
  readonly syncsReceived: number
  /** Faults injected, all kinds. */
  readonly faultsInjected: number
  readonly faults: FaultCounters
  /** What the device's decoder made of the gateway's bytes. */
  readonly rx: DecoderStats
  readonly linkOpen: boolean
}

interface OutboxEntry { readonly boot: number, readonly seq: number, readonly bytes: Buffer, sent: boolean }

type EventKind = 'reboot' | 'unplug' | 'replug' | 'silence' | 'silenceEnd' | 'burst' | 'step' | 'report' | 'retransmit'

const HEX = '0123456789ABCDEF'

/** The hex digit `k` (1-15) places after the uppercase hex digit `byte`: a different digit. */
function hexDigitFlip (byte: number, k: number): number {
  const d = HEX.indexOf(String.fromCharCode(byte))
  return HEX.charCodeAt((d + k) % 16)
}

function checkInteger (name: string, n: number, min: number, max: number): number {
  if (!(Number.isInteger(n) && n >= min && n <= max)) throw new SimConfigError(`${name}: a whole number from ${min} to ${max}, not ${n}`)
  return n
}

/** The serial number of the `modelIndex`-th device of `model` in a run with `seed`: `<prefix>-<6 digits>`. */
export function serialFor (model: DeviceModel, seed: number, modelIndex: number): string {
  const n = (hashParts('serial', seed, model.name) + modelIndex) % 1_000_000
  return `${model.prefix}-${String(n).padStart(6, '0')}`
}

/** A simulated device. Create, then {@link start}; {@link close} when done. */
export class SimDevice {
  readonly model: DeviceModel
  readonly serial: string
  readonly fw: string
  readonly link: DeviceLink
  private readonly clock: SimClock
  private readonly reportIntervalMs: number
  private readonly capacity: number
  private readonly window: number
  private readonly retransmitMs: number
  private readonly onEmitted: ((report: EmittedReport) => void) | undefined
  private readonly onWrite: ((timeMs: number, bytes: Buffer) => void) | undefined
  private readonly instance: ModelInstance
  private readonly faultRandom: Random
  private faults: FaultOptions = NO_FAULTS
  private reboots!: FaultSchedule
  private silences!: FaultSchedule
  private bursts!: FaultSchedule
  private unplugs!: FaultSchedule

  private t0 = 0
  private now = 0
  private timer: TimerHandle | null = null
  private started = false
  private closed = false
  private reporting = true
  // inside advanceTo: link events wait until it is done (a link may report a close synchronously
  // from unplug(), for instance)
  private busy = false

  // non-volatile: the boot counter, the last position made and the outbox ([DEV-SEQ-1], [DEV-SEQ-2])
  private boot = 1
  private lastMade: FramePos | null = null
  private readonly outbox: OutboxEntry[] = []
  // volatile
  private seq = 0
  private sendIndex = 0
  private retransmitAt = Infinity
  private nextStepAt = MODEL_STEP_MS
  private nextReportAt: number
  private silentUntil = -Infinity
  private silenceEndAt = Infinity
  private replugAt = Infinity
  // the line as the device last heard of it: a device writes only after its HELLO on an open line
  private lineUp = false
  private readonly decoder = new FrameDecoder()

  private readonly c = {
    reportsMade: 0, framesSent: 0, hellosSent: 0, retransmitted: 0, acked: 0, droppedFull: 0, acksReceived: 0, syncsReceived: 0
  }

  private readonly f = { garbage: 0, truncated: 0, badCrc: 0, reboots: 0, silences: 0, bursts: 0, unplugs: 0 }

  constructor (options: SimDeviceOptions) {
    this.model = options.model
    this.serial = serialFor(options.model, options.seed, options.modelIndex)
    this.fw = options.model.fw
    this.link = options.link
    this.clock = options.clock ?? realClock
    const rate = options.rate ?? DEVICE_DEFAULTS.rate
    if (!(rate >= 0 && rate <= MAX_RATE)) throw new SimConfigError(`rate: reports per second from 0 to ${MAX_RATE}, not ${rate}`)
    this.reportIntervalMs = rate === 0 ? Infinity : 1000 / rate
    this.nextReportAt = this.reportIntervalMs
    this.capacity = checkInteger('outboxCapacity', options.outboxCapacity ?? DEVICE_DEFAULTS.outboxCapacity, 1, 1_000_000)
    this.window = checkInteger('window', options.window ?? DEVICE_DEFAULTS.window, 1, 4096)
    this.retransmitMs = checkInteger('retransmitMs', options.retransmitMs ?? DEVICE_DEFAULTS.retransmitMs, 1, 3_600_000)
    this.onEmitted = options.onEmitted
    this.onWrite = options.onWrite
    this.instance = this.model.create(new Random(options.seed, this.serial, 'model'))
    this.faultRandom = new Random(options.seed, this.serial, 'faults')
    this.setFaults(options.faults ?? NO_FAULTS)
    if (options.nvState !== undefined) this.restore(options.nvState)
  }

  /** Loads the non-volatile memory of an earlier run: the next boot, the same outbox. */
  private restore (nv: DeviceNvState): void {
    const boot = checkInteger('nvState.boot', nv.boot, 1, Number.MAX_SAFE_INTEGER - 1)
    let lastMade: FramePos | null
    try {
      lastMade = parsePos(nv.lastMade)
    } catch (err) {
      throw new SimConfigError(`nvState.lastMade: ${(err as Error).message}`)
    }
    if (nv.outbox.length > this.capacity) throw new SimConfigError(`nvState.outbox: ${nv.outbox.length} frames, more than the outbox holds (${this.capacity})`)
    this.boot = boot + 1
    this.lastMade = lastMade
    for (const e of nv.outbox) this.outbox.push({ boot: e.boot, seq: e.seq, bytes: Buffer.from(e.frame, 'latin1'), sent: false })
  }

  /** The device's non-volatile memory now, to boot it again later ({@link SimDeviceOptions.nvState}). */
  nvState (): DeviceNvState {
    return {
      boot: this.boot,
      lastMade: formatPos(this.lastMade),
      outbox: this.outbox.map((e) => ({ boot: e.boot, seq: e.seq, frame: e.bytes.toString('latin1') }))
    }
  }

  /**
   * Stops (false) or resumes (true) making reports. A device that makes none still answers SYNC,
   * takes ACKs and resends its outbox: tests use it to let every report made reach the gateway.
   */
  setReporting (on: boolean): void {
    this.reporting = on
  }

  /** Device time: milliseconds since start(). */
  get time (): number {
    return this.now
  }

  /** The current boot counter. */
  get bootCount (): number {
    return this.boot
  }

  /** Boots the device (boot 1: HELLO if the line is open, then a STATE report) and starts its link. */
  async start (): Promise<void> {
    if (this.started) return
    this.started = true
    this.t0 = this.clock.now()
    this.link.attach({
      open: () => { this.fromLink(() => { this.lineOpened() }) },
      data: (bytes) => { this.fromLink(() => { this.received(bytes) }) },
      close: () => { this.fromLink(() => { this.lineClosed() }) }
    })
    this.bootUp()
    this.reschedule()
    await this.link.start()
  }

  /** Stops the device and closes its link. */
  async close (): Promise<void> {
    if (this.closed) return
    this.closed = true
    this.timer?.cancel()
    this.timer = null
    await this.link.close()
  }

  /** Replaces the device's faults, from now on. */
  setFaults (faults: FaultOptions): void {
    this.faults = validateFaults(faults)
    this.reboots = new FaultSchedule(faults.reboot, this.faultRandom, this.now)
    this.silences = new FaultSchedule(faults.silence, this.faultRandom, this.now)
    this.bursts = new FaultSchedule(faults.burst, this.faultRandom, this.now)
    this.unplugs = new FaultSchedule(faults.unplug, this.faultRandom, this.now)
  }

  /** The faults in force. */
  get faultOptions (): FaultOptions {
    return this.faults
  }

  get counters (): DeviceCounters {
    const f = { ...this.f }
    return {
      ...this.c,
      boot: this.boot,
      outbox: this.outbox.length,
      faults: f,
      faultsInjected: f.garbage + f.truncated + f.badCrc + f.reboots + f.silences + f.bursts + f.unplugs,
      rx: this.decoder.stats,
      linkOpen: this.link.isOpen
    }
  }

  /** Runs everything due up to device time `t` (ms since start), in time order. */
  advanceTo (t: number): void {
    if (this.closed) return
    this.busy = true
    try {
      for (;;) {
        const [at, kind] = this.nextEvent()
        if (at > t) break
        this.now = Math.max(this.now, at)
        this.run(kind)
      }
      this.now = Math.max(this.now, t)
    } finally {
      this.busy = false
    }
  }

  // -- time

  private nextEvent (): [number, EventKind] {
    // ties resolve in this order
    const candidates: Array<[number, EventKind]> = [
      [this.reboots.next, 'reboot'],
      [this.unplugs.next, 'unplug'],
      [this.replugAt, 'replug'],
      [this.silences.next, 'silence'],
      [this.silenceEndAt, 'silenceEnd'],
      [this.bursts.next, 'burst'],
      [this.nextStepAt, 'step'],
      [this.nextReportAt, 'report'],
      [this.retransmitAt, 'retransmit']
    ]
    let best = candidates[0]!
    for (const c of candidates) if (c[0] < best[0]) best = c
    return best
  }

  private run (kind: EventKind): void {
    switch (kind) {
      case 'reboot':
        this.reboots.advance()
        this.f.reboots++
        this.reboot()
        break
      case 'unplug': {
        this.unplugs.advance()
        if (this.replugAt !== Infinity || this.faults.unplug === undefined) break
        this.f.unplugs++
        this.replugAt = this.now + this.faults.unplug.durationMs
        // the link tells the device it closed; a failure to close leaves it open, nothing to undo
        this.link.unplug().catch(() => {})
        break
      }
      case 'replug':
        this.replugAt = Infinity
        this.link.replug().catch(() => {})
        break
      case 'silence':
        this.silences.advance()
        if (this.faults.silence === undefined) break
        this.f.silences++
        this.silentUntil = Math.max(this.silentUntil, this.now + this.faults.silence.durationMs)
        this.silenceEndAt = this.silentUntil
        break
      case 'silenceEnd':
        this.silenceEndAt = Infinity
        this.pump()
        break
      case 'burst': {
        this.bursts.advance()
        if (this.faults.burst === undefined) break
        this.f.bursts++
        for (let i = 0; i < this.faults.burst.count; i++) this.report('STATE', null, this.instance.state())
        break
      }
      case 'step':
        this.nextStepAt += MODEL_STEP_MS
        this.step()
        break
      case 'report':
        this.nextReportAt += this.reportIntervalMs
        this.report('STATE', null, this.instance.state())
        break
      case 'retransmit':
        // [DEV-SEQ-3] no ACK progress within the timeout: go back to the oldest unacknowledged frame
        this.retransmitAt = Infinity
        if (this.sendIndex > 0) {
          this.sendIndex = 0
          this.pump()
        }
        break
    }
  }

  private reschedule (): void {
    if (this.closed) return
    this.timer?.cancel()
    const [at] = this.nextEvent()
    if (at === Infinity) {
      this.timer = null
      return
    }
    this.timer = this.clock.setTimer(() => {
      this.timer = null
      this.advanceTo(this.clock.now() - this.t0)
      this.reschedule()
    }, this.t0 + at - this.clock.now())
  }

  private fromLink (fn: () => void): void {
    if (this.closed || !this.started) return
    if (this.busy) {
      queueMicrotask(() => { this.fromLink(fn) })
      return
    }
    this.advanceTo(this.clock.now() - this.t0)
    fn()
    this.reschedule()
  }

  // -- the model

  private step (): void {
    let changed = false
    for (const event of this.instance.tick(MODEL_STEP_MS)) {
      if (event.kind === 'changed') changed = true
      else this.report(event.kind === 'alarm' ? 'ALARM' : 'CLEAR', event.code, event.fields)
    }
    if (changed) this.report('STATE', null, this.instance.state())
  }

  private report (type: DataFrameType, code: string | null, fields: Readonly<Record<string, string>>): void {
    if (!this.reporting) return
    // [DEV-SEQ-2] a report that finds the outbox full is not made: no seq is used
    if (this.outbox.length >= this.capacity) {
      this.c.droppedFull++
      return
    }
    const seq = ++this.seq
    // [DEV-SEQ-1] the first frame of a boot names the frame made before it
    const prev = seq === 1 ? formatPos(this.lastMade) : undefined
    const bytes = encodeFrame({ type, boot: this.boot, seq, code, fields: prev === undefined ? fields : { prev, ...fields } })
    this.outbox.push({ boot: this.boot, seq, bytes, sent: false })
    this.lastMade = { boot: this.boot, seq }
    this.c.reportsMade++
    this.onEmitted?.({ serial: this.serial, model: this.model.name, boot: this.boot, seq, type, code, ...(prev === undefined ? {} : { prev }), fields })
    this.pump()
  }

  // -- boot

  private bootUp (): void {
    // [DEV-SESSION-1] HELLO at boot (if the line is open), then the device's state
    this.sendHello()
    this.report('STATE', null, this.instance.state())
  }

  private reboot (): void {
    // [DEV-SEQ-1] boot + 1, seq from 1; [DEV-SEQ-2] the outbox survives; the rest is volatile
    this.boot++
    this.seq = 0
    this.sendIndex = 0
    this.retransmitAt = Infinity
    this.decoder.reset()
    this.nextReportAt = this.now + this.reportIntervalMs
    this.bootUp()
  }

  // -- the line

  private canSend (): boolean {
    return this.lineUp && this.link.isOpen && this.now >= this.silentUntil
  }

  private lineOpened (): void {
    this.lineUp = true
    this.decoder.reset()
    this.sendIndex = 0
    this.retransmitAt = Infinity
    this.sendHello()
  }

  private lineClosed (): void {
    this.lineUp = false
    this.decoder.reset()
    this.sendIndex = 0
    this.retransmitAt = Infinity
  }

  private received (bytes: Buffer): void {
    for (const frame of this.decoder.push(bytes)) {
      if (frame.type === 'ACK') this.acknowledged(frame.boot, frame.seq)
      else if (frame.type === 'SYNC') {
        this.c.syncsReceived++
        this.sendHello()
      }
      // HELLO and data frames from the gateway side mean nothing to a device: ignored
    }
  }

  private acknowledged (boot: number, seq: number): void {
    this.c.acksReceived++
    // [DEV-SEQ-3] an ACK removes every frame up to (boot, seq)
    let k = 0
    while (k < this.outbox.length && comparePos(this.outbox[k]!, { boot, seq }) <= 0) k++
    if (k === 0) return
    this.outbox.splice(0, k)
    this.c.acked += k
    this.sendIndex = Math.max(0, this.sendIndex - k)
    this.retransmitAt = this.sendIndex > 0 ? this.now + this.retransmitMs : Infinity
    this.pump()
  }

  private sendHello (): void {
    if (!this.canSend()) return
    // the first frame it will send: the oldest unacknowledged, or the next it will make
    const first = this.outbox[0]
    this.transmit(encodeFrame({
      type: 'HELLO',
      model: this.model.name,
      serial: this.serial,
      fw: this.fw,
      boot: this.boot,
      oldest: first === undefined ? { boot: this.boot, seq: this.seq + 1 } : { boot: first.boot, seq: first.seq },
      fields: {}
    }))
    this.c.hellosSent++
    // [DEV-SESSION-1] after a HELLO, resend from the oldest unacknowledged frame
    this.sendIndex = 0
    this.retransmitAt = Infinity
    this.pump()
  }

  /** [DEV-SEQ-3] sends outbox frames in order, at most `window` beyond the last acknowledged one. */
  private pump (): void {
    if (!this.canSend()) return
    while (this.sendIndex < this.outbox.length && this.sendIndex < this.window) {
      const entry = this.outbox[this.sendIndex]!
      if (entry.sent) this.c.retransmitted++
      entry.sent = true
      this.transmit(entry.bytes)
      this.sendIndex++
      if (this.retransmitAt === Infinity) this.retransmitAt = this.now + this.retransmitMs
    }
  }

  /** Writes one frame, through the line faults. */
  private transmit (frame: Buffer): void {
    this.c.framesSent++
    const r = this.faultRandom
    const { garbage, truncate, badCrc } = this.faults
    if (garbage !== undefined && r.chance(garbage)) {
      this.f.garbage++
      const noise = Buffer.alloc(1 + r.int(16))
      for (let i = 0; i < noise.length; i++) noise[i] = r.int(256)
      this.write(noise)
    }
    let out = frame
    if (truncate !== undefined && r.chance(truncate)) {
      // cut before the LF: the next frame's "$" follows
      this.f.truncated++
      out = frame.subarray(0, 1 + r.int(frame.length - 1))
    } else if (badCrc !== undefined && r.chance(badCrc)) {
      this.f.badCrc++
      out = Buffer.from(frame)
      const at = frame.length - 9 + r.int(8)
      out[at] = hexDigitFlip(out[at]!, 1 + r.int(15))
    }
    this.write(out)
  }

  private write (bytes: Buffer): void {
    if (this.link.write(bytes)) this.onWrite?.(this.now, bytes)
  }
}
