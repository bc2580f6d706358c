/**
 * The client endpoint's core, browser-safe ([ARCH-PURE-1]: only @herald/protocol, no Node
 * built-ins): subscribes to events from an application, keeps only positions, and hands each stored
 * event to its handler exactly once per subscription (at most once more, flagged `redelivered`, after
 * a crash between handler and commit; exactly once in transactional mode). The Node entry
 * (client-endpoint.ts: MQTT over TCP/TLS, SQLite, transactional mode) and the browser entry
 * (browser/index.ts: MQTT over WebSocket, IndexedDB) wrap it.
 */
import { AuthError, ClosedError, ConfigError, ErrorCode, FrameType, HeraldError, Link, RequestError, TypedEmitter, assertName, checkInt, clientClientId, clientKey, clientMessageTopic, clientRequestTopic, decodeControl, decodeEvents, encodeRequest, errorFromWire, frameType, isValidName, keyProblem, KEY_LIMITS, silentLogger, systemClock, toHeraldError, withDefaults, StatusFeed, type Clock, type Logger, type Transport, type Widened, type GapReport, type StartFrom, type StoredEvent, type TimerHandle, type EndpointConnectionOptions, checkMoreUrls } from '@herald/protocol'
import { ClientSubscription, type EventHandler } from './client-subscription.js'
import { toHeraldEvent, type HeraldEvent } from './herald-event.js'
import { MemoryPositionStore } from './positions/memory-position-store.js'
import type { PositionStore } from './positions/position-store.js'
import { attemptDelay, attemptPolicy, errorMessage, type BackoffPolicy } from './dead-letter-policy.js'
import type { DeadLetter } from './positions/dead-letter-store.js'
import { GroupMembers, type GroupSubscribeOptions, type GroupSubscription } from './group-subscription.js'
import { checkBatch, checkConcurrency, sequencer, type BatchHandler, type BatchOptions, type SequencePolicy } from './delivery/delivery-options.js'
import type { DeliveryHost } from './delivery/delivery-host.js'
import { batchLoop } from './delivery/batch-loop.js'
import { concurrentLoop } from './delivery/concurrent-loop.js'

/** A position write: done when it returns, or when the promise resolves (an asynchronous store, e.g. IndexedDB). */
type Write = void | Promise<void>

/** The options both entries take; each adds how the URL is reached (Node: `tls`). */
export interface ClientEndpointCoreOptions extends EndpointConnectionOptions {
  /** The broker's URL; which schemes are taken is the entry's (Node: `mqtt://`, `mqtts://`; browser: `ws://`, `wss://`). */
  readonly url: string
  /** This client's name; with the user it forms the client key `<user>/<clientName>` private events are addressed to. */
  readonly clientName: string
  /** User name; leave out to connect as a guest (if the site admits guests). */
  readonly user?: string
  readonly password?: string
  /** Where positions are kept. Default: memory (a restarted client starts over). */
  readonly positions?: PositionStore
  /** Default in-flight window per subscription, in events. Default 1,000. */
  readonly window?: number
  /** First delay before retrying a failed handler, ms. Default 100. */
  readonly retryInitialMs?: number
  /** Largest delay between handler retries, ms. Default 30,000. */
  readonly retryMaxMs?: number
  /**
   * Longest time, in ms, between two durable writes of a subscription's position while its events are
   * handled ([CLI-POS-5]): with a position store durable against power loss, it bounds in time how far
   * a power loss rolls the position back (flagged). 0: before every event (one fsync per event).
   * Default 1,000.
   */
  readonly positionSyncMs?: number
}

/** Defaults of the numeric ClientEndpointOptions. */
export const CLIENT_ENDPOINT_DEFAULTS = Object.freeze({
  window: 1000,
  retryInitialMs: 100,
  retryMaxMs: 30_000,
  reconnectInitialMs: 100,
  reconnectMaxMs: 10_000,
  connectTimeoutMs: 10_000,
  keepaliveSec: 30,
  positionSyncMs: 1000
})

export interface SubscribeOptions<Tx = never> {
  /** Only events from these services. Default: all services. */
  readonly services?: readonly string[]
  /**
   * Where to start when this subscription has no position yet ([CLI-START-1]): `'all'` everything the
   * broker holds (default), `'new'` only new events, `'latest'` the newest instance per service (and per key of a keyed event) and
   * then new ones ([CLI-START-4]), `{ position: n }` the first event stored at or
   * after position n ([CLI-START-2]), `{ time }` the first received by the broker at or after a
   * time, a Date or ms since the epoch ([CLI-START-3]). A recorded position always wins.
   */
  readonly start?: StartOption
  /**
   * [CLI-KEY-1] Only the instances of a keyed replacing event with one of these replacing keys
   * (1 to 1,000 keys; filtered at the broker). Default: every instance.
   */
  readonly keys?: readonly string[]
  /**
   * The key its position is kept under. Default: the event name, plus `?services=a,b` when filtered
   * by service, and `keys=t1,t2` when filtered by key ([CLI-KEY-2]).
   */
  readonly key?: string
  /** In-flight window for this subscription. Default: the endpoint's. */
  readonly window?: number
  /**
   * Transactional mode ([CLI-TX-1]): the application's better-sqlite3 database. The handler must be
   * synchronous; it runs inside a transaction on this database in which the position is committed too.
   */
  readonly transaction?: Tx
  /**
   * If the broker refuses the subscription for access (NOT_AUTHORIZED), resolve anyway and wait:
   * the refusal is emitted as `subscriptionError`, `waitingForAccess` is true, and delivery starts
   * once a site change grants access ([SITE-RELOAD-5]). Default false: subscribe() rejects.
   */
  readonly waitForAccess?: boolean
  /**
   * [CLI-DEAD-1] Attempts of one event before it is given up on: recorded as a dead letter in the
   * position store, with the position past it in the same write, and emitted as `deadLetter`.
   * Default: none, retried forever ([CLI-RETRY-1]). Attempts are counted per run ([CLI-DEAD-3]).
   */
  readonly maxAttempts?: number
  /** Delays between the attempts of one event. Default: the endpoint's retryInitialMs, retryMaxMs, factor 2. */
  readonly backoff?: BackoffPolicy
  /**
   * [CLI-CONC-1] Handlers running at once, 1 (default) to 256, in order within a sequencing key
   * (`sequence`). Refused with `transaction` and with `batch`, and with a position store without
   * `settle` (IndexedDB).
   */
  readonly concurrency?: number
  /** [CLI-CONC-2] What keeps order with `concurrency`: 'service' (default), 'key', or { field } of the payload. */
  readonly sequence?: SequencePolicy
}

