/**
 * The browser's transport (webSocketTransport, client-endpoint/src/browser) in Node, over real
 * WebSockets (the `ws` package's WebSocket class, API-compatible with a browser's) to a real
 * broker's own WebSocket listener: credentials, frames both ways, the broker's WebSocket side dying
 * and coming back (a relay in front of the listener, test/support/ws-bridge.ts), a server that never
 * answers CONNECT, one that goes quiet after CONNACK. [CONN-WSC-*]
 */
import { createServer, type Socket } from 'node:net'
import { afterEach, describe, expect, it } from 'vitest'
import { WebSocket } from 'ws'
import mqttPacket from 'mqtt-packet'
import { ClientEndpoint, type HeraldEvent } from '@herald/client-endpoint'
import { webSocketTransport, type WebSocketConstructor } from '@herald/client-endpoint/websocket-transport'
import type { HeraldError} from '@herald/protocol';
import { AuthError, ErrorCode, FrameType, Link, clientClientId, clientMessageTopic, clientRequestTopic, encodeRequest, frameType, type DialOptions } from '@herald/protocol'
import { waitFor } from '@herald/protocol/testing'
import { Harness } from './support/harness.js'
import { SECRETS } from './support/site.js'
import { bridgeWebSocket, scriptedWebSocketServer } from './support/ws-bridge.js'

const NodeWebSocket = WebSocket as unknown as WebSocketConstructor

/** One dial; resolves with what happened once it closed or opened. */
function dialOnce (url: string, o: Partial<DialOptions>, transportOptions: Parameters<typeof webSocketTransport>[0] = {}): { opened: Promise<void>, closed: Promise<HeraldError | null>, frames: Uint8Array[], conn: ReturnType<ReturnType<typeof webSocketTransport>['dial']> } {
  let open!: () => void
  let close!: (e: HeraldError | null) => void
  const closed = new Promise<HeraldError | null>((resolve) => { close = resolve })
  // rejects if the attempt closes first, with why
  const opened = new Promise<void>((resolve, reject) => {
    open = resolve
    void closed.then((e) => { reject(e ?? new Error('closed before open')) })
  })
  opened.catch(() => {})
  const frames: Uint8Array[] = []
  const conn = webSocketTransport({ WebSocket: NodeWebSocket, ...transportOptions }).dial({
    url, clientId: clientClientId('alice/ws-test'), username: 'alice', password: SECRETS.alice,
    replyTopic: clientMessageTopic('alice/ws-test'), connectTimeoutMs: 10_000, keepaliveSec: 30, ...o
  }, { open, frame: (p) => { frames.push(p) }, close })
  return { opened, closed, frames, conn }
}

