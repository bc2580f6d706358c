/**
 * ServiceEndpoint: raises events on a device gateway, online or offline, keeps them in service
 * persistence until the broker has durably acknowledged them, and uploads them in order.
 */
import {
  ClosedError, ConfigError, ErrorCode, HeraldError, Link, NULL_PAYLOAD, RequestError, TypedEmitter,
  assertName, checkInt, decodeAck, encodePayload, encodeUp, errorFromWire, eventId, serviceAckTopic, serviceClientId,
  serviceUpTopic, silentLogger, systemClock, toHeraldError, withDefaults, StatusFeed,
  type Category, type Clock, type Logger, type Payload, type RaisedEvent, type Widened
} from '@herald/shared'
import type { PersistenceError } from '@herald/shared'
import { MemoryServicePersistence } from './persistence/memory-service-persistence.js'
import type { AppendOutcome, ServicePersistence } from './persistence/service-persistence.js'
import { BacklogSender } from './uplink/backlog-sender.js'

/** What a service endpoint must know of an event to raise it offline (an EventDefinition from the site fits). */
export interface ServiceEventSpec {
  readonly name: string
  readonly category: Category
  /** Lifetime in ms for queueing and private events: one whose lifetime ran out before upload is not sent. */
  readonly lifetimeMs?: number | null
  /** Largest payload in bytes, checked at raise() so an oversized event is refused at once. Default 64 KiB. */
  readonly maxPayloadBytes?: number
}

export interface ServiceEndpointOptions {
  /** `mqtt://host:port` of the broker. */
  readonly url: string
  readonly serviceId: string
  readonly secret: string
  /** The events this service raises. */
  readonly events: readonly ServiceEventSpec[]
  /** Where raised events are kept until acknowledged. Default: a MemoryServicePersistence (not durable). */
  readonly persistence?: ServicePersistence
  /** Most events in flight (sent, not acknowledged). Default 2,000. */
  readonly window?: number
  /** Most payload bytes in flight (sent, not acknowledged). Default 16 MiB. */
  readonly maxInflightBytes?: number
  /** Most events in one UP frame. Default 500. */
  readonly maxEventsPerFrame?: number
  /** Target size of one UP frame in bytes (a larger single event goes alone). Default 1 MiB. */
  readonly maxFrameBytes?: number
  /** First reconnect delay in ms. Default 100. */
  readonly reconnectInitialMs?: number
  /** Largest reconnect delay in ms. Default 10,000. */
  readonly reconnectMaxMs?: number
  /** Connect timeout in ms. Default 10,000. */
  readonly connectTimeoutMs?: number
  /** With events in flight and no acknowledgement for this long, the connection is dropped and resent. Default 30,000 ms. */
  readonly ackTimeoutMs?: number
  /** MQTT keepalive in seconds. Default 30. */
  readonly keepaliveSec?: number
  readonly clock?: Clock
  readonly logger?: Logger
}

/** Defaults of the numeric ServiceEndpointOptions. */
export const SERVICE_ENDPOINT_DEFAULTS = Object.freeze({
  window: 2000,
  maxEventsPerFrame: 500,
  maxFrameBytes: 1024 * 1024,
  maxInflightBytes: 16 * 1024 * 1024,
  reconnectInitialMs: 100,
  reconnectMaxMs: 10_000,
  connectTimeoutMs: 10_000,
  ackTimeoutMs: 30_000,
  keepaliveSec: 30
})

/** What raise() resolves to: the event is durable in the endpoint's persistence. */
export interface RaiseResult {
  /** The event's unique id. */
  readonly id: string
  readonly seq: number
}

/** The connection state of a service endpoint ([SVC-STATUS-1]). */
export interface ServiceStatus {
  readonly state: 'connecting' | 'online' | 'offline' | 'closed'
  /** Events raised and not yet acknowledged by the broker. */
  readonly backlog: number
  readonly backlogBytes: number
  /** Whether the backlog survives a restart (false after a fallback to memory). */
  readonly durable: boolean
  /** When the broker last acknowledged something, ms since the epoch, or null. */
  readonly lastAckAt: number | null
  /** Why the endpoint is offline, if known. */
  readonly lastError: HeraldError | null
}

/** Typed events a ServiceEndpoint emits. */
export interface ServiceEndpointEvents {
  status: (status: ServiceStatus) => void
  /** The broker refused an event ([SVC-REJECT-1]); it is removed from the backlog and not retried. */
  rejected: (info: { seq: number, id: string, name: string | undefined, error: HeraldError }) => void
  /** Events removed unsent because their lifetime ran out ([SVC-EXPIRE-1]). */
  expired: (info: { events: readonly RaisedEvent[], total: number }) => void
  /** Events dropped to make room under the dropOldest policy ([SVC-CAPACITY-1]). */
  dropped: (info: { events: readonly RaisedEvent[], total: number }) => void
  /** A raise() refused because persistence is full under the reject policy ([SVC-CAPACITY-1]); raise() rejects too. */
  refused: (info: { name: string, error: HeraldError, total: number }) => void
  /** The durable level failed; the endpoint works on in memory ([SVC-PERSIST-FAIL-1]). */
  persistenceFailed: (info: { error: PersistenceError, lost: number }) => void
  /** A background failure that does not stop the endpoint. */
  error: (error: HeraldError) => void
}

