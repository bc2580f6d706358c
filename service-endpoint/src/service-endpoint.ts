/**
 * ServiceEndpoint: raises events on a device gateway, online or offline, keeps them in service
 * persistence until the broker has durably acknowledged them, and uploads them in order.
 */
import { AuthError, ClosedError, ConfigError, ErrorCode, HeraldError, NULL_PAYLOAD, PayloadKind, RequestError, TypedEmitter, Link, assertName, checkInt, decodeAck, encodePayload, encodeUp, errorFromWire, eventId, serviceAckTopic, serviceClientId, serviceUpTopic, silentLogger, systemClock, toHeraldError, utf8Length, withDefaults, StatusFeed, keyFromValue, keyProblem, type Category, type EventKeySpec, type Clock, type Logger, type TimerHandle, type Payload, type RaisedEvent, type Widened, type PersistenceError, type EndpointConnectionOptions, checkMoreUrls } from '@herald/protocol'
import { checkBrokerConnection, mqttTransport, type TlsClientOptions } from '@herald/node-runtime'
import { MemoryServicePersistence } from './persistence/memory-service-persistence.js'
import type { AppendOutcome, ServicePersistence } from './persistence/service-persistence.js'
import { BacklogSender } from './uplink/backlog-sender.js'
import { UploadAge } from './uplink/upload-age.js'

/** What a service endpoint must know of an event to raise it offline (an EventDefinition from the site fits). */
export interface ServiceEventSpec {
  readonly name: string
  readonly category: Category
  /** Lifetime in ms for queueing and private events: one whose lifetime ran out before upload is not sent. */
  readonly lifetimeMs?: number | null
  /** Largest payload in bytes, checked at raise() so an oversized event is refused at once. Default 64 KiB. */
  readonly maxPayloadBytes?: number
  /**
   * [SVC-KEY-1] A keyed replacing event ([SITE-KEY-1]): `{ kind: 'field', field }` takes the key from
   * the payload's field, `{ kind: 'raise' }` from the raise's `key` option. Absent: unkeyed.
   */
  readonly key?: EventKeySpec
}

/** [SVC-KEY-1] Options of one raise. */
export interface RaiseOptions {
  /**
   * The replacing key of a keyed event: required for an event keyed by the raise and for every null
   * instance of a keyed event; for one keyed by a payload field it may be given, and must then equal
   * the field. Refused for an unkeyed event.
   */
  readonly key?: string
}

