/**
 * One endpoint's connection to the broker ([CONN-*] in docs/protocol.md), over any Transport:
 * connects with the endpoint's identity, subscribes to its own reply topic, reconnects with
 * exponential backoff and full jitter ([SVC-RECONNECT-1]), and reports online/offline. Frames are
 * QoS 0: Herald's own acknowledgements make them reliable, and everything unacknowledged is resent
 * after a reconnect. Its timers are the clock's, so tests move time by hand.
 */
import { backoffDelay, type BackoffOptions } from './backoff.js'
import { systemClock, type Clock, type TimerHandle } from './clock.js'
import { ConfigError, type HeraldError } from './errors.js'
import { silentLogger, type Logger } from './logger.js'
import type { DialOptions, Transport, TransportConnection } from './transport.js'
import { TypedEmitter } from './typed-emitter.js'

export interface LinkOptions extends DialOptions {
  readonly transport: Transport
  readonly reconnect: BackoffOptions
  readonly clock?: Clock | undefined
  /** Uniform numbers in [0, 1) for the backoff's jitter. Default Math.random. */
  readonly random?: (() => number) | undefined
  readonly logger?: Logger | undefined
  /** [CLUSTER-URL-1] Other brokers to try in turn after `url` (see EndpointConnectionOptions.moreUrls). */
  readonly moreUrls?: readonly string[] | undefined
}

/** How an endpoint connects: the options both endpoints take, with the defaults in their DEFAULTS tables. */
export interface EndpointConnectionOptions {
  /** First reconnect delay in ms. Default 100. */
  readonly reconnectInitialMs?: number
  /** Largest reconnect delay in ms. Default 10,000. */
  readonly reconnectMaxMs?: number
  /** Connect timeout in ms. Default 10,000. */
  readonly connectTimeoutMs?: number
  /** MQTT keepalive in seconds. Default 30. */
  readonly keepaliveSec?: number
  /**
   * How to reach the broker. Default: the entry's (Node: MQTT over TCP, TLS or WebSocket by the URL,
   * with `tls`; browser: MQTT over WebSocket). Tests give a memory transport.
   */
  readonly transport?: Transport
  /** Time and timers. Default: the system clock. */
  readonly clock?: Clock
  /** Uniform numbers in [0, 1) for the jitter of the reconnect backoff (and the client's handler retries). Default Math.random. */
  readonly random?: () => number
  readonly logger?: Logger
  /**
   * [CLUSTER-URL-1] More brokers of the same cluster (brokers sharing one PostgreSQL store): after a
   * connection attempt fails or a connection ends, the next attempt goes to the next URL, `url`
   * first, round robin, with the same backoff. Each is checked like `url`. Default: none.
   */
  readonly moreUrls?: readonly string[]
}

/** Checks `moreUrls` with the entry's own URL check ([CLUSTER-URL-1]); returns them (none: []). */
export function checkMoreUrls (component: string, moreUrls: unknown, check: (url: string) => void): readonly string[] {
  if (moreUrls === undefined) return []
  if (!Array.isArray(moreUrls) || moreUrls.length > 64) throw new ConfigError(`${component}: option "moreUrls" must be an array of at most 64 broker URLs`)
  for (const u of moreUrls) {
    if (typeof u !== 'string') throw new ConfigError(`${component}: option "moreUrls" must hold URL strings, got ${typeof u}`)
    check(u)
  }
  return moreUrls as string[]
}

export interface LinkEvents {
  /** Connected and subscribed: frames may be sent. */
  online: () => void
  /** The connection ended; `error` says why when known. A reconnect is scheduled. */
  offline: (error: HeraldError | null) => void
  /** A frame arrived on the reply topic. */
  frame: (payload: Uint8Array) => void
  /**
   * A connection attempt starts. `attempt`: the failures (failed attempts, or the connection ending)
   * since start() or the last time online; 0 only for the first attempt after start(). The delay
   * before it was backoffDelay(attempt - 1).
   */
  connecting: (attempt: number) => void
}

export class Link extends TypedEmitter<LinkEvents> {
  private conn: TransportConnection | null = null
  private attempt = 0
  /** Index into [url, ...moreUrls] of the broker the next attempt dials ([CLUSTER-URL-1]). */
  private urlIndex = 0
  private timer: TimerHandle | null = null
  private closed = false
  private isOnline = false
  /** Why the current connection is being dropped, when we drop it. */
  private dropReason: HeraldError | null = null
  private readonly clock: Clock
  private readonly logger: Logger

  constructor (private readonly options: LinkOptions) {
    super()
    this.clock = options.clock ?? systemClock
    this.logger = options.logger ?? silentLogger
  }

  get online (): boolean {
    return this.isOnline
  }

  /** Starts connecting (and reconnecting until close()). */
  start (): void {
    if (this.conn === null && this.timer === null && !this.closed) this.connect()
  }

  /** Sends a frame; false if offline (the caller resends after the next `online`). */
  send (topic: string, payload: Uint8Array): boolean {
    if (!this.isOnline || this.conn === null) return false
    this.conn.send(topic, payload)
    return true
  }

  /** Drops the current connection and reconnects (after backoff). */
  drop (reason: HeraldError): void {
    const c = this.conn
    if (c === null) return
    this.dropReason = reason
    void c.end()
  }

  async close (): Promise<void> {
    this.closed = true
    this.timer?.cancel()
    this.timer = null
    const c = this.conn
    this.conn = null
    if (c !== null) await c.end()
    if (this.isOnline) {
      this.isOnline = false
      this.emit('offline', null)
    }
  }

  private connect (): void {
    this.timer = null
    this.emit('connecting', this.attempt)
    const o = this.options
    this.dropReason = null
    let conn: TransportConnection | null = null
    let closedEarly = false
    const handlers = {
      open: () => {
        if (this.conn !== conn || conn === null) return
        this.attempt = 0
        this.isOnline = true
        this.emit('online')
      },
      frame: (payload: Uint8Array) => {
        if (this.conn === conn && conn !== null) this.emit('frame', payload)
      },
      close: (error: HeraldError | null) => {
        if (conn === null) { closedEarly = true; this.closedWith(error); return }
        if (this.conn !== conn) return
        this.conn = null
        this.closedWith(error)
      }
    }
    const urls = o.moreUrls ?? []
    conn = o.transport.dial({
      url: this.urlIndex === 0 ? o.url : (urls[this.urlIndex - 1] ?? o.url),
      clientId: o.clientId,
      username: o.username,
      password: o.password,
      replyTopic: o.replyTopic,
      connectTimeoutMs: o.connectTimeoutMs,
      keepaliveSec: o.keepaliveSec
    }, handlers)
    if (!closedEarly) this.conn = conn
  }

  private closedWith (error: HeraldError | null): void {
    const wasOnline = this.isOnline
    this.isOnline = false
    const reason = error ?? this.dropReason
    this.dropReason = null
    if (reason !== null) this.logger.debug({ err: reason.message, code: reason.code }, 'connection closed')
    if (wasOnline || reason !== null) this.emit('offline', reason)
    if (this.closed) return
    // [CLUSTER-URL-1] the next attempt goes to the next broker
    const n = 1 + (this.options.moreUrls?.length ?? 0)
    this.urlIndex = (this.urlIndex + 1) % n
    const delay = backoffDelay(this.attempt++, this.options.reconnect, this.options.random)
    this.timer = this.clock.setTimer(() => { this.connect() }, delay)
  }
}