/** Counters for status displays and tests. */
export interface ServiceEndpointCounters {
  raised: number
  acknowledged: number
  /** Events the broker refused. */
  rejected: number
  expired: number
  dropped: number
  /** raise() calls refused because persistence was full (reject policy). */
  refused: number
}

export class ServiceEndpoint extends TypedEmitter<ServiceEndpointEvents> {
  readonly serviceId: string
  readonly persistence: ServicePersistence
  readonly counters: ServiceEndpointCounters = { raised: 0, acknowledged: 0, rejected: 0, expired: 0, dropped: 0, refused: 0 }
  private readonly specs: ReadonlyMap<string, ServiceEventSpec>
  private readonly opts: Widened<typeof SERVICE_ENDPOINT_DEFAULTS>
  private readonly clock: Clock
  private readonly logger: Logger
  private readonly link: Link
  private readonly sender: BacklogSender
  private readonly upTopic: string
  private seq: number
  /** Per replacing event name: the seq of its newest instance, to supersede while unsent ([SVC-SUPERSEDE-1]). */
  private readonly newestReplacing = new Map<string, number>()
  private state: ServiceStatus['state'] = 'connecting'
  private lastAckAt: number | null = null
  private lastError: HeraldError | null = null
  private closed = false
  private ackTimer: NodeJS.Timeout | null = null
  private lastAckProgress = 0
  private readonly drainWaiters: Array<() => void> = []
  private readonly feed = new StatusFeed<ServiceStatus>()

  constructor (options: ServiceEndpointOptions) {
    super()
    if (options === undefined || options === null) throw new ConfigError('ServiceEndpoint: options are required')
    assertName(options.serviceId, 'ServiceEndpoint: serviceId')
    if (typeof options.url !== 'string') throw new ConfigError('ServiceEndpoint: option "url" must be a string like mqtt://host:1883')
    if (typeof options.secret !== 'string') throw new ConfigError('ServiceEndpoint: option "secret" must be a string')
    if (!Array.isArray(options.events) || options.events.length === 0) throw new ConfigError('ServiceEndpoint: option "events" must list the events this service raises')
    const { url: _u, serviceId: _s, secret: _x, events: _e, persistence: _p, clock: _c, logger: _l, ...numeric } = options
    this.opts = withDefaults('ServiceEndpoint', SERVICE_ENDPOINT_DEFAULTS, numeric)
    checkInt('ServiceEndpoint', 'window', this.opts.window, 1, 100_000)
    checkInt('ServiceEndpoint', 'maxEventsPerFrame', this.opts.maxEventsPerFrame, 1, 10_000)
    checkInt('ServiceEndpoint', 'maxFrameBytes', this.opts.maxFrameBytes, 1024, 16 * 1024 * 1024)
    checkInt('ServiceEndpoint', 'maxInflightBytes', this.opts.maxInflightBytes, 1024, 1024 * 1024 * 1024)
    checkInt('ServiceEndpoint', 'ackTimeoutMs', this.opts.ackTimeoutMs, 100, 3_600_000)
    const specs = new Map<string, ServiceEventSpec>()
    const given: readonly ServiceEventSpec[] = options.events
    for (const spec of given) {
      assertName(spec.name, 'ServiceEndpoint: events[].name')
      if (spec.category !== 'replacing' && spec.category !== 'queueing' && spec.category !== 'private') {
        throw new ConfigError(`ServiceEndpoint: event "${spec.name}": category must be replacing, queueing or private`)
      }
      specs.set(spec.name, spec)
    }
    this.specs = specs
    this.serviceId = options.serviceId
    this.clock = options.clock ?? systemClock
    this.logger = options.logger ?? silentLogger
    this.persistence = options.persistence ?? new MemoryServicePersistence()
    this.seq = this.persistence.lastSeq()
    this.persistence.onLevelFailure?.((info) => {
      this.logger.error({ err: info.error, lost: info.lost }, 'service persistence failed; holding events in memory only')
      this.emit('persistenceFailed', { error: info.error, lost: info.lost })
      this.emitStatus()
    })
    this.upTopic = serviceUpTopic(this.serviceId)
    this.sender = new BacklogSender(this.persistence, {
      send: (frame) => this.link.send(this.upTopic, encodeUp(frame)),
      isExpired: (e) => {
        const life = this.specs.get(e.name)?.lifetimeMs
        return life !== undefined && life !== null && this.clock.now() >= e.raisedAt + life
      },
      onExpired: (events) => {
        this.counters.expired += events.length
        this.emit('expired', { events, total: this.counters.expired })
        this.checkDrained()
      },
      onError: (err) => { this.reportError(err) }
    }, this.opts.window, this.opts.maxEventsPerFrame, this.opts.maxFrameBytes, this.opts.maxInflightBytes)
    this.link = new Link({
      url: options.url,
      clientId: serviceClientId(this.serviceId),
      username: this.serviceId,
      password: options.secret,
      replyTopic: serviceAckTopic(this.serviceId),
      reconnect: { initialMs: this.opts.reconnectInitialMs, maxMs: this.opts.reconnectMaxMs },
      connectTimeoutMs: this.opts.connectTimeoutMs,
      keepaliveSec: this.opts.keepaliveSec,
      logger: this.logger
    })
    this.link.on('connecting', () => { this.setState('connecting') })
    this.link.on('online', () => {
      this.lastError = null
      this.setState('online')
      this.lastAckProgress = this.clock.now()
      this.sender.start()
    })
    this.link.on('offline', (err) => {
      this.sender.stop()
      if (err !== null) this.lastError = err
      if (!this.closed) this.setState('offline')
    })
    this.link.on('frame', (payload) => { this.onFrame(payload) })
  }

