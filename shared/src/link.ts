/**
 * One endpoint's MQTT connection to the broker ([CONN-*] in docs/protocol.md): connects with the
 * endpoint's identity, subscribes to its own reply topic, reconnects with exponential backoff and
 * jitter, and reports online/offline. Frames are QoS 0: Herald's own acknowledgements make them
 * reliable, and everything unacknowledged is resent after a reconnect.
 */
import mqtt, { type MqttClient } from 'mqtt'
import { backoffDelay, type BackoffOptions } from './backoff.js'
import { AuthError, ErrorCode, HeraldError } from './errors.js'
import { silentLogger, type Logger } from './logger.js'
import { isSecureUrl, nodeTlsOptions, tlsConnectError, type TlsClientOptions } from './tls.js'
import { TypedEmitter } from './typed-emitter.js'

export interface LinkOptions {
  /**
   * `mqtt://host:port`, or `mqtts://host:port` for TLS ([CONN-TLS-1]); or MQTT over WebSocket,
   * `ws://host:port/mqtt` or `wss://host:port/mqtt` (no path means /mqtt, [CONN-WS-1]).
   */
  readonly url: string
  /** TLS options for a `mqtts://` URL (checked by `checkBrokerConnection`). */
  readonly tls?: TlsClientOptions | undefined
  readonly clientId: string
  readonly username?: string | undefined
  readonly password?: string | undefined
  /** The reply topic to subscribe to before the link counts as online. */
  readonly replyTopic: string
  readonly reconnect: BackoffOptions
  readonly connectTimeoutMs: number
  /** MQTT keepalive in seconds. */
  readonly keepaliveSec: number
  readonly logger?: Logger
}

export interface LinkEvents {
  /** Connected and subscribed: frames may be sent. */
  online: () => void
  /** The connection ended; `error` says why when known. A reconnect is scheduled. */
  offline: (error: HeraldError | null) => void
  /** A frame arrived on the reply topic. */
  frame: (payload: Buffer) => void
  /** A connection attempt starts. */
  connecting: (attempt: number) => void
}

function connackError (err: Error & { code?: unknown }): HeraldError {
  const tls = tlsConnectError(err)
  if (tls !== null) return tls
  if (err.code === 4) return new AuthError(ErrorCode.BAD_CREDENTIALS, 'the broker refused the credentials', { cause: err })
  if (err.code === 5 || err.code === 2) return new AuthError(ErrorCode.NOT_AUTHORIZED, 'the broker refused this identity', { cause: err })
  return new HeraldError(ErrorCode.CONNECTION_LOST, err.message, { cause: err })
}

const isWebSocketUrl = (url: string): boolean => /^wss?:/i.test(url)

/** [CONN-WS-1] a ws:// or wss:// URL without a path means the broker's /mqtt. */
function brokerUrl (url: string): string {
  if (!isWebSocketUrl(url)) return url
  const u = new URL(url)
  if (u.pathname !== '/') return url
  u.pathname = '/mqtt'
  return u.toString()
}

export class Link extends TypedEmitter<LinkEvents> {
  private client: MqttClient | null = null
  private attempt = 0
  private timer: NodeJS.Timeout | null = null
  private closed = false
  private isOnline = false
  private lastError: HeraldError | null = null
  private readonly logger: Logger

  constructor (private readonly options: LinkOptions) {
    super()
    this.logger = options.logger ?? silentLogger
  }

  get online (): boolean {
    return this.isOnline
  }

  /** Starts connecting (and reconnecting until close()). */
  start (): void {
    if (this.client === null && this.timer === null && !this.closed) this.connect()
  }

  /** Sends a frame; false if offline (the caller resends after the next `online`). */
  send (topic: string, payload: Buffer): boolean {
    if (!this.isOnline || this.client === null) return false
    this.client.publish(topic, payload, { qos: 0 })
    return true
  }

  /** Drops the current connection and reconnects (after backoff). */
  drop (reason: HeraldError): void {
    this.lastError = reason
    const c = this.client
    if (c !== null) c.end(true)
  }

  async close (): Promise<void> {
    this.closed = true
    if (this.timer !== null) clearTimeout(this.timer)
    this.timer = null
    const c = this.client
    this.client = null
    if (c !== null) await new Promise<void>((resolve) => { c.end(true, {}, () => { resolve() }) })
    if (this.isOnline) {
      this.isOnline = false
      this.emit('offline', null)
    }
  }

  private connect (): void {
    this.timer = null
    this.emit('connecting', this.attempt)
    const o = this.options
    const client = mqtt.connect(brokerUrl(o.url), {
      // [CONN-TLS-1] CA, client certificate; a broker certificate that does not verify is refused unless told otherwise
      ...nodeTlsOptions(o.tls),
      // over wss:// mqtt.js hands ca, cert, key and rejectUnauthorized to ws, not servername
      ...(o.tls?.servername !== undefined && isWebSocketUrl(o.url) ? { wsOptions: { servername: o.tls.servername } as object } : {}),
      clientId: o.clientId,
      ...(o.username !== undefined ? { username: o.username } : {}),
      ...(o.password !== undefined ? { password: o.password } : {}),
      protocolVersion: 4,
      clean: true,
      reconnectPeriod: 0,
      connectTimeout: o.connectTimeoutMs,
      keepalive: o.keepaliveSec,
      queueQoSZero: false,
      resubscribe: false
    })
    this.client = client
    this.lastError = null
    let answered = false
    client.on('connect', () => {
      answered = true
      client.subscribe(o.replyTopic, { qos: 0 }, (err, granted) => {
        if (this.client !== client) return
        if (err !== null && err !== undefined) {
          this.drop(new HeraldError(ErrorCode.CONNECTION_LOST, `subscribe failed: ${err.message}`, { cause: err }))
          return
        }
        if (granted?.[0]?.qos === 128) {
          this.drop(new AuthError(ErrorCode.NOT_AUTHORIZED, `the broker refused the subscription to ${o.replyTopic}`))
          return
        }
        this.attempt = 0
        this.isOnline = true
        this.emit('online')
      })
    })
    client.on('message', (_topic, payload) => { this.emit('frame', payload) })
    client.on('error', (err) => {
      this.lastError = connackError(err)
      this.logger.debug({ err: err.message }, 'connection error')
    })
    client.on('close', () => {
      if (this.client !== client) return
      this.client = null
      client.removeAllListeners('message')
      client.end(true)
      const wasOnline = this.isOnline
      this.isOnline = false
      if (!answered && this.lastError === null && !this.closed) {
        // [CONN-TLS-3] closed with no word: never a silent retry, say what the likely causes are
        this.lastError = new HeraldError(ErrorCode.CONNECTION_LOST, isWebSocketUrl(o.url)
          ? 'the broker closed the WebSocket connection before answering CONNECT, or refused the upgrade; check that this port serves MQTT over WebSocket (herald broker --ws-port) on the path /mqtt, wss:// if it serves TLS'
          : isSecureUrl(o.url)
            ? 'the broker closed the connection before answering CONNECT; if it requires a client certificate, give one signed by its CA (tls.cert and tls.key, --cert and --key)'
            : 'the broker closed the connection before answering CONNECT; if this port serves TLS, use an mqtts:// URL')
      }
      if (wasOnline || this.lastError !== null) this.emit('offline', this.lastError)
      if (this.closed) return
      const delay = backoffDelay(this.attempt++, o.reconnect)
      this.timer = setTimeout(() => { this.connect() }, delay)
    })
  }
}
