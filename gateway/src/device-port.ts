/**
 * One configured device line: opens it, reopens it with backoff when it closes or fails, decodes
 * frames, asks for a HELLO when needed ([DEV-SESSION-1], [DEV-GW-4]) and sends what the gateway
 * decides (ACK, SYNC). What frames mean is the gateway's business (`PortHost`).
 */
import { FrameDecoder, encodeFrame, isDataFrame, type DataFrame, type DecoderStats, type DeviceFrame, type FramePos, type HelloFrame } from '@herald/device-protocol'
import { backoffDelay, silentLogger, systemClock, type Clock, type Logger } from '@herald/protocol'
import type { DeviceConfig, LineTiming } from './config/gateway-config.js'
import { createDeviceLine } from './lines/device-line.js'
import type { DeviceLine } from './lines/device-line.js'

/** The state of a device line, for the status. */
export const PortState = {
  /** Opening, or waiting to reopen. */
  connecting: 'connecting',
  /** Open, no HELLO yet. */
  open: 'open',
  /** A HELLO was accepted: frames are handled. */
  online: 'online',
  /** Open, but nothing received for `staleAfter`. */
  stale: 'stale',
  /** Open, but the device was refused (same serial as another line, or another model). */
  refused: 'refused',
  closed: 'closed'
} as const
export type PortState = (typeof PortState)[keyof typeof PortState]

/** What a port tells the gateway. */
export interface PortHost {
  /** A HELLO arrived; the host answers with `accept()` or `refuse()`. */
  hello (port: DevicePort, frame: HelloFrame): void
  /** A data frame arrived on a line where a HELLO was accepted. */
  data (port: DevicePort, frame: DataFrame): void
  /** The line closed (or the port was closed). */
  lineClosed (port: DevicePort): void
}

/** Counters of one port, kept across reopenings. */
export interface PortCounters {
  opens: number
  /** Frames decoded, by any verdict. */
  frames: number
  bytes: number
  /** Frames the decoder rejected ([DEV-FRAME-2]), all reasons. */
  corrupt: number
}

const MIN_SYNC_INTERVAL_MS = 1000
/** How long opening a TCP line may take. */
const OPEN_TIMEOUT_MS = 5000

export class DevicePort {
  readonly config: DeviceConfig
  readonly counters: PortCounters = { opens: 0, frames: 0, bytes: 0, corrupt: 0 }
  readonly #host: PortHost
  readonly #timing: LineTiming
  readonly #logger: Logger
  readonly #clock: Clock
  #state: PortState = PortState.connecting
  #line: DeviceLine | null = null
  #decoder = new FrameDecoder()
  #serial: string | null = null
  #attempt = 0
  #reopenTimer: NodeJS.Timeout | null = null
  #staleTimer: NodeJS.Timeout | null = null
  #lastSyncAt = -Infinity
  #syncTimer: NodeJS.Timeout | null = null
  #lastRxAt: number | null = null
  #lastError: string | null = null
  #closed = false
  /** Decoder counters summed over the openings before the current one. */
  readonly #decoderTotals: { -readonly [K in keyof DecoderStats]: number } = { frames: 0, noiseBytes: 0, truncated: 0, oversized: 0, badCrc: 0, malformed: 0 }

  constructor (config: DeviceConfig, host: PortHost, timing: LineTiming, options: { logger?: Logger, clock?: Clock } = {}) {
    this.config = config
    this.#host = host
    this.#timing = timing
    this.#logger = options.logger ?? silentLogger
    this.#clock = options.clock ?? systemClock
  }

