/**
 * The browser entry's default transport: MQTT over WebSocket (webSocketTransport, from
 * websocket-transport.ts). MERGE NOTE: until that module is merged in, there is no default and the
 * `transport` option is required; when it is, this becomes
 *   import { webSocketTransport } from './websocket-transport.js'
 *   export function defaultBrowserTransport (): Transport { return webSocketTransport() }
 */
import { ConfigError, type Transport } from '@herald/protocol'

export function defaultBrowserTransport (): Transport {
  throw new ConfigError('ClientEndpoint (browser): option "transport" is required in this build (no default WebSocket transport)')
}
