/**
 * MQTT over WebSocket ([CONN-WS-1..5]): a real broker behind a real WebSocket listener, real ws
 * clients from distinct 127.x.y.z source addresses; framing, refusals before and after the upgrade,
 * per-address limits and throttling seen through WebSocket, handshake bounds.
 */
import { readFile } from 'node:fs/promises'
import { connect as netConnect, type Socket } from 'node:net'
import { join } from 'node:path'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { ConfigError, ErrorCode, type Site } from '@herald/protocol'
import { parseSite } from '@herald/node-runtime'
import { waitFor } from '@herald/protocol/testing'
import { makeTestCa, tempDir, type CertFiles, type TestCa } from '@herald/node-runtime/testing'
import { createBroker, type Broker, type BrokerOptions } from '../broker.js'
import { MemoryEventStore } from '../event-store/memory-event-store.js'
import { startBrokerServer } from '../server.js'
import { RawWsMqtt, mqttBytes, type RawWsConnectOptions } from '../testing/raw-ws-mqtt.js'
import { listenWebSocket, type WebSocketListener, type WebSocketListenerOptions } from './websocket-listener.js'

const PASSWORD = 'alice-password'
let site: Promise<Site> | null = null
const testSite = (): Promise<Site> => {
  site ??= parseSite({
    guests: true,
    events: [{ name: 'temperature', category: 'replacing', access: 'everyone' }],
    services: [{ id: 'svc', secret: 'svc-secret-1', events: ['temperature'] }],
    users: [{ name: 'alice', password: PASSWORD }]
  })
  return site
}

let running: { broker: Broker, listener: WebSocketListener } | null = null
const open: Array<{ destroy: () => void }> = []
afterEach(async () => {
  for (const c of open.splice(0)) c.destroy()
  await running?.listener.close()
  await running?.broker.close()
  running = null
})

async function start (options: Partial<BrokerOptions> = {}, ws: Partial<WebSocketListenerOptions> = {}): Promise<{ broker: Broker, listener: WebSocketListener, url: string }> {
  const s = await testSite()
  const broker = await createBroker({ site: s, store: new MemoryEventStore({ limitsOf: (n) => s.events.get(n) }), ...options })
  const listener = await listenWebSocket(broker, { port: 0, ...(options.maxPacketBytes !== undefined ? { maxPacketBytes: options.maxPacketBytes } : {}), ...ws })
  running = { broker, listener }
  return { broker, listener, url: listener.url }
}

function client (url: string, localAddress: string, connect: RawWsConnectOptions['connect'], protocols?: string[]): RawWsMqtt {
  const c = new RawWsMqtt({ url, localAddress, connect, ...(protocols !== undefined ? { protocols } : {}) })
  open.push(c)
  return c
}
const guest = (url: string, localAddress: string, name: string): RawWsMqtt => client(url, localAddress, { clientId: `c/~guest/${name}` })
const alice = (url: string, localAddress: string, name: string, password = PASSWORD): RawWsMqtt =>
  client(url, localAddress, { clientId: `c/alice/${name}`, username: 'alice', password: Buffer.from(password) })

/** A raw TCP connection to the listener, to send what no WebSocket client would. */
function tcp (port: number, localAddress: string): { socket: Socket, text: () => string, closed: Promise<void> } {
  const socket = netConnect({ port, host: '127.0.0.1', localAddress })
  open.push(socket)
  let got = ''
  socket.on('data', (d: Buffer) => { got += d.toString('latin1') })
  socket.on('error', () => {})
  return { socket, text: () => got, closed: new Promise((resolve) => { socket.once('close', () => { resolve() }) }) }
}