  get state (): PortState { return this.#state }
  /** The serial the device said in its last accepted HELLO on this line, if any. */
  get serial (): string | null { return this.#serial }
  /** When bytes last arrived (ms since the epoch), or null. */
  get lastRxAt (): number | null { return this.#lastRxAt }
  /** Why the line last closed or failed to open. */
  get lastError (): string | null { return this.#lastError }

  start (): void {
    void this.#open()
  }

  /** Sends an ACK: everything up to `pos` is durable ([DEV-ACK-1]). */
  ack (pos: FramePos): void {
    this.#send({ type: 'ACK', boot: pos.boot, seq: pos.seq })
  }

  /**
   * Asks the device for a HELLO: at once if `force` or if the last SYNC is a second old, else once
   * at the end of that second (so a request is never lost, and a flood of bad frames costs one
   * SYNC a second).
   */
  sync (force = false): void {
    const wait = this.#lastSyncAt + MIN_SYNC_INTERVAL_MS - this.#clock.now()
    if (force || wait <= 0) {
      if (this.#syncTimer !== null) clearTimeout(this.#syncTimer)
      this.#syncTimer = null
      this.#lastSyncAt = this.#clock.now()
      this.#send({ type: 'SYNC' })
      return
    }
    if (this.#syncTimer !== null) return
    this.#syncTimer = setTimeout(() => {
      this.#syncTimer = null
      if (this.#line !== null) this.sync()
    }, wait)
    this.#syncTimer.unref()
  }

  /** The host accepted the HELLO of `serial` on this line. */
  accept (serial: string): void {
    this.#serial = serial
    this.#state = PortState.online
  }

  /** The host refused the device on this line; frames are ignored until the next HELLO. */
  refuse (reason: string): void {
    this.#serial = null
    this.#state = PortState.refused
    this.#lastError = reason
  }

  /** Closes the line for good. */
  close (): void {
    if (this.#closed) return
    this.#closed = true
    if (this.#reopenTimer !== null) clearTimeout(this.#reopenTimer)
    if (this.#staleTimer !== null) clearInterval(this.#staleTimer)
    if (this.#syncTimer !== null) clearTimeout(this.#syncTimer)
    const line = this.#line
    this.#line = null
    line?.close()
    this.#afterClose()
    this.#state = PortState.closed
  }

  async #open (): Promise<void> {
    if (this.#closed) return
    this.#state = PortState.connecting
    const line = createDeviceLine(this.config.address, OPEN_TIMEOUT_MS)
    try {
      await line.open()
    } catch (err) {
      this.#lastError = (err as Error).message
      this.#logger.debug({ device: this.config.name, err: this.#lastError, attempt: this.#attempt }, 'device line did not open')
      this.#scheduleReopen()
      return
    }
    if (this.#closed) {
      line.close()
      return
    }
    this.#line = line
    this.counters.opens++
    this.#decoder = new FrameDecoder()
    this.#state = PortState.open
    this.#lastRxAt = this.#clock.now()
    this.#logger.info({ device: this.config.name, url: this.config.url }, 'device line open')
    line.onData((chunk) => { this.#onData(chunk) })
    line.onClose((err) => { this.#onLineClosed(line, err) })
    this.sync(true)
    this.#staleTimer = setInterval(() => { this.#checkStale() }, Math.max(100, Math.floor(this.#timing.staleAfterMs / 2)))
    this.#staleTimer.unref()
  }

  #onLineClosed (line: DeviceLine, err: Error | null): void {
    if (this.#line !== line) return
    this.#line = null
    if (this.#staleTimer !== null) clearInterval(this.#staleTimer)
    this.#staleTimer = null
    this.#lastError = err?.message ?? null
    this.#logger.warn({ device: this.config.name, err: this.#lastError }, 'device line closed; reopening')
    this.#afterClose()
    this.#scheduleReopen()
  }

  #afterClose (): void {
    this.#foldDecoderStats()
    this.#serial = null
    this.#host.lineClosed(this)
  }

  #scheduleReopen (): void {
    if (this.#closed) return
    this.#state = PortState.connecting
    const delay = backoffDelay(this.#attempt++, { initialMs: this.#timing.reopenInitialMs, maxMs: this.#timing.reopenMaxMs })
    this.#reopenTimer = setTimeout(() => {
      this.#reopenTimer = null
      void this.#open()
    }, delay)
    this.#reopenTimer.unref()
  }

  #onData (chunk: Buffer): void {
    this.counters.bytes += chunk.length
    this.#lastRxAt = this.#clock.now()
    if (this.#state === PortState.stale) this.#state = this.#serial === null ? PortState.open : PortState.online
    const before = this.#corruptNow()
    const frames = this.#decoder.push(chunk)
    this.counters.corrupt += this.#corruptNow() - before
    for (const frame of frames) this.#onFrame(frame)
  }

  #onFrame (frame: DeviceFrame): void {
    this.counters.frames++
    if (frame.type === 'HELLO') {
      this.#attempt = 0
      this.#host.hello(this, frame)
      return
    }
    if (!isDataFrame(frame)) return // SYNC or ACK from a device: meaningless here, ignored
    if (this.#serial === null) {
      // [DEV-GW-4] data before a HELLO on this line: ask who is there
      if (this.#state !== PortState.refused) this.sync()
      return
    }
    this.#host.data(this, frame)
  }

  #checkStale (): void {
    if (this.#line === null || this.#lastRxAt === null) return
    if (this.#clock.now() - this.#lastRxAt < this.#timing.staleAfterMs) return
    if (this.#state !== PortState.stale) this.#logger.warn({ device: this.config.name, silentMs: this.#clock.now() - this.#lastRxAt }, 'device line silent')
    this.#state = PortState.stale
    this.sync()
  }

  #send (frame: DeviceFrame): void {
    this.#line?.write(encodeFrame(frame))
  }

  #corruptNow (): number {
    const s = this.#decoder.stats
    return s.truncated + s.oversized + s.badCrc + s.malformed
  }

  /** Folds the current decoder's counters into the totals (once per opening). */
  #foldDecoderStats (): void {
    const s = this.#decoder.stats
    for (const k of Object.keys(this.#decoderTotals) as Array<keyof DecoderStats>) this.#decoderTotals[k] += s[k]
    this.#decoder = new FrameDecoder()
  }

  /** Decoder counters including the open line's. */
  decoderStats (): DecoderStats {
    const s = this.#decoder.stats
    const t = this.#decoderTotals
    return { frames: t.frames + s.frames, noiseBytes: t.noiseBytes + s.noiseBytes, truncated: t.truncated + s.truncated, oversized: t.oversized + s.oversized, badCrc: t.badCrc + s.badCrc, malformed: t.malformed + s.malformed }
  }
}