/** subscribe() options of a batch subscription ([CLI-BATCH-1]): the handler gets an array of events. */
export interface BatchSubscribeOptions<Tx = never> extends SubscribeOptions<Tx> {
  readonly batch: BatchOptions
}

/** Where a subscription without a position starts (SubscribeOptions.start). */
export type StartOption = 'all' | 'new' | 'latest' | { readonly position: number } | { readonly time: Date | number }

/** The wire form of a start option; a ConfigError naming what is wrong. */
export function startFrom (s: StartOption): StartFrom {
  if (s === 'all' || s === 'new' || s === 'latest') return s
  if (typeof s === 'object' && s !== null) {
    if ('position' in s && Number.isSafeInteger(s.position) && s.position >= 0) return { position: s.position }
    if ('time' in s) {
      const ms = s.time instanceof Date ? s.time.getTime() : s.time
      if (Number.isSafeInteger(ms) && ms >= 0) return { time: ms }
    }
  }
  throw new ConfigError(`subscribe: option "start" must be "all", "new", "latest", { position: n } (a whole number >= 0) or { time: Date | ms }, got ${JSON.stringify(s)}`)
}

/** What an entry gives the core: the transport to use, and (Node) transactional mode. */
export interface ClientEndpointPlatform<Tx> {
  /** Checks the URL and the entry's own options; throws a ConfigError naming the option. */
  checkConnection (url: string): void
  /** The transport when the options give none. */
  defaultTransport (): Transport
  /** [CLI-TX-1] transactional mode, where the entry has it (Node, better-sqlite3). */
  readonly transactions?: {
    /** The position store inside the application's database. */
    positions (db: Tx): PositionStore
    /** Runs `fn` inside one transaction on `db` (it throws: rolled back). */
    run (db: Tx, fn: () => void): void
  }
}

/** A live subscription. */
export interface Subscription {
  readonly key: string
  readonly event: string
  /** Events handled (committed) since subscribe(). */
  readonly delivered: number
  /** Of which were flagged redelivered. */
  readonly redelivered: number
  /** Handler failures retried. */
  readonly retries: number
  /** Events given up on after `maxAttempts`, to the dead letters ([CLI-DEAD-1]). */
  readonly deadLettered: number
  /**
   * [CLI-REPLAY-1] Resets the position to `start` and delivers again from there (a replay): events up
   * to the position handled now come with `replay: true` ([CLI-REPLAY-2]). Resolves once the new
   * position is written; the subscription is then sent again (at once when online, else on reconnect) (`'all'` and `{ position }` are written
   * at once; `'new'`, `'latest'` and a time are resolved by the broker, the position written as 0
   * until it answers).
   */
  reset (start: StartOption): Promise<void>
  /** True while a replay runs (see reset). */
  readonly replaying: boolean
  /** Gap notices received since subscribe() ([CLI-GAP-3]), and the events they said were missed. */
  readonly gaps: number
  readonly missed: number
  /** The position of the last committed event. */
  readonly position: number
  /**
   * True while the broker refuses it for access (NOT_AUTHORIZED): nothing is delivered until a site
   * change grants access, then delivery goes on from `position` ([SITE-RELOAD-5]).
   */
  readonly waitingForAccess: boolean
  unsubscribe (): Promise<void>
}

export interface ClientStatus {
  readonly state: 'connecting' | 'online' | 'offline' | 'closed'
  readonly subscriptions: number
  readonly lastError: HeraldError | null
}

export interface ClientEndpointEvents {
  status: (status: ClientStatus) => void
  /**
   * A handler threw; the same event is retried after `retryInMs` ([CLI-RETRY-1]). With `maxAttempts`,
   * the last failed attempt is reported as `deadLetter` instead ([CLI-DEAD-1]). A batch handler's
   * failure is reported with the batch's first event ([CLI-BATCH-5]).
   */
  handlerError: (info: { key: string, event: HeraldEvent, error: unknown, attempt: number, retryInMs: number }) => void
  /**
   * The broker ended a subscription after it was active (e.g. its event was removed from the site),
   * or refused it for access ([SITE-RELOAD-5]: access withdrawn by a site change, or a first refusal
   * with `waitForAccess`): then `error.code` is NOT_AUTHORIZED, the subscription is kept, waiting
   * (`waitingForAccess`), and delivery goes on once access is granted again.
   */
  subscriptionError: (info: { key: string, error: HeraldError }) => void
  /**
   * [CLI-DEAD-1] An event was given up on after `attempts` failed attempts and is now dead letter
   * `id`, the subscription went on past it; or (`retried`) a dead letter handed to the handler again
   * ([CLI-DEAD-5]) failed again and stays one.
   */
  deadLetter: (info: { key: string, id: number, event: HeraldEvent, attempts: number, error: string, retried: boolean }) => void
  /**
   * [CLI-GAP-3] Events of a subscription were removed at the broker (pushed out past the queue's
   * bound, or expired) before it was sent them: they will never come. Emitted before the events after
   * the gap are handed to the handler. `missed` is exact when `exact`, else a lower bound.
   */
  gap: (info: GapInfo) => void
  /**
   * A background failure, among them refused credentials ([CONN-AUTH-2]: an AuthError naming the
   * user, once per run of refusals; the endpoint goes on retrying). Emitted only when listened to:
   * without a listener the error is logged at error level on the endpoint's logger, never thrown.
   */
  error: (error: HeraldError) => void
}

/** A gap notice as the client endpoint emits it ([CLI-GAP-3]). */
export interface GapInfo extends GapReport {
  /** The subscription's key. */
  readonly key: string
  /** The missed events lie after this position, up to `upTo`. */
  readonly after: number
}