describe('WebSocket listener framing [CONN-WS-3]', () => {
  it('selects the mqtt subprotocol, takes a packet split over many messages and several packets in one, and answers in binary messages', async () => {
    const { url, broker } = await start()
    expect(url).toMatch(/^ws:\/\/127\.0\.0\.1:\d+\/mqtt$/)
    const c = client(url, '127.0.20.1', null)
    expect(await c.opened).toBe(true)
    expect(c.ws.protocol).toBe('mqtt')
    // CONNECT one byte per message
    const connect = mqttBytes({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, keepalive: 30, clientId: 'c/alice/split', username: 'alice', password: Buffer.from(PASSWORD) })
    for (const b of connect) c.sendBytes(Uint8Array.of(b))
    expect(await c.connack).toBe(0)
    // SUBSCRIBE, two PINGREQs and the first half of a third in one message, its second half in the next
    const sub = mqttBytes({ cmd: 'subscribe', messageId: 7, subscriptions: [{ topic: 'herald/c/alice/split/msg', qos: 0 }] })
    const ping = mqttBytes({ cmd: 'pingreq' })
    c.sendBytes(Buffer.concat([sub, ping, ping, ping.subarray(0, 1)]))
    c.sendBytes(ping.subarray(1))
    await waitFor(() => c.packets.length === 5, 'a SUBACK and three PINGRESPs')
    // aedes answers a SUBSCRIBE after its hooks, so the PINGRESPs may come first
    expect(c.packets.map((p) => p.cmd).sort()).toEqual(['connack', 'pingresp', 'pingresp', 'pingresp', 'suback'])
    expect(c.packets.find((p) => p.cmd === 'suback')).toMatchObject({ cmd: 'suback', messageId: 7, granted: [0] })
    expect(c.textMessages).toBe(0)
    expect(c.messages).toBeGreaterThanOrEqual(1)
    expect(broker.stats().connections).toBe(1)
  })

  it('closes a connection that sends a text message, or bytes that are not MQTT, and goes on serving others', async () => {
    const { url, broker } = await start()
    const text = alice(url, '127.0.21.1', 'text')
    expect(await text.connack).toBe(0)
    text.ws.send('hello', { binary: false })
    expect((await text.closed).code).toBe(1003)

    const garbage = client(url, '127.0.21.2', null)
    expect(await garbage.opened).toBe(true)
    garbage.sendBytes(Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0x02]))
    await garbage.closed
    expect(await garbage.connack).toBeNull()

    // a good one after them, and both counted out
    expect(await alice(url, '127.0.21.3', 'good').connack).toBe(0)
    await waitFor(() => broker.stats().connections === 1, 'the closed connections counted out')
  })

  it('closes a connection whose message is larger than the largest packet (1009), and one whose packet header says too large', async () => {
    const maxPacketBytes = 64 * 1024
    const { url } = await start({ maxPacketBytes })
    const big = alice(url, '127.0.22.1', 'big')
    expect(await big.connack).toBe(0)
    big.sendBytes(Buffer.alloc(maxPacketBytes + 6, 0))
    expect((await big.closed).code).toBe(1009)
    // within one message's bound, but announcing a packet over the limit: the packet size guard
    const liar = alice(url, '127.0.22.2', 'liar')
    expect(await liar.connack).toBe(0)
    liar.sendBytes(mqttBytes({ cmd: 'publish', topic: 'herald/c/alice/liar/req', payload: Buffer.alloc(maxPacketBytes + 1), qos: 0, retain: false, dup: false }).subarray(0, 1000))
    await liar.closed
    expect(await alice(url, '127.0.22.3', 'after').connack).toBe(0)
  })
})

