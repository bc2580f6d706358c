/**
 * WebSocket servers for the WebSocket and browser tests. `bridgeWebSocket` is a cuttable relay in
 * front of a real broker's own WebSocket listener (`herald broker --ws-port`, or
 * `startBrokerServer({ webSocket })`): it accepts MQTT over WebSocket on `/mqtt` (subprotocol mqtt)
 * and relays each one, message for message, to a WebSocket of its own to the broker, so a test can
 * cut every connection at once (a network cut), or stop listening and start again on the same port
 * (the broker's WebSocket side gone and back) without touching the broker.
 * `scriptedWebSocketServer` accepts WebSocket connections and lets a test answer them by hand: a
 * broker that never answers CONNECT, or goes quiet after CONNACK.
 */
import { createServer, type Server } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'
import { WebSocket as WsClient, WebSocketServer, type RawData, type WebSocket } from 'ws'

export interface WebSocketBridge {
  /** `ws://127.0.0.1:<port>/mqtt`. */
  readonly url: string
  readonly port: number
  /** Cuts every relayed connection at once, both sides, no close frame; keeps listening. Returns how many. */
  cut (): number
  /** Cuts every connection and stops listening: to a client, a broker that died. */
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

/** Relays WebSockets on 127.0.0.1, port 0 (or `port`), to `upstream` (a broker's `ws://…/mqtt`). */
export async function bridgeWebSocket (upstream: string, port = 0): Promise<WebSocketBridge> {
  const pairs = new Set<{ down: WebSocket, up: WsClient }>()
  let server: Server
  let sockets = new Set<Socket>()
  const start = async (p: number): Promise<number> => {
    server = createServer((_req, res) => { res.writeHead(404).end() })
    const live = new Set<Socket>()
    sockets = live
    server.on('connection', (s: Socket) => { live.add(s); s.once('close', () => { live.delete(s) }) })
    const wss = new WebSocketServer({ server, path: '/mqtt', handleProtocols: (offered) => offered.has('mqtt') ? 'mqtt' : false })
    wss.on('connection', (down: WebSocket) => {
      const up = new WsClient(upstream, 'mqtt')
      const pair = { down, up }
      pairs.add(pair)
      // what the client sends before the broker's side is open (its CONNECT)
      const early: Array<{ data: RawData, binary: boolean }> = []
      const end = (): void => {
        pairs.delete(pair)
        down.terminate()
        up.terminate()
      }
      down.on('message', (data, binary) => {
        if (up.readyState === WsClient.OPEN) up.send(data, { binary })
        else early.push({ data, binary })
      })
      up.on('open', () => { for (const m of early.splice(0)) up.send(m.data, { binary: m.binary }) })
      up.on('message', (data, binary) => { down.send(data, { binary }) })
      down.on('close', end)
      down.on('error', end)
      up.on('close', end)
      up.on('error', end)
    })
    return listen(server, p)
  }
  const actual = await start(port)
  const cut = (): number => {
    const n = pairs.size
    for (const p of [...pairs]) {
      pairs.delete(p)
      p.down.terminate()
      p.up.terminate()
    }
    return n
  }
  const stop = async (): Promise<void> => {
    const closed = new Promise<void>((resolve) => { server.close(() => { resolve() }) })
    cut()
    for (const s of sockets) s.destroy()
    await closed
  }
  let running = true
  return {
    url: `ws://127.0.0.1:${actual}/mqtt`,
    port: actual,
    cut,
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