export interface ServiceEndpointOptions extends EndpointConnectionOptions {
  /** `mqtt://host:port` of the broker, `mqtts://host:port` for TLS ([CONN-TLS-1]), or `ws://host:port/mqtt`, `wss://...` over WebSocket ([CONN-WS-1]). */
  readonly url: string
  /** TLS options for a `mqtts://` URL: the CA to check the broker's certificate against, a client certificate and key. Refused with a plain URL. */
  readonly tls?: TlsClientOptions
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
  /** With events in flight and no acknowledgement for this long, the connection is dropped and resent. Default 30,000 ms. */
  readonly ackTimeoutMs?: number
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

/** One event of a `raiseBatch`, checked as the matching single call checks it. */
export interface RaiseItem {
  /** The event's name: one this service raises. */
  readonly name: string
  /** The payload (any JSON value, or bytes); required unless `isNull`. */
  readonly payload?: Payload
  /** A null instance of a replacing event, as `raiseNull`; it takes no payload and no recipient. */
  readonly isNull?: boolean
  /** The client key `<user>/<clientName>` of a private event, as `raisePrivate`: required for a private event, refused for any other. */
  readonly recipient?: string
  /** [SVC-KEY-1] The replacing key of a keyed event, as RaiseOptions.key. */
  readonly key?: string
}

/** Most items in one raiseBatch(). */
const MAX_BATCH_ITEMS = 10_000

/** Entries of newestReplacing beyond which those already sent are forgotten ([SVC-KEY-2]). */
const MAX_NEWEST_REPLACING = 10_000

/** What a replacing event supersedes by ([SVC-SUPERSEDE-1], [SVC-KEY-2]): its name, and its key when keyed. */
function replacingKey (e: RaisedEvent): string {
  return e.key === undefined ? e.name : `${e.name}\u0000${e.key}`
}

/**
 * [SVC-KEY-1] The key of a raise of a keyed event: the `key` option, or the payload's field for an
 * event keyed by a field (a key given too must equal it). Throws INVALID_ARGUMENT naming the event.
 */
function keyOfRaise (spec: ServiceEventSpec, payload: Payload | undefined, isNull: boolean, key: string | undefined, where: string): string {
  const fail = (message: string): RequestError => new RequestError(ErrorCode.INVALID_ARGUMENT, `${where}: ${message}`)
  if (spec.key === undefined) throw fail(`"${spec.name}" is not a keyed event; it takes no key`)
  if (key !== undefined) {
    const problem = keyProblem(key)
    if (problem !== null) throw fail(`"${spec.name}": ${problem}`)
  }
  if (spec.key.kind === 'raise' || isNull) {
    if (key === undefined) throw fail(`"${spec.name}" is keyed${spec.key.kind === 'raise' ? ' by the raise' : `; a null instance names its key (field "${spec.key.field}")`}: give options.key`)
    return key
  }
  const field = spec.key.field
  const fromPayload = payload instanceof Uint8Array ? null : keyFromValue(payload, field)
  if (fromPayload === null) throw fail(`"${spec.name}" is keyed by field "${field}": the payload has no top-level string or whole-number field "${field}"`)
  const problem = keyProblem(fromPayload)
  if (problem !== null) throw fail(`"${spec.name}", field "${field}": ${problem}`)
  if (key !== undefined && key !== fromPayload) throw fail(`"${spec.name}": key ${JSON.stringify(key)} differs from the payload's field "${field}" (${JSON.stringify(fromPayload)})`)
  return fromPayload
}

/** A checked event whose seq and raisedAt are given when it is stored. */
type Draft = { -readonly [K in keyof RaisedEvent]: RaisedEvent[K] }

/** How an event is raised; decides which categories it may have. */
type RaiseKind = 'raise' | 'raiseNull' | 'raisePrivate'

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
  /**
   * An event refused because persistence is full under the reject policy ([SVC-CAPACITY-1]); raise()
   * rejects too. A refused raiseBatch() reports each of its events.
   */
  refused: (info: { name: string, error: HeraldError, total: number }) => void
  /** The durable level failed; the endpoint works on in memory ([SVC-PERSIST-FAIL-1]). */
  persistenceFailed: (info: { error: PersistenceError, lost: number }) => void
  /**
   * A background failure that does not stop the endpoint, among them refused credentials
   * ([CONN-AUTH-2]: an AuthError naming the service, once per run of refusals; the endpoint goes on
   * retrying). Emitted only when listened to: without a listener the error is logged at error level
   * on the endpoint's logger instead, and never thrown.
   */
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
  /** Events refused because persistence was full (reject policy): one per raise(), each event of a raiseBatch(). */
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
  /** Each event's age at upload, on this process's monotonic clock where it can ([SVC-AGE-1]). */
  private readonly ages: UploadAge
  private readonly upTopic: string
  private seq: number
  /** lastSeq of the persistence when the endpoint was made: seqs above it were assigned by this process. */
  private readonly seqAtOpen: number
  /** [SVC-SEQ-1] Whether the broker's highest seq for the instance was checked (once per process). */
  private seqChecked = false
  /** A probe is out on the current connection, or its answer is being acted on. */
  private probing = false
  private checkingSeqs = false
  /** While this process's events are given new seqs: appends wait for it, in call order. */
  private renumbering: Promise<void> | null = null
  /** The latest persistence append started (appends complete in call order). */
  private lastAppend: Promise<unknown> = Promise.resolve()
  /** Per replacing event name: the seq of its newest instance, to supersede while unsent ([SVC-SUPERSEDE-1]). */
  private readonly newestReplacing = new Map<string, number>()
  private state: ServiceStatus['state'] = 'connecting'
  private lastAckAt: number | null = null
  private lastError: HeraldError | null = null
  /** The code of the credentials refusal last reported, until the next time online ([CONN-AUTH-2]). */
  private refusalReported: string | null = null
  private closed = false
  private ackTimer: TimerHandle | null = null
  /** When the acknowledgements last moved on (or the link came up), on the monotonic clock. */
  private lastAckProgress = 0
  private readonly drainWaiters: Array<() => void> = []
  /** whenAcked() calls not yet settled, in call order. */
  private ackWaiters: Array<{ seq: number, resolve: () => void, reject: (err: Error) => void }> = []
  /** Whether a look at the backlog for settled ackWaiters is scheduled (after an expiry or a drop). */
  private backlogCheckDue = false
  private readonly feed = new StatusFeed<ServiceStatus>()