describe('WebSocket listener refusals before the upgrade [CONN-WS-1], [CONN-WS-2], [CONN-WS-5]', () => {
  it('answers 404 on another path, 400 without the mqtt subprotocol or with a broken upgrade, 404/426 to plain requests, and closes non-HTTP bytes', async () => {
    const { url, listener, broker } = await start()
    const port = listener.address.port
    const wrongPath = client(url.replace('/mqtt', '/other'), '127.0.23.1', null)
    expect(await wrongPath.opened).toBe(false)
    expect((await wrongPath.closed).error).toMatch(/Unexpected server response: 404/)
    const noProtocol = client(url, '127.0.23.2', null, [])
    expect(await noProtocol.opened).toBe(false)
    expect((await noProtocol.closed).error).toMatch(/Unexpected server response: 400/)
    const otherProtocol = client(url, '127.0.23.3', null, ['mqttv3.1'])
    expect((await otherProtocol.closed).error).toMatch(/Unexpected server response: 400/)

    const get = async (path: string): Promise<string> => {
      const t = tcp(port, '127.0.23.4')
      t.socket.write(`GET ${path} HTTP/1.1\r\nHost: x\r\n\r\n`)
      await t.closed
      return t.text()
    }
    expect(await get('/')).toMatch(/^HTTP\/1\.1 404 /)
    expect(await get('/mqtt')).toMatch(/^HTTP\/1\.1 426 [^]*upgrade: websocket/i)
    // an upgrade without a Sec-WebSocket-Key
    const broken = tcp(port, '127.0.23.5')
    broken.socket.write('GET /mqtt HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Protocol: mqtt\r\nSec-WebSocket-Version: 13\r\n\r\n')
    await broken.closed
    expect(broken.text()).toMatch(/^HTTP\/1\.1 400 [^]*Sec-WebSocket-Key/)
    // MQTT straight onto the WebSocket port: not HTTP
    const raw = tcp(port, '127.0.23.6')
    raw.socket.write(mqttBytes({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, keepalive: 30, clientId: 'c/~guest/raw' }))
    await raw.closed
    expect(raw.text()).toMatch(/^HTTP\/1\.1 400 /)

    expect(listener.refused).toEqual({ path: 3, subprotocol: 2, badRequest: 2, timeout: 0, busy: 0, tls: 0 })
    expect(broker.stats().connections).toBe(0)
    expect(await guest(url, '127.0.23.7', 'after').connack).toBe(0)
  })

  it('hands plain requests to the httpHandler, which may leave them to the listener', async () => {
    const { listener } = await start({}, {
      httpHandler: (req, res) => {
        if (req.url === '/broken') throw new Error('a bug in the page')
        if (req.url !== '/') return false
        res.writeHead(200, { 'Content-Type': 'text/plain', 'Content-Length': 7, Connection: 'close' })
        res.end('a page\n')
        return true
      }
    })
    const get = async (path: string): Promise<string> => {
      const t = tcp(listener.address.port, '127.0.24.1')
      t.socket.write(`GET ${path} HTTP/1.1\r\nHost: x\r\n\r\n`)
      await t.closed
      return t.text()
    }
    expect(await get('/')).toMatch(/^HTTP\/1\.1 200 [^]*\r\n\r\na page\n$/)
    expect(await get('/nothing')).toMatch(/^HTTP\/1\.1 404 /)
    expect(await get('/broken')).toMatch(/^HTTP\/1\.1 500 /)
    expect(await guest(listener.url, '127.0.24.2', 'ws').connack).toBe(0)
  })

  it('closes a connection not upgraded within handshakeTimeoutMs, and one beyond maxHandshakes at once', async () => {
    const { listener, url } = await start({}, { handshakeTimeoutMs: 300, maxHandshakes: 2 })
    const port = listener.address.port
    const silent = tcp(port, '127.0.25.1')
    const slow = tcp(port, '127.0.25.2')
    slow.socket.write('GET /mqtt HTTP/1.1\r\n')
    await waitFor(() => listener.handshaking === 2, 'two connections in their handshake')
    const third = tcp(port, '127.0.25.3')
    await third.closed
    expect(listener.refused.busy).toBe(1)
    await Promise.all([silent.closed, slow.closed])
    expect(listener.refused.timeout).toBe(2)
    expect(listener.handshaking).toBe(0)
    // an upgraded connection is not timed out by the handshake timer
    const c = guest(url, '127.0.25.4', 'kept')
    expect(await c.connack).toBe(0)
    const at = performance.now()
    await waitFor(() => performance.now() - at > 600, 'twice the handshake timeout', 10_000, 50)
    c.send({ cmd: 'pingreq' })
    await waitFor(() => c.packets.some((p) => p.cmd === 'pingresp'), 'a PINGRESP')
  })

  it('bounds connections not yet upgraded per source address; other addresses still upgrade', async () => {
    const { listener, url } = await start({}, { maxHandshakesPerAddress: 2 })
    const port = listener.address.port
    const silent = [tcp(port, '127.0.28.1'), tcp(port, '127.0.28.1')]
    await waitFor(() => listener.handshaking === 2, 'two silent connections in their handshake')
    const third = tcp(port, '127.0.28.1')
    await third.closed
    expect(listener.refused.busy).toBe(1)
    expect(await guest(url, '127.0.28.2', 'elsewhere').connack).toBe(0)
    // a place freed is taken again
    silent[0]!.socket.destroy()
    await waitFor(() => listener.handshaking === 1, 'the closed one counted out')
    expect(await guest(url, '127.0.28.1', 'again').connack).toBe(0)
  })

  it('checks its options', async () => {
    const s = await testSite()
    const broker = await createBroker({ site: s, store: new MemoryEventStore({ limitsOf: (n) => s.events.get(n) }) })
    try {
      await expect(listenWebSocket(broker, { port: 0, maxHandshakes: 0 })).rejects.toThrow(/^listenWebSocket: option "maxHandshakes" must be a whole number from 1/)
      await expect(listenWebSocket(broker, { port: 0, clientAuth: true })).rejects.toThrow(ConfigError)
      await expect(listenWebSocket(broker, { port: 0, maxHandshakesPerAddress: 0 })).rejects.toThrow(/"maxHandshakesPerAddress" must be a whole number from 1 to 100000, got 0/)
      await expect(listenWebSocket(broker, { port: 0, nope: 1 } as unknown as WebSocketListenerOptions)).rejects.toThrow(/unknown option "nope"/)
    } finally {
      await broker.close()
    }
  })
})