export class ClientEndpointCore<Tx = never> extends TypedEmitter<ClientEndpointEvents> {
  /** `<user>/<clientName>`: the address of this client's private events. */
  readonly key: string
  readonly positions: PositionStore
  private readonly opts: Widened<typeof CLIENT_ENDPOINT_DEFAULTS>
  private readonly clock: Clock
  /** Jitter for the reconnect backoff and the handler retries. */
  private readonly random: () => number
  /** Resubscriptions waiting after the broker could not read ([CLI-RETRY-1]); cancelled by close(). */
  private readonly resubscribeTimers = new Set<TimerHandle>()
  private readonly logger: Logger
  private readonly link: Link
  private readonly reqTopic: string
  private readonly subs = new Map<string, ClientSubscription<Tx>>()
  private readonly wire = new Map<number, ClientSubscription<Tx>>()
  private nextWireId = 0
  private ackScheduled = false
  private state: ClientStatus['state'] = 'connecting'
  private lastError: HeraldError | null = null
  /** The code of the credentials refusal last reported, until the next time online ([CONN-AUTH-2]). */
  private refusalReported: string | null = null
  private closed = false
  private readonly feed = new StatusFeed<ClientStatus>()
  private readonly platform: ClientEndpointPlatform<Tx>
  /** Position writes not waited for (commits after a handler), until they are done. */
  private readonly writes = new Set<Promise<void>>()
  private deadLetteredCount = 0
  /** [GROUP-*] this endpoint's consumer group memberships (group-subscription.ts). */
  private readonly groups: GroupMembers

  constructor (options: ClientEndpointCoreOptions, platform: ClientEndpointPlatform<Tx>) {
    super()
    if (options === undefined || options === null) throw new ConfigError('ClientEndpoint: options are required')
    this.platform = platform
    platform.checkConnection(options.url)
    const moreUrls = checkMoreUrls('ClientEndpoint', options.moreUrls, (u) => { platform.checkConnection(u) })
    assertName(options.clientName, 'ClientEndpoint: clientName')
    if (options.user !== undefined) assertName(options.user, 'ClientEndpoint: user')
    if (options.user !== undefined && typeof options.password !== 'string') throw new ConfigError('ClientEndpoint: option "password" is required with "user"')
    // the entry's own options (Node: `tls`) are checked by platform.checkConnection
    const { url: _u, moreUrls: _m, tls: _t, clientName: _n, user: _us, password: _p, positions: _pos, transport: _tr, clock: _c, random: _r, logger: _l, ...numeric } = options as ClientEndpointCoreOptions & { tls?: unknown }
    this.opts = withDefaults('ClientEndpoint', CLIENT_ENDPOINT_DEFAULTS, numeric)
    checkInt('ClientEndpoint', 'window', this.opts.window, 1, 100_000)
    checkInt('ClientEndpoint', 'positionSyncMs', this.opts.positionSyncMs, 0, 3_600_000)
    this.clock = options.clock ?? systemClock
    this.random = options.random ?? Math.random
    this.logger = options.logger ?? silentLogger
    this.positions = options.positions ?? new MemoryPositionStore()
    this.key = clientKey(options.user ?? null, options.clientName)
    this.reqTopic = clientRequestTopic(this.key)
    this.link = new Link({
      transport: options.transport ?? platform.defaultTransport(),
      clock: this.clock,
      random: this.random,
      url: options.url,
      moreUrls,
      clientId: clientClientId(this.key),
      username: options.user,
      password: options.password,
      replyTopic: clientMessageTopic(this.key),
      reconnect: { initialMs: this.opts.reconnectInitialMs, maxMs: this.opts.reconnectMaxMs },
      connectTimeoutMs: this.opts.connectTimeoutMs,
      keepaliveSec: this.opts.keepaliveSec,
      logger: this.logger
    })
    this.groups = new GroupMembers({
      send: (frame) => { this.link.send(this.reqTopic, frame) },
      online: () => this.link.online,
      nextWireId: () => ++this.nextWireId,
      clock: this.clock,
      random: this.random,
      logger: this.logger,
      retry: { initialMs: this.opts.retryInitialMs, maxMs: this.opts.retryMaxMs },
      window: this.opts.window,
      handlerError: (info) => { this.emit('handlerError', info) },
      subscriptionError: (info) => { this.emit('subscriptionError', info) },
      report: (err) => { this.reportError(err) }
    })
    this.link.on('connecting', () => { this.setState('connecting') })
    this.link.on('online', () => {
      this.lastError = null
      this.refusalReported = null
      this.setState('online')
      for (const sub of this.subs.values()) this.resubscribe(sub)
      this.groups.online()
    })
    this.link.on('offline', (err) => {
      this.wire.clear()
      this.groups.offline()
      for (const sub of this.subs.values()) {
        sub.wireId = 0
        sub.clearQueue()
      }
      if (err !== null) {
        this.lastError = err
        // [CLI-AUTH-1] refused credentials fail the subscriptions waiting for the broker
        if (err.code === ErrorCode.BAD_CREDENTIALS || err.code === ErrorCode.NOT_AUTHORIZED) {
          for (const sub of this.subs.values()) this.failSettle(sub, err)
        }
      }
      if (!this.closed) this.setState('offline')
      if (err instanceof AuthError && err.code !== this.refusalReported && !this.closed) {
        // [CONN-AUTH-2] refused credentials are loud: a typed error, not only status.lastError
        this.refusalReported = err.code
        const who = options.user === undefined ? `guest client "${options.clientName}"` : `user "${options.user}"`
        const what = err.code === ErrorCode.BAD_CREDENTIALS ? 'the credentials of' : 'the identity of'
        this.reportError(new AuthError(err.code === ErrorCode.BAD_CREDENTIALS ? ErrorCode.BAD_CREDENTIALS : ErrorCode.NOT_AUTHORIZED, `the broker at ${options.url} refused ${what} ${who} (${err.code}); retrying`, { cause: err }), 'credentials refused')
      }
    })
    this.link.on('frame', (payload) => { this.onFrame(payload) })
    // [CLI-BROWSER-3] a store that can be taken away (another tab took its lock) ends the endpoint
    void this.positions.lost?.then((err) => { this.positionsLost(err) })
  }

  private positionsLost (err: HeraldError): void {
    if (this.closed) return
    this.lastError = err
    this.reportError(err, 'positions lost')
    this.close().catch((e: unknown) => { this.reportError(e) })
  }

  /** Keeps a write not waited for until it is done; a failure is reported ([CLI-BROWSER-2]). */
  private track (w: Write): void {
    if (w === undefined) return
    const p = w.then(() => { this.writes.delete(p) }, (err: unknown) => {
      this.writes.delete(p)
      this.reportError(err, 'position write failed')
    })
    this.writes.add(p)
  }

  /** Starts connecting. Subscriptions made before are sent once online. */
  start (): this {
    if (this.closed) throw new ClosedError('ClientEndpoint is closed')
    this.link.start()
    return this
  }