describe('webSocketTransport against a real broker over real WebSockets', () => {
  let h: Harness
  afterEach(async () => { await h.close() })

  it('good credentials open the connection; a wrong password is AuthError BAD_CREDENTIALS', async () => {
    h = await Harness.create()
    const broker = await h.broker({ webSocket: { port: 0 } })
    const url = broker.webSocketUrl as string

    const good = dialOnce(url, {})
    await good.opened
    await good.conn.end()
    expect(await good.closed).toBeNull()

    const bad = dialOnce(url, { password: 'wrong' })
    const err = await bad.closed
    expect(err).toBeInstanceOf(AuthError)
    expect(err?.code).toBe(ErrorCode.BAD_CREDENTIALS)
  })

  it('a ClientEndpoint over it receives a service\'s events end to end, in order, with their metadata', async () => {
    h = await Harness.create()
    const broker = await h.broker({ webSocket: { port: 0 } })
    const url = broker.webSocketUrl as string
    const svc = await h.service(broker.url, 'svc-a')
    const client = h.client(url, 'alice', 'browser-like', { transport: webSocketTransport({ WebSocket: NodeWebSocket }) })
    const got: HeraldEvent[] = []
    await client.subscribe('readings', {}, (e) => { got.push(e) })
    const n = 300
    // a payload over one WebSocket message's worth on some platforms: frames split and joined alike
    for (let i = 0; i < n; i++) await svc.raise('readings', { i, pad: 'x'.repeat(i % 7 === 0 ? 20_000 : 10) })
    await waitFor(() => got.length >= n, `${n} events over WebSocket`)
    expect(got.map((e) => (e.payload as { i: number }).i)).toEqual(Array.from({ length: n }, (_, i) => i))
    expect(got[0]).toMatchObject({ serviceId: 'svc-a', name: 'readings', redelivered: false })
    expect(client.status.state).toBe('online')
  })

  it('a wrong password reaches a ClientEndpoint as its typed error and status', async () => {
    h = await Harness.create()
    const broker = await h.broker({ webSocket: { port: 0 } })
    const url = broker.webSocketUrl as string
    const client = new ClientEndpoint({ url, clientName: 'x', user: 'alice', password: 'nope', transport: webSocketTransport({ WebSocket: NodeWebSocket }), reconnectInitialMs: 50, reconnectMaxMs: 200 })
    h.onClose(() => client.close())
    const errors: HeraldError[] = []
    client.on('error', (e) => { errors.push(e) })
    client.start()
    await waitFor(() => errors.length > 0, 'the refusal')
    expect(errors[0]).toBeInstanceOf(AuthError)
    expect(errors[0]?.code).toBe(ErrorCode.BAD_CREDENTIALS)
    expect(client.status.lastError?.code).toBe(ErrorCode.BAD_CREDENTIALS)
  })

  it('the broker\'s WebSocket side killed: close(CONNECTION_LOST); Link reconnects once it is back, and frames flow again', async () => {
    h = await Harness.create()
    const broker = await h.broker({ webSocket: { port: 0 } })
    // a relay in front of the broker's listener: its WebSocket side can die and come back alone
    const ws = await bridgeWebSocket(broker.webSocketUrl as string)
    h.onClose(() => ws.close())
    const link = new Link({
      transport: webSocketTransport({ WebSocket: NodeWebSocket }),
      url: ws.url, clientId: clientClientId('alice/link'), username: 'alice', password: SECRETS.alice,
      replyTopic: clientMessageTopic('alice/link'), connectTimeoutMs: 5000, keepaliveSec: 30,
      reconnect: { initialMs: 20, maxMs: 200 }
    })
    h.onClose(() => link.close())
    const offline: Array<HeraldError | null> = []
    let onlines = 0
    link.on('online', () => { onlines++ })
    link.on('offline', (e) => { offline.push(e) })
    link.start()
    await waitFor(() => onlines === 1, 'online')
    await ws.kill()
    await waitFor(() => offline.length >= 1, 'offline after the kill')
    expect(offline[0]?.code).toBe(ErrorCode.CONNECTION_LOST)
    expect(link.online).toBe(false)
    await ws.restart()
    await waitFor(() => onlines === 2, 'online again after the restart')
    // a frame both ways through the broker on the new connection: a request the broker answers
    // (an unknown subscription id is refused with an error frame on the reply topic)
    const frames: Uint8Array[] = []
    link.on('frame', (p) => { frames.push(p) })
    expect(link.send(clientRequestTopic('alice/link'), encodeRequest({ op: 'sub', sub: 1, event: 'no-such-event', services: null, position: 0, start: 'all', window: 10 }))).toBe(true)
    await waitFor(() => frames.length > 0, 'the broker\'s answer')
    expect(frameType(frames[0] as Uint8Array)).toBe(FrameType.CONTROL)
  })

  it('events raised while the broker\'s WebSocket side is down reach a ClientEndpoint once it is back, each once, in order', async () => {
    h = await Harness.create()
    const broker = await h.broker({ webSocket: { port: 0 } })
    // a relay in front of the broker's listener: its WebSocket side can die and come back alone
    const ws = await bridgeWebSocket(broker.webSocketUrl as string)
    h.onClose(() => ws.close())
    const svc = await h.service(broker.url, 'svc-a')
    const client = h.client(ws.url, 'alice', 'reconnecting', { transport: webSocketTransport({ WebSocket: NodeWebSocket }) })
    const got: number[] = []
    await client.subscribe('readings', {}, (e) => { got.push((e.payload as { i: number }).i) })
    for (let i = 0; i < 10; i++) await svc.raise('readings', { i })
    await waitFor(() => got.length >= 10, 'the first 10')
    await ws.kill()
    await waitFor(() => client.status.state !== 'online', 'the client offline')
    expect(client.status.lastError?.code).toBe(ErrorCode.CONNECTION_LOST)
    for (let i = 10; i < 20; i++) await svc.raise('readings', { i })
    await ws.restart()
    await waitFor(() => got.length >= 20, 'all 20 after the restart')
    expect(got).toEqual(Array.from({ length: 20 }, (_, i) => i))
  })

  it('a server that accepts the WebSocket but never answers CONNECT: the connect timeout closes with CONNECTION_LOST', async () => {
    h = await Harness.create()
    const silent = await scriptedWebSocketServer(() => {})
    h.onClose(() => silent.close())
    const a = dialOnce(silent.url, { connectTimeoutMs: 500 })
    const err = await a.closed
    expect(err?.code).toBe(ErrorCode.CONNECTION_LOST)
    expect(err?.message).toMatch(/did not answer CONNECT within 500 ms/)
    // it did get the CONNECT
    expect(silent.connections[0]?.received[0]?.[0]).toBe(0x10)
  })

  it('a TCP server that never answers the WebSocket upgrade: the connect timeout says no WebSocket connection came; nothing is thrown', async () => {
    h = await Harness.create()
    const sockets = new Set<Socket>()
    const mute = createServer((s) => { sockets.add(s) })
    await new Promise<void>((resolve) => { mute.listen(0, '127.0.0.1', resolve) })
    h.onClose(() => new Promise<void>((resolve) => { for (const s of sockets) s.destroy(); mute.close(() => { resolve() }) }))
    const port = (mute.address() as { port: number }).port
    const a = dialOnce(`ws://127.0.0.1:${port}`, { connectTimeoutMs: 500 })
    const err = await a.closed
    expect(err?.code).toBe(ErrorCode.CONNECTION_LOST)
    expect(err?.message).toBe(`no WebSocket connection to ws://127.0.0.1:${port}/mqtt within 500 ms`)
    // the abandoned handshake's own error (ws emits one) went nowhere: the process is still here
    await waitFor(() => sockets.size === 1, 'the connection seen')
  })

  it('a server that goes quiet after CONNACK and SUBACK: keepalive finds it dead (CONNECTION_LOST)', async () => {
    h = await Harness.create()
    const quiet = await scriptedWebSocketServer((message, ws) => {
      const type = (message[0] ?? 0) >> 4
      if (type === 1) ws.send(mqttPacket.generate({ cmd: 'connack', returnCode: 0, sessionPresent: false }))
      if (type === 8) ws.send(mqttPacket.generate({ cmd: 'suback', messageId: 1, granted: [0] }))
      // PINGREQ (12) is never answered
    })
    h.onClose(() => quiet.close())
    const a = dialOnce(quiet.url, { keepaliveSec: 1 }, { pingTimeoutMs: 500 })
    await a.opened
    const err = await a.closed
    expect(err?.code).toBe(ErrorCode.CONNECTION_LOST)
    expect(err?.message).toMatch(/no answer from the broker within 500 ms of a PINGREQ/)
    expect(quiet.connections[0]?.received.some((m) => m[0] === 0xc0)).toBe(true)
  })
})
