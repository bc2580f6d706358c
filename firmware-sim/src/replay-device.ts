/**
 * A device that plays a recording back on its line: the same bytes at the same times, relative to
 * when playing starts. It does not react to anything (ACKs, SYNC): it is a tape.
 */
import { realClock, type SimClock, type TimerHandle } from './clock.js'
import type { DeviceLink } from './links/link.js'
import type { Recording } from './recording.js'

export interface ReplayDeviceOptions {
  readonly recording: Recording
  readonly link: DeviceLink
  readonly clock?: SimClock | undefined
  /**
   * When the tape starts: `open` (default) when the line first opens (for TCP, when the gateway
   * connects), `start` at once.
   */
  readonly startOn?: 'open' | 'start' | undefined
}

/** What a replay did so far. */
export interface ReplayCounters {
  /** Writes played (whether or not the line was open to take them). */
  readonly writesPlayed: number
  readonly writesTotal: number
  readonly bytesPlayed: number
  readonly done: boolean
  readonly linkOpen: boolean
}

export class ReplayDevice {
  readonly model: string
  readonly serial: string
  readonly fw: string
  readonly link: DeviceLink
  private readonly recording: Recording
  private readonly clock: SimClock
  private readonly startOn: 'open' | 'start'
  private t0: number | null = null
  private next = 0
  private bytesPlayed = 0
  private timer: TimerHandle | null = null
  private closed = false

  constructor (options: ReplayDeviceOptions) {
    this.recording = options.recording
    this.link = options.link
    this.clock = options.clock ?? realClock
    this.startOn = options.startOn ?? 'open'
    this.model = this.recording.header.model
    this.serial = this.recording.header.serial
    this.fw = this.recording.header.fw
  }

  get counters (): ReplayCounters {
    return {
      writesPlayed: this.next,
      writesTotal: this.recording.writes.length,
      bytesPlayed: this.bytesPlayed,
      done: this.next >= this.recording.writes.length,
      linkOpen: this.link.isOpen
    }
  }

  async start (): Promise<void> {
    this.link.attach({
      open: () => { if (this.t0 === null) this.play() },
      data: () => {},
      close: () => {}
    })
    if (this.startOn === 'start') this.play()
    await this.link.start()
  }

  async close (): Promise<void> {
    this.closed = true
    this.timer?.cancel()
    this.timer = null
    await this.link.close()
  }

  private play (): void {
    if (this.closed || this.t0 !== null) return
    this.t0 = this.clock.now()
    this.schedule()
  }

  private schedule (): void {
    const w = this.recording.writes[this.next]
    if (w === undefined || this.closed || this.t0 === null) return
    this.timer = this.clock.setTimer(() => { this.due() }, this.t0 + w.t - this.clock.now())
  }

  private due (): void {
    this.timer = null
    const t = this.clock.now() - (this.t0 ?? 0)
    // everything due by now, in order (a late timer plays the backlog at once)
    for (let w = this.recording.writes[this.next]; w !== undefined && w.t <= t; w = this.recording.writes[this.next]) {
      this.link.write(w.bytes)
      this.bytesPlayed += w.bytes.length
      this.next++
    }
    this.schedule()
  }
}