  /**
   * Subscribes to an event ([CLI-SUB-1]). Resolves once the broker accepted the subscription;
   * rejects with a typed error (UNKNOWN_EVENT, NOT_AUTHORIZED, BAD_CREDENTIALS, ...) otherwise.
   */
  subscribe (eventName: string, options: BatchSubscribeOptions<Tx>, handler: BatchHandler): Promise<Subscription>
  subscribe (eventName: string, options: SubscribeOptions<Tx>, handler: EventHandler): Promise<Subscription>
  /** [GROUP-JOIN-1] Joins a consumer group (`options.group`): see GroupSubscribeOptions. */
  subscribe (eventName: string, options: GroupSubscribeOptions, handler: EventHandler): Promise<GroupSubscription>
  async subscribe (eventName: string, options: (SubscribeOptions<Tx> & { readonly batch?: BatchOptions }) | GroupSubscribeOptions, handler: EventHandler | BatchHandler): Promise<Subscription | GroupSubscription> {
    if (this.closed) throw new ClosedError('ClientEndpoint is closed')
    if (options !== null && typeof options === 'object' && 'group' in options && options.group !== undefined) {
      if ('batch' in options && options.batch !== undefined) throw new ConfigError('subscribe: a consumer group member ("group") takes no "batch"')
      return await this.groups.subscribe(eventName, options, handler as EventHandler)
    }
    return await this.subscribeOne(eventName, options, handler)
  }

  private async subscribeOne (eventName: string, options: SubscribeOptions<Tx> & { readonly batch?: BatchOptions }, handler: EventHandler | BatchHandler): Promise<Subscription> {
    if (!isValidName(eventName)) throw new RequestError(ErrorCode.INVALID_ARGUMENT, `subscribe: ${JSON.stringify(eventName)} is not a valid event name`)
    if (typeof handler !== 'function') throw new ConfigError('subscribe: handler must be a function')
    const services = options.services === undefined ? null : [...options.services].sort()
    if (services !== null) {
      for (const s of services) assertName(s, 'subscribe: services[]')
    }
    const keys = keysFilter(options.keys)
    const key = options.key ?? positionKeyOf(eventName, services, keys)
    if (this.subs.has(key)) throw new ConfigError(`subscribe: a subscription with key "${key}" exists already`)
    const start = startFrom(options.start ?? 'all')
    const window = options.window ?? this.opts.window
    checkInt('subscribe', 'window', window, 1, 100_000)
    const tx = this.platform.transactions
    if (options.waitForAccess !== undefined && typeof options.waitForAccess !== 'boolean') throw new ConfigError('subscribe: option "waitForAccess" must be true or false')
    if (options.transaction !== undefined && tx === undefined) throw new ConfigError('subscribe: option "transaction" (transactional mode) needs the Node entry and a better-sqlite3 database')
    const concurrency = checkConcurrency(options.concurrency)
    // [CLI-CONC-4] what concurrency is refused with
    if (concurrency > 1 && options.transaction !== undefined) throw new ConfigError('subscribe: option "concurrency" > 1 cannot be used with "transaction": a transactional handler is synchronous, so nothing would run at once (use one at a time, or a batch)')
    if (concurrency > 1 && options.batch !== undefined) throw new ConfigError('subscribe: options "concurrency" > 1 and "batch" cannot be used together: a batch is handed over in position order as one unit')
    const positions = options.transaction === undefined || tx === undefined ? this.positions : tx.positions(options.transaction)
    const batch = options.batch === undefined ? null : checkBatch(options.batch, window)
    const sequenceOf = sequencer(options.sequence)
    if (concurrency > 1 && positions.settle === undefined) throw new ConfigError('subscribe: option "concurrency" > 1 needs a position store that records finished events (SQLite or memory); this one does not (IndexedDB)')
    // a batch handler's single events (a retried dead letter, [CLI-DEAD-5]) are batches of one
    const one: EventHandler = batch === null ? handler as EventHandler : (e) => (handler as BatchHandler)([e])
    const sub = new ClientSubscription<Tx>(key, eventName, services, start, window, one, positions, options.transaction ?? null)
    sub.keys = keys
    sub.attempts = attemptPolicy(options, { initialMs: this.opts.retryInitialMs, maxMs: this.opts.retryMaxMs }, positions.deadLetters)
    if (batch !== null) sub.batch = { ...batch, handler: handler as BatchHandler }
    sub.concurrency = concurrency
    sub.sequenceOf = sequenceOf
    const recorded = positions.get(key)
    sub.committed = recorded?.position ?? 0
    sub.crashStarted = recorded?.started ?? null
    if (recorded?.done !== undefined && recorded.done.length > 0) sub.doneBefore = new Set(recorded.done)
    sub.waitForAccess = options.waitForAccess === true
    if (positions.deadLetters?.list(key).some((l) => l.retry) === true) {
      // [CLI-DEAD-5] retried dead letters first (only then does subscribe() take a turn before registering)
      await this.retryDeadLetters(sub)
      if (this.closed) throw new ClosedError('ClientEndpoint is closed')
      if (this.subs.has(key)) throw new ConfigError(`subscribe: a subscription with key "${key}" exists already`)
    }
    this.subs.set(key, sub)
    const settled = new Promise<void>((resolve, reject) => { sub.settle = { resolve, reject } })
    if (this.link.online) this.resubscribe(sub)
    try {
      await settled
    } catch (err) {
      this.subs.delete(key)
      throw err
    }
    return this.view(sub)
  }

  private view (sub: ClientSubscription<Tx>): Subscription {
    return {
      key: sub.key,
      event: sub.event,
      get delivered () { return sub.delivered },
      get redelivered () { return sub.redelivered },
      get retries () { return sub.retries },
      get deadLettered () { return sub.deadLettered },
      get gaps () { return sub.gaps },
      get replaying () { return sub.replayUntil !== null },
      reset: async (start: StartOption) => { await this.reset(sub, startFrom(start)) },
      get missed () { return sub.missed },
      get position () { return sub.committed },
      get waitingForAccess () { return sub.waitingForAccess },
      unsubscribe: async () => {
        sub.closed = true
        sub.stopWaits()
        if (sub.wireId !== 0) {
          this.link.send(this.reqTopic, encodeRequest({ op: 'unsub', sub: sub.wireId }))
          this.wire.delete(sub.wireId)
        }
        this.subs.delete(sub.key)
        await sub.idle()
      }
    }
  }

