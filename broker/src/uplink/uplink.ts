/**
 * The broker's side of uploads ([SVC-*] in docs/protocol.md): decodes UP frames, judges each event
 * against the site, appends the accepted ones to the store (group commit), and answers with
 * cumulative ACK frames only after the store's commit ([SVC-ACK-1]).
 */
import { isUtf8 } from 'node:buffer'
import { decodeUp, encodeAck, ErrorCode, HeraldError, PayloadKind, RequestError, isValidName, GUEST_PRINCIPAL, type AckFrame, type Clock, type EventDefinition, type Logger, type Rejection, type ServiceDefinition, type Site, type StoredEvent, type UpEvent, type UpFrame } from '@herald/protocol'
import { isPromise, type AppendBatch, type EventStore } from '../event-store/event-store.js'
import { checkBatch } from '../event-store/event-store-rules.js'
import { INGEST_INSTANCE } from '../plain/plain-ingest.js'
import { keyVerdict } from './key-verdict.js'

/** What the uplink needs from the broker around it. */
export interface UplinkContext {
  readonly site: Site
  readonly store: EventStore
  readonly clock: Clock
  readonly logger: Logger
  /** Sends a frame on the service's ack topic. */
  sendToService (serviceId: string, frame: Uint8Array): void
  /** Called with newly stored events, after their commit, in position order. */
  onStored (events: readonly StoredEvent[]): void
  /** Called when the store failed: the service's connection should be dropped so it resends. */
  onStoreFailure (serviceId: string, err: unknown): void
}

/** Counters for status and tests. */
/** The event name refusals of names not in the site are counted under (metrics). */
export const UNKNOWN_EVENT_NAME = '(unknown)'

export interface UplinkStats {
  frames: number
  stored: number
  /** Events resent that were already handled (a lost ACK): acknowledged again, not stored ([STORE-DEDUP-1]). */
  duplicates: number
  rejected: number
  malformed: number
  outOfOrder: number
  /** Events that arrived with their lifetime already run out: acknowledged, not stored ([STORE-EXPIRE-2]). */
  expiredOnArrival: number
  /** Null events dropped over a stored null: acknowledged, not stored ([STORE-REPLACE-2]). */
  nullsDropped: number
}

/** Rejections merged into one ACK frame at most (the codec accepts up to 10,000). */
const MAX_REJECTIONS_PER_ACK = 1000

interface PendingAck {
  instance: string
  acked: number
  rejections: Rejection[]
  error: { code: string, message: string } | null
}

function isRecipient (s: string | null): boolean {
  if (s === null) return false
  const slash = s.indexOf('/')
  if (slash < 0) return false
  const user = s.slice(0, slash)
  return (user === GUEST_PRINCIPAL || isValidName(user)) && isValidName(s.slice(slash + 1))
}

export class Uplink {
  /** Per (service, instance): the highest seq accepted into the store's queue (committed or not). */
  private readonly accepted = new Map<string, number>()
  /**
   * [PG-ASYNC-1] Frames waiting, per (service, instance), for a shared store to read the dedup
   * record (lastSeq answered with a promise), in arrival order. Bounded by the frames a service
   * sends before their ACK ([SVC-WINDOW-1]); handled in order once the record is read.
   */
  /** [PG-ASYNC-1] Per (service, instance): the highest seq this uplink saw committed (a shared store's ACKs of refusals). */
  private readonly committed = new Map<string, number>()
  private readonly parked = new Map<string, Array<[ServiceDefinition, UpFrame]>>()
  private readonly pendingAcks = new Map<string, PendingAck>()
  private ackScheduled = false
  readonly stats: UplinkStats = { frames: 0, stored: 0, duplicates: 0, rejected: 0, malformed: 0, outOfOrder: 0, expiredOnArrival: 0, nullsDropped: 0 }
  /** Events stored per event name (for metrics): one Map update per stored event. */
  readonly storedByEvent = new Map<string, number>()
  /**
   * Events refused per event name and error code (for metrics). A name not in the site counts under
   * UNKNOWN_EVENT_NAME, so a service cannot grow this map without bound.
   */
  readonly refusedByEvent = new Map<string, Map<string, number>>()

  /** The site events are judged against; setSite() swaps it ([SITE-RELOAD-4]): one field read per use. */
  private site: Site

  private readonly limitsOf = (name: string): EventDefinition | undefined => this.site.events.get(name)

  constructor (private readonly ctx: UplinkContext) {
    this.site = ctx.site
  }

  /**
   * Judges events against `site` from now on ([SITE-RELOAD-4]). Frames already judged keep their
   * verdict: what was accepted is stored and acknowledged.
   */
  setSite (site: Site): void {
    this.site = site
  }