  constructor (options: ServiceEndpointOptions) {
    super()
    if (options === undefined || options === null) throw new ConfigError('ServiceEndpoint: options are required')
    assertName(options.serviceId, 'ServiceEndpoint: serviceId')
    checkBrokerConnection('ServiceEndpoint', options.url, options.tls)
    const moreUrls = checkMoreUrls('ServiceEndpoint', options.moreUrls, (u) => { checkBrokerConnection('ServiceEndpoint', u, options.tls) })
    if (typeof options.secret !== 'string') throw new ConfigError('ServiceEndpoint: option "secret" must be a string')
    if (!Array.isArray(options.events) || options.events.length === 0) throw new ConfigError('ServiceEndpoint: option "events" must list the events this service raises')
    const { url: _u, moreUrls: _m, tls: _t, serviceId: _s, secret: _x, events: _e, persistence: _p, transport: _tr, clock: _c, random: _r, logger: _l, ...numeric } = options
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
    const instance: unknown = this.persistence.instance
    // [SVC-MALFORMED-2] the broker refuses frames without an instance: refuse the persistence here, not in a resend loop
    if (typeof instance !== 'string' || instance === '' || utf8Length(instance) > 256) {
      throw new ConfigError('ServiceEndpoint: persistence.instance must be a non-empty string of at most 256 bytes (it names every event it raised, [EVT-ID-1])')
    }
    this.seq = this.persistence.lastSeq()
    this.ages = new UploadAge(this.clock, this.seq)
    this.seqAtOpen = this.seq
    this.persistence.onLevelFailure?.((info) => {
      this.logger.error({ err: info.error, lost: info.lost }, 'service persistence failed; holding events in memory only')
      this.emit('persistenceFailed', { error: info.error, lost: info.lost })
      this.emitStatus()
    })
    this.upTopic = serviceUpTopic(this.serviceId)
    this.sender = new BacklogSender(this.persistence, {
      // [FRAME-UP-1] each event's age is measured as its frame is built
      send: (frame) => this.link.send(this.upTopic, encodeUp(frame, (e) => this.ages.ageOf(e))),
      isExpired: (e) => {
        // [SVC-EXPIRE-1] the same age the broker would count the lifetime from
        const life = this.specs.get(e.name)?.lifetimeMs
        return life !== undefined && life !== null && this.ages.ageOf(e) >= life
      },
      onExpired: (events) => {
        this.counters.expired += events.length
        this.emit('expired', { events, total: this.counters.expired })
        this.checkDrained()
        this.checkBacklogWaiters()
      },
      onError: (err) => { this.reportError(err) }
    }, this.opts.window, this.opts.maxEventsPerFrame, this.opts.maxFrameBytes, this.opts.maxInflightBytes)
    this.link = new Link({
      transport: options.transport ?? mqttTransport(options.tls),
      clock: this.clock,
      random: options.random,
      url: options.url,
      moreUrls,
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
      this.refusalReported = null
      this.setState('online')
      this.lastAckProgress = this.steadyNow()
      if (this.seqChecked) this.sender.start()
      else if (!this.checkingSeqs) this.probeSeqs()
    })
    this.link.on('offline', (err) => {
      this.sender.stop()
      if (!this.checkingSeqs) this.probing = false
      if (err !== null) this.lastError = err
      if (!this.closed) this.setState('offline')
      if (err instanceof AuthError && err.code !== this.refusalReported && !this.closed) {
        // [CONN-AUTH-2] refused credentials are loud: a typed error, not only status.lastError
        this.refusalReported = err.code
        const what = err.code === ErrorCode.BAD_CREDENTIALS ? 'the credentials of' : 'the identity of'
        this.reportError(new AuthError(err.code === ErrorCode.BAD_CREDENTIALS ? ErrorCode.BAD_CREDENTIALS : ErrorCode.NOT_AUTHORIZED, `the broker at ${options.url} refused ${what} service "${this.serviceId}" (${err.code}); retrying, events are kept`, { cause: err }), 'credentials refused')
      }
    })
    this.link.on('frame', (payload) => { this.onFrame(payload) })
  }