  /** [CLI-REPLAY-1] See Subscription.reset. */
  private async reset (sub: ClientSubscription<Tx>, start: StartFrom): Promise<void> {
    if (sub.closed) throw new ClosedError(`subscription "${sub.key}" is closed`)
    // stop the current delivery: frames of the old subscription id are ignored from now on
    if (sub.wireId !== 0) {
      if (this.link.online) this.link.send(this.reqTopic, encodeRequest({ op: 'unsub', sub: sub.wireId }))
      this.wire.delete(sub.wireId)
      sub.wireId = 0
    }
    sub.clearQueue()
    sub.stopWaits()
    await sub.idle()
    if (sub.closed) return
    // [CLI-REPLAY-2] where it was: events up to it are a replay (a second reset keeps the furthest)
    sub.replayUntil = Math.max(sub.replayUntil ?? 0, sub.committed)
    const local = start === 'all' ? 0 : typeof start === 'object' && 'position' in start ? Math.max(0, start.position - 1) : null
    const p = local ?? 0
    sub.resetStart = local === null ? start : null
    // durably, before anything is delivered again
    const w1 = sub.positions.commit(sub.key, p)
    const w2 = sub.positions.reserve?.(sub.key, p)
    await Promise.all([w1, w2])
    sub.committed = p
    sub.reserved = p
    sub.crashStarted = null
    sub.doneBefore = null // [CLI-CONC-3] the commit cleared `done`
    if (sub.replayUntil <= p && sub.resetStart === null) sub.replayUntil = null // nothing to replay
    if (this.link.online) this.resubscribe(sub)
  }

  /** (Re)sends a subscription once no handler of it is running, from its committed position ([CLI-RESUME-1]). */
  private resubscribe (sub: ClientSubscription<Tx>): void {
    void sub.idle().then(() => {
      if (sub.closed || !this.link.online || sub.wireId !== 0) return
      const id = ++this.nextWireId
      sub.wireId = id
      this.wire.set(id, sub)
      const recorded = sub.positions.get(sub.key)
      sub.committed = recorded?.position ?? 0
      // [CLI-START-1] a recorded position, even 0, is where to resume: `start` only applies without one
      this.link.send(this.reqTopic, encodeRequest({
        op: 'sub', sub: id, event: sub.event, services: sub.services, position: sub.resetStart !== null ? 0 : sub.committed, start: sub.resetStart ?? (recorded === null ? sub.start : 'all'), window: sub.window, gaps: true,
        ...(sub.keys !== null ? { keys: sub.keys } : {})
      }))
    })
  }

  private failSettle (sub: ClientSubscription<Tx>, err: HeraldError): void {
    const s = sub.settle
    if (s !== null) {
      sub.settle = null
      sub.closed = true
      s.reject(err)
    }
  }

  private onFrame (payload: Uint8Array): void {
    try {
      const type = frameType(payload)
      if (type === FrameType.GROUP_EVENTS) {
        this.groups.onEvents(payload)
      } else if (type === FrameType.EVENTS) {
        const frame = decodeEvents(payload, (id) => this.wire.get(id)?.event ?? null)
        if (frame === null) return
        const sub = this.wire.get(frame.sub) as ClientSubscription<Tx>
        const now = this.clock.now()
        for (const e of frame.events) sub.queue.push({ event: e, ageAtSend: Math.max(0, frame.brokerNow - e.receivedAt) + e.uploadAge, arrivedAt: now })
        this.process(sub)
      } else if (type === FrameType.CONTROL) {
        const c = decodeControl(payload)
        if (this.groups.onControl(c)) return
        if (c.op === 'subscribed') {
          const sub = this.wire.get(c.sub)
          if (sub === undefined) return
          const recorded = sub.positions.get(sub.key)
          let w1: Write = undefined
          let w2: Write = undefined
          if (c.reset) {
            // [CLI-RESET-1] the broker's store was replaced: our position means nothing there
            this.logger.warn({ key: sub.key, position: sub.committed }, 'the broker has no events up to this position; starting over from what it holds')
            w1 = sub.positions.commit(sub.key, 0)
            w2 = sub.positions.reserve?.(sub.key, 0)
            sub.committed = 0
            sub.reserved = 0
            sub.crashStarted = null
            sub.doneBefore = null
          } else if (recorded === null || sub.resetStart !== null) {
            // [CLI-REPLAY-1] a reset to a start the broker resolved is recorded like a first start
            sub.resetStart = null
            if (sub.replayUntil !== null && c.head >= sub.replayUntil) sub.replayUntil = null // nothing to replay
            // [CLI-START-1] remember where a first subscription started; [CLI-POS-5] durably, before
            // subscribe() resolves and before any event is handed over
            w1 = sub.positions.commit(sub.key, c.head)
            w2 = sub.positions.reserve?.(sub.key, c.head)
            sub.committed = c.head
            sub.reserved = c.head
          }
          sub.waitingForAccess = false
          const s = sub.settle
          sub.settle = null
          if (s === null) {
            this.track(w1)
            this.track(w2)
          } else if (w1 === undefined && w2 === undefined) {
            s.resolve()
          } else {
            // [CLI-BROWSER-2] an asynchronous store: subscribe() resolves once the write is done
            // (the handler loop waits for its own first write, which an ordered store does after it)
            Promise.all([w1, w2]).then(() => { s.resolve() }, (err: unknown) => { s.reject(toHeraldError(err)) })
          }
        } else if (c.op === 'gap') {
          // [CLI-GAP-3] told before the EVENTS frame that follows the gap
          const sub = this.wire.get(c.sub)
          if (sub === undefined) return
          sub.gaps++
          sub.missed += c.missed
          this.logger.warn({ key: sub.key, event: c.event, missed: c.missed, exact: c.exact, pushedOut: c.pushedOut, expired: c.expired }, 'events were removed at the broker before this subscription received them')
          this.emit('gap', { key: sub.key, event: c.event, services: c.services, missed: c.missed, exact: c.exact, pushedOut: c.pushedOut, expired: c.expired, after: c.after, upTo: c.upTo })
        } else if (c.op === 'accessGranted') {
          // [SITE-RELOAD-5] the site now lets this user receive more: ask again for what was refused
          for (const sub of this.subs.values()) if (sub.waitingForAccess && sub.wireId === 0) this.resubscribe(sub)
        } else if (c.op === 'error') {
          const error = errorFromWire(c.code, c.message)
          const sub = c.sub === null ? undefined : this.wire.get(c.sub)
          if (sub === undefined) {
            this.reportError(error)
            return
          }
          this.wire.delete(sub.wireId)
          sub.wireId = 0
          if (error.code === ErrorCode.PERSISTENCE_FAILED) {
            // the broker could not read: try again after a while
            const t = this.clock.setTimer(() => {
              this.resubscribeTimers.delete(t)
              if (!sub.closed && !this.closed) this.resubscribe(sub)
            }, this.opts.retryInitialMs * 10)
            this.resubscribeTimers.add(t)
            return
          }
          if (error.code === ErrorCode.NOT_AUTHORIZED && (sub.settle === null || sub.waitForAccess)) {
            // [SITE-RELOAD-5] refused for access: kept, waiting to be granted; told once per refusal
            const s = sub.settle
            sub.settle = null
            const wasWaiting = sub.waitingForAccess
            sub.waitingForAccess = true
            if (!wasWaiting) this.emit('subscriptionError', { key: sub.key, error })
            s?.resolve()
            return
          }
          sub.closed = true
          this.subs.delete(sub.key)
          if (sub.settle !== null) this.failSettle(sub, error)
          else this.emit('subscriptionError', { key: sub.key, error })
        }
      } else {
        this.reportError(new HeraldError(ErrorCode.MALFORMED_FRAME, `unexpected frame type ${type}`))
      }
    } catch (err) {
      this.reportError(err)
    }
  }