  /** Handles one UP frame from an authenticated service. Synchronous up to the store's queue. */
  handle (service: ServiceDefinition, payload: Uint8Array): void {
    this.stats.frames++
    let frame: UpFrame
    try {
      frame = decodeUp(payload)
    } catch (err) {
      // [SVC-MALFORMED-1] a frame that cannot be decoded is answered with an error; nothing is stored
      this.stats.malformed++
      this.ctx.logger.warn({ service: service.id, err }, 'malformed UP frame')
      this.queueAck(service.id, { instance: '', acked: 0, rejections: [], error: { code: ErrorCode.MALFORMED_FRAME, message: (err as Error).message } })
      return
    }
    if (frame.instance === '') {
      // [SVC-MALFORMED-1] every event id names its persistence instance ([EVT-ID-1]): a frame without one is malformed
      this.stats.malformed++
      this.ctx.logger.warn({ service: service.id }, 'UP frame with an empty persistence instance')
      this.queueAck(service.id, { instance: '', acked: 0, rejections: [], error: { code: ErrorCode.MALFORMED_FRAME, message: 'UP frame: the persistence instance is empty' } })
      return
    }
    if (frame.instance === INGEST_INSTANCE) {
      // [PLAIN-INGEST-3] the broker numbers the service's plain-MQTT raises in this instance: an endpoint's would collide
      this.stats.malformed++
      this.ctx.logger.warn({ service: service.id }, `UP frame with the persistence instance "${INGEST_INSTANCE}", which is the broker's for plain-MQTT ingest`)
      this.queueAck(service.id, { instance: frame.instance, acked: 0, rejections: [], error: { code: ErrorCode.MALFORMED_FRAME, message: `UP frame: the persistence instance "${INGEST_INSTANCE}" is reserved for plain-MQTT ingest [PLAIN-INGEST-3]` } })
      return
    }
    this.handleFrame(service, frame, false)
  }

  /**
   * Judges and appends one decoded frame. `refreshed`: the dedup record was just read from a shared
   * store, so a frame that still continues beyond it is out of order ([CLUSTER-UPLINK-1]).
   */
  private handleFrame (service: ServiceDefinition, frame: UpFrame, refreshed: boolean): void {
    const key = `${service.id}\u0000${frame.instance}`
    const parked = this.parked.get(key)
    if (parked !== undefined) {
      parked.push([service, frame])
      return
    }
    let accepted = this.accepted.get(key)
    if (accepted === undefined || (frame.after > accepted && !refreshed)) {
      // [CLUSTER-UPLINK-1] another broker may have stored beyond what this one knows: a shared store
      // reads the dedup record (a promise), and the frames of this instance wait for it
      const known = this.ctx.store.lastSeq(service.id, frame.instance)
      if (isPromise(known)) {
        this.park(key, service, frame, known)
        return
      }
      accepted ??= known
    }
    if (frame.after > accepted) {
      // [SVC-ORDER-1] an earlier frame of this instance is missing: refuse, tell the service where we are
      this.stats.outOfOrder++
      this.queueAck(service.id, {
        instance: frame.instance,
        acked: this.committedSeq(service.id, frame.instance),
        rejections: [],
        error: { code: ErrorCode.OUT_OF_ORDER, message: `frame continues after seq ${frame.after}, but the broker has handled only up to ${accepted}` }
      })
      return
    }
    const judged = this.judge(service, frame, accepted)
    if (judged instanceof HeraldError) {
      this.stats.malformed++
      this.queueAck(service.id, { instance: frame.instance, acked: this.committedSeq(service.id, frame.instance), rejections: [], error: { code: judged.code, message: judged.message } })
      return
    }
    const { events, rejections, last, duplicates } = judged
    // [STORE-EXPIRE-1] each event's lifetime counts from receivedAt - age: its raise, on this clock
    const batch: AppendBatch = { serviceId: service.id, instance: frame.instance, events, handledUpTo: last, receivedAt: this.ctx.clock.now() }
    try {
      // [SVC-MALFORMED-2] the store's own checks, run here before anything is accepted: a batch the
      // store would refuse is a malformed frame, answered as such, never a store failure
      checkBatch(batch, this.limitsOf)
    } catch (err) {
      this.stats.malformed++
      this.ctx.logger.warn({ service: service.id, instance: frame.instance, code: (err as HeraldError).code, message: (err as Error).message }, 'UP frame refused by the store\'s checks')
      this.queueAck(service.id, { instance: frame.instance, acked: this.committedSeq(service.id, frame.instance), rejections: [], error: { code: ErrorCode.MALFORMED_FRAME, message: (err as Error).message } })
      return
    }
    this.stats.rejected += rejections.length
    this.stats.duplicates += duplicates
    if (last > accepted) this.accepted.set(key, last)
    this.ctx.store.append(batch).then((result) => {
      this.stats.stored += result.stored.length
      for (const e of result.stored) this.storedByEvent.set(e.name, (this.storedByEvent.get(e.name) ?? 0) + 1)
      this.stats.duplicates += result.duplicates
      this.stats.expiredOnArrival += result.expired
      this.stats.nullsDropped += result.nullsDropped
      this.committed.set(key, result.lastSeq)
      if (result.refused.length > 0) {
        // [STORE-KEY-3] refused by the store (a new key past maxKeys): rejections like the uplink's own
        this.stats.rejected += result.refused.length
        for (const r of result.refused) this.countRefused(events.find((e) => e.seq === r.seq)?.name ?? UNKNOWN_EVENT_NAME, r.code)
      }
      this.queueAck(service.id, { instance: frame.instance, acked: result.lastSeq, rejections: result.refused.length === 0 ? rejections : [...rejections, ...result.refused].sort((a, b) => a.seq - b.seq), error: null })
      if (result.stored.length > 0) this.ctx.onStored(result.stored)
    }, (err: unknown) => {
      // [SVC-ORDER-2] nothing of this frame is stored: forget what was accepted after the last commit,
      // so the resent frames are accepted again
      const known = this.ctx.store.lastSeq(service.id, frame.instance)
      if (isPromise(known)) {
        known.catch(() => {})
        this.accepted.delete(key) // read again from the shared store at the next frame
      } else {
        this.accepted.set(key, known)
      }
      if (err instanceof RequestError) {
        // [SVC-MALFORMED-2] the store refused the batch itself (its limits differ from the site's):
        // the frame is answered as malformed and the connection stays; resending would not help
        this.stats.malformed++
        this.ctx.logger.error({ service: service.id, instance: frame.instance, code: err.code, message: err.message }, 'the event store refused a batch the uplink accepted')
        this.queueAck(service.id, { instance: frame.instance, acked: this.committedSeq(service.id, frame.instance), rejections: [], error: { code: ErrorCode.MALFORMED_FRAME, message: err.message } })
        return
      }
      // a failure of the store itself: drop the connection so the service resends later
      this.ctx.logger.error({ service: service.id, err }, 'event store append failed')
      this.ctx.onStoreFailure(service.id, err)
    })
  }