describe('broker limits over WebSocket [CONN-WS-5]', () => {
  it('sees the peer address: connections per address and pending connections per address bound WebSocket clients, other addresses are not affected', async () => {
    const { url, broker } = await start({ maxConnectionsPerAddress: 3, maxPendingConnectionsPerAddress: 2 })
    const silent = [client(url, '127.0.26.1', null), client(url, '127.0.26.1', null)]
    for (const s of silent) expect(await s.opened).toBe(true)
    await waitFor(() => broker.stats().connections === 2, 'two silent connections admitted')
    // a third one not logged in from that address: closed before it is served
    expect(await guest(url, '127.0.26.1', 'late').connack).toBeNull()
    expect(broker.stats().connectionsRefused.pendingPerAddress).toBe(1)
    expect(await guest(url, '127.0.26.2', 'elsewhere').connack).toBe(0)
    for (const [i, s] of silent.entries()) s.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, keepalive: 30, clientId: `c/~guest/s${i}` })
    expect(await Promise.all(silent.map((s) => s.connack))).toEqual([0, 0])
    expect(await alice(url, '127.0.26.1', 'third').connack).toBe(0)
    // the 4th from 127.0.26.1
    expect(await alice(url, '127.0.26.1', 'fourth').connack).toBeNull()
    expect(broker.stats().connectionsRefused.perAddress).toBe(1)
  })

  it('throttles failed logins per source address as on TCP', async () => {
    const { url, broker } = await start({ loginFailuresPerAddress: 2, loginFailuresPerName: 100 })
    for (let i = 0; i < 2; i++) expect(await alice(url, '127.0.27.1', `x${i}`, `wrong-${i}`).connack).toBe(4)
    expect(await alice(url, '127.0.27.1', 'right').connack).toBe(3)
    expect(await alice(url, '127.0.27.2', 'right').connack).toBe(0)
    expect(broker.stats().connectionsRefused.throttled).toBe(1)
  })
})