  /** Starts connecting to the broker. Raising works before and without a connection. */
  start (): this {
    this.checkOpen()
    this.link.start()
    this.scheduleAckCheck()
    return this
  }

  /** Checks for a stalled acknowledgement (ackTimeoutMs) every second (or ackTimeoutMs, if shorter). */
  private scheduleAckCheck (): void {
    this.ackTimer = this.clock.setTimer(() => {
      this.ackTimer = null
      if (this.closed) return
      this.checkAckTimeout()
      this.scheduleAckCheck()
    }, Math.min(1000, this.opts.ackTimeoutMs))
  }

  /** Raises a replacing or queueing event. Resolves when the event is durable in persistence. */
  raise (name: string, payload: Payload, options?: RaiseOptions): Promise<RaiseResult> {
    return this.raiseOne(name, payload, 'raise', null, options?.key)
  }

  /** Raises a null instance of a replacing event: the condition no longer holds (of one key, for a keyed event: `options.key`). */
  raiseNull (name: string, options?: RaiseOptions): Promise<RaiseResult> {
    return this.raiseOne(name, undefined, 'raiseNull', null, options?.key)
  }

  /** Raises a private event for one client, addressed by its key `<user>/<clientName>`. */
  raisePrivate (name: string, clientKey: string, payload: Payload): Promise<RaiseResult> {
    return this.raiseOne(name, payload, 'raisePrivate', clientKey)
  }

  /**
   * Raises several events, and writes source marks, in one persistence append: when it resolves,
   * every event and every mark is durable; when it rejects, none is stored ([SVC-MARK-1]). Each item
   * is checked as raise(), raiseNull() (`isNull`) or raisePrivate() (`recipient`) checks it, with the
   * same typed errors naming the item's index, before anything is stored. The events get increasing
   * seqs in item order; a replacing event supersedes its older unsent instance ([SVC-SUPERSEDE-1]),
   * but two instances in one batch are both kept. No items and some marks writes only the marks.
   * At most 10,000 items; `marks` within MARK_LIMITS. Resolves to one result per item, in order.
   */
  async raiseBatch (items: readonly RaiseItem[], options: { readonly marks?: ReadonlyMap<string, string> } = {}): Promise<RaiseResult[]> {
    this.checkOpen()
    const given: unknown = items
    if (!Array.isArray(given)) throw new RequestError(ErrorCode.INVALID_ARGUMENT, 'raiseBatch: items must be an array')
    if (items.length > MAX_BATCH_ITEMS) throw new RequestError(ErrorCode.INVALID_ARGUMENT, `raiseBatch: ${items.length} items are more than the limit of ${MAX_BATCH_ITEMS}`)
    const events = items.map((item, i) => this.draftItem(item, `raiseBatch: items[${i}]`))
    await this.store(events, options.marks)
    const instance = this.persistence.instance
    return events.map((e) => ({ id: eventId(instance, e.seq), seq: e.seq }))
  }

  /** [SVC-MARK-1] A copy of the current source marks of the endpoint's persistence. */
  marks (): ReadonlyMap<string, string> {
    return this.persistence.marks()
  }

  /**
   * [SVC-ACKED-1] The highest seq the broker has acknowledged for this endpoint's persistence
   * instance since start() (cumulative, [SVC-ACK-1]): every event with a seq at or below it is
   * durable at the broker, or was refused by it (`rejected`). 0 before the first acknowledgement.
   */
  get acked (): number {
    return this.sender.acked
  }

