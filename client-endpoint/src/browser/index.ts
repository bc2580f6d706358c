/**
 * `@herald/client-endpoint/browser`: the client endpoint in a browser ([CLI-BROWSER-*]). The same
 * API as in Node (`subscribe`, ordered handler, `redelivered`, typed errors, `status`,
 * `statusUpdates`), over MQTT over WebSocket (`ws://`, `wss://`), with positions in IndexedDB
 * (IndexedDbPositionStore) or in memory. No transactional mode (that needs better-sqlite3).
 */
import { ConfigError } from '@herald/protocol'
import { ClientEndpointCore, type ClientEndpointCoreOptions, type ClientEndpointPlatform } from '../client-endpoint-core.js'
import { defaultBrowserTransport } from './default-transport.js'
import type { BackoffPolicy } from '../dead-letter-policy.js'

export { CLIENT_ENDPOINT_DEFAULTS, type ClientEndpointEvents, type ClientStatus, type GapInfo, type StartOption, type Subscription } from '../client-endpoint-core.js'
export type { EventHandler } from '../client-subscription.js'
export type { BatchOptions, BatchHandler, SequencePolicy } from '../delivery/delivery-options.js'
export type { BackoffPolicy } from '../dead-letter-policy.js'
export type { HeraldEvent } from '../herald-event.js'
export type { PositionStore, SubscriptionPosition } from '../positions/position-store.js'
export { MemoryPositionStore } from '../positions/memory-position-store.js'
export { IndexedDbPositionStore, type IndexedDbPositionStoreOptions, type IfLocked, type LockRequester } from './indexeddb-position-store.js'
export { webSocketTransport, WEBSOCKET_TRANSPORT_DEFAULTS, type WebSocketTransportOptions } from './websocket-transport.js'
export { AuthError, ClosedError, ConfigError, ErrorCode, HeraldError, PersistenceError, ProtocolError, RequestError, TimeoutError, clientKey, type Transport } from '@herald/protocol'

export interface ClientEndpointOptions extends ClientEndpointCoreOptions {
  /** `ws://host:port/mqtt` of the broker's WebSocket listener, or `wss://` ([CONN-WS-1]); `/mqtt` when no path is given. */
  readonly url: string
}

/** Subscription options (no `transaction`: transactional mode is Node's). */
export interface SubscribeOptions {
  readonly services?: readonly string[]
  readonly start?: 'all' | 'new'
  readonly key?: string
  readonly window?: number
  /**
   * [CLI-DEAD-1] With a MemoryPositionStore only: IndexedDbPositionStore keeps no dead letters and
   * `subscribe()` refuses it with a ConfigError ([CLI-DEAD-6]).
   */
  readonly maxAttempts?: number
  readonly backoff?: BackoffPolicy
}

const browserPlatform: ClientEndpointPlatform<never> = {
  checkConnection (url) {
    let u: URL
    try {
      u = new URL(url)
    } catch (err) {
      throw new ConfigError(`ClientEndpoint: option "url": ${JSON.stringify(url)} is not a URL (ws://host:port/mqtt or wss://host:port/mqtt)`, { cause: err })
    }
    if (u.protocol !== 'ws:' && u.protocol !== 'wss:') throw new ConfigError(`ClientEndpoint: option "url": ${JSON.stringify(url)} is not a ws:// or wss:// URL (a browser reaches the broker over WebSocket)`)
  },
  defaultTransport: defaultBrowserTransport
}

export class ClientEndpoint extends ClientEndpointCore {
  constructor (options: ClientEndpointOptions) {
    super(options, browserPlatform)
    // [CLI-BROWSER-3] the store's lock is taken for one client key: it must be this endpoint's
    const storeKey = (this.positions as { clientKey?: unknown }).clientKey
    if (typeof storeKey === 'string' && storeKey !== this.key) {
      throw new ConfigError(`ClientEndpoint: the positions store is for client "${storeKey}", this endpoint is "${this.key}" (open it with clientKey: "${this.key}")`)
    }
  }
}