  /** Runs the handler over the queue, one event at a time, in order ([CLI-ORDER-1]). */
  private process (sub: ClientSubscription<Tx>): void {
    if (sub.processing) {
      sub.wake?.() // [CLI-BATCH-3] a batch waiting to fill, or the concurrent loop waiting for events
      return
    }
    sub.processing = true
    void this.drain(sub)
  }

  /**
   * [CLI-ORDER-2] Runs the loop until the queue is empty when it looks, and marks the subscription
   * idle in the same synchronous step: events queued while a loop was finishing (several EVENTS
   * frames in one network read reach process() while a transactional loop, which never awaits, has
   * run through the first frame but not yet settled) are taken by another pass, never left waiting
   * for the next frame. A failed pass ends the drain; the next frame starts it again.
   */
  private async drain (sub: ClientSubscription<Tx>): Promise<void> {
    try {
      do await (sub.batch !== null ? batchLoop(this.host(), sub) : sub.concurrency > 1 || sub.doneBefore !== null ? concurrentLoop(this.host(), sub) : this.loop(sub))
      while (sub.pending > 0 && !sub.closed && !this.closed)
    } catch (err) {
      this.reportError(err)
    } finally {
      sub.markIdle()
    }
  }

  private async loop (sub: ClientSubscription<Tx>): Promise<void> {
    // [CLI-POS-4] a handled event whose commit waits for the next event's start mark: one write for both
    let pending: number | null = null
    const commit = (position: number): void => {
      sub.committed = position
      this.scheduleAck(sub)
    }
    // [CLI-REDELIVER-1] a commit inside a range flagged from an earlier run keeps the range's end as
    // the started mark: a crash before the range is passed flags the rest of it again (a plain commit
    // clears the mark, and the next run would get those events unflagged)
    // [CLI-BROWSER-2] not waited for: until it is done, the started mark before it covers the event
    const commitNow = (position: number): void => {
      if (sub.crashStarted !== null && sub.crashStarted > position) this.track(sub.positions.advance(sub.key, position, sub.crashStarted))
      else this.track(sub.positions.commit(sub.key, position))
      commit(position)
    }
    try {
      for (let item = sub.take(); item !== undefined && !sub.closed; item = sub.take()) {
        const e = item.event
        if (e.position <= (pending ?? sub.committed)) continue // already handled (a frame from before a resubscription)
        // [CLI-REDELIVER-1] every event up to the recorded started one may have been handled before
        let redelivered = sub.crashStarted !== null && e.position <= sub.crashStarted
        // [CLI-REPLAY-2] flagged until it reaches where it was when reset
        const replay = sub.replayUntil !== null && e.position <= sub.replayUntil
        if (sub.transaction === null) {
          // [CLI-REDELIVER-1] recorded before the handler, so a crash inside it is known after restart;
          // while a range flagged from a crash is delivered again, its end, so a crash now keeps it
          const mark = sub.crashStarted === null ? e.position : Math.max(e.position, sub.crashStarted)
          let w: Write
          if (pending !== null) {
            w = sub.positions.advance(sub.key, pending, mark)
            commit(pending)
            pending = null
          } else {
            w = sub.positions.markStarted(sub.key, mark)
          }
          // [CLI-BROWSER-2] an asynchronous store: the mark is done before the handler runs (awaited
          // only when a promise came back: the synchronous SQLite path takes no extra turn per event)
          if (w !== undefined) await w
          if (sub.positions.reserve !== undefined && (e.position > sub.reserved || this.clock.now() - sub.reservedAt >= this.opts.positionSyncMs)) {
            // [CLI-POS-5] durable, with the writes above, before the handler runs: after a power loss
            // every reserved event is flagged, and nothing beyond was handled. It covers what was
            // received and the next `window` positions, so a slow stream needs no fsync per event;
            // and it comes again after positionSyncMs, so the durable position is never older
            const last = sub.queue[sub.queue.length - 1]?.event.position ?? 0
            const upTo = Math.max(e.position + sub.window - 1, last, sub.crashStarted ?? 0)
            const r = sub.positions.reserve(sub.key, upTo)
            if (r !== undefined) await r
            sub.reserved = upTo
            sub.reservedAt = this.clock.now()
          }
        }
        let gaveUp = false
        for (let attempt = 1; ; attempt++) {
          const event = toHeraldEvent(e, item.ageAtSend + (this.clock.now() - item.arrivedAt), redelivered, replay)
          try {
            if (sub.transaction !== null) this.runTransactional(sub, event)
            else await sub.handler(event)
            break
          } catch (error) {
            if (error instanceof ConfigError) throw error
            if (sub.attempts?.maxAttempts != null && attempt >= sub.attempts.maxAttempts) {
              // [CLI-DEAD-1] the last attempt failed: a dead letter, and the position past it, in one write
              if (!this.giveUp(sub, e, event, attempt, error)) return
              gaveUp = true
              break
            }
            const retryInMs = attemptDelay(attempt, sub.attempts ?? { maxAttempts: null, initialMs: this.opts.retryInitialMs, maxMs: this.opts.retryMaxMs, factor: 2 }, this.random)
            sub.retries++
            // [CLI-RETRY-1] never skipped: reported and retried with backoff
            if (this.listenerCount('handlerError') > 0) this.emit('handlerError', { key: sub.key, event, error, attempt, retryInMs })
            else this.logger.warn({ key: sub.key, position: e.position, err: error, attempt }, 'handler failed; retrying')
            // close() and unsubscribe() end the wait at once: they wait for the loop, not the backoff
            await new Promise<void>((resolve) => {
              const t = this.clock.setTimer(() => { sub.stopRetryWait = null; resolve() }, retryInMs)
              sub.stopRetryWait = () => { sub.stopRetryWait = null; t.cancel(); resolve() }
            })
            if (sub.closed || this.closed) return
            redelivered = sub.transaction === null
          }
        }
        if (sub.crashStarted !== null && e.position >= sub.crashStarted) sub.crashStarted = null
        if (sub.replayUntil !== null && e.position >= sub.replayUntil) sub.replayUntil = null
        if (gaveUp) {
          commit(e.position) // written by giveUp() with the dead letter
          continue
        }
        sub.delivered++
        if (redelivered) sub.redelivered++
        if (sub.transaction !== null) commit(e.position)
        else if (sub.pending > 0) pending = e.position
        else commitNow(e.position)
      }
    } finally {
      if (pending !== null) commitNow(pending)
    }
  }