describe('WebSocket beside TCP in startBrokerServer', () => {
  let dir: { path: string, remove: () => Promise<void> }
  let ca: TestCa
  let otherCa: TestCa
  let server: CertFiles
  let clientCert: CertFiles
  beforeAll(async () => {
    dir = await tempDir('herald-ws-')
    ca = await makeTestCa(dir.path, 'ca')
    otherCa = await makeTestCa(dir.path, 'other-ca')
    server = await ca.issueServer('server')
    clientCert = await ca.issueClient('client', 'alice')
  })
  afterAll(async () => { await dir.remove() })

  it('serves mqtt:// and ws:// at once to the same broker; refuses a plain WebSocket listener on a non-loopback address', async () => {
    const b = await startBrokerServer({ site: await testSite(), dataDir: join(dir.path, 'plain'), port: 0, webSocket: { port: 0 } })
    try {
      expect(b.webSocketUrl).toMatch(/^ws:\/\/127\.0\.0\.1:\d+\/mqtt$/)
      expect(b.webSocketListener?.address.port).not.toBe(b.listener.address.port)
      const c = new RawWsMqtt({ url: b.webSocketUrl!, connect: { clientId: 'c/~guest/both' } })
      open.push(c)
      expect(await c.connack).toBe(0)
      expect(b.broker.stats().connections).toBe(1)
      await expect(b.reloadTls()).rejects.toThrow(ConfigError)
    } finally {
      await b.close()
    }
    await expect(startBrokerServer({ site: await testSite(), dataDir: join(dir.path, 'open'), port: 0, host: '0.0.0.0', webSocket: { port: 0 } })).rejects.toThrow(/^refusing to listen on 0\.0\.0\.0 without TLS/)
  })

  it('serves wss:// with the TLS certificate: a client trusting the CA connects, one trusting another CA and a plain ws:// client are refused', async () => {
    const b = await startBrokerServer({ site: await testSite(), dataDir: join(dir.path, 'tls'), port: 0, tls: { certFile: server.certFile, keyFile: server.keyFile }, webSocket: { port: 0 } })
    try {
      const wssUrl = b.webSocketUrl!
      expect(wssUrl).toMatch(/^wss:\/\/127\.0\.0\.1:\d+\/mqtt$/)
      const good = new RawWsMqtt({ url: wssUrl.replace('127.0.0.1', 'localhost'), ca: await readFile(ca.certFile), connect: { clientId: 'c/~guest/tls' } })
      const wrong = new RawWsMqtt({ url: wssUrl.replace('127.0.0.1', 'localhost'), ca: await readFile(otherCa.certFile), connect: { clientId: 'c/~guest/wrong' } })
      const plain = new RawWsMqtt({ url: wssUrl.replace('wss:', 'ws:'), connect: { clientId: 'c/~guest/plain' } })
      open.push(good, wrong, plain)
      expect(await good.connack).toBe(0)
      expect(await wrong.opened).toBe(false)
      expect((await wrong.closed).error).toMatch(/self-signed certificate in certificate chain|unable to verify/)
      expect(await plain.opened).toBe(false)
      await waitFor(() => b.webSocketListener!.refused.tls + b.webSocketListener!.refused.badRequest >= 2, 'both refusals counted')
      expect(b.webSocketListener?.secure).toBe(true)
    } finally {
      await b.close()
    }
  })

  it('with client authentication, wss:// refuses a client without a certificate and admits one with a good certificate', async () => {
    const b = await startBrokerServer({ site: await testSite(), dataDir: join(dir.path, 'mtls'), port: 0, tls: { certFile: server.certFile, keyFile: server.keyFile, caFile: ca.certFile, clientAuth: true }, webSocket: { port: 0 } })
    try {
      const url = b.webSocketUrl!.replace('127.0.0.1', 'localhost')
      const trust = await readFile(ca.certFile)
      const anonymous = new RawWsMqtt({ url, ca: trust, connect: { clientId: 'c/~guest/anon' } })
      const known = new RawWsMqtt({ url, ca: trust, cert: await readFile(clientCert.certFile), key: await readFile(clientCert.keyFile), connect: { clientId: 'c/alice/cert', username: 'alice', password: Buffer.from(PASSWORD) } })
      open.push(anonymous, known)
      expect(await known.connack).toBe(0)
      expect(await anonymous.connack).toBeNull()
      expect(await anonymous.opened).toBe(false)
      await waitFor(() => b.webSocketListener!.refused.tls >= 1, 'the refused handshake counted')
    } finally {
      await b.close()
    }
  })

  it('a busy WebSocket port is ADDRESS_IN_USE naming it; the TCP listener and the data directory are released', async () => {
    const first = await startBrokerServer({ site: await testSite(), dataDir: join(dir.path, 'busy-1'), port: 0, webSocket: { port: 0 } })
    try {
      const wsPort = first.webSocketListener!.address.port
      const err = await startBrokerServer({ site: await testSite(), dataDir: join(dir.path, 'busy-2'), port: 0, webSocket: { port: wsPort } }).catch((e: unknown) => e)
      expect(err).toBeInstanceOf(ConfigError)
      expect((err as ConfigError).code).toBe(ErrorCode.ADDRESS_IN_USE)
      expect((err as Error).message).toBe(`WebSocket port ${wsPort} on 127.0.0.1 is in use (another broker running?)`)
      // nothing of the failed start holds the directory
      const again = await startBrokerServer({ site: await testSite(), dataDir: join(dir.path, 'busy-2'), port: 0 })
      await again.close()
    } finally {
      await first.close()
    }
  })
})