  /** Starts connecting to the broker. Raising works before and without a connection. */
  start (): this {
    if (this.closed) throw new ClosedError('ServiceEndpoint is closed')
    this.link.start()
    this.ackTimer = setInterval(() => { this.checkAckTimeout() }, Math.min(1000, this.opts.ackTimeoutMs))
    this.ackTimer.unref()
    return this
  }

  /** Raises a replacing or queueing event. Resolves when the event is durable in persistence. */
  raise (name: string, payload: Payload): Promise<RaiseResult> {
    return this.enqueue(name, payload, false, null, 'raise')
  }

  /** Raises a null instance of a replacing event: the condition no longer holds. */
  raiseNull (name: string): Promise<RaiseResult> {
    return this.enqueue(name, undefined, true, null, 'raiseNull')
  }

  /** Raises a private event for one client, addressed by its key `<user>/<clientName>`. */
  raisePrivate (name: string, clientKey: string, payload: Payload): Promise<RaiseResult> {
    return this.enqueue(name, payload, false, clientKey, 'raisePrivate')
  }

  private async enqueue (name: string, payload: Payload | undefined, isNull: boolean, recipient: string | null, call: string): Promise<RaiseResult> {
    if (this.closed) throw new ClosedError('ServiceEndpoint is closed')
    const spec = this.specs.get(name)
    if (spec === undefined) throw new RequestError(ErrorCode.UNKNOWN_EVENT, `${call}: event "${name}" is not one this service raises`)
    if (call === 'raise' && spec.category === 'private') throw new RequestError(ErrorCode.WRONG_CATEGORY, `raise: "${name}" is private; use raisePrivate`)
    if (call === 'raiseNull' && spec.category !== 'replacing') throw new RequestError(ErrorCode.WRONG_CATEGORY, `raiseNull: "${name}" is ${spec.category}; only replacing events can be null`)
    if (call === 'raisePrivate') {
      if (spec.category !== 'private') throw new RequestError(ErrorCode.WRONG_CATEGORY, `raisePrivate: "${name}" is ${spec.category}, not private`)
      if (typeof recipient !== 'string' || !/^[^/]+\/[^/]+$/.test(recipient)) throw new RequestError(ErrorCode.INVALID_ARGUMENT, `raisePrivate: recipient ${JSON.stringify(recipient)} is not a client key <user>/<clientName>`)
    }
    const encoded = isNull ? NULL_PAYLOAD : encodePayload(payload)
    const max = spec.maxPayloadBytes ?? 64 * 1024
    if (encoded.bytes.byteLength > max) throw new RequestError(ErrorCode.PAYLOAD_TOO_LARGE, `${call}: payload of ${encoded.bytes.byteLength} bytes is over the limit of ${max} for "${name}"`)
    const seq = ++this.seq
    const event: RaisedEvent = {
      seq, name, category: spec.category, raisedAt: this.clock.now(), isNull, recipient, payloadKind: encoded.kind, payload: encoded.bytes
    }
    let supersede: number[] | undefined
    let prev: number | undefined
    if (spec.category === 'replacing') {
      prev = this.newestReplacing.get(name)
      // [SVC-SUPERSEDE-1] an older instance not yet read for sending is replaced in the backlog
      if (prev !== undefined && prev > this.sentHorizon()) supersede = [prev]
      this.newestReplacing.set(name, seq)
    }
    let outcome: AppendOutcome
    try {
      outcome = await this.persistence.append([event], supersede)
    } catch (err) {
      // not stored, and nothing superseded: the previous instance is still the newest
      if (this.newestReplacing.get(name) === seq) {
        if (prev === undefined) this.newestReplacing.delete(name)
        else this.newestReplacing.set(name, prev)
      }
      if (err instanceof HeraldError && err.code === ErrorCode.CAPACITY_EXCEEDED) {
        this.counters.refused++
        this.emit('refused', { name, error: err, total: this.counters.refused })
      }
      throw err
    }
    this.counters.raised++
    if (outcome.dropped.length > 0) {
      this.counters.dropped += outcome.dropped.length
      this.emit('dropped', { events: outcome.dropped, total: this.counters.dropped })
    }
    this.sender.notify()
    this.emitStatus()
    return { id: eventId(this.persistence.instance, seq), seq }
  }