  /**
   * [CLI-DEAD-2] Records the dead letter with the position past it (in transactional mode in the
   * application's database, one transaction). False: the store is full ([CLI-DEAD-4]) or the write
   * failed, and the subscription is stopped at the event, which stays to be delivered on the next start.
   */
  private giveUp (sub: ClientSubscription<Tx>, e: StoredEvent, event: HeraldEvent, attempts: number, error: unknown, position = e.position, started: number | null = sub.crashStarted !== null && sub.crashStarted > e.position ? sub.crashStarted : null, done?: readonly number[]): boolean {
    const store = sub.positions.deadLetters
    if (store === undefined) throw new ConfigError('maxAttempts needs a position store that keeps dead letters')
    const message = errorMessage(error)
    let id: number
    try {
      id = store.add({ key: sub.key, event: e, attempts, lastError: message, deadAt: this.clock.now(), age: event.age }, position, started, done)
    } catch (err) {
      const stopped = toHeraldError(err)
      sub.closed = true
      if (sub.wireId !== 0) {
        this.link.send(this.reqTopic, encodeRequest({ op: 'unsub', sub: sub.wireId }))
        this.wire.delete(sub.wireId)
        sub.wireId = 0
      }
      this.subs.delete(sub.key)
      this.emit('subscriptionError', { key: sub.key, error: stopped })
      return false
    }
    sub.deadLettered++
    this.deadLetteredCount++
    if (this.listenerCount('deadLetter') > 0) this.emit('deadLetter', { key: sub.key, id, event, attempts, error: message, retried: false })
    else this.logger.warn({ key: sub.key, position: e.position, id, attempts, err: message }, 'handler failed its last attempt; event dead-lettered')
    return true
  }

  /**
   * [CLI-DEAD-5] Before a subscription's first event: each of its dead letters marked for retry is
   * handed to the handler once, flagged redelivered (outside transactional mode: it ran before); done,
   * it is deleted (in transactional mode in the handler's transaction); failed again, it stays.
   */
  private async retryDeadLetters (sub: ClientSubscription<Tx>): Promise<void> {
    const store = sub.positions.deadLetters
    if (store === undefined) return
    for (const letter of store.list(sub.key)) {
      if (!letter.retry || this.closed) continue
      const e = letter.event
      // [EVT-AGE-1] its age when given up, plus the time since, both by this client's clock
      const event = toHeraldEvent(e, letter.age + Math.max(0, this.clock.now() - letter.deadAt), sub.transaction === null)
      try {
        if (sub.transaction !== null) {
          const tx = this.platform.transactions
          if (tx === undefined) throw new ConfigError('transactional mode needs the Node entry')
          tx.run(sub.transaction, () => {
            const r = sub.handler(event) as unknown
            if (r !== undefined && typeof (r as { then?: unknown }).then === 'function') throw new ConfigError(`subscription "${sub.key}": a transactional handler must be synchronous (it returned a promise)`)
            store.discard(letter.id)
          })
        } else {
          await sub.handler(event)
          store.discard(letter.id)
        }
        sub.delivered++
        if (event.redelivered) sub.redelivered++
      } catch (error) {
        if (error instanceof ConfigError) throw error
        this.failedRetry(sub, letter, event, error)
      }
    }
  }

  private failedRetry (sub: ClientSubscription<Tx>, letter: DeadLetter, event: HeraldEvent, error: unknown): void {
    const message = errorMessage(error)
    sub.positions.deadLetters?.failed(letter.id, message, this.clock.now())
    if (this.listenerCount('deadLetter') > 0) this.emit('deadLetter', { key: sub.key, id: letter.id, event, attempts: letter.attempts + 1, error: message, retried: true })
    else this.logger.warn({ key: sub.key, id: letter.id, err: message }, 'dead letter retried and failed again')
  }

  private deliveryHost: DeliveryHost<Tx> | null = null