  /**
   * [SVC-ACKED-1] Resolves once no event with a seq at or below `seq` is held for the broker any more:
   * the broker acknowledged them all (`acked >= seq`), or those it did not were removed unsent
   * (`expired`, `dropped`). Resolves at once for a seq already covered. Waiters resolve in seq order.
   * Rejects with a ClosedError when the endpoint closes first. This is what a caller whose own
   * acknowledgements must not run ahead of durability waits for while `status.durable` is false.
   */
  whenAcked (seq: number): Promise<void> {
    if (this.closed) return Promise.reject(new ClosedError('ServiceEndpoint is closed'))
    if (!Number.isSafeInteger(seq)) return Promise.reject(new RequestError(ErrorCode.INVALID_ARGUMENT, `whenAcked: seq must be a whole number, got ${String(seq)}`))
    if (seq <= this.sender.acked) return Promise.resolve()
    return new Promise((resolve, reject) => {
      this.ackWaiters.push({ seq, resolve, reject })
      // the backlog may already be empty up to seq (expired or dropped events)
      this.checkBacklogWaiters()
    })
  }

  /** Resolves the whenAcked() waiters the broker's cumulative acknowledgement covers. */
  private settleAckWaiters (): void {
    if (this.ackWaiters.length === 0) return
    const acked = this.sender.acked
    const still: typeof this.ackWaiters = []
    for (const w of this.ackWaiters) {
      if (w.seq <= acked) w.resolve()
      else still.push(w)
    }
    this.ackWaiters = still
  }

  /**
   * Resolves the whenAcked() waiters below the oldest event still held: events removed unsent
   * (expired, dropped) are never acknowledged by the broker when they were the newest. Runs after
   * the removal's persistence call, and once per turn of the event loop at most.
   */
  private checkBacklogWaiters (): void {
    if (this.ackWaiters.length === 0 || this.backlogCheckDue) return
    this.backlogCheckDue = true
    this.clock.defer(() => {
      this.backlogCheckDue = false
      if (this.closed || this.ackWaiters.length === 0) return
      this.persistence.read(0, 1).then((oldest) => {
        const held = oldest[0]?.seq ?? this.seq + 1
        const still: typeof this.ackWaiters = []
        for (const w of this.ackWaiters) {
          if (w.seq < held) w.resolve()
          else still.push(w)
        }
        this.ackWaiters = still
      }, (err: unknown) => { this.reportError(err) })
    })
  }

  private raiseOne (name: string, payload: Payload | undefined, kind: RaiseKind, recipient: string | null, key?: string): Promise<RaiseResult> {
    // no async function here: one fewer promise per raise (a throw still becomes a rejection)
    let event: Draft
    try {
      this.checkOpen()
      event = this.draft(name, payload, kind, recipient, kind, key)
    } catch (err) {
      // eslint-disable-next-line @typescript-eslint/prefer-promise-reject-errors -- rejects with what was thrown, as an async function would
      return Promise.reject(err)
    }
    return this.store([event], undefined).then(() => ({ id: eventId(this.persistence.instance, event.seq), seq: event.seq }))
  }

  /** Checks one item of a batch: its shape, then as the single call it stands for. */
  private draftItem (item: RaiseItem, where: string): Draft {
    if (item === null || typeof item !== 'object') throw new RequestError(ErrorCode.INVALID_ARGUMENT, `${where}: an item must be an object { name, payload?, isNull?, recipient? }`)
    const { name, payload, isNull, recipient, key } = item
    if (isNull !== undefined && typeof isNull !== 'boolean') throw new RequestError(ErrorCode.INVALID_ARGUMENT, `${where}: isNull must be a boolean`)
    if (isNull === true) {
      if (payload !== undefined) throw new RequestError(ErrorCode.INVALID_ARGUMENT, `${where}: a null event takes no payload`)
      if (recipient !== undefined) throw new RequestError(ErrorCode.INVALID_ARGUMENT, `${where}: a null event takes no recipient`)
      return this.draft(name, undefined, 'raiseNull', null, where, key)
    }
    if (payload === undefined) throw new RequestError(ErrorCode.INVALID_ARGUMENT, `${where}: a payload is required (isNull: true raises a null instance)`)
    return recipient === undefined ? this.draft(name, payload, 'raise', null, where, key) : this.draft(name, payload, 'raisePrivate', recipient, where, key)
  }

