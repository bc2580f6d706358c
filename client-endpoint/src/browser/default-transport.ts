/** The browser entry's default transport: MQTT over the page's WebSocket ([CONN-WSC-*]). */
import type { Transport } from '@herald/protocol'
import { webSocketTransport } from './websocket-transport.js'

export function defaultBrowserTransport (): Transport {
  return webSocketTransport()
}
