/**
 * WebSocket servers for the browser transport's tests. `bridgeWebSocket` serves MQTT over WebSocket
 * for a real broker (`broker.handle(stream)`, as the broker's own WebSocket listener does) on
 * `/mqtt` with subprotocol mqtt; it can be killed (every socket cut) and started again on the same
 * port. `scriptedWebSocketServer` accepts WebSocket connections and lets a test answer them by hand:
 * a broker that never answers CONNECT, or goes quiet after CONNACK.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'
import { WebSocketServer, createWebSocketStream, type WebSocket } from 'ws'
import type { Broker } from '@herald/broker'

export interface WebSocketBridge {
  /** `ws://127.0.0.1:<port>/mqtt`. */
  readonly url: string
  readonly port: number
  /** WebSocket connections open now. */
  readonly open: number
  /** Cuts every connection at once (no close frame) and stops listening: a broker that died. */
  kill (): Promise<void>
  /** Listens again on the same port. */
  restart (): Promise<void>
  close (): Promise<void>
}

async function listen (server: Server, port: number): Promise<number> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, '127.0.0.1', () => { server.off('error', reject); resolve() })
  })
  return (server.address() as AddressInfo).port
}

/**
 * Serves `broker` over WebSocket on port 0 (or `port`); plain HTTP requests go to `httpHandler`
 * first (as the broker listener's option of that name), else 404.
 */
export async function bridgeWebSocket (broker: Pick<Broker, 'handle'>, port = 0, httpHandler?: (req: IncomingMessage, res: ServerResponse) => boolean): Promise<WebSocketBridge> {
  let server: Server
  let sockets = new Set<Socket>()
  let open = 0
  const start = async (p: number): Promise<number> => {
    server = createServer((req, res) => { if (httpHandler?.(req, res) !== true) res.writeHead(404).end() })
    const live = new Set<Socket>()
    sockets = live
    server.on('connection', (s: Socket) => { live.add(s); s.once('close', () => { live.delete(s) }) })
    const wss = new WebSocketServer({ server, path: '/mqtt', handleProtocols: (offered) => offered.has('mqtt') ? 'mqtt' : false })
    wss.on('connection', (ws: WebSocket, req) => {
      open++
      ws.once('close', () => { open-- })
      const stream = createWebSocketStream(ws)
      Object.defineProperty(stream, 'remoteAddress', { value: req.socket.remoteAddress })
      stream.on('error', () => { stream.destroy() })
      broker.handle(stream)
    })
    return listen(server, p)
  }
  const actual = await start(port)
  const stop = async (): Promise<void> => {
    const closed = new Promise<void>((resolve) => { server.close(() => { resolve() }) })
    for (const s of sockets) s.destroy()
    await closed
  }
  let running = true
  return {
    url: `ws://127.0.0.1:${actual}/mqtt`,
    port: actual,
    get open () { return open },
    async kill () { if (running) { running = false; await stop() } },
    async restart () { if (!running) { await start(actual); running = true } },
    async close () { if (running) { running = false; await stop() } }
  }
}

export interface ScriptedWebSocketServer {
  readonly url: string
  /** Each WebSocket connection accepted, with the binary messages it sent. */
  readonly connections: Array<{ ws: WebSocket, received: Buffer[] }>
  close (): Promise<void>
}

/** A WebSocket server (subprotocol mqtt) that answers each message with `answer(message, ws)`. */
export async function scriptedWebSocketServer (answer: (message: Buffer, ws: WebSocket) => void): Promise<ScriptedWebSocketServer> {
  const server = createServer()
  const sockets = new Set<Socket>()
  server.on('connection', (s: Socket) => { sockets.add(s); s.once('close', () => { sockets.delete(s) }) })
  const wss = new WebSocketServer({ server, path: '/mqtt', handleProtocols: () => 'mqtt' })
  const connections: ScriptedWebSocketServer['connections'] = []
  wss.on('connection', (ws: WebSocket) => {
    const c = { ws, received: [] as Buffer[] }
    connections.push(c)
    ws.on('message', (data: Buffer) => {
      c.received.push(data)
      answer(data, ws)
    })
  })
  const port = await listen(server, 0)
  return {
    url: `ws://127.0.0.1:${port}/mqtt`,
    connections,
    close: async () => {
      const closed = new Promise<void>((resolve) => { server.close(() => { resolve() }) })
      for (const s of sockets) s.destroy()
      await closed
    }
  }
}
