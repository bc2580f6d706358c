/**
 * Writes the broker's frames to one connection as MQTT PUBLISH packets (QoS 0, on the connection's
 * reply topic), straight onto its stream, and watches how many bytes wait there unsent
 * ([CLI-BACKPRESSURE-1] in docs/protocol.md).
 *
 * Straight onto the stream, not through aedes.publish: aedes routes a publish through its emitter,
 * which runs at most `concurrency` (100) deliveries at once and holds each until the socket drains,
 * so a hundred connections that never read would stop delivery to every other connection.
 */
import type { Duplex } from 'node:stream'
import { publishHeader } from './publish-header.js'

/** How long a connection may hold unsent bytes, and how many. */
export interface ConnectionWriterLimits {
  /** Above this many unsent bytes the connection is blocked: no data frames until it drains. */
  readonly maxQueuedBytes: number
  /** A connection blocked this long (ms) is closed. */
  readonly stuckTimeoutMs: number
  /**
   * A connection whose unsent bytes pass this (control frames keep being written while blocked) is
   * closed at once.
   */
  readonly hardLimitBytes: number
}

/** Why a writer closed its connection. */
export type SlowReason = 'stuck' | 'overflow'

/** One connection's output. */
export class ConnectionWriter {
  private readonly topicBytes: Buffer
  private waiting = false
  private timer: NodeJS.Timeout | null = null
  private blockedAt = 0
  /** Called when a blocked connection has drained. */
  onDrain: (() => void) | null = null

  constructor (
    private readonly stream: Duplex,
    topic: string,
    private readonly limits: ConnectionWriterLimits,
    /** Whether the peer subscribed to its reply topic: frames before that are dropped, as MQTT would. */
    private readonly subscribed: () => boolean,
    /** The writer is closing the connection; `blockedMs` is how long it was blocked. */
    private readonly onSlow: (reason: SlowReason, queuedBytes: number, blockedMs: number) => void
  ) {
    this.topicBytes = Buffer.from(topic, 'utf8')
  }

  /** True while more than `maxQueuedBytes` wait unsent: write control frames only, until it drains. */
  get blocked (): boolean {
    return this.waiting
  }

  /** Bytes written and not yet handed to the operating system. */
  get queuedBytes (): number {
    return this.stream.writableLength
  }

  /** Writes one frame as a PUBLISH on the reply topic. */
  write (frame: Uint8Array): void {
    const s = this.stream
    if (s.destroyed || !s.writable || !this.subscribed()) return
    s.cork()
    s.write(publishHeader(this.topicBytes, frame.length))
    s.write(frame)
    s.uncork()
    this.check()
  }

  /** Stops the timer; the connection is gone. */
  close (): void {
    if (this.timer !== null) clearTimeout(this.timer)
    this.timer = null
    if (this.waiting) this.stream.off('drain', this.drained)
    this.waiting = false
  }

  private check (): void {
    const s = this.stream
    const queued = s.writableLength
    if (this.waiting) {
      if (queued > this.limits.hardLimitBytes) this.slow('overflow')
      return
    }
    // 'drain' comes only after a write was refused (the stream's highWaterMark, 16 KiB for a socket):
    // a stream with a larger highWaterMark is blocked from there on
    if (queued > this.limits.maxQueuedBytes && s.writableNeedDrain) {
      this.waiting = true
      this.blockedAt = performance.now()
      s.once('drain', this.drained)
      this.timer = setTimeout(() => { this.slow('stuck') }, this.limits.stuckTimeoutMs)
      this.timer.unref()
    }
  }

  private readonly drained = (): void => {
    this.waiting = false
    if (this.timer !== null) clearTimeout(this.timer)
    this.timer = null
    this.onDrain?.()
  }

  private slow (reason: SlowReason): void {
    const queued = this.stream.writableLength
    const blockedMs = performance.now() - this.blockedAt
    this.close()
    this.onSlow(reason, queued, blockedMs)
    this.stream.destroy()
  }
}