  /** Holds the frames of (service, instance) until a shared store answered lastSeq, then handles them in order. */
  private park (key: string, service: ServiceDefinition, frame: UpFrame, known: Promise<number>): void {
    this.parked.set(key, [[service, frame]])
    known.then((seq) => {
      this.committed.set(key, Math.max(seq, this.committed.get(key) ?? 0))
      // what this broker accepted and has not committed yet may be above the record
      this.accepted.set(key, Math.max(seq, this.accepted.get(key) ?? 0))
      const frames = this.parked.get(key) ?? []
      this.parked.delete(key)
      for (let i = 0; i < frames.length; i++) {
        const [s, f] = frames[i]!
        this.handleFrame(s, f, true)
        // a later frame parked again (it continued beyond even the record): the rest wait behind it
        const again = this.parked.get(key)
        if (again !== undefined) {
          again.push(...frames.slice(i + 1))
          return
        }
      }
    }, (err: unknown) => {
      this.parked.delete(key)
      this.ctx.logger.error({ service: service.id, err }, 'event store could not read the dedup record')
      this.ctx.onStoreFailure(service.id, err)
    })
  }

  /**
   * The highest seq known committed for (service, instance), for the ACK of a refused frame: the
   * store's record when it answers at once, else the last commit this uplink saw (never above the truth).
   */
  private committedSeq (serviceId: string, instance: string): number {
    const known = this.ctx.store.lastSeq(serviceId, instance)
    if (!isPromise(known)) return known
    known.catch(() => {})
    return this.committed.get(`${serviceId}\u0000${instance}`) ?? 0
  }

  /** Checks every event of a frame ([SVC-REJECT-1]); a broken sequence order rejects the whole frame. */
  private judge (service: ServiceDefinition, frame: UpFrame, accepted: number): { events: UpEvent[], rejections: Rejection[], last: number, duplicates: number } | HeraldError {
    const events: UpEvent[] = []
    const rejections: Rejection[] = []
    let duplicates = 0
    let prev = frame.after
    for (const e of frame.events) {
      if (e.seq <= prev) return new HeraldError(ErrorCode.MALFORMED_FRAME, `seq ${e.seq} does not follow ${prev}: sequence numbers must increase within a frame and after "after"`)
      prev = e.seq
      // a duplicate (a resend after a lost ACK): counted here, never passed to the store
      if (e.seq <= accepted) { duplicates++; continue }
      const reason = this.reject(service, e)
      if (reason === null) events.push(e)
      else if (typeof reason === 'string') events.push({ ...e, key: reason }) // [SITE-KEY-1] the key read from the payload
      else {
        rejections.push({ seq: e.seq, code: reason[0], message: reason[1] })
        this.countRefused(e.name, reason[0])
      }
    }
    return { events, rejections, last: prev, duplicates }
  }