  /**
   * Checks one event against this service's events and encodes its payload once ([EVT-PAYLOAD-1]);
   * throws the typed error, its message starting with `where`. Stores nothing.
   */
  private draft (name: string, payload: Payload | undefined, kind: RaiseKind, recipient: string | null, where: string, key?: string): Draft {
    const spec = this.specs.get(name)
    if (spec === undefined) throw new RequestError(ErrorCode.UNKNOWN_EVENT, `${where}: event "${String(name)}" is not one this service raises`)
    const category = spec.category
    if (kind === 'raise' && category === 'private') throw new RequestError(ErrorCode.WRONG_CATEGORY, `${where}: "${name}" is private; raise it with a recipient (raisePrivate)`)
    if (kind === 'raiseNull' && category !== 'replacing') throw new RequestError(ErrorCode.WRONG_CATEGORY, `${where}: "${name}" is ${category}; only replacing events can be null`)
    if (kind === 'raisePrivate') {
      if (category !== 'private') throw new RequestError(ErrorCode.WRONG_CATEGORY, `${where}: "${name}" is ${category}, not private; it takes no recipient`)
      if (typeof recipient !== 'string' || !/^[^/]+\/[^/]+$/.test(recipient)) throw new RequestError(ErrorCode.INVALID_ARGUMENT, `${where}: recipient ${JSON.stringify(recipient)} is not a client key <user>/<clientName>`)
    }
    let payloadKind: PayloadKind
    let bytes: Uint8Array
    if (kind !== 'raiseNull' && payload instanceof Uint8Array) {
      // bytes go as they are (encodePayload's first case, without its result object)
      payloadKind = PayloadKind.bytes
      bytes = payload
    } else {
      let encoded: ReturnType<typeof encodePayload>
      try {
        encoded = kind === 'raiseNull' ? NULL_PAYLOAD : encodePayload(payload)
      } catch (err) {
        throw err instanceof HeraldError ? new RequestError(err.code, `${where}: ${err.message}`, { cause: err }) : err
      }
      payloadKind = encoded.kind
      bytes = encoded.bytes
    }
    const max = spec.maxPayloadBytes ?? 64 * 1024
    if (bytes.byteLength > max) throw new RequestError(ErrorCode.PAYLOAD_TOO_LARGE, `${where}: payload of ${bytes.byteLength} bytes is over the limit of ${max} for "${name}"`)
    const draft: Draft = { seq: 0, name, category, raisedAt: 0, isNull: kind === 'raiseNull', recipient, payloadKind, payload: bytes }
    if (spec.key === undefined && key === undefined) return draft
    draft.key = keyOfRaise(spec, payload, kind === 'raiseNull', key, where)
    return draft
  }

