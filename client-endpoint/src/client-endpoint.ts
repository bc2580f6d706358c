/**
 * The Node entry of the client endpoint: the browser-safe core (client-endpoint-core.ts) with MQTT
 * over TCP, TLS or WebSocket (mqtt.js, @herald/node-runtime) by default, positions in SQLite, and
 * transactional mode on the application's better-sqlite3 database ([CLI-TX-1]).
 */
import type Database from 'better-sqlite3'
import { checkBrokerConnection, mqttTransport, type TlsClientOptions } from '@herald/node-runtime'
import { ClientEndpointCore, type ClientEndpointCoreOptions, type ClientEndpointPlatform, type SubscribeOptions as CoreSubscribeOptions, type BatchSubscribeOptions as CoreBatchSubscribeOptions } from './client-endpoint-core.js'
import { SqlitePositionStore } from './positions/sqlite-position-store.js'

export { CLIENT_ENDPOINT_DEFAULTS, type ClientEndpointEvents, type ClientStatus, type GapInfo, type StartOption, type Subscription } from './client-endpoint-core.js'

export interface ClientEndpointOptions extends ClientEndpointCoreOptions {
  /** `mqtt://host:port` of the broker, or `mqtts://host:port` for TLS ([CONN-TLS-1]). */
  readonly url: string
  /** TLS options for a `mqtts://` URL: the CA to check the broker's certificate against, a client certificate and key. Refused with a plain URL. */
  readonly tls?: TlsClientOptions
}

/**
 * Subscription options; `transaction` is transactional mode ([CLI-TX-1]): the application's
 * better-sqlite3 database. The handler must be synchronous; it runs inside a transaction on this
 * database in which the position is committed too.
 */
export type SubscribeOptions = CoreSubscribeOptions<Database.Database>
/** Options of a batch subscription ([CLI-BATCH-1]): `batch` is required, the handler takes an array. */
export type BatchSubscribeOptions = CoreBatchSubscribeOptions<Database.Database>

function nodePlatform (options: ClientEndpointOptions): ClientEndpointPlatform<Database.Database> {
  return {
    checkConnection: (url) => { checkBrokerConnection('ClientEndpoint', url, options.tls) },
    defaultTransport: () => mqttTransport(options.tls),
    transactions: {
      positions: (db) => new SqlitePositionStore({ database: db }),
      run: (db, fn) => { db.transaction(fn)() }
    }
  }
}

export class ClientEndpoint extends ClientEndpointCore<Database.Database> {
  constructor (options: ClientEndpointOptions) {
    // options are checked by the core (a missing one is a ConfigError, not a TypeError here)
    super(options, nodePlatform(options ?? {} as ClientEndpointOptions))
  }
}