  private countRefused (name: string, code: string): void {
    const key = this.site.events.has(name) ? name : UNKNOWN_EVENT_NAME
    let byCode = this.refusedByEvent.get(key)
    if (byCode === undefined) this.refusedByEvent.set(key, byCode = new Map<string, number>())
    byCode.set(code, (byCode.get(code) ?? 0) + 1)
  }

  /** Null if `e` is accepted as it is; a string if accepted with that key ([SITE-KEY-1], from its payload); else why not. */
  private reject (service: ServiceDefinition, e: UpEvent): [ErrorCode, string] | string | null {
    const def = this.site.events.get(e.name)
    if (def === undefined) return [ErrorCode.UNKNOWN_EVENT, `event "${e.name}" is not defined in the site`]
    if (!service.events.has(e.name)) return [ErrorCode.NOT_AUTHORIZED, `service "${service.id}" may not raise "${e.name}"`]
    if (def.category !== e.category) return [ErrorCode.WRONG_CATEGORY, `event "${e.name}" is ${def.category}, raised as ${e.category}`]
    if (e.payload.byteLength > def.maxPayloadBytes) return [ErrorCode.PAYLOAD_TOO_LARGE, `payload of ${e.payload.byteLength} bytes is over the limit of ${def.maxPayloadBytes} for "${e.name}"`]
    if (e.isNull !== (e.payloadKind === PayloadKind.none)) return [ErrorCode.INVALID_ARGUMENT, 'a null event has no payload, and only a null event has none']
    if (e.isNull && def.category !== 'replacing') return [ErrorCode.INVALID_ARGUMENT, `only replacing events can be null; "${e.name}" is ${def.category}`]
    if (def.category === 'private' && !isRecipient(e.recipient)) return [ErrorCode.INVALID_ARGUMENT, `recipient ${JSON.stringify(e.recipient)} is not a client key <user>/<clientName>`]
    let value: unknown
    if (e.payloadKind === PayloadKind.json) {
      // [EVT-PAYLOAD-2] JSON text is UTF-8: invalid bytes would be stored as replacement characters
      if (!isUtf8(e.payload)) return [ErrorCode.MALFORMED_FRAME, `payload of seq ${e.seq} is marked JSON but is not valid UTF-8`]
      try {
        value = JSON.parse(Buffer.from(e.payload.buffer, e.payload.byteOffset, e.payload.byteLength).toString('utf8'))
      } catch {
        return [ErrorCode.MALFORMED_FRAME, `payload of seq ${e.seq} is marked JSON but is not valid JSON`]
      }
    }
    if (def.key === undefined) {
      if (e.key !== undefined) return [ErrorCode.INVALID_ARGUMENT, `event "${e.name}" is not keyed; it takes no key`]
      return null
    }
    return keyVerdict(def.key, e, value)
  }

  /** Merges acks per (service, instance) and sends them once per turn of the event loop ([SVC-ACK-1]: several frames' ACKs in one). */
  private queueAck (serviceId: string, ack: PendingAck): void {
    const k = `${serviceId}\u0000${ack.instance}`
    const prev = this.pendingAcks.get(k)
    if (prev === undefined || ack.error !== null || prev.error !== null || prev.rejections.length + ack.rejections.length > MAX_REJECTIONS_PER_ACK) {
      if (prev !== undefined) this.sendAck(serviceId, prev)
      this.pendingAcks.set(k, ack)
    } else {
      prev.acked = Math.max(prev.acked, ack.acked)
      for (const r of ack.rejections) prev.rejections.push(r)
    }
    if (!this.ackScheduled) {
      this.ackScheduled = true
      // after the work in progress: the frames of one network read share one ACK (the clock's, so tests batch by hand)
      this.ctx.clock.defer(() => { this.flushAcks() })
    }
  }

  private flushAcks (): void {
    this.ackScheduled = false
    for (const [k, ack] of this.pendingAcks) {
      this.sendAck(k.slice(0, k.indexOf('\u0000')), ack)
    }
    this.pendingAcks.clear()
  }

  private sendAck (serviceId: string, ack: PendingAck): void {
    const frame: AckFrame = ack
    this.ctx.sendToService(serviceId, encodeAck(frame))
  }
}