  /** What the batch and concurrent loops use of this endpoint ([CLI-BATCH-*], [CLI-CONC-*]). */
  private host (): DeliveryHost<Tx> {
    if (this.deliveryHost !== null) return this.deliveryHost
    this.deliveryHost = {
      clock: this.clock,
      isClosed: () => this.closed,
      committed: (sub, position) => {
        sub.committed = position
        this.scheduleAck(sub)
      },
      track: (w) => { this.track(w) },
      reserve: (sub, last) => {
        // [CLI-POS-5] as the one-at-a-time loop does, for the last event about to run
        if (sub.positions.reserve === undefined || (last <= sub.reserved && this.clock.now() - sub.reservedAt < this.opts.positionSyncMs)) return undefined
        const queued = sub.queue[sub.queue.length - 1]?.event.position ?? 0
        const upTo = Math.max(last + sub.window - 1, queued, sub.crashStarted ?? 0)
        const r = sub.positions.reserve(sub.key, upTo)
        sub.reserved = upTo
        sub.reservedAt = this.clock.now()
        return r === undefined ? undefined : r
      },
      retryWait: async (sub, event, error, attempt) => {
        const retryInMs = attemptDelay(attempt, sub.attempts ?? { maxAttempts: null, initialMs: this.opts.retryInitialMs, maxMs: this.opts.retryMaxMs, factor: 2 }, this.random)
        sub.retries++
        if (this.listenerCount('handlerError') > 0) this.emit('handlerError', { key: sub.key, event, error, attempt, retryInMs })
        else this.logger.warn({ key: sub.key, position: event.position, err: error, attempt }, 'handler failed; retrying')
        await new Promise<void>((resolve) => {
          const stop = (): void => {
            sub.stops.delete(stop)
            t.cancel()
            resolve()
          }
          const t = this.clock.setTimer(stop, retryInMs)
          sub.stops.add(stop)
        })
        return !sub.closed && !this.closed
      },
      giveUp: (sub, e, event, attempts, error, position, started, done) => this.giveUp(sub, e, event, attempts, error, position, started, done),
      runTransaction: (sub, fn) => {
        const tx = this.platform.transactions
        if (tx === undefined) throw new ConfigError('transactional mode needs the Node entry')
        tx.run(sub.transaction as Tx, fn)
      }
    }
    return this.deliveryHost
  }

  /** Events given up on to dead letters since the endpoint was made ([CLI-DEAD-1]). */
  get deadLettered (): number {
    return this.deadLetteredCount
  }

  /** [CLI-TX-1] the handler's writes and the position commit in one transaction. */
  private runTransactional (sub: ClientSubscription<Tx>, event: HeraldEvent): void {
    const tx = this.platform.transactions
    if (tx === undefined) throw new ConfigError('transactional mode needs the Node entry')
    tx.run(sub.transaction as Tx, () => {
      const r = sub.handler(event) as unknown
      if (r !== undefined && typeof (r as { then?: unknown }).then === 'function') {
        throw new ConfigError(`subscription "${sub.key}": a transactional handler must be synchronous (it returned a promise)`)
      }
      // the platform's transactional store is synchronous (SQLite in the application's database)
      void sub.positions.commit(sub.key, event.position)
    })
  }

  /** Tells the broker what was committed, once per turn of the event loop ([CLI-ACK-1]). */
  private scheduleAck (sub: ClientSubscription<Tx>): void {
    sub.ackDue = true
    if (this.ackScheduled) return
    this.ackScheduled = true
    this.clock.defer(() => {
      this.ackScheduled = false
      for (const s of this.subs.values()) {
        if (!s.ackDue) continue
        s.ackDue = false
        if (s.wireId !== 0) this.link.send(this.reqTopic, encodeRequest({ op: 'ack', sub: s.wireId, position: s.committed }))
      }
    })
  }

  get status (): ClientStatus {
    return { state: this.state, subscriptions: this.subs.size + this.groups.size, lastError: this.lastError }
  }

  /** A stream of status changes, starting with the current one; ends at close(). */
  statusUpdates (): AsyncIterable<ClientStatus> {
    return this.feed.stream(this.status)
  }

  private setState (state: ClientStatus['state']): void {
    if (this.state === state) return
    this.state = state
    const s = this.status
    this.feed.push(s)
    this.emit('status', s)
  }

  private reportError (err: unknown, what = 'client endpoint error'): void {
    const e = toHeraldError(err)
    if (this.listenerCount('error') > 0) this.emit('error', e)
    else this.logger.error({ err: e, code: e.code }, `${what}: ${e.message}`)
  }

  /** Stops receiving, waits for running handlers, closes the position store. */
  async close (): Promise<void> {
    if (this.closed) return
    this.closed = true
    for (const t of this.resubscribeTimers) t.cancel()
    this.resubscribeTimers.clear()
    for (const sub of this.subs.values()) {
      sub.closed = true
      sub.stopWaits()
      this.failSettle(sub, new ClosedError('ClientEndpoint closed'))
    }
    await this.link.close()
    await this.groups.close()
    await Promise.all([...this.subs.values()].map((s) => s.idle()))
    // [CLI-BROWSER-2] the commits not waited for are done before the store closes
    while (this.writes.size > 0) await Promise.all([...this.writes])
    for (const sub of this.subs.values()) if (sub.transaction !== null) await sub.positions.close()
    await this.positions.close()
    this.state = 'closed'
    this.feed.end(this.status)
  }
}

/** [CLI-KEY-1] Checks a subscription's key filter: sorted, without repeats; null for none. */
function keysFilter (keys: readonly string[] | undefined): readonly string[] | null {
  if (keys === undefined) return null
  if (!Array.isArray(keys) || keys.length === 0 || keys.length > KEY_LIMITS.maxKeysPerSubscription) {
    throw new RequestError(ErrorCode.INVALID_ARGUMENT, `subscribe: keys must be an array of 1 to ${KEY_LIMITS.maxKeysPerSubscription} keys, got ${Array.isArray(keys) ? `${keys.length}` : typeof keys}`)
  }
  for (const k of keys) {
    const problem = keyProblem(k)
    if (problem !== null) throw new RequestError(ErrorCode.INVALID_ARGUMENT, `subscribe: keys[]: ${JSON.stringify(k)}: ${problem}`)
  }
  return [...new Set<string>(keys as readonly string[])].sort()
}

/**
 * [CLI-KEY-2] The default position key: the event name, `?services=a,b` when filtered by service,
 * and `keys=t1,t2` (URI-encoded) when filtered by key; a key list longer than 256 characters is
 * named by its count and a hash, so that the position key stays short.
 */
function positionKeyOf (eventName: string, services: readonly string[] | null, keys: readonly string[] | null): string {
  const parts: string[] = []
  if (services !== null) parts.push(`services=${services.join(',')}`)
  if (keys !== null) {
    const listed = keys.map(encodeURIComponent).join(',')
    parts.push(listed.length <= 256 ? `keys=${listed}` : `keys=#${keys.length}-${fnv1a(listed)}`)
  }
  return parts.length === 0 ? eventName : `${eventName}?${parts.join('&')}`
}

/** FNV-1a, 32 bits, in hex: a short stable name of a long text (no crypto needed, runs in browsers). */
function fnv1a (text: string): string {
  let h = 0x811c9dc5
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i)
    h = Math.imul(h, 0x01000193) >>> 0
  }
  return h.toString(16).padStart(8, '0')
}