  /**
   * The one write path of every raise: gives the checked events their seqs (in order) and raisedAt,
   * supersedes older unsent instances of replacing events ([SVC-SUPERSEDE-1]), and stores the events
   * with `marks` in one persistence append ([SVC-MARK-1]): all of it, or nothing.
   */
  private async store (events: Draft[], marks: ReadonlyMap<string, string> | undefined): Promise<void> {
    const first = this.seq + 1
    const now = this.clock.now()
    this.ages.raised(first, now)
    const horizon = this.sentHorizon()
    let supersede: number[] | undefined
    /** Per replacing event name in this append: its newest seq before it, to restore if the append fails. */
    let before: Map<string, number | undefined> | undefined
    for (const e of events) {
      e.seq = ++this.seq
      e.raisedAt = now
      if (e.category !== 'replacing') continue
      before ??= new Map()
      // [SVC-KEY-2] a keyed event supersedes per (event, key)
      const rk = replacingKey(e)
      if (!before.has(rk)) {
        const prev = this.newestReplacing.get(rk)
        before.set(rk, prev)
        // [SVC-SUPERSEDE-1] an older instance not yet read for sending is replaced in the backlog
        // (within one append, every instance is kept, in order)
        if (prev !== undefined && prev > horizon) (supersede ??= []).push(prev)
      }
      this.newestReplacing.set(rk, e.seq)
    }
    if (this.newestReplacing.size > MAX_NEWEST_REPLACING) {
      // bounded: entries already on their way can supersede nothing any more
      for (const [k, seq] of this.newestReplacing) if (seq <= horizon) this.newestReplacing.delete(k)
    }
    const last = this.seq
    let outcome: AppendOutcome
    try {
      // [SVC-SEQ-1] while earlier events get new seqs, later appends wait (their seqs are above)
      if (this.renumbering !== null) await this.renumbering
      const appended = this.persistence.append(events, supersede, marks)
      this.lastAppend = appended
      outcome = await appended
    } catch (err) {
      // not stored, and nothing superseded: the previous instances are still the newest, unless a
      // later raise has replaced them meanwhile
      before?.forEach((prev, name) => {
        const newest = this.newestReplacing.get(name)
        if (newest === undefined || newest < first || newest > last) return
        if (prev === undefined) this.newestReplacing.delete(name)
        else this.newestReplacing.set(name, prev)
      })
      if (err instanceof HeraldError && err.code === ErrorCode.CAPACITY_EXCEEDED) {
        for (const e of events) {
          this.counters.refused++
          this.emit('refused', { name: e.name, error: err, total: this.counters.refused })
        }
      }
      throw err
    }
    this.counters.raised += events.length
    if (outcome.dropped.length > 0) {
      this.counters.dropped += outcome.dropped.length
      this.emit('dropped', { events: outcome.dropped, total: this.counters.dropped })
      this.checkBacklogWaiters()
    }
    this.sender.notify()
    this.emitStatus()
  }

  private checkOpen (): void {
    if (this.closed) throw new ClosedError('ServiceEndpoint is closed')
  }

  /** The highest seq that may already be on its way to the broker. */
  private sentHorizon (): number {
    return this.sender.readHorizon
  }

