/**
 * Node's Transport ([CONN-*] in docs/protocol.md): MQTT 3.1.1 with mqtt.js over TCP (`mqtt://`), TLS
 * (`mqtts://`, [CONN-TLS-1]), or WebSocket (`ws://`, `wss://`, [CONN-WS-1]). One dial is one
 * connection: mqtt.js's own reconnecting is off, Link above reconnects with backoff.
 */
import mqtt from 'mqtt'
import { AuthError, ErrorCode, HeraldError, type DialHandlers, type DialOptions, type Transport, type TransportConnection } from '@herald/protocol'
import { isSecureUrl, nodeTlsOptions, tlsConnectError, type TlsClientOptions } from './tls.js'

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

/** MQTT over TCP, TLS or WebSocket with mqtt.js. `tls` applies to `mqtts://` and `wss://` URLs (checked by `checkBrokerConnection`). */
export function mqttTransport (tls?: TlsClientOptions): Transport {
  return { dial: (options, handlers) => dialMqtt(options, handlers, tls) }
}

function dialMqtt (o: DialOptions, handlers: DialHandlers, tls: TlsClientOptions | undefined): TransportConnection {
  const client = mqtt.connect(brokerUrl(o.url), {
    // [CONN-TLS-1] CA, client certificate; a broker certificate that does not verify is refused unless told otherwise
    ...nodeTlsOptions(tls),
    // over wss:// mqtt.js hands ca, cert, key and rejectUnauthorized to ws, not servername
    ...(tls?.servername !== undefined && isWebSocketUrl(o.url) ? { wsOptions: { servername: tls.servername } as object } : {}),
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
  let lastError: HeraldError | null = null
  let answered = false
  let done = false
  let ended = false
  /** The attempt or connection is over: reported once, from 'close' or from end()'s callback. */
  const finish = (): void => {
    if (done) return
    done = true
    client.removeAllListeners('message')
    if (!answered && lastError === null && !ended) {
      // [CONN-TLS-3] closed with no word: never a silent retry, say what the likely causes are
      lastError = new HeraldError(ErrorCode.CONNECTION_LOST, isWebSocketUrl(o.url)
        ? 'the broker closed the WebSocket connection before answering CONNECT, or refused the upgrade; check that this port serves MQTT over WebSocket (herald broker --ws-port) on the path /mqtt, wss:// if it serves TLS'
        : isSecureUrl(o.url)
          ? 'the broker closed the connection before answering CONNECT; if it requires a client certificate, give one signed by its CA (tls.cert and tls.key, --cert and --key)'
          : 'the broker closed the connection before answering CONNECT; if this port serves TLS, use an mqtts:// URL')
    }
    handlers.close(lastError)
  }
  client.once('close', () => {
    client.end(true)
    finish()
  })
  client.on('connect', () => {
    answered = true
    client.subscribe(o.replyTopic, { qos: 0 }, (err, granted) => {
      if (done || ended) return
      if (err !== null && err !== undefined) {
        lastError = new HeraldError(ErrorCode.CONNECTION_LOST, `subscribe failed: ${err.message}`, { cause: err })
        client.end(true)
        return
      }
      if (granted?.[0]?.qos === 128) {
        lastError = new AuthError(ErrorCode.NOT_AUTHORIZED, `the broker refused the subscription to ${o.replyTopic}`)
        client.end(true)
        return
      }
      handlers.open()
    })
  })
  client.on('message', (_topic, payload) => { handlers.frame(payload) })
  client.on('error', (err) => { lastError = connackError(err) })
  return {
    send (topic, payload) {
      client.publish(topic, payload as Buffer, { qos: 0 })
    },
    async end () {
      ended = true
      if (done) return
      await new Promise<void>((resolve) => { client.end(true, {}, () => { resolve() }) })
      finish()
    }
  }
}
