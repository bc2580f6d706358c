/**
 * The transport interface ([CONN-*] in docs/protocol.md): how an endpoint reaches the broker. A
 * transport opens one MQTT session at a time for the endpoint's identity and reports what happens on
 * it; reconnecting, backoff and state live above it, in Link. Node's transport is MQTT over TCP, TLS
 * or WebSocket (@herald/node-runtime); a browser's is MQTT over WebSocket; tests use a memory one.
 */
import type { HeraldError } from './errors.js'

/** What one connection attempt is for. */
export interface DialOptions {
  /** The broker's URL (`mqtt://`, `mqtts://`, `ws://`, `wss://`: which ones a transport takes is its own). */
  readonly url: string
  readonly clientId: string
  readonly username?: string | undefined
  readonly password?: string | undefined
  /** The reply topic to subscribe to before the connection counts as open. */
  readonly replyTopic: string
  readonly connectTimeoutMs: number
  /** MQTT keepalive in seconds. */
  readonly keepaliveSec: number
}

/** What a transport reports about one attempt. */
export interface DialHandlers {
  /** Connected and subscribed to the reply topic: frames may be sent. */
  open (): void
  /** A frame arrived on the reply topic. */
  frame (payload: Uint8Array): void
  /**
   * The attempt failed, or the open connection ended; `error` says why when known (a typed error:
   * AuthError for refused credentials, CONNECTION_LOST otherwise). Called exactly once per dial,
   * also after `end()`.
   */
  close (error: HeraldError | null): void
}

/** One connection (or attempt) a transport opened. */
export interface TransportConnection {
  /** Sends a frame, QoS 0 (Herald's own acknowledgements make frames reliable). Only after `open`. */
  send (topic: string, payload: Uint8Array): void
  /** Ends the attempt or the connection now; resolves once it is closed (`close` has been called). */
  end (): Promise<void>
}

export interface Transport {
  /** Starts one connection attempt. Never throws for network failures: they arrive as `close(error)`. */
  dial (options: DialOptions, handlers: DialHandlers): TransportConnection
}