  private onFrame (payload: Uint8Array): void {
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
      if (ack.instance === this.persistence.instance) {
        this.sender.acknowledge(ack.acked)
        this.ages.forget(this.sender.acked)
        this.settleAckWaiters()
      }
      this.link.drop(error)
      return
    }
    if (ack.instance !== this.persistence.instance) return
    if (this.probing && !this.checkingSeqs) {
      // the answer to the probe: nothing of ours was on its way
      this.checkingSeqs = true
      this.checkSeqs(ack.acked).catch((err: unknown) => { this.reportError(err) }).finally(() => {
        this.checkingSeqs = false
        this.probing = false
        if (this.closed || !this.link.online) return
        if (this.seqChecked) this.sender.start()
        else this.probeSeqs()
      })
      return
    }
    for (const r of ack.rejections) {
      const error = errorFromWire(r.code, r.message)
      this.counters.rejected++
      this.emit('rejected', { seq: r.seq, id: eventId(this.persistence.instance, r.seq), name: this.sender.nameOf(r.seq), error })
    }
    const before = this.sender.acked
    if (ack.acked > before) {
      const inflightBefore = this.sender.inflightCount
      this.sender.acknowledge(ack.acked)
      this.ages.forget(this.sender.acked)
      this.counters.acknowledged += Math.max(0, inflightBefore - this.sender.inflightCount - ack.rejections.length)
      this.lastAckAt = this.clock.now()
      this.lastAckProgress = this.steadyNow()
      this.settleAckWaiters()
    }
    this.emitStatus()
    this.checkDrained()
  }

  /**
   * [SVC-SEQ-1] Before the first upload of this process, asks the broker for its highest seq of the
   * instance: an UP frame with no events, which the broker answers with an ACK of what it holds.
   */
  private probeSeqs (): void {
    this.probing = true
    this.link.send(this.upTopic, encodeUp({ instance: this.persistence.instance, after: 0, events: [] }))
  }

  /**
   * [SVC-SEQ-1] The broker holds seqs of this instance up to `brokerLast`. Above the persistence's
   * lastSeq at open, that means an earlier process raised events it never got to persist (a restart
   * on a file whose level failed, [SVC-PERSIST-FAIL-1]): the events of this process that have such
   * seqs would be discarded as duplicates. They get new seqs above the broker's, in the same order,
   * each moved in one append that supersedes the old seq; later raises come after them.
   */
  private async checkSeqs (brokerLast: number): Promise<void> {
    if (brokerLast > this.seqAtOpen) {
      const top = this.seq
      const shift = Math.max(top, brokerLast) - this.seqAtOpen
      this.logger.error({ instance: this.persistence.instance, brokerLast, lastSeqAtOpen: this.seqAtOpen, renumbered: top - this.seqAtOpen },
        'the broker holds seqs of this persistence instance that its file does not know (a restart after a fallback to memory?); this process\'s events get new seqs above them')
      if (top > this.seqAtOpen) {
        this.seq = top + shift
        let done = (): void => {}
        this.renumbering = new Promise<void>((resolve) => { done = resolve })
        try {
          await this.lastAppend.catch(() => {})
          await this.renumber(top, shift)
        } finally {
          this.renumbering = null
          done()
        }
      } else {
        this.seq = brokerLast
      }
    }
    this.seqChecked = true
    // [SVC-ACK-1] everything up to brokerLast is handled at the broker: the file's older events included
    if (brokerLast > this.sender.acked) {
      this.sender.acknowledge(brokerLast)
      this.settleAckWaiters()
      this.checkDrained()
    }
  }

  /** Gives the held events with seqs in (seqAtOpen, top] the seq `seq + shift`, in pages, in order. */
  private async renumber (top: number, shift: number): Promise<void> {
    let after = this.seqAtOpen
    for (;;) {
      const page = (await this.persistence.read(after, 500)).filter((e) => e.seq <= top)
      const lastOld = page[page.length - 1]?.seq
      if (lastOld === undefined) return
      await this.persistence.append(page.map((e) => ({ ...e, seq: e.seq + shift })), page.map((e) => e.seq))
      for (const e of page) {
        if (e.category === 'replacing' && this.newestReplacing.get(replacingKey(e)) === e.seq) this.newestReplacing.set(replacingKey(e), e.seq + shift)
      }
      after = lastOld
    }
  }

  private checkAckTimeout (): void {
    const waitingForProbe = this.probing && !this.checkingSeqs
    if (!this.link.online || (this.sender.inflightCount === 0 && !waitingForProbe)) {
      this.lastAckProgress = this.steadyNow()
      return
    }
    // on the monotonic clock: setting the system time back must not hide a stalled connection
    if (this.steadyNow() - this.lastAckProgress > this.opts.ackTimeoutMs) {
      this.lastAckProgress = this.steadyNow()
      this.link.drop(new HeraldError(ErrorCode.TIMEOUT, `no acknowledgement for ${this.opts.ackTimeoutMs} ms`))
    }
  }

  /** Ms on the clock's monotonic time (its wall clock if it has none), for measuring durations. */
  private steadyNow (): number {
    return this.clock.monotonic?.() ?? this.clock.now()
  }

  /** Resolves when every event raised so far has been acknowledged by the broker (or expired or rejected). */
  drained (): Promise<void> {
    if (this.persistence.stats().count === 0) return Promise.resolve()
    return new Promise((resolve) => { this.drainWaiters.push(resolve) })
  }

  private checkDrained (): void {
    if (this.drainWaiters.length === 0) return
    // acknowledge() in persistence is asynchronous: look again after it ran
    this.clock.defer(() => {
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

  private reportError (err: unknown, what = 'service endpoint error'): void {
    const e = toHeraldError(err)
    if (this.listenerCount('error') > 0) this.emit('error', e)
    else this.logger.error({ err: e, code: e.code }, `${what}: ${e.message}`)
  }

  /** Stops uploading and closes persistence. Unacknowledged events stay in a durable persistence. */
  async close (): Promise<void> {
    if (this.closed) return
    this.closed = true
    this.ackTimer?.cancel()
    await this.link.close()
    for (const w of this.ackWaiters.splice(0)) w.reject(new ClosedError('ServiceEndpoint closed before the broker acknowledged'))
    this.state = 'closed'
    this.feed.end(this.status)
    await this.persistence.close()
  }
}
