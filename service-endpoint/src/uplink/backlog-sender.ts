/**
 * The sending half of a service endpoint's uplink ([SVC-UPLOAD-1] .. [SVC-ORDER-1]): reads the
 * backlog in seq order, skips events whose lifetime ran out, sends UP frames while the window has
 * room, and applies the broker's cumulative acknowledgements.
 */
import { frameChunks, type RaisedEvent, type UpFrameOf } from '@herald/protocol'
import type { ServicePersistence } from '../persistence/service-persistence.js'

export interface SenderHooks {
  /** Encodes (measuring each event's age, [FRAME-UP-1]) and sends an UP frame; false if the link is down. */
  send (frame: UpFrameOf<RaisedEvent>): boolean
  /** True if an event's lifetime ran out before upload. */
  isExpired (e: RaisedEvent): boolean
  /** Events removed because they expired before upload. */
  onExpired (events: readonly RaisedEvent[]): void
  onError (err: unknown): void
}

export class BacklogSender {
  /** Highest seq the broker acknowledged (cumulative) for this instance. */
  acked = 0
  /** Highest seq read from the backlog on this connection (sent, or skipped as expired). */
  private readUpTo = 0
  /** Seq of the last event sent on this connection: the next frame's `after`. */
  private lastSent = 0
  /** Seqs and names in flight, oldest first. */
  private readonly inflight: Array<{ seq: number, name: string, bytes: number }> = []
  private inflightHead = 0
  private inflightBytes = 0
  private pumping = false
  private dirty = false
  private active = false

  constructor (
    private readonly persistence: ServicePersistence,
    private readonly hooks: SenderHooks,
    private readonly window: number,
    private readonly maxEventsPerFrame: number,
    private readonly maxFrameBytes: number,
    /** Most payload bytes in flight; at least one frame is always allowed. */
    private readonly maxInflightBytes: number
  ) {}

  /** The highest seq read for sending on this connection: events above it are not on their way yet. */
  get readHorizon (): number {
    return this.readUpTo
  }

  get inflightCount (): number {
    return this.inflight.length - this.inflightHead
  }

  /** The name of an in-flight event, for reports. */
  nameOf (seq: number): string | undefined {
    for (let i = this.inflightHead; i < this.inflight.length; i++) {
      const f = this.inflight[i] as { seq: number, name: string, bytes: number }
      if (f.seq === seq) return f.name
    }
    return undefined
  }

  /** A (new) connection is up: resend everything not acknowledged, starting after `acked`. */
  start (): void {
    this.active = true
    this.readUpTo = this.acked
    this.lastSent = this.acked
    this.inflight.length = 0
    this.inflightHead = 0
    this.inflightBytes = 0
    this.pump()
  }

  /** The connection is down: stop sending; what was in flight is resent by the next start(). */
  stop (): void {
    this.active = false
  }

  /** New events were appended to the backlog. */
  notify (): void {
    this.pump()
  }

  /** The broker acknowledged every seq <= `upTo` ([SVC-ACK-1]). */
  acknowledge (upTo: number): void {
    if (upTo <= this.acked) return
    this.acked = upTo
    while (this.inflightHead < this.inflight.length && (this.inflight[this.inflightHead] as { seq: number }).seq <= upTo) {
      this.inflightBytes -= (this.inflight[this.inflightHead] as { bytes: number }).bytes
      this.inflightHead++
    }
    if (this.inflightHead > 1024 && this.inflightHead * 2 > this.inflight.length) {
      this.inflight.splice(0, this.inflightHead)
      this.inflightHead = 0
    }
    if (this.readUpTo < upTo) {
      this.readUpTo = upTo
      this.lastSent = upTo
    }
    this.persistence.acknowledge(upTo).catch((err: unknown) => { this.hooks.onError(err) })
    this.pump()
  }

  private pump (): void {
    if (!this.active) return
    if (this.pumping) {
      this.dirty = true
      return
    }
    this.pumping = true
    this.dirty = false
    this.loop().catch((err: unknown) => { this.hooks.onError(err) }).finally(() => {
      this.pumping = false
      if (this.dirty) this.pump()
    })
  }

  /** Sends in seq order, which the broker turns into position order ([EVT-ORDER-1]). */
  private async loop (): Promise<void> {
    while (this.active) {
      const room = this.inflightBytes >= this.maxInflightBytes ? 0 : this.window - this.inflightCount
      if (room <= 0) return
      const batch = await this.persistence.read(this.readUpTo, Math.min(room, this.maxEventsPerFrame * 4))
      if (!this.active) return
      if (batch.length === 0) return
      const send: RaisedEvent[] = []
      const expired: RaisedEvent[] = []
      for (const e of batch) (this.hooks.isExpired(e) ? expired : send).push(e)
      if (expired.length > 0) {
        // [SVC-EXPIRE-1] never sent; removed and reported
        await this.persistence.remove(expired.map((e) => e.seq))
        this.hooks.onExpired(expired)
      }
      // frames bounded by count and bytes, so that no frame is ever too large for the broker
      let full = false
      for (const chunk of frameChunks(send, this.maxEventsPerFrame, this.maxFrameBytes)) {
        // [SVC-UPLOAD-1] maxInflightBytes holds per frame, not per read (a read may hold far more):
        // the rest of the batch is read again once acknowledgements free room
        if (this.inflightCount > 0 && this.inflightBytes >= this.maxInflightBytes) {
          full = true
          break
        }
        if (!this.hooks.send({ instance: this.persistence.instance, after: this.lastSent, events: chunk })) {
          this.active = false
          return
        }
        for (const e of chunk) {
          this.inflight.push({ seq: e.seq, name: e.name, bytes: e.payload.byteLength })
          this.inflightBytes += e.payload.byteLength
        }
        this.lastSent = (chunk[chunk.length - 1] as RaisedEvent).seq
      }
      // when full, the unsent events (and the expired ones among them, removed already) are read again
      this.readUpTo = full ? this.lastSent : (batch[batch.length - 1] as RaisedEvent).seq
    }
  }
}