  /** The highest seq that may already be on its way to the broker. */
  private sentHorizon (): number {
    return this.sender.readHorizon
  }

  private onFrame (payload: Buffer): void {
    let ack
    try {
      ack = decodeAck(payload)
    } catch (err) {
      this.reportError(err)
      return
    }
    if (ack.error !== null) {
      const error = errorFromWire(ack.error.code, ack.error.message)
      this.logger.warn({ code: error.code, message: error.message }, 'the broker refused a frame')
      this.reportError(error)
      // [SVC-ORDER-1] resend from what the broker holds
      if (ack.instance === this.persistence.instance) this.sender.acknowledge(ack.acked)
      this.link.drop(error)
      return
    }
    if (ack.instance !== this.persistence.instance) return
    for (const r of ack.rejections) {
      const error = errorFromWire(r.code, r.message)
      this.counters.rejected++
      this.emit('rejected', { seq: r.seq, id: eventId(this.persistence.instance, r.seq), name: this.sender.nameOf(r.seq), error })
    }
    const before = this.sender.acked
    if (ack.acked > before) {
      const inflightBefore = this.sender.inflightCount
      this.sender.acknowledge(ack.acked)
      this.counters.acknowledged += Math.max(0, inflightBefore - this.sender.inflightCount - ack.rejections.length)
      this.lastAckAt = this.clock.now()
      this.lastAckProgress = this.lastAckAt
    }
    this.emitStatus()
    this.checkDrained()
  }

  private checkAckTimeout (): void {
    if (!this.link.online || this.sender.inflightCount === 0) {
      this.lastAckProgress = this.clock.now()
      return
    }
    if (this.clock.now() - this.lastAckProgress > this.opts.ackTimeoutMs) {
      this.lastAckProgress = this.clock.now()
      this.link.drop(new HeraldError(ErrorCode.TIMEOUT, `no acknowledgement for ${this.opts.ackTimeoutMs} ms`))
    }
  }

  /** Resolves when every event raised so far has been acknowledged by the broker (or expired or rejected). */
  drained (): Promise<void> {
    if (this.persistence.stats().count === 0) return Promise.resolve()
    return new Promise((resolve) => { this.drainWaiters.push(resolve) })
  }

  private checkDrained (): void {
    if (this.drainWaiters.length === 0) return
    // acknowledge() in persistence is asynchronous: look again after it ran
    setImmediate(() => {
      if (this.persistence.stats().count !== 0) return
      for (const w of this.drainWaiters.splice(0)) w()
    })
  }

  /** The current status. */
  get status (): ServiceStatus {
    const s = this.persistence.stats()
    return { state: this.state, backlog: s.count, backlogBytes: s.bytes, durable: s.durable, lastAckAt: this.lastAckAt, lastError: this.lastError }
  }

  /** A stream of status changes, starting with the current status; ends at close(). */
  statusUpdates (): AsyncIterable<ServiceStatus> {
    return this.feed.stream(this.status)
  }

  private setState (state: ServiceStatus['state']): void {
    if (this.state === state) return
    this.state = state
    this.emitStatus()
  }

  private emitStatus (): void {
    if (!this.feed.active && this.listenerCount('status') === 0) return
    const s = this.status
    this.feed.push(s)
    this.emit('status', s)
  }

  private reportError (err: unknown): void {
    const e = toHeraldError(err)
    if (this.listenerCount('error') > 0) this.emit('error', e)
    else this.logger.error({ err: e }, 'service endpoint error')
  }

  /** Stops uploading and closes persistence. Unacknowledged events stay in a durable persistence. */
  async close (): Promise<void> {
    if (this.closed) return
    this.closed = true
    if (this.ackTimer !== null) clearInterval(this.ackTimer)
    await this.link.close()
    this.state = 'closed'
    this.feed.end(this.status)
    await this.persistence.close()
  }
}
